"""The product detector (`python -m training train detector`): CenterNet-style, on the ImageNet Lite0 trunk.

Input 320x256 (H x W) letterboxed ("pad"), so boxes map back to the photo. The Lite0 trunk (training/lite.py, ImageNet
weights) gives features at stride 8 (after block 4), 16 (block 10) and 32 (block 15); a small top-down pyramid
(1x1 convs to FPN_WIDTH, nearest upsampling, sums) fuses them into one stride-8 map, two depthwise-separable convs
follow, then three 1x1 heads as DETECTOR_CONTRACT.md says: `heatmap` (one sigmoid channel per group of
training/scenes.py), `box_size` (width, height in input pixels, exp of the prediction times SIZE_UNIT) and
`offset` (the centre inside its cell, sigmoid). Losses: CenterNet's penalty-reduced focal loss on Gaussian-splatted
heatmaps, L1 on log sizes and on offsets at the centre cells.

The trunk up to stride 16 stays frozen (ImageNet): a step that trained blocks 5-15 took about 5 s at batch 32 on this
shared 2-core machine, too slow for the 90-minute budget. Its two taps (strides 8 and 16) are computed once per scene
with onnxruntime and cached (float16). The stride-32 stage (blocks 11-15, TRAINED_FROM) runs on a 10 x 8 map, so it
is trained with the head at a fraction of its learning rate (TRUNK_LR_FACTOR, the pretrained classifier's fine-tuning
rate) and its batch norms frozen (their ImageNet statistics; a batch of scenes is too few to replace them).
Scenes are synthesised up front from training-split packshots (training/scenes.py), seeded; validation scenes come
from validation-split packshots.
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

from fashionsearch.model_contract import InputSpec, normalize
from training import data, lite, scenes
from training.export import keras_to_onnx
from training.inference import onnx_session
from training.layers import focal_loss, offset_loss, size_loss
from training.recipe import TrainedModel, TrainOptions
from training.trainer import JsonHistory, ProgressSchedule

log = logging.getLogger(__name__)

DETECTOR_INPUT = InputSpec(name="image", height=320, width=256, resize="pad", pad_value=128.0, **lite.LITE_SCALING)
STRIDE = 8
SPLIT_AT = 5  # the stem and blocks [0, 5) end at stride 8 (40 x 32 x 40 at 320x256)
TAPS = (11, 16)  # blocks [5, 11) end at stride 16 (x112), [11, 16) at stride 32 (x320)
TRAINED_FROM = TAPS[0]  # blocks [TRAINED_FROM, 16) are trained with the head, on the cached stride-16 tap
TRUNK_LR_FACTOR = 0.3  # the trained trunk blocks' learning rate, as a fraction of the head's


def is_trunk_layer(name: str) -> bool:
    """Whether a layer (or a variable's layer) of the head model is one of the trunk's pretrained blocks
    (training/lite.py names them block<k>_...), not the detector's own."""
    return name.startswith("block")


FPN_WIDTH = 96
TOWER = 3  # depthwise-separable convs after the pyramid
SIZE_UNIT = 32.0  # box_size = SIZE_UNIT * exp(prediction): 0 means a 32-pixel box
HEATMAP_PRIOR = 0.01  # initial heatmap probability (CenterNet's bias -2.19), so the focal loss starts calm
GAUSSIAN_ALPHA = 0.54  # TTFNet's elliptical Gaussian: sigma = alpha * box side / 6
DEFAULT_SCENES = 32000
VAL_SCENES = 512
DEFAULT_MINUTES = 50.0
DEFAULT_BATCH = 32
PEAK_LR = 2e-3
WEIGHT_DECAY = 1e-4
WARMUP = 0.04
STEPS_PER_EPOCH = 150  # an "epoch" is only how often validation, history and the checkpoint are written
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
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
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


# --------------------------------------------------------------------------------------------------------------
# The network


def build_backbone(input_spec: InputSpec) -> keras.Model:
    """Scaled image -> the trunk's features at strides 8 and 16 (frozen, cached per scene)."""
    early = lite.build_early(input_spec.height, input_spec.width, SPLIT_AT)
    image = keras.Input((input_spec.height, input_spec.width, 3), name="scaled_image")
    c3 = early(image)
    c4 = lite.apply_blocks(c3, SPLIT_AT, TRAINED_FROM)
    backbone = keras.Model(image, [c3, c4], name="lite_backbone")
    backbone.trainable = False
    return backbone


def build_head(shapes: list[tuple[int, int, int]], classes: int) -> keras.Model:
    """The trunk's two cached taps -> its stride-32 stage, the pyramid and the three heads (the part trained)."""
    layers = keras.layers
    c3, c4 = (keras.Input(shape, name=f"c{k}") for k, shape in zip((3, 4), shapes, strict=True))
    c5 = lite.apply_blocks(c4, TRAINED_FROM, TAPS[1])

    def lateral(x: Any, name: str) -> Any:
        return layers.Conv2D(FPN_WIDTH, 1, name=f"det_lateral{name}")(x)

    p = lateral(c5, "5")
    p = layers.Add(name="det_add4")([lateral(c4, "4"), layers.UpSampling2D(2, name="det_up4")(p)])
    p = layers.Add(name="det_add3")([lateral(c3, "3"), layers.UpSampling2D(2, name="det_up3")(p)])
    for k in range(TOWER):
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
    head = keras.Model([c3, c4], [heat, size, offset], name="detector_head")
    for layer in head.layers:
        if isinstance(layer, layers.BatchNormalization) and is_trunk_layer(layer.name):
            layer.trainable = False  # a frozen batch norm also runs on its moving statistics in training
    return head


def build_detector(
    input_spec: InputSpec, classes: int, weights: dict[str, list[np.ndarray]] | None
) -> tuple[keras.Model, keras.Model, keras.Model]:
    """(backbone (frozen), head (trained on cached features), full: image -> heatmap, box_size, offset)."""
    backbone = build_backbone(input_spec)
    head = build_head([(int(t.shape[1]), int(t.shape[2]), int(t.shape[3])) for t in backbone.outputs], classes)
    if weights is not None:
        lite.load_weights([backbone, head], weights)
    image = keras.Input((input_spec.height, input_spec.width, 3), name=input_spec.name)
    full = keras.Model(image, head(backbone(image)), name="detector")
    return backbone, head, full


def backbone_session(backbone: keras.Model, threads: int, work: Path, input_spec: InputSpec) -> Any:
    path = work / "backbone.onnx"
    keras_to_onnx(backbone, input_spec, path)
    return onnx_session(path, threads=threads)


def backbone_features(session: Any, pixels: np.ndarray, input_spec: InputSpec, chunk: int = 32) -> list[np.ndarray]:
    """uint8 images at the input size -> the backbone's taps, float16."""
    name = session.get_inputs()[0].name
    parts: list[list[np.ndarray]] = [[] for _ in session.get_outputs()]
    for start in range(0, len(pixels), chunk):
        outputs = session.run(None, {name: normalize(pixels[start : start + chunk], input_spec)})
        for k, out in enumerate(outputs):
            parts[k].append(out.astype(np.float16))
    return [np.concatenate(p) for p in parts]


class TrunkSlowerAdamW(keras.optimizers.AdamW):
    """AdamW whose steps on the trunk's pretrained blocks are TRUNK_LR_FACTOR of the head's (Keras has no per-layer
    learning rate; Adam's step does not scale with the gradient, so scaling gradients would not do it)."""

    def build(self, variables: list[Any]) -> None:
        super().build(variables)
        # update_step may get the backend's own variable (no path): match by the optimizer's index instead
        self.trunk_indices = {k for k, v in enumerate(variables) if is_trunk_layer(v.path.split("/")[-2])}

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self._get_variable_index(variable) in self.trunk_indices:
            learning_rate = learning_rate * TRUNK_LR_FACTOR
        super().update_step(gradient, variable, learning_rate)


# --------------------------------------------------------------------------------------------------------------
# Cached scenes

#: The backbone's outputs, cached per scene: the stride-8 and stride-16 taps.
TAP_NAMES = ("c3", "c4")


def scene_arrays(
    pool: scenes.Products, count: int, input_spec: InputSpec, seed: int, session: Any, chunk: int = 256
) -> dict[str, np.ndarray]:
    """Synthesise `count` scenes and keep what training needs: the trunk's taps (float16), targets, and the
    scenes' pixels only for the first chunk (parity images). The arrays are allocated once, at full size, from
    the first chunk's shapes: 32,000 scenes take about 9 GB, and growing lists then concatenating would need twice
    that."""
    classes = len(scenes.GROUPS)
    arrays: dict[str, np.ndarray] = {}
    started = time.monotonic()
    for start in range(0, count, chunk):
        batch = scenes.training_scenes(pool, min(chunk, count - start), input_spec, seed + start)
        pixels = np.stack([s.image for s in batch])
        parts = dict(zip(TAP_NAMES, backbone_features(session, pixels, input_spec), strict=True))
        encoded = [targets(s.boxes, s.groups, input_spec.height, input_spec.width, classes) for s in batch]
        # 1/255 steps: 4x smaller than float32, and the peaks stay exactly 1
        parts["heatmap"] = np.stack([(heat * 255 + 0.5).astype(np.uint8) for heat, _, _ in encoded])
        parts["size"] = np.stack([size for _, size, _ in encoded])
        parts["offset"] = np.stack([offset for _, _, offset in encoded])
        if not arrays:
            arrays = {k: np.empty((count, *v.shape[1:]), dtype=v.dtype) for k, v in parts.items()}
            arrays["pixels"] = pixels
        for k, v in parts.items():
            arrays[k][start : start + len(batch)] = v
        log.info("%d of %d scenes (%.0f s)", start + len(batch), count, time.monotonic() - started)
    return arrays


def cached_scenes(
    name: str, pool: scenes.Products, count: int, input_spec: InputSpec, seed: int, session: Any, run_dir: Path
) -> dict[str, np.ndarray]:
    """scene_arrays, saved as run_dir/scenes-<name>/<array>.npy and reused (memory-mapped, read-only) when the
    count, seed and input match: a resumed run does not synthesise again."""
    folder = run_dir / f"scenes-{name}"
    key = {
        "count": count,
        "seed": seed,
        "input": [input_spec.height, input_spec.width],
        "products": len(pool),
        "taps": list(TAP_NAMES),
    }
    meta = folder / "key.json"
    if meta.is_file() and json.loads(meta.read_text()) == key:
        return {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}
    arrays = scene_arrays(pool, count, input_spec, seed, session)
    folder.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v, allow_pickle=False)
    meta.write_text(json.dumps(key))  # last: a run killed while saving synthesises again
    return arrays


class SceneBatches(keras.utils.PyDataset):
    """Shuffled batches of cached scenes, a fresh order every epoch."""

    def __init__(self, arrays: dict[str, np.ndarray], batch: int, seed: int, steps: int | None = None) -> None:
        super().__init__()
        self.arrays, self.batch = arrays, batch
        self.rng = np.random.default_rng(seed)
        self.count = len(arrays["c3"])
        self.order = self.rng.permutation(self.count)
        self.steps = steps or math.ceil(self.count / batch)
        self.position = 0

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        if self.position + self.batch > self.count:
            self.order, self.position = self.rng.permutation(self.count), 0
        idx = np.sort(self.order[self.position : self.position + self.batch])
        self.position += self.batch
        a = self.arrays
        heat = a["heatmap"][idx].astype(np.float32) / 255.0
        x = tuple(a[k][idx].astype(np.float32) for k in TAP_NAMES)
        return x, (heat, a["size"][idx], a["offset"][idx])


class SaveHead(keras.callbacks.Callback):
    """The head's weights after every epoch (`last`), so a stopped run still leaves a model to export, and those
    of the epoch with the lowest validation loss so far (`best`), which is the one exported: with a fixed set of
    scenes the head starts to learn them by heart, and validation loss rises again while training loss falls."""

    def __init__(self, last: Path, best: Path) -> None:
        super().__init__()
        self.last, self.best = last, best
        self.best_loss, self.best_epoch = math.inf, -1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.save_weights(self.last)
        loss = (logs or {}).get("val_loss")
        if loss is not None and loss < self.best_loss:
            self.best_loss, self.best_epoch = float(loss), epoch
            self.model.save_weights(self.best)


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
    backbone, head, full = build_detector(spec, classes, weights)
    session = backbone_session(backbone, options.threads, run_dir, spec)
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
    optimizer = TrunkSlowerAdamW(PEAK_LR, weight_decay=WEIGHT_DECAY, clipnorm=5.0)
    head.compile(optimizer=optimizer, loss=[focal_loss, size_loss, offset_loss], jit_compile=options.keras_jit)
    schedule = ProgressSchedule(PEAK_LR, total_steps=epochs * steps, budget_s=budget_s, warmup=WARMUP)
    history = JsonHistory(run_dir / "history.json")
    saver = SaveHead(run_dir / "head.weights.h5", run_dir / "head-best.weights.h5")
    fit_started = time.monotonic()
    head.fit(
        SceneBatches(train, batch, options.seed, steps),
        validation_data=SceneBatches(val, batch, options.seed + 1),
        epochs=epochs,
        callbacks=[schedule, history, saver],
        verbose=options.verbose,
    )
    if saver.best_epoch >= 0:
        head.load_weights(saver.best)
        log.info(
            "exporting epoch %d of %d (lowest validation loss %.4f)",
            saver.best_epoch + 1,
            len(history.history.get("val_loss", [])),
            saver.best_loss,
        )
    fit_s = time.monotonic() - fit_started
    hist = history.history
    log.info("trained %d steps in %.0f s", schedule.steps, fit_s)
    return TrainedModel(
        name="detector",
        kind="detector",
        model=full,
        input_spec=spec,
        metrics={"val_loss": saver.best_loss if saver.best_epoch >= 0 else None},
        training={
            "recipe": "detector",
            "trunk": "EfficientNet-Lite0, ImageNet",
            "pretrained": provenance,
            "frozen": f"the stem and blocks 0-{TRAINED_FROM - 1}",
            "trained_trunk": f"blocks {TRAINED_FROM}-{TAPS[1] - 1} at {TRUNK_LR_FACTOR} x the head's learning rate,"
            " batch norms frozen",
            "fpn_width": FPN_WIDTH,
            "tower": TOWER,
            "scenes": count,
            "val_scenes": val_count,
            "batch": batch,
            "steps": schedule.steps,
            "exported_epoch": saver.best_epoch + 1,
            "epochs": len(hist.get("val_loss", [])),
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
