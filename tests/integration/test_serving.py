"""Shared server wiring: health transitions, idempotent graceful shutdown, binding errors, the entry points."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from fashionsearch.serving import start_server
from fashionsearch.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.model import OnnxClassifier
from services.classifier.server import start as start_classifier
from services.classifier.settings import Settings
from testkit.service_helpers import GOOD, NOT_SERVING, SERVING, health_status
from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder
from testkit.waiting import DEADLINE_S

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_health_transitions_and_idempotent_stop() -> None:
    closed: list[str] = []

    async def async_closer() -> None:
        closed.append("async")

    def failing_closer() -> None:
        closed.append("failing")
        raise RuntimeError("a resource that cannot close must not stop the others")

    async def scenario() -> None:
        running = await start_server(
            lambda server: None,
            ["example.v1.Nothing"],
            host="127.0.0.1",
            port=0,
            closers=[lambda: closed.append("sync"), failing_closer],
        )
        running.add_closer(async_closer)
        assert running.port > 0 and running.address == f"127.0.0.1:{running.port}"
        async with grpc.aio.insecure_channel(running.address) as channel:
            assert await health_status(channel) == NOT_SERVING
            assert await health_status(channel, "example.v1.Nothing") == NOT_SERVING
            await running.set_serving()
            assert await health_status(channel) == SERVING
            assert await health_status(channel, "example.v1.Nothing") == SERVING
        await asyncio.gather(running.stop(0.1), running.stop(0.1))
        await running.stop(0.1)
        assert closed == ["async", "failing", "sync"]  # each closer ran once, last added first
        async with grpc.aio.insecure_channel(running.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_status(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    asyncio.run(scenario())


def test_a_taken_port_is_a_clear_error() -> None:
    async def scenario() -> None:
        first = await start_server(lambda server: None, [], host="127.0.0.1", port=0)
        try:
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{first.port}"):
                await start_server(lambda server: None, [], host="127.0.0.1", port=first.port)
        finally:
            await first.stop(0)

    asyncio.run(scenario())


class SlowClassifier:
    """Wraps the tiny classifier, taking `delay_s` per call (after setting `entered`), to have an RPC in flight
    during shutdown."""

    def __init__(self, real: OnnxClassifier, delay_s: float) -> None:
        self.real = real
        self.delay_s = delay_s
        self.entered = threading.Event()
        self.identity = real.identity
        self.input_size = real.input_size
        self.embedder = None  # no one pass

    def warm_up(self, batch_size: int = 1) -> None:
        self.real.warm_up(batch_size)

    def prepare(self, image):  # type: ignore[no-untyped-def]
        return self.real.prepare(image)

    def classify_prepared(self, batch, top_k):  # type: ignore[no-untyped-def]
        self.entered.set()
        time.sleep(self.delay_s)  # the model's work, which the stop must wait for
        return self.real.classify_prepared(batch, top_k)


def test_in_flight_calls_finish_during_the_grace_period(tmp_path: Path) -> None:
    settings = Settings(port=0, host="127.0.0.1", model_dir=write_tiny_classifier(tmp_path), grace_s=5)
    classifier = SlowClassifier(OnnxClassifier.from_dir(settings.model_dir), delay_s=0.5)

    async def scenario() -> None:
        running = await start_classifier(settings, classifier)
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            call = asyncio.ensure_future(stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD), timeout=5))
            assert await asyncio.to_thread(classifier.entered.wait, DEADLINE_S)  # the call is inside the model
            stopping = asyncio.ensure_future(running.stop(settings.grace_s))
            reply = await call
            assert reply.classification.attributes
            await stopping

    asyncio.run(scenario())


def _launch(module: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    ("module", "prefix", "writer"),
    [
        ("services.classifier", "CLASSIFIER_", write_tiny_classifier),
        ("services.embedder", "EMBEDDER_", write_tiny_embedder),
    ],
)
def test_entry_point_serves_and_stops_on_sigterm(tmp_path: Path, module: str, prefix: str, writer) -> None:  # type: ignore[no-untyped-def]
    model_dir = writer(tmp_path / "model")
    env = {
        f"{prefix}MODEL_DIR": str(model_dir),
        f"{prefix}PORT": "0",
        f"{prefix}HOST": "127.0.0.1",
        f"{prefix}METRICS_PORT": "0",
    }
    with _launch(module, env) as process:
        try:
            assert process.stdout is not None
            lines = []
            for line in process.stdout:
                lines.append(json.loads(line))  # every line is one JSON object
                if "is SERVING" in lines[-1]["message"]:
                    break
            assert any("listen_port" in entry and entry.get("model_sha256") for entry in lines), lines
            process.send_signal(signal.SIGTERM)
            rest = [json.loads(line) for line in process.stdout]
            assert process.wait(timeout=15) == 0
            assert rest[-1]["message"] == "stopped"
        finally:
            if process.poll() is None:
                process.kill()


def test_entry_point_refuses_bad_settings_before_binding(tmp_path: Path) -> None:
    with _launch("services.classifier", {"CLASSIFIER_MODEL_DIR": str(tmp_path / "missing")}) as process:
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    entry = json.loads(output.strip().splitlines()[-1])
    assert entry["level"] == "ERROR"
    assert "CLASSIFIER_MODEL_DIR" in entry["message"] and "not an existing directory" in entry["message"]


def test_entry_point_refuses_a_model_that_does_not_match_its_json(tmp_path: Path) -> None:
    model_dir = write_tiny_embedder(tmp_path, dim=8)
    spec = json.loads((model_dir / "model.json").read_text())
    spec["embedding"]["dim"] = 12
    (model_dir / "model.json").write_text(json.dumps(spec))
    with _launch("services.embedder", {"EMBEDDER_MODEL_DIR": str(model_dir), "EMBEDDER_PORT": "0"}) as process:
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "output 'embedding' shape: expected [batch, 12], the model has ['batch', 8]" in output


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path)
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert replace(settings, port=1).port == 1
