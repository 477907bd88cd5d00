"""Qdrant Edge adapter: persistence across close/reopen, the embedder record, and its guard rails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fashionsearch.store import (
    FILTER_FIELDS,
    CollectionMismatchError,
    EmbedderIdentity,
    StoredPoint,
    StoreError,
    UnknownFilterFieldError,
    edge,
)
from fashionsearch.store.edge import META_FILE, SHARD_DIR, EdgeIndex

V1 = EmbedderIdentity(model="embedder", version="1")
V2 = EmbedderIdentity(model="embedder", version="2")


def _point(pid: int, *vector: float, **payload: str) -> StoredPoint:
    return StoredPoint(id=pid, vector=np.array(vector, dtype=np.float32), payload=payload)


@pytest.fixture
def index(tmp_path):
    idx = EdgeIndex(tmp_path, "catalogue", search_threads=1)
    yield idx
    idx.close()


def test_new_directory_has_no_collection(index):
    assert index.info() is None
    assert index.count() == 0
    assert index.search(np.zeros(2), 5) == []
    assert index.retrieve([1]) == []
    assert index.delete([1]) == []
    with pytest.raises(StoreError, match="ensure_collection"):
        index.upsert([_point(1, 0.0, 0.0)])


def test_data_survives_close_and_reopen(tmp_path):
    first = EdgeIndex(tmp_path, "catalogue", search_threads=1)
    first.ensure_collection(2, V1)
    first.upsert([_point(1, 0.0, 1.0, gender="Men"), _point(2, 3.0, 4.0, gender="Women"), _point(3, 9.0, 9.0)])
    first.delete([3])
    first.close()
    first.close()  # idempotent

    second = EdgeIndex(tmp_path, "catalogue", search_threads=1)
    try:
        assert second.info() is not None and second.info().embedder == V1 and second.info().dim == 2
        assert second.count() == 2
        hits = second.search(np.zeros(2), 5, {"gender": "Women"})
        assert [(h.id, round(h.distance, 5), h.payload["gender"]) for h in hits] == [(2, 5.0, "Women")]
        (point,) = second.retrieve([1])
        np.testing.assert_array_equal(point.vector, [0.0, 1.0])
    finally:
        second.close()


def test_metadata_file_records_the_embedder(index):
    index.ensure_collection(2, V1)
    meta = json.loads((index.path / META_FILE).read_text())
    assert meta["embedder_model"] == "embedder" and meta["embedder_version"] == "1" and meta["dim"] == 2
    assert meta["distance"] == "euclid" and meta["filter_fields"] == list(FILTER_FIELDS)


def test_payload_indexes_exist_before_data(index):
    import qdrant_edge as qe

    index.ensure_collection(2, V1)
    schema = index._shard.info().payload_schema  # the adapter exposes no such API; peek for the test
    assert set(schema) == set(FILTER_FIELDS)
    assert all(info.data_type == qe.PayloadSchemaType.Keyword for info in schema.values())


def test_other_embedder_on_a_filled_collection_is_refused(index):
    index.ensure_collection(2, V1)
    index.ensure_collection(2, V1)  # same identity: no-op
    index.upsert([_point(1, 0.0, 0.0)])
    with pytest.raises(CollectionMismatchError, match="embedder@1"):
        index.ensure_collection(2, V2)
    with pytest.raises(CollectionMismatchError):
        index.ensure_collection(3, V1)
    assert index.info().embedder == V1 and index.count() == 1


def test_empty_collection_is_recreated_for_a_new_embedder(index):
    index.ensure_collection(2, V1)
    index.upsert([_point(1, 0.0, 0.0)])
    index.delete([1])
    index.ensure_collection(3, V2)
    assert index.info().embedder == V2 and index.info().dim == 3
    index.upsert([_point(5, 1.0, 2.0, 2.0)])
    assert [h.distance for h in index.search(np.zeros(3), 1)] == pytest.approx([3.0])


def test_interrupted_creation_is_rebuilt(tmp_path):
    first = EdgeIndex(tmp_path, "catalogue")
    first.ensure_collection(2, V1)
    first.close()
    (tmp_path / "catalogue" / META_FILE).unlink()  # as if the process died between shard and record
    second = EdgeIndex(tmp_path, "catalogue")
    try:
        assert second.info() is None
        second.ensure_collection(2, V2)
        assert second.info().embedder == V2
        assert (tmp_path / "catalogue" / SHARD_DIR).is_dir()
    finally:
        second.close()


def test_corrupt_record_is_a_clear_error(tmp_path):
    (tmp_path / "catalogue").mkdir()
    (tmp_path / "catalogue" / META_FILE).write_text("{not json")
    with pytest.raises(StoreError, match="not a valid collection record"):
        EdgeIndex(tmp_path, "catalogue")


def test_bad_inputs(index):
    index.ensure_collection(2, V1)
    with pytest.raises(StoreError, match="dimension 3"):
        index.upsert([_point(1, 0.0, 0.0, 0.0)])
    with pytest.raises(StoreError, match="dimension 3"):  # one bad vector among good ones
        index.upsert([_point(1, 0.0, 0.0), _point(2, 0.0, 0.0, 0.0)])
    with pytest.raises(StoreError, match="NaN"):
        index.upsert([_point(1, 0.0, 0.0), _point(2, np.inf, 0.0)])
    assert index.count() == 0  # a refused batch writes nothing
    with pytest.raises(StoreError, match="NaN"):
        index.search(np.array([np.nan, 0.0]), 5)
    with pytest.raises(UnknownFilterFieldError, match="colour"):
        index.search(np.zeros(2), 5, {"colour": "Red"})
    with pytest.raises(StoreError, match="directory name"):
        EdgeIndex(index.path.parent, "../elsewhere")


def test_closed_index_refuses_calls(tmp_path):
    idx = EdgeIndex(tmp_path, "catalogue")
    idx.ensure_collection(2, V1)
    idx.close()
    with pytest.raises(StoreError, match="closed"):
        idx.count()
    with pytest.raises(StoreError, match="closed"):
        idx.search(np.zeros(2), 5)


def test_upsert_replaces_by_id(index):
    index.ensure_collection(2, V1)
    index.upsert([_point(7, 0.0, 0.0, gender="Men")])
    index.upsert([_point(7, 1.0, 0.0, gender="Women")])
    assert index.count() == 1
    (hit,) = index.search(np.zeros(2), 5)
    assert hit.id == 7 and hit.distance == pytest.approx(1.0) and hit.payload == {"gender": "Women"}


def test_unflushed_writes_are_replayed_from_the_wal(tmp_path):
    import shutil

    live = EdgeIndex(tmp_path / "live", "catalogue")
    try:
        live.ensure_collection(2, V1)
        live.upsert([_point(1, 0.0, 0.0), _point(2, 1.0, 1.0)])
        live.delete([2])
        shutil.copytree(tmp_path / "live", tmp_path / "crashed")  # a copy taken without close(): a crash
    finally:
        live.close()
    recovered = EdgeIndex(tmp_path / "crashed", "catalogue")
    try:
        assert recovered.count() == 1 and [p.id for p in recovered.retrieve([1, 2])] == [1]
    finally:
        recovered.close()


def test_a_second_process_on_the_same_directory_is_a_clear_error(index):
    index.ensure_collection(2, V1)
    with pytest.raises(StoreError, match="another process"):
        EdgeIndex(index.path.parent, "catalogue")


def test_a_missing_shard_is_a_clear_error(tmp_path):
    import shutil

    first = EdgeIndex(tmp_path, "catalogue")
    first.ensure_collection(2, V1)
    first.close()
    shutil.rmtree(tmp_path / "catalogue" / SHARD_DIR)
    with pytest.raises(StoreError, match="cannot open the Qdrant Edge shard"):
        EdgeIndex(tmp_path, "catalogue")


def test_a_missing_record_beside_a_filled_shard_refuses_to_open(tmp_path):
    """A lost collection.json never costs the vectors: the shard is kept and the error names the file."""
    first = EdgeIndex(tmp_path, "catalogue")
    first.ensure_collection(2, V1)
    first.upsert([_point(1, 0.0, 1.0), _point(2, 1.0, 0.0)])
    first.close()
    (tmp_path / "catalogue" / META_FILE).unlink()
    with pytest.raises(StoreError, match=rf"{META_FILE} is missing.*holds 2 points"):
        EdgeIndex(tmp_path, "catalogue")
    (tmp_path / "catalogue" / META_FILE).write_text(
        json.dumps({"dim": 2, "embedder_model": "embedder", "embedder_version": "1"})
    )
    restored = EdgeIndex(tmp_path, "catalogue")  # the record put back: every point is still there
    try:
        assert restored.count() == 2
    finally:
        restored.close()


def test_writes_below_the_free_space_reserve_are_refused_and_reads_go_on(tmp_path, monkeypatch):
    from fashionsearch.errors import StoreFullError
    from fashionsearch.store import edge

    mib = 1024 * 1024
    index = EdgeIndex(tmp_path, "catalogue", min_free_bytes=10 * mib)
    try:
        index.ensure_collection(2, V1)
        index.upsert([_point(1, 0.0, 1.0, gender="Men")])
        monkeypatch.setattr(edge, "free_bytes", lambda path: 9 * mib)  # the disk fills up under the store
        with pytest.raises(StoreFullError, match=r"storing items refused.*9\.0 MiB free.*10\.0 MiB") as refused:
            index.upsert([_point(2, 1.0, 0.0)])
        assert refused.value.code.name == "RESOURCE_EXHAUSTED" and refused.value.http_status == 507
        with pytest.raises(StoreFullError, match="deleting items refused"):
            index.delete([1])
        assert index.count() == 1 and [h.id for h in index.search(np.zeros(2), 5, {"gender": "Men"})] == [1]
    finally:
        index.close()
    with pytest.raises(StoreFullError, match="opening the collection refused.*unallocated parts"):
        EdgeIndex(tmp_path, "catalogue", min_free_bytes=10 * mib)


def test_opening_a_collection_reads_its_files_ahead_when_they_fit_in_half_the_available_memory(tmp_path, monkeypatch):
    """The first searches after an open would otherwise wait for the disk (edge_files.warm_page_cache)."""
    first = EdgeIndex(tmp_path, "catalogue", search_threads=1)
    first.ensure_collection(2, V1)
    first.upsert([_point(i, float(i), 0.0, gender="Men") for i in range(50)])
    first.close()
    warmed: list[str] = []
    monkeypatch.setattr(edge, "warm_page_cache", lambda folder: warmed.append(folder.name) or 0)

    monkeypatch.setattr(edge, "_available_memory", lambda: 1 << 40)
    EdgeIndex(tmp_path, "catalogue", search_threads=1).close()
    assert warmed == ["segments"]

    monkeypatch.setattr(edge, "_available_memory", lambda: 1024)  # files larger than half of it: left to the disk
    reopened = EdgeIndex(tmp_path, "catalogue", search_threads=1)
    try:
        assert warmed == ["segments"]
        assert [h.id for h in reopened.search(np.zeros(2), 1)] == [0]
    finally:
        reopened.close()
