"""The classifier behind a small Protocol, and its ONNX Runtime adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fashionsearch.classification import AttributePrediction, Classification, LabelScore
from fashionsearch.model_contract import preprocess
from fashionsearch.model_variants import EmbedderRef
from fashionsearch.onnx_model import ModelIdentity, OnnxAdapter, OnnxModel


class Classifier(Protocol):
    """What the servicer needs from a classifier."""

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model sees; lets the decoder skip pixels it would throw away."""
        ...

    def classify(self, images: Sequence[np.ndarray], top_k: int) -> list[Classification]:
        """Classify RGB images (uint8 HxWx3) in one model call; one Classification per image, in order."""
        ...

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One RGB image (uint8 HxWx3) -> its model input row, for classify_prepared."""
        ...

    def classify_prepared(self, batch: np.ndarray, top_k: Sequence[int]) -> list[Classification]:
        """Classify a stack of prepare() rows in one model call, each row with its own top_k."""
        ...

    @property
    def embedder(self) -> EmbedderRef | None:
        """The embedder whose vectors `analyse_prepared` gives as well (one pass), or None."""
        ...

    def analyse_prepared(self, batch: np.ndarray, top_k: Sequence[int]) -> tuple[list[Classification], np.ndarray]:
        """classify_prepared and the rows' vectors of `embedder` from the same model call; float32 (N, dim), or
        (N, 0) when this classifier has no embedder."""
        ...

    def warm_up(self, batch_size: int = 1) -> None: ...


class OnnxClassifier(OnnxAdapter):
    """A multi-head softmax classifier in ONNX, described by its model.json."""

    kind = "classifier"

    def __init__(self, model: OnnxModel) -> None:
        if model.spec.kind != "classifier":
            raise ValueError(f"{model.spec.identity} is a {model.spec.kind}, not a classifier")
        super().__init__(model)
        self._heads = model.spec.outputs

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(head.attribute for head in self._heads)

    def classify(self, images: Sequence[np.ndarray], top_k: int) -> list[Classification]:
        if not images:
            return []
        return self.classify_prepared(preprocess(images, self._model.spec.input), [top_k] * len(images))

    @property
    def embedder(self) -> EmbedderRef | None:
        return self._model.embedder

    def classify_prepared(self, batch: np.ndarray, top_k: Sequence[int]) -> list[Classification]:
        return self.analyse_prepared(batch, top_k)[0]

    def analyse_prepared(self, batch: np.ndarray, top_k: Sequence[int]) -> tuple[list[Classification], np.ndarray]:
        vectors = self._model.variant.embedding
        if len(batch) == 0:
            return [], np.zeros((0, vectors.dim if vectors else 0), dtype=np.float32)
        outputs = self._model.run(batch)
        embedded = (
            np.asarray(outputs[vectors.output], dtype=np.float32)
            if vectors is not None
            else np.zeros((len(batch), 0), dtype=np.float32)
        )
        return self._classifications(outputs, top_k), embedded

    def _classifications(self, outputs: dict[str, np.ndarray], top_k: Sequence[int]) -> list[Classification]:
        per_head = []
        for head in self._heads:
            probabilities = outputs[head.name]
            # Stable sort, so equal probabilities keep the model's label order.
            order = np.argsort(-probabilities, axis=1, kind="stable")[:, : min(max(top_k), len(head.labels))]
            # As Python lists: the same floats as float(probabilities[row, i]), without a NumPy scalar per label.
            top = np.take_along_axis(probabilities, order, axis=1)
            per_head.append((head, order.tolist(), top.tolist()))
        results = []
        for row, k in enumerate(top_k):
            attributes = tuple(
                AttributePrediction(
                    head.attribute,
                    tuple(LabelScore(head.labels[i], p) for i, p in zip(order[row][:k], top[row][:k], strict=True)),
                )
                for head, order, top in per_head
            )
            results.append(Classification.of(attributes))
        return results
