"""Catalogue backups: every point of a collection (id, vector, payload) with the embedder that made the vectors, in
a folder any store backend can be restored from; and the write journal that makes a backup of a collection that
keeps taking writes consistent.

A backup is a folder ``<name>/`` holding ``manifest.json`` (embedder, dim, point count, the files with their
sha256) and ``points-NNNNN.npz`` chunks (ids int64, vectors float32, payloads as JSON), plus ``patch.npz`` (the
points written during the backup, re-read at its end, and the ids deleted meanwhile). It is written under a
``.partial-`` name and renamed when complete, so a listed backup is a whole one.

Why a logical copy: it restores into any backend (an Edge store or a Qdrant server), and reading the points
through the store port takes the shard only for one page at a time, so searches and writes go on between pages.
Restoring it is a load plus a graph build, though (1,833 s for 1M points on a busy machine, bench/README.md), so a
backup of an Edge collection also holds a copy of the shard's files, graph included, and of its exposed copies'
shard (``shard/shard/`` and ``shard/exposed/``; a backup made before those copies existed holds the shard's files
directly in ``shard/``; each file's sha256 in the manifest), as of the backup's consistency point below: Qdrant
Edge has no snapshot call of its own (its snapshot API reads a Qdrant server's snapshots) and its segment files
change in place, so the files are copied while writes go on, then brought up to date with the writes held and the
shard flushed (edge_files.py). A restore into an Edge store copies those files back and loads them; a restore into
a Qdrant server, or of a backup without them, writes the points and builds the graph.

Consistency while writes go on (``WriteJournal``): from the start of a backup, the journal records the id of every
upsert and delete; after the last page, writes are held for a moment while the recorded ids are read again, and
the result (``patch.npz``) is applied last on restore. The backup is then the collection as it was at that moment:
a point written during the pages is in its final state, a point deleted is absent.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fashionsearch.errors import StoreError, StoreFullError
from fashionsearch.store.base import CollectionInfo, EmbedderIdentity, Hit, StoredPoint, VectorIndex
from fashionsearch.store.edge_files import file_sha256, sync_tree, tree_data_bytes, tree_digests

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PATCH = "patch.npz"
SHARD = "shard"
SCHEMA = 1
CHUNK_POINTS = 50_000
PAGE = 2_000


@dataclass(frozen=True)
class BackupInfo:
    """What a backup's manifest says."""

    name: str
    path: Path
    created: str
    embedder: EmbedderIdentity
    dim: int
    points: int
    source: str
    seconds: float
    #: [relative path, sha256] of the shard files copied with the backup (an Edge collection's); empty without.
    shard_files: tuple[tuple[str, str], ...] = ()

    @property
    def size_bytes(self) -> int:
        """Disk space in use (allocated blocks: a shard copy keeps its files' holes)."""
        return tree_data_bytes(self.path)


class WriteJournal:
    """A VectorIndex that passes everything to the index it wraps and, while a backup runs, records which ids were
    written; ``barrier()`` holds writes while the backup reads those ids again. Writes go through one lock (Qdrant
    Edge serialises them anyway); searches are not touched."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self._write_lock = threading.Lock()
        self._recording: set[int] | None = None

    # The journal's own API, for write_backup.
    def start(self) -> None:
        with self._write_lock:
            if self._recording is not None:
                raise StoreError("a backup is already running")
            self._recording = set()

    def stop(self) -> None:
        with self._write_lock:
            self._recording = None

    def barrier(self) -> threading.Lock:
        return self._write_lock

    def take(self) -> set[int]:
        """The ids written since start() or the last take(), and recording goes on from an empty set; under
        barrier() this is exact (no write can come between)."""
        taken, self._recording = set(self._recording or ()), set()
        return taken

    # VectorIndex
    def upsert(self, points: Sequence[StoredPoint]) -> None:
        with self._write_lock:
            self.index.upsert(points)
            if self._recording is not None:
                self._recording.update(int(p.id) for p in points)

    def delete(self, ids: Sequence[int]) -> list[int]:
        with self._write_lock:
            deleted = self.index.delete(ids)
            if self._recording is not None:
                self._recording.update(int(i) for i in ids)
            return deleted

    def ensure_collection(self, dim: int, embedder: EmbedderIdentity) -> None:
        with self._write_lock:
            self.index.ensure_collection(dim, embedder)

    def info(self) -> CollectionInfo | None:
        return self.index.info()

    def retrieve(self, ids: Sequence[int]) -> list[StoredPoint]:
        return self.index.retrieve(ids)

    def search(
        self,
        vector: np.ndarray,
        top_k: int,
        filters: Mapping[str, Any] | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        return self.index.search(vector, top_k, filters, exclude_ids)

    def scroll(self, fields: Sequence[str] = (), page_size: int = 1000) -> Iterator[tuple[int, dict[str, Any]]]:
        return self.index.scroll(fields, page_size)

    def count(self) -> int:
        return self.index.count()

    def optimize(self) -> bool:
        return self.index.optimize()

    def build_full_segment(self) -> bool:
        return self.index.build_full_segment()

    def close(self) -> None:
        self.index.close()

    def __getattr__(self, name: str) -> Any:  # e.g. FollowingEdgeIndex.collection
        return getattr(self.index, name)


def _write_chunk(path: Path, points: Sequence[StoredPoint], dim: int, deleted: Sequence[int] = ()) -> None:
    vectors = np.asarray([p.vector for p in points], np.float32).reshape(len(points), dim)
    payloads = json.dumps([dict(p.payload) for p in points], ensure_ascii=False).encode("utf-8")
    with path.open("wb") as f:
        np.savez(
            f,
            ids=np.asarray([p.id for p in points], np.int64),
            vectors=vectors,
            payloads=np.frombuffer(payloads, np.uint8),
            deleted=np.asarray(deleted, np.int64),
        )
        f.flush()
        os.fsync(f.fileno())


def _read_chunk(path: Path) -> tuple[list[StoredPoint], list[int]]:
    with np.load(path) as chunk:
        payloads = json.loads(chunk["payloads"].tobytes().decode("utf-8"))
        points = [
            StoredPoint(id=int(i), vector=v, payload=p)
            for i, v, p in zip(chunk["ids"], chunk["vectors"], payloads, strict=True)
        ]
        return points, [int(i) for i in chunk["deleted"]]


def backup_name(collection: str, when: datetime | None = None) -> str:
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{collection}-{stamp}"


def write_backup(
    index: VectorIndex,
    folder: str | os.PathLike[str],
    name: str,
    *,
    source: str,
    journal: WriteJournal | None = None,
    keep_recording: bool = False,
    shard_copy: bool = True,
) -> BackupInfo:
    """Copy every point of index into folder/name; with a journal (the index keeps taking writes), consistent as
    of the end of the copy, and with keep_recording the journal goes on recording the writes after that end (a
    compaction replays them). With shard_copy, an index that can copy its files (an Edge collection's copy_shard)
    adds them as of the same moment. Raises StoreError when the index holds no collection, StoreFullError when the
    folder's disk fills up; a backup that fails leaves nothing behind."""
    info = index.info()
    if info is None:
        raise StoreError(f"{source}: no collection to back up")
    root = Path(folder)
    partial = root / f".partial-{name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        copy_shard = getattr(index, "copy_shard", None) if shard_copy else None
        return _write_into(
            partial, index, info, root / name, source=source, journal=journal, keep=keep_recording, shard=copy_shard
        )
    except BaseException as failed:
        shutil.rmtree(partial, ignore_errors=True)
        if not isinstance(failed, OSError):
            raise
        if failed.errno == errno.ENOSPC:
            raise StoreFullError(
                f"the disk holding {root} is full ({shutil.disk_usage(root).free / 2**20:.1f} MiB free), so the"
                f" backup {name} is not written; make room on it"
            ) from None
        raise StoreError(f"backup {name} could not be written into {root}: {failed}") from None


def _write_into(
    partial: Path,
    index: VectorIndex,
    info: CollectionInfo,
    final_path: Path,
    *,
    source: str,
    journal: WriteJournal | None,
    keep: bool,
    shard: Callable[[Path], None] | None,
) -> BackupInfo:
    """write_backup's copy into the folder `partial`, renamed to final_path once whole."""
    name = final_path.name
    done = False
    started = time.perf_counter()
    files: list[str] = []
    total = 0
    if journal is not None:
        journal.start()
    try:
        pending: list[StoredPoint] = []
        copied: list[np.ndarray] = []

        def flush_chunk() -> None:
            nonlocal pending
            path = partial / f"points-{len(files):05d}.npz"
            _write_chunk(path, pending, info.dim)
            files.append(path.name)
            copied.append(np.asarray([p.id for p in pending], np.int64))
            pending = []

        ids: list[int] = []
        for point_id, _ in index.scroll((), PAGE):
            ids.append(point_id)
            if len(ids) == PAGE:
                pending.extend(index.retrieve(ids))
                ids = []
                if len(pending) >= CHUNK_POINTS:
                    total += len(pending)
                    flush_chunk()
        if ids:
            pending.extend(index.retrieve(ids))
        total += len(pending)
        if pending or not files:
            flush_chunk()
        changed: set[int] = set()
        final = np.concatenate(copied)
        if journal is not None and shard is not None:
            shard(partial / SHARD)  # most of the files, writes going on; brought up to date behind the barrier
        if journal is not None:
            with journal.barrier():  # writes wait here while the ids written during the copy are read again
                held = time.perf_counter()
                changed = journal.take()
                now = index.retrieve(sorted(changed))
                reread = time.perf_counter()
                if shard is not None:  # and while the shard's copy is brought up to date: the same moment
                    shard(partial / SHARD)
            logger.info(
                "backup %s held writes for %.2f s: %s points re-read in %.2f s, shard files updated in %.2f s",
                name,
                time.perf_counter() - held,
                len(changed),
                reread - held,
                time.perf_counter() - reread,
            )
            if index.info() != info:
                raise StoreError("the collection changed embedder during the backup; run it again")
            present = {p.id for p in now}
            deleted = sorted(changed - present)
            _write_chunk(partial / PATCH, now, info.dim, deleted=deleted)
            files.append(PATCH)
            final = np.setdiff1d(np.union1d(final, np.asarray(sorted(present), np.int64)), deleted)
        elif shard is not None:  # nothing writes (an offline backup)
            shard(partial / SHARD)
        done = True
    finally:
        if journal is not None and not (done and keep):
            journal.stop()
    seconds = time.perf_counter() - started
    manifest = {
        "schema": SCHEMA,
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "embedder_model": info.embedder.model,
        "embedder_version": info.embedder.version,
        "dim": info.dim,
        "points_copied": total,
        "points": int(len(np.unique(final))),
        "points_rewritten": len(changed),
        "seconds": round(seconds, 3),
        "files": [[f, file_sha256(partial / f)] for f in files],  # in the order restore applies them
    }
    if shard is not None:
        sync_tree(partial / SHARD)  # after the writes were let go: the copy itself was not synced
        manifest["shard_files"] = tree_digests(partial / SHARD)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(partial, final_path)
    logger.info("backup %s of %s: %s points in %.1f s", name, source, total, seconds)
    return read_manifest(final_path)


def read_manifest(path: str | os.PathLike[str]) -> BackupInfo:
    folder = Path(path)
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if data.get("schema") != SCHEMA:
            raise StoreError(f"{folder}: backup schema {data.get('schema')!r}, this version reads {SCHEMA}")
        return BackupInfo(
            name=str(data["name"]),
            path=folder,
            created=str(data["created"]),
            embedder=EmbedderIdentity(str(data["embedder_model"]), str(data["embedder_version"])),
            dim=int(data["dim"]),
            points=int(data["points"]),
            source=str(data["source"]),
            seconds=float(data["seconds"]),
            shard_files=tuple((str(f), str(d)) for f, d in data.get("shard_files", ())),
        )
    except FileNotFoundError:
        raise StoreError(f"{folder} is not a backup (no {MANIFEST})") from None
    except (ValueError, KeyError, TypeError) as bad:
        raise StoreError(f"{folder}/{MANIFEST} is not a valid backup manifest: {bad}") from None


def list_backups(folder: str | os.PathLike[str]) -> list[BackupInfo]:
    """The complete backups under folder, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [read_manifest(p) for p in sorted(root.iterdir()) if (p / MANIFEST).is_file()]
    return sorted(found, key=lambda b: b.created)


def read_backup(backup: BackupInfo, *, verify: bool = True) -> Iterator[tuple[list[StoredPoint], list[int]]]:
    """The backup's chunks in order, each as (points to upsert, ids to delete); the sha256 of each file checked."""
    data = json.loads((backup.path / MANIFEST).read_text(encoding="utf-8"))
    for name, digest in data["files"]:
        path = backup.path / name
        if verify and file_sha256(path) != digest:
            raise StoreError(f"{path} does not match its sha256 in the manifest: the backup is damaged")
        yield _read_chunk(path)


def _verified_shard(backup: BackupInfo) -> Path:
    """The backup's shard copy, every file checked against its sha256 in the manifest."""
    folder = backup.path / SHARD
    found = tree_digests(folder) if folder.is_dir() else []
    if {tuple(f) for f in found} != set(backup.shard_files):
        raise StoreError(f"{folder} does not match the shard files listed in the manifest: the backup is damaged")
    return folder


def restore_into(index: VectorIndex, backup: BackupInfo, *, batch: int = 1000, shard_copy: bool = True) -> int:
    """Write the backup into an empty collection of index (created for the backup's embedder) with its search index;
    returns the number of points it then holds. An Edge collection takes the backup's shard copy when there is one
    (with shard_copy): no load and no graph build; otherwise the points are written and the graph built."""
    index.ensure_collection(backup.dim, backup.embedder)
    if index.count():
        raise StoreError("restore needs an empty collection")
    adopt_shard = getattr(index, "adopt_shard", None)
    if shard_copy and backup.shard_files and adopt_shard is not None:
        adopt_shard(_verified_shard(backup), CollectionInfo(dim=backup.dim, embedder=backup.embedder))
    else:
        for points, deleted in read_backup(backup):
            for start in range(0, len(points), batch):
                index.upsert(points[start : start + batch])
                index.build_full_segment()
            if deleted:
                index.delete(deleted)
        index.optimize()
    count = index.count()
    if count != backup.points:
        raise StoreError(f"restored {count} points, the backup holds {backup.points}")
    return count
