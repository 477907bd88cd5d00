"""Collection aliases used by the indexer's rebuild: Edge pointer files, Qdrant native aliases, and a reader that
follows an Edge alias switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from fashionsearch.errors import StoreError, StoreUnavailableError
from fashionsearch.store import EmbedderIdentity, StoredPoint, open_catalog
from fashionsearch.store.base import versioned_name
from fashionsearch.store.edge import EdgeCatalog, FollowingEdgeIndex
from fashionsearch.store.qdrant_server import QdrantCatalog

V1 = EmbedderIdentity("emb", "1")
V2 = EmbedderIdentity("emb", "2.0/beta")


def _fill(index, identity: EmbedderIdentity, ids: range, value: float) -> None:
    index.ensure_collection(4, identity)
    index.upsert([StoredPoint(i, np.full(4, value, dtype=np.float32), {"content_hash": f"h{i}"}) for i in ids])


def test_versioned_names_are_plain_and_distinct() -> None:
    assert versioned_name("catalogue", V1) == "catalogue--emb-1"
    assert versioned_name("catalogue", V2) == "catalogue--emb-2-0-beta"


def test_edge_alias_switch_is_followed_by_a_reader(tmp_path: Path) -> None:
    catalog = EdgeCatalog(tmp_path)
    assert catalog.resolve("catalogue") is None
    # The layout before any switch: a plain collection directory named like the alias.
    plain = catalog.open("catalogue")
    _fill(plain, V1, range(1, 4), 1.0)
    plain.close()
    assert catalog.resolve("catalogue") == "catalogue"

    reader = open_catalog(data_dir=tmp_path).live("catalogue")
    assert isinstance(reader, FollowingEdgeIndex)
    assert reader.count() == 3 and reader.info().embedder == V1

    new = catalog.open(versioned_name("catalogue", V2))
    _fill(new, V2, range(1, 6), 2.0)
    assert catalog.info(versioned_name("catalogue", V2)).embedder == V2
    catalog.release(new)
    assert reader.count() == 3  # not switched yet: the reader still sees the complete old catalogue

    catalog.switch("catalogue", versioned_name("catalogue", V2))
    assert catalog.resolve("catalogue") == versioned_name("catalogue", V2)
    assert reader.count() == 5 and reader.info().embedder == V2
    assert reader.collection == versioned_name("catalogue", V2)
    assert len(reader.search(np.full(4, 2.0), 2)) == 2
    assert sorted(i for i, _ in reader.scroll()) == [1, 2, 3, 4, 5]
    catalog.drop("catalogue")
    assert reader.count() == 5
    reader.close()
    reader.close()

    with pytest.raises(StoreError):
        catalog.switch("catalogue", "no-such-collection")
    (tmp_path / "catalogue.alias").write_text("{bad json", encoding="utf-8")
    with pytest.raises(StoreError, match="alias file"):
        catalog.resolve("catalogue")


def test_a_write_waits_for_the_collection_the_alias_now_points_at(tmp_path: Path) -> None:
    # The job that switched still holds the new collection: reads go on from the old one, but a write there would
    # be lost when the reader moves over, so it is refused as retryable until the new one opens.
    catalog = EdgeCatalog(tmp_path)
    old = catalog.open("catalogue--emb-1")
    _fill(old, V1, range(1, 4), 1.0)
    catalog.release(old)
    catalog.switch("catalogue", "catalogue--emb-1")
    reader = FollowingEdgeIndex(catalog, "catalogue")
    held = catalog.open("catalogue--emb-2")
    _fill(held, V1, range(1, 6), 2.0)
    catalog.switch("catalogue", "catalogue--emb-2")
    assert reader.count() == 3 and reader.collection == "catalogue--emb-1"
    point = StoredPoint(9, np.full(4, 9.0, dtype=np.float32), {"content_hash": "h9"})
    with pytest.raises(StoreUnavailableError, match="writes are refused until it can be"):
        reader.upsert([point])
    with pytest.raises(StoreUnavailableError):
        reader.delete([1])
    assert reader.count() == 3  # nothing written to the collection the alias left
    catalog.release(held)
    reader.upsert([point])
    assert reader.collection == "catalogue--emb-2" and sorted(i for i, _ in reader.scroll()) == [1, 2, 3, 4, 5, 9]
    reader.close()


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")
def test_qdrant_alias_switch_is_atomic_and_replaces_a_plain_collection() -> None:
    client = QdrantClient(":memory:")
    catalog = QdrantCatalog(client)
    plain = catalog.open("catalogue")
    _fill(plain, V1, range(1, 4), 1.0)
    assert catalog.resolve("catalogue") == "catalogue"

    first = versioned_name("catalogue", V1)
    _fill(catalog.open(first), V1, range(1, 4), 1.0)
    catalog.switch("catalogue", first)  # drops the plain collection, then creates the alias
    assert catalog.resolve("catalogue") == first

    second = versioned_name("catalogue", V2)
    _fill(catalog.open(second), V2, range(1, 8), 2.0)
    catalog.switch("catalogue", second)
    assert catalog.resolve("catalogue") == second
    assert catalog.open("catalogue").count() == 7  # reading through the alias
    assert catalog.info(second).embedder == V2
    catalog.drop(first)
    assert not client.collection_exists(first)
    catalog.close()


def test_one_factory_opens_every_backend(tmp_path: Path) -> None:
    edge = open_catalog(data_dir=tmp_path / "edge")
    assert isinstance(edge, EdgeCatalog) and edge.label == f"edge {tmp_path / 'edge'}"
    local = open_catalog(qdrant_path=tmp_path / "qdrant")
    try:
        assert isinstance(local, QdrantCatalog) and local.label == f"qdrant {tmp_path / 'qdrant'}"
        assert local.resolve("catalogue") is None
    finally:
        local.close()
    with pytest.raises(StoreError, match="data directory"):
        open_catalog()
