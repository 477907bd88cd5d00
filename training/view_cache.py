"""The frozen first blocks of the Lite0 trunk and their outputs cached for many views of every training image, so
the lite recipes train only the rest: the trunk plan (input size, blocks frozen, views), the onnxruntime session of
the frozen blocks, shopper views, the cache, shuffled batches of it, the fit, and the classifier calibrated on the
cached validation views."""

from __future__ import annotations

import dataclasses
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
from training import data, lite, scenes, shopper
from training.export import keras_to_onnx
from training.heads import HEAD_ATTRIBUTES, calibrate, calibrated_outputs
from training.hierarchy import HIERARCHY, decode_hierarchy, hierarchy_matrices
from training.inference import onnx_session
from training.metrics import top1_accuracy
from training.recipe import TrainOptions
from training.trainer import WARMUP, ProgressSchedule

log = logging.getLogger(__name__)

LITE_INPUT = InputSpec(name="image", height=144, width=108, **lite.LITE_SCALING)
SPLIT_AT = lite.stride16_end()  # 8 blocks frozen and cached (stride 16: 9x7x80 per view at 144x108)
VIEWS = 5  # per training image: the packshot and four shopper views
DEFAULT_BATCH = 64
WEIGHT_DECAY = 1e-5


@dataclass(frozen=True)
class TrunkPlan:
    """What the trunk sees and where it is cut: the input size, the blocks frozen and cached, views per image.
    The recipe's plan is the default; `python -m training probe-lite` measures others."""

    input_spec: InputSpec = LITE_INPUT
    split_at: int = SPLIT_AT
    views: int = VIEWS
    #: Real photographs (training/scenes.py names) behind some shopper views, some framed as the gateway cuts a
    #: detected product out (`train --photo-views`); () for the views models 8 were trained on.
    photographs: tuple[str, ...] = ()
    #: The EfficientNet-Lite variant (training/lite.py VARIANTS): Lite0 is served; Lite1 and Lite2 are probed.
    variant: str = "lite0"
    #: How often and how hard the shopper views shift the scene (`train --scene-views`: shopper.SCENE_MIX).
    mix: shopper.ViewMix = shopper.DEFAULT_MIX

    @property
    def name(self) -> str:
        prefix = "" if self.variant == "lite0" else f"{self.variant}-"  # Lite0's names as before: results reused
        return f"{prefix}{self.input_spec.height}x{self.input_spec.width}-frozen{self.split_at}-views{self.views}"


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


def shopper_views(
    images: np.ndarray,
    seed: int,
    donors: np.ndarray,
    photographs: tuple[str, ...] = (),
    mix: shopper.ViewMix = shopper.DEFAULT_MIX,
    chunk: int = 512,
) -> np.ndarray:
    """A random shopper view of each image; with `photographs`, some on a patch of one of them."""
    rng = np.random.default_rng(seed)
    photos = scenes.load_photos(photographs) if photographs else ()
    return np.concatenate(
        [shopper.augment_views(images[s : s + chunk], rng, donors, photos, mix) for s in range(0, len(images), chunk)]
    )


def training_views(
    images: np.ndarray,
    seed: int,
    count: int,
    photographs: tuple[str, ...] = (),
    mix: shopper.ViewMix = shopper.DEFAULT_MIX,
) -> Iterator[np.ndarray]:
    """`count` views of every uint8 packshot, one array per view: view 0 the packshots, each mirrored at random;
    the others random shopper views (seeded, clutter cut from other packshots of the same set)."""
    rng = np.random.default_rng(seed)
    for v in range(count):
        if v == 0:
            flip = rng.random(len(images)) < 0.5
            yield np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        else:
            donors = images[rng.permutation(len(images))[:2000]]
            yield shopper_views(images, seed + v, donors, photographs, mix)


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
    } | ({"photographs": list(plan.photographs)} if plan.photographs else {})
    key |= {"trunk": plan.variant} if plan.variant != "lite0" else {}  # Lite0's caches keep their keys
    key |= {"mix": dataclasses.asdict(plan.mix)} if plan.mix != shopper.DEFAULT_MIX else {}  # so do models 9's views
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
    for v, views in enumerate(training_views(train_images, seed, plan.views, plan.photographs, plan.mix)):
        parts.append(early_features(session, views, plan.input_spec))
        log.info("view %d of %d cached (%.0f s)", v + 1, plan.views, time.monotonic() - started)
    out = {
        "train": np.concatenate(parts),
        "val": early_features(session, val_images, plan.input_spec),
        # A fixed seed of its own: validation shopper views never match a training view.
        "val_shopper": early_features(
            session,
            shopper_views(val_images, seed + 1000, train_images[:2000], plan.photographs, plan.mix),
            plan.input_spec,
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


def fit_on_views(
    model: keras.Model,
    features: np.ndarray,
    targets: Mapping[str, np.ndarray],
    losses: Mapping[str, Any],
    weights: Mapping[str, float],
    options: TrainOptions,
    epochs: int,
    minutes: float,
    peak_lr: float,
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


def predict_on_views(model: keras.Model, features: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(features), batch):
        for k, v in model(np.asarray(features[s : s + batch], dtype=np.float32), training=False).items():
            out.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in out.items()}


def calibrated_view_classifier(
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
