"""The embedder behind a small Protocol, and its ONNX Runtime adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fashionsearch.model_contract import preprocess
from fashionsearch.onnx_model import ModelIdentity, OnnxAdapter, OnnxModel


class Embedder(Protocol):
    """What the servicer needs from an embedder."""

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model sees; lets the decoder skip pixels it would throw away."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed RGB images (uint8 HxWx3) in one model call: float32 (N, dim), rows in input order."""
        ...

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One RGB image (uint8 HxWx3) -> its model input row, for embed_prepared."""
        ...

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Embed a stack of prepare() rows in one model call: float32 (N, dim)."""
        ...

    def warm_up(self, batch_size: int = 1) -> None: ...


class OnnxEmbedder(OnnxAdapter):
    """An ONNX model with one (batch, dim) output, compared by Euclidean distance, described by model.json."""

    kind = "embedder"

    def __init__(self, model: OnnxModel) -> None:
        if model.spec.kind != "embedder" or model.spec.embedding is None:
            raise ValueError(f"{model.spec.identity} is a {model.spec.kind}, not an embedder")
        super().__init__(model)
        self._output = model.spec.embedding.output
        self._dim = model.spec.embedding.dim

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_prepared(preprocess(images, self._model.spec.input))

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.asarray(self._model.run(batch)[self._output], dtype=np.float32)
