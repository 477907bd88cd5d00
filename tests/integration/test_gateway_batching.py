"""The gateway's clients sending concurrent calls as one batch call (GATEWAY_BATCH_MAX_SIZE), against real servers.

A gate holds a batch inside the classifier's model, so the next calls queue in the client and go out together.
Checked: one ClassifyBatch / EmbedBatch for the queued calls, answers equal to calls sent alone, a bad image fails
alone, a call past its deadline leaves the queue, and a service that is down fails each call of a batch fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc.aio
import pytest

from fashionsearch.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.classifier.model import OnnxClassifier
from services.classifier.server import start as start_classifier
from services.classifier.settings import Settings as ClassifierSettings
from services.embedder.server import start as start_embedder
from services.embedder.settings import Settings as EmbedderSettings
from services.gateway.clients import GrpcClassifier, GrpcEmbedder
from testkit.gated_model import COLOURS, Gated
from testkit.service_helpers import BAD_IMAGES, jpeg
from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder
from testkit.waiting import DEADLINE_S, until

pytestmark = pytest.mark.integration

MESSAGE_BYTES = 4 * 1024 * 1024


class GatedBatches(Gated):
    """Gated, also for the batch RPC (which calls classify on the decoded images)."""

    def classify(self, images, top_k):  # type: ignore[no-untyped-def]
        return self.run(len(images), self.real.classify, images, top_k)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_classifier(tmp_path_factory.mktemp("classifier"))


def labels(classification) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(a.attribute, a.labels[0].label) for a in classification.attributes]


def with_gated_classifier(
    classifier_dir: Path,
    body: Callable[[GatedBatches, grpc.aio.Channel], Awaitable[None]],
    max_concurrent_batches: int = 1,
) -> None:
    """Run `body(model, channel)` against a classifier server of its own whose model is gated."""
    model = GatedBatches(OnnxClassifier.from_dir(classifier_dir))
    settings = ClassifierSettings(
        port=0,
        host="127.0.0.1",
        model_dir=classifier_dir,
        grace_s=0.5,
        max_concurrent_batches=max_concurrent_batches,
    )

    async def scenario() -> None:
        running = await start_classifier(settings, model)  # type: ignore[arg-type]
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                await body(model, channel)
        finally:
            model.gate.set()
            await running.stop(settings.grace_s)

    asyncio.run(scenario())


def test_queued_calls_go_out_as_one_batch_call_and_a_bad_image_fails_alone(classifier_dir: Path) -> None:
    images = [jpeg(c) for c in COLOURS]
    bad, fragment = BAD_IMAGES["non-image bytes"]

    async def scenario(model: GatedBatches, channel: grpc.aio.Channel) -> None:
        batched = GrpcClassifier(channel, timeout_s=10, batch_max_size=16, max_message_bytes=MESSAGE_BYTES)
        alone = GrpcClassifier(channel, timeout_s=10, batch_max_size=1)
        model.gate.clear()
        first = asyncio.ensure_future(batched.classify(jpeg("black")))
        assert await asyncio.to_thread(model.entered.wait, DEADLINE_S)
        model.batches.clear()
        queued = [asyncio.ensure_future(batched.classify(image)) for image in [*images, bad]]
        await until(lambda: batched.batching.queued == len(queued), "every call queued behind the held one")
        model.gate.set()
        await first
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        assert model.batches == [len(images)], model.batches  # one model call: the bad image never got there
        assert isinstance(outcomes[-1], InvalidArgument) and fragment in outcomes[-1].message
        for image, outcome in zip(images, outcomes[:-1], strict=True):
            single = await alone.classify(image)
            assert labels(outcome) == labels(single)
            assert outcome.model == single.model
        await batched.batching.close()

    with_gated_classifier(classifier_dir, scenario)


def test_two_batch_calls_in_flight_run_in_the_classifier_at_once_and_the_rest_queue(classifier_dir: Path) -> None:
    """GATEWAY_BATCH_IN_FLIGHT=2 with CLASSIFIER_MAX_CONCURRENT_BATCHES=2: a second batch call reaches the model
    while the first is held there; the calls after them queue in the client and go out as one batch."""
    images = [jpeg(c) for c in COLOURS]

    async def scenario(model: GatedBatches, channel: grpc.aio.Channel) -> None:
        client = GrpcClassifier(
            channel, timeout_s=DEADLINE_S, batch_max_size=16, batch_in_flight=2, max_message_bytes=MESSAGE_BYTES
        )
        model.gate.clear()
        model.batches.clear()
        first = asyncio.ensure_future(client.classify(jpeg("black")))
        await until(lambda: model.batches == [1], "the first call held in the model")
        second = asyncio.ensure_future(client.classify(jpeg("white")))
        await until(lambda: model.batches == [1, 1], "a second batch call in the model at the same time")
        queued = [asyncio.ensure_future(client.classify(image)) for image in images]
        await until(lambda: client.batching.queued == len(images), "the rest queued behind the two in flight")
        model.gate.set()
        await asyncio.gather(first, second, *queued)
        assert model.batches == [1, 1, len(images)], model.batches
        await client.batching.close()

    with_gated_classifier(classifier_dir, scenario, max_concurrent_batches=2)


def test_a_queued_call_keeps_its_own_deadline(classifier_dir: Path) -> None:
    async def scenario(model: GatedBatches, channel: grpc.aio.Channel) -> None:
        # Long enough for the first call to reach the model on a busy machine; the gate holds it far longer.
        timeout_s = 2.0
        client = GrpcClassifier(channel, timeout_s=timeout_s, batch_max_size=16, max_message_bytes=MESSAGE_BYTES)
        model.gate.clear()
        first = asyncio.ensure_future(client.classify(jpeg("black")))
        assert await asyncio.to_thread(model.entered.wait, DEADLINE_S)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="the classifier did not answer in time"):
            await client.classify(jpeg("red"))  # queued behind the held batch, then out of time
        # Its own deadline ended it, while the batch ahead of it was still held inside the model.
        assert timeout_s * 0.9 <= time.monotonic() - started and model.finished == 0
        with pytest.raises(DeadlineExceeded):
            await first
        # What is still inside the server (the held batch, perhaps the late call sent after it) goes when the
        # gate opens at the end: this server is not used again.
        await client.batching.close()

    with_gated_classifier(classifier_dir, scenario)


def test_a_cancelled_call_leaves_the_queue(classifier_dir: Path) -> None:
    async def scenario(model: GatedBatches, channel: grpc.aio.Channel) -> None:
        patient = GrpcClassifier(channel, timeout_s=DEADLINE_S, batch_max_size=16, max_message_bytes=MESSAGE_BYTES)
        model.gate.clear()
        held = asyncio.ensure_future(patient.classify(jpeg("black")))
        assert await asyncio.to_thread(model.entered.wait, DEADLINE_S)
        model.batches.clear()
        leaving = asyncio.ensure_future(patient.classify(jpeg("red")))
        staying = asyncio.ensure_future(patient.classify(jpeg("blue")))
        await until(lambda: patient.batching.queued == 2, "both calls queued behind the held one")
        leaving.cancel()  # its search was cancelled by its caller
        await until(lambda: patient.batching.stats.left == 1, "the cancelled call leaving the queue")
        model.gate.set()
        await held
        assert labels(await staying)
        assert model.batches == [1], model.batches  # the batch after the held one ran without it
        assert patient.batching.stats.left == 1
        await patient.batching.close()

    with_gated_classifier(classifier_dir, scenario)


def test_a_service_that_is_down_fails_each_call_of_a_batch_fast(tmp_path: Path) -> None:
    settings = EmbedderSettings(port=0, host="127.0.0.1", model_dir=write_tiny_embedder(tmp_path), grace_s=0.5)

    async def scenario() -> None:
        running = await start_embedder(settings)
        address = running.address
        async with grpc.aio.insecure_channel(address) as channel:
            timeout_s = 20.0
            client = GrpcEmbedder(channel, timeout_s=timeout_s, batch_max_size=16, max_message_bytes=MESSAGE_BYTES)
            vectors = await asyncio.gather(*(client.embed(jpeg(c)) for c in COLOURS))
            assert len({v.vector.tobytes() for v in vectors}) == len(COLOURS)
            await running.stop(0)
            started = time.monotonic()
            outcomes = await asyncio.gather(*(client.embed(jpeg(c)) for c in COLOURS), return_exceptions=True)
            assert time.monotonic() - started < timeout_s / 2  # failed fast, not at the deadline
            assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
            assert len({id(o) for o in outcomes}) == len(outcomes)  # each call its own error
            await client.batching.close()

    asyncio.run(scenario())
