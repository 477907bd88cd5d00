"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MiB tmpfs mounted for the test (full-disk faults); skipped, saying why, where mounting is not allowed
    (it needs root, as here and in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test: {error}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)
