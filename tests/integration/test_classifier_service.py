"""The classifier as a real grpc.aio server on a free port, with the tiny ONNX classifier."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fashionsearch.model_contract import ModelContractError
from fashionsearch.onnx_model import ModelIdentity
from fashionsearch.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.model import Classifier, OnnxClassifier
from services.classifier.server import start
from services.classifier.settings import Settings
from testkit.service_helpers import BAD_IMAGES, GOOD, SERVING, health_status, jpeg
from testkit.tiny_models import DEFAULT_HEADS, write_tiny_classifier

pytestmark = pytest.mark.integration

Body = Callable[[classifier_pb2_grpc.ClassifierStub, grpc.aio.Channel], Awaitable[None]]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    model_dir = write_tiny_classifier(tmp_path_factory.mktemp("classifier"))
    return Settings(port=0, host="127.0.0.1", model_dir=model_dir, grace_s=0.5)


def run(settings: Settings, body: Body, classifier: Classifier | None = None) -> None:
    async def scenario() -> None:
        running = await start(settings, classifier)
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                await body(classifier_pb2_grpc.ClassifierStub(channel), channel)
        finally:
            await running.stop(settings.grace_s)

    asyncio.run(scenario())


def test_health_is_serving_and_reflection_lists_the_services(settings: Settings) -> None:
    async def body(stub: classifier_pb2_grpc.ClassifierStub, channel: grpc.aio.Channel) -> None:
        assert await health_status(channel) == SERVING
        assert await health_status(channel, "fashionsearch.v1.Classifier") == SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in reflection.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
        assert {"fashionsearch.v1.Classifier", "grpc.health.v1.Health"} <= names

    run(settings, body)


def test_classify_one_image(settings: Settings) -> None:
    async def body(stub: classifier_pb2_grpc.ClassifierStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD), timeout=5)
        assert reply.model.name == "tiny-classifier" and reply.model.version == "tiny-1"
        assert len(reply.model.onnx_sha256) == 64
        attributes = reply.classification.attributes
        assert [a.attribute for a in attributes] == list(DEFAULT_HEADS)
        for prediction in attributes:
            assert len(prediction.labels) == 3
            probabilities = [label.probability for label in prediction.labels]
            assert probabilities == sorted(probabilities, reverse=True)
            assert all(0.0 <= p <= 1.0 for p in probabilities)
            assert {label.label for label in prediction.labels} <= set(DEFAULT_HEADS[prediction.attribute])
        top = {a.attribute: a.labels[0].label for a in attributes}
        assert top["articleType"] in reply.classification.suggested_name
        assert top["articleType"].lower() in reply.classification.keywords

        one = await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD, top_k=1), timeout=5)
        assert all(len(a.labels) == 1 for a in one.classification.attributes)
        everything = await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD, top_k=10), timeout=5)
        assert len(everything.classification.attributes[0].labels) == len(DEFAULT_HEADS["masterCategory"])

    run(settings, body)


def test_different_images_get_different_predictions(settings: Settings) -> None:
    async def body(stub: classifier_pb2_grpc.ClassifierStub, channel: grpc.aio.Channel) -> None:
        tops = set()
        for colour in ("red", "blue", "white", "black", "green"):
            reply = await stub.Classify(classifier_pb2.ClassifyRequest(image=jpeg(colour)), timeout=5)
            tops.add(tuple(a.labels[0].label for a in reply.classification.attributes))
        assert len(tops) >= 3

    run(settings, body)


def test_batch_matches_single_calls_and_reports_bad_items(settings: Settings) -> None:
    bad = [data for data, _ in BAD_IMAGES.values()]
    images = [jpeg("red"), *bad, jpeg("blue")]

    async def body(stub: classifier_pb2_grpc.ClassifierStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.ClassifyBatch(classifier_pb2.ClassifyBatchRequest(images=images, top_k=2), timeout=5)
        assert len(reply.results) == len(images)
        assert reply.model.name == "tiny-classifier"
        for result, (_, fragment) in zip(reply.results[1:-1], BAD_IMAGES.values(), strict=True):
            assert result.WhichOneof("outcome") == "error"
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert fragment in result.error.message
        for index in (0, -1):
            single = await stub.Classify(classifier_pb2.ClassifyRequest(image=images[index], top_k=2), timeout=5)
            batched = reply.results[index].classification
            assert [a.attribute for a in batched.attributes] == [a.attribute for a in single.classification.attributes]
            for got, want in zip(batched.attributes, single.classification.attributes, strict=True):
                assert [x.label for x in got.labels] == [x.label for x in want.labels]
                assert [x.probability for x in got.labels] == pytest.approx([x.probability for x in want.labels])
            assert batched.suggested_name == single.classification.suggested_name

        empty = await stub.ClassifyBatch(classifier_pb2.ClassifyBatchRequest(), timeout=5)
        assert list(empty.results) == []

    run(settings, body)


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_is_invalid_argument_and_the_service_keeps_serving(settings: Settings, case: str) -> None:
    data, fragment = BAD_IMAGES[case]

    async def body(stub: classifier_pb2_grpc.ClassifierStub, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Classify(classifier_pb2.ClassifyRequest(image=data), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in caught.value.details()
        assert (await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD), timeout=5)).classification
        assert await health_status(channel) == SERVING

    run(settings, body)


def test_request_limits(settings: Settings) -> None:
    limited = replace(settings, max_batch=2, max_image_bytes=100_000)

    async def body(stub: classifier_pb2_grpc.ClassifierStub, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ClassifyBatch(classifier_pb2.ClassifyBatchRequest(images=[GOOD] * 3), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 2 images, got 3" in caught.value.details()

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD, top_k=11), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "top_k must be at most 10, got 11" in caught.value.details()

        # Larger than gRPC's default 4 MB message limit, so this also proves the server's own limit applies.
        oversized = b"\xff\xd8\xff" + b"\x00" * (5 * 1024 * 1024)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Classify(classifier_pb2.ClassifyRequest(image=oversized), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "more than the limit of 100000 bytes" in caught.value.details()

    run(limited, body)


def test_concurrent_calls(settings: Settings) -> None:
    async def body(stub: classifier_pb2_grpc.ClassifierStub, channel: grpc.aio.Channel) -> None:
        calls = [stub.Classify(classifier_pb2.ClassifyRequest(image=jpeg(c)), timeout=10) for c in ["red"] * 20]
        replies = await asyncio.gather(*calls)
        assert len({r.classification.suggested_name for r in replies}) == 1

    run(settings, body)


class ExplodingClassifier:
    """A classifier with a bug: the service must answer INTERNAL and keep serving."""

    embedder = None  # no one pass

    def __init__(self, real: OnnxClassifier) -> None:
        self.real = real
        self.calls = 0

    @property
    def identity(self) -> ModelIdentity:
        return self.real.identity

    @property
    def input_size(self) -> tuple[int, int]:
        return self.real.input_size

    def warm_up(self, batch_size: int = 1) -> None:
        self.real.warm_up(batch_size)

    def prepare(self, image):  # type: ignore[no-untyped-def]
        return self.real.prepare(image)

    def classify_prepared(self, batch, top_k):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom: a bug in the model adapter")
        return self.real.classify_prepared(batch, top_k)


def test_unexpected_error_is_internal_and_the_service_survives(settings: Settings) -> None:
    classifier = ExplodingClassifier(OnnxClassifier.from_dir(settings.model_dir))

    async def body(stub: classifier_pb2_grpc.ClassifierStub, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert "boom" not in caught.value.details()
        assert (await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD), timeout=5)).classification

    run(settings, body, classifier)


def test_a_model_that_fails_warm_up_never_serves(tmp_path: Path, settings: Settings) -> None:
    broken = replace(settings, model_dir=write_tiny_classifier(tmp_path, softmax=False))

    async def scenario() -> None:
        with pytest.raises(ModelContractError, match="not a softmax"):
            await start(broken)

    asyncio.run(scenario())
