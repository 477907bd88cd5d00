"""Request ids in the JSON logs, the metrics settings, error kinds, and the indexer's progress as metrics."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from fashionsearch import metrics
from fashionsearch.logs import accept_request_id, request_id
from jobs.indexer.fetch import ImageFetcher
from jobs.indexer.manifest import Manifest
from jobs.indexer.runner import Options, Progress, ProgressMetrics, run
from services.classifier.settings import Settings as ClassifierSettings
from services.embedder.settings import Settings as EmbedderSettings
from services.gateway.clients import CallBatcher
from services.gateway.settings import Settings as GatewaySettings
from testkit.indexer_fakes import FakeTarget, fake_catalogue
from testkit.waiting import until

REPO = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_acceptable_request_ids_are_kept_and_others_replaced() -> None:
    assert accept_request_id("shop-7f3a:checkout.1_x") == "shop-7f3a:checkout.1_x"
    assert accept_request_id("x" * 128) == "x" * 128
    # One id per request: a list of ids (which the gateway's batch calls once sent, and any caller could) is refused,
    # so no caller can grow the metadata of a batch call that carries other callers' searches.
    for bad in (None, "", "two words", "x" * 129, 'quote"s', "line\nbreak", "é", "a,b", "x" * 128 + ",y"):
        made = accept_request_id(bad)
        assert made != bad and len(made) == 32 and int(made, 16) >= 0


def test_a_batch_call_carries_one_batch_id_and_logs_the_request_ids_it_holds(caplog: pytest.LogCaptureFixture) -> None:
    """32 searches with 128-character ids in one batch call: the call's metadata is one id of at most 128
    characters (gRPC refuses metadata past 8 KB, failing every search in the batch), and the gateway's log names
    the batch id with its members, so each search can still be followed into the model service's log."""
    sent: list[str | None] = []
    gate = asyncio.Event()

    async def send(images: list[bytes], timeout_s: float) -> list[str]:
        sent.append(request_id.get())
        if len(sent) == 1:
            await gate.wait()
        return ["ok"] * len(images)

    async def scenario() -> None:
        batcher: CallBatcher[str] = CallBatcher(send, 32, 1 << 20, 10.0, "classifier")

        async def search(number: int) -> str:
            request_id.set(f"{number:03d}" + "x" * 125)
            return await batcher.submit(b"image")

        first = asyncio.ensure_future(search(0))
        await until(lambda: sent, "the first batch inside the call")  # the next 32 queue behind it
        held = [asyncio.ensure_future(search(n)) for n in range(1, 33)]
        await until(lambda: batcher.queued == 32, "32 searches queued behind it")
        gate.set()
        assert await asyncio.gather(first, *held) == ["ok"] * 33
        await batcher.close()

    with caplog.at_level(logging.INFO, logger="services.gateway.clients"):
        asyncio.run(scenario())
    assert sent[0] == "000" + "x" * 125  # a batch of one carries its search's own id
    batch_id = sent[1]
    assert batch_id is not None and len(batch_id) <= 128 and "," not in batch_id
    assert accept_request_id(batch_id) == batch_id
    (line,) = [r for r in caplog.records if getattr(r, "batch_id", None) == batch_id]
    assert line.request_ids == [f"{n:03d}" + "x" * 125 for n in range(1, 33)]  # type: ignore[attr-defined]


def test_metrics_ports_default_per_service_and_zero_turns_them_off() -> None:
    model_dir = {"CLASSIFIER_MODEL_DIR": str(REPO), "EMBEDDER_MODEL_DIR": str(REPO)}
    assert ClassifierSettings.from_env(model_dir).metrics_port == 9101
    assert EmbedderSettings.from_env(model_dir).metrics_port == 9102
    assert ClassifierSettings.from_env({**model_dir, "CLASSIFIER_METRICS_PORT": "0"}).metrics_port is None
    assert ClassifierSettings().metrics_port is None  # built in code (tests): none unless asked for
    assert GatewaySettings.from_env({}).metrics_port == 8080  # beside the API, on the HTTP port
    assert GatewaySettings.from_env({"GATEWAY_HTTP_PORT": "9000"}).metrics_port == 9000
    assert GatewaySettings.from_env({"GATEWAY_METRICS_PORT": "9100"}).metrics_port == 9100
    assert GatewaySettings.from_env({"GATEWAY_METRICS_PORT": "0"}).metrics_port is None


def test_errors_and_refusals_are_counted_by_kind() -> None:
    cases = {
        grpc.StatusCode.INVALID_ARGUMENT: ("fashionsearch_errors_total", {"kind": "invalid_argument"}),
        grpc.StatusCode.UNAVAILABLE: ("fashionsearch_errors_total", {"kind": "unavailable"}),
        grpc.StatusCode.DEADLINE_EXCEEDED: ("fashionsearch_errors_total", {"kind": "deadline_exceeded"}),
        grpc.StatusCode.UNAUTHENTICATED: ("fashionsearch_requests_refused_total", {"reason": "api_key"}),
        grpc.StatusCode.PERMISSION_DENIED: ("fashionsearch_requests_refused_total", {"reason": "api_key"}),
        grpc.StatusCode.RESOURCE_EXHAUSTED: ("fashionsearch_requests_refused_total", {"reason": "limit"}),
    }
    for code, (name, labels) in cases.items():
        before = sample(name, **labels)
        metrics.count_outcome(code)
        assert sample(name, **labels) == before + 1, code
    errors = sum(sample("fashionsearch_errors_total", kind=k) for k in ("ok", "OK"))
    metrics.count_outcome(grpc.StatusCode.OK)
    assert sum(sample("fashionsearch_errors_total", kind=k) for k in ("ok", "OK")) == errors == 0


def test_the_indexer_reports_its_progress_as_metrics(tmp_path: Path) -> None:
    outcomes = ("added", "updated", "unchanged", "rejected", "deleted")
    before = {outcome: sample("fashionsearch_indexer_items_total", outcome=outcome) for outcome in outcomes}
    target = FakeTarget()
    manifest: Manifest = fake_catalogue(tmp_path, range(1, 11))

    def indexed(manifest: Manifest, **options: object) -> None:
        progress = Progress(10, enabled=False, metrics=ProgressMetrics(10))
        run(
            manifest,
            target,
            ImageFetcher(root=manifest.image_root),
            Options(batch_size=4, inflight=2, fetch_threads=2, **options),  # type: ignore[arg-type]
            rejects_path=tmp_path / "rejects.csv",
            progress=progress,
        )

    indexed(manifest)
    indexed(fake_catalogue(tmp_path, range(3, 13)), prune=True)
    moved = {
        outcome: sample("fashionsearch_indexer_items_total", outcome=outcome) - before[outcome] for outcome in outcomes
    }
    assert moved == {"added": 12, "updated": 0, "unchanged": 8, "rejected": 0, "deleted": 2}
    assert sample("fashionsearch_indexer_items_expected") == 10
