"""The scratch classifier (models 5, `models/classifier-scratch`; the served one is `train lite-classifier`): two
recipes.

Classifier (`python -m training train scratch-classifier`)
    A compact residual CNN of depthwise-separable blocks at the photos' native 80x60 (no resize), one shared
    trunk, pooled features from the last two stages (the "features" layer), and one dropout + dense softmax head
    per attribute. Losses: label-smoothed cross-entropy per head, examples without a usable label masked out
    (label -1), classes weighted by (count / median count) ** -CLASS_WEIGHT_POWER so rare article types count
    a little more without giving up top-1 accuracy. The learning rate follows a warm-up + cosine schedule over
    "progress" = max(step / planned steps, elapsed / time budget), so the run always anneals and ends inside its
    budget however busy the shared CPU is. A weights checkpoint is written every epoch and a crashed run
    resumes from it (same run folder). After training, one temperature per head is fitted on the validation
    split (NLL) and baked into the exported softmax.

Classifier heads (`python -m training train scratch-classifier-heads`, after the classifier)
    The trained classifier's trunk, frozen, with its heads refitted on the trunk's pooled features of the training
    split (original + mirrored): one shared hidden layer of HEADS_HIDDEN ReLU units and dropout, then a dense
    layer per attribute, same losses, then the same temperature calibration. The masterCategory, subCategory and
    articleType answers are then made to agree (HierarchicalDecoding, inside the exported graph: each article
    type scored with its parents' probabilities, the coarse heads summed from it). Minutes instead of another
    training run; it exports the classifier the services run (the embedder keeps reading the trunk from the
    classifier's run folder, which this step leaves as it is).

Only the validation split is used for any choice; the test split is touched by `python -m training evaluate`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fashionsearch.model_contract import InputSpec
from training import data
from training.heads import (
    CLASS_WEIGHT_POWER,
    HEAD_ATTRIBUTES,
    HEAD_DROPOUT,
    LABEL_SMOOTHING,
    LOSS_WEIGHTS,
    MIN_CLASS_COUNT,
    calibrate,
    calibrated_outputs,
)
from training.hierarchy import HIERARCHY, decode_hierarchy, hierarchy_matrices
from training.layers import MaskedAccuracy, MaskedSmoothedCrossEntropy
from training.metrics import class_weights, nll
from training.recipe import Head, TrainedModel, TrainOptions
from training.scratch_trunk import SCRATCH_INPUT, load_frozen_trunk, trunk_features
from training.trainer import WARMUP, JsonHistory, ProgressSchedule

log = logging.getLogger(__name__)


# Trunk: stem conv (stride 2) then stages of depthwise-separable residual blocks. The last two stages are wide
# (192/384, 576 pooled features) and the first two narrow: late stages run on 10x8 and 5x4 maps, so width there
# buys capacity cheaply, while early width costs most of the time (validation, heads refitted: 32/64/128/256
# 83.5% articleType at 4,200-5,300 images/s; 32/64/192/384 84.8% at 3,500-3,900; 48/96/192/384 84.5% at ~2,300).
STEM = 24
WIDTHS = (32, 64, 192, 384)
DEPTHS = (1, 2, 3, 2)

DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 64
DEFAULT_MINUTES = 50.0  # training loop; calibration and export take a few minutes more
SCRATCH_PEAK_LR = 2e-3  # from scratch: higher than the fine-tuning recipes'
WEIGHT_DECAY = 5e-5
AUGMENT = data.Augmentation(shift=0.06, zoom=0.08, rotation_deg=6.0, hflip=True)

# Head refit (`train scratch-classifier-heads`): one shared hidden layer for all heads, on the frozen trunk's features.
HEADS_HIDDEN = 1024
HEADS_DROPOUT = 0.2
HEADS_EPOCHS = 20
HEADS_BATCH = 256
HEADS_LR = 2e-3


WEIGHTS_FILE = "checkpoint.weights.h5"
PROGRESS_FILE = "progress.json"


# --------------------------------------------------------------------------------------------------------------
# Architecture


def _bn(x: Any, name: str | None = None) -> Any:
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=name)(x)


def _separable_block(x: Any, out: int, stride: int, name: str) -> Any:
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN, identity shortcut when shapes allow, ReLU."""
    layers = keras.layers
    shortcut = x
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = layers.ReLU(name=f"{name}_dw_relu")(_bn(y, f"{name}_dw_bn"))
    y = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_pw")(y)
    y = _bn(y, f"{name}_pw_bn")
    if stride == 1 and int(shortcut.shape[-1]) == out:
        y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_relu")(y)


def build_trunk(inputs: Any, stem: int = STEM, widths: Sequence[int] = WIDTHS, depths: Sequence[int] = DEPTHS) -> Any:
    """Pooled features: global average pools of the last two stages, concatenated (the layer "features")."""
    layers = keras.layers
    x = layers.Conv2D(stem, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU(name="stem_relu")(_bn(x, "stem_bn"))
    pooled = []
    for s, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        for b in range(depth):
            x = _separable_block(x, width, 2 if (b == 0 and s > 0) else 1, f"s{s}b{b}")
        if s >= len(widths) - 2:
            pooled.append(layers.GlobalAveragePooling2D(name=f"s{s}_pool")(x))
    return layers.Concatenate(name="features")(pooled)


def build_classifier(
    head_sizes: Mapping[str, int], input_spec: InputSpec = SCRATCH_INPUT, **trunk_args: Any
) -> keras.Model:
    """The training model: image -> one logits output per attribute (named after it)."""
    layers = keras.layers
    inputs = keras.Input((input_spec.height, input_spec.width, 3), name=input_spec.name)
    features = build_trunk(inputs, **trunk_args)
    outputs = {}
    for attribute, n in head_sizes.items():
        h = layers.Dropout(HEAD_DROPOUT, name=f"{attribute}_dropout")(features)
        outputs[attribute] = layers.Dense(n, name=f"{attribute}_logits")(h)
    return keras.Model(inputs, outputs, name="production_classifier")


def calibrated_classifier(model: keras.Model, temperatures: Mapping[str, float]) -> keras.Model:
    """The exported model: the training model's logits layers through calibrated_outputs."""
    logits = {a: model.get_layer(f"{a}_logits").output for a in temperatures}
    return keras.Model(model.inputs, calibrated_outputs(logits, temperatures), name="classifier")


class Validation(keras.callbacks.Callback):
    """Per-head validation accuracy and loss into the epoch logs (before JsonHistory writes them), a weights
    checkpoint and progress.json after every epoch, so a crash loses one epoch at most."""

    def __init__(
        self,
        pixels: np.ndarray,
        targets: Mapping[str, np.ndarray],
        input_spec: InputSpec,
        run_dir: Path,
        schedule: ProgressSchedule,
        settings: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.ds = data.make_tf_dataset(pixels, None, input_spec, 256)
        self.targets = targets
        self.run_dir = run_dir
        self.schedule = schedule
        self.settings = dict(settings)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        outputs = predict_logits(self.model, self.ds)
        total = 0.0
        for attribute, y in self.targets.items():
            keep = y >= 0
            logits = outputs[attribute][keep]
            logs[f"val_{attribute}_accuracy"] = float((logits.argmax(axis=1) == y[keep]).mean())
            total += LOSS_WEIGHTS[attribute] * nll(logits, y[keep])
        logs["val_loss"] = total
        self.model.save_weights(str(self.run_dir / WEIGHTS_FILE))
        (self.run_dir / PROGRESS_FILE).write_text(
            json.dumps(
                {
                    "epochs_done": epoch + 1,
                    "steps": self.schedule.steps,
                    "seconds": self.schedule.elapsed(),
                    "progress": self.schedule.progress,
                    "settings": self.settings,
                }
            )
        )
        log.info(
            "epoch %d: progress %.2f, %.0f s, val accuracy %s",
            epoch + 1,
            self.schedule.progress,
            self.schedule.elapsed(),
            {a: round(logs[f"val_{a}_accuracy"], 4) for a in self.targets},
        )


def predict_logits(model: keras.Model, ds: Any) -> dict[str, np.ndarray]:
    out = model.predict(ds, verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------------------------
# Recipe: classifier


def train_classifier(
    dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions
) -> TrainedModel:
    """The multi-head production classifier (see the module docstring)."""
    data.configure_tensorflow(options.threads, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    full_train = dataset.split(split, "train")
    vocabularies = data.build_vocabularies(full_train, HEAD_ATTRIBUTES, min_count=MIN_CLASS_COUNT)
    train = full_train.at_most(options.limit, options.seed)
    val = dataset.split(split, "val").at_most(options.limit, options.seed)
    y_train = {a: vocabularies[a].encode(train.labels[a]) for a in HEAD_ATTRIBUTES}
    y_val = {a: vocabularies[a].encode(val.labels[a]) for a in HEAD_ATTRIBUTES}
    sizes = {a: len(vocabularies[a]) for a in HEAD_ATTRIBUTES}
    log.info("production classifier: %d train, %d validation images; classes per head %s", len(train), len(val), sizes)

    batch = options.batch_size or DEFAULT_BATCH
    epochs = options.epochs or DEFAULT_EPOCHS
    budget_s = 60.0 * (options.max_minutes if options.max_minutes is not None else DEFAULT_MINUTES)
    steps_per_epoch = math.ceil(len(train) / batch)
    settings = {
        "batch_size": batch,
        "epochs": epochs,
        "max_minutes": budget_s / 60.0,
        "peak_lr": SCRATCH_PEAK_LR,
        "weight_decay": WEIGHT_DECAY,
        "optimizer": "AdamW",
        "schedule": "warm-up + cosine over progress",
        "label_smoothing": LABEL_SMOOTHING,
        "class_weight_power": CLASS_WEIGHT_POWER,
        "loss_weights": LOSS_WEIGHTS,
        "augmentation": AUGMENT.__dict__,
        "stem": STEM,
        "widths": list(WIDTHS),
        "depths": list(DEPTHS),
        "head_dropout": HEAD_DROPOUT,
        "min_class_count": MIN_CLASS_COUNT,
        "train_images": len(train),
        "val_images": len(val),
        "seed": options.seed,
    }

    model = build_classifier(sizes)
    losses = {
        a: MaskedSmoothedCrossEntropy(
            class_weights(y_train[a], sizes[a], CLASS_WEIGHT_POWER), LABEL_SMOOTHING, name=f"{a}_ce"
        )
        for a in HEAD_ATTRIBUTES
    }
    model.compile(
        optimizer=keras.optimizers.AdamW(SCRATCH_PEAK_LR, weight_decay=WEIGHT_DECAY, clipnorm=2.0),
        loss=losses,
        loss_weights=LOSS_WEIGHTS,
        metrics={a: [MaskedAccuracy()] for a in HEAD_ATTRIBUTES},
        # Without XLA: on the 2-core CPU, depthwise convolutions train at 365 img/s against 283 with it.
        jit_compile=False,
    )

    # Resume a crashed run with the same settings from its last epoch.
    initial_epoch, offset_steps, offset_seconds = 0, 0, 0.0
    progress_path = run_dir / PROGRESS_FILE
    if progress_path.is_file() and (run_dir / WEIGHTS_FILE).is_file():
        saved = json.loads(progress_path.read_text())
        if saved.get("settings") == json.loads(json.dumps(settings)) and saved.get("progress", 1.0) < 1.0:
            model.load_weights(str(run_dir / WEIGHTS_FILE))
            initial_epoch, offset_steps, offset_seconds = saved["epochs_done"], saved["steps"], saved["seconds"]
            log.info("resuming %s at epoch %d (%.0f s done)", run_dir, initial_epoch, offset_seconds)
        else:
            log.info("%s holds another or a finished run; starting afresh", run_dir)

    train_ds = data.make_tf_dataset(
        train.images,
        y_train,
        SCRATCH_INPUT,
        batch,
        shuffle=True,
        augment=AUGMENT,
        seed=options.seed,
    )
    schedule = ProgressSchedule(
        SCRATCH_PEAK_LR,
        epochs * steps_per_epoch,
        budget_s,
        WARMUP,
        offset_steps=offset_steps,
        offset_seconds=offset_seconds,
    )
    history = JsonHistory(run_dir / "history.json")
    if initial_epoch and (run_dir / "history.json").is_file():
        history.history = json.loads((run_dir / "history.json").read_text())
    validation = Validation(val.images, y_val, SCRATCH_INPUT, run_dir, schedule, settings)
    started = time.monotonic()
    model.fit(
        train_ds,
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=options.verbose,
        shuffle=False,
        callbacks=[schedule, validation, history],
    )
    seconds = offset_seconds + time.monotonic() - started
    log.info("classifier trained for %.0f s (%d steps)", seconds, schedule.steps)

    # Temperature per head on the validation split.
    val_ds = data.make_tf_dataset(val.images, None, SCRATCH_INPUT, 256)
    logits = predict_logits(model, val_ds)
    temperatures, accuracy, calibration = calibrate(logits, y_val)
    log.info("validation accuracy %s; calibration %s", accuracy, calibration)
    hist = history.history
    return _classifier_model(
        calibrated_classifier(model, temperatures),
        vocabularies,
        accuracy,
        calibration,
        training={
            "recipe": "classifier",
            "parameters": model.count_params(),
            "seconds": round(seconds, 1),
            "steps": schedule.steps,
            "epochs_run": len(hist.get("loss", [])),
            "settings": settings,
            "vocabularies": {
                a: {"min_count": MIN_CLASS_COUNT, "policy": "ignore", "rare": list(vocabularies[a].rare)}
                for a in HEAD_ATTRIBUTES
            },
            "history": {k: [round(v, 6) for v in vals] for k, vals in hist.items()},
        },
        parity_pixels=dataset.split(split, "val").images[:256],
        run_dir=run_dir,
    )


def _classifier_model(
    exported: keras.Model,
    vocabularies: Mapping[str, data.Vocabulary],
    accuracy: Mapping[str, float],
    calibration: Mapping[str, Any],
    **rest: Any,
) -> TrainedModel:
    """The classifier both recipes export: heads in HEAD order, validation accuracy and calibration."""
    return TrainedModel(
        name="classifier",
        kind="classifier",
        model=exported,
        input_spec=SCRATCH_INPUT,
        heads=tuple(Head(attribute=a, labels=vocabularies[a].labels) for a in HEAD_ATTRIBUTES),
        metrics={"validation": {"accuracy": dict(accuracy), "calibration": dict(calibration)}},
        **rest,
    )


# --------------------------------------------------------------------------------------------------------------
# Recipe: classifier heads


def build_heads(feature_dim: int, head_sizes: Mapping[str, int], mean: np.ndarray, variance: np.ndarray) -> keras.Model:
    """features -> one logits output per attribute, through one shared hidden layer."""
    layers = keras.layers
    inputs = keras.Input((feature_dim,), name="features_in")
    x = layers.Normalization(mean=mean, variance=variance, name="heads_norm")(inputs)
    x = layers.Dense(HEADS_HIDDEN, activation="relu", name="heads_hidden")(x)
    x = layers.Dropout(HEADS_DROPOUT, name="heads_dropout")(x)
    outputs = {a: layers.Dense(n, name=f"{a}_logits")(x) for a, n in head_sizes.items()}
    return keras.Model(inputs, outputs, name="heads")


def train_classifier_heads(
    dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions
) -> TrainedModel:
    """The trained classifier's trunk, frozen, with its heads refitted: one shared hidden layer of HEADS_HIDDEN
    ReLU units instead of a linear layer per head, trained in minutes on the trunk's features of the training split
    (original + mirrored), same losses, then calibrated like the classifier. Runs after `train scratch-classifier`."""
    data.configure_tensorflow(options.threads, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    classifier, trunk, source = load_frozen_trunk()

    full_train = dataset.split(split, "train")
    vocabularies = data.build_vocabularies(full_train, HEAD_ATTRIBUTES, min_count=MIN_CLASS_COUNT)
    train = full_train.at_most(options.limit, options.seed)
    val = dataset.split(split, "val").at_most(options.limit, options.seed)
    sizes = {a: len(vocabularies[a]) for a in HEAD_ATTRIBUTES}
    y_train = {a: np.concatenate([vocabularies[a].encode(train.labels[a])] * 2) for a in HEAD_ATTRIBUTES}
    y_val = {a: vocabularies[a].encode(val.labels[a]) for a in HEAD_ATTRIBUTES}
    log.info("classifier heads: features of %d train (+ mirrored) and %d validation images", len(train), len(val))
    f_train, f_train_flip, f_val = trunk_features(trunk, train, val)
    features = np.concatenate([f_train, f_train_flip])

    keras.utils.set_random_seed(options.seed)
    epochs = options.epochs or HEADS_EPOCHS
    batch = options.batch_size or HEADS_BATCH
    heads = build_heads(features.shape[1], sizes, features.mean(axis=0), features.var(axis=0) + 1e-6)
    steps = epochs * math.ceil(len(features) / batch)
    heads.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(HEADS_LR, steps, alpha=0.01)),
        loss={
            a: MaskedSmoothedCrossEntropy(
                class_weights(y_train[a], sizes[a], CLASS_WEIGHT_POWER), LABEL_SMOOTHING, name=f"{a}_ce"
            )
            for a in HEAD_ATTRIBUTES
        },
        loss_weights=LOSS_WEIGHTS,
    )
    heads.fit(features, y_train, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    head_seconds = time.monotonic() - started

    logits = {a: np.asarray(v) for a, v in heads.predict(f_val, batch_size=4096, verbose=0).items()}
    temperatures, accuracy, calibration = calibrate(logits, y_val)
    decoding, hierarchy = decode_hierarchy(
        logits, temperatures, y_val, hierarchy_matrices(full_train, {a: vocabularies[a].labels for a in HIERARCHY})
    )
    accuracy |= hierarchy["accuracy"]
    log.info("validation accuracy %s; calibration %s; hierarchy %s", accuracy, calibration, hierarchy)
    inputs = keras.Input((SCRATCH_INPUT.height, SCRATCH_INPUT.width, 3), name=SCRATCH_INPUT.name)
    # The same layers without the training configuration (losses), so the saved model loads anywhere.
    plain_heads = keras.Model(heads.input, heads.output, name="heads")
    outputs = calibrated_outputs(plain_heads(trunk(inputs)), temperatures, decoding)
    exported = keras.Model(inputs, outputs, name="classifier")
    trunk_training = classifier.training
    return _classifier_model(
        exported,
        vocabularies,
        accuracy,
        calibration,
        training=trunk_training
        | {
            "recipe": "classifier-heads",
            "parameters": exported.count_params(),
            # The budget covers both commands: the trunk's training loop and this refit.
            "seconds": round(float(trunk_training.get("seconds") or 0.0) + head_seconds, 1),
            "trunk_seconds": trunk_training.get("seconds"),
            "heads_seconds": round(head_seconds, 1),
            "trunk_from": str(source),
            "hierarchy": hierarchy,
            "heads_settings": {
                "hidden": HEADS_HIDDEN,
                "dropout": HEADS_DROPOUT,
                "epochs": epochs,
                "batch_size": batch,
                "optimizer": f"Adam {HEADS_LR} cosine",
                "mirrored_copies": True,
                "loss": "the classifier's (label smoothing, class weights, loss weights)",
            },
        },
        parity_pixels=dataset.split(split, "val").images[:256],
        run_dir=run_dir,
    )
