"""Classifier, embedder (detector) and gateway as real grpc.aio servers in this process, on free ports, for tests.

The servers run on an event loop in a background thread, so the tests talk to them with ordinary blocking gRPC
stubs, exactly like an e-commerce backend would.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from PIL import Image

from fashionsearch.classification import AttributePrediction, LabelScore
from fashionsearch.config import Address
from fashionsearch.model_contract import ModelSpec
from fashionsearch.serving import RunningServer
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from services.classifier import server as classifier_server
from services.classifier.settings import Settings as ClassifierSettings
from services.detector import server as detector_server
from services.detector.settings import Settings as DetectorSettings
from services.embedder import server as embedder_server
from services.embedder.settings import Settings as EmbedderSettings
from services.gateway import server as gateway_server
from services.gateway.bootstrap import Gateway, bootstrap
from services.gateway.predicted import PREDICTED_SUBCATEGORY_MASS, predicted_filter
from services.gateway.settings import Settings as GatewaySettings
from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder, write_tiny_text_embedder

T = TypeVar("T")
HOST = "127.0.0.1"


class LoopThread:
    """An asyncio event loop running in a daemon thread; run() executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="grpc-servers", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def jpeg(colour: tuple[int, int, int], *, stripe: tuple[int, int, int] | None = None, size=(60, 80)) -> bytes:
    """A catalogue-like 60x80 JPEG: a plain colour, optionally with a horizontal stripe."""
    image = Image.new("RGB", size, colour)
    if stripe is not None:
        pixels = np.asarray(image).copy()
        pixels[size[1] // 3 : size[1] // 2, :, :] = stripe
        image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@dataclass
class Stack:
    """The three running servers, their settings, and a blocking gateway stub."""

    threads: LoopThread
    classifier: RunningServer
    embedder: RunningServer
    gateway: RunningServer
    classifier_settings: ClassifierSettings
    embedder_settings: EmbedderSettings
    gateway_settings: GatewaySettings
    channel: grpc.Channel
    #: The gateway's wiring (its service, clients and their batchers), for tests that look inside.
    wired: Gateway
    detector: RunningServer | None = None

    @property
    def stub(self) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(self.channel)

    def stop_classifier(self) -> None:
        self.threads.run(self.classifier.stop(0))

    def restart_classifier(self) -> None:
        settings = replace(self.classifier_settings, port=self.classifier.port)
        self.classifier = self.threads.run(classifier_server.start(settings))

    def upsert(self, items: list[gateway_pb2.CatalogueItem]) -> list[gateway_pb2.UpsertItemsResponse]:
        requests = (gateway_pb2.UpsertItemsRequest(item=item) for item in items)
        return list(self.stub.UpsertItems(requests, timeout=30))

    def close(self) -> None:
        self.channel.close()
        for server in (self.gateway, self.classifier, self.embedder, self.detector):
            if server is not None:
                self.threads.run(server.stop(0))
        self.threads.close()


def start_stack(
    tmp_path: Path,
    *,
    embedder_start: Any = None,
    embedder_version: str = "tiny-1",
    text_model: bool = False,
    detector_dir: Path | None = None,
    classifier_dir: Path | None = None,
    embedder_dir: Path | None = None,
    **gateway_overrides: Any,
) -> Stack:
    """Start tiny-model classifier and embedder and a gateway on an Edge store in tmp_path.

    `embedder_start` replaces the embedder (a coroutine function taking EmbedderSettings and returning a
    RunningServer), e.g. a deliberately slow one. `text_model`: the embedder serves a tiny text model too.
    `detector_dir`: a detector model (testkit.tiny_detector) to serve, and the gateway's GATEWAY_DETECTOR_ADDR.
    `classifier_dir` / `embedder_dir`: other model folders (e.g. testkit's write_tiny_one_pass).
    """
    threads = LoopThread()
    classifier_settings = ClassifierSettings(
        port=0,
        host=HOST,
        model_dir=classifier_dir or write_tiny_classifier(tmp_path / "classifier"),
        intra_op_threads=1,
    )
    image_model = embedder_dir or write_tiny_embedder(tmp_path / "embedder", version=embedder_version)
    embedder_settings = EmbedderSettings(
        port=0,
        host=HOST,
        model_dir=image_model,
        intra_op_threads=1,
        text_model_dir=(
            write_tiny_text_embedder(tmp_path / "text-embedder", ModelSpec.load(image_model)) if text_model else None
        ),
    )
    classifier = threads.run(classifier_server.start(classifier_settings))
    embedder = threads.run((embedder_start or embedder_server.start)(embedder_settings))
    detector = None
    if detector_dir is not None:
        detector_settings = DetectorSettings(port=0, host=HOST, model_dir=detector_dir, intra_op_threads=1)
        detector = threads.run(detector_server.start(detector_settings))
        gateway_overrides.setdefault("detector_addr", peer_addr(detector))
    # Tests write the catalogue without keys unless they configure some (tests/integration/test_gateway_security.py).
    gateway_overrides.setdefault("allow_unauthenticated_writes", True)
    # The embedded store's first collection (files created and synced) took over the 5 s default on a loaded 2-core
    # machine (1 of 10 runs of test_gateway.py beside two busy loops); a test about store deadlines sets its own.
    gateway_overrides.setdefault("store_timeout_s", 30.0)
    # HTTP only where a test asks for it (with a free port): the default port, 8080, may be taken.
    gateway_overrides.setdefault("http_port", None)
    gateway_overrides.setdefault("metrics_port", None)  # in-process gateways never take the default port 8080
    gateway_settings = GatewaySettings(
        port=0,
        host=HOST,
        classifier_addr=peer_addr(classifier),
        embedder_addr=peer_addr(embedder),
        data_dir=tmp_path / "store",
        **gateway_overrides,
    )
    wired = threads.run(_wire(gateway_settings))
    gateway = threads.run(gateway_server.start(gateway_settings, wired))
    channel = grpc.insecure_channel(f"{HOST}:{gateway.port}")
    return Stack(
        threads,
        classifier,
        embedder,
        gateway,
        classifier_settings,
        embedder_settings,
        gateway_settings,
        channel,
        wired,
        detector,
    )


async def _wire(settings: GatewaySettings) -> Gateway:
    return bootstrap(settings)  # inside the servers' event loop: its channels bind to it


def peer_addr(server: RunningServer) -> Address:
    return Address(HOST, server.port)


def predicted_subcategories(labels: list[tuple[str, float]]) -> list[str]:
    """The subCategories a predicted-subCategory search of a photo filters by, from the (label, probability) pairs
    its answer shows, by the gateway's own rule at the default GATEWAY_PREDICTED_SUBCATEGORY_MASS."""
    attribute = AttributePrediction("subCategory", tuple(LabelScore(label, p) for label, p in labels))
    return list(predicted_filter([attribute], PREDICTED_SUBCATEGORY_MASS)["subCategory"])
