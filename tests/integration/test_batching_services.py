"""Dynamic batching inside the real classifier and embedder servers (grpc.aio on free ports, tiny ONNX models).

A gate holds one batch inside the model, so the next requests queue up behind it and run as one batch; the
wrapped models record the batches they see. Checked: requests with different deadlines, a cancelled request and
a bad image inside a batch; batched answers equal unbatched ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from fashionsearch.images import decode_pixels
from fashionsearch.v1 import classifier_pb2, classifier_pb2_grpc, embedder_pb2, embedder_pb2_grpc
from services.classifier.model import OnnxClassifier
from services.classifier.server import start as start_classifier
from services.classifier.settings import Settings as ClassifierSettings
from services.embedder.model import OnnxEmbedder
from services.embedder.server import start as start_embedder
from services.embedder.settings import Settings as EmbedderSettings
from testkit.gated_model import COLOURS, Gated
from testkit.service_helpers import BAD_IMAGES, GOOD, batcher_of, jpeg
from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder
from testkit.waiting import DEADLINE_S, until

pytestmark = pytest.mark.integration

#: Long enough that the queued requests always share a batch, whatever the machine's load.
DELAY_MS = 200.0


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_classifier(tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_embedder(tmp_path_factory.mktemp("embedder"), dim=16)


def classifier_settings(model_dir: Path, delay_ms: float = DELAY_MS) -> ClassifierSettings:
    return ClassifierSettings(
        port=0, host="127.0.0.1", model_dir=model_dir, grace_s=0.5, batch_max_delay_ms=delay_ms, batch_max_size=16
    )


def decoded(colour: str) -> np.ndarray:
    return decode_pixels(jpeg(colour))


async def hold_the_model(model: Gated, call: asyncio.Future) -> None:  # type: ignore[type-arg]
    """Close the gate and wait until `call` is inside the model; what comes next queues behind it."""
    model.gate.clear()
    model.entered.clear()
    assert await asyncio.to_thread(model.entered.wait, DEADLINE_S)
    model.batches.clear()
    assert not call.done()


def test_requests_with_different_deadlines_and_a_cancelled_one_in_one_batch(classifier_dir: Path) -> None:
    settings = classifier_settings(classifier_dir)
    model = Gated(OnnxClassifier.from_dir(classifier_dir))

    async def scenario() -> None:
        running = await start_classifier(settings, model)  # type: ignore[arg-type]
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = classifier_pb2_grpc.ClassifierStub(channel)

                def classify(colour: str, timeout: float):  # type: ignore[no-untyped-def]
                    request = classifier_pb2.ClassifyRequest(image=jpeg(colour), top_k=2)
                    return stub.Classify(request, timeout=timeout)

                batcher = batcher_of(running)
                first = asyncio.ensure_future(classify("red", 10))
                await hold_the_model(model, first)
                short = classify("blue", 0.3)  # its deadline passes while it waits for the model
                cancelled = classify("green", 10)
                long_calls = [asyncio.ensure_future(classify(c, 10)) for c in ("yellow", "purple")]
                short_task, cancelled_task = asyncio.ensure_future(short), asyncio.ensure_future(cancelled)
                # All four queued behind the held call (the short one may already have given up, on a busy machine).
                await until(lambda: batcher.queued + short_task.done() == 4, "the calls queued behind the held one")
                cancelled.cancel()
                with pytest.raises(grpc.aio.AioRpcError) as late:
                    await short_task
                assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                with pytest.raises(asyncio.CancelledError):
                    await cancelled_task
                await until(lambda: batcher.queued == 2, "the cancelled and the late call leaving the queue")
                model.gate.set()
                replies = await asyncio.gather(first, *long_calls)
                # The two that stayed ran together, without the two that left.
                assert model.batches == [2], model.batches
                for reply, colour in zip(replies[1:], ("yellow", "purple"), strict=True):
                    alone = OnnxClassifier.classify(model.real, [np.asarray(decoded(colour))], 2)[0]
                    assert reply.classification.suggested_name == alone.suggested_name
                    got = [(s.label, s.probability) for a in reply.classification.attributes for s in a.labels]
                    want = [(s.label, s.probability) for a in alone.attributes for s in a.labels]
                    assert [label for label, _ in got] == [label for label, _ in want]
                    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=1e-5)
                # The service goes on batching.
                more = await asyncio.gather(*(classify(c, 10) for c in COLOURS))
                assert all(r.classification.attributes for r in more)
        finally:
            await running.stop(settings.grace_s)

    asyncio.run(scenario())


def test_a_bad_image_inside_a_batch_fails_alone(embedder_dir: Path) -> None:
    settings = EmbedderSettings(
        port=0, host="127.0.0.1", model_dir=embedder_dir, grace_s=0.5, batch_max_delay_ms=DELAY_MS
    )
    model = Gated(OnnxEmbedder.from_dir(embedder_dir))
    bad_cases = list(BAD_IMAGES.items())

    async def scenario() -> None:
        running = await start_embedder(settings, model)  # type: ignore[arg-type]
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = embedder_pb2_grpc.EmbedderStub(channel)

                def embed(image: bytes):  # type: ignore[no-untyped-def]
                    return asyncio.ensure_future(stub.Embed(embedder_pb2.EmbedRequest(image=image), timeout=10))

                batcher = batcher_of(running)
                first = embed(GOOD)
                await hold_the_model(model, first)
                good = [embed(jpeg(c)) for c in COLOURS]
                bad = [embed(data) for _, (data, _) in bad_cases]
                await until(lambda: all(task.done() for task in bad), "the bad images refused while decoding")
                await until(lambda: batcher.queued == len(good), "the good images decoded and queued")
                model.gate.set()
                await first
                replies = await asyncio.gather(*good)
                for task, (case, (_, fragment)) in zip(bad, bad_cases, strict=True):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await task
                    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
                    assert fragment in refused.value.details(), case
                # The good images shared one model call; the bad ones never reached the model.
                assert model.batches == [len(COLOURS)], model.batches
                alone = model.real.embed([decoded(c) for c in COLOURS])
                for reply, vector in zip(replies, alone, strict=True):
                    np.testing.assert_allclose(reply.embedding.vector, vector, rtol=1e-5, atol=1e-5)
        finally:
            await running.stop(settings.grace_s)

    asyncio.run(scenario())


def test_concurrent_calls_are_batched_and_answer_like_unbatched_ones(classifier_dir: Path) -> None:
    """24 calls queued behind a held one share one model call, and each answer equals its call with batching off."""
    on = Gated(OnnxClassifier.from_dir(classifier_dir))
    images = [jpeg(c, size=(60 + i, 80)) for i, c in enumerate(COLOURS * 4)]

    async def answers(settings: ClassifierSettings, model: Gated) -> list[classifier_pb2.ClassifyResponse]:
        running = await start_classifier(settings, model)  # type: ignore[arg-type]
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = classifier_pb2_grpc.ClassifierStub(channel)

                def classify(image: bytes):  # type: ignore[no-untyped-def]
                    return asyncio.ensure_future(
                        stub.Classify(classifier_pb2.ClassifyRequest(image=image, top_k=3), timeout=DEADLINE_S)
                    )

                if not settings.batch_policy.enabled:
                    return list(await asyncio.gather(*(classify(image) for image in images)))
                batcher = batcher_of(running)
                first = classify(images[0])
                await hold_the_model(model, first)
                rest = [classify(image) for image in images[1:]]
                await until(lambda: batcher.queued == len(rest), "the other calls queued behind the first")
                model.gate.set()
                return [await first, *await asyncio.gather(*rest)]
        finally:
            await running.stop(settings.grace_s)

    async def scenario() -> None:
        batched = await answers(classifier_settings(classifier_dir, delay_ms=20), on)
        off = Gated(OnnxClassifier.from_dir(classifier_dir))
        single = await answers(replace(classifier_settings(classifier_dir), batch_max_delay_ms=0), off)
        # After the held first call (hold_the_model forgets its batch): the 23 queued ones, cut at batch_max_size 16.
        assert on.batches == [16, len(images) - 1 - 16], on.batches
        assert set(off.batches) == {1}
        for a, b in zip(batched, single, strict=True):
            assert a.classification.suggested_name == b.classification.suggested_name
            for head_a, head_b in zip(a.classification.attributes, b.classification.attributes, strict=True):
                assert [s.label for s in head_a.labels] == [s.label for s in head_b.labels]
                np.testing.assert_allclose(
                    [s.probability for s in head_a.labels], [s.probability for s in head_b.labels], atol=1e-5
                )

    asyncio.run(scenario())
