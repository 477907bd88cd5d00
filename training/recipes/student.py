"""Students: the served lite teacher distilled into the same Lite0 trunk at the photo's own 80x60.

The teacher (classifier + embedder, `--teacher`, the served models by default) sees every photo upsampled to
144x108; the student sees it as the dataset stores it, 80x60, so its trunk does 3.2x less work per image.

Classifier (`python -m training train lite-student`)
    Every training packshot and STUDENT_VIEWS - 1 shopper views of it (training/shopper.py, a seed of their own)
    are labelled by the teacher: its calibrated probabilities for every head and its embedding. The student's
    frozen early blocks (ImageNet weights, as the teacher's) are cached at 80x60; its late blocks, heads and
    projection start from the teacher's weights and learn the teacher's probabilities (soft targets, with the
    label beside them where there is one) and the teacher's embedding (cosine), under a wall-clock budget.
    Temperatures and the hierarchy decoding are fitted on validation as for the teacher.

Embedder (`python -m training train lite-student-embedder`, after the student classifier)
    The student's trunk and projection, exported as an embedder.

Only the validation split is used for any choice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fashionsearch.model_contract import InputSpec, ModelSpec
from training import data, lite
from training.embedding import retrieval_summary
from training.evaluate import load_model, predict
from training.heads import HEAD_ATTRIBUTES, HEAD_DROPOUT, LOSS_WEIGHTS, LabelledSplits, head_losses
from training.recipe import TrainedModel, TrainOptions
from training.view_cache import (
    DEFAULT_BATCH,
    SPLIT_AT,
    calibrated_view_classifier,
    early_features,
    early_session,
    fit_on_views,
    shopper_views,
    training_views,
)

log = logging.getLogger(__name__)

STUDENT_INPUT = InputSpec(name="image", height=80, width=60, **lite.LITE_SCALING)
STUDENT_VIEWS = 3  # per training image: the packshot and two shopper views, each labelled by the teacher
VIEW_SEED = 7  # added to the run's seed: views the teacher was not trained on
DEFAULT_MINUTES = 15.0
STUDENT_PEAK_LR = 3e-4  # lower than the teacher's: the student starts from the teacher's weights
SOFT_WEIGHT = 0.7  # of each head's loss: the teacher's probabilities; the label has the rest
EMBEDDING_WEIGHT = 4.0  # on 1 - cosine(student, teacher); about the size of a head's loss early on
DEFAULT_TEACHER = (data.REPO_ROOT / "models" / "classifier", data.REPO_ROOT / "models" / "embedder")


def teacher_outputs(teacher: Sequence[Path], images: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    """{attribute: calibrated probabilities, "embedding": unit vectors} of the teacher's served ONNX models."""
    out: dict[str, np.ndarray] = {}
    for model_dir in teacher:
        spec, session = load_model(model_dir, threads)
        predicted = predict(session, spec, images, batch_size=256)
        if spec.embedding is not None:
            out["embedding"] = predicted[spec.embedding.output].astype(np.float32)
        for head in spec.outputs:
            out[head.attribute] = predicted[head.name].astype(np.float32)
    missing = {*HEAD_ATTRIBUTES, "embedding"} - set(out)
    if missing:
        raise data.DataError(f"the teacher {[str(t) for t in teacher]} has no output for {sorted(missing)}")
    return out


def student_trunk(teacher_trunk: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Lite0 at 80x60, split as the teacher's, every layer's weights copied from the teacher's trunk by name."""
    early, late = lite.build_trunk(STUDENT_INPUT.height, STUDENT_INPUT.width, SPLIT_AT)
    source = {layer.name: layer for layer in _all_layers(teacher_trunk)}
    for layer in [*_all_layers(early), *_all_layers(late)]:
        if layer.weights:
            layer.set_weights(source[layer.name].get_weights())
    early.trainable = False
    return early, late


def _all_layers(model: keras.Model) -> list[Any]:
    out = []
    for layer in model.layers:
        out.extend(_all_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


class CosineDistance(keras.losses.Loss):
    """1 - cos(prediction, target) for unit vectors."""

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return 1.0 - keras.ops.sum(y_true * y_pred, axis=-1)


def train_classifier(
    dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions
) -> TrainedModel:
    data.configure_tensorflow(options.threads, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    teacher = tuple(options.teacher) or DEFAULT_TEACHER
    teacher_run = run_dir.parent / "lite-classifier"
    if not (teacher_run / "trunk.keras").is_file():
        raise data.DataError(
            f"no trained lite classifier in {teacher_run}: run `python -m training train lite-classifier`"
        )
    specs = [ModelSpec.load(t) for t in teacher]
    teacher_training = _check_same_teacher(specs, teacher_run)
    labelled = LabelledSplits.of(dataset, split, options)
    full_train, vocabularies, train, val = labelled.full_train, labelled.vocabularies, labelled.train, labelled.val
    sizes, y_train, y_val = labelled.sizes, labelled.y_train, labelled.y_val
    for spec in specs:  # the student's heads are the teacher's: same classes in the same order
        for head in spec.outputs:
            if tuple(head.labels) != tuple(vocabularies[head.attribute].labels):
                raise data.DataError(f"{head.attribute}: the teacher's classes differ from this split's")

    teacher_trunk = keras.models.load_model(teacher_run / "trunk.keras")
    early, late = student_trunk(teacher_trunk)
    session = early_session(early, options.threads, run_dir, STUDENT_INPUT)
    features, soft = [], []
    for v, views in enumerate(training_views(train.images, options.seed + VIEW_SEED, STUDENT_VIEWS)):
        features.append(early_features(session, views, STUDENT_INPUT))
        soft.append(teacher_outputs(teacher, views, options.threads))
        log.info("view %d of %d labelled by the teacher (%.0f s)", v + 1, STUDENT_VIEWS, time.monotonic() - started)
    val_shopper_images = shopper_views(val.images, options.seed + 1000, train.images[:2000])
    val_views = {
        "val": early_features(session, val.images, STUDENT_INPUT),
        "val_shopper": early_features(session, val_shopper_images, STUDENT_INPUT),
    }
    label_seconds = time.monotonic() - started

    model, projection = _training_model(late, sizes, teacher_run)
    targets: dict[str, np.ndarray] = {a: np.tile(y_train[a], STUDENT_VIEWS) for a in HEAD_ATTRIBUTES}
    targets |= {f"{a}_soft": np.concatenate([s[a] for s in soft]) for a in HEAD_ATTRIBUTES}
    targets["embedding"] = np.concatenate([s["embedding"] for s in soft])
    losses = head_losses(y_train, sizes)
    losses |= {f"{a}_soft": keras.losses.CategoricalCrossentropy(from_logits=True) for a in HEAD_ATTRIBUTES}
    losses["embedding"] = CosineDistance(name="embedding_cosine")
    weights = {a: (1 - SOFT_WEIGHT) * w for a, w in LOSS_WEIGHTS.items()}
    weights |= {f"{a}_soft": SOFT_WEIGHT * w for a, w in LOSS_WEIGHTS.items()}
    weights["embedding"] = EMBEDDING_WEIGHT
    batch = options.batch_size or DEFAULT_BATCH
    epochs = options.epochs or 6
    minutes = DEFAULT_MINUTES if options.max_minutes is None else options.max_minutes
    schedule, fit_seconds = fit_on_views(
        model, np.concatenate(features), targets, losses, weights, options, epochs, minutes, STUDENT_PEAK_LR
    )

    inputs = keras.Input((STUDENT_INPUT.height, STUDENT_INPUT.width, 3), name=STUDENT_INPUT.name)
    pooled = late(early(inputs))
    exported, validation = calibrated_view_classifier(model, inputs, pooled, val_views, y_val, full_train, vocabularies)
    embedding = projection(pooled)
    keras.Model(inputs, embedding, name="embedder").save(run_dir / "embedder.keras")
    return labelled.classifier(
        exported,
        STUDENT_INPUT,
        validation,
        run_dir,
        {
            "recipe": "lite-student",
            "parameters": exported.count_params(),
            "seconds": round(time.monotonic() - started, 1),
            "teacher_label_seconds": round(label_seconds, 1),
            "fit_seconds": round(fit_seconds, 1),
            "steps": schedule.steps,
            "teacher": [f"{s.name}:{s.version}" for s in specs],
            "pretrained": teacher_training.get("pretrained"),
            "settings": {
                "input": f"{STUDENT_INPUT.height}x{STUDENT_INPUT.width} (the packshots as stored)",
                "trunk": "EfficientNet-Lite0, started from the teacher's fine-tuned weights",
                "frozen_blocks": SPLIT_AT,
                "views_per_image": STUDENT_VIEWS,
                "soft_weight": SOFT_WEIGHT,
                "embedding_weight": EMBEDDING_WEIGHT,
                "batch_size": batch,
                "epochs_planned": epochs,
                "max_minutes": minutes,
                "peak_lr": STUDENT_PEAK_LR,
                "train_images": len(train),
                "val_images": len(val),
                "seed": options.seed,
            },
        },
    )


def _training_model(late: keras.Model, sizes: Mapping[str, int], teacher_run: Path) -> tuple[keras.Model, keras.Model]:
    """cached early features -> {attribute, attribute_soft: logits; embedding}, heads and projection initialised
    from the teacher's; and the projection (pooled features -> unit embedding)."""
    layers = keras.layers
    inputs = keras.Input(late.input.shape[1:], name="early_features")
    pooled = late(inputs)
    h = layers.Dropout(HEAD_DROPOUT, name="heads_dropout")(pooled)
    outputs: dict[str, Any] = {}
    teacher_classifier = keras.models.load_model(teacher_run / "model.keras")
    for a, n in sizes.items():
        dense = layers.Dense(n, name=f"{a}_logits")
        outputs[a] = dense(h)
        dense.set_weights(teacher_classifier.get_layer(f"{a}_logits").get_weights())
        outputs[f"{a}_soft"] = layers.Identity(name=f"{a}_soft")(outputs[a])
    # The teacher embedder's projection, loaded from its run (a copy: training it leaves the teacher as it is).
    embedder = keras.models.load_model(teacher_run.parent / "lite-embedder" / "model.keras")
    projection = next(
        layer for layer in embedder.layers if isinstance(layer, keras.Model) and layer.input.shape[-1] == lite.HEAD
    )
    outputs["embedding"] = projection(pooled)
    return keras.Model(inputs, outputs, name="student_training"), projection


def _check_same_teacher(specs: Sequence[ModelSpec], teacher_run: Path) -> dict[str, Any]:
    """The student starts from the weights in teacher_run and learns the served teacher's answers: they must be
    the same training run (compared by its recorded training time, which every export copies). Returns the run's
    training record."""
    training: dict[str, Any] = json.loads((teacher_run / "trained.json").read_text()).get("training", {})
    run = training.get("seconds")
    served = next((s.extra.get("training", {}).get("seconds") for s in specs if s.kind == "classifier"), None)
    if run != served:
        raise data.DataError(
            f"the served teacher classifier (training {served} s) is not the run in {teacher_run} ({run} s): "
            "pass --teacher with the folders that run exported"
        )
    return training


def train_embedder(dataset: data.Dataset, split: dict[int, str], run_dir: Path, options: TrainOptions) -> TrainedModel:
    """The student classifier's trunk and projection as an embedder, with its validation precision@5."""
    data.configure_tensorflow(options.threads, options.seed)
    source = run_dir.parent / "lite-student"
    if not (source / "embedder.keras").is_file():
        raise data.DataError(f"no trained student in {source}: run `python -m training train lite-student`")
    model = keras.models.load_model(source / "embedder.keras")
    full_train = dataset.split(split, "train")
    train = full_train.at_most(options.limit, options.seed)
    val = dataset.split(split, "val").at_most(options.limit, options.seed)

    def embed(images: np.ndarray) -> np.ndarray:
        x = data.make_tf_dataset(data.images_for_input(images, STUDENT_INPUT), None, STUDENT_INPUT, 256)
        return np.asarray(model.predict(x, verbose=0), dtype=np.float32)

    catalogue = embed(train.images)
    shopper = shopper_views(val.images, options.seed + 1000, train.images[:2000])
    metrics = {
        "precision_at_5": retrieval_summary(embed(val.images), catalogue, val.labels, train.labels),
        "precision_at_5_shopper_view": retrieval_summary(embed(shopper), catalogue, val.labels, train.labels),
    }
    student = json.loads((source / "trained.json").read_text()) if (source / "trained.json").is_file() else {}
    dim = int(model.output.shape[-1])
    return TrainedModel(
        name="embedder",
        kind="embedder",
        model=keras.Model(model.input, keras.layers.Identity(name="embedding")(model.output), name="embedder"),
        input_spec=STUDENT_INPUT,
        embedding_dim=dim,
        metrics={"validation": metrics},
        training={
            "recipe": "lite-student-embedder",
            "parameters": model.count_params(),
            "student_seconds": student.get("training", {}).get("seconds"),
            "teacher": student.get("training", {}).get("teacher"),
            "pretrained": student.get("training", {}).get("pretrained"),
            "settings": {"trunk_from": str(source), "dim": dim},
        },
        parity_pixels=val.images[:256],
        run_dir=run_dir,
    )
