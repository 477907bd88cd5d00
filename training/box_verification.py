"""Fits the detector's box verification (fashionsearch.detection.BoxVerification) on composite scenes of
VALIDATION-split products, as outfit search reads them (the flip test on the detector and on each cut-out).

Every detection down to CANDIDATE_THRESHOLD is cut out as the gateway cuts it (fashionsearch.main_product, JPEG at
its quality), read by the classifier as it is and mirrored, and labelled a product when it takes a ground-truth box
at IoU >= 0.5 (training/detector_eval.py's greedy match, best score first). A logistic regression of that label on
the detector's score and the classifier's top subCategory probability gives the rule; the keep probability is the
lowest candidate whose box precision on the same scenes reaches detector_eval.PRECISION_FLOOR, as the detector's
own threshold is chosen (the most products found at the precision asked for).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fashionsearch import main_product
from fashionsearch.detection import BoxVerification, Detection
from fashionsearch.model_contract import MODEL_FILE, ModelSpec, preprocess
from training import data, detector_eval, scenes
from training.inference import onnx_session

CANDIDATE_THRESHOLD = 0.2
KEEP_CANDIDATES = tuple(round(0.2 + 0.01 * k, 2) for k in range(61))


@dataclasses.dataclass(frozen=True)
class Candidates:
    """One photo's detections down to CANDIDATE_THRESHOLD (best first) and the classifier's top subCategory
    probability for each cut-out, the flip test's average."""

    detections: list[Detection]
    confidence: np.ndarray


def cut_outs(image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
    """Each detection cut out as the gateway cuts it and sends it (a JPEG), decoded back to pixels."""
    photo = Image.fromarray(image)
    out = []
    for detection in detections:
        buffer = io.BytesIO()
        cut = main_product.cut_out(photo, detection, photo.size)
        cut.save(buffer, format="JPEG", quality=main_product.JPEG_QUALITY)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return out


def candidates(
    detector_dir: Path, classifier_dir: Path, photos: Sequence[scenes.Scene], threads: int = 2
) -> list[Candidates]:
    detector_spec, classifier_spec = ModelSpec.load(detector_dir), ModelSpec.load(classifier_dir)
    [head] = [h for h in classifier_spec.outputs if h.attribute == "subCategory"]
    detector = onnx_session(detector_dir / MODEL_FILE, threads=threads)
    classifier = onnx_session(classifier_dir / MODEL_FILE, threads=threads)
    found = detector_eval.detect(
        detector, detector_spec, [p.image for p in photos], score_threshold=CANDIDATE_THRESHOLD, flip_test=True
    )
    out = []
    for photo, detections in zip(photos, found, strict=True):
        confidence = np.zeros(len(detections))
        if detections:
            cuts = cut_outs(photo.image, detections)
            rows = preprocess(cuts + [c[:, ::-1] for c in cuts], classifier_spec.input)
            [probabilities] = classifier.run([head.name], {classifier.get_inputs()[0].name: rows})
            averaged = (probabilities[: len(cuts)] + probabilities[len(cuts) :]) / 2
            confidence = averaged.max(axis=1)
        out.append(Candidates(detections, confidence))
    return out


def kept(read: Sequence[Candidates], rule: BoxVerification) -> list[list[Detection]]:
    return [[d for d, c in zip(r.detections, r.confidence, strict=True) if rule.keeps(d.score, float(c))] for r in read]


def kept_above(read: Sequence[Candidates], threshold: float) -> list[list[Detection]]:
    """The detections the detector's threshold alone would serve, to set the rule against."""
    return [[d for d in r.detections if d.score >= threshold] for r in read]


def fit(
    detector_dir: Path,
    classifier_dir: Path,
    dataset: data.Dataset,
    split: dict[int, str],
    count: int,
    seed: int,
    threads: int = 2,
) -> dict[str, Any]:
    """Fits the rule, writes it into the detector's model.json (`box_verification`) and returns it with how it was
    chosen."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]  # training only

    photos = scenes.test_scenes(scenes.split_products(dataset, split, "val"), count, seed)
    read = candidates(detector_dir, classifier_dir, photos, threads)
    features: list[list[float]] = []
    labels: list[bool] = []
    for photo, r in zip(photos, read, strict=True):
        groups = [scenes.GROUP_NAMES[g] for g in photo.groups]
        labels.extend(detector_eval.match(r.detections, photo.boxes, groups, same_group=False).tolist())
        features.extend([d.score, float(c)] for d, c in zip(r.detections, r.confidence, strict=True))
    if len(set(labels)) < 2:
        raise data.DataError(
            f"box verification needs boxes that are products and boxes that are not among the {len(labels)} "
            f"candidates of {count} validation scenes; got only {'products' if any(labels) else 'non-products'}"
        )
    model = LogisticRegression(C=1.0, max_iter=1000).fit(np.asarray(features), np.asarray(labels, dtype=bool))
    classifier_spec = ModelSpec.load(classifier_dir)
    fitted = BoxVerification(
        candidate_threshold=CANDIDATE_THRESHOLD,
        intercept=float(model.intercept_[0]),
        score_weight=float(model.coef_[0][0]),
        confidence_weight=float(model.coef_[0][1]),
        keep_probability=0.5,
        classifier=f"{classifier_spec.name}:{classifier_spec.version}",
    )
    table = {}
    for p in KEEP_CANDIDATES:
        rule = dataclasses.replace(fitted, keep_probability=p)
        table[p] = detector_eval.box_metrics(photos, kept(read, rule), 0.0)
    keep, how = detector_eval.pick_threshold(table)
    rule = dataclasses.replace(fitted, keep_probability=keep)
    spec = ModelSpec.load(detector_dir)
    assert spec.detection is not None
    served = spec.detection.served_threshold(True)
    choice = {
        "photos": count,
        "seed": seed,
        "split": "val",
        "candidates": int(sum(len(r.detections) for r in read)),
        "chosen_by": how.replace("threshold", "keep probability"),
        "flip_test_threshold_alone": {"threshold": served}
        | detector_eval.box_metrics(photos, kept_above(read, served), 0.0),
        "by_keep_probability": {str(p): m for p, m in table.items()},
    }
    extra = dict(spec.extra) | {"box_verification": dataclasses.asdict(rule), "box_verification_choice": choice}
    dataclasses.replace(spec, extra=extra).write(detector_dir)
    return {"rule": dataclasses.asdict(rule)} | choice
