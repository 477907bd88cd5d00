"""Collection aliases: one stable name (e.g. ``catalogue``) that points at a concrete collection, switched atomically.

A full re-embed builds a new collection beside the live one and switches the alias only once it is complete, so a
search sees either the old catalogue or the new one, never a half-built or mixed-version one.

- Qdrant server (and qdrant-client's local mode): native aliases; ``switch`` sends the delete and the create in one
  ``update_collection_aliases`` request, which Qdrant applies atomically.
- Qdrant Edge: a pointer file ``<data_dir>/<alias>.alias`` holding the target collection's directory name, replaced
  with ``os.replace`` (atomic on POSIX) after an fsync.  A plain collection directory named like the alias (the
  layout before any switch) is what the alias means while no pointer file exists.  ``FollowingEdgeIndex`` is the
  reader's side: a VectorIndex that notices a switch and moves to the new collection between two calls.

Locks (``fashionsearch.store.lock``): the gateway's reader holds ``<data_dir>/.lock`` for as long as it serves the
directory (one gateway per directory), and every open collection holds ``<data_dir>/<collection>.lock`` (one writer
per collection), so a rebuild may fill a new collection beside the one the gateway serves but never write into it.
A collection is deleted only under its lock: one still open elsewhere is marked (``drop-requested`` in its folder)
and its holder deletes it when it lets go.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fashionsearch.errors import StoreError
from fashionsearch.store.base import CollectionInfo, EmbedderIdentity, Hit, StoredPoint
from fashionsearch.store.lock import StoreLock, StoreLockedError, lock_path

logger = logging.getLogger(__name__)

ALIAS_SUFFIX = ".alias"
DIRECTORY_LOCK = ".lock"
DROP_MARKER = "drop-requested"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise StoreError(f"collection/alias name {name!r}: use letters, digits, '-' and '_' (not first)")
    return name


def versioned_name(alias: str, embedder: EmbedderIdentity) -> str:
    """The concrete collection name for an alias and an embedder, e.g. ``catalogue--embedder-v1-2026-11-27``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{embedder.model}-{embedder.version}").strip("-_") or "x"
    return check_name(f"{alias}--{slug}")


class CollectionCatalog(Protocol):
    """The collections of one store and the aliases over them."""

    def resolve(self, alias: str) -> str | None:
        """The concrete collection the alias names (itself when it is a plain collection); None when neither."""
        ...

    def open(self, collection: str) -> Any:
        """A VectorIndex on one concrete collection (created on ensure_collection)."""
        ...

    def info(self, collection: str) -> CollectionInfo | None:
        """What the collection records about its vectors, without opening it for writing; None when unrecorded."""
        ...

    def release(self, index: Any) -> None:
        """Close an index obtained from open()."""
        ...

    def switch(self, alias: str, collection: str) -> None:
        """Point the alias at the collection, atomically."""
        ...

    def drop(self, collection: str) -> bool:
        """Delete a concrete collection and its data; False when another process still has it open and will
        delete it itself when it lets go."""
        ...

    def close(self) -> None: ...


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

    def __init__(self, data_dir: str | os.PathLike[str], *, search_threads: int | None = None) -> None:
        self._root = Path(data_dir)
        self._root.mkdir(parents=True, exist_ok=True)
        self._search_threads = search_threads

    def path(self, collection: str) -> Path:
        return self._root / check_name(collection)

    def pointer(self, alias: str) -> Path:
        return self._root / f"{check_name(alias)}{ALIAS_SUFFIX}"

    def resolve(self, alias: str) -> str | None:
        pointer = self.pointer(alias)
        try:
            target = json.loads(pointer.read_text(encoding="utf-8"))["collection"]
        except FileNotFoundError:
            return alias if (self._root / alias).is_dir() else None
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{pointer} is not a valid alias file: {exc}") from exc
        return check_name(str(target))

    def open(self, collection: str) -> Any:
        from fashionsearch.store.edge import EdgeIndex

        return EdgeIndex(self._root, check_name(collection), search_threads=self._search_threads)

    def info(self, collection: str) -> CollectionInfo | None:
        # Read the record file only: the live shard may be open in the gateway, the single writer.
        from fashionsearch.store.edge import META_FILE, _read_meta

        return _read_meta(self._root / check_name(collection) / META_FILE)

    def release(self, index: Any) -> None:
        index.close()

    def switch(self, alias: str, collection: str) -> None:
        if not (self._root / check_name(collection)).is_dir():
            raise StoreError(f"cannot point alias {alias} at {collection}: no such collection under {self._root}")
        (self._root / collection / DROP_MARKER).unlink(missing_ok=True)  # switching back to a kept collection
        pointer = self.pointer(alias)
        tmp = pointer.with_name(f".{pointer.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"collection": collection}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, pointer)
        _fsync_dir(self._root)
        logger.info("alias %s now points at edge collection %s", alias, collection)

    def drop(self, collection: str) -> bool:
        path = self._root / check_name(collection)
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
        for marker in self._root.glob(f"*/{DROP_MARKER}"):
            if marker.parent.name != keep:
                self._drop_if_free(marker.parent)

    def _drop_if_free(self, path: Path) -> bool:
        try:
            lock = StoreLock(lock_path(self._root, path.name), guards=f"the Qdrant Edge collection {path}")
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


class QdrantCatalog:
    """Collections and native aliases of a Qdrant server (or qdrant-client local mode), over one shared client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def resolve(self, alias: str) -> str | None:
        for description in self._client.get_aliases().aliases:
            if description.alias_name == alias:
                return str(description.collection_name)
        return alias if self._client.collection_exists(alias) else None

    def open(self, collection: str) -> Any:
        from fashionsearch.store.qdrant_server import QdrantServerIndex

        return QdrantServerIndex(self._client, check_name(collection))

    def info(self, collection: str) -> CollectionInfo | None:
        return self.open(collection).info()

    def release(self, index: Any) -> None:
        # QdrantServerIndex.close() would close the shared client; close() below does that once.
        return None

    def switch(self, alias: str, collection: str) -> None:
        from qdrant_client import models

        current = self.resolve(alias)
        if current == alias:
            # A plain collection holds the alias's name; Qdrant cannot have both, so it has to go first (the only
            # non-atomic step, once, when moving a deployment onto aliases).
            logger.warning("dropping plain collection %s so that an alias of that name can replace it", alias)
            self._client.delete_collection(alias)
        operations: list[Any] = []
        if current is not None and current != alias:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
        )
        self._client.update_collection_aliases(change_aliases_operations=operations)
        logger.info("alias %s now points at qdrant collection %s", alias, collection)

    def drop(self, collection: str) -> bool:
        if self._client.collection_exists(collection):
            self._client.delete_collection(collection)
            logger.info("dropped qdrant collection %s", collection)
        return True

    def close(self) -> None:
        self._client.close()


class FollowingEdgeIndex:
    """A VectorIndex on whatever Edge collection an alias points at, moving over when the pointer file changes.

    Each call compares the pointer file's (inode, mtime) with the last one seen (one stat, about a microsecond),
    so a switch takes effect on the next call.  The previous collection stays open for ``retire_after_s`` more
    seconds, so calls already running on it (from other threads) finish normally; then it is closed, and deleted
    if the job that switched asked for it.  It holds the data directory's lock from construction until close().
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        alias: str,
        *,
        search_threads: int | None = None,
        retire_after_s: float = 30.0,
    ) -> None:
        self._alias = check_name(alias)
        root = Path(data_dir)
        self._dir_lock = StoreLock(root / DIRECTORY_LOCK, guards=f"the Qdrant Edge data directory {root}")
        self._catalog = EdgeCatalog(data_dir, search_threads=search_threads)
        self._retire_after_s = retire_after_s
        self._retired: list[tuple[float, str, Any]] = []
        self._pointer = self._catalog.pointer(alias)
        self._lock = threading.RLock()
        self._stamp: tuple[int, int] | None = None
        self._current: str = ""
        self._index: Any = None
        self._closed = False
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

    def _follow(self) -> Any:
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
                except StoreLockedError:
                    if self._index is None:
                        raise
                    # Whoever switched has not let go of the new collection yet: keep serving, look again next call.
                    logger.warning("alias %s points at %s, still open elsewhere", self._alias, target, exc_info=True)
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
        self._follow().ensure_collection(dim, embedder)

    def info(self) -> CollectionInfo | None:
        return self._follow().info()

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        self._follow().upsert(points)

    def delete(self, ids: Sequence[int]) -> list[int]:
        return self._follow().delete(ids)

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
