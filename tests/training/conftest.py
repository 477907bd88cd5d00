"""Fixtures for the training tests: small synthetic datasets written to tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit.training_data import make_dataset, make_lite_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def synthetic_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_dataset(root)
    return root


@pytest.fixture
def lite_data_args(tmp_path: Path) -> list[str]:
    """`--data --cache --split` of a split synthetic lite dataset in tmp_path, for `python -m training` commands;
    skipped without torch, which reads the pretrained weights."""
    pytest.importorskip("torch", reason="torch reads the pretrained weights (requirements/training.txt installs it)")
    from training.__main__ import main

    make_lite_dataset(tmp_path / "data")
    common = ["--data", str(tmp_path / "data"), "--cache", str(tmp_path / "cache"), "--split", str(tmp_path / "s.csv")]
    assert main(["-q", "split", *common]) == 0
    return common
