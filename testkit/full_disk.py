"""Filling a (small, test-mounted) disk to the last byte, as another tenant of a volume would."""

from __future__ import annotations

from pathlib import Path


def fill_up(folder: str | Path) -> Path:
    """Write zeros into folder/filler until the disk refuses more (ENOSPC); the file to unlink to make room again."""
    filler = Path(folder) / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(bytes(65536))
                out.flush()
        except OSError:
            pass
    return filler
