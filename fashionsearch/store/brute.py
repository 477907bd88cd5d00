"""NumPy brute-force reference index: exact, in memory, for the congruence test and benchmarks."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import numpy as np

from fashionsearch.errors import CollectionMismatchError, StoreError
from fashionsearch.store.base import (
    CollectionInfo,
    EmbedderIdentity,
    Filters,
    Hit,
    StoredPoint,
    as_vector,
    check_filters,
    unique_ids,
)


class BruteForceIndex:
    """Exact Euclidean search by scanning every point; distances computed in float64 from float32 vectors."""

    def __init__(self) -> None:
        self._info: CollectionInfo | None = None
        self._vectors: dict[int, np.ndarray] = {}
        self._payloads: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def ensure_collection(self, dim: int, embedder: EmbedderIdentity) -> None:
        wanted = CollectionInfo(dim=int(dim), embedder=embedder)
        with self._lock:
            if self._info == wanted:
                return
            if self._info is not None and self._vectors:
                raise CollectionMismatchError(
                    f"collection holds {len(self._vectors)} vectors of {self._info.embedder} (dim {self._info.dim}),"
                    f" not {embedder} (dim {dim})"
                )
            self._info = wanted

    def info(self) -> CollectionInfo | None:
        return self._info

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        with self._lock:
            if self._info is None:
                raise StoreError("no collection: call ensure_collection first")
            rows = [(int(p.id), as_vector(p.vector, self._info.dim), dict(p.payload)) for p in points]
            for pid, vec, payload in rows:
                self._vectors[pid] = vec
                self._payloads[pid] = payload

    def delete(self, ids: Sequence[int]) -> list[int]:
        with self._lock:
            gone = [i for i in unique_ids(ids) if i in self._vectors]
            for pid in gone:
                del self._vectors[pid]
                del self._payloads[pid]
            return gone

    def retrieve(self, ids: Sequence[int]) -> list[StoredPoint]:
        with self._lock:
            return [
                StoredPoint(id=i, vector=self._vectors[i].copy(), payload=dict(self._payloads[i]))
                for i in unique_ids(ids)
                if i in self._vectors
            ]

    def search(
        self,
        vector: np.ndarray,
        top_k: int,
        filters: Filters | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        wanted = check_filters(filters)
        excluded = {int(i) for i in exclude_ids}
        with self._lock:
            if self._info is None or top_k <= 0:
                return []
            query = as_vector(vector, self._info.dim).astype(np.float64)
            ids = [
                pid
                for pid, payload in self._payloads.items()
                if pid not in excluded and all(payload.get(k) in v for k, v in wanted.items())
            ]
            if not ids:
                return []
            matrix = np.stack([self._vectors[pid] for pid in ids]).astype(np.float64)
            dist = np.sqrt(((matrix - query) ** 2).sum(axis=1))
            order = np.lexsort((np.asarray(ids), dist))[:top_k]
            return [Hit(id=ids[i], distance=float(dist[i]), payload=dict(self._payloads[ids[i]])) for i in order]

    def scroll(self, fields: Sequence[str] = (), page_size: int = 1000) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every point's id with the named payload fields (no vectors); for batch jobs."""
        with self._lock:
            items = [(i, {f: p[f] for f in fields if f in p}) for i, p in sorted(self._payloads.items())]
        yield from items

    def count(self) -> int:
        return len(self._vectors)

    def optimize(self) -> bool:
        return False

    def build_full_segment(self) -> bool:
        return False

    def close(self) -> None:
        """Nothing to release; kept for the VectorIndex protocol."""
