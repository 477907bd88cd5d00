"""Qdrant Edge adapter: Qdrant's own engine in process, persisted under a data directory.

Layout under ``data_dir/<collection>/``, with ``data_dir/<collection>.lock`` beside it (held while open):

- ``shard/``: the Edge shard (segments, WAL, edge_config.json), owned by qdrant-edge.
- ``exposed/``: a second, small Edge shard holding copies of the points a filter far from the query needs, written
  after each graph build and searched exactly beside the graph (edge_exposed.py).
- ``collection.json``: what this module records about the vectors (dim, embedder model/version, distance),
  written atomically *after* the shard and its payload indexes exist. A shard directory without this file is an
  interrupted creation and is rebuilt on the next ensure_collection.

Qdrant Edge 0.9 reports Euclid scores as the true Euclidean distance (checked by the congruence test), so scores
are passed through unchanged.  Writes are durable through the shard's write-ahead log (replayed on load), so they
are not flushed one by one (a flush costs ~15 ms); close() flushes.  The graph index (HNSW) is built by optimize()
(and, for every ``EdgeTuning.segment_points`` points, by a bulk load's build_full_segment()), never on a write: a bulk
load (the indexer's rebuild, a restore) optimises before it switches the alias; a collection smaller than
``EdgeTuning.index_from_points`` has no graph and is scanned exactly, which is faster there (edge_tuning.py).
Qdrant Edge's optimize() holds the GIL for the whole build (measured: 65 s at 100k points, with searches and writes
of the same process waiting), so the gateway never optimises its live collection: its own
upserts land in a small unindexed segment that every search scans exactly, and the next rebuild or restore
compacts them into the graph (deploy/README.md, the store's capacity planning).

Aliases (EdgeCatalog): a pointer file ``<data_dir>/<alias>.alias`` holding the target collection's directory name,
replaced with ``os.replace`` (atomic on POSIX) after an fsync.  A plain collection directory named like the alias
(the layout before any switch) is what the alias means while no pointer file exists.  ``FollowingEdgeIndex`` is the
reader's side (the gateway's): a VectorIndex that notices a switch and moves to the new collection between two calls.

Locks (``fashionsearch.store.lock``): the gateway's reader holds ``<data_dir>/.lock`` for as long as it serves the
directory (one gateway per directory), and every open collection holds ``<data_dir>/<collection>.lock`` (one writer
per collection), so a rebuild may fill a new collection beside the one the gateway serves but never write into it.
A collection is deleted only under its lock: one still open elsewhere is marked (``drop-requested`` in its folder)
and its holder deletes it when it lets go.

A full disk: qdrant-edge writes through memory-mapped files (WAL segments, vectors, payload), and a page that a full
disk cannot back kills the process with SIGBUS, on every restart too. So every write first checks the free space
(statvfs) against a reserve (``min_free_bytes``) and is refused with StoreFullError (RESOURCE_EXHAUSTED, HTTP 507)
below it; reads go on. The reserve must exceed what one write can add (a batch of points is some KiB, a new
collection about 16 MiB). Opening a shard needs more: loading maps the segments' files populated, which allocates
their sparse parts (measured on tmpfs: a shard using 22 MiB used 88 MiB once reopened, the 32 MiB vector chunk and
4 MiB per keyword index filled in; the WAL's preallocated segments stayed sparse), so opening needs those bytes plus
the reserve, and says so when the disk has less.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from fashionsearch.errors import CollectionMismatchError, StoreError, StoreFullError, StoreUnavailableError
from fashionsearch.store.base import (
    FILTER_FIELDS,
    CollectionInfo,
    EmbedderIdentity,
    Filters,
    Hit,
    StoredPoint,
    VectorIndex,
    as_vector,
    as_vectors,
    check_filters,
    check_name,
    scored_hits,
    stored_points,
    unique_ids,
)
from fashionsearch.store.edge_exposed import EXPOSED_DIR, FIELD, ExposedCopies, far_from, merged
from fashionsearch.store.edge_files import copy_tree, refresh_tree, sync_tree, tree_data_bytes, warm_page_cache
from fashionsearch.store.edge_tuning import EdgeTuning
from fashionsearch.store.lock import StoreLock, StoreLockedError, lock_path
from fashionsearch.throttle import Throttle, left_out_note

logger = logging.getLogger(__name__)

META_FILE = "collection.json"
SHARD_DIR = "shard"
ALIAS_SUFFIX = ".alias"
DIRECTORY_LOCK = ".lock"
DROP_MARKER = "drop-requested"
_META_SCHEMA = 1
_EXACT = qe.SearchParams(exact=True)
#: Free space kept on the data directory's disk (see the module docstring); below it writes are refused.
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
_MIB = 1024 * 1024


def _available_memory() -> int:
    """Bytes of memory the machine can give without swapping (Linux's MemAvailable), 0 where it does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding path."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _sparse_bytes(shard: Path) -> int:
    """What loading the shard may allocate: the unallocated parts of its segment files (see the module docstring)."""
    total = 0
    for path in (shard / "segments").rglob("*"):
        stat = path.lstat()
        if path.is_file():
            total += max(0, stat.st_size - stat.st_blocks * 512)
    return total


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
    must: list[Any] = [qe.FieldCondition(key, match=_match(values)) for key, values in filters.items()]
    must_not: list[Any] = [qe.HasIdCondition({int(i) for i in exclude_ids})] if exclude_ids else []
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
        exact: bool = False,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        tuning: EdgeTuning | None = None,
    ) -> None:
        if not collection or "/" in collection or collection.startswith("."):
            raise StoreError(f"collection name {collection!r} is not a plain directory name")
        self._root = Path(data_dir) / collection
        self._meta_path = self._root / META_FILE
        self._shard_path = self._root / SHARD_DIR
        self._exposed_path = self._root / EXPOSED_DIR
        self._search_threads = search_threads
        self._min_free_bytes = min_free_bytes
        self._tuning = tuning or EdgeTuning()
        # Searches merge the exposed copies unless exact or turned off; the copies are opened either way, so that
        # writes drop them (a copy must never outlive its point's version).
        self._merge_exposed = not exact and self._tuning.exposed_neighbours > 0
        self._params = self._tuning.search_params(exact=exact)
        # Filters far from the query search wider (edge_exposed.far_from).
        self._far_params = self._tuning.search_params(exact=exact, far=True)
        self._lock = threading.RLock()
        self._shard: qe.EdgeShard | None = None
        self._exposed: ExposedCopies | None = None
        self._closed = False
        # One writer per collection, from before its folder exists until close(): Qdrant Edge's own lock comes
        # with the shard, too late for two processes that both find no shard and both create (and delete) it.
        self._dir_lock = StoreLock(lock_path(data_dir, collection), guards=f"the Qdrant Edge collection {self._root}")
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            self._info = _read_meta(self._meta_path)
            if self._info is None and self._shard_path.exists():
                self._refuse_unrecorded_shard()
            if self._info is not None:
                self._require_space("opening the collection", loading=True)
                try:
                    self._shard = qe.EdgeShard.load(str(self._shard_path), self._config(self._info.dim))
                except Exception as error:  # qdrant-edge raises plain Exception
                    hint = " (is another process using it?)" if "WouldBlock" in str(error) else ""
                    raise StoreError(
                        f"cannot open the Qdrant Edge shard at {self._shard_path}{hint}: {error}"
                    ) from None
                self._open_exposed(self._info.dim)
        except BaseException:
            self._dir_lock.release()
            raise
        if self._info is not None:
            self._warm_page_cache()
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

    def _warm_page_cache(self) -> None:
        """Read the segments' files into the OS page cache (edge_files.warm_page_cache says why), when they take at
        most half the memory the machine has available; a larger catalogue is left to be read as searches need it."""
        segments = self._shard_path / "segments"
        size = tree_data_bytes(segments)
        available = _available_memory()
        if size > available // 2:
            logger.info(
                "edge collection %s: its %.0f MiB of files are not read ahead (%.0f MiB of memory available)",
                self._root,
                size / _MIB,
                available / _MIB,
            )
            return
        started = time.monotonic()
        read = warm_page_cache(segments)
        logger.info(
            "edge collection %s: read %.0f MiB ahead in %.1f s", self._root, read / _MIB, time.monotonic() - started
        )

    def _config(self, dim: int) -> qe.EdgeConfig:
        return self._tuning.config(dim, search_threads=self._search_threads)

    def _open_exposed(self, dim: int) -> None:
        """Open the exposed points' copies, if flagged. They are derived data: copies that cannot be loaded are
        removed (searches fall back to the graph alone) and the next optimize() flags afresh."""
        assert self._shard is not None
        try:
            self._exposed = ExposedCopies(self._exposed_path, self._config(dim))
        except Exception as error:  # qdrant-edge raises plain Exception
            logger.warning("the exposed copies at %s cannot be opened (%s): removed", self._exposed_path, error)
            shutil.rmtree(self._exposed_path, ignore_errors=True)
            self._exposed = ExposedCopies(self._exposed_path, self._config(dim))
        self._exposed.note_counts(self._shard)

    def _close_exposed(self) -> None:
        if self._exposed is not None:
            self._exposed.close()
            self._exposed = None

    def _require_space(self, doing: str, loading: bool = False, extra: int = 0) -> None:
        free = free_bytes(self._root)
        sparse = _sparse_bytes(self._shard_path) + _sparse_bytes(self._exposed_path) if loading else 0
        needed = self._min_free_bytes + sparse + extra
        if free < needed:
            what = "its files' unallocated parts, which loading fills in, and " if loading else ""
            what += f"the {extra / _MIB:.1f} MiB it copies, and " if extra else ""
            raise StoreFullError(
                f"{doing} refused: the disk holding {self._root} has {free / _MIB:.1f} MiB free, less than the"
                f" {needed / _MIB:.1f} MiB needed ({what}the {self._min_free_bytes / _MIB:.1f} MiB kept free so that"
                " the store never meets a full disk); make room on it"
            )

    def _refuse_unrecorded_shard(self) -> None:
        """A shard without its record is an interrupted creation (empty: ensure_collection rebuilds it), or one that
        lost its record: that one holds points, which are never deleted implicitly."""
        self._require_space("opening the collection", loading=True)
        try:
            shard = qe.EdgeShard.load(str(self._shard_path))
        except Exception as error:  # qdrant-edge raises plain Exception
            if not any((self._shard_path / "segments").glob("*")):
                return  # died before the first segment: nothing to keep
            raise StoreError(
                f"{self._meta_path} is missing and the shard at {self._shard_path} cannot be opened ({error}); restore"
                " the file, or move the shard away to start an empty collection"
            ) from None
        try:
            points = int(shard.count(qe.CountRequest(exact=True)))
        finally:
            shard.close()
        if points:
            raise StoreError(
                f"{self._meta_path} is missing but the shard at {self._shard_path} holds {points} points: restore the"
                " file (dim, embedder_model, embedder_version), or move the shard away to start an empty collection;"
                " a shard with points is never deleted implicitly"
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
        self._require_space("creating the collection")
        self._close_exposed()
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        self._info = None
        self._meta_path.unlink(missing_ok=True)
        shutil.rmtree(self._exposed_path, ignore_errors=True)
        if self._shard_path.exists():
            shutil.rmtree(self._shard_path)
        shard = qe.EdgeShard.create(str(self._shard_path), self._config(info.dim))
        for name in FILTER_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        shard.flush()
        self._record(info)
        self._shard, self._info = shard, info
        self._open_exposed(info.dim)
        logger.info("created edge collection %s for %s (dim %s)", self._root, info.embedder, info.dim)

    def _record(self, info: CollectionInfo) -> None:
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

    def copy_shard(self, target: Path) -> None:
        """Copy the shard's files, graph included, and the exposed copies' shard into target's ``shard/`` and
        ``exposed/`` (for a backup; not synced: the caller syncs it once writes go on). A new target gets a whole
        copy; an existing one, an earlier copy, is brought up to date by rewriting what differs (edge_files.py).
        Consistent only while nothing writes to this collection: the caller holds the writes (the write journal's
        barrier) for the last call; searches go on, since they write nothing."""
        with self._lock:
            started = time.perf_counter()
            self._require_shard().flush()
            if self._exposed is not None:
                self._exposed.flush()
            flushed = time.perf_counter()
        target.mkdir(exist_ok=True)
        written = 0
        for source in (self._shard_path, self._exposed_path):
            there = target / source.name
            if source.is_dir():
                written += refresh_tree(source, there) if there.exists() else copy_tree(source, there)
            else:
                shutil.rmtree(there, ignore_errors=True)
        logger.info(
            "copied the shard of %s: flush %.2f s, %.1f MiB written in %.2f s",
            self._root,
            flushed - started,
            written / _MIB,
            time.perf_counter() - flushed,
        )

    def adopt_shard(self, source: Path, info: CollectionInfo) -> None:
        """Make this empty collection a copy of the shard files at source (a backup's, made by copy_shard) holding
        vectors of info: the restore that needs no graph build."""
        with self._lock:
            self._require_open()
            if self._info is not None and self.count():
                raise StoreError(f"collection {self._root} is not empty: a shard copy is restored into an empty one")
            size = tree_data_bytes(source)
            self._require_space("restoring the collection", extra=size)
            self._close_exposed()
            if self._shard is not None:
                self._shard.close()
                self._shard = None
            self._info = None
            self._meta_path.unlink(missing_ok=True)
            shutil.rmtree(self._shard_path, ignore_errors=True)
            shutil.rmtree(self._exposed_path, ignore_errors=True)
            # A backup made before the exposed copies holds the shard's files directly: restored without copies
            # (far filters answered by the graph alone until the next optimize()).
            shard_files = source / SHARD_DIR if (source / SHARD_DIR).is_dir() else source
            copy_tree(shard_files, self._shard_path)
            sync_tree(self._shard_path)
            if (source / EXPOSED_DIR).is_dir():
                copy_tree(source / EXPOSED_DIR, self._exposed_path)
                sync_tree(self._exposed_path)
            try:
                shard = qe.EdgeShard.load(str(self._shard_path), self._config(info.dim))
            except Exception as error:  # qdrant-edge raises plain Exception
                raise StoreError(f"the shard copy at {source} cannot be opened as dim {info.dim}: {error}") from None
            self._record(info)
            self._shard, self._info = shard, info
            self._open_exposed(info.dim)
        logger.info("restored edge collection %s from the shard files at %s", self._root, source)

    def info(self) -> CollectionInfo | None:
        return self._info

    def optimize(self) -> bool:
        """Build the graph index of every segment large enough for one and merge small segments (blocking: this
        process's searches and writes wait until it is done); False when there was nothing to do."""
        with self._lock:
            changed = self._build_graphs()
            info = self._require_shard().info()
            graph = info.indexed_vectors_count > 0
            return self._flag_exposed(changed, graph=graph, points=info.points_count) or changed

    def build_full_segment(self) -> bool:
        """A bulk load's step after each batch (the indexer's rebuild, a benchmark's load; never a live collection,
        whose searches would wait): once the points written since the last graph build reach
        ``EdgeTuning.segment_points``, build their graph now, as a segment of its own. True when it did; optimize()
        at the end of the load builds the rest."""
        with self._lock:
            limit = self._tuning.segment_points
            info = self._require_shard().info()
            if not limit or info.points_count - info.indexed_vectors_count < limit:
                return False
            self._build_graphs()
            return True

    def _build_graphs(self) -> bool:
        """shard.optimize(), flushed and logged; the caller holds the lock."""
        shard = self._require_shard()
        self._require_space("optimising")  # a graph build writes new segments before it drops the old ones
        started = time.perf_counter()
        changed = bool(shard.optimize())
        shard.flush()
        if changed:
            info = shard.info()
            logger.info(
                "optimised edge collection %s in %.1f s: %s of %s points in a graph, %s segments",
                self._root,
                time.perf_counter() - started,
                info.indexed_vectors_count,
                info.points_count,
                info.segments_count,
            )
        return changed

    def _flag_exposed(self, rebuilt: bool, *, graph: bool, points: int) -> bool:
        """Copy the exposed points after a graph build (or the first optimize() of a graph without copies: a
        restore of an older backup); True when the copies were written. A catalogue of more than one segment
        (``EdgeTuning.segment_points``) has none: flagging took 1.3 to 1.6 times the graph's build at 1M and 4M points
        (one graph), each of its searches would visit every segment's graph, and what the copies add shrinks as the
        catalogue grows denser (far-filter recall@5 0.40 -> 0.63 at 4M, bench/README.md)."""
        copies = self._exposed
        assert copies is not None
        limit = self._tuning.segment_points
        if not graph or not self._tuning.exposed_neighbours or (limit and points > limit):
            if copies.flagged:
                copies.remove()
            return False
        if copies.flagged and not rebuilt:
            return False
        assert self._shard is not None
        copies.flag(self._shard, self._tuning.exposed_neighbours)
        return True

    def exposed_points(self) -> int:
        """How many exposed points are copied beside the graph (0 before the first graph build)."""
        with self._lock:
            self._require_shard()
            return self._exposed.count() if self._exposed is not None else 0

    def segment_count(self) -> int:
        """How many segments the shard holds (each with its own graph once large enough, plus the one being filled)."""
        with self._lock:
            return int(self._require_shard().info().segments_count)

    def graph_points(self) -> int:
        """How many points the graph index covers (0 before optimize(), or below index_from_points)."""
        with self._lock:
            return int(self._require_shard().info().indexed_vectors_count)

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        if not points:
            return
        with self._lock:
            shard = self._require_shard()
            assert self._info is not None
            self._require_space("storing items")
            dim = self._info.dim
            # One conversion and one finiteness check for the whole batch (per point they cost more than the write).
            vectors = as_vectors([p.vector for p in points], dim).tolist()
            batch = [qe.Point(int(p.id), v, dict(p.payload)) for p, v in zip(points, vectors, strict=True)]
            if self._exposed is not None:  # first: a copy must never outlive its point's version
                self._exposed.drop(unique_ids([p.id for p in points]))
            shard.update(qe.UpdateOperation.upsert_points(batch))

    def _records(self, wanted: list[int], *, with_data: bool) -> list[Any]:
        """The shard's records of those ids that exist, with payload and vector or without; the caller holds the
        lock."""
        self._require_open()
        if self._shard is None or not wanted:
            return []
        return list(self._shard.retrieve(list[Any](wanted), with_payload=with_data, with_vector=with_data))

    def delete(self, ids: Sequence[int]) -> list[int]:
        wanted = unique_ids(ids)
        with self._lock:
            present = [int(r.id) for r in self._records(wanted, with_data=False)]
            if present and self._shard is not None:
                self._require_space("deleting items")  # a delete is a write-ahead log record too
                if self._exposed is not None:
                    self._exposed.drop(present)
                self._shard.update(qe.UpdateOperation.delete_points(list[Any](present)))
            return [i for i in wanted if i in set(present)]

    def retrieve(self, ids: Sequence[int]) -> list[StoredPoint]:
        wanted = unique_ids(ids)
        with self._lock:
            records = {int(r.id): r for r in self._records(wanted, with_data=True)}
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
            where = _build_filter(wanted, exclude_ids)

            def request(params: qe.SearchParams) -> qe.QueryRequest:
                return qe.QueryRequest(
                    limit=int(top_k),
                    query=qe.Query.Nearest(query),
                    filter=where,
                    with_payload=True,
                    with_vector=False,
                    params=params,
                )

            # A filter far from the query (edge_exposed.py): a walk towards its kind ends at the kind's edge, so the
            # graph searches wider and the exposed copies are searched beside it. A near filter needs neither.
            copies = self._exposed
            far = (
                self._merge_exposed
                and copies is not None
                and copies.wanted(wanted, self._tuning.full_scan_points)
                and far_from(self._shard, query, wanted[FIELD])
            )
            points = self._shard.query(request(self._far_params if far else self._params))
            if far:
                assert copies is not None
                points = merged(points, copies.search(request(_EXACT)), int(top_k))
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
            shard, self._shard = self._shard, None
            try:
                self._close_exposed()
                if shard is not None:
                    try:
                        shard.flush()
                    finally:
                        shard.close()
            except Exception as error:  # qdrant-edge raises plain Exception
                # A full disk (another tenant of the volume filled it) fails the flush of the segments; the
                # acknowledged writes are in the write-ahead log, which the next open replays.
                kind = StoreFullError if "No space left" in str(error) else StoreError
                raise kind(
                    f"closing the Qdrant Edge collection {self._root} could not flush it: {error}; its writes are in"
                    " its write-ahead log, which the next open replays"
                ) from None
            finally:
                self._dir_lock.release()


# --------------------------------------------------------------------------------------------------------------
# Collections and aliases: pointer files beside the collections


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EdgeCatalog:
    """Edge collections under one data directory; aliases are pointer files beside them."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        search_threads: int | None = None,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        tuning: EdgeTuning | None = None,
    ) -> None:
        self.label = f"edge {data_dir}"
        self.root = Path(data_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._search_threads = search_threads
        self._min_free_bytes = min_free_bytes
        self._tuning = tuning

    @property
    def tuning(self) -> EdgeTuning | None:
        return self._tuning

    def path(self, collection: str) -> Path:
        return self.root / check_name(collection)

    def pointer(self, alias: str) -> Path:
        return self.root / f"{check_name(alias)}{ALIAS_SUFFIX}"

    def resolve(self, alias: str) -> str | None:
        pointer = self.pointer(alias)
        try:
            target = json.loads(pointer.read_text(encoding="utf-8"))["collection"]
        except FileNotFoundError:
            return alias if (self.root / alias).is_dir() else None
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{pointer} is not a valid alias file: {exc}") from exc
        return check_name(str(target))

    def open(self, collection: str) -> EdgeIndex:
        return EdgeIndex(
            self.root,
            check_name(collection),
            search_threads=self._search_threads,
            min_free_bytes=self._min_free_bytes,
            tuning=self._tuning,
        )

    def info(self, collection: str) -> CollectionInfo | None:
        # Read the record file only: the live shard may be open in the gateway, the single writer.
        return _read_meta(self.path(collection) / META_FILE)

    def live(self, alias: str) -> FollowingEdgeIndex:
        return FollowingEdgeIndex(self, alias)

    def release(self, index: VectorIndex) -> None:
        index.close()

    def switch(self, alias: str, collection: str) -> None:
        if not self.path(collection).is_dir():
            raise StoreError(f"cannot point alias {alias} at {collection}: no such collection under {self.root}")
        (self.root / collection / DROP_MARKER).unlink(missing_ok=True)  # switching back to a kept collection
        pointer = self.pointer(alias)
        tmp = pointer.with_name(f".{pointer.name}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"collection": collection}, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:
            tmp.unlink(missing_ok=True)
            if error.errno != errno.ENOSPC:
                raise
            # The pointer is replaced only once written whole, so the alias stays where it was.
            raise StoreFullError(
                f"switching alias {alias} to {collection} refused: the disk holding {self.root} is full"
                f" ({free_bytes(self.root) / _MIB:.1f} MiB free); {alias} still points at {self.resolve(alias)}."
                " Make room on it and switch again"
            ) from None
        os.replace(tmp, pointer)
        _fsync_dir(self.root)
        logger.info("alias %s now points at edge collection %s", alias, collection)

    def drop(self, collection: str) -> bool:
        path = self.path(collection)
        if not path.is_dir():
            return True
        if self._drop_if_free(path):
            return True
        # Still open, e.g. by the gateway until its next request moves it over to the new collection: mark it for
        # the holder, then look again, in case the holder let go before the mark was there to be seen.
        (path / DROP_MARKER).touch()
        if self._drop_if_free(path):
            return True
        logger.info("edge collection %s is still open elsewhere: its holder drops it when it lets go", path)
        return False

    def drop_requested(self, keep: str) -> None:
        """Delete the collections marked for dropping that nobody holds (left by a holder that died), except keep."""
        for marker in self.root.glob(f"*/{DROP_MARKER}"):
            if marker.parent.name != keep:
                self._drop_if_free(marker.parent)

    def _drop_if_free(self, path: Path) -> bool:
        try:
            lock = StoreLock(lock_path(self.root, path.name), guards=f"the Qdrant Edge collection {path}")
        except StoreLockedError:
            return False
        try:
            if path.is_dir():
                shutil.rmtree(path)
                logger.info("dropped edge collection %s", path)
        finally:
            lock.release()
        return True

    def close(self) -> None:
        return None


class FollowingEdgeIndex:
    """A VectorIndex on whatever Edge collection an alias points at, moving over when the pointer file changes.

    Each call compares the pointer file's (inode, mtime) with the last one seen (one stat, about a microsecond),
    so a switch takes effect on the next call.  The previous collection stays open for ``retire_after_s`` more
    seconds, so calls already running on it (from other threads) finish normally; then it is closed, and deleted
    if the job that switched asked for it.  It holds the data directory's lock from construction until close().
    """

    def __init__(self, catalog: EdgeCatalog, alias: str, *, retire_after_s: float = 30.0) -> None:
        self._alias = check_name(alias)
        self._dir_lock = StoreLock(
            catalog.root / DIRECTORY_LOCK, guards=f"the Qdrant Edge data directory {catalog.root}"
        )
        self._catalog = catalog
        self._retire_after_s = retire_after_s
        self._retired: list[tuple[float, str, EdgeIndex]] = []
        self._pointer = catalog.pointer(alias)
        self._lock = threading.RLock()
        self._stamp: tuple[int, int] | None = None
        self._current: str = ""
        self._index: EdgeIndex | None = None
        self._closed = False
        # Every call retries the collection the alias points at, so a refusal would otherwise be logged per call.
        self._refused_log = Throttle()
        try:
            self._follow()
            self._catalog.drop_requested(keep=self._current)
        except BaseException:
            self.close()
            raise

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._pointer)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _follow(self, write: bool = False) -> EdgeIndex:
        """The index of the collection the alias points at. When that collection cannot be opened yet, reads go on
        from the one it replaced, but a `write` is refused: it would land in a collection nobody reads any more."""
        stamp = self._stat()
        with self._lock:
            if self._closed:
                raise StoreError("the vector index is closed")
            if self._index is not None and stamp == self._stamp:
                if self._retired:
                    self._close_retired(time.monotonic() - self._retire_after_s)
                return self._index
            target = self._catalog.resolve(self._alias) or self._alias
            if self._index is None or target != self._current:
                try:
                    new_index = self._catalog.open(target)
                except (StoreLockedError, StoreFullError) as refused:
                    if self._index is None:
                        raise
                    # Whoever switched has not let go of the new collection yet, or the disk is too full to open it:
                    # keep serving reads, look again next call.
                    if write:
                        if isinstance(refused, StoreFullError):
                            raise
                        raise StoreUnavailableError(
                            f"alias {self._alias} now points at {target}, which cannot be opened yet"
                            f" ({refused.message}); writes are refused until it can be, so that none lands in"
                            f" {self._current}, which it replaced. Retry shortly"
                        ) from None
                    left_out = self._refused_log.allow()
                    if left_out is not None:
                        logger.warning(
                            "alias %s points at %s, which cannot be opened yet (%s): still serving %s%s",
                            self._alias,
                            target,
                            refused.message,
                            self._current,
                            left_out_note(left_out),
                        )
                    return self._index
                old, old_name, self._index, self._current = self._index, self._current, new_index, target
                if old is not None:
                    logger.info("alias %s switched to collection %s", self._alias, target)
                    self._retired.append((time.monotonic(), old_name, old))
            self._stamp = stamp
            self._close_retired(time.monotonic() - self._retire_after_s)
            return self._index

    def _close_retired(self, before: float) -> None:
        keep = []
        for retired_at, name, index in self._retired:
            if retired_at > before:
                keep.append((retired_at, name, index))
                continue
            try:
                index.close()
                if name != self._current and (self._catalog.path(name) / DROP_MARKER).exists():
                    self._catalog.drop(name)
            except Exception:
                logger.warning(
                    "closing the previous collection %s of alias %s failed", name, self._alias, exc_info=True
                )
        self._retired = keep

    @property
    def collection(self) -> str:
        return self._current

    def ensure_collection(self, dim: int, embedder: EmbedderIdentity) -> None:
        self._follow(write=True).ensure_collection(dim, embedder)

    def info(self) -> CollectionInfo | None:
        return self._follow().info()

    def optimize(self) -> bool:
        return self._follow(write=True).optimize()

    def build_full_segment(self) -> bool:
        return self._follow(write=True).build_full_segment()

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        self._follow(write=True).upsert(points)

    def delete(self, ids: Sequence[int]) -> list[int]:
        return self._follow(write=True).delete(ids)

    def retrieve(self, ids: Sequence[int]) -> list[StoredPoint]:
        return self._follow().retrieve(ids)

    def search(
        self,
        vector: np.ndarray,
        top_k: int,
        filters: Mapping[str, Any] | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        return self._follow().search(vector, top_k, filters, exclude_ids)

    def scroll(self, fields: Sequence[str] = (), page_size: int = 1000) -> Iterator[tuple[int, dict[str, Any]]]:
        return self._follow().scroll(fields, page_size)

    def copy_shard(self, target: Path) -> None:
        self._follow().copy_shard(target)

    def count(self) -> int:
        return self._follow().count()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._close_retired(float("inf"))
                if self._index is not None:
                    self._index.close()
                    self._index = None
            finally:
                self._dir_lock.release()
