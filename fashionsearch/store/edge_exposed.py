"""Copies of a Qdrant Edge collection's *exposed* points, searched exactly beside the graph, so that a filter far
from the query (a shoe photo filtered to Topwear, a caller's explicit filter) keeps its recall.

A filtered graph search walks from the query towards the points that match; when the filter's kind lies far from
the query, its exact answers are mostly that kind's strays, products lying among another kind's (a shoe whose photo
looks like a top), which the kind's graph links poorly to the rest of it: at 1M points recall@5 was 0.55 at
hnsw_ef 128 and no graph setting of qdrant-edge 0.9 got it past 0.93 (bench/README.md, far filters). So after each
graph build every point is looked up once (one unfiltered graph search for its ``neighbours`` nearest, hnsw_ef
``FLAG_EF``, in batches), and a point one of whose neighbours has another subCategory is *exposed*: a copy of it
(vector and whole payload) goes into a second, small shard, ``<collection>/exposed/`` (6.3% of a 1M-point catalogue
with the default 50 neighbours). A copy, not a flag in the payload: Qdrant moves a point whose payload changes out
of its indexed segment. Measured at 1M points (bench/README.md), the copies alone: far-filter recall@5 0.55 -> 0.87
at hnsw_ef 128 and 0.65 -> 0.94 at 512; the flagging takes about 1.3 times the graph build (176 s beside 137 s).

A search whose subCategory filter is far from the query (``far_from``: none of the query's
``FAR_CHECK_NEIGHBOURS`` nearest points holds a value of the filter, one unfiltered search of about 0.2 ms) is
answered by the graph merged, by distance, with an exact search of the copies under the same filter. Copies alone
are not enough at a million points (recall@5 0.87 to 0.90 at hnsw_ef 128): what they miss are the kind's points at
its edge nearest the query, whose neighbours are all of their kind; so that graph search keeps
``EdgeTuning.far_filter_ef`` candidates instead of ``hnsw_ef`` (0.985 at 1M with 1024). A near filter (the
gateway's own: the photo's predicted subCategory) needs neither (recall@5 0.997 at 1M with and without the copies),
so it is the graph's alone, about 0.4 ms faster at 1M than with the copies' exact search.

Other fields in the filter apply to the copies as to the originals (a copy carries the whole payload), so the
answers are right for any filter; but exposure is defined by subCategory, so a filter that does not name subCategory
is answered by the graph alone: its strays are not the copies'. Never merged, since already exact: unfiltered
searches, exact ones, and a filter whose values hold fewer than ``full_scan_points`` points, which Qdrant scans
exactly itself (counted once per build with the payload index's facet).

A copy must never differ from its point: an upsert or delete of a point drops its copy first (the new version
lands in the unindexed segment, which every search scans exactly anyway), and the next graph build flags afresh.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import qdrant_edge as qe

from fashionsearch.store.base import FILTER_FIELDS

logger = logging.getLogger(__name__)

EXPOSED_DIR = "exposed"
#: The field whose neighbours decide exposure: the one the gateway filters on (the photo's subCategory).
FIELD = "subCategory"
#: Candidates of each flagging search: measured at 100k points, 6.1% flagged against 5.8% by exact neighbours.
FLAG_EF = 32
_FLAG_BATCH = 64
#: How many of the query's nearest points say whether a filter is far (at 1M points: 299 of 300 far-filter searches
#: and 2 of 300 own-subCategory ones taken for far, with 5 or 10), and the candidates of that unfiltered search.
FAR_CHECK_NEIGHBOURS = 5
_FAR_CHECK = qe.SearchParams(hnsw_ef=64)
#: The one payload field the far check and the flagging read (built once: the far check is on the search path).
_FIELD_ONLY = qe.PayloadSelector.Include([FIELD])
_PAGE = 1024


class ExposedCopies:
    """The exposed points' shard of one collection (absent until the first graph build flags them)."""

    def __init__(self, folder: Path, config: qe.EdgeConfig) -> None:
        self._folder = folder
        self._config = config
        self._shard: qe.EdgeShard | None = qe.EdgeShard.load(str(folder), config) if folder.is_dir() else None
        self._counts: dict[str, int] = {}

    @property
    def flagged(self) -> bool:
        return self._shard is not None

    def count(self) -> int:
        return int(self._shard.count(qe.CountRequest(exact=True))) if self._shard is not None else 0

    def note_counts(self, source: qe.EdgeShard) -> None:
        """How many points hold each subCategory (the payload index's facet, a few microseconds): which filters
        Qdrant answers exactly. Points written later only lie in the exactly scanned segment, so stale is safe."""
        if self._shard is not None:
            facet = source.facet(qe.FacetRequest(FIELD, limit=1_000_000, exact=False))
            self._counts = {str(hit.value): int(hit.count) for hit in facet.hits}

    def wanted(self, filters: Mapping[str, tuple[str, ...]], full_scan_points: int) -> bool:
        """Whether a search with these filters needs the copies beside the graph (see the module docstring)."""
        values = filters.get(FIELD)
        if self._shard is None or not values:
            return False
        return sum(self._counts.get(v, 0) for v in values) >= full_scan_points

    def search(self, request: qe.QueryRequest) -> list[Any]:
        assert self._shard is not None
        return list(self._shard.query(request))

    def drop(self, ids: Sequence[int]) -> None:
        """Drop the copies of ids (they are about to be rewritten or deleted)."""
        if self._shard is None or not ids:
            return
        present = [r.id for r in self._shard.retrieve(list[Any](ids), with_payload=False, with_vector=False)]
        if present:
            self._shard.update(qe.UpdateOperation.delete_points(present))

    def flag(self, source: qe.EdgeShard, neighbours: int) -> tuple[int, int]:
        """Replace the copies with those of source's exposed points; (copies, points looked at)."""
        started = time.perf_counter()
        building = self._folder.with_name(f"{self._folder.name}.new")
        shutil.rmtree(building, ignore_errors=True)
        shard = qe.EdgeShard.create(str(building), self._config)
        copies = seen = 0
        try:
            for name in FILTER_FIELDS:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
            kinds = _Kinds(source)
            params = qe.SearchParams(hnsw_ef=FLAG_EF)
            offset: Any = None
            while True:
                records, offset = source.scroll(
                    qe.ScrollRequest(offset=offset, limit=_PAGE, with_payload=True, with_vector=True)
                )
                exposed = []
                for start in range(0, len(records), _FLAG_BATCH):
                    batch = records[start : start + _FLAG_BATCH]
                    # Ids only: the neighbours' payloads cost as much as the search (249 against 129 us a point
                    # at 1M), so their subCategories come from kinds.
                    found = source.query_batch(
                        qe.QueryBatchRequest(
                            [
                                qe.QueryRequest(
                                    limit=neighbours + 1,  # the point itself is one of them
                                    query=qe.Query.Nearest(_vector(r)),
                                    with_payload=False,
                                    params=params,
                                )
                                for r in batch
                            ]
                        )
                    )
                    for record, hits in zip(batch, found, strict=True):
                        others = [int(h.id) for h in hits if h.id != record.id]
                        if kinds.any_other(others, (record.payload or {}).get(FIELD)):
                            exposed.append(qe.Point(record.id, _vector(record), dict(record.payload or {})))
                if exposed:
                    shard.update(qe.UpdateOperation.upsert_points(exposed))
                copies += len(exposed)
                seen += len(records)
                if offset is None:
                    break
            shard.flush()
        finally:
            shard.close()
        self.close()  # the old copies serve until the new ones are whole
        shutil.rmtree(self._folder, ignore_errors=True)
        building.rename(self._folder)
        self._shard = qe.EdgeShard.load(str(self._folder), self._config)
        self.note_counts(source)
        logger.info(
            "flagged %s of %s points as exposed (%.1f%%) in %.1f s",
            copies,
            seen,
            100 * copies / max(1, seen),
            time.perf_counter() - started,
        )
        return copies, seen

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def flush(self) -> None:
        if self._shard is not None:
            self._shard.flush()

    def close(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            try:
                shard.flush()
            finally:
                shard.close()


class _Kinds:
    """Every point's subCategory by id, as small arrays (ids sorted, a code per id: about 10 bytes a point), read
    once per flagging with one scroll of that field."""

    def __init__(self, source: qe.EdgeShard) -> None:
        codes: dict[Any, int] = {}
        ids: list[int] = []
        kinds: list[int] = []
        offset: Any = None
        while True:
            records, offset = source.scroll(qe.ScrollRequest(offset=offset, limit=_PAGE * 8, with_payload=_FIELD_ONLY))
            for r in records:
                ids.append(int(r.id))
                kinds.append(codes.setdefault((r.payload or {}).get(FIELD), len(codes)))
            if offset is None:
                break
        order = np.argsort(np.asarray(ids, np.int64), kind="stable")
        self._ids = np.asarray(ids, np.int64)[order]
        self._kinds = np.asarray(kinds, np.int32)[order]
        self._codes = codes

    def any_other(self, ids: Sequence[int], kind: Any) -> bool:
        """Whether any of ids holds another subCategory than kind (an id not read counts as another)."""
        if not ids:
            return False
        wanted = np.asarray(ids, np.int64)
        at = np.minimum(np.searchsorted(self._ids, wanted), len(self._ids) - 1)
        own = self._codes.get(kind, -1)
        return bool(np.any((self._ids[at] != wanted) | (self._kinds[at] != own)))


def _vector(record: qe.Record) -> list[float]:
    return cast(list[float], record.vector)  # a collection of one unnamed dense vector: a list of floats


def far_from(source: qe.EdgeShard, query: list[float], values: Collection[str]) -> bool:
    """Whether a subCategory filter on these values is far from the query: none of its nearest points holds one."""
    near = source.query(
        qe.QueryRequest(
            limit=FAR_CHECK_NEIGHBOURS,
            query=qe.Query.Nearest(query),
            with_payload=_FIELD_ONLY,
            with_vector=False,
            params=_FAR_CHECK,
        )
    )
    return not any((p.payload or {}).get(FIELD) in values for p in near)


def merged(graph: Sequence[Any], copies: Sequence[Any], top_k: int) -> list[Any]:
    """The top_k nearest of both answers (scores are distances), each point once."""
    best: dict[int, Any] = {}
    for point in (*graph, *copies):
        best.setdefault(int(point.id), point)
    return sorted(best.values(), key=lambda p: float(p.score))[:top_k]
