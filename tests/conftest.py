"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images-small"


def dataset_dir() -> Path | None:
    """The real dataset, from FASHIONSEARCH_DATA or ../shared beside the repo; None when absent."""
    path = Path(os.environ.get("FASHIONSEARCH_DATA", DEFAULT_DATA_DIR))
    return path if (path / "styles.csv").is_file() and (path / "images").is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real dataset directory; the test is skipped, saying why, when it is not there."""
    path = dataset_dir()
    if path is None:
        pytest.skip(
            "dataset not found: set FASHIONSEARCH_DATA to the folder holding styles.csv and images/ "
            f"(default {DEFAULT_DATA_DIR})"
        )
    return path
