"""The production models: one multi-head classifier and a retrieval embedder that shares its trunk.

Classifier (`python -m training train classifier`)
    A compact residual CNN of depthwise-separable blocks at the photos' native 80x60 (no resize), one shared
    trunk, pooled features from the last two stages (the "features" layer), and one dropout + dense softmax head
    per attribute. Losses: label-smoothed cross-entropy per head, examples without a usable label masked out
    (label -1), classes weighted by (count / median count) ** -CLASS_WEIGHT_POWER so rare article types count
    a little more without giving up top-1 accuracy. The learning rate follows a warm-up + cosine schedule over
    "progress" = max(step / planned steps, elapsed / time budget), so the run always anneals and ends inside its
    budget however busy the shared CPU is. A weights checkpoint is written every epoch and a crashed run
    resumes from it (same run folder). After training, one temperature per head is fitted on the validation
    split (NLL) and baked into the exported softmax.

Classifier heads (`python -m training train classifier-heads`, after the classifier)
    The trained classifier's trunk, frozen, with its heads refitted on the trunk's pooled features of the training
    split (original + mirrored): one shared hidden layer of HEADS_HIDDEN ReLU units and dropout, then a dense
    layer per attribute, same losses, then the same temperature calibration. The masterCategory, subCategory and
    articleType answers are then made to agree (HierarchicalDecoding, inside the exported graph: each article
    type scored with its parents' probabilities, the coarse heads summed from it). Minutes instead of another
    training run; it exports the classifier the services run (the embedder keeps reading the trunk from the
    classifier's run folder, which this step leaves as it is).

Embedder (`python -m training train embedder`)
    The classifier's trunk, frozen, plus a small projection (one hidden layer of EMBEDDING_HIDDEN ReLU units, then
    D dimensions), L2-normalised (Euclidean distance on the unit sphere). The hidden layer raised validation
    articleType precision@5 at D=32 from 78.1% to 80.5% (unfiltered) and 82.4% to 84.6% (filtered) over a linear
    projection; its cost is small beside the trunk's (the embedder runs at about 3,500 images/s at batch 64).
    The projection is trained with a proxy-based metric loss (normalised-softmax / cosine proxies, one set per
    attribute: articleType, baseColour, gender) on the trunk's features of the training split (original +
    mirrored images). The served vector is then pulled part of the way towards the proxies it most likely
    belongs to and re-normalised (ProxyPull, inside the exported graph): classes get tighter at the same
    dimension. It trains in minutes, so every D in EMBEDDING_DIMS is trained and the dimension is chosen on the
    validation split (precision@5); the trade-off table goes into model.json.

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
from training.recipe import Head, TrainedModel, TrainOptions
from training.trainer import JsonHistory

log = logging.getLogger(__name__)

# Native size; ImageNet-free, so a plain [-1, 1] scaling.
PRODUCTION_INPUT = InputSpec(
    name="image",
    height=data.NATIVE_HEIGHT,
    width=data.NATIVE_WIDTH,
    scale=2.0 / 255.0,
    mean=(1.0, 1.0, 1.0),
    std=(1.0, 1.0, 1.0),
    resize="stretch",
)
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

# Trunk: stem conv (stride 2) then stages of depthwise-separable residual blocks. The last two stages are wide
# (192/384, 576 pooled features) and the first two narrow: late stages run on 10x8 and 5x4 maps, so width there
# buys capacity cheaply, while early width costs most of the time (validation, heads refitted: 32/64/128/256
# 83.5% articleType at 4,200-5,300 images/s; 32/64/192/384 84.8% at 3,500-3,900; 48/96/192/384 84.5% at ~2,300).
STEM = 24
WIDTHS = (32, 64, 192, 384)
DEPTHS = (1, 2, 3, 2)
HEAD_DROPOUT = 0.2

DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 64
DEFAULT_MINUTES = 50.0  # training loop; calibration and export take a few minutes more
PEAK_LR = 2e-3
WEIGHT_DECAY = 5e-5
WARMUP = 0.03
AUGMENT = data.Augmentation(shift=0.06, zoom=0.08, rotation_deg=6.0, hflip=True)

# Head refit (`train classifier-heads`): one shared hidden layer for all heads, on the frozen trunk's features.
HEADS_HIDDEN = 1024
HEADS_DROPOUT = 0.2
HEADS_EPOCHS = 20
HEADS_BATCH = 256
HEADS_LR = 2e-3

EMBEDDING_DIMS = (16, 32, 64, 128)
EMBEDDING_HIDDEN = 1024
EMBEDDING_ATTRIBUTES = {"articleType": 1.0, "baseColour": 0.5, "gender": 0.3}
# The served embedding is pulled towards the proxies it most likely belongs to, each attribute with its loss weight
# above as its strength (ProxyPull). Validation, v4 trunk, 32-d: articleType precision@5 82.5% / 86.0% (unfiltered /
# filtered) against 81.3% / 85.3% without the pull, baseColour 62.5% against 60.4%, gender 89.9% against 88.5%;
# strength 2 gave the same, 4 lost colour; appending the probabilities as extra dimensions (178-d) instead was no
# better. The pull helps the larger dimensions more, so the choice rule moved from 32-d to 64-d (embedder 5: 83.0% /
# 86.3%).
DEFAULT_EMBEDDING_DIM = 64
CLASSIFIER_RUN = data.REPO_ROOT / ".cache" / "runs" / "classifier"

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
    head_sizes: Mapping[str, int], input_spec: InputSpec = PRODUCTION_INPUT, **trunk_args: Any
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


def calibrated_classifier(model: keras.Model, temperatures: Mapping[str, float]) -> keras.Model:
    """The exported model: the training model's logits layers through calibrated_outputs."""
    logits = {a: model.get_layer(f"{a}_logits").output for a in temperatures}
    return keras.Model(model.inputs, calibrated_outputs(logits, temperatures), name="classifier")


# --------------------------------------------------------------------------------------------------------------
# Losses and metrics


@keras.saving.register_keras_serializable(package="fashionsearch")
class MaskedSmoothedCrossEntropy(keras.losses.Loss):
    """Cross-entropy from logits with label smoothing and per-class weights; label -1 contributes nothing."""

    def __init__(
        self, class_weights: Sequence[float], smoothing: float = LABEL_SMOOTHING, name: str = "masked_ce", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.class_weights = [float(w) for w in class_weights]
        self.smoothing = float(smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        n = len(self.class_weights)
        y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        valid = ops.cast(y >= 0, y_pred.dtype)
        safe = ops.maximum(y, 0)
        target = ops.one_hot(safe, n) * (1.0 - self.smoothing) + self.smoothing / n
        ce = -ops.sum(target * ops.log_softmax(y_pred, axis=-1), axis=-1)
        weights = ops.take(ops.convert_to_tensor(self.class_weights, dtype=y_pred.dtype), safe)
        return ce * weights * valid

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"class_weights": self.class_weights, "smoothing": self.smoothing}


@keras.saving.register_keras_serializable(package="fashionsearch")
class MaskedAccuracy(keras.metrics.Metric):
    """Top-1 accuracy over the examples that have a label (label >= 0)."""

    def __init__(self, name: str = "accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        ops = keras.ops
        y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        valid = ops.cast(y >= 0, "float32")
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y), "float32")
        self.correct.assign_add(ops.sum(hit * valid))
        self.total.assign_add(ops.sum(valid))

    def result(self) -> Any:
        return self.correct / keras.ops.maximum(self.total, 1.0)

    def reset_state(self) -> None:
        self.correct.assign(0.0)
        self.total.assign(0.0)


def class_weights(labels: np.ndarray, n: int, power: float = CLASS_WEIGHT_POWER) -> np.ndarray:
    """(count / median count) ** -power, normalised to a mean of 1 over the training examples."""
    counts = np.bincount(labels[labels >= 0], minlength=n).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    w = (counts / np.median(counts)) ** -power
    mean = float((w * counts).sum() / counts.sum())
    return (w / mean).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# Calibration


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, t: float = 1.0) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (log-spaced grid, then a finer one around the best)."""
    if len(y) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.3), np.log(5.0), 61))
    best = min(grid, key=lambda t: nll(logits, y, t))
    fine = np.linspace(best * 0.95, best * 1.05, 21)
    return float(min(fine, key=lambda t: nll(logits, y, t)))


def ece(probabilities: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    from training.evaluate import expected_calibration_error

    return expected_calibration_error(probabilities, y, bins) if len(y) else 0.0


# --------------------------------------------------------------------------------------------------------------
# Training loop pieces


class ProgressSchedule(keras.callbacks.Callback):
    """Warm-up + cosine learning rate over progress = max(step / total_steps, elapsed / budget); stops at 1.

    `offset_steps` / `offset_seconds` continue a resumed run where it stopped.
    """

    def __init__(
        self,
        peak: float,
        total_steps: int,
        budget_s: float,
        warmup: float = WARMUP,
        offset_steps: int = 0,
        offset_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.peak, self.total_steps, self.budget_s, self.warmup = peak, max(1, total_steps), budget_s, warmup
        self.steps = offset_steps
        self.offset_seconds = offset_seconds
        self.started = time.monotonic()
        self.progress = 0.0

    def elapsed(self) -> float:
        return self.offset_seconds + time.monotonic() - self.started

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.progress = min(1.0, max(self.steps / self.total_steps, self.elapsed() / self.budget_s))
        if self.progress < self.warmup:
            lr = self.peak * (0.1 + 0.9 * self.progress / self.warmup)
        else:
            p = (self.progress - self.warmup) / (1.0 - self.warmup)
            lr = self.peak * (0.005 + 0.995 * 0.5 * (1.0 + math.cos(math.pi * p)))
        self.model.optimizer.learning_rate.assign(lr)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps += 1
        if self.progress >= 1.0:
            self.model.stop_training = True


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


def top1_accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """Share of the labelled rows (y >= 0) whose highest score is the label, rounded to 4 places."""
    keep = y >= 0
    return round(float((scores[keep].argmax(axis=1) == y[keep]).mean()), 4) if keep.any() else 0.0


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
            "ece_before": round(ece(softmax(z), y), 4),
            "ece_after": round(ece(softmax(z / t), y), 4),
            "nll_before": round(nll(z, y), 4) if len(y) else 0.0,
            "nll_after": round(nll(z, y, t), 4) if len(y) else 0.0,
        }
    return temperatures, accuracy, calibration


# Hierarchical decoding: masterCategory > subCategory > articleType. Independent heads disagree on about 1.5% of
# validation images ("Apparel / Topwear / Casual Shoes"); scoring each article type with its parents' probabilities
# makes the three answers agree and corrects the coarse heads (validation, classifier 4: masterCategory 99.20 ->
# 99.37%, subCategory 96.08 -> 96.31%, articleType 85.06 -> 84.99%).
HIERARCHY = ("masterCategory", "subCategory", "articleType")
HIERARCHY_WEIGHT = 0.5  # parents enter as p ** weight (validation: 0.25 and 0.5 alike; 1.0 lost 0.1 on sub and article)


def hierarchy_matrices(dataset: data.Dataset, labels: Mapping[str, Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(article type -> subCategory, subCategory -> masterCategory) one-hot matrices over the heads' `labels`: each
    class's most common parent among the dataset's rows (a row stays zero when the parent is not a class)."""
    import collections

    def parents(child: str, parent: str) -> np.ndarray:
        counts = collections.Counter(zip(dataset.labels[child], dataset.labels[parent], strict=True))
        index = {label: i for i, label in enumerate(labels[parent])}
        matrix = np.zeros((len(labels[child]), len(index)), dtype=np.float32)
        for row, label in enumerate(labels[child]):
            found = [(n, p) for (c, p), n in counts.items() if c == label and p in index]
            if found:
                matrix[row, index[max(found)[1]]] = 1.0
        return matrix

    return parents("articleType", "subCategory"), parents("subCategory", "masterCategory")


@keras.saving.register_keras_serializable(package="fashionsearch")
class HierarchicalDecoding(keras.layers.Layer):
    """(masterCategory, subCategory, articleType) probabilities -> the same three, made to agree.

    Each article type is scored with its parents' probabilities, log q_a = log p_a + weight * (log p_s(parent) +
    log p_m(grandparent)), re-normalised with its own temperature; subCategory is then the sum of its article types
    (a subCategory none of whose article types is a class keeps its own probability, the rest is shared out),
    masterCategory the sum of its subCategories. The parent matrices are constants (hierarchy_matrices)."""

    def __init__(self, weight: float, temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight, self.temperature = float(weight), float(temperature)

    def build(self, input_shape: Any) -> None:
        masters, subs, articles = (int(shape[-1]) for shape in input_shape)
        self.article_sub = self.add_weight(shape=(articles, subs), initializer="zeros", trainable=False, name="a2s")
        self.sub_master = self.add_weight(shape=(subs, masters), initializer="zeros", trainable=False, name="s2m")

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        p_master, p_sub, p_article = inputs
        article_master = ops.matmul(self.article_sub, self.sub_master)
        # An article type without a parent class gets factor 1 (no evidence), not 0.
        no_sub = 1.0 - ops.sum(self.article_sub, axis=1)
        no_master = 1.0 - ops.sum(article_master, axis=1)
        score = ops.log(p_article + 1e-12) + self.weight * (
            ops.log(ops.matmul(p_sub, ops.transpose(self.article_sub)) + no_sub + 1e-12)
            + ops.log(ops.matmul(p_master, ops.transpose(article_master)) + no_master + 1e-12)
        )
        q_article = ops.softmax(score / self.temperature, axis=-1)
        orphans = 1.0 - ops.minimum(ops.sum(self.article_sub, axis=0), 1.0)  # subCategories without an article type
        orphan_mass = ops.sum(p_sub * orphans, axis=-1, keepdims=True)
        q_sub = (1.0 - orphan_mass) * ops.matmul(q_article, self.article_sub) + p_sub * orphans
        q_sub = q_sub / ops.sum(q_sub, axis=-1, keepdims=True)
        q_master = ops.matmul(q_sub, self.sub_master)
        q_master = q_master / (ops.sum(q_master, axis=-1, keepdims=True) + 1e-12)
        return q_master, q_sub, q_article

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"weight": self.weight, "temperature": self.temperature}


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
        "ece": {a: round(ece(q[k], y_val[a][k]), 4) for a, q, k in zip(HIERARCHY, decoded, labelled, strict=True)},
        "agreeing_answers": agreeing_answers(decoded, matrices),
        "agreeing_answers_independent": agreeing_answers(calibrated, matrices),
    }


def predict_logits(model: keras.Model, ds: Any) -> dict[str, np.ndarray]:
    out = model.predict(ds, verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


def _limit(ds: data.Dataset, limit: int | None, seed: int) -> data.Dataset:
    if limit is None or limit >= len(ds):
        return ds
    return ds.subset(np.sort(np.random.default_rng(seed).choice(len(ds), size=limit, replace=False)))


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
    train = _limit(full_train, options.limit, options.seed)
    val = _limit(dataset.split(split, "val"), options.limit, options.seed)
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
        "peak_lr": PEAK_LR,
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
        a: MaskedSmoothedCrossEntropy(class_weights(y_train[a], sizes[a]), name=f"{a}_ce") for a in HEAD_ATTRIBUTES
    }
    model.compile(
        optimizer=keras.optimizers.AdamW(PEAK_LR, weight_decay=WEIGHT_DECAY, clipnorm=2.0),
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
        PRODUCTION_INPUT,
        batch,
        shuffle=True,
        augment=AUGMENT,
        seed=options.seed,
    )
    schedule = ProgressSchedule(
        PEAK_LR, epochs * steps_per_epoch, budget_s, offset_steps=offset_steps, offset_seconds=offset_seconds
    )
    history = JsonHistory(run_dir / "history.json")
    if initial_epoch and (run_dir / "history.json").is_file():
        history.history = json.loads((run_dir / "history.json").read_text())
    validation = Validation(val.images, y_val, PRODUCTION_INPUT, run_dir, schedule, settings)
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
    val_ds = data.make_tf_dataset(val.images, None, PRODUCTION_INPUT, 256)
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
        input_spec=PRODUCTION_INPUT,
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
    (original + mirrored), same losses, then calibrated like the classifier. Runs after `train classifier`."""
    data.configure_tensorflow(options.threads, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    classifier, trunk, source = load_frozen_trunk()

    full_train = dataset.split(split, "train")
    vocabularies = data.build_vocabularies(full_train, HEAD_ATTRIBUTES, min_count=MIN_CLASS_COUNT)
    train = _limit(full_train, options.limit, options.seed)
    val = _limit(dataset.split(split, "val"), options.limit, options.seed)
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
            a: MaskedSmoothedCrossEntropy(class_weights(y_train[a], sizes[a]), name=f"{a}_ce") for a in HEAD_ATTRIBUTES
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
    inputs = keras.Input((PRODUCTION_INPUT.height, PRODUCTION_INPUT.width, 3), name=PRODUCTION_INPUT.name)
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


# --------------------------------------------------------------------------------------------------------------
# Recipe: embedder


def classifier_run_dir() -> Path:
    """Where the trained classifier's Keras model is read from: $FASHIONSEARCH_CLASSIFIER_RUN, else the default
    run folder of `python -m training train classifier`."""
    import os

    return Path(os.environ.get("FASHIONSEARCH_CLASSIFIER_RUN", CLASSIFIER_RUN))


def feature_model(classifier: keras.Model) -> keras.Model:
    """image -> the classifier's pooled trunk features (layer "features")."""
    return keras.Model(classifier.inputs, classifier.get_layer("features").output, name="trunk")


def compute_features(trunk: keras.Model, images: np.ndarray, flip: bool = False) -> np.ndarray:
    pixels = images[:, :, ::-1] if flip else images
    ds = data.make_tf_dataset(np.ascontiguousarray(pixels), None, PRODUCTION_INPUT, 256)
    return np.asarray(trunk.predict(ds, verbose=0), dtype=np.float32)


def load_frozen_trunk() -> tuple[TrainedModel, keras.Model, Path]:
    """The trained classifier of classifier_run_dir(), its trunk (frozen) and the folder: what the recipes that
    build on the classifier (heads refit, embedder) start from."""
    from training.export import load_trained

    source = classifier_run_dir()
    if not (source / "model.keras").is_file():
        raise data.DataError(
            f"no trained classifier in {source}: run `python -m training train classifier` "
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


def _unit_columns(proxies: Any) -> Any:
    return proxies / keras.ops.sqrt(keras.ops.sum(proxies**2, axis=0, keepdims=True) + 1e-12)


@keras.saving.register_keras_serializable(package="fashionsearch")
class CosineProxies(keras.layers.Layer):
    """scale * cos(embedding, proxy_c) for every class c: a normalised-softmax (proxy) metric-learning head."""

    def __init__(self, classes: int, scale: float = 16.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classes, self.scale = classes, scale

    def build(self, input_shape: Any) -> None:
        self.proxies = self.add_weight(
            shape=(int(input_shape[-1]), self.classes), initializer="glorot_uniform", name="proxies"
        )

    def call(self, z: Any) -> Any:
        return self.scale * keras.ops.matmul(z, _unit_columns(self.proxies))

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"classes": self.classes, "scale": self.scale}


@keras.saving.register_keras_serializable(package="fashionsearch")
class ProxyPull(keras.layers.Layer):
    """Pulls a unit embedding towards the proxies it probably belongs to, then re-normalises:
    unit(z + sum over attributes of strength * softmax(scale * cos(z, proxies)) @ proxies^T).

    The trained proxies are class centres on the sphere; moving each vector part of the way to its expected centre
    tightens the classes without adding dimensions, so neighbours agree more often on article type, colour and
    gender. One weight matrix holds every attribute's proxies side by side (copied from the trained CosineProxies
    layers, not trained here)."""

    def __init__(self, classes: Sequence[int], strengths: Sequence[float], scale: float = 16.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(classes) != len(strengths):
            raise ValueError(f"{len(classes)} attributes but {len(strengths)} strengths")
        self.classes, self.strengths, self.scale = [int(c) for c in classes], [float(s) for s in strengths], scale

    def build(self, input_shape: Any) -> None:
        self.proxies = self.add_weight(
            shape=(int(input_shape[-1]), sum(self.classes)), initializer="zeros", trainable=False, name="proxies"
        )

    def call(self, z: Any) -> Any:
        ops = keras.ops
        pulled, start = z, 0
        for n, strength in zip(self.classes, self.strengths, strict=True):
            p = _unit_columns(self.proxies[:, start : start + n])
            probabilities = ops.softmax(self.scale * ops.matmul(z, p), axis=-1)
            pulled = pulled + strength * ops.matmul(probabilities, ops.transpose(p))
            start += n
        return pulled / ops.sqrt(ops.sum(pulled**2, axis=-1, keepdims=True) + 1e-12)

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"classes": self.classes, "strengths": self.strengths, "scale": self.scale}


def build_projection(
    feature_dim: int, dim: int, head_sizes: Mapping[str, int], mean: np.ndarray, variance: np.ndarray
) -> tuple[keras.Model, keras.Model]:
    """(training model: features -> proxy logits per attribute, projection: features -> unit embedding)."""
    layers = keras.layers
    inputs = keras.Input((feature_dim,), name="features_in")
    x = layers.Normalization(mean=mean, variance=variance, name="feature_norm")(inputs)
    x = layers.Dense(EMBEDDING_HIDDEN, activation="relu", name="projection_hidden")(x)
    x = layers.Dense(dim, use_bias=False, name="projection")(x)
    z = layers.UnitNormalization(name="embedding")(x)
    projection = keras.Model(inputs, z, name="projection_model")
    logits = {a: CosineProxies(n, name=f"{a}_proxies")(z) for a, n in head_sizes.items()}
    return keras.Model(inputs, logits, name="projection_training"), projection


def train_projection(
    features: np.ndarray,
    targets: Mapping[str, np.ndarray],
    dim: int,
    head_sizes: Mapping[str, int],
    epochs: int = 25,
    batch: int = 256,
    seed: int = 0,
) -> keras.Model:
    """Fit the projection with the proxy loss (masked CE per attribute, weights EMBEDDING_ATTRIBUTES); returns the
    served model: features -> the pulled unit embedding (pulled_projection)."""
    keras.utils.set_random_seed(seed)
    mean, var = features.mean(axis=0), features.var(axis=0) + 1e-6
    training, projection = build_projection(features.shape[1], dim, head_sizes, mean, var)
    steps = epochs * math.ceil(len(features) / batch)
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, steps, alpha=0.01)
    training.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss={a: MaskedSmoothedCrossEntropy(np.ones(head_sizes[a]), smoothing=0.0, name=f"{a}_ce") for a in head_sizes},
        loss_weights={a: EMBEDDING_ATTRIBUTES[a] for a in head_sizes},
    )
    training.fit(features, dict(targets), batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    return pulled_projection(training, projection, {a: EMBEDDING_ATTRIBUTES[a] for a in head_sizes})


def pulled_projection(training: keras.Model, projection: keras.Model, strengths: Mapping[str, float]) -> keras.Model:
    """features -> the served embedding: the projection's unit vector through ProxyPull, with the proxies that
    `training` learned for each attribute of `strengths`."""
    proxies = [training.get_layer(f"{a}_proxies") for a in strengths]
    pull = ProxyPull([p.classes for p in proxies], list(strengths.values()), scale=proxies[0].scale, name="proxy_pull")
    embedding = pull(projection.output)
    pull.set_weights([np.concatenate([p.get_weights()[0] for p in proxies], axis=1)])
    return keras.Model(projection.input, embedding, name="pulled_projection")


def search_latency_ms(catalogue: np.ndarray, queries: np.ndarray, k: int = 5, repeats: int = 3) -> float:
    """Brute-force exact Euclidean top-k, one query at a time (what a flat index does), ms per query."""
    cat = np.ascontiguousarray(catalogue, dtype=np.float32)
    cat_sq = np.einsum("ij,ij->i", cat, cat)
    times = []
    for _ in range(repeats + 1):  # the first pass warms the caches and is dropped
        started = time.perf_counter()
        for q in queries:
            d = cat_sq - 2.0 * (cat @ q)
            np.argpartition(d, k)[:k]
        times.append((time.perf_counter() - started) / len(queries) * 1000.0)
    return float(min(times[1:]))  # the least disturbed pass: the CPU is shared


def retrieval_summary(
    queries: np.ndarray, catalogue: np.ndarray, q_labels: Mapping[str, np.ndarray], c_labels: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    from training.evaluate import retrieval_metrics

    r = retrieval_metrics(queries, catalogue, q_labels, c_labels)
    return {m: {a: round(v, 4) for a, v in r[m].items()} for m in ("unfiltered", "filtered")}


def choose_dimension(table: Mapping[int, Mapping[str, Any]], tolerance: float = 0.005) -> int:
    """The smallest dimension whose validation articleType precision@5 (unfiltered) is within `tolerance` of
    the best one's: memory and search time grow linearly with the dimension."""
    score = {d: row["precision_at_5"]["unfiltered"]["articleType"] for d, row in table.items()}
    best = max(score.values())
    return min(d for d, s in score.items() if s >= best - tolerance)


def train_embedder(dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions) -> TrainedModel:
    """The retrieval embedder on the trained classifier's frozen trunk (see the module docstring)."""
    data.configure_tensorflow(options.threads, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    classifier, trunk, source = load_frozen_trunk()

    full_train = dataset.split(split, "train")
    vocabularies = data.build_vocabularies(full_train, tuple(EMBEDDING_ATTRIBUTES), min_count=MIN_CLASS_COUNT)
    train = _limit(full_train, options.limit, options.seed)
    val = _limit(dataset.split(split, "val"), options.limit, options.seed)
    sizes = {a: len(vocabularies[a]) for a in EMBEDDING_ATTRIBUTES}
    log.info(
        "embedder: features of %d train (+ mirrored) and %d validation images from %s", len(train), len(val), source
    )
    f_train, f_train_flip, f_val = trunk_features(trunk, train, val)
    y = {a: np.concatenate([vocabularies[a].encode(train.labels[a])] * 2) for a in EMBEDDING_ATTRIBUTES}
    features = np.concatenate([f_train, f_train_flip])
    feature_seconds = time.monotonic() - started

    epochs = options.epochs or 25
    batch = options.batch_size or 256
    table: dict[int, dict[str, Any]] = {}
    projections: dict[int, keras.Model] = {}
    latency_queries = f_val[:200]
    unit = f_train / np.linalg.norm(f_train, axis=1, keepdims=True).clip(1e-12)
    unit_val = f_val / np.linalg.norm(f_val, axis=1, keepdims=True).clip(1e-12)
    table_raw = {
        "dim": int(f_train.shape[1]),
        "bytes_per_vector": int(f_train.shape[1]) * 4,
        "precision_at_5": retrieval_summary(unit_val, unit, val.labels, train.labels),
        "search_ms_per_query": round(search_latency_ms(unit, unit_val[:200]), 3),
    }
    log.info("trunk features (%d-d, L2-normalised), validation: %s", f_train.shape[1], table_raw)
    for dim in EMBEDDING_DIMS:
        t0 = time.monotonic()
        projection = train_projection(features, y, dim, sizes, epochs=epochs, batch=batch, seed=options.seed)
        e_train = np.asarray(projection.predict(f_train, batch_size=2048, verbose=0))
        e_val = np.asarray(projection.predict(f_val, batch_size=2048, verbose=0))
        table[dim] = {
            "dim": dim,
            "bytes_per_vector": dim * 4,
            "catalogue_mb_per_million": round(dim * 4 / 1.0, 1),
            "precision_at_5": retrieval_summary(e_val, e_train, val.labels, train.labels),
            "search_ms_per_query": round(
                search_latency_ms(e_train, np.asarray(projection.predict(latency_queries, verbose=0))), 3
            ),
            "train_seconds": round(time.monotonic() - t0, 1),
        }
        projections[dim] = projection
        log.info("dimension %d, validation: %s", dim, table[dim])
    chosen = choose_dimension(table)
    log.info("chosen dimension: %d", chosen)

    layers = keras.layers
    inputs = keras.Input((PRODUCTION_INPUT.height, PRODUCTION_INPUT.width, 3), name=PRODUCTION_INPUT.name)
    embedding = projections[chosen](trunk(inputs))
    embedding = layers.Identity(name="embedding")(embedding)
    model = keras.Model(inputs, embedding, name="embedder")
    seconds = time.monotonic() - started
    return TrainedModel(
        name="embedder",
        kind="embedder",
        model=model,
        input_spec=PRODUCTION_INPUT,
        embedding_dim=chosen,
        metrics={
            "validation": {
                "precision_at_5": table[chosen]["precision_at_5"],
                "dimension_tradeoff": {str(d): row for d, row in table.items()},
                "trunk_features_l2": table_raw,
            }
        },
        training={
            "recipe": "embedder",
            "parameters": model.count_params(),
            "seconds": round(seconds, 1),
            "feature_seconds": round(feature_seconds, 1),
            "classifier_seconds": classifier.training.get("seconds"),
            "trunk_from": str(source),
            "settings": {
                "projection": f"dense {EMBEDDING_HIDDEN} relu, dense D, L2 normalisation, pulled towards the proxies",
                "pull_strengths": EMBEDDING_ATTRIBUTES,
                "loss": "normalised-softmax proxies (cosine, scale 16), masked CE",
                "attribute_weights": EMBEDDING_ATTRIBUTES,
                "epochs": epochs,
                "batch_size": batch,
                "optimizer": "Adam 3e-3 cosine",
                "dims_tried": list(EMBEDDING_DIMS),
                "choice_rule": "smallest dimension within 0.5 points of the best validation "
                "articleType precision@5 (unfiltered)",
                "train_images": len(train),
                "val_images": len(val),
                "mirrored_copies": True,
            },
        },
        parity_pixels=dataset.split(split, "val").images[:256],
        run_dir=run_dir,
    )
