"""Fitting the detector's box verification: a logistic rule of the detector's score and the classifier's confidence,
its keep probability chosen on validation scenes, written into the detector's model.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionsearch.detection import BoxVerification, Detection
from fashionsearch.model_contract import ModelSpec
from testkit.tiny_detector import write_tiny_detector
from testkit.tiny_models import write_tiny_classifier
from testkit.training_data import make_lite_dataset
from training import box_verification, data, detector_eval, scenes


def _candidates(photos, detector_dir, classifier_dir, _photos, threads=2):  # noqa: ANN001, ANN202 - candidates' shape
    """Per photo: its products' true boxes (scores 0.3 to 0.9, the classifier sure of them) and as many boxes on
    nothing (scores 0.25 to 0.6, the classifier unsure): a rule must learn that confidence tells them apart."""
    rng = np.random.default_rng(0)
    out = []
    for photo in photos:
        detections, confidence = [], []
        for box in photo.boxes:
            detections.append(Detection(*box[:2], *(box[2:] - box[:2]), "top", float(rng.uniform(0.3, 0.9))))
            confidence.append(rng.uniform(0.7, 1.0))
            detections.append(Detection(0.0, 0.0, 1.0, 1.0, "top", float(rng.uniform(0.25, 0.6))))
            confidence.append(rng.uniform(0.1, 0.5))
        order = np.argsort([-d.score for d in detections], kind="stable")
        out.append(box_verification.Candidates([detections[k] for k in order], np.asarray(confidence)[order]))
    return out


@pytest.fixture
def folders(tmp_path: Path) -> tuple[data.Dataset, dict[int, str], Path, Path]:
    """A tiny dataset with its split, a tiny detector and a classifier named classifier:9."""
    root = tmp_path / "data"
    make_lite_dataset(root)
    dataset = data.load_dataset(root, tmp_path / "cache")
    split = data.get_split(dataset, tmp_path / "split.csv", create=True)
    detector_dir = write_tiny_detector(tmp_path / "detector")
    classifier_dir = write_tiny_classifier(tmp_path / "classifier", name="classifier", version="9")
    return dataset, split, detector_dir, classifier_dir


def test_the_rule_is_fitted_on_validation_scenes_and_written_for_the_detector_service(
    folders: tuple[data.Dataset, dict[int, str], Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset, split, detector_dir, classifier_dir = folders
    photos = scenes.test_scenes(scenes.split_products(dataset, split, "val"), 4, seed=3)
    monkeypatch.setattr(box_verification, "candidates", lambda d, c, p, t=2: _candidates(photos, d, c, p, t))

    fitted = box_verification.fit(detector_dir, classifier_dir, dataset, split, 4, seed=3, threads=1)

    rule = BoxVerification.of(ModelSpec.load(detector_dir))
    assert rule is not None and fitted["rule"]["keep_probability"] == rule.keep_probability
    assert rule.classifier == "classifier:9" and rule.candidate_threshold == box_verification.CANDIDATE_THRESHOLD
    assert rule.confidence_weight > 0  # confidence is what tells products from nothing here
    chosen = fitted["by_keep_probability"][str(rule.keep_probability)]
    assert chosen["box_precision"] >= detector_eval.PRECISION_FLOOR and chosen["box_recall"] == 1.0
    assert fitted["flip_test_threshold_alone"]["box_precision"] < detector_eval.PRECISION_FLOOR
    assert "box_verification_choice" in ModelSpec.load(detector_dir).extra


def test_scenes_with_only_products_or_none_are_refused_with_a_clear_error(
    folders: tuple[data.Dataset, dict[int, str], Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset, split, detector_dir, classifier_dir = folders
    monkeypatch.setattr(
        box_verification, "candidates", lambda d, c, p, t=2: [box_verification.Candidates([], np.zeros(0))] * len(p)
    )
    with pytest.raises(data.DataError, match="products and boxes that are not"):
        box_verification.fit(detector_dir, classifier_dir, dataset, split, 2, seed=3, threads=1)
