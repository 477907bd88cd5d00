"""What the classifier recipes' heads share: the attributes, their loss weights and loss, the rare-class rule,
temperature calibration, the exported (calibrated, hierarchy-decoded) outputs and the labelled splits they train on.

A new attribute head is one entry in HEAD_ATTRIBUTES and LOSS_WEIGHTS (its labels a column training/data.py loads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fashionsearch.model_contract import InputSpec
from training import data
from training.hierarchy import HIERARCHY
from training.layers import HierarchicalDecoding, MaskedSmoothedCrossEntropy
from training.metrics import class_weights, expected_calibration_error, fit_temperature, nll, softmax, top1_accuracy
from training.recipe import Head, TrainedModel, TrainOptions

# Head order = ONNX output order. articleType first: it is the hardest and the one retrieval is judged on.
HEAD_ATTRIBUTES = ("masterCategory", "subCategory", "articleType", "gender", "baseColour", "season", "usage")
LOSS_WEIGHTS = {
    "masterCategory": 0.3,
    "subCategory": 0.6,
    "articleType": 1.0,
    "gender": 0.6,
    "baseColour": 0.8,
    "season": 0.3,
    "usage": 0.3,
}
MIN_CLASS_COUNT = 10  # rare-class rule (data.Vocabulary): classes with fewer training examples are ignored
CLASS_WEIGHT_POWER = 0.25
LABEL_SMOOTHING = 0.1
HEAD_DROPOUT = 0.2  # before each head (the lite recipes: before all heads together)


def head_losses(y_train: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> dict[str, Any]:
    """The classifier's loss per head: label smoothing, class weights, missing labels masked."""
    return {
        a: MaskedSmoothedCrossEntropy(
            class_weights(y_train[a], sizes[a], CLASS_WEIGHT_POWER), smoothing=LABEL_SMOOTHING, name=f"{a}_ce"
        )
        for a in HEAD_ATTRIBUTES
    }


def calibrated_outputs(
    logits: Mapping[str, Any], temperatures: Mapping[str, float], decoding: HierarchicalDecoding | None = None
) -> list[Any]:
    """softmax(logits / T) per head, in HEAD order and named after the attribute (the exported outputs); with
    `decoding`, the HIERARCHY heads' probabilities go through it first."""
    layers = keras.layers
    decoded = set(HIERARCHY) if decoding is not None else set()
    out = {
        a: layers.Softmax(name=f"{a}_independent" if a in decoded else a)(
            layers.Rescaling(1.0 / float(t), name=f"{a}_temperature")(logits[a])
        )
        for a, t in temperatures.items()
    }
    if decoding is not None:
        agreed = decoding([out[a] for a in HIERARCHY])
        out |= {a: layers.Identity(name=a)(q) for a, q in zip(HIERARCHY, agreed, strict=True)}
    return [out[a] for a in temperatures]


def calibrate(
    logits: Mapping[str, np.ndarray], y_val: Mapping[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Per head on the validation split: (temperature, accuracy, calibration before/after)."""
    temperatures: dict[str, float] = {}
    accuracy: dict[str, float] = {}
    calibration: dict[str, Any] = {}
    for a in HEAD_ATTRIBUTES:
        keep = y_val[a] >= 0
        z, y = logits[a][keep], y_val[a][keep]
        t = fit_temperature(z, y)
        temperatures[a] = t
        accuracy[a] = top1_accuracy(z, y)
        calibration[a] = {
            "temperature": round(t, 4),
            "ece_before": round(expected_calibration_error(softmax(z), y), 4),
            "ece_after": round(expected_calibration_error(softmax(z / t), y), 4),
            "nll_before": round(nll(z, y), 4) if len(y) else 0.0,
            "nll_after": round(nll(z, y, t), 4) if len(y) else 0.0,
        }
    return temperatures, accuracy, calibration


@dataclass(frozen=True)
class LabelledSplits:
    """What a lite classifier recipe trains and validates on: the splits (at most options.limit images), the
    vocabularies of the full training split and the encoded labels."""

    full_train: data.Dataset
    train: data.Dataset
    val: data.Dataset
    vocabularies: Mapping[str, Any]
    sizes: Mapping[str, int]
    y_train: Mapping[str, np.ndarray]
    y_val: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, dataset: data.Dataset, split: dict[int, str], options: TrainOptions) -> LabelledSplits:
        full_train = dataset.split(split, "train")
        vocabularies = data.build_vocabularies(full_train, HEAD_ATTRIBUTES, min_count=MIN_CLASS_COUNT)
        train = full_train.at_most(options.limit, options.seed)
        val = dataset.split(split, "val").at_most(options.limit, options.seed)
        if not len(val):
            raise data.DataError("the split has no validation images: temperatures and choices need them")
        return cls(
            full_train=full_train,
            train=train,
            val=val,
            vocabularies=vocabularies,
            sizes={a: len(vocabularies[a]) for a in HEAD_ATTRIBUTES},
            y_train={a: vocabularies[a].encode(train.labels[a]) for a in HEAD_ATTRIBUTES},
            y_val={a: vocabularies[a].encode(val.labels[a]) for a in HEAD_ATTRIBUTES},
        )

    def classifier(
        self,
        exported: keras.Model,
        input_spec: InputSpec,
        validation: Mapping[str, Any],
        run_dir: Path,
        training: dict[str, Any],
    ) -> TrainedModel:
        """The exported classifier (calibrated_classifier's model and metrics) as a TrainedModel."""
        return TrainedModel(
            name="classifier",
            kind="classifier",
            model=exported,
            input_spec=input_spec,
            heads=tuple(Head(attribute=a, labels=self.vocabularies[a].labels) for a in HEAD_ATTRIBUTES),
            metrics={"validation": {k: v for k, v in validation.items() if k != "hierarchy"}},
            training=training | {"hierarchy": validation["hierarchy"]},
            parity_pixels=self.val.images[:256],
            run_dir=run_dir,
        )
