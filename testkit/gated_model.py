"""A model adapter wrapped so a test can hold a batch inside the model: the requests that follow queue behind it."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from services.classifier.model import OnnxClassifier
from services.embedder.model import OnnxEmbedder
from testkit.waiting import DEADLINE_S

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]


class Gated:
    """Wraps a model adapter: every batch is recorded, and waits at `gate` (when closed) inside the model."""

    def __init__(self, real: OnnxClassifier | OnnxEmbedder) -> None:
        self.real: Any = real  # one of the two: each test calls only what its model has
        self.identity = real.identity
        self.input_size = real.input_size
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)  # warm_up, prepare, dim, classify, embed

    def _enter(self, batch: np.ndarray) -> None:
        self.batches.append(len(batch))
        self.entered.set()
        assert self.gate.wait(DEADLINE_S), "the test never opened the gate"

    def classify_prepared(self, batch, top_k):
        self._enter(batch)
        return self.real.classify_prepared(batch, top_k)

    def embed_prepared(self, batch):
        self._enter(batch)
        return self.real.embed_prepared(batch)
