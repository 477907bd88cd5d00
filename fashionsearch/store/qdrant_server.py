"""Qdrant server adapter through qdrant-client (what compose runs); tests use ``QdrantClient(":memory:")``.

The embedder model/version and dim are recorded in the collection's own ``metadata`` (Qdrant >= 1.16), under the
key ``fashionsearch``, so the record travels with the collection (snapshots, other clients).  Qdrant reports
Euclid scores as the true Euclidean distance, which is passed through unchanged.

Aliases (QdrantCatalog) are Qdrant's own: ``switch`` sends the delete and the create in one
``update_collection_aliases`` request, which Qdrant applies atomically.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException

from fashionsearch.errors import CollectionMismatchError, StoreError, StoreUnavailableError
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

logger = logging.getLogger(__name__)

META_KEY = "fashionsearch"

P = ParamSpec("P")
R = TypeVar("R")


def _reachable(method: Callable[P, R]) -> Callable[P, R]:
    """Turn client-side network and server errors into StoreUnavailableError."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (ApiException, OSError) as error:
            raise StoreUnavailableError(f"Qdrant did not answer: {type(error).__name__}: {error}") from error

    return wrapper


def _match(values: tuple[str, ...]) -> models.MatchValue | models.MatchAny:
    return models.MatchValue(value=values[0]) if len(values) == 1 else models.MatchAny(any=list(values))


def _build_filter(filters: Mapping[str, tuple[str, ...]], exclude_ids: Collection[int]) -> models.Filter | None:
    must: list[Any] = [models.FieldCondition(key=k, match=_match(v)) for k, v in filters.items()]
    must_not: list[Any] = [models.HasIdCondition(has_id=sorted({int(i) for i in exclude_ids}))] if exclude_ids else []
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


class QdrantServerIndex:
    """VectorIndex on one collection of a Qdrant server (or qdrant-client's local mode)."""

    def __init__(self, client: QdrantClient, collection: str = "catalogue", *, exact: bool = True) -> None:
        self._client = client
        self._name = collection
        self._params = models.SearchParams(exact=exact)
        self._lock = threading.RLock()
        self._closed = False
        self._info: CollectionInfo | None = None
        self._info = self._read_info()

    @_reachable
    def _read_info(self) -> CollectionInfo | None:
        if not self._client.collection_exists(self._name):
            return None
        config = self._client.get_collection(self._name).config
        meta = (config.metadata or {}).get(META_KEY)
        if not isinstance(meta, dict):
            return None
        try:
            return CollectionInfo(
                dim=int(meta["dim"]),
                embedder=EmbedderIdentity(model=str(meta["embedder_model"]), version=str(meta["embedder_version"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"collection {self._name} has an invalid {META_KEY} metadata record: {exc}") from exc

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError("the vector index is closed")

    @_reachable
    def ensure_collection(self, dim: int, embedder: EmbedderIdentity) -> None:
        wanted = CollectionInfo(dim=int(dim), embedder=embedder)
        with self._lock:
            self._require_open()
            if self._info == wanted:
                return
            exists = self._client.collection_exists(self._name)
            if exists:
                existing = self._count_raw()
                if existing:
                    held = str(self._info.embedder) if self._info else "an unrecorded embedder"
                    raise CollectionMismatchError(
                        f"collection {self._name} holds {existing} vectors of {held}, not {embedder} (dim {dim});"
                        " re-index into a new collection"
                    )
                self._client.delete_collection(self._name)
            self._client.create_collection(
                self._name,
                vectors_config=models.VectorParams(size=wanted.dim, distance=models.Distance.EUCLID),
                metadata={
                    META_KEY: {
                        "dim": wanted.dim,
                        "distance": "euclid",
                        "embedder_model": embedder.model,
                        "embedder_version": embedder.version,
                    }
                },
            )
            for name in FILTER_FIELDS:
                self._client.create_payload_index(self._name, name, models.PayloadSchemaType.KEYWORD, wait=True)
            self._info = wanted
            logger.info("created qdrant collection %s for %s (dim %s)", self._name, embedder, dim)

    def info(self) -> CollectionInfo | None:
        return self._info

    def _require_info(self) -> CollectionInfo:
        self._require_open()
        if self._info is None:
            raise StoreError("no collection: call ensure_collection first")
        return self._info

    @_reachable
    def upsert(self, points: Sequence[StoredPoint]) -> None:
        if not points:
            return
        with self._lock:
            info = self._require_info()
            vectors = as_vectors([p.vector for p in points], info.dim).tolist()
            batch = [
                models.PointStruct(id=int(p.id), vector=v, payload=dict(p.payload))
                for p, v in zip(points, vectors, strict=True)
            ]
            self._client.upsert(self._name, batch, wait=True)

    @_reachable
    def delete(self, ids: Sequence[int]) -> list[int]:
        wanted = unique_ids(ids)
        with self._lock:
            self._require_open()
            if self._info is None or not wanted:
                return []
            present = {int(r.id) for r in self._client.retrieve(self._name, wanted, with_payload=False)}
            if present:
                self._client.delete(self._name, models.PointIdsList(points=sorted(present)), wait=True)
            return [i for i in wanted if i in present]

    @_reachable
    def retrieve(self, ids: Sequence[int]) -> list[StoredPoint]:
        wanted = unique_ids(ids)
        with self._lock:
            self._require_open()
            if self._info is None or not wanted:
                return []
            records = {
                int(r.id): r for r in self._client.retrieve(self._name, wanted, with_payload=True, with_vectors=True)
            }
        return stored_points(wanted, records)

    @_reachable
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
            if self._info is None or top_k <= 0:
                return []
            response = self._client.query_points(
                self._name,
                query=as_vector(vector, self._info.dim).tolist(),
                query_filter=_build_filter(wanted, exclude_ids),
                search_params=self._params,
                limit=int(top_k),
                with_payload=True,
                with_vectors=False,
            )
        return scored_hits(response.points)

    def _count_raw(self) -> int:
        return int(self._client.count(self._name, exact=True).count)

    def scroll(self, fields: Sequence[str] = (), page_size: int = 1000) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every point's id with the named payload fields (no vectors), page by page; for batch jobs."""
        offset: Any = None
        while True:
            with self._lock:
                self._require_open()
                if self._info is None:
                    return
                records, offset = self._client.scroll(
                    self._name,
                    limit=int(page_size),
                    offset=offset,
                    with_payload=list(fields) if fields else False,
                    with_vectors=False,
                )
            for r in records:
                yield int(r.id), dict(r.payload or {})
            if offset is None:
                return

    @_reachable
    def count(self) -> int:
        with self._lock:
            self._require_open()
            if not self._client.collection_exists(self._name):
                return 0
            return self._count_raw()

    def optimize(self) -> bool:
        return False

    def build_full_segment(self) -> bool:
        return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._client.close()


class QdrantCatalog:
    """Collections and native aliases of a Qdrant server (or qdrant-client local mode), over one shared client."""

    def __init__(self, client: QdrantClient, label: str = "qdrant") -> None:
        self._client = client
        self.label = label

    @classmethod
    def connect(
        cls,
        *,
        url: str | None = None,
        path: str | os.PathLike[str] | None = None,
        timeout_s: int = 5,
        api_key: str | None = None,
    ) -> QdrantCatalog:
        """A Qdrant server by URL (with its API key when it has one), or qdrant-client's local mode on a folder."""
        if url:
            with warnings.catch_warnings():
                # qdrant-client warns about a key over plain http: inside a cluster behind its NetworkPolicy
                # (deploy/kubernetes) that is the deployment's choice, not news on every start.
                warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
                client = QdrantClient(url=url, api_key=api_key, timeout=timeout_s, check_compatibility=False)
            return cls(client, f"qdrant {url}")
        return cls(QdrantClient(path=str(path)), f"qdrant {path}")

    def resolve(self, alias: str) -> str | None:
        for description in self._client.get_aliases().aliases:
            if description.alias_name == alias:
                return str(description.collection_name)
        return alias if self._client.collection_exists(alias) else None

    def open(self, collection: str) -> QdrantServerIndex:
        return QdrantServerIndex(self._client, check_name(collection))

    def info(self, collection: str) -> CollectionInfo | None:
        return self.open(collection).info()

    def live(self, alias: str) -> QdrantServerIndex:
        # Qdrant resolves its own aliases; the index owns the client from now on (its close() closes it).
        return QdrantServerIndex(self._client, alias)

    def release(self, index: VectorIndex) -> None:
        # QdrantServerIndex.close() would close the shared client; close() below does that once.
        return None

    def switch(self, alias: str, collection: str) -> None:
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
