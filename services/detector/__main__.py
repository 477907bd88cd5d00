"""`python -m services.detector`: configured by DETECTOR_* environment variables (see settings.py)."""

from __future__ import annotations

import sys

from fashionsearch.model_service import run_model_service
from services.detector.server import serve
from services.detector.settings import Settings


def main() -> int:
    return run_model_service("detector", Settings.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
