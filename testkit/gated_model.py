"""A model adapter wrapped so a test can hold a batch inside the model: the requests that follow queue behind it."""

from __future__ import annotations

import threading
from typing import Any

from services.classifier.model import OnnxClassifier
from services.embedder.model import OnnxEmbedder
from testkit.waiting import DEADLINE_S

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]


class Gated:
    """Wraps a model adapter: every batch is recorded, waits at `gate` (when closed) inside the model, and is counted
    in `finished` once the model has answered it."""

    def __init__(self, real: OnnxClassifier | OnnxEmbedder) -> None:
        self.real: Any = real  # one of the two: each test calls only what its model has
        self.identity = real.identity
        self.input_size = real.input_size
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.finished = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)  # warm_up, prepare, dim, classify, embed

    def run(self, size: int, call: Any, *args: Any) -> Any:
        """Record a batch of `size`, hold it at the gate, then run `call(*args)` on the real model."""
        self.batches.append(size)
        self.entered.set()
        try:
            assert self.gate.wait(DEADLINE_S), "the test never opened the gate"
            return call(*args)
        finally:
            self.finished += 1

    def classify_prepared(self, batch, top_k):
        return self.run(len(batch), self.real.classify_prepared, batch, top_k)

    def embed_prepared(self, batch):
        return self.run(len(batch), self.real.embed_prepared, batch)
