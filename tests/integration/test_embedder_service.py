"""The embedder as a real grpc.aio server on a free port, with the tiny ONNX embedder."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import grpc
import numpy as np
import pytest

from fashionsearch.images import decode_image
from fashionsearch.model_contract import preprocess
from fashionsearch.onnx_model import OnnxModel
from fashionsearch.v1 import embedder_pb2, embedder_pb2_grpc
from services.embedder.server import start
from services.embedder.settings import Settings
from testkit.service_helpers import BAD_IMAGES, GOOD, SERVING, health_status, jpeg
from testkit.tiny_models import write_tiny_embedder

pytestmark = pytest.mark.integration

DIM = 16
Body = Callable[[embedder_pb2_grpc.EmbedderStub, grpc.aio.Channel], Awaitable[None]]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    model_dir = write_tiny_embedder(tmp_path_factory.mktemp("embedder"), dim=DIM, version="tiny-7")
    return Settings(port=0, host="127.0.0.1", model_dir=model_dir, grace_s=0.5)


def run(settings: Settings, body: Body) -> None:
    async def scenario() -> None:
        running = await start(settings)
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                await body(embedder_pb2_grpc.EmbedderStub(channel), channel)
        finally:
            await running.stop(settings.grace_s)

    asyncio.run(scenario())


def test_health_and_embed_one_image(settings: Settings) -> None:
    async def body(stub: embedder_pb2_grpc.EmbedderStub, channel: grpc.aio.Channel) -> None:
        assert await health_status(channel) == SERVING
        assert await health_status(channel, "fashionsearch.v1.Embedder") == SERVING
        reply = await stub.Embed(embedder_pb2.EmbedRequest(image=GOOD), timeout=5)
        assert (reply.model.name, reply.model.version) == ("tiny-embedder", "tiny-7")
        assert len(reply.model.onnx_sha256) == 64
        assert len(reply.embedding.vector) == DIM

        # The service answers what the model itself computes on the shared preprocessing.
        model = OnnxModel(settings.model_dir)
        image = decode_image(GOOD, target_size=model.input_size)
        expected = model.run(preprocess([image], model.spec.input))["embedding"][0]
        np.testing.assert_allclose(np.asarray(reply.embedding.vector), expected, rtol=1e-5, atol=1e-5)

    run(settings, body)


def test_similar_images_get_near_vectors(settings: Settings) -> None:
    async def body(stub: embedder_pb2_grpc.EmbedderStub, channel: grpc.aio.Channel) -> None:
        async def vector(data: bytes) -> np.ndarray:
            reply = await stub.Embed(embedder_pb2.EmbedRequest(image=data), timeout=5)
            return np.asarray(reply.embedding.vector)

        red, dark_red, blue = (
            await vector(jpeg((220, 0, 0))),
            await vector(jpeg((200, 10, 10))),
            await vector(jpeg((0, 0, 220))),
        )
        assert np.linalg.norm(red - dark_red) < np.linalg.norm(red - blue) / 3

    run(settings, body)


def test_batch_matches_single_calls_and_reports_bad_items(settings: Settings) -> None:
    images = [jpeg("red"), *(data for data, _ in BAD_IMAGES.values()), jpeg("blue")]

    async def body(stub: embedder_pb2_grpc.EmbedderStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.EmbedBatch(embedder_pb2.EmbedBatchRequest(images=images), timeout=5)
        assert len(reply.results) == len(images)
        assert reply.model.version == "tiny-7"
        for result, (_, fragment) in zip(reply.results[1:-1], BAD_IMAGES.values(), strict=True):
            assert result.WhichOneof("outcome") == "error"
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert fragment in result.error.message
        for index in (0, -1):
            single = await stub.Embed(embedder_pb2.EmbedRequest(image=images[index]), timeout=5)
            np.testing.assert_allclose(
                reply.results[index].embedding.vector, single.embedding.vector, rtol=1e-5, atol=1e-5
            )
        empty = await stub.EmbedBatch(embedder_pb2.EmbedBatchRequest(), timeout=5)
        assert list(empty.results) == []

    run(settings, body)


def test_bad_images_are_invalid_argument_and_the_service_keeps_serving(settings: Settings) -> None:
    async def body(stub: embedder_pb2_grpc.EmbedderStub, channel: grpc.aio.Channel) -> None:
        for case, (data, fragment) in BAD_IMAGES.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Embed(embedder_pb2.EmbedRequest(image=data), timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
            assert fragment in caught.value.details(), case
        assert len((await stub.Embed(embedder_pb2.EmbedRequest(image=GOOD), timeout=5)).embedding.vector) == DIM
        assert await health_status(channel) == SERVING

    run(settings, body)


def test_batch_limit(settings: Settings) -> None:
    async def body(stub: embedder_pb2_grpc.EmbedderStub, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.EmbedBatch(embedder_pb2.EmbedBatchRequest(images=[GOOD] * 4), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 3 images, got 4" in caught.value.details()

    run(replace(settings, max_batch=3), body)
