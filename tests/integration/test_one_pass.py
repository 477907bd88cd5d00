"""One trunk pass per photo: a classifier serving the embedder's projection on its trunk answers searches and
catalogue writes alone; the gateway falls back to both services when the classifier has no vectors, or vectors of
another embedder than the one running. Tiny models sharing their trunk (testkit.tiny_models.write_tiny_one_pass)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from fashionsearch.images import ImageLimits, decode_pixels
from fashionsearch.v1 import classifier_pb2, classifier_pb2_grpc, gateway_pb2
from services.classifier.server import start as start_classifier
from services.classifier.settings import Settings as ClassifierSettings
from services.embedder import server as embedder_server
from services.embedder.model import OnnxEmbedder
from services.embedder.settings import Settings as EmbedderSettings
from testkit.gateway_stack import Stack, jpeg, start_stack
from testkit.service_helpers import GOOD
from testkit.tiny_models import write_tiny_embedder, write_tiny_one_pass

pytestmark = pytest.mark.integration

PHOTOS = [
    jpeg(rgb, stripe=stripe) for rgb in ((200, 30, 30), (20, 30, 90), (30, 150, 60)) for stripe in (None, (0, 0, 0))
]


class CountingEmbedder:
    """The tiny embedder, counting the photos it embeds (the gateway's one pass should send it none)."""

    def __init__(self, real: OnnxEmbedder) -> None:
        self.real = real
        self.photos = 0

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.real, name)  # identity, input_size, dim, prepare, warm_up

    def embed(self, images):  # type: ignore[no-untyped-def]
        self.photos += len(images)
        return self.real.embed(images)

    def embed_prepared(self, batch):  # type: ignore[no-untyped-def]
        self.photos += len(batch)
        return self.real.embed_prepared(batch)


def _stack(
    tmp_path: Path, classifier_dir: Path, embedder_dir: Path, **gateway: object
) -> tuple[Stack, CountingEmbedder]:
    counting = CountingEmbedder(OnnxEmbedder.from_dir(embedder_dir))

    async def start_embedder(settings: EmbedderSettings):  # type: ignore[no-untyped-def]
        return await embedder_server.start(settings, embedder=counting)  # type: ignore[arg-type]

    stack = start_stack(
        tmp_path, classifier_dir=classifier_dir, embedder_dir=embedder_dir, embedder_start=start_embedder, **gateway
    )
    return stack, counting


def _items() -> list[gateway_pb2.CatalogueItem]:
    # No subCategory: the classifier's prediction fills it in.
    return [
        gateway_pb2.CatalogueItem(id=10 + i, image=photo, payload=gateway_pb2.ItemPayload(name=f"item {i}"))
        for i, photo in enumerate(PHOTOS)
    ]


def _search(stack: Stack, photo: bytes) -> gateway_pb2.SearchResponse:
    request = gateway_pb2.SearchRequest(image=photo, top_k=3, filter_mode=gateway_pb2.FILTER_MODE_NONE)
    return stack.stub.Search(request, timeout=10)


def _analysed(path: str) -> float:
    return REGISTRY.get_sample_value("fashionsearch_photos_analysed_total", {"path": path}) or 0.0


def _answers(stack: Stack) -> list[list[tuple[int, float]]]:
    return [[(h.id, round(h.distance, 4)) for h in _search(stack, p).hits] for p in PHOTOS]


def test_the_classifier_answers_with_the_embedders_vector(tmp_path: Path) -> None:
    classifier_dir, embedder_dir = write_tiny_one_pass(tmp_path)
    expected = OnnxEmbedder.from_dir(embedder_dir)

    async def scenario() -> None:
        running = await start_classifier(ClassifierSettings(port=0, host="127.0.0.1", model_dir=classifier_dir))
        off = await start_classifier(
            ClassifierSettings(port=0, host="127.0.0.1", model_dir=classifier_dir, one_pass=False)
        )
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = classifier_pb2_grpc.ClassifierStub(channel)
                batch = await stub.ClassifyBatch(
                    classifier_pb2.ClassifyBatchRequest(images=[GOOD, b"not an image"], with_embedding=True), timeout=5
                )
                assert (batch.embedder_model.name, batch.embedder_model.version) == ("tiny-embedder", "tiny-1")
                assert batch.embedder_model.onnx_sha256 == str(expected.identity.sha256)
                assert batch.results[1].WhichOneof("outcome") == "error"
                vector = np.asarray(batch.results[0].classification.embedding, dtype=np.float32)
                pixels = decode_pixels(GOOD, ImageLimits(), expected.input_size)
                assert np.allclose(vector, expected.embed([pixels])[0], atol=1e-5)
                one = await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD, with_embedding=True), timeout=5)
                assert np.allclose(one.classification.embedding, vector, atol=1e-6)
                plain = await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD), timeout=5)
                assert not plain.classification.embedding and not plain.HasField("embedder_model")
            async with grpc.aio.insecure_channel(off.address) as channel:
                stub = classifier_pb2_grpc.ClassifierStub(channel)
                reply = await stub.Classify(classifier_pb2.ClassifyRequest(image=GOOD, with_embedding=True), timeout=5)
                assert not reply.classification.embedding and not reply.HasField("embedder_model")
                assert reply.model.onnx_sha256 != one.model.onnx_sha256  # model.onnx, not the one-pass file
        finally:
            await running.stop(0)
            await off.stop(0)

    asyncio.run(scenario())


def test_searches_and_writes_skip_the_embedder_and_find_what_two_calls_find(tmp_path: Path) -> None:
    classifier_dir, embedder_dir = write_tiny_one_pass(tmp_path / "models")
    stack, embedder = _stack(tmp_path / "one", classifier_dir, embedder_dir)
    try:
        _search(stack, PHOTOS[0])  # the first search asks both services: is the classifier's vector the embedder's?
        learned = embedder.photos
        one_before, two_before = _analysed("one_pass"), _analysed("two_calls")
        replies = stack.upsert(_items())
        assert all(not r.HasField("error") for r in replies)
        one_pass = _answers(stack)
        assert embedder.photos == learned  # no photo went to the embedder after the first search
        # what the metric tells ops: every write and search since was one pass
        assert _analysed("one_pass") - one_before == 2 * len(PHOTOS)
        assert _analysed("two_calls") == two_before
        stored = stack.stub.GetItem(gateway_pb2.GetItemRequest(id=10), timeout=10).payload
        assert stored.sub_category  # predicted by the classifier in the same pass
    finally:
        stack.close()

    two, two_embedder = _stack(tmp_path / "two", classifier_dir, embedder_dir, one_pass=False)
    try:
        two.upsert(_items())
        assert _answers(two) == one_pass
        assert two_embedder.photos >= 2 * len(PHOTOS)  # every write and every search
    finally:
        two.close()


def test_falls_back_to_two_calls_without_a_shared_trunk_or_with_another_embedder(tmp_path: Path) -> None:
    classifier_dir, embedder_dir = write_tiny_one_pass(tmp_path / "models")
    upgraded = write_tiny_embedder(tmp_path / "upgraded", version="tiny-2")  # not the one the classifier carries
    stack, embedder = _stack(tmp_path / "other", classifier_dir, upgraded)
    try:
        stack.upsert(_items())
        before, two_before = embedder.photos, _analysed("two_calls")
        answers = _answers(stack)
        assert embedder.photos - before == len(PHOTOS)  # every search asked the running embedder
        assert _analysed("two_calls") - two_before == len(PHOTOS)
        stats = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=10)
        assert stats.stored_embedder.version == "tiny-2"
    finally:
        stack.close()
    # The plain tiny classifier (no one-pass variant): the same answers, from two calls each.
    plain, plain_embedder = _stack(tmp_path / "plain", None, upgraded)  # type: ignore[arg-type]
    try:
        plain.upsert(_items())
        before = plain_embedder.photos
        assert _answers(plain) == answers
        assert plain_embedder.photos - before == len(PHOTOS)
    finally:
        plain.close()
