"""Production models (6 to 8): an ImageNet-pretrained EfficientNet-Lite0 trunk fine-tuned on shopper-like photos.

Classifier (`python -m training train lite-classifier`)
    The packshots are upsampled to 144x108 (LITE_INPUT; models 7 used 128x96) and go through Lite0 (training/lite.py)
    with its ImageNet weights (`--trunk lite1` / `lite2`: the larger Lite1 / Lite2 instead). The blocks up to stride 16
    (SPLIT_AT = 8 of Lite0's 16, 11 of the others' 21) stay frozen: their outputs are computed once, with
    onnxruntime, for VIEWS views of every training image (view 0 the packshot, mirrored at random; the others random
    shopper views from training/shopper.py: new backgrounds, light, colour casts, noise, blur, JPEG, crops, tilt, scale,
    occlusion) and cached, so training pays only for the rest of the trunk. The rest of the trunk and one dropout +
    dense head per attribute are trained on the cached views with the classifier's losses (label smoothing, class
    weights, masked labels) under a wall-clock budget (warm-up + cosine over progress). Temperatures are fitted on the
    validation split's packshots and shopper views together, then the hierarchy decoding of classifier 5 is added.
    Beside the heads, projections for the embedder (one per dimension in LITE_EMBEDDING_DIMS, proxy loss on
    articleType, baseColour and gender) learn on the same pooled features with the gradient stopped, so they
    cost little and leave the classifier's trunk as it is.

Embedder (`python -m training train lite-embedder`, after the classifier)
    The classifier's trunk and one trained projection, pulled towards its proxies (ProxyPull) as in embedder 5;
    the dimension is chosen on validation precision@5 of shopper views searched against the packshot catalogue.

Only the validation split is used for any choice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training import data, lite, scenes, shopper
from training.embedding import (
    EMBEDDING_ATTRIBUTES,
    EMBEDDING_HIDDEN,
    choose_dimension,
    pulled_projection,
    retrieval_summary,
)
from training.heads import HEAD_ATTRIBUTES, HEAD_DROPOUT, LOSS_WEIGHTS, MIN_CLASS_COUNT, LabelledSplits, head_losses
from training.layers import CosineProxies, MaskedSmoothedCrossEntropy, StopGradient
from training.recipe import TrainedModel, TrainOptions
from training.view_cache import (
    DEFAULT_BATCH,
    LITE_INPUT,
    VIEWS,
    WEIGHT_DECAY,
    TrunkPlan,
    cached_views,
    calibrated_view_classifier,
    fit_on_views,
    shopper_views,
)

log = logging.getLogger(__name__)

DEFAULT_MINUTES = 50.0
LITE_PEAK_LR = 6e-4  # fine-tuning pretrained weights
#: One projection per dimension trained beside the classifier's heads; the lite embedder chooses among them.
LITE_EMBEDDING_DIMS = (32, 64, 128)


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
    for dim in LITE_EMBEDDING_DIMS:
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
    for d in LITE_EMBEDDING_DIMS:
        for a in EMBEDDING_ATTRIBUTES:
            losses[f"emb{d}_{a}"] = MaskedSmoothedCrossEntropy(np.ones(sizes[a]), smoothing=0.0, name=f"emb{d}_{a}_ce")
            weights[f"emb{d}_{a}"] = EMBEDDING_ATTRIBUTES[a]
    return losses, weights


def training_targets(y_train: Mapping[str, np.ndarray], views: int) -> dict[str, np.ndarray]:
    """The labels of `views` view-major copies of the training images, for every output of build_training_model."""
    targets = {a: np.tile(y_train[a], views) for a in HEAD_ATTRIBUTES}
    return targets | {f"emb{d}_{a}": targets[a] for d in LITE_EMBEDDING_DIMS for a in EMBEDDING_ATTRIBUTES}


def pretrained_trunk(
    plan: TrunkPlan = TrunkPlan(),  # noqa: B008 - frozen
) -> tuple[keras.Model, keras.Model, dict[str, Any]]:
    early, late = lite.build_trunk(plan.input_spec.height, plan.input_spec.width, plan.split_at, plan.variant)
    weights, provenance = lite.load_converted(variant=plan.variant)
    lite.load_weights([early, late], weights)
    early.trainable = False
    return early, late, provenance


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

    plan = TrunkPlan(
        split_at=lite.stride16_end(options.trunk),
        photographs=scenes.TRAIN_PHOTOS if options.photo_views else (),
        variant=options.trunk,
        mix=shopper.SCENE_MIX if options.scene_views else shopper.DEFAULT_MIX,
    )
    early, late, provenance = pretrained_trunk(plan)
    views = cached_views(train.images, val.images, early, run_dir, options.seed, options.threads, plan)
    cache_seconds = time.monotonic() - started
    targets = training_targets(y_train, VIEWS)

    model, projections = build_training_model(late, sizes, embedding_sizes)
    losses, weights = training_losses(y_train, sizes)
    batch = options.batch_size or DEFAULT_BATCH
    epochs = options.epochs or 3  # passes over all cached views; the wall-clock budget usually ends it first
    minutes = DEFAULT_MINUTES if options.max_minutes is None else options.max_minutes
    schedule, fit_seconds = fit_on_views(
        model, views["train"], targets, losses, weights, options, epochs, minutes, LITE_PEAK_LR
    )
    model.save_weights(str(run_dir / "lite.weights.h5"))

    inputs = keras.Input((LITE_INPUT.height, LITE_INPUT.width, 3), name=LITE_INPUT.name)
    pooled = late(early(inputs))
    exported, validation = calibrated_view_classifier(model, inputs, pooled, views, y_val, full_train, vocabularies)
    for d, projection in projections.items():
        projection.save(run_dir / f"projection{d}.keras")
        proxies = {a: model.get_layer(f"emb{d}_{a}_proxies").get_weights()[0] for a in EMBEDDING_ATTRIBUTES}
        np.savez(run_dir / f"proxies{d}.npz", **proxies)
    keras.Model(inputs, pooled, name="trunk").save(run_dir / "trunk.keras")
    settings = {
        "input": f"{LITE_INPUT.height}x{LITE_INPUT.width} (80x60 packshots upsampled bilinearly)",
        "trunk": f"EfficientNet-{options.trunk.capitalize()}, ImageNet weights",
        "frozen_blocks": plan.split_at,
        "views_per_image": VIEWS,
        "photo_views": list(plan.photographs),
        **({"scene_views": dataclasses.asdict(plan.mix)} if options.scene_views else {}),
        "batch_size": batch,
        "epochs_planned": epochs,
        "max_minutes": minutes,
        "peak_lr": LITE_PEAK_LR,
        "weight_decay": WEIGHT_DECAY,
        "optimizer": "AdamW, warm-up + cosine over progress",
        "head_dropout": HEAD_DROPOUT,
        "loss_weights": LOSS_WEIGHTS,
        "embedding_dims": list(LITE_EMBEDDING_DIMS),
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
    for dim in LITE_EMBEDDING_DIMS:
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
                "dims_tried": list(LITE_EMBEDDING_DIMS),
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
