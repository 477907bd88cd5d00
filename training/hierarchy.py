"""masterCategory > subCategory > articleType answers that agree: the parent matrices taken from the training data,
the HierarchicalDecoding layer (training.layers) built from them and its article-type temperature fitted on the
validation split, and the share of answers that fit together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from training import data
from training.layers import HierarchicalDecoding
from training.metrics import expected_calibration_error, fit_temperature, softmax, top1_accuracy

# Hierarchical decoding: masterCategory > subCategory > articleType. Independent heads disagree on about 1.5% of
# validation images ("Apparel / Topwear / Casual Shoes"); scoring each article type with its parents' probabilities
# makes the three answers agree and corrects the coarse heads (validation, classifier 4: masterCategory 99.20 ->
# 99.37%, subCategory 96.08 -> 96.31%, articleType 85.06 -> 84.99%).
HIERARCHY = ("masterCategory", "subCategory", "articleType")
HIERARCHY_WEIGHT = 0.5  # parents enter as p ** weight (validation: 0.25 and 0.5 alike; 1.0 lost 0.1 on sub and article)


def hierarchy_matrices(dataset: data.Dataset, labels: Mapping[str, Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(article type -> subCategory, subCategory -> masterCategory) one-hot matrices over the heads' `labels`: each
    class's most common parent among the dataset's rows (a row stays zero when the parent is not a class)."""

    def parents(child: str, parent: str) -> np.ndarray:
        counts = Counter(zip(dataset.labels[child], dataset.labels[parent], strict=True))
        index = {label: i for i, label in enumerate(labels[parent])}
        matrix = np.zeros((len(labels[child]), len(index)), dtype=np.float32)
        for row, label in enumerate(labels[child]):
            found = [(n, p) for (c, p), n in counts.items() if c == label and p in index]
            if found:
                matrix[row, index[max(found)[1]]] = 1.0
        return matrix

    return parents("articleType", "subCategory"), parents("subCategory", "masterCategory")


def hierarchical_decoding(
    probabilities: Sequence[np.ndarray], matrices: tuple[np.ndarray, np.ndarray], temperature: float
) -> HierarchicalDecoding:
    """A built HierarchicalDecoding layer with the parent matrices set (probabilities in HIERARCHY order, for the
    shapes)."""
    layer = HierarchicalDecoding(HIERARCHY_WEIGHT, temperature, name="hierarchy")
    layer([keras.ops.convert_to_tensor(p[:1]) for p in probabilities])
    layer.set_weights(list(matrices))
    return layer


def agreeing_answers(probabilities: Sequence[np.ndarray], matrices: tuple[np.ndarray, np.ndarray]) -> float:
    """Share of images whose top masterCategory, subCategory and articleType (HIERARCHY order) fit together: the
    article type's parent is the subCategory (or it has none among the classes), whose parent is the master."""
    article, sub, master = (p.argmax(axis=1) for p in probabilities[::-1])
    article_sub, sub_master = matrices
    sub_ok = (article_sub.argmax(axis=1)[article] == sub) | (article_sub.sum(axis=1)[article] == 0)
    master_ok = sub_master.argmax(axis=1)[sub] == master
    return round(float((sub_ok & master_ok).mean()), 4)


def decode_hierarchy(
    logits: Mapping[str, np.ndarray],
    temperatures: Mapping[str, float],
    y_val: Mapping[str, np.ndarray],
    matrices: tuple[np.ndarray, np.ndarray],
) -> tuple[HierarchicalDecoding, dict[str, Any]]:
    """The decoding layer for calibrated validation logits, its article-type temperature fitted on validation NLL
    (the parents' scores sharpen the article types), and what it changed on validation."""
    calibrated = [softmax(logits[a] / temperatures[a]) for a in HIERARCHY]
    sharp = np.asarray(hierarchical_decoding(calibrated, matrices, 1.0)(calibrated)[2])
    keep = y_val["articleType"] >= 0
    temperature = fit_temperature(np.log(sharp[keep] + 1e-12), y_val["articleType"][keep])
    layer = hierarchical_decoding(calibrated, matrices, temperature)
    decoded = [np.asarray(q) for q in layer(calibrated)]

    labelled = [y_val[a] >= 0 for a in HIERARCHY]
    return layer, {
        "weight": HIERARCHY_WEIGHT,
        "article_temperature": round(temperature, 4),
        "accuracy": {a: top1_accuracy(q, y_val[a]) for a, q in zip(HIERARCHY, decoded, strict=True)},
        "accuracy_independent": {a: top1_accuracy(p, y_val[a]) for a, p in zip(HIERARCHY, calibrated, strict=True)},
        "ece": {
            a: round(expected_calibration_error(q[k], y_val[a][k]), 4)
            for a, q, k in zip(HIERARCHY, decoded, labelled, strict=True)
        },
        "agreeing_answers": agreeing_answers(decoded, matrices),
        "agreeing_answers_independent": agreeing_answers(calibrated, matrices),
    }
