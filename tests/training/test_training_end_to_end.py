"""A tiny end-to-end run of the CLI on a handful of real images: split, train, export, evaluate.

Skipped, saying why, when the dataset is not there (see tests/conftest.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fashionsearch.model_contract import ModelSpec
from training import data, evaluate
from training.__main__ import main

pytestmark = [pytest.mark.training, pytest.mark.slow]

PER_CLASS = 12


def _small_copy(source: Path, target: Path) -> int:
    """styles.csv lines and images of PER_CLASS items per paper class plus PER_CLASS others, copied verbatim."""
    table = data.read_styles(source / "styles.csv")
    wanted: dict[str | None, list[int]] = {}
    for row in table.rows:
        if not (source / "images" / f"{row['id']}.jpg").is_file():
            continue
        cls = data.paper_class(row["subCategory"], row["articleType"])
        if len(wanted.setdefault(cls, [])) < PER_CLASS:
            wanted[cls].append(row["id"])
    keep = {str(i) for ids in wanted.values() for i in ids}
    (target / "images").mkdir(parents=True)
    lines = (source / "styles.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (target / "styles.csv").write_text(
        lines[0] + "".join(line for line in lines[1:] if line.split(",", 1)[0] in keep), encoding="utf-8"
    )
    for i in keep:
        shutil.copy(source / "images" / f"{i}.jpg", target / "images" / f"{i}.jpg")
    return len(keep)


def test_cli_trains_exports_and_evaluates_on_real_images(data_dir, tmp_path):
    small = tmp_path / "data"
    n = _small_copy(data_dir, small)
    assert n == PER_CLASS * (len(data.PAPER_CLASSES) + 1)
    split = tmp_path / "split.csv"
    common = ["--data", str(small), "--split", str(split), "--cache", str(tmp_path / "cache"), "--threads", "1"]

    assert main(["-q", "split", *common]) == 0
    assert main(["-q", "split", *common]) == 1  # refuses to overwrite without --force

    out = tmp_path / "models" / "paper-cnn"
    assert (
        main(
            [
                "-q",
                "train",
                "paper-cnn",
                *common,
                "--run",
                str(tmp_path / "run-cnn"),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--no-jit",
                "--verbose",
                "0",
                "--min-parity-images",
                "4",
            ]
        )
        == 0
    )
    spec = ModelSpec.load(out)
    assert spec.outputs[0].labels == data.PAPER_CLASSES
    assert spec.extra["training"]["epochs_run"] == 2 and len(spec.extra["training"]["history"]["loss"]) == 2

    # Export again from the saved run, then evaluate.
    again = tmp_path / "models" / "again"
    assert (
        main(
            [
                "-q",
                "export",
                "paper-cnn",
                "--run",
                str(tmp_path / "run-cnn"),
                "--out",
                str(again),
                "--min-parity-images",
                "4",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    images = data.load_dataset(small, tmp_path / "cache").images[:8]
    outputs = []
    for model_dir in (out, again):
        model_spec, session = evaluate.load_model(model_dir, threads=1)
        outputs.append(evaluate.predict(session, model_spec, images)["category"])
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)
    report = tmp_path / "reports" / "paper-cnn"
    assert main(["-q", "evaluate", str(out), *common, "--report", str(report)]) == 0
    assert "## Test accuracy per head" in (report / "README.md").read_text()
    assert "test" in ModelSpec.load(out).metrics

    # The autoencoder recipe runs too (one step; not exported here, the export tests cover that).
    run = tmp_path / "run-ae"
    assert (
        main(
            [
                "-q",
                "train",
                "paper-autoencoder",
                *common,
                "--run",
                str(run),
                "--epochs",
                "1",
                "--no-jit",
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    assert (run / "model.keras").is_file() and (run / "history.json").is_file()

    # The serving defaults are copied only when absent.
    default = tmp_path / "models" / "classifier"
    assert main(["-q", "install-default", str(out), str(default)]) == 0
    assert main(["-q", "install-default", str(again), str(default)]) == 0
    assert ModelSpec.load(default).name == "paper-cnn"


def test_cli_reports_a_missing_dataset(tmp_path):
    assert main(["-q", "evaluate", str(tmp_path), "--data", str(tmp_path / "nowhere")]) == 2
