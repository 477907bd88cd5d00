"""The custom Keras objects of the production models: the masked loss and accuracy the recipes train with, and the
layers inside the exported graphs (HierarchicalDecoding, CosineProxies, ProxyPull; the text encoder's MaskedMean and
UnitNorm).

Every class is registered with Keras when this module is imported, so a saved run (model.keras) loads wherever
`training.export` is imported (it imports this module).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras

# --------------------------------------------------------------------------------------------------------------
# Loss and metric


@keras.saving.register_keras_serializable(package="fashionsearch")
class MaskedSmoothedCrossEntropy(keras.losses.Loss):
    """Cross-entropy from logits with label smoothing and per-class weights; label -1 contributes nothing."""

    def __init__(
        self, class_weights: Iterable[float], smoothing: float, name: str = "masked_ce", **kwargs: Any
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


# --------------------------------------------------------------------------------------------------------------
# Layers of the exported graphs


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


# --------------------------------------------------------------------------------------------------------------
# The text encoder's layers (training/recipes/text.py)


@keras.saving.register_keras_serializable(package="fashionsearch")
class MaskedMean(keras.layers.Layer):
    """Mean of the n-gram vectors over the real ids (id 0 pads a batch)."""

    def call(self, inputs: Any) -> Any:
        vectors, ids = inputs
        mask = keras.ops.expand_dims(keras.ops.cast(keras.ops.greater(ids, 0), vectors.dtype), -1)
        total = keras.ops.sum(vectors * mask, axis=1)
        return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="fashionsearch")
class UnitNorm(keras.layers.Layer):
    """L2 normalisation, as the image embedder's vectors have."""

    def call(self, x: Any) -> Any:
        norm = keras.ops.sqrt(keras.ops.maximum(keras.ops.sum(x * x, axis=-1, keepdims=True), 1e-12))
        return x / norm


@keras.saving.register_keras_serializable(package="fashionsearch")
class StopGradient(keras.layers.Layer):
    """Identity forward, no gradient back: the lite recipe's embedder projections learn on the trunk's features
    without moving the trunk."""

    def call(self, x: Any) -> Any:
        return keras.ops.stop_gradient(x)


# The detector's losses (training/recipes/detector.py), CenterNet's.


@keras.saving.register_keras_serializable(package="fashionsearch")
def focal_loss(y_true: Any, y_pred: Any) -> Any:
    """CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4), summed and divided by the centres."""
    ops = keras.ops
    p = ops.clip(y_pred, 1e-4, 1.0 - 1e-4)
    positive = ops.cast(ops.greater_equal(y_true, 0.999), "float32")
    pos_loss = -ops.log(p) * ops.square(1.0 - p) * positive
    neg_loss = -ops.log(1.0 - p) * ops.square(p) * ops.power(1.0 - y_true, 4.0) * (1.0 - positive)
    count = ops.maximum(ops.sum(positive), 1.0)
    return (ops.sum(pos_loss) + ops.sum(neg_loss)) / count


@keras.saving.register_keras_serializable(package="fashionsearch")
def size_loss(y_true: Any, y_pred: Any) -> Any:
    """L1 on log width and log height at the centre cells (y_true: log w, log h, mask)."""
    ops = keras.ops
    mask = y_true[..., 2:3]
    diff = ops.abs(ops.log(ops.maximum(y_pred, 1e-3)) - y_true[..., :2]) * mask
    return ops.sum(diff) / ops.maximum(ops.sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="fashionsearch")
def offset_loss(y_true: Any, y_pred: Any) -> Any:
    """L1 on the centre's position inside its cell, at the centre cells (y_true: dx, dy, mask)."""
    ops = keras.ops
    mask = y_true[..., 2:3]
    diff = ops.abs(y_pred - y_true[..., :2]) * mask
    return ops.sum(diff) / ops.maximum(ops.sum(mask), 1.0)
