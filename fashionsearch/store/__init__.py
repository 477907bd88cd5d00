"""Vector store port (VectorIndex) and its adapters: Qdrant Edge (default), Qdrant server, NumPy brute force."""

from fashionsearch.errors import CollectionMismatchError, StoreError, StoreUnavailableError, UnknownFilterFieldError
from fashionsearch.store.base import (
    FILTER_FIELDS,
    CollectionInfo,
    EmbedderIdentity,
    Hit,
    StoredPoint,
    VectorIndex,
    check_filters,
)

__all__ = [
    "FILTER_FIELDS",
    "CollectionInfo",
    "CollectionMismatchError",
    "EmbedderIdentity",
    "Hit",
    "StoreError",
    "StoreUnavailableError",
    "StoredPoint",
    "UnknownFilterFieldError",
    "VectorIndex",
    "check_filters",
    "open_index",
]


def open_index(
    *,
    data_dir: str | None = None,
    qdrant_url: str | None = None,
    collection: str = "catalogue",
    search_threads: int | None = None,
    timeout_s: int = 5,
) -> VectorIndex:
    """The Qdrant server adapter when a URL is given, else the embedded Qdrant Edge store under data_dir.

    Either way ``collection`` may be an alias that a re-embedding job switches to a new collection: Qdrant resolves
    its own aliases, and the Edge index follows the alias pointer file (see fashionsearch.store.aliases).
    """
    if qdrant_url:
        from fashionsearch.store.qdrant_server import QdrantServerIndex

        return QdrantServerIndex.from_url(qdrant_url, collection, timeout_s=timeout_s)
    if not data_dir:
        raise StoreError("either a data directory (Qdrant Edge) or a Qdrant URL is required")
    from fashionsearch.store.aliases import FollowingEdgeIndex

    return FollowingEdgeIndex(data_dir, collection, search_threads=search_threads)
