"""The scratch embedder (models 5, `models/embedder-scratch`; the served one is `train lite-embedder`).

Embedder (`python -m training train scratch-embedder`)
    The classifier's trunk, frozen, plus a small projection (one hidden layer of EMBEDDING_HIDDEN ReLU units, then
    D dimensions), L2-normalised (Euclidean distance on the unit sphere). The hidden layer raised validation
    articleType precision@5 at D=32 from 78.1% to 80.5% (unfiltered) and 82.4% to 84.6% (filtered) over a linear
    projection; its cost is small beside the trunk's (the embedder runs at about 3,500 images/s at batch 64).
    The projection is trained with a proxy-based metric loss (normalised-softmax / cosine proxies, one set per
    attribute: articleType, baseColour, gender) on the trunk's features of the training split (original +
    mirrored images). The served vector is then pulled part of the way towards the proxies it most likely
    belongs to and re-normalised (ProxyPull, inside the exported graph): classes get tighter at the same
    dimension. It trains in minutes, so every D in SCRATCH_EMBEDDING_DIMS is trained and the dimension is chosen on the
    validation split (precision@5); the trade-off table goes into model.json.

Only the validation split is used for any choice; the test split is touched by `python -m training evaluate`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training import data
from training.embedding import (
    EMBEDDING_ATTRIBUTES,
    EMBEDDING_HIDDEN,
    choose_dimension,
    pulled_projection,
    retrieval_summary,
)
from training.heads import MIN_CLASS_COUNT
from training.layers import CosineProxies, MaskedSmoothedCrossEntropy
from training.metrics import search_latency_ms
from training.recipe import TrainedModel, TrainOptions
from training.scratch_trunk import SCRATCH_INPUT, load_frozen_trunk, trunk_features

log = logging.getLogger(__name__)

#: Every dimension is trained (minutes each) and one chosen on validation (choose_dimension).
SCRATCH_EMBEDDING_DIMS = (16, 32, 64, 128)
DEFAULT_EMBEDDING_DIM = 64


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


def train_embedder(dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions) -> TrainedModel:
    """The retrieval embedder on the trained classifier's frozen trunk (see the module docstring)."""
    data.configure_tensorflow(options.threads, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    classifier, trunk, source = load_frozen_trunk()

    full_train = dataset.split(split, "train")
    vocabularies = data.build_vocabularies(full_train, tuple(EMBEDDING_ATTRIBUTES), min_count=MIN_CLASS_COUNT)
    train = full_train.at_most(options.limit, options.seed)
    val = dataset.split(split, "val").at_most(options.limit, options.seed)
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
    for dim in SCRATCH_EMBEDDING_DIMS:
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
    inputs = keras.Input((SCRATCH_INPUT.height, SCRATCH_INPUT.width, 3), name=SCRATCH_INPUT.name)
    embedding = projections[chosen](trunk(inputs))
    embedding = layers.Identity(name="embedding")(embedding)
    model = keras.Model(inputs, embedding, name="embedder")
    seconds = time.monotonic() - started
    return TrainedModel(
        name="embedder",
        kind="embedder",
        model=model,
        input_spec=SCRATCH_INPUT,
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
                "dims_tried": list(SCRATCH_EMBEDDING_DIMS),
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
