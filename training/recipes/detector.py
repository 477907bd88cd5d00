"""The product detector (`python -m training train detector`): CenterNet-style, on the ImageNet Lite0 trunk.

Input 320x256 (H x W) letterboxed ("pad"), so boxes map back to the photo. The Lite0 trunk (training/lite.py, ImageNet
weights) gives features at stride 8 (after block 4), 16 (block 10) and 32 (block 15); a small top-down pyramid
(1x1 convs to FPN_WIDTH, nearest upsampling, sums) fuses them into one stride-8 map, two depthwise-separable convs
follow, then three 1x1 heads as DETECTOR_CONTRACT.md says: `heatmap` (one sigmoid channel per group of
training/scenes.py), `box_size` (width, height in input pixels, exp of the prediction times SIZE_UNIT) and
`offset` (the centre inside its cell, sigmoid). Losses: CenterNet's penalty-reduced focal loss on Gaussian-splatted
heatmaps, L1 on log sizes and on offsets at the centre cells.

The stem and blocks 0-4 stay frozen (ImageNet); their outputs are computed once per scene with onnxruntime and
cached, so a step pays only for blocks 5-15, the pyramid and the heads. Scenes are synthesised up front from
training-split packshots (training/scenes.py), seeded; validation scenes come from validation-split packshots.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fashionsearch.model_contract import InputSpec
from training import data, lite, scenes
from training.recipe import TrainedModel, TrainOptions
from training.recipes.pretrained import early_features, early_session
from training.trainer import JsonHistory, ProgressSchedule

log = logging.getLogger(__name__)

DETECTOR_INPUT = InputSpec(name="image", height=320, width=256, resize="pad", pad_value=128.0, **lite.LITE_SCALING)
STRIDE = 8
SPLIT_AT = 5  # blocks [0, 5) frozen and cached: their output is the stride-8 map (40 x 32 x 40 at 320x256)
TAPS = (11, 16)  # blocks [5, 11) end at stride 16, [11, 16) at stride 32
FPN_WIDTH = 64
SIZE_UNIT = 32.0  # box_size = SIZE_UNIT * exp(prediction): 0 means a 32-pixel box
HEATMAP_PRIOR = 0.01  # initial heatmap probability (CenterNet's bias -2.19), so the focal loss starts calm
GAUSSIAN_ALPHA = 0.54  # TTFNet's elliptical Gaussian: sigma = alpha * box side / 6
DEFAULT_SCENES = 12000
VAL_SCENES = 256
DEFAULT_MINUTES = 55.0
DEFAULT_BATCH = 32
PEAK_LR = 2e-3
WEIGHT_DECAY = 1e-4
WARMUP = 0.04
STEPS_PER_EPOCH = 150  # an "epoch" is only how often validation, history and the checkpoint are written
SIZE_WEIGHT, OFFSET_WEIGHT = 1.0, 1.0
#: Post-processing written to model.json (fashionsearch/detection.py applies it).
SCORE_THRESHOLD, MAX_DETECTIONS, NMS_IOU = 0.3, 50, 0.6


# --------------------------------------------------------------------------------------------------------------
# Targets


def targets(
    boxes: np.ndarray, groups: np.ndarray, height: int, width: int, classes: int, stride: int = STRIDE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmap (Hs, Ws, G), size (Hs, Ws, 3): log w, log h, mask; offset (Hs, Ws, 3): dx, dy, mask) for boxes
    (left, top, right, bottom) in input pixels. The centre cell of each box holds exactly 1 on its group's
    channel; the Gaussian around it reduces the penalty for near misses."""
    hs, ws = height // stride, width // stride
    heat = np.zeros((hs, ws, classes), dtype=np.float32)
    size = np.zeros((hs, ws, 3), dtype=np.float32)
    offset = np.zeros((hs, ws, 3), dtype=np.float32)
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32)
    # Larger boxes first, so a small box's centre written later wins a shared cell.
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) if len(boxes) else []
    for k in order:
        left, top, right, bottom = boxes[k]
        w, h = max(right - left, 1.0), max(bottom - top, 1.0)
        cx, cy = (left + right) / 2 / stride, (top + bottom) / 2 / stride
        ix, iy = min(int(cx), ws - 1), min(int(cy), hs - 1)
        sx, sy = max(GAUSSIAN_ALPHA * w / 6 / stride, 0.5), max(GAUSSIAN_ALPHA * h / 6 / stride, 0.5)
        gauss = np.exp(-((xx - ix) ** 2) / (2 * sx * sx) - ((yy - iy) ** 2) / (2 * sy * sy))
        g = int(groups[k])
        heat[..., g] = np.maximum(heat[..., g], gauss)
        heat[iy, ix, g] = 1.0
        size[iy, ix] = (math.log(w), math.log(h), 1.0)
        offset[iy, ix] = (cx - ix, cy - iy, 1.0)
    return heat, size, offset


def focal_loss(y_true: Any, y_pred: Any) -> Any:
    """CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4), summed and divided by the centres."""
    ops = keras.ops
    p = ops.clip(y_pred, 1e-4, 1.0 - 1e-4)
    positive = ops.cast(ops.greater_equal(y_true, 0.999), "float32")
    pos_loss = -ops.log(p) * ops.square(1.0 - p) * positive
    neg_loss = -ops.log(1.0 - p) * ops.square(p) * ops.power(1.0 - y_true, 4.0) * (1.0 - positive)
    count = ops.maximum(ops.sum(positive), 1.0)
    return (ops.sum(pos_loss) + ops.sum(neg_loss)) / count


def size_loss(y_true: Any, y_pred: Any) -> Any:
    """L1 on log width and log height at the centre cells (y_true: log w, log h, mask)."""
    ops = keras.ops
    mask = y_true[..., 2:3]
    diff = ops.abs(ops.log(ops.maximum(y_pred, 1e-3)) - y_true[..., :2]) * mask
    return SIZE_WEIGHT * ops.sum(diff) / ops.maximum(ops.sum(mask), 1.0)


def offset_loss(y_true: Any, y_pred: Any) -> Any:
    """L1 on the centre's position inside its cell, at the centre cells (y_true: dx, dy, mask)."""
    ops = keras.ops
    mask = y_true[..., 2:3]
    diff = ops.abs(y_pred - y_true[..., :2]) * mask
    return OFFSET_WEIGHT * ops.sum(diff) / ops.maximum(ops.sum(mask), 1.0)


# --------------------------------------------------------------------------------------------------------------
# The network


def build_head(early_shape: tuple[int, int, int], classes: int) -> keras.Model:
    """Frozen stride-8 features -> blocks 5-15 (trainable), the pyramid and the three heads."""
    layers = keras.layers
    c3 = keras.Input(early_shape, name="early_features")
    c4 = lite.apply_blocks(c3, SPLIT_AT, TAPS[0])
    c5 = lite.apply_blocks(c4, TAPS[0], TAPS[1])

    def lateral(x: Any, name: str) -> Any:
        return layers.Conv2D(FPN_WIDTH, 1, name=f"det_lateral{name}")(x)

    p = lateral(c5, "5")
    p = layers.Add(name="det_add4")([lateral(c4, "4"), layers.UpSampling2D(2, name="det_up4")(p)])
    p = layers.Add(name="det_add3")([lateral(c3, "3"), layers.UpSampling2D(2, name="det_up3")(p)])
    for k in range(2):
        p = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"det_dw{k}")(p)
        p = layers.Conv2D(FPN_WIDTH, 1, use_bias=False, name=f"det_pw{k}")(p)
        p = layers.BatchNormalization(name=f"det_bn{k}")(p)
        p = layers.ReLU(name=f"det_relu{k}")(p)
    prior = -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR)
    heat = layers.Conv2D(
        classes, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(prior), name="heatmap"
    )(p)
    size = layers.Conv2D(2, 1, kernel_initializer="zeros", name="det_size")(p)
    size = layers.Rescaling(SIZE_UNIT, name="box_size")(layers.Activation("exponential", name="det_size_exp")(size))
    offset = layers.Conv2D(2, 1, activation="sigmoid", name="offset")(p)
    return keras.Model(c3, [heat, size, offset], name="detector_head")


def build_detector(
    input_spec: InputSpec, classes: int, weights: dict[str, list[np.ndarray]] | None
) -> tuple[keras.Model, keras.Model, keras.Model]:
    """(early (frozen), head (trained on cached early features), full: image -> heatmap, box_size, offset)."""
    early = lite.build_early(input_spec.height, input_spec.width, SPLIT_AT)
    early.trainable = False
    head = build_head(tuple(int(d) for d in early.output.shape[1:]), classes)
    if weights is not None:
        lite.load_weights([early, head], weights)
    image = keras.Input((input_spec.height, input_spec.width, 3), name=input_spec.name)
    outputs = head(early(image))
    full = keras.Model(image, outputs, name="detector")
    return early, head, full


# --------------------------------------------------------------------------------------------------------------
# Cached scenes


def scene_arrays(
    pool: scenes.Products, count: int, input_spec: InputSpec, seed: int, session: Any, chunk: int = 256
) -> dict[str, np.ndarray]:
    """Synthesise `count` scenes and keep what training needs: early features (float16), targets, and the
    scenes' pixels only for the first chunk (parity images)."""
    classes = len(scenes.GROUPS)
    feats, heats, sizes, offsets = [], [], [], []
    first_pixels = None
    started = time.monotonic()
    for start in range(0, count, chunk):
        batch = scenes.training_scenes(pool, min(chunk, count - start), input_spec, seed + start)
        pixels = np.stack([s.image for s in batch])
        if first_pixels is None:
            first_pixels = pixels
        feats.append(early_features(session, pixels, input_spec))
        for s in batch:
            heat, size, offset = targets(s.boxes, s.groups, input_spec.height, input_spec.width, classes)
            heats.append((heat * 255 + 0.5).astype(np.uint8))  # 1/255 steps: 4x smaller, the peaks stay exactly 1
            sizes.append(size)
            offsets.append(offset)
        log.info("%d of %d scenes (%.0f s)", start + len(batch), count, time.monotonic() - started)
    assert first_pixels is not None
    return {
        "features": np.concatenate(feats),
        "heatmap": np.stack(heats),
        "size": np.stack(sizes),
        "offset": np.stack(offsets),
        "pixels": first_pixels,
    }


def cached_scenes(
    name: str, pool: scenes.Products, count: int, input_spec: InputSpec, seed: int, session: Any, run_dir: Path
) -> dict[str, np.ndarray]:
    """scene_arrays, saved as run_dir/scenes-<name>.npz and reused when the count, seed and input match."""
    path = run_dir / f"scenes-{name}.npz"
    key = {"count": count, "seed": seed, "input": [input_spec.height, input_spec.width], "products": len(pool)}
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == key:
        with np.load(path) as archive:
            return {k: archive[k] for k in archive.files}
    arrays = scene_arrays(pool, count, input_spec, seed, session)
    np.savez(path, **arrays)
    meta.write_text(json.dumps(key))
    return arrays


class SceneBatches(keras.utils.PyDataset):
    """Shuffled batches of cached scenes, a fresh order every epoch."""

    def __init__(self, arrays: dict[str, np.ndarray], batch: int, seed: int, steps: int | None = None) -> None:
        super().__init__()
        self.arrays, self.batch = arrays, batch
        self.rng = np.random.default_rng(seed)
        self.count = len(arrays["features"])
        self.order = self.rng.permutation(self.count)
        self.steps = steps or math.ceil(self.count / batch)
        self.position = 0

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if self.position + self.batch > self.count:
            self.order, self.position = self.rng.permutation(self.count), 0
        idx = np.sort(self.order[self.position : self.position + self.batch])
        self.position += self.batch
        a = self.arrays
        heat = a["heatmap"][idx].astype(np.float32) / 255.0
        return a["features"][idx].astype(np.float32), (heat, a["size"][idx], a["offset"][idx])


class SaveHead(keras.callbacks.Callback):
    """The head's weights after every epoch, so a stopped run still leaves a model to export."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.save_weights(self.path)


# --------------------------------------------------------------------------------------------------------------
# The recipe


def train_detector(dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions) -> TrainedModel:
    data.configure_tensorflow(options.threads, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = DETECTOR_INPUT
    classes = len(scenes.GROUPS)
    count = options.scenes or (DEFAULT_SCENES if options.limit is None else max(64, options.limit))
    train_pool = scenes.split_products(dataset, split, "train")
    val_pool = scenes.split_products(dataset, split, "val")
    log.info("%d training products, %d validation products cut out", len(train_pool), len(val_pool))

    weights, provenance = lite.load_converted() if options.limit is None else (None, {"weights": "random (smoke)"})
    early, head, full = build_detector(spec, classes, weights)
    session = early_session(early, options.threads, run_dir, spec)
    started = time.monotonic()
    train = cached_scenes("train", train_pool, count, spec, options.seed, session, run_dir)
    val_count = VAL_SCENES if options.limit is None else 32
    val = cached_scenes("val", val_pool, val_count, spec, options.seed + 10_000_000, session, run_dir)
    synthesis_s = time.monotonic() - started
    log.info("%d training and %d validation scenes ready in %.0f s", count, val_count, synthesis_s)

    batch = options.batch_size or DEFAULT_BATCH
    budget_s = 60.0 * (options.max_minutes if options.max_minutes is not None else DEFAULT_MINUTES)
    epochs = options.epochs or 10_000  # the time budget ends training
    steps = STEPS_PER_EPOCH if options.limit is None else 2
    optimizer = keras.optimizers.AdamW(PEAK_LR, weight_decay=WEIGHT_DECAY, clipnorm=5.0)
    head.compile(
        optimizer=optimizer, loss=[focal_loss, size_loss, offset_loss], jit_compile=options.keras_jit
    )
    schedule = ProgressSchedule(PEAK_LR, total_steps=epochs * steps, budget_s=budget_s, warmup=WARMUP)
    history = JsonHistory(run_dir / "history.json")
    fit_started = time.monotonic()
    head.fit(
        SceneBatches(train, batch, options.seed, steps),
        validation_data=SceneBatches(val, batch, options.seed + 1),
        epochs=epochs,
        callbacks=[schedule, history, SaveHead(run_dir / "head.weights.h5")],
        verbose=options.verbose,
    )
    fit_s = time.monotonic() - fit_started
    hist = history.history
    log.info("trained %d steps in %.0f s", schedule.steps, fit_s)
    return TrainedModel(
        name="detector",
        kind="detector",
        model=full,
        input_spec=spec,
        metrics={"val_loss": hist.get("val_loss", [None])[-1]},
        training={
            "recipe": "detector",
            "trunk": "EfficientNet-Lite0, ImageNet",
            "pretrained": provenance,
            "frozen_blocks": SPLIT_AT,
            "scenes": count,
            "val_scenes": val_count,
            "batch": batch,
            "steps": schedule.steps,
            "seconds_synthesis": round(synthesis_s, 1),
            "seconds_training": round(fit_s, 1),
            "seconds_per_step": round(fit_s / max(schedule.steps, 1), 3),
            "peak_lr": PEAK_LR,
            "history": {k: [round(v, 5) for v in vals] for k, vals in hist.items()},
        },
        detection=detection_spec(),
        parity_pixels=val["pixels"],
        run_dir=run_dir,
    )


def detection_spec() -> dict[str, Any]:
    """model.json's "detection" object (DETECTOR_CONTRACT.md); the ONNX output names are filled in at export."""
    return {
        "heatmap": "heatmap",
        "box_size": "box_size",
        "offset": "offset",
        "stride": STRIDE,
        "groups": scenes.groups_spec(),
        "score_threshold": SCORE_THRESHOLD,
        "max_detections": MAX_DETECTIONS,
        "nms_iou": NMS_IOU,
    }
