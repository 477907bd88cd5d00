"""python -m jobs.backup: a backup restored blue/green holds every id, vector and payload of the collection; writes
during a backup are in it as of its end; a backup of another embedder is refused."""

from __future__ import annotations

import numpy as np
import pytest

from fashionsearch.errors import StoreError
from fashionsearch.store import EmbedderIdentity, StoredPoint, open_catalog
from fashionsearch.store import backup as backups
from fashionsearch.store.backup import WriteJournal, list_backups, read_backup, write_backup
from fashionsearch.v1 import gateway_pb2
from jobs.backup.__main__ import EXIT_OK, EXIT_REFUSED, main
from testkit.gateway_stack import jpeg, start_stack
from testkit.process_stack import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

DIM = 8
EMBEDDER = EmbedderIdentity("embedder", "8")


def _points(ids, rng: np.random.Generator, tag: str = "") -> list[StoredPoint]:
    return [
        StoredPoint(
            id=int(i),
            vector=rng.normal(size=DIM).astype(np.float32),
            payload={"subCategory": ["Topwear", "Shoes"][int(i) % 2], "name": f"item {i}{tag} é", "year": int(i)},
        )
        for i in ids
    ]


def _everything(index) -> dict[int, tuple[list[float], dict]]:
    ids = [i for i, _ in index.scroll((), 1000)]
    return {p.id: (p.vector.tolist(), dict(p.payload)) for p in index.retrieve(ids)}


@pytest.fixture
def edge_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(backups, "CHUNK_POINTS", 1500)  # several chunk files from a few thousand points
    monkeypatch.setattr(backups, "PAGE", 500)
    folder = tmp_path / "edge"
    catalog = open_catalog(data_dir=folder)
    index = catalog.open("catalogue--embedder-8")
    index.ensure_collection(DIM, EMBEDDER)
    index.upsert(_points(range(1, 4001), np.random.default_rng(1)))
    catalog.release(index)
    catalog.switch("catalogue", "catalogue--embedder-8")
    return folder


def test_backup_and_restore_keep_every_id_vector_and_payload(edge_dir, tmp_path, capsys):
    store = ["--edge-dir", str(edge_dir)]
    live = open_catalog(data_dir=edge_dir).live("catalogue")
    before = _everything(live)
    live.close()  # an offline backup: no gateway holds the store

    assert main(["create", "--backups", str(tmp_path / "b"), *store]) == EXIT_OK
    (made,) = list_backups(tmp_path / "b")
    assert made.points == 4000 and made.embedder == EMBEDDER
    assert sum(1 for _ in read_backup(made)) >= 3
    assert made.shard_files  # an Edge collection's files too: the Edge restore below takes them
    assert main(["list", "--backups", str(tmp_path / "b")]) == EXIT_OK
    assert made.name in capsys.readouterr().out

    assert main(["restore", made.name, "--backups", str(tmp_path / "b"), *store]) == EXIT_OK
    catalog = open_catalog(data_dir=edge_dir)
    restored_name = catalog.resolve("catalogue")
    assert restored_name is not None and "restored" in restored_name
    assert not (edge_dir / "catalogue--embedder-8").exists()  # the previous collection dropped
    live = catalog.live("catalogue")
    try:
        after = _everything(live)
        assert after == before  # every id, every vector (float32, bit for bit) and every payload
        assert live.info() is not None and live.info().embedder == EMBEDDER
    finally:
        live.close()

    # From the points instead of the shard files: the same catalogue, its graph built by the restore.
    restore_flags = ["--backups", str(tmp_path / "b"), "--from-points", "--no-switch"]
    assert main(["restore", made.name, *restore_flags, *store]) == EXIT_OK
    rebuilt = sorted(
        p.name for p in edge_dir.iterdir() if "restored" in p.name and p.is_dir() and p.name != restored_name
    )
    assert len(rebuilt) == 1
    from_points = catalog.open(rebuilt[0])
    try:
        assert _everything(from_points) == before
    finally:
        catalog.release(from_points)

    # The same backup into a Qdrant (qdrant-client's local mode): the format is the store port's, not Edge's.
    assert main(["restore", "latest", "--backups", str(tmp_path / "b"), "--qdrant-path", str(tmp_path / "q")]) == 0
    qdrant = open_catalog(qdrant_path=tmp_path / "q").live("catalogue")
    try:
        assert _everything(qdrant) == before
    finally:
        qdrant.close()


def test_restore_refuses_a_backup_of_another_embedder(edge_dir, tmp_path, capsys):
    store = ["--edge-dir", str(edge_dir)]
    assert main(["create", "--backups", str(tmp_path / "b"), *store]) == EXIT_OK
    (made,) = list_backups(tmp_path / "b")
    code = main(["restore", made.name, "--backups", str(tmp_path / "b"), *store, "--expect-embedder", "embedder@9"])
    assert code == EXIT_REFUSED
    assert "embedder@8" in capsys.readouterr().err
    # The live collection serves another embedder now: the backup of version 8 is refused without being told.
    catalog = open_catalog(data_dir=edge_dir)
    newer = catalog.open("catalogue--embedder-9")
    newer.ensure_collection(DIM, EmbedderIdentity("embedder", "9"))
    newer.upsert(_points([1], np.random.default_rng(2)))
    catalog.release(newer)
    catalog.switch("catalogue", "catalogue--embedder-9")
    assert main(["restore", made.name, "--backups", str(tmp_path / "b"), *store]) == EXIT_REFUSED
    assert catalog.resolve("catalogue") == "catalogue--embedder-9"


class _WritesDuringCopy(WriteJournal):
    """Writes through the journal while the backup copies its second page: an update and a delete of points
    already copied, an update of one not yet copied, and a new point."""

    def __init__(self, index) -> None:
        super().__init__(index)
        self.pages = 0

    def retrieve(self, ids):
        self.pages += 1
        if self.pages == 2:
            rng = np.random.default_rng(3)
            self.upsert(_points([1, 3999, 9000], rng, tag=" v2"))
            self.delete([2, 424242])
        return super().retrieve(ids)


def test_a_backup_taken_while_writes_go_on_is_the_collection_at_its_end(edge_dir, tmp_path):
    catalog = open_catalog(data_dir=edge_dir)
    live = catalog.live("catalogue")
    journal = _WritesDuringCopy(live)
    try:
        made = write_backup(journal, tmp_path / "b", "during", source="test", journal=journal)
        at_end = _everything(live)
    finally:
        live.close()
    assert journal.pages > 2 and made.points == 4000  # +9000, -2
    assert made.shard_files
    # The shard copy (taken behind the same barrier) and the points (the logical copy) hold the same end state.
    for name, shard_copy in (("from-files", True), ("from-points", False)):
        target = open_catalog(data_dir=tmp_path / "restored").open(name)
        try:
            backups.restore_into(target, made, shard_copy=shard_copy)
            assert _everything(target) == at_end
            assert _everything(target)[1][1]["name"] == "item 1 v2 é"
        finally:
            target.close()


def _offline_backup(edge_dir, folder) -> backups.BackupInfo:
    catalog = open_catalog(data_dir=edge_dir)
    live = catalog.open("catalogue--embedder-8")
    try:
        return write_backup(live, folder, "files", source="test")
    finally:
        catalog.release(live)


def test_a_collection_restored_from_shard_files_takes_updates_of_the_points_it_holds(edge_dir, tmp_path):
    made = _offline_backup(edge_dir, tmp_path / "b")
    restored = open_catalog(data_dir=tmp_path / "restored")
    target = restored.open("copy")
    try:
        assert backups.restore_into(target, made) == 4000
        # Qdrant ignores an operation numbered below a point's version: a copy without its write-ahead log would
        # number new operations from 1 again and drop this update without a word.
        target.upsert(_points([7], np.random.default_rng(4), tag=" v2"))
        target.delete([8])
    finally:
        target.close()
    reopened = restored.open("copy")
    try:
        assert reopened.retrieve([7])[0].payload["name"] == "item 7 v2 é"
        assert reopened.retrieve([8]) == [] and reopened.count() == 3999
    finally:
        reopened.close()


def test_a_damaged_shard_copy_is_refused(edge_dir, tmp_path):
    made = _offline_backup(edge_dir, tmp_path / "b")
    damaged = made.path / backups.SHARD / made.shard_files[-1][0]
    damaged.write_bytes(damaged.read_bytes() + b"x")
    target = open_catalog(data_dir=tmp_path / "restored").open("copy")
    try:
        with pytest.raises(StoreError, match="damaged"):
            backups.restore_into(target, made)
        assert target.count() == 0
    finally:
        target.close()


def _item(pid: int, colour: tuple[int, int, int]) -> gateway_pb2.CatalogueItem:
    return gateway_pb2.CatalogueItem(
        id=pid,
        image=jpeg(colour, stripe=(pid % 255, 0, 0)),
        payload=gateway_pb2.ItemPayload(name=f"item {pid}", gender="Men", sub_category="Topwear", year=2012),
    )


def test_the_gateway_backs_up_while_it_serves_and_a_restore_switches_it(tmp_path):
    stack = start_stack(tmp_path, http_port=free_port(), backup_dir=tmp_path / "backups")
    try:
        assert all(r.upserted for r in stack.upsert([_item(i, (i * 20 % 255, 90, 40)) for i in range(1, 13)]))
        query = gateway_pb2.SearchRequest(image=jpeg((100, 90, 40)), top_k=3, filter_mode=gateway_pb2.FILTER_MODE_NONE)
        url = f"http://127.0.0.1:{stack.gateway_settings.http_port}"
        backups_dir = str(tmp_path / "backups")
        assert main(["create", "--gateway-http", url, "--backups", backups_dir]) == EXIT_OK
        (made,) = list_backups(tmp_path / "backups")
        assert made.points == 12 and made.embedder == EmbedderIdentity("tiny-embedder", "tiny-1")

        # After the backup: one more item and one deleted; the restore brings the catalogue back to the backup.
        assert all(r.upserted for r in stack.upsert([_item(99, (1, 2, 3))]))
        stack.stub.DeleteItems(gateway_pb2.DeleteItemsRequest(ids=[5]), timeout=10)
        assert stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=5).item_count == 12
        store = ["--edge-dir", str(stack.gateway_settings.data_dir)]
        assert main(["restore", "latest", "--backups", backups_dir, *store]) == EXIT_OK
        # The gateway follows the alias on its next call, searching all along.
        assert len(stack.stub.Search(query, timeout=10).hits) == 3
        got = stack.stub.GetItem(gateway_pb2.GetItemRequest(id=5), timeout=5)
        assert got.payload.name == "item 5"
        assert stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=5).item_count == 12

        # Compaction: the gateway's own writes folded into a new collection built in a child process.
        assert all(r.upserted for r in stack.upsert([_item(77, (9, 9, 9))]))
        assert main(["compact", "--gateway-http", url]) == EXIT_OK
        assert stack.stub.GetItem(gateway_pb2.GetItemRequest(id=77), timeout=5).payload.name == "item 77"
        assert stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=5).item_count == 13
        assert "compacted" in open_catalog(data_dir=stack.gateway_settings.data_dir).resolve("catalogue")
    finally:
        stack.close()


def test_gateway_backups_are_off_without_a_folder(tmp_path):
    stack = start_stack(tmp_path, http_port=free_port())
    try:
        url = f"http://127.0.0.1:{stack.gateway_settings.http_port}"
        assert main(["create", "--gateway-http", url, "--backups", str(tmp_path / "b")]) == 1
    finally:
        stack.close()
