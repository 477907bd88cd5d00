"""qdrant-client adapter on its :memory: mode: the embedder record in collection metadata and its checks."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

from fashionsearch.store import CollectionMismatchError, EmbedderIdentity, StoredPoint, StoreError
from fashionsearch.store.qdrant_server import META_KEY, QdrantServerIndex

pytestmark = [
    # Local mode warns that payload indexes / search params do nothing there; the adapter sets them for servers.
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

V1 = EmbedderIdentity(model="embedder", version="1")
V2 = EmbedderIdentity(model="embedder", version="2")


def test_embedder_is_recorded_in_collection_metadata_and_read_back():
    client = QdrantClient(":memory:")
    first = QdrantServerIndex(client, "catalogue")
    assert first.info() is None and first.count() == 0 and first.search(np.zeros(2), 5) == []
    first.ensure_collection(2, V1)
    first.upsert([StoredPoint(id=1, vector=np.array([3.0, 4.0]), payload={"gender": "Men"})])
    meta = client.get_collection("catalogue").config.metadata[META_KEY]
    assert meta == {"dim": 2, "distance": "euclid", "embedder_model": "embedder", "embedder_version": "1"}

    again = QdrantServerIndex(client, "catalogue")  # a second gateway on the same server
    assert again.info().embedder == V1 and again.count() == 1
    with pytest.raises(CollectionMismatchError, match="embedder@1"):
        again.ensure_collection(2, V2)
    assert again.delete([1, 2]) == [1]
    again.ensure_collection(4, V2)  # empty: re-created
    assert again.info().dim == 4
    again.close()
    again.close()
    with pytest.raises(StoreError, match="closed"):
        again.count()


def test_an_unreachable_server_is_store_unavailable():
    from fashionsearch.store import StoreUnavailableError, open_catalog

    with pytest.raises(StoreUnavailableError, match="Qdrant did not answer"):
        open_catalog(qdrant_url="http://127.0.0.1:9", timeout_s=1).live("catalogue")


def test_a_qdrant_api_key_reaches_the_client_without_a_warning_on_every_start():
    """Qdrant's key (deploy/kubernetes: the qdrant-api-key Secret) goes with every call; over http inside the cluster
    qdrant-client's "insecure connection" warning is the deployment's choice (warnings are errors in the tests)."""
    from fashionsearch.store import open_catalog

    catalog = open_catalog(qdrant_url="http://127.0.0.1:9", qdrant_api_key="k" * 32, timeout_s=1)
    try:
        assert catalog._client._client._api_key == "k" * 32  # type: ignore[attr-defined]  # no public accessor
    finally:
        catalog.close()
