"""Two readings of one product (its classification and vector) averaged into one, where a search reads it twice:

- the flip test of outfit search's cut-outs: each product is read as it is and mirrored, as the detector's flip test
  averages its maps (fashionsearch/detection.py). A product and its mirror image are the same product, so what
  differs between the two readings is the models' noise; averaging it out finds more of an outfit's products
  (bench/README.md has the measurement) for twice the cut-outs' model work;
- Search with crop=auto, where the detector's main product is cut out of a scene: the cut-out and the whole photo.
  Each fails in its own way (a cut-out framed wrong or of the wrong product, a whole photo where the product is
  small among its background), and their average read better than either on the robustness suite's validation
  split (reports/robustness/crop-auto.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fashionsearch.classification import AttributePrediction, LabelScore
from services.gateway.domain import Classification, Embedding

Reading = tuple[Classification, Embedding]


def merged(readings: Sequence[Reading]) -> list[Reading]:
    """The readings of n cut-outs followed by those of their n mirror images -> the n averaged readings."""
    if len(readings) % 2:
        raise ValueError(f"the flip test needs each cut-out's two readings, got {len(readings)}")
    half = len(readings) // 2
    return [average(plain, mirror) for plain, mirror in zip(readings[:half], readings[half:], strict=True)]


def average(plain: Reading, mirror: Reading) -> Reading:
    """One reading from two of the same product. Each attribute's labels: the union of both top lists, each label's
    probability the mean of the two (a label outside one list counts 0 there: the list holds the probable ones), as
    many as the plain reading lists; the name and keywords follow the new top labels. The vector: the mean of the
    two, at their mean length (the embedder's vectors are unit length). Readings of two models (an upgrade between
    the calls) are not mixed: the plain one is kept."""
    (classification, embedding), (other, other_embedding) = plain, mirror
    if classification.model != other.model or embedding.model != other_embedding.model:
        return plain
    others = {a.attribute: a for a in other.attributes}
    attributes = [_average_labels(a, others.get(a.attribute)) for a in classification.attributes]
    vector = _mean_vector(embedding.vector, other_embedding.vector)
    averaged_embedding = Embedding(vector=vector, model=embedding.model)
    carries_vector = classification.embedding is not None
    return (
        Classification.of(
            attributes,
            model=classification.model,
            embedding=averaged_embedding if carries_vector else None,
        ),
        averaged_embedding,
    )


def _average_labels(plain: AttributePrediction, mirror: AttributePrediction | None) -> AttributePrediction:
    if mirror is None:
        return plain
    probabilities: dict[str, float] = {}
    for reading in (plain, mirror):
        for label in reading.labels:
            probabilities[label.label] = probabilities.get(label.label, 0.0) + label.probability / 2
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])[: len(plain.labels)]
    return AttributePrediction(plain.attribute, tuple(LabelScore(label, p) for label, p in ranked))


def _mean_vector(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = (a.astype(np.float32) + b.astype(np.float32)) / 2
    length = float(np.linalg.norm(mean))
    if length == 0.0:
        return a
    target = (float(np.linalg.norm(a)) + float(np.linalg.norm(b))) / 2
    out: np.ndarray = (mean * (target / length)).astype(np.float32)
    return out
