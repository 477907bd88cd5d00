"""Qdrant Edge adapter: Qdrant's own engine in process, persisted under a data directory.

Layout under ``data_dir/<collection>/``, with ``data_dir/<collection>.lock`` beside it (held while open):

- ``shard/``: the Edge shard (segments, WAL, edge_config.json), owned by qdrant-edge.
- ``collection.json``: what this module records about the vectors (dim, embedder model/version, distance),
  written atomically *after* the shard and its payload indexes exist. A shard directory without this file is an
  interrupted creation and is rebuilt on the next ensure_collection.

Qdrant Edge 0.9 reports Euclid scores as the true Euclidean distance (checked by the congruence test), so scores
are passed through unchanged.  Writes are durable through the shard's write-ahead log (replayed on load), so they
are not flushed one by one (a flush costs ~15 ms); close() flushes.  Searches are exact by default: at catalogue
sizes (40k vectors of dim 64) a filtered full scan costs about 3 ms and returns the brute-force answer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from fashionsearch.errors import CollectionMismatchError, StoreError
from fashionsearch.store.base import (
    FILTER_FIELDS,
    CollectionInfo,
    EmbedderIdentity,
    Filters,
    Hit,
    StoredPoint,
    as_vector,
    as_vectors,
    check_filters,
    scored_hits,
    stored_points,
    unique_ids,
)
from fashionsearch.store.lock import StoreLock, lock_path

logger = logging.getLogger(__name__)

META_FILE = "collection.json"
SHARD_DIR = "shard"
_META_SCHEMA = 1


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_meta(path: Path) -> CollectionInfo | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return CollectionInfo(
            dim=int(data["dim"]),
            embedder=EmbedderIdentity(model=str(data["embedder_model"]), version=str(data["embedder_version"])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path} is not a valid collection record: {exc}") from exc


def _match(values: tuple[str, ...]) -> qe.MatchValue | qe.MatchAny:
    return qe.MatchValue(values[0]) if len(values) == 1 else qe.MatchAny(list(values))


def _build_filter(filters: Mapping[str, tuple[str, ...]], exclude_ids: Collection[int]) -> qe.Filter | None:
    must = [qe.FieldCondition(key, match=_match(values)) for key, values in filters.items()]
    must_not = [qe.HasIdCondition({int(i) for i in exclude_ids})] if exclude_ids else []
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


class EdgeIndex:
    """VectorIndex on a Qdrant Edge shard under ``data_dir/collection``."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        collection: str = "catalogue",
        *,
        search_threads: int | None = None,
        exact: bool = True,
    ) -> None:
        if not collection or "/" in collection or collection.startswith("."):
            raise StoreError(f"collection name {collection!r} is not a plain directory name")
        self._root = Path(data_dir) / collection
        self._meta_path = self._root / META_FILE
        self._shard_path = self._root / SHARD_DIR
        self._search_threads = search_threads
        self._params = qe.SearchParams(exact=exact)
        self._lock = threading.RLock()
        self._shard: qe.EdgeShard | None = None
        self._closed = False
        # One writer per collection, from before its folder exists until close(): Qdrant Edge's own lock comes
        # with the shard, too late for two processes that both find no shard and both create (and delete) it.
        self._dir_lock = StoreLock(lock_path(data_dir, collection), guards=f"the Qdrant Edge collection {self._root}")
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            self._info = _read_meta(self._meta_path)
            if self._info is not None:
                try:
                    self._shard = qe.EdgeShard.load(str(self._shard_path), self._config(self._info.dim))
                except Exception as error:  # qdrant-edge raises plain Exception
                    hint = " (is another process using it?)" if "WouldBlock" in str(error) else ""
                    raise StoreError(
                        f"cannot open the Qdrant Edge shard at {self._shard_path}{hint}: {error}"
                    ) from None
        except BaseException:
            self._dir_lock.release()
            raise
        if self._info is not None:
            logger.info(
                "opened edge collection %s: %s vectors of %s (dim %s)",
                self._root,
                self.count(),
                self._info.embedder,
                self._info.dim,
            )

    @property
    def path(self) -> Path:
        return self._root

    def _config(self, dim: int) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Euclid),
            max_search_threads=self._search_threads,
        )

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError("the vector index is closed")

    def _require_shard(self) -> qe.EdgeShard:
        self._require_open()
        if self._shard is None or self._info is None:
            raise StoreError("no collection: call ensure_collection first")
        return self._shard

    def ensure_collection(self, dim: int, embedder: EmbedderIdentity) -> None:
        wanted = CollectionInfo(dim=int(dim), embedder=embedder)
        with self._lock:
            self._require_open()
            if self._info == wanted:
                return
            if self._info is not None:
                existing = self.count()
                if existing:
                    raise CollectionMismatchError(
                        f"collection {self._root} holds {existing} vectors of {self._info.embedder}"
                        f" (dim {self._info.dim}), not {embedder} (dim {dim}); re-index into a new collection"
                    )
            self._create(wanted)

    def _create(self, info: CollectionInfo) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        self._info = None
        self._meta_path.unlink(missing_ok=True)
        if self._shard_path.exists():
            shutil.rmtree(self._shard_path)
        shard = qe.EdgeShard.create(str(self._shard_path), self._config(info.dim))
        for name in FILTER_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        shard.flush()
        _write_json_atomic(
            self._meta_path,
            {
                "schema": _META_SCHEMA,
                "dim": info.dim,
                "distance": "euclid",
                "embedder_model": info.embedder.model,
                "embedder_version": info.embedder.version,
                "filter_fields": list(FILTER_FIELDS),
            },
        )
        self._shard, self._info = shard, info
        logger.info("created edge collection %s for %s (dim %s)", self._root, info.embedder, info.dim)

    def info(self) -> CollectionInfo | None:
        return self._info

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        if not points:
            return
        with self._lock:
            shard = self._require_shard()
            assert self._info is not None
            dim = self._info.dim
            # One conversion and one finiteness check for the whole batch (per point they cost more than the write).
            vectors = as_vectors([p.vector for p in points], dim).tolist()
            batch = [qe.Point(int(p.id), v, dict(p.payload)) for p, v in zip(points, vectors, strict=True)]
            shard.update(qe.UpdateOperation.upsert_points(batch))

    def delete(self, ids: Sequence[int]) -> list[int]:
        wanted = unique_ids(ids)
        with self._lock:
            self._require_open()
            if self._shard is None or not wanted:
                return []
            present = [int(r.id) for r in self._shard.retrieve(wanted, with_payload=False, with_vector=False)]
            if present:
                self._shard.update(qe.UpdateOperation.delete_points(present))
            return [i for i in wanted if i in set(present)]

    def retrieve(self, ids: Sequence[int]) -> list[StoredPoint]:
        wanted = unique_ids(ids)
        with self._lock:
            self._require_open()
            if self._shard is None or not wanted:
                return []
            records = {int(r.id): r for r in self._shard.retrieve(wanted, with_payload=True, with_vector=True)}
        return stored_points(wanted, records)

    def search(
        self,
        vector: np.ndarray,
        top_k: int,
        filters: Filters | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        wanted = check_filters(filters)
        with self._lock:
            self._require_open()
            if self._shard is None or self._info is None or top_k <= 0:
                return []
            query = as_vector(vector, self._info.dim).tolist()
            request = qe.QueryRequest(
                limit=int(top_k),
                query=qe.Query.Nearest(query),
                filter=_build_filter(wanted, exclude_ids),
                with_payload=True,
                with_vector=False,
                params=self._params,
            )
            points = self._shard.query(request)
        return scored_hits(points)

    def scroll(self, fields: Sequence[str] = (), page_size: int = 1000) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every point's id with the named payload fields (no vectors), page by page; for batch jobs."""
        offset: Any = None
        selector = qe.PayloadSelector.Include(list(fields)) if fields else False
        while True:
            with self._lock:
                self._require_open()
                if self._shard is None:
                    return
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=int(page_size), with_payload=selector, with_vector=False)
                )
            for r in records:
                yield int(r.id), dict(r.payload or {})
            if offset is None:
                return

    def count(self) -> int:
        with self._lock:
            self._require_open()
            if self._shard is None:
                return 0
            return int(self._shard.count(qe.CountRequest(exact=True)))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._shard is not None:
                    self._shard.flush()
                    self._shard.close()
                    self._shard = None
            finally:
                self._dir_lock.release()
