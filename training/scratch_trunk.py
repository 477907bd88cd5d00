"""The scratch classifier's input and its trained trunk, frozen: what the scratch classifier's heads refit
(`train scratch-classifier-heads`) and the scratch embedder (`train scratch-embedder`) start from."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from fashionsearch.model_contract import InputSpec
from training import data
from training.export import load_trained
from training.recipe import TrainedModel

# Native size; ImageNet-free, so a plain [-1, 1] scaling.
SCRATCH_INPUT = InputSpec(
    name="image",
    height=data.NATIVE_HEIGHT,
    width=data.NATIVE_WIDTH,
    scale=2.0 / 255.0,
    mean=(1.0, 1.0, 1.0),
    std=(1.0, 1.0, 1.0),
    resize="stretch",
)
CLASSIFIER_RUN = data.REPO_ROOT / ".cache" / "runs" / "scratch-classifier"


def classifier_run_dir() -> Path:
    """Where the trained classifier's Keras model is read from: $FASHIONSEARCH_CLASSIFIER_RUN, else the default
    run folder of `python -m training train scratch-classifier`."""
    return Path(os.environ.get("FASHIONSEARCH_CLASSIFIER_RUN", CLASSIFIER_RUN))


def feature_model(classifier: keras.Model) -> keras.Model:
    """image -> the classifier's pooled trunk features (layer "features")."""
    return keras.Model(classifier.inputs, classifier.get_layer("features").output, name="trunk")


def compute_features(trunk: keras.Model, images: np.ndarray, flip: bool = False) -> np.ndarray:
    pixels = images[:, :, ::-1] if flip else images
    ds = data.make_tf_dataset(np.ascontiguousarray(pixels), None, SCRATCH_INPUT, 256)
    return np.asarray(trunk.predict(ds, verbose=0), dtype=np.float32)


def load_frozen_trunk() -> tuple[TrainedModel, keras.Model, Path]:
    """The trained classifier of classifier_run_dir(), its trunk (frozen) and the folder: what the recipes that
    build on the classifier (heads refit, embedder) start from."""
    source = classifier_run_dir()
    if not (source / "model.keras").is_file():
        raise data.DataError(
            f"no trained classifier in {source}: run `python -m training train scratch-classifier` "
            "first (or set FASHIONSEARCH_CLASSIFIER_RUN)"
        )
    classifier = load_trained(source)
    trunk = feature_model(classifier.model)
    trunk.trainable = False
    return classifier, trunk, source


def trunk_features(
    trunk: keras.Model, train: data.Dataset, val: data.Dataset
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training images, the same mirrored, validation images) through the frozen trunk."""
    return (
        compute_features(trunk, train.images),
        compute_features(trunk, train.images, flip=True),
        compute_features(trunk, val.images),
    )
