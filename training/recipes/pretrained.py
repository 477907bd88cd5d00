"""Production models (6 to 8): an ImageNet-pretrained EfficientNet-Lite0 trunk fine-tuned on shopper-like photos.

Classifier (`python -m training train lite-classifier`)
    The packshots are upsampled to 144x108 (LITE_INPUT; models 7 used 128x96) and go through Lite0 (training/lite.py)
    with its ImageNet weights. The first SPLIT_AT of its 16 blocks stay frozen: their outputs are computed once, with
    onnxruntime, for VIEWS views of every training image (view 0 the packshot, mirrored at random; the others random
    shopper views from training/shopper.py: new backgrounds, light, colour casts, noise, blur, JPEG, crops, tilt, scale,
    occlusion) and cached, so training pays only for the rest of the trunk. The rest of the trunk and one dropout +
    dense head per attribute are trained on the cached views with the classifier's losses (label smoothing, class
    weights, masked labels) under a wall-clock budget (warm-up + cosine over progress). Temperatures are fitted on the
    validation split's packshots and shopper views together, then the hierarchy decoding of classifier 5 is added.
    Beside the heads, projections for the embedder (one per dimension in EMBEDDING_DIMS, proxy loss on
    articleType, baseColour and gender) learn on the same pooled features with the gradient stopped, so they
    cost little and leave the classifier's trunk as it is.

Embedder (`python -m training train lite-embedder`, after the classifier)
    The classifier's trunk and one trained projection, pulled towards its proxies (ProxyPull) as in embedder 5;
    the dimension is chosen on validation precision@5 of shopper views searched against the packshot catalogue.

Only the validation split is used for any choice.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fashionsearch.model_contract import InputSpec, normalize
from training import data, lite, shopper
from training.export import keras_to_onnx
from training.inference import onnx_session
from training.layers import CosineProxies, MaskedSmoothedCrossEntropy, StopGradient
from training.metrics import class_weights, top1_accuracy
from training.recipe import Head, TrainedModel, TrainOptions
from training.recipes.classifier import (
    CLASS_WEIGHT_POWER,
    HEAD_ATTRIBUTES,
    LABEL_SMOOTHING,
    LOSS_WEIGHTS,
    MIN_CLASS_COUNT,
    WARMUP,
    calibrate,
    calibrated_outputs,
)
from training.recipes.embedder import EMBEDDING_ATTRIBUTES, choose_dimension, pulled_projection, retrieval_summary
from training.recipes.hierarchy import HIERARCHY, decode_hierarchy, hierarchy_matrices
from training.trainer import ProgressSchedule

log = logging.getLogger(__name__)

LITE_INPUT = InputSpec(name="image", height=144, width=108, **lite.LITE_SCALING)
SPLIT_AT = 8  # blocks frozen and cached (stride 16: 9x7x80 per view at 144x108)
VIEWS = 5  # per training image: the packshot and four shopper views
DEFAULT_MINUTES = 50.0
DEFAULT_BATCH = 64
PEAK_LR = 6e-4
WEIGHT_DECAY = 1e-5
HEAD_DROPOUT = 0.2
EMBEDDING_DIMS = (32, 64, 128)
EMBEDDING_HIDDEN = 1024


@dataclass(frozen=True)
class TrunkPlan:
    """What the trunk sees and where it is cut: the input size, the blocks frozen and cached, views per image.
    The recipe's plan is the default; `python -m training probe-lite` measures others."""

    input_spec: InputSpec = LITE_INPUT
    split_at: int = SPLIT_AT
    views: int = VIEWS

    @property
    def name(self) -> str:
        return f"{self.input_spec.height}x{self.input_spec.width}-frozen{self.split_at}-views{self.views}"


# --------------------------------------------------------------------------------------------------------------
# Cached views of the frozen blocks


def early_session(early: keras.Model, threads: int, work: Path, input_spec: InputSpec = LITE_INPUT) -> Any:
    """The frozen blocks in onnxruntime: about 3x Keras' speed on this CPU, and the same numbers within 1e-5."""
    path = work / "early.onnx"
    spec = InputSpec(name="scaled_image", height=input_spec.height, width=input_spec.width, **lite.LITE_SCALING)
    keras_to_onnx(early, spec, path)
    return onnx_session(path, threads=threads)


def early_features(
    session: Any, images: np.ndarray, input_spec: InputSpec = LITE_INPUT, chunk: int = 256
) -> np.ndarray:
    """uint8 packshot-size images -> float16 outputs of the frozen blocks."""
    name = session.get_inputs()[0].name
    out = []
    for start in range(0, len(images), chunk):
        pixels = normalize(data.images_for_input(images[start : start + chunk], input_spec), input_spec)
        out.append(session.run(None, {name: pixels})[0].astype(np.float16))
    return np.concatenate(out)


def shopper_views(images: np.ndarray, seed: int, donors: np.ndarray, chunk: int = 512) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [shopper.augment_views(images[s : s + chunk], rng, donors) for s in range(0, len(images), chunk)]
    )


def training_views(images: np.ndarray, seed: int, count: int) -> Iterator[np.ndarray]:
    """`count` views of every uint8 packshot, one array per view: view 0 the packshots, each mirrored at random;
    the others random shopper views (seeded, clutter cut from other packshots of the same set)."""
    rng = np.random.default_rng(seed)
    for v in range(count):
        if v == 0:
            flip = rng.random(len(images)) < 0.5
            yield np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        else:
            donors = images[rng.permutation(len(images))[:2000]]
            yield shopper_views(images, seed + v, donors)


def cached_views(
    train_images: np.ndarray,
    val_images: np.ndarray,
    early: keras.Model,
    run_dir: Path,
    seed: int,
    threads: int,
    plan: TrunkPlan = TrunkPlan(),
) -> dict[str, np.ndarray]:
    """{"train": (plan.views * N, ...) view-major, "val": packshots, "val_shopper": one shopper view each}, cached in
    run_dir/views-*.npy (reused when the images, views and seed are the same)."""
    key = {
        "train": len(train_images),
        "val": len(val_images),
        "views": plan.views,
        "seed": seed,
        "split_at": plan.split_at,
        "input": [plan.input_spec.height, plan.input_spec.width],
        "augment": shopper.AUGMENT_VERSION,
    }
    meta = run_dir / "views.json"
    names = ("train", "val", "val_shopper")
    if (
        meta.is_file()
        and json.loads(meta.read_text()) == key
        and all((run_dir / f"views-{n}.npy").is_file() for n in names)
    ):
        return {n: np.load(run_dir / f"views-{n}.npy", mmap_mode="r") for n in names}
    started = time.monotonic()
    session = early_session(early, threads, run_dir, plan.input_spec)
    parts = []
    for v, views in enumerate(training_views(train_images, seed, plan.views)):
        parts.append(early_features(session, views, plan.input_spec))
        log.info("view %d of %d cached (%.0f s)", v + 1, plan.views, time.monotonic() - started)
    out = {
        "train": np.concatenate(parts),
        "val": early_features(session, val_images, plan.input_spec),
        # A fixed seed of its own: validation shopper views never match a training view.
        "val_shopper": early_features(
            session, shopper_views(val_images, seed + 1000, train_images[:2000]), plan.input_spec
        ),
    }
    for n, a in out.items():
        np.save(run_dir / f"views-{n}.npy", a)
    meta.write_text(json.dumps(key))
    log.info("views cached in %.0f s", time.monotonic() - started)
    return out


class ViewBatches(keras.utils.PyDataset):
    """Shuffled batches of cached views (float16 -> float32) and their labels, a fresh order every epoch."""

    def __init__(self, features: np.ndarray, targets: Mapping[str, np.ndarray], batch: int, seed: int) -> None:
        super().__init__()
        self.features, self.targets, self.batch = features, dict(targets), batch
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(features))

    def __len__(self) -> int:
        return math.ceil(len(self.features) / self.batch)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        idx = np.sort(self.order[i * self.batch : (i + 1) * self.batch])
        return np.asarray(self.features[idx], dtype=np.float32), {k: v[idx] for k, v in self.targets.items()}

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.features))


def head_losses(y_train: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> dict[str, Any]:
    """The classifier's loss per head: label smoothing, class weights, missing labels masked."""
    return {
        a: MaskedSmoothedCrossEntropy(
            class_weights(y_train[a], sizes[a], CLASS_WEIGHT_POWER), smoothing=LABEL_SMOOTHING, name=f"{a}_ce"
        )
        for a in HEAD_ATTRIBUTES
    }


def fit_on_views(
    model: keras.Model,
    features: np.ndarray,
    targets: Mapping[str, np.ndarray],
    losses: Mapping[str, Any],
    weights: Mapping[str, float],
    options: TrainOptions,
    epochs: int,
    minutes: float,
    peak_lr: float = PEAK_LR,
) -> tuple[ProgressSchedule, float]:
    """AdamW with warm-up + cosine over progress (steps or the wall-clock budget, whichever runs out first) on
    shuffled batches of cached views; the schedule (steps, progress) and the seconds it took."""
    model.compile(
        optimizer=keras.optimizers.AdamW(peak_lr, weight_decay=WEIGHT_DECAY, clipnorm=2.0),
        loss=dict(losses),
        loss_weights=dict(weights),
        jit_compile=False,
    )
    batches = ViewBatches(features, targets, options.batch_size or DEFAULT_BATCH, options.seed)
    schedule = ProgressSchedule(peak_lr, epochs * len(batches), 60.0 * minutes, WARMUP)
    started = time.monotonic()
    model.fit(batches, epochs=epochs, verbose=options.verbose, callbacks=[schedule])
    seconds = time.monotonic() - started
    log.info("trained %d steps in %.0f s (progress %.2f)", schedule.steps, seconds, schedule.progress)
    return schedule, seconds


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


# --------------------------------------------------------------------------------------------------------------
# The model


def build_projection(dim: int, name: str) -> keras.Model:
    """pooled trunk features (1280) -> unit embedding of `dim`."""
    inputs = keras.Input((lite.HEAD,), name=f"{name}_in")
    x = keras.layers.Dense(EMBEDDING_HIDDEN, activation="relu", name=f"{name}_hidden")(inputs)
    x = keras.layers.Dense(dim, use_bias=False, name=f"{name}_dense")(x)
    return keras.Model(inputs, keras.layers.UnitNormalization(name=f"{name}_unit")(x), name=name)


def build_training_model(
    late: keras.Model, head_sizes: Mapping[str, int], embedding_sizes: Mapping[str, int]
) -> tuple[keras.Model, dict[int, keras.Model]]:
    """cached early features -> {attribute logits, emb<D>_<attribute> proxy logits}; and the projections."""
    layers = keras.layers
    inputs = keras.Input(late.input.shape[1:], name="early_features")
    pooled = late(inputs)
    h = layers.Dropout(HEAD_DROPOUT, name="heads_dropout")(pooled)
    outputs = {a: layers.Dense(n, name=f"{a}_logits")(h) for a, n in head_sizes.items()}
    frozen = StopGradient(name="stop_gradient")(pooled)
    projections = {}
    for dim in EMBEDDING_DIMS:
        projection = build_projection(dim, f"emb{dim}")
        z = projection(frozen)
        for a, n in embedding_sizes.items():
            outputs[f"emb{dim}_{a}"] = CosineProxies(n, name=f"emb{dim}_{a}_proxies")(z)
        projections[dim] = projection
    return keras.Model(inputs, outputs, name="lite_training"), projections


def training_losses(
    y_train: Mapping[str, np.ndarray], sizes: Mapping[str, int]
) -> tuple[dict[str, Any], dict[str, float]]:
    """build_training_model's losses and their weights: the heads' and the embedding projections' proxy losses."""
    losses = head_losses(y_train, sizes)
    weights: dict[str, float] = dict(LOSS_WEIGHTS)
    for d in EMBEDDING_DIMS:
        for a in EMBEDDING_ATTRIBUTES:
            losses[f"emb{d}_{a}"] = MaskedSmoothedCrossEntropy(np.ones(sizes[a]), smoothing=0.0, name=f"emb{d}_{a}_ce")
            weights[f"emb{d}_{a}"] = EMBEDDING_ATTRIBUTES[a]
    return losses, weights


def training_targets(y_train: Mapping[str, np.ndarray], views: int) -> dict[str, np.ndarray]:
    """The labels of `views` view-major copies of the training images, for every output of build_training_model."""
    targets = {a: np.tile(y_train[a], views) for a in HEAD_ATTRIBUTES}
    return targets | {f"emb{d}_{a}": targets[a] for d in EMBEDDING_DIMS for a in EMBEDDING_ATTRIBUTES}


def pretrained_trunk(plan: TrunkPlan = TrunkPlan()) -> tuple[keras.Model, keras.Model, dict[str, Any]]:
    early, late = lite.build_trunk(plan.input_spec.height, plan.input_spec.width, plan.split_at)
    weights, provenance = lite.load_converted()
    lite.load_weights([early, late], weights)
    early.trainable = False
    return early, late, provenance


def predict_on_views(model: keras.Model, features: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(features), batch):
        for k, v in model(np.asarray(features[s : s + batch], dtype=np.float32), training=False).items():
            out.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in out.items()}


def train_classifier(
    dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions
) -> TrainedModel:
    data.configure_tensorflow(options.threads, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    labelled = LabelledSplits.of(dataset, split, options)
    full_train, vocabularies, train, val = labelled.full_train, labelled.vocabularies, labelled.train, labelled.val
    sizes, y_train, y_val = labelled.sizes, labelled.y_train, labelled.y_val
    embedding_sizes = {a: sizes[a] for a in EMBEDDING_ATTRIBUTES}

    early, late, provenance = pretrained_trunk()
    views = cached_views(train.images, val.images, early, run_dir, options.seed, options.threads)
    cache_seconds = time.monotonic() - started
    targets = training_targets(y_train, VIEWS)

    model, projections = build_training_model(late, sizes, embedding_sizes)
    losses, weights = training_losses(y_train, sizes)
    batch = options.batch_size or DEFAULT_BATCH
    epochs = options.epochs or 3  # passes over all cached views; the wall-clock budget usually ends it first
    minutes = DEFAULT_MINUTES if options.max_minutes is None else options.max_minutes
    schedule, fit_seconds = fit_on_views(model, views["train"], targets, losses, weights, options, epochs, minutes)
    model.save_weights(str(run_dir / "lite.weights.h5"))

    inputs = keras.Input((LITE_INPUT.height, LITE_INPUT.width, 3), name=LITE_INPUT.name)
    pooled = late(early(inputs))
    exported, validation = calibrated_classifier(model, inputs, pooled, views, y_val, full_train, vocabularies)
    for d, projection in projections.items():
        projection.save(run_dir / f"projection{d}.keras")
        proxies = {a: model.get_layer(f"emb{d}_{a}_proxies").get_weights()[0] for a in EMBEDDING_ATTRIBUTES}
        np.savez(run_dir / f"proxies{d}.npz", **proxies)
    keras.Model(inputs, pooled, name="trunk").save(run_dir / "trunk.keras")
    settings = {
        "input": f"{LITE_INPUT.height}x{LITE_INPUT.width} (80x60 packshots upsampled bilinearly)",
        "trunk": "EfficientNet-Lite0, ImageNet weights",
        "frozen_blocks": SPLIT_AT,
        "views_per_image": VIEWS,
        "batch_size": batch,
        "epochs_planned": epochs,
        "max_minutes": minutes,
        "peak_lr": PEAK_LR,
        "weight_decay": WEIGHT_DECAY,
        "optimizer": "AdamW, warm-up + cosine over progress",
        "head_dropout": HEAD_DROPOUT,
        "loss_weights": LOSS_WEIGHTS,
        "embedding_dims": list(EMBEDDING_DIMS),
        "train_images": len(train),
        "val_images": len(val),
        "seed": options.seed,
    }
    return labelled.classifier(
        exported,
        LITE_INPUT,
        validation,
        run_dir,
        {
            "recipe": "lite-classifier",
            "parameters": exported.count_params(),
            "seconds": round(time.monotonic() - started, 1),
            "view_cache_seconds": round(cache_seconds, 1),
            "fit_seconds": round(fit_seconds, 1),
            "steps": schedule.steps,
            "pretrained": provenance,
            "settings": settings,
        },
    )


def calibrated_classifier(
    model: keras.Model,
    inputs: Any,
    pooled: Any,
    views: Mapping[str, np.ndarray],
    y_val: Mapping[str, np.ndarray],
    full_train: data.Dataset,
    vocabularies: Mapping[str, Any],
) -> tuple[keras.Model, dict[str, Any]]:
    """image -> calibrated, hierarchy-decoded probabilities (the exported classifier), and its validation metrics.
    `model` maps cached early features to `{attribute}_logits`; `pooled` is the trunk's output on `inputs`.
    Temperatures are fitted on packshots and shopper views together: what the service will be sent."""
    clean, shopped = predict_on_views(model, views["val"]), predict_on_views(model, views["val_shopper"])
    both = {a: np.concatenate([clean[a], shopped[a]]) for a in HEAD_ATTRIBUTES}
    y_both = {a: np.concatenate([y_val[a], y_val[a]]) for a in HEAD_ATTRIBUTES}
    temperatures, _, calibration = calibrate(both, y_both)
    decoding, hierarchy = decode_hierarchy(
        both, temperatures, y_both, hierarchy_matrices(full_train, {a: vocabularies[a].labels for a in HIERARCHY})
    )
    accuracy = {
        "packshot": {a: top1_accuracy(clean[a], y_val[a]) for a in HEAD_ATTRIBUTES},
        "shopper_view": {a: top1_accuracy(shopped[a], y_val[a]) for a in HEAD_ATTRIBUTES},
    }
    log.info("validation accuracy (independent heads) %s; hierarchy %s", accuracy, hierarchy)
    logits = {a: model.get_layer(f"{a}_logits")(pooled) for a in HEAD_ATTRIBUTES}
    exported = keras.Model(inputs, calibrated_outputs(logits, temperatures, decoding), name="classifier")
    validation = {
        "accuracy": hierarchy["accuracy"] | {a: accuracy["packshot"][a] for a in HEAD_ATTRIBUTES if a not in HIERARCHY},
        "accuracy_independent_heads": accuracy,
        "calibration": calibration,
        "hierarchy": hierarchy,
    }
    return exported, validation


# --------------------------------------------------------------------------------------------------------------
# Embedder


def train_embedder(dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions) -> TrainedModel:
    data.configure_tensorflow(options.threads, options.seed)
    started = time.monotonic()
    source = run_dir.parent / "lite-classifier"  # the classifier's run folder beside this one
    if not (source / "trunk.keras").is_file():
        raise data.DataError(f"no trained lite classifier in {source}: run `python -m training train lite-classifier`")
    trunk = keras.models.load_model(source / "trunk.keras")
    full_train = dataset.split(split, "train")
    vocabularies = data.build_vocabularies(full_train, tuple(EMBEDDING_ATTRIBUTES), min_count=MIN_CLASS_COUNT)
    train = full_train.at_most(options.limit, options.seed)
    val = dataset.split(split, "val").at_most(options.limit, options.seed)
    sizes = {a: len(vocabularies[a]) for a in EMBEDDING_ATTRIBUTES}

    def pooled(images: np.ndarray) -> np.ndarray:
        return np.asarray(
            trunk.predict(data.make_tf_dataset(images, None, LITE_INPUT, 256), verbose=0), dtype=np.float32
        )

    f_catalogue = pooled(data.images_for_input(train.images, LITE_INPUT))
    f_val = pooled(data.images_for_input(val.images, LITE_INPUT))
    f_shopper = pooled(
        data.images_for_input(shopper_views(val.images, options.seed + 1000, train.images[:2000]), LITE_INPUT)
    )
    feature_seconds = time.monotonic() - started

    table: dict[int, dict[str, Any]] = {}
    served: dict[int, keras.Model] = {}
    for dim in EMBEDDING_DIMS:
        projection = keras.models.load_model(source / f"projection{dim}.keras")
        with np.load(source / f"proxies{dim}.npz") as saved:
            proxies = {a: saved[a] for a in EMBEDDING_ATTRIBUTES}
        training = _proxy_holder(projection, proxies, sizes, dim)
        pulled = pulled_projection(training, projection, EMBEDDING_ATTRIBUTES)
        e_cat = np.asarray(pulled.predict(f_catalogue, batch_size=2048, verbose=0))
        table[dim] = {
            "dim": dim,
            "bytes_per_vector": dim * 4,
            "precision_at_5": retrieval_summary(
                np.asarray(pulled.predict(f_shopper, batch_size=2048, verbose=0)), e_cat, val.labels, train.labels
            ),
            "precision_at_5_packshot": retrieval_summary(
                np.asarray(pulled.predict(f_val, batch_size=2048, verbose=0)), e_cat, val.labels, train.labels
            ),
        }
        served[dim] = pulled
        log.info("dimension %d, validation: %s", dim, table[dim])
    chosen = choose_dimension(table)
    inputs = keras.Input((LITE_INPUT.height, LITE_INPUT.width, 3), name=LITE_INPUT.name)
    embedding = keras.layers.Identity(name="embedding")(served[chosen](trunk(inputs)))
    model = keras.Model(inputs, embedding, name="embedder")
    classifier_json = json.loads((source / "trained.json").read_text()) if (source / "trained.json").is_file() else {}
    return TrainedModel(
        name="embedder",
        kind="embedder",
        model=model,
        input_spec=LITE_INPUT,
        embedding_dim=chosen,
        metrics={
            "validation": {
                "precision_at_5": table[chosen]["precision_at_5_packshot"],
                "precision_at_5_shopper_view": table[chosen]["precision_at_5"],
                "dimension_tradeoff": {str(d): row for d, row in table.items()},
            }
        },
        training={
            "recipe": "lite-embedder",
            "parameters": model.count_params(),
            "seconds": round(time.monotonic() - started, 1),
            "feature_seconds": round(feature_seconds, 1),
            "classifier_seconds": classifier_json.get("training", {}).get("seconds"),
            "trunk_from": str(source),
            "pretrained": classifier_json.get("training", {}).get("pretrained"),
            "settings": {
                "projection": f"dense {EMBEDDING_HIDDEN} relu, dense D, L2 normalisation, pulled towards the proxies",
                "trained": "beside the classifier's heads on the same views, gradient stopped at the trunk",
                "pull_strengths": EMBEDDING_ATTRIBUTES,
                "dims_tried": list(EMBEDDING_DIMS),
                "choice_rule": "smallest dimension within 0.5 points of the best validation articleType "
                "precision@5 (unfiltered) of shopper views against the packshot catalogue",
            },
        },
        parity_pixels=val.images[:256],
        run_dir=run_dir,
    )


def _proxy_holder(
    projection: keras.Model, proxies: Mapping[str, np.ndarray], sizes: Mapping[str, int], dim: int
) -> keras.Model:
    """A model with the trained CosineProxies layers named as pulled_projection expects."""
    z = projection.output
    outputs = {}
    for a in EMBEDDING_ATTRIBUTES:
        layer = CosineProxies(sizes[a], name=f"{a}_proxies")
        outputs[a] = layer(z)
        layer.set_weights([proxies[a]])
    return keras.Model(projection.input, outputs, name=f"proxies{dim}")
