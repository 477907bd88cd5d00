"""The paper's two models, our baselines: the six-class CNN and the convolutional autoencoder (16-d latent)."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from fashionsearch.model_contract import InputSpec
from training import data
from training.recipe import Head, TrainedModel, TrainOptions
from training.trainer import fit

log = logging.getLogger(__name__)

# Both paper models see 60x60 RGB scaled to [0, 1]; the 80x60 photos are stretched to it, as in the paper.
PAPER_INPUT = InputSpec(name="image", height=60, width=60, scale=1.0 / 255.0, resize="stretch")
CNN_PARAMETERS = 146_566
AUTOENCODER_STEPS = 50
AUTOENCODER_MINUTES = 20.0
AUTOENCODER_VAL_IMAGES = 512
BN_MOMENTUM = 0.9
PAPER_ACCURACY = 0.85


def build_cnn(num_classes: int = len(data.PAPER_CLASSES)) -> keras.Model:
    """Conv 32 3x3, MaxPool 3, Conv 32 3x3, MaxPool 3, Flatten, Dense 32/64/128/256/256, softmax: 146,566
    parameters for six classes."""
    layers = keras.layers
    inputs = keras.Input((PAPER_INPUT.height, PAPER_INPUT.width, 3), name=PAPER_INPUT.name)
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(3)(x)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D(3)(x)
    x = layers.Flatten()(x)
    for units in (32, 64, 128, 256, 256):
        x = layers.Dense(units, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="category")(x)
    return keras.Model(inputs, outputs, name="paper_cnn")


def build_autoencoder(latent_dim: int = 16) -> tuple[keras.Model, keras.Model]:
    """(autoencoder, encoder). Encoder: three blocks Conv2D (32, 64, 64 filters, 3x3, stride 2) + LeakyReLU(0.2)
    + BatchNormalization, Flatten, Dense latent. Decoder mirrors it with Conv2DTranspose; 60 -> 30 -> 15 -> 8
    does not invert exactly (8 -> 16 -> 32 -> 64), so the decoder crops 2 pixels per side before the final
    3-filter sigmoid convolution.

    BatchNormalization uses momentum 0.9 instead of Keras' 0.99: with the few hundred steps this CPU allows, the
    0.99 moving statistics lag the weights so far that inference-mode loss stayed ~3x the training loss (measured:
    0.066 vs 0.022 MSE after 250 steps)."""
    layers = keras.layers
    inputs = keras.Input((PAPER_INPUT.height, PAPER_INPUT.width, 3), name=PAPER_INPUT.name)
    x = inputs
    for filters in (32, 64, 64):
        x = layers.Conv2D(filters, 3, strides=2, padding="same")(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    volume = tuple(int(d) for d in x.shape[1:])
    x = layers.Flatten()(x)
    latent = layers.Dense(latent_dim, name="embedding")(x)
    encoder = keras.Model(inputs, latent, name="paper_encoder")

    y = layers.Dense(int(np.prod(volume)))(latent)
    y = layers.Reshape(volume)(y)
    for filters in (64, 64, 32):
        y = layers.Conv2DTranspose(filters, 3, strides=2, padding="same")(y)
        y = layers.LeakyReLU(negative_slope=0.2)(y)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM)(y)
    extra_h = int(y.shape[1]) - PAPER_INPUT.height
    extra_w = int(y.shape[2]) - PAPER_INPUT.width
    y = layers.Cropping2D(((extra_h // 2, extra_h - extra_h // 2), (extra_w // 2, extra_w - extra_w // 2)))(y)
    y = layers.Conv2DTranspose(3, 3, padding="same")(y)
    outputs = layers.Activation("sigmoid", name="reconstruction")(y)
    autoencoder = keras.Model(inputs, outputs, name="paper_autoencoder")
    return autoencoder, encoder


def _limit(ds: data.Dataset, targets: np.ndarray | None, limit: int | None, seed: int):
    if limit is None or limit >= len(ds):
        return ds, targets
    index = np.sort(np.random.default_rng(seed).choice(len(ds), size=limit, replace=False))
    return ds.subset(index), (targets[index] if targets is not None else None)


def _parity_pixels(val: data.Dataset, n: int = 256) -> np.ndarray:
    return val.images[: min(n, len(val))]


def train_cnn(dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions) -> TrainedModel:
    """The paper's classifier on its balanced six-class subset (about 400 per class), our train/val split."""
    data.configure_tensorflow(options.threads, options.seed)
    subset, targets = data.paper_subset(dataset, per_class=400, seed=20240601)
    in_split = np.asarray([split.get(int(i)) for i in subset.ids])
    train_idx, val_idx = np.flatnonzero(in_split == "train"), np.flatnonzero(in_split == "val")
    train, y_train = _limit(subset.subset(train_idx), targets[train_idx], options.limit, options.seed)
    val, y_val = _limit(subset.subset(val_idx), targets[val_idx], options.limit, options.seed)
    log.info("paper CNN: %d train, %d validation images (balanced six-class subset)", len(train), len(val))

    batch = options.batch_size or 32
    epochs = options.epochs or 100
    augment = data.Augmentation()
    train_ds = data.make_tf_dataset(
        data.images_for_input(train.images, PAPER_INPUT),
        y_train,
        PAPER_INPUT,
        batch,
        shuffle=True,
        augment=augment,
        seed=options.seed,
    )
    val_pixels = data.images_for_input(val.images, PAPER_INPUT)
    val_ds = data.make_tf_dataset(val_pixels, y_val, PAPER_INPUT, 256)

    model = build_cnn()
    if model.count_params() != CNN_PARAMETERS:
        raise AssertionError(f"paper CNN has {model.count_params()} parameters, expected {CNN_PARAMETERS}")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=options.keras_jit,
    )
    result = fit(
        model,
        train_ds,
        val_ds,
        run_dir,
        epochs,
        monitor="val_loss",
        lr_patience=4,
        stop_patience=10,
        verbose=options.verbose,
        settings={
            "batch_size": batch,
            "optimizer": "adam 1e-3",
            "augmentation": augment.__dict__,
            "train_images": len(train),
            "val_images": len(val),
            "per_class": 400,
        },
    )
    val_loss, val_acc = model.evaluate(val_ds, verbose=0)
    return TrainedModel(
        name="paper-cnn",
        kind="classifier",
        model=model,
        input_spec=PAPER_INPUT,
        heads=(Head(attribute="category", labels=data.PAPER_CLASSES),),
        metrics={
            "validation": {"accuracy": {"category": round(float(val_acc), 4)}, "loss": round(float(val_loss), 4)},
            "paper": {"accuracy": PAPER_ACCURACY},
        },
        training={"recipe": "paper-cnn", "parameters": model.count_params(), **result.to_dict()},
        parity_pixels=_parity_pixels(dataset.split(split, "val")),
        run_dir=run_dir,
    )


def train_autoencoder(
    dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions
) -> TrainedModel:
    """The paper's autoencoder on the whole training split (MSE, Adam); the encoder is the exported embedder."""
    data.configure_tensorflow(options.threads, options.seed)
    train, _ = _limit(dataset.split(split, "train"), None, options.limit, options.seed)
    val, _ = _limit(dataset.split(split, "val"), None, options.limit, options.seed)
    log.info("paper autoencoder: %d train, %d validation images", len(train), len(val))
    batch = options.batch_size or 64
    # One pass over the 32k training images takes 10-30 minutes on the shared 2-core CPU, so an "epoch" here is
    # AUTOENCODER_STEPS batches of the shuffled, repeated training split and the run has a wall-clock budget;
    # validation each epoch uses the first AUTOENCODER_VAL_IMAGES validation images, the final number all of them.
    epochs = options.epochs or 200
    max_minutes = options.max_minutes if options.max_minutes is not None else AUTOENCODER_MINUTES
    steps = max(1, min(AUTOENCODER_STEPS, len(train) // batch))
    train_ds = data.make_tf_dataset(
        data.images_for_input(train.images, PAPER_INPUT),
        None,
        PAPER_INPUT,
        batch,
        shuffle=True,
        seed=options.seed,
        repeat=True,
    )
    val_pixels = data.images_for_input(val.images, PAPER_INPUT)
    val_ds = data.make_tf_dataset(val_pixels, None, PAPER_INPUT, 256)
    quick_val_ds = data.make_tf_dataset(val_pixels[:AUTOENCODER_VAL_IMAGES], None, PAPER_INPUT, 256)
    autoencoder, encoder = build_autoencoder(16)
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=options.keras_jit)
    result = fit(
        autoencoder,
        train_ds,
        quick_val_ds,
        run_dir,
        epochs,
        monitor="val_loss",
        lr_patience=3,
        stop_patience=6,
        verbose=options.verbose,
        steps_per_epoch=steps,
        max_seconds=max_minutes * 60,
        settings={
            "batch_size": batch,
            "optimizer": "adam 1e-3",
            "loss": "mse",
            "augmentation": None,
            "train_images": len(train),
            "val_images_per_epoch": min(len(val), AUTOENCODER_VAL_IMAGES),
            "latent_dim": 16,
        },
    )
    images_seen = result.batches * batch
    result.settings["train_images_seen"] = images_seen
    result.settings["passes_over_train_split"] = round(images_seen / max(1, len(train)), 2)
    val_loss = float(autoencoder.evaluate(val_ds, verbose=0))
    return TrainedModel(
        name="paper-autoencoder",
        kind="embedder",
        model=encoder,
        input_spec=PAPER_INPUT,
        embedding_dim=16,
        metrics={"validation": {"reconstruction_mse": round(val_loss, 6)}},
        training={
            "recipe": "paper-autoencoder",
            "parameters": autoencoder.count_params(),
            "encoder_parameters": encoder.count_params(),
            **result.to_dict(),
        },
        extra_models={"autoencoder.onnx": autoencoder},
        parity_pixels=_parity_pixels(val),
        run_dir=run_dir,
    )
