"""The classifier behind a small Protocol, and its ONNX Runtime adapter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fashionsearch.model_contract import preprocess
from fashionsearch.naming import suggest_keywords, suggest_name
from fashionsearch.onnx_model import ModelIdentity, OnnxAdapter, OnnxModel


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


@dataclass(frozen=True)
class AttributePrediction:
    """The top labels of one attribute head, most probable first."""

    attribute: str
    labels: tuple[LabelScore, ...]


@dataclass(frozen=True)
class Classification:
    """Everything predicted for one image."""

    attributes: tuple[AttributePrediction, ...]
    suggested_name: str
    keywords: tuple[str, ...]


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

    def warm_up(self) -> None: ...


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
        outputs = self._model.run(preprocess(images, self._model.spec.input))
        per_head = []
        for head in self._heads:
            probabilities = outputs[head.name]
            k = min(top_k, len(head.labels))
            # Stable sort, so equal probabilities keep the model's label order.
            order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
            per_head.append((head, probabilities, order))
        results = []
        for row in range(len(images)):
            attributes = tuple(
                AttributePrediction(
                    head.attribute,
                    tuple(LabelScore(head.labels[i], float(probabilities[row, i])) for i in order[row]),
                )
                for head, probabilities, order in per_head
            )
            top = {a.attribute: a.labels[0].label for a in attributes}
            results.append(Classification(attributes, suggest_name(top), tuple(suggest_keywords(top))))
        return results
