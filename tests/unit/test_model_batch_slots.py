"""A model service's batch inference is bounded: however many ClassifyBatch / EmbedBatch calls arrive at once, at
most max_concurrent_batches model calls run together (each holds a batch's activations: 4 at once of 64 photos took
the real embedder from 346 MB to 955 MB, bench/batch_memory.py). The servicers share
fashionsearch.decode_threads.BatchSlots and the *_MAX_CONCURRENT_BATCHES setting (model_service.py)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from fashionsearch.classification import Classification
from fashionsearch.images import ImageLimits
from fashionsearch.onnx_model import ModelIdentity
from fashionsearch.v1 import classifier_pb2, embedder_pb2
from services.classifier.servicer import ClassifierServicer
from services.classifier.settings import Settings as ClassifierSettings
from services.detector.settings import Settings as DetectorSettings
from services.embedder.servicer import EmbedderServicer
from services.embedder.settings import Settings as EmbedderSettings

#: How long a model call waits for a second one to join it: long enough that concurrent calls that are let through
#: meet, and only paid by calls that are (rightly) kept apart.
MEET_S = 1.0


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 40), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


class Meeting:
    """Each model call waits (up to MEET_S) for another to be running at the same time and records the most seen."""

    identity = ModelIdentity(name="meeting", version="1", sha256="0" * 64)
    input_size = (30, 40)

    def __init__(self) -> None:
        self._inside = 0
        self.most_at_once = 0
        self._changed = threading.Condition()

    def meet(self) -> None:
        with self._changed:
            self._inside += 1
            self.most_at_once = max(self.most_at_once, self._inside)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._inside >= 2, timeout=MEET_S)
            self._inside -= 1


class MeetingEmbedder(Meeting):
    dim = 2

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        self.meet()
        return np.zeros((len(images), self.dim), dtype=np.float32)


class MeetingClassifier(Meeting):
    embedder = None

    def classify(self, images: Sequence[np.ndarray], top_k: int) -> list[Classification]:
        self.meet()
        return [Classification(attributes=(), suggested_name="", keywords=()) for _ in images]


async def _three_at_once(call, request):  # type: ignore[no-untyped-def]
    return await asyncio.gather(*(call(request, None) for _ in range(3)))


@pytest.mark.parametrize(("limit", "expected"), [(1, 1), (2, 2)])
def test_concurrent_embed_batch_calls_run_at_most_the_configured_model_calls(limit: int, expected: int) -> None:
    embedder = MeetingEmbedder()
    servicer = EmbedderServicer(embedder, ImageLimits(), max_concurrent_batches=limit)  # type: ignore[arg-type]
    request = embedder_pb2.EmbedBatchRequest(images=[_jpeg()] * 3)
    replies = asyncio.run(_three_at_once(servicer.EmbedBatch, request))
    assert all(len(r.results) == 3 and r.results[0].HasField("embedding") for r in replies)
    assert embedder.most_at_once == expected


@pytest.mark.parametrize(("limit", "expected"), [(1, 1), (2, 2)])
def test_concurrent_classify_batch_calls_run_at_most_the_configured_model_calls(limit: int, expected: int) -> None:
    classifier = MeetingClassifier()
    servicer = ClassifierServicer(classifier, ImageLimits(), max_concurrent_batches=limit)  # type: ignore[arg-type]
    request = classifier_pb2.ClassifyBatchRequest(images=[_jpeg()] * 3)
    replies = asyncio.run(_three_at_once(servicer.ClassifyBatch, request))
    assert all(len(r.results) == 3 and r.results[0].HasField("classification") for r in replies)
    assert classifier.most_at_once == expected


@pytest.mark.parametrize(
    ("settings", "prefix"),
    [(ClassifierSettings, "CLASSIFIER_"), (EmbedderSettings, "EMBEDDER_"), (DetectorSettings, "DETECTOR_")],
)
def test_the_bound_is_a_setting_of_two_by_default(settings: type, prefix: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert settings().max_concurrent_batches == 2
    env = {f"{prefix}MAX_CONCURRENT_BATCHES": "3", f"{prefix}MODEL_DIR": str(tmp_path)}
    assert settings.from_env(env).max_concurrent_batches == 3
