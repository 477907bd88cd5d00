"""The vector store port: what the gateway needs from a vector database, and nothing more.

Every adapter returns the true Euclidean distance (not its square) and treats a point id as the product id,
so an upsert of the same product replaces it.  The collection records which embedder made its vectors, so a
search with vectors from another embedder can be refused instead of returning nonsense.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

from fashionsearch import catalogue
from fashionsearch.errors import StoreError, UnknownFilterFieldError

#: Payload fields a search may filter on (exact match on one of the given values). Each gets a keyword payload index.
FILTER_FIELDS: tuple[str, ...] = catalogue.FILTER_FIELDS


#: field -> accepted value, or accepted values (any of them matches); all fields must match.
Filters: TypeAlias = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class EmbedderIdentity:
    """Which embedder made the vectors of a collection."""

    model: str
    version: str

    def __str__(self) -> str:
        return f"{self.model}@{self.version}"


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection records about its vectors."""

    dim: int
    embedder: EmbedderIdentity


@dataclass(frozen=True)
class StoredPoint:
    """A catalogue item as stored: product id, its embedding and its payload (name, attributes, image ref)."""

    id: int
    vector: np.ndarray
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result; distance is the true Euclidean distance to the query vector."""

    id: int
    distance: float
    payload: Mapping[str, Any]


@runtime_checkable
class VectorIndex(Protocol):
    """One collection of catalogue vectors with exact-match payload filters and Euclidean top-k search.

    Methods are synchronous and may block briefly; async callers run them in a worker thread.
    """

    def ensure_collection(self, dim: int, embedder: EmbedderIdentity) -> None:
        """Create the collection (payload indexes first) if missing.

        An existing empty collection is re-created for the new dim/embedder; an existing non-empty one with another
        dim or embedder raises CollectionMismatchError.
        """
        ...

    def info(self) -> CollectionInfo | None:
        """The collection's dim and embedder identity, or None when no collection exists yet."""
        ...

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        """Insert or replace points by id. Requires ensure_collection first."""
        ...

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Delete points by id; returns the ids that existed (and are now gone)."""
        ...

    def retrieve(self, ids: Sequence[int]) -> list[StoredPoint]:
        """The stored points (with vectors) for the ids that exist, in the order asked."""
        ...

    def search(
        self,
        vector: np.ndarray,
        top_k: int,
        filters: Filters | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        """The top_k nearest points by Euclidean distance, ascending, matching every filter field (one of its
        values, exactly), excluding exclude_ids."""
        ...

    def scroll(self, fields: Sequence[str] = (), page_size: int = 1000) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every point's id with the named payload fields (no vectors), page by page; for batch jobs."""
        ...

    def count(self) -> int:
        """Number of points in the collection (0 when none exists)."""
        ...

    def optimize(self) -> bool:
        """Build the collection's search index now, after a bulk load (blocking); False when there was nothing to
        do. A Qdrant server optimises by itself; Qdrant Edge only when asked (edge.py says why not in the gateway)."""
        ...

    def build_full_segment(self) -> bool:
        """A bulk load's step after each batch: build the graph of the points written so far once there are enough
        for a segment of their own (Qdrant Edge, EdgeTuning.segment_points); False when it did not."""
        ...

    def close(self) -> None:
        """Release resources; idempotent."""
        ...


def check_filters(filters: Filters | None) -> dict[str, tuple[str, ...]]:
    """Normalised copy of a filter mapping (field -> tuple of accepted values).

    Raises UnknownFilterFieldError naming unknown fields, StoreError for a field without values.
    """
    if not filters:
        return {}
    unknown = sorted(set(filters) - set(FILTER_FIELDS))
    if unknown:
        raise UnknownFilterFieldError(
            f"unknown filter field(s) {', '.join(unknown)}; allowed: {', '.join(FILTER_FIELDS)}"
        )
    out: dict[str, tuple[str, ...]] = {}
    for key, value in filters.items():
        values = (value,) if isinstance(value, str) else tuple(dict.fromkeys(str(v) for v in value))
        if not values:
            raise StoreError(f"filter on {key} has no values")
        out[key] = values
    return out


def as_vector(vector: Any, dim: int | None = None) -> np.ndarray:
    """A 1-D float32 copy of vector, checked against dim when given."""
    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    if dim is not None and arr.shape[0] != dim:
        raise StoreError(f"vector has dimension {arr.shape[0]}, collection expects {dim}")
    if not np.all(np.isfinite(arr)):
        raise StoreError("vector contains NaN or infinity")
    return arr


def as_vectors(vectors: Sequence[Any], dim: int) -> np.ndarray:
    """Many vectors as one float32 (n, dim) array, checked like as_vector."""
    try:
        arr = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    except ValueError:  # ragged: some vector has another length; as_vector names it
        for vector in vectors:
            as_vector(vector, dim)
        raise
    if arr.shape[1] != dim:
        raise StoreError(f"vector has dimension {arr.shape[1]}, collection expects {dim}")
    if not np.all(np.isfinite(arr)):
        raise StoreError("vector contains NaN or infinity")
    return arr


def unique_ids(ids: Sequence[int]) -> list[int]:
    """The ids as ints, each once, in the order first given."""
    return [int(i) for i in dict.fromkeys(ids)]


def stored_points(wanted: Sequence[int], records: Mapping[int, Any]) -> list[StoredPoint]:
    """StoredPoints in the order asked, for the ids a Qdrant retrieve found (id -> record with vector and payload)."""
    return [
        StoredPoint(id=i, vector=np.asarray(records[i].vector, dtype=np.float32), payload=records[i].payload or {})
        for i in wanted
        if i in records
    ]


def scored_hits(points: Iterable[Any]) -> list[Hit]:
    """Hits from Qdrant scored points, whose score is the Euclidean distance."""
    return [Hit(id=int(p.id), distance=float(p.score), payload=p.payload or {}) for p in points]


# --------------------------------------------------------------------------------------------------------------
# Collections and aliases

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def check_name(name: str) -> str:
    if not _COLLECTION_NAME.match(name or ""):
        raise StoreError(f"collection/alias name {name!r}: use letters, digits, '-' and '_' (not first)")
    return name


def versioned_name(alias: str, embedder: EmbedderIdentity) -> str:
    """The concrete collection name for an alias and an embedder, e.g. ``catalogue--embedder-v1-2026-11-27``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{embedder.model}-{embedder.version}").strip("-_") or "x"
    return check_name(f"{alias}--{slug}")


class CollectionCatalog(Protocol):
    """The collections of one store and the aliases over them: a backend's second port beside VectorIndex, for the
    gateway (``live``) and for batch jobs that build a collection beside the live one and switch the alias.

    An alias is one stable name (e.g. ``catalogue``) that points at a concrete collection and is switched
    atomically, so a search sees either the old catalogue or the new one, never a half-built or mixed-version one.
    """

    #: Which store, for people: e.g. "edge data/qdrant-edge" or "qdrant http://qdrant:6333".
    label: str

    def resolve(self, alias: str) -> str | None:
        """The concrete collection the alias names (itself when it is a plain collection); None when neither."""
        ...

    def open(self, collection: str) -> VectorIndex:
        """A VectorIndex on one concrete collection (created on ensure_collection)."""
        ...

    def info(self, collection: str) -> CollectionInfo | None:
        """What the collection records about its vectors, without opening it for writing; None when unrecorded."""
        ...

    def live(self, alias: str) -> VectorIndex:
        """A VectorIndex on whatever collection the alias points at now and after a switch (what the gateway
        serves from); closing it closes what it holds of the catalog."""
        ...

    def release(self, index: VectorIndex) -> None:
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
