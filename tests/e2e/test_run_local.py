"""`make run`'s launcher, as a newcomer runs it: the committed models, the sample catalogue, Ctrl-C, a second run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from testkit.process_stack import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_catalogue"
#: The last line the launcher prints once the catalogue is indexed ("fashionsearch is running:", then the URLs).
DONE_PRINTING = "Press Ctrl-C to stop."


def _launch(
    var_dir: Path, ports: dict[str, int], extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FASHIONSEARCH_VAR_DIR": str(var_dir), **(extra_env or {})}
    env.update({f"FASHIONSEARCH_{name}_PORT": str(port) for name, port in ports.items()})
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "deploy" / "run_local.py")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        if DONE_PRINTING in line:
            return proc, lines
    proc.wait(10)
    proc.stdout.close()
    pytest.fail("launcher exited before it was ready:\n" + "\n".join(lines[-40:]))


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def _indexer_counts(lines: list[str]) -> dict[str, int]:
    """The counts of the indexer summary in the launcher's output ("  added      0" and so on)."""
    counts = {}
    for line in lines:
        match = re.fullmatch(r"\s*(added|updated|unchanged|deleted|rejected)\s+(\d+)\b.*", line)
        if match:
            counts[match[1]] = int(match[2])
    assert {"added", "updated", "unchanged"} <= counts.keys(), "no indexer summary:\n" + "\n".join(lines)
    return counts


def test_launcher_serves_the_sample_catalogue_and_restarts_without_embedding(tmp_path):
    for model in ("classifier", "embedder"):
        if not (REPO / "models" / model / "model.onnx").is_file():
            pytest.fail(f"models/{model} is missing: a fresh clone must serve without training")
    names = ("CLASSIFIER", "EMBEDDER", "GATEWAY", "HTTP", "CLASSIFIER_METRICS", "EMBEDDER_METRICS", "GATEWAY_METRICS")
    names += ("DETECTOR", "DETECTOR_METRICS")  # used when models/detector holds a detector
    ports = {name: free_port() for name in names}

    proc, lines = _launch(tmp_path, ports)
    try:
        query_id = int((SAMPLE / "styles.csv").read_text().splitlines()[1].split(",", 1)[0])
        with grpc.insecure_channel(f"127.0.0.1:{ports['GATEWAY']}") as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            stats = gateway.GetStats(gateway_pb2.GetStatsRequest(), timeout=10)
            assert stats.item_count == len((SAMPLE / "styles.csv").read_text().splitlines()) - 1
            # Read whole, as the indexer read it, the photo finds itself (crop=auto, the default, cuts the product
            # out of this one: a model on a grey studio backdrop is no white packshot).
            reply = gateway.Search(
                gateway_pb2.SearchRequest(
                    image=(SAMPLE / "images" / f"{query_id}.jpg").read_bytes(),
                    filter_mode=gateway_pb2.FILTER_MODE_NONE,
                    crop=gateway_pb2.CROP_NONE,
                ),
                timeout=10,
            )
        assert reply.hits[0].id == query_id and reply.hits[0].distance < 1e-3
        assert len(reply.hits) == 5 and reply.suggested_name
        assert _indexer_counts(lines)["added"] == stats.item_count  # the first start embeds everything
        # The launcher prints each service's metrics URL, and each answers in Prometheus's text format. The
        # gateway's is a listener of its own, as in compose and Kubernetes: scrapes do not compete with the API.
        for metrics_port in (ports["GATEWAY_METRICS"], ports["CLASSIFIER_METRICS"], ports["EMBEDDER_METRICS"]):
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            assert url in "\n".join(lines)
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert b"grpc_server_handled_total{" in answer.read()
        with pytest.raises(urllib.error.HTTPError) as not_here:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['HTTP']}/metrics", timeout=10)
        not_here.value.close()  # an HTTPError holds the answer's socket open until closed
        assert not_here.value.code == 404
    finally:
        assert _stop(proc) == 0

    proc, lines = _launch(tmp_path, ports)
    assert _stop(proc) == 0
    # Nothing changed, so the second start embeds nothing: every item is counted unchanged in the indexer's
    # summary. (Its speed is the bench's business: both starts take about 3 s, too close to compare here.)
    counts = _indexer_counts(lines)
    assert counts["added"] == counts["updated"] == 0, "\n".join(lines)
    assert counts["unchanged"] == stats.item_count, "\n".join(lines)

    # A `git pull` brings a new embedder version: the next start re-embeds the catalogue beside the live one and
    # the gateway serves the new vectors, instead of refusing to index.
    upgraded = tmp_path / "embedder-upgraded"
    shutil.copytree(REPO / "models" / "embedder", upgraded)
    spec = json.loads((upgraded / "model.json").read_text())
    spec["version"] = f"{spec['version']}-upgraded"
    (upgraded / "model.json").write_text(json.dumps(spec))
    proc, lines = _launch(tmp_path, ports, {"EMBEDDER_MODEL_DIR": str(upgraded)})
    try:
        assert any("Re-embedding the sample catalogue" in line for line in lines), "\n".join(lines)
        with grpc.insecure_channel(f"127.0.0.1:{ports['GATEWAY']}") as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            stats = gateway.GetStats(gateway_pb2.GetStatsRequest(), timeout=10)
            assert stats.stored_embedder.version == spec["version"]
            assert stats.item_count == len((SAMPLE / "styles.csv").read_text().splitlines()) - 1
            reply = gateway.SearchById(gateway_pb2.SearchByIdRequest(id=query_id), timeout=10)
        assert len(reply.hits) == 5
    finally:
        assert _stop(proc) == 0


def test_launcher_runs_with_the_api_keys_a_user_sets(tmp_path):
    """A user trying API keys locally sets GATEWAY_READ_API_KEYS and GATEWAY_WRITE_API_KEYS before `make run`: the
    launcher checks the catalogue and indexes it with the keys, and the gateway asks callers for them. (Before,
    the write keys contradicted the launcher's unauthenticated writes and the read keys failed its GetStats.)"""
    read, write = "read-key-for-make-run-0123", "write-key-for-make-run-0123"
    names = ("CLASSIFIER", "EMBEDDER", "GATEWAY", "HTTP", "CLASSIFIER_METRICS", "EMBEDDER_METRICS", "GATEWAY_METRICS")
    names += ("DETECTOR", "DETECTOR_METRICS")  # used when models/detector holds a detector
    ports = {name: free_port() for name in names}
    proc, lines = _launch(tmp_path, ports, {"GATEWAY_READ_API_KEYS": read, "GATEWAY_WRITE_API_KEYS": write})
    try:
        assert _indexer_counts(lines)["added"] == len((SAMPLE / "styles.csv").read_text().splitlines()) - 1
        with grpc.insecure_channel(f"127.0.0.1:{ports['GATEWAY']}") as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                gateway.GetStats(gateway_pb2.GetStatsRequest(), timeout=10)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            keyed = (("authorization", f"Bearer {read}"),)
            assert gateway.GetStats(gateway_pb2.GetStatsRequest(), timeout=10, metadata=keyed).item_count > 0
            with pytest.raises(grpc.RpcError) as read_only:
                gateway.DeleteItems(gateway_pb2.DeleteItemsRequest(ids=[1]), timeout=10, metadata=keyed)
            assert read_only.value.code() is grpc.StatusCode.PERMISSION_DENIED
            written = (("authorization", f"Bearer {write}"),)
            gateway.DeleteItems(gateway_pb2.DeleteItemsRequest(ids=[999_999]), timeout=10, metadata=written)
    finally:
        assert _stop(proc) == 0
