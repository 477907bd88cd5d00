"""EmbedText / EmbedTextBatch on a real grpc.aio embedder, with the tiny image and text models."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from fashionsearch.model_contract import ModelContractError, ModelSpec
from fashionsearch.text_contract import TextModelSpec, tokenize
from fashionsearch.v1 import embedder_pb2, embedder_pb2_grpc
from services.embedder.server import start
from services.embedder.settings import Settings
from testkit.tiny_models import write_tiny_embedder, write_tiny_text_embedder

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT
Body = Callable[[embedder_pb2_grpc.EmbedderStub], Awaitable[None]]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    image = write_tiny_embedder(root / "embedder", dim=16, version="tiny-7")
    text = write_tiny_text_embedder(root / "text-embedder", ModelSpec.load(image), dim=16)
    return image, text


def run(settings: Settings, body: Body) -> None:
    async def scenario() -> None:
        running = await start(settings)
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                await body(embedder_pb2_grpc.EmbedderStub(channel))
        finally:
            await running.stop(0.5)

    asyncio.run(scenario())


def test_the_text_model_beside_the_image_model_is_found_from_the_environment(models):
    image, text = models
    assert Settings.from_env({"EMBEDDER_MODEL_DIR": str(image)}).text_model_dir == text
    assert (
        Settings.from_env({"EMBEDDER_MODEL_DIR": str(image), "EMBEDDER_TEXT_ENABLED": "false"}).text_model_dir is None
    )
    alone = write_tiny_embedder(image.parent / "alone" / "embedder")
    assert Settings.from_env({"EMBEDDER_MODEL_DIR": str(alone)}).text_model_dir is None


def test_embed_text_answers_what_the_model_computes_and_reads_the_words(models):
    image, text = models

    async def body(stub: embedder_pb2_grpc.EmbedderStub) -> None:
        reply = await stub.EmbedText(embedder_pb2.EmbedTextRequest(query=" Women Blue Kurtas "), timeout=5)
        assert (reply.model.name, reply.image_model.name, reply.image_model.version) == (
            "tiny-text-embedder",
            "tiny-embedder",
            "tiny-7",
        )
        spec = TextModelSpec.load(text)
        import onnxruntime as ort

        session = ort.InferenceSession(str(text / "model.onnx"), providers=["CPUExecutionProvider"])
        expected = session.run(None, {"tokens": tokenize(["Women Blue Kurtas"], spec.tokenizer)})[0][0]
        np.testing.assert_allclose(reply.text.embedding.vector, expected, rtol=1e-5, atol=1e-6)
        assert [(t.field, t.value) for t in reply.text.terms] == [
            ("gender", "Women"),
            ("baseColour", "Blue"),
            ("articleType", "Kurtas"),
        ]
        assert reply.text.word_count == 3 and list(reply.text.unknown_words) == []
        typo = await stub.EmbedText(embedder_pb2.EmbedTextRequest(query="jeens"), timeout=5)
        assert typo.text.terms[0].value == "Jeans" and typo.text.terms[0].corrected

    run(Settings(port=0, host="127.0.0.1", model_dir=image, text_model_dir=text), body)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("x" * 257, "257 characters"),
        ("a\x1bb", "control"),
        ("?!", "no letter"),
        # A script the text model does not read is named as such, not as a query without letters.
        ("\u0642\u0645\u064a\u0635 \u0623\u062d\u0645\u0631", "Arabic script, which the text model does not read"),
        ("\u05d7\u05d5\u05dc\u05e6\u05d4", "Hebrew script"),
        ("\u043a\u0440\u0430\u0441\u043d\u0430\u044f \u0440\u0443\u0431\u0430\u0448\u043a\u0430", "Cyrillic script"),
        ("\u7ea2\u8272\u886c\u886b", "CJK script"),
    ],
)
def test_bad_queries_are_invalid_argument(models, query, message):
    image, text = models

    async def body(stub: embedder_pb2_grpc.EmbedderStub) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.EmbedText(embedder_pb2.EmbedTextRequest(query=query), timeout=5)
        assert caught.value.code() == INVALID and message in caught.value.details()

    run(Settings(port=0, host="127.0.0.1", model_dir=image, text_model_dir=text), body)


def test_batch_gives_one_result_per_query_and_errors_per_item(models):
    image, text = models
    queries = ["red tshirt", "", "navy blue jeans", "x" * 300]

    async def body(stub: embedder_pb2_grpc.EmbedderStub) -> None:
        reply = await stub.EmbedTextBatch(embedder_pb2.EmbedTextBatchRequest(queries=queries), timeout=5)
        kinds = [r.WhichOneof("outcome") for r in reply.results]
        assert kinds == ["text", "error", "text", "error"]
        assert reply.results[1].error.code == INVALID.value[0]
        single = await stub.EmbedText(embedder_pb2.EmbedTextRequest(query="navy blue jeans"), timeout=5)
        np.testing.assert_allclose(reply.results[2].text.embedding.vector, single.text.embedding.vector, atol=1e-6)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.EmbedTextBatch(embedder_pb2.EmbedTextBatchRequest(queries=["red"] * 5), timeout=5)
        assert caught.value.code() == INVALID and "at most 4 queries, got 5" in caught.value.details()

    run(Settings(port=0, host="127.0.0.1", model_dir=image, text_model_dir=text, max_batch=4), body)


def test_without_a_text_model_text_calls_fail_with_failed_precondition(models):
    image, _ = models

    async def body(stub: embedder_pb2_grpc.EmbedderStub) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.EmbedText(embedder_pb2.EmbedTextRequest(query="red"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no text model" in caught.value.details()
        assert len((await stub.EmbedBatch(embedder_pb2.EmbedBatchRequest(), timeout=5)).results) == 0

    run(Settings(port=0, host="127.0.0.1", model_dir=image), body)


def test_a_text_model_for_another_image_embedder_version_is_refused_at_start(models, tmp_path):
    image, _ = models
    other = write_tiny_text_embedder(tmp_path / "text", ("tiny-embedder", "tiny-6"), dim=16)
    settings = Settings(port=0, host="127.0.0.1", model_dir=image, text_model_dir=other)
    with pytest.raises(ModelContractError, match="trained for the image embedder tiny-embedder@tiny-6"):
        asyncio.run(start(settings))
    with pytest.raises(ModelContractError, match="sha256"):
        broken = replace(TextModelSpec.load(other), onnx_sha256="0" * 64, target=TextModelSpec.load(other).target)
        broken = replace(broken, target=replace(broken.target, version="tiny-7"))
        broken.write(other)
        asyncio.run(start(settings))


def test_a_text_model_only_found_beside_that_does_not_fit_is_left_out_and_text_calls_say_why(models, tmp_path):
    image, _ = models
    beside = write_tiny_text_embedder(tmp_path / "text-embedder", ("tiny-embedder", "tiny-6"), dim=16)
    image_copy = write_tiny_embedder(tmp_path / "embedder", dim=16, version="tiny-7")
    settings = Settings.from_env({"EMBEDDER_MODEL_DIR": str(image_copy), "EMBEDDER_PORT": "0"})
    assert settings.text_model_dir == beside and not settings.text_model_required
    settings = replace(settings, host="127.0.0.1")

    async def body(stub: embedder_pb2_grpc.EmbedderStub) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.EmbedText(embedder_pb2.EmbedTextRequest(query="red"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "trained for the image embedder tiny-embedder@tiny-6" in caught.value.details()

    run(settings, body)
    explicit = Settings.from_env({"EMBEDDER_MODEL_DIR": str(image_copy), "EMBEDDER_TEXT_MODEL_DIR": str(beside)})
    assert explicit.text_model_required
    with pytest.raises(ModelContractError, match="tiny-6"):
        asyncio.run(start(replace(explicit, port=0, host="127.0.0.1")))
