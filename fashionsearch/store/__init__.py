"""Vector store ports (VectorIndex, CollectionCatalog) and their adapters: Qdrant Edge (default, edge.py), Qdrant
server (qdrant_server.py), NumPy brute force (brute.py, a reference for tests). A backend is one module holding its
VectorIndex and its CollectionCatalog, and one branch in open_catalog."""

import os

from fashionsearch.errors import (
    CollectionMismatchError,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
    UnknownFilterFieldError,
)
from fashionsearch.store.base import (
    FILTER_FIELDS,
    CollectionCatalog,
    CollectionInfo,
    EmbedderIdentity,
    Hit,
    StoredPoint,
    VectorIndex,
    check_filters,
)
from fashionsearch.store.edge_tuning import EdgeTuning

__all__ = [
    "FILTER_FIELDS",
    "CollectionCatalog",
    "CollectionInfo",
    "CollectionMismatchError",
    "EmbedderIdentity",
    "Hit",
    "StoreError",
    "StoreFullError",
    "StoreUnavailableError",
    "StoredPoint",
    "UnknownFilterFieldError",
    "VectorIndex",
    "check_filters",
    "open_catalog",
]


def open_catalog(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    qdrant_path: str | os.PathLike[str] | None = None,
    search_threads: int | None = None,
    timeout_s: int = 5,
    min_free_bytes: int | None = None,
    tuning: EdgeTuning | None = None,
) -> CollectionCatalog:
    """The one store factory, for the gateway and the indexer alike: a Qdrant server by URL (or qdrant-client's local
    mode on a folder), else the embedded Qdrant Edge store under data_dir. The gateway serves from
    ``open_catalog(...).live(alias)``, which follows the alias when a batch job switches it to a new collection; a
    batch job builds and switches collections through the catalog.

    Each backend is imported only when chosen, so a gateway on Qdrant Edge does not load qdrant-client.
    min_free_bytes: Qdrant Edge's free-space reserve (None: its default), below which writes are refused.
    tuning: Qdrant Edge's graph and search parameters (None: the measured defaults)."""
    if qdrant_url or qdrant_path:
        from fashionsearch.store.qdrant_server import QdrantCatalog

        return QdrantCatalog.connect(url=qdrant_url, path=qdrant_path, timeout_s=timeout_s, api_key=qdrant_api_key)
    if data_dir:
        from fashionsearch.store.edge import DEFAULT_MIN_FREE_BYTES, EdgeCatalog

        reserve = DEFAULT_MIN_FREE_BYTES if min_free_bytes is None else min_free_bytes
        return EdgeCatalog(data_dir, search_threads=search_threads, min_free_bytes=reserve, tuning=tuning)
    raise StoreError("either a data directory (Qdrant Edge) or a Qdrant URL is required")
