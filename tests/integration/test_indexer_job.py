"""The indexer job end to end against real grpc.aio services (tiny ONNX models) in this process.

The job runs as a subprocess (``python -m jobs.indexer``), as ops would run it: through the gateway (Qdrant Edge),
straight into qdrant-client's local mode, and rebuilding an Edge collection beside the gateway's live one after a
model upgrade.  Images also come over http from a loopback http.server.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from fashionsearch.v1 import gateway_pb2
from services.embedder import server as embedder_server
from services.embedder.settings import Settings as EmbedderSettings
from testkit.gateway_stack import HOST, Stack, start_stack
from testkit.indexer_fixtures import product_jpeg, write_dataset, write_jsonl
from testkit.indexer_job import addr, counts, digests, job_command, run_job
from testkit.process_stack import REPO_ROOT
from testkit.tiny_models import write_tiny_embedder
from testkit.waiting import DEADLINE_S, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = start_stack(tmp_path)
    try:
        yield running
    finally:
        running.close()


def _start_embedder(stack: Stack, tmp_path: Path, version: str) -> Any:
    settings = EmbedderSettings(
        port=0,
        host=HOST,
        model_dir=write_tiny_embedder(tmp_path / f"embedder-{version}", version=version, seed=23),
        intra_op_threads=1,
    )
    return stack.threads.run(embedder_server.start(settings))


def test_through_the_gateway_incremental_prune_and_rejects(stack: Stack, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", range(1, 41))
    (dataset / "images" / "5.jpg").unlink()
    (dataset / "images" / "6.jpg").write_bytes(b"not an image at all")
    (dataset / "images" / "7.jpg").write_bytes(b"\xff\xd8\xff" + b"garbage" * 20)
    with open(dataset / "styles.csv", "a", encoding="utf-8") as f:
        f.write("41,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,Ok\n")  # image missing too
        f.write("42,Men,Apparel\n")  # bad row
        f.write("43,Men,Apparel,Topwear,Tshirts,,,2012,,No colour/season/usage: predicted\n")
    (dataset / "images" / "43.jpg").write_bytes(product_jpeg(43))
    gateway = addr(stack.gateway)

    code, first = run_job(tmp_path, "--dataset", str(dataset), "--gateway", gateway, "--batch-size", "8")
    assert code == 2 and first["complete"]
    assert counts(first) == (38, 0, 0, 0, 5)
    rejects = (tmp_path / "rejects.csv").read_text()
    for fragment in ("missing file", "undecodable image", "gateway refused the item", "bad row: 3 fields"):
        assert fragment in rejects
    stored = digests(stack)
    assert len(stored) == 38 and all(len(h) == 32 for h in stored.values())
    item = stack.stub.GetItem(gateway_pb2.GetItemRequest(id=10), timeout=5)
    assert item.payload.name == "Product 10, size M" and item.content_hash == stored[10]
    predicted = stack.stub.GetItem(gateway_pb2.GetItemRequest(id=43), timeout=5).payload
    assert predicted.base_colour and predicted.season and predicted.usage  # filled in by the classifier
    assert predicted.article_type == "Tshirts"  # given by the manifest, kept

    code, again = run_job(tmp_path, "--dataset", str(dataset), "--gateway", gateway)
    assert code == 2 and counts(again) == (0, 0, 38, 0, 5)
    assert again["elapsed_s"] < 10

    (dataset / "images" / "8.jpg").write_bytes(product_jpeg(8, variant=3))
    styles = (dataset / "styles.csv").read_text().replace("Product 9, size M", "Product 9, size L")
    styles = "\n".join(line for line in styles.splitlines() if not line.startswith(("1,", "2,")))
    (dataset / "styles.csv").write_text(styles + "\n")
    code, changed = run_job(tmp_path, "--dataset", str(dataset), "--gateway", gateway, "--prune")
    assert code == 2 and counts(changed) == (0, 2, 34, 2, 5)
    after = digests(stack)
    assert set(after) == set(stored) - {1, 2}
    assert after[8] != stored[8] and after[9] != stored[9] and after[10] == stored[10]


def test_images_over_http_with_unreachable_urls(stack: Stack, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    for i in range(1, 6):
        (www / f"{i}.jpg").write_bytes(product_jpeg(i))
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer((HOST, 0), functools.partial(Handler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://{HOST}:{server.server_address[1]}"
    records = [{"id": i, "image": f"{base}/{i}.jpg", "name": f"P{i}", "gender": "Men"} for i in range(1, 6)]
    records.append({"id": 6, "image": f"{base}/missing.jpg", "name": "404"})
    records.append({"id": 7, "image": "http://127.0.0.1:9/nothing.jpg", "name": "closed port"})
    manifest = write_jsonl(tmp_path / "products.jsonl", records)
    job = ["--manifest", str(manifest), "--gateway", addr(stack.gateway), "--url-timeout-s", "5"]
    try:
        # A manifest from elsewhere cannot make the job fetch from loopback: every row is refused unasked.
        code, refused = run_job(tmp_path, *job)
        assert code == 2 and counts(refused) == (0, 0, 0, 0, 7) and requests == []
        assert (tmp_path / "rejects.csv").read_text().count("refused URL") == 7
        code, summary = run_job(tmp_path, *job, "--allow-private-urls")  # an intranet image server
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2 and counts(summary) == (5, 0, 0, 0, 2)
    rejects = (tmp_path / "rejects.csv").read_text()
    assert "HTTP 404" in rejects and rejects.count("unreachable URL") == 2
    assert stack.stub.GetItem(gateway_pb2.GetItemRequest(id=3), timeout=5).payload.image_ref == f"{base}/3.jpg"


def test_direct_to_qdrant_local_mode_with_model_upgrade(stack: Stack, tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    dataset = write_dataset(tmp_path / "ds", range(1, 31))
    qdrant = tmp_path / "qdrant"
    base_args = ["--dataset", str(dataset), "--qdrant-path", str(qdrant), "--classifier", addr(stack.classifier)]

    code, first = run_job(tmp_path, *base_args, "--embedder", addr(stack.embedder))
    assert code == 0 and counts(first) == (30, 0, 0, 0, 0)
    assert "alias catalogue switched to catalogue--tiny-embedder-tiny-1" in first["notes"]
    code, again = run_job(tmp_path, *base_args, "--embedder", addr(stack.embedder))
    assert code == 0 and counts(again) == (0, 0, 30, 0, 0)

    upgraded = _start_embedder(stack, tmp_path, "tiny-2")
    try:
        code, staged = run_job(tmp_path, *base_args, "--embedder", addr(upgraded), "--no-switch")
        assert code == 0 and counts(staged) == (30, 0, 0, 0, 0)
        client = QdrantClient(path=str(qdrant))
        try:  # the alias still serves the complete old catalogue
            alias = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
            assert alias == {"catalogue": "catalogue--tiny-embedder-tiny-1"}
            assert client.count("catalogue").count == 30
        finally:
            client.close()
        code, switched = run_job(tmp_path, *base_args, "--embedder", addr(upgraded), "--keep-old")
        assert code == 0 and counts(switched) == (0, 0, 30, 0, 0)  # resumed: nothing embedded twice
    finally:
        stack.threads.run(upgraded.stop(0))
    client = QdrantClient(path=str(qdrant))
    try:
        alias = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        assert alias == {"catalogue": "catalogue--tiny-embedder-tiny-2"}
        assert client.count("catalogue").count == 30
        assert client.collection_exists("catalogue--tiny-embedder-tiny-1")  # --keep-old
        meta = client.get_collection("catalogue").config.metadata["fashionsearch"]
        assert meta["embedder_version"] == "tiny-2"
        point = client.retrieve("catalogue", [7], with_payload=True)[0]
        assert point.payload["name"] == "Product 7, size M" and len(point.payload["content_hash"]) == 32
    finally:
        client.close()


def test_edge_rebuild_beside_the_live_gateway_then_switch(stack: Stack, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", range(1, 26))
    code, first = run_job(tmp_path, "--dataset", str(dataset), "--gateway", addr(stack.gateway))
    assert code == 0 and first["added"] == 25
    store = stack.gateway_settings.data_dir
    upgraded = _start_embedder(stack, tmp_path, "tiny-2")
    try:
        rebuild = ["--dataset", str(dataset), "--edge-dir", str(store), "--embedder", addr(upgraded)]
        code, staged = run_job(tmp_path, *rebuild, "--no-switch", "--classifier", addr(stack.classifier))
        assert code == 0 and staged["added"] == 25
        stats = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=DEADLINE_S)
        assert stats.stored_embedder.version == "tiny-1" and stats.item_count == 25  # searches see the old one

        code, switched = run_job(tmp_path, *rebuild)
        assert code == 0 and counts(switched) == (0, 0, 25, 0, 0)
        # The gateway still has the old collection open, so the job leaves the deletion to it.
        assert any("catalogue is still open" in note for note in switched["notes"])
    finally:
        stack.threads.run(upgraded.stop(0))
    stats = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=DEADLINE_S)
    assert stats.stored_embedder.version == "tiny-2" and stats.item_count == 25
    assert json.loads((store / "catalogue.alias").read_text()) == {"collection": "catalogue--tiny-embedder-tiny-2"}
    stack.threads.run(stack.gateway.stop(0))  # lets go of the old collection (after a grace period when serving)
    assert not (store / "catalogue").exists()
    assert (store / "catalogue--tiny-embedder-tiny-2").is_dir()


def _kill_when(process: subprocess.Popen[str], ready: Any, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_through_the_gateway(stack: Stack, tmp_path: Path) -> None:
    total = 600
    dataset = write_dataset(tmp_path / "ds", range(1, total + 1))
    args = ["--dataset", str(dataset), "--gateway", addr(stack.gateway), "--batch-size", "16", "--inflight", "1"]

    def count() -> int:
        return stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=DEADLINE_S).item_count

    upserts = {"grpc_service": "fashionsearch.v1.Gateway", "grpc_method": "UpsertItems"}
    idle = REGISTRY.get_sample_value("grpc_server_requests_in_flight", upserts) or 0.0
    process = subprocess.Popen(job_command(tmp_path, *args), cwd=REPO_ROOT, text=True)
    assert _kill_when(process, lambda: count() >= 60), "the job finished before it could be killed"
    assert process.returncode == -signal.SIGKILL
    # The gateway has finished with the items it had already received once the killed job's stream has ended.
    wait_until(
        lambda: (REGISTRY.get_sample_value("grpc_server_requests_in_flight", upserts) or 0.0) == idle,
        "the killed job's upsert stream to end",
    )
    stored_at_kill = count()
    assert 60 <= stored_at_kill < total

    code, resumed = run_job(tmp_path, *args)
    assert code == 0 and resumed["complete"]
    assert resumed["unchanged"] == stored_at_kill  # completed items were not embedded again
    assert resumed["added"] == total - stored_at_kill
    stored = digests(stack)
    assert sorted(stored) == list(range(1, total + 1))  # none lost, none duplicated
    assert count() == total and all(len(h) == 32 for h in stored.values())


@pytest.mark.slow
def test_sigkill_during_an_edge_rebuild_then_resume_and_switch(stack: Stack, tmp_path: Path) -> None:
    total = 1500
    dataset = write_dataset(tmp_path / "ds", range(1, total + 1))
    store = stack.gateway_settings.data_dir
    args = [
        "--dataset", str(dataset), "--edge-dir", str(store), "--embedder", addr(stack.embedder),
        "--batch-size", "8", "--inflight", "1",
    ]  # fmt: skip
    rejects_dir = tmp_path / "killed"
    rejects_dir.mkdir()
    command = job_command(rejects_dir, *args, progress=True)
    added = 0
    with subprocess.Popen(command, cwd=REPO_ROOT, text=True, stderr=subprocess.PIPE) as process:
        assert process.stderr is not None
        for line in process.stderr:  # progress lines: "... +<added> ~<updated> =<unchanged> x<rejected> ..."
            match = re.search(r" \+(\d+) ~", line)
            added = int(match.group(1)) if match else added
            if added >= 100:
                os.kill(process.pid, signal.SIGKILL)
                break
        process.wait(10)
    assert process.returncode == -signal.SIGKILL and added < total, "the job finished before it could be killed"
    assert not (store / "catalogue.alias").exists()  # killed before the switch

    code, resumed = run_job(tmp_path, *args)
    assert code == 0 and resumed["added"] + resumed["unchanged"] == total
    # Everything reported written before the kill survived it (plus what was in flight); the rest was added now.
    assert added <= resumed["unchanged"] < total
    stats = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=DEADLINE_S)
    assert stats.item_count == total
    assert sorted(digests(stack)) == list(range(1, total + 1))


def test_the_job_fails_cleanly_when_the_gateway_is_down(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", range(1, 4))
    started = time.monotonic()
    code, summary = run_job(tmp_path, "--dataset", str(dataset), "--gateway", "127.0.0.1:9", "--timeout-s", "1")
    assert code == 1 and not summary["complete"] and "GetStats" in summary["error"]
    assert time.monotonic() - started < 60


def test_sigterm_stops_after_the_batches_in_flight(stack: Stack, tmp_path: Path) -> None:
    total = 600
    dataset = write_dataset(tmp_path / "ds", range(1, total + 1))
    args = ["--dataset", str(dataset), "--gateway", addr(stack.gateway), "--batch-size", "16", "--inflight", "1"]
    with subprocess.Popen(
        job_command(tmp_path, *args, progress=True), cwd=REPO_ROOT, text=True, stderr=subprocess.PIPE
    ) as process:
        assert process.stderr is not None
        for line in process.stderr:
            match = re.search(r" \+(\d+) ~", line)
            if match and int(match.group(1)) >= 50:
                process.send_signal(signal.SIGTERM)
                break
        process.stderr.read()
        assert process.wait(30) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] and not summary["complete"] and 50 <= summary["added"] < total
    stored = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=DEADLINE_S).item_count
    assert stored == summary["added"]  # the summary counts exactly what was acknowledged
    code, resumed = run_job(tmp_path, *args)
    assert code == 0 and (resumed["added"], resumed["unchanged"]) == (total - stored, stored)


def test_sharded_rebuild_then_switch_only(stack: Stack, tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    dataset = write_dataset(tmp_path / "ds", range(1, 41))
    qdrant = tmp_path / "qdrant"
    base_args = ["--dataset", str(dataset), "--qdrant-path", str(qdrant), "--embedder", addr(stack.embedder)]
    added = []
    for shard in ("0/2", "1/2"):  # one after the other: qdrant-client's local mode allows one process at a time
        code, summary = run_job(tmp_path, *base_args, "--shard", shard)
        assert code == 0 and summary["complete"] and any("--switch-only" in n for n in summary["notes"])
        added.append(summary["added"])
    assert sum(added) == 40 and min(added) > 5
    result = subprocess.run(
        [sys.executable, "-m", "jobs.indexer", *base_args, "--switch-only"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "switched to catalogue--tiny-embedder-tiny-1" in result.stdout
    client = QdrantClient(path=str(qdrant))
    try:
        assert client.count("catalogue").count == 40
    finally:
        client.close()


def test_gateway_write_key_from_the_environment(tmp_path: Path) -> None:
    key = "indexer-test-key-0123456789"
    stack = start_stack(tmp_path, write_api_keys=(key,), allow_unauthenticated_writes=False)
    try:
        dataset = write_dataset(tmp_path / "ds", range(1, 6))
        args = ["--dataset", str(dataset), "--gateway", addr(stack.gateway)]
        code, refused = run_job(tmp_path, *args, env={"INDEXER_API_KEY": ""})
        assert code == 1 and "UNAUTHENTICATED" in refused["error"]
        code, accepted = run_job(tmp_path, *args, env={"INDEXER_API_KEY": key})
        assert code == 0 and accepted["added"] == 5
    finally:
        stack.close()


def noise_jpeg(seed: int, width: int, height: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_batches_are_split_to_fit_the_gateways_request_limit(tmp_path: Path) -> None:
    # A gateway taking images of at most 20 KB accepts requests of about 84 KB; 30 photos of 6 to 7 KB make a
    # batch three times that, so one UpsertBatch per batch would be refused as a whole.
    stack = start_stack(tmp_path, max_image_bytes=20_000)
    try:
        stats = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=10)
        assert stats.max_upsert_batch == 64 and 80_000 < stats.max_request_bytes < 90_000
        dataset = write_dataset(tmp_path / "ds", range(1, 32))
        for i in range(1, 31):
            (dataset / "images" / f"{i}.jpg").write_bytes(noise_jpeg(i, 60, 80))
        assert all(5_000 < (dataset / "images" / f"{i}.jpg").stat().st_size < 20_000 for i in range(1, 31))
        (dataset / "images" / "31.jpg").write_bytes(noise_jpeg(31, 300, 400))  # too large for any request
        assert (dataset / "images" / "31.jpg").stat().st_size > stats.max_request_bytes

        code, summary = run_job(tmp_path, "--dataset", str(dataset), "--gateway", addr(stack.gateway))
        assert code == 2 and summary["complete"], summary
        assert counts(summary) == (30, 0, 0, 0, 1)
        assert "more than the gateway accepts in one request" in (tmp_path / "rejects.csv").read_text()
        assert len(digests(stack)) == 30
    finally:
        stack.close()


# ---- rows whose text cannot be written: one reject each, the rest indexed, reruns unchanged (issue 27 M6) --------


def _images(root: Path, ids: range) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (root / f"{i}.jpg").write_bytes(product_jpeg(i))


def _rejects(tmp_path: Path) -> str:
    return (tmp_path / "rejects.csv").read_text(encoding="utf-8", errors="strict")


def test_a_lone_surrogate_in_a_jsonl_row_is_one_reject(stack: Stack, tmp_path: Path) -> None:
    _images(tmp_path, range(1, 5))
    lines = [json.dumps({"id": i, "image": f"{i}.jpg", "name": f"Product {i}"}) for i in range(1, 5)]
    lines[1] = '{"id": 2, "image": "2.jpg", "name": "Bad \\ud800 name"}'  # JSON's escape: valid JSON, not text
    lines[2] = '{"id": 3, "image": "3.jpg", "baseColour": "\\udfff"}'
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ("--manifest", str(manifest), "--gateway", addr(stack.gateway))
    code, first = run_job(tmp_path, *args)
    assert code == 2 and counts(first) == (2, 0, 0, 0, 2)
    rejects = _rejects(tmp_path)
    assert "name is not UTF-8 text" in rejects and "baseColour is not UTF-8 text" in rejects, rejects
    assert set(digests(stack)) == {1, 4}
    code, again = run_job(tmp_path, *args)
    assert code == 2 and counts(again) == (0, 0, 2, 0, 2)


def test_a_byte_that_is_not_utf8_in_a_csv_row_is_one_reject(stack: Stack, tmp_path: Path) -> None:
    _images(tmp_path, range(1, 4))
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"id,image,name\n1,1.jpg,One\n2,2.jpg,Caf\xe9 Latin-1\n3,3.jpg,Three\n")
    args = ("--manifest", str(manifest), "--gateway", addr(stack.gateway))
    code, first = run_job(tmp_path, *args)
    assert code == 2 and counts(first) == (2, 0, 0, 0, 1)
    assert "name is not UTF-8 text" in _rejects(tmp_path)
    assert set(digests(stack)) == {1, 3}
    code, again = run_job(tmp_path, *args)
    assert code == 2 and counts(again) == (0, 0, 2, 0, 1)


def test_a_byte_that_is_not_utf8_in_styles_csv_is_one_reject(stack: Stack, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", range(1, 4))
    styles = (dataset / "styles.csv").read_bytes().replace(b"Product 2, size M", b"Product 2 \xff size M")
    (dataset / "styles.csv").write_bytes(styles)
    code, first = run_job(tmp_path, "--dataset", str(dataset), "--gateway", addr(stack.gateway))
    assert code == 2 and counts(first) == (2, 0, 0, 0, 1)
    assert "the line is not UTF-8 text" in _rejects(tmp_path)
    assert set(digests(stack)) == {1, 3}
