"""What a training recipe takes and returns; the CLI runs any recipe registered in `RECIPES`.

A recipe is `train(dataset, split, run_dir, options) -> TrainedModel`. Export turns the TrainedModel into
model.onnx + model.json; evaluation only needs those two files.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fashionsearch.model_contract import InputSpec

log = logging.getLogger(__name__)

# name -> "module:function"; a new recipe is a module in training/recipes/ and one line here. A recipe imports no
# other recipe: what recipes share lives in training/ (heads, embedding, view_cache, scratch_trunk, hierarchy).
RECIPES: dict[str, str] = {
    "paper-cnn": "training.recipes.paper:train_cnn",
    "paper-autoencoder": "training.recipes.paper:train_autoencoder",
    "scratch-classifier": "training.recipes.scratch_classifier:train_classifier",
    "scratch-classifier-heads": "training.recipes.scratch_classifier:train_classifier_heads",
    "scratch-embedder": "training.recipes.scratch_embedder:train_embedder",
    "lite-classifier": "training.recipes.pretrained:train_classifier",
    "lite-embedder": "training.recipes.pretrained:train_embedder",
    "lite-student": "training.recipes.student:train_classifier",
    "lite-student-embedder": "training.recipes.student:train_embedder",
    "detector": "training.recipes.detector:train_detector",
}

# The names of version 0.1, kept for one version (deprecated): `train classifier` built the scratch model while the
# served classifier came from `train lite-classifier`.
DEPRECATED_NAMES: dict[str, str] = {
    "classifier": "scratch-classifier",
    "classifier-heads": "scratch-classifier-heads",
    "embedder": "scratch-embedder",
}


def recipe_name(name: str) -> str:
    """The recipe's current name: `name` itself, or what a deprecated name is called now (with a warning)."""
    if name in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[name]
        log.warning(
            "the recipe name %r is deprecated and goes in the next version: it is %r now (the served models come "
            "from lite-classifier and lite-embedder)",
            name,
            new,
        )
        return new
    return name


def get_recipe(name: str) -> Callable[..., TrainedModel]:
    try:
        target = RECIPES[recipe_name(name)]
    except KeyError:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(sorted(RECIPES))}") from None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


@dataclass(frozen=True)
class TrainOptions:
    epochs: int | None = None  # None: the recipe's default
    batch_size: int | None = None
    seed: int = 0
    threads: int = 2
    verbose: int = 2  # Keras: 1 progress bar, 2 one line per epoch
    limit: int | None = None  # use at most this many train and val images (smoke tests)
    max_minutes: float | None = None  # wall-clock training budget; None: the recipe's default
    jit_compile: bool = True  # XLA; off for tiny runs, where compiling costs more than it saves
    teacher: tuple[Path, ...] = ()  # served model folders a distillation recipe learns from; () its default
    scenes: int | None = None  # synthesised training scenes (the detector); None: the recipe's default
    photo_views: bool = False  # lite recipes: some shopper views on the training photographs, framed as cut-outs
    scene_views: bool = False  # lite-classifier: harder scene shifts in the shopper views (shopper.SCENE_MIX)
    trunk: str = "lite0"  # lite-classifier: the EfficientNet-Lite variant (training/lite.py VARIANTS)

    @property
    def keras_jit(self) -> bool | str:
        return "auto" if self.jit_compile else False


@dataclass(frozen=True)
class Head:
    """One softmax output of a classifier, in the order of the Keras model's outputs."""

    attribute: str
    labels: tuple[str, ...]


@dataclass
class TrainedModel:
    """A trained Keras model ready for export, and what model.json must say about it."""

    name: str
    kind: Literal["classifier", "embedder", "detector"]
    model: Any  # keras.Model, exported as model.onnx
    input_spec: InputSpec
    heads: tuple[Head, ...] = ()
    embedding_dim: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics
    training: dict[str, Any] = field(default_factory=dict)  # FitResult.to_dict() and recipe settings
    extra_models: Mapping[str, Any] = field(default_factory=dict)  # file name -> keras.Model, exported beside
    parity_pixels: np.ndarray | None = None  # uint8 validation images (any size) for the parity gate
    detection: dict[str, Any] | None = None  # a detector's model.json "detection" object (DETECTOR_CONTRACT.md)
    run_dir: Path | None = None
