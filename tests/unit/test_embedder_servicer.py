"""The embedder's batch inference is bounded: however many EmbedBatch calls arrive at once, at most
max_concurrent_batches model calls run together (each holds a batch's activations: 4 at once of 64 photos took the
real embedder from 346 MB to 955 MB, bench/embedder_batch_memory.py)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from fashionsearch.images import ImageLimits
from fashionsearch.onnx_model import ModelIdentity
from fashionsearch.v1 import embedder_pb2
from services.embedder.servicer import EmbedderServicer
from services.embedder.settings import Settings

#: How long a model call waits for a second one to join it: long enough that concurrent calls that are let through
#: meet, and only paid by calls that are (rightly) kept apart.
MEET_S = 1.0


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 40), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


class MeetingEmbedder:
    """Each embed() waits (up to MEET_S) for another to be running at the same time and records the most seen."""

    identity = ModelIdentity(name="meeting", version="1", sha256="0" * 64)
    input_size = (30, 40)
    dim = 2

    def __init__(self) -> None:
        self._inside = 0
        self.most_at_once = 0
        self._changed = threading.Condition()

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        with self._changed:
            self._inside += 1
            self.most_at_once = max(self.most_at_once, self._inside)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._inside >= 2, timeout=MEET_S)
            self._inside -= 1
        return np.zeros((len(images), self.dim), dtype=np.float32)


@pytest.mark.parametrize(("limit", "expected"), [(1, 1), (2, 2)])
def test_concurrent_embed_batch_calls_run_at_most_the_configured_model_calls(limit: int, expected: int) -> None:
    embedder = MeetingEmbedder()
    servicer = EmbedderServicer(embedder, ImageLimits(), max_concurrent_batches=limit)  # type: ignore[arg-type]
    request = embedder_pb2.EmbedBatchRequest(images=[_jpeg()] * 3)

    async def calls() -> list[embedder_pb2.EmbedBatchResponse]:
        return await asyncio.gather(*(servicer.EmbedBatch(request, None) for _ in range(3)))  # type: ignore[arg-type]

    replies = asyncio.run(calls())
    assert all(len(r.results) == 3 and r.results[0].HasField("embedding") for r in replies)
    assert embedder.most_at_once == expected


def test_the_bound_is_a_setting_of_one_by_default() -> None:
    assert Settings().max_concurrent_batches == 1
    assert Settings.from_env({"EMBEDDER_MAX_CONCURRENT_BATCHES": "3"}).max_concurrent_batches == 3
