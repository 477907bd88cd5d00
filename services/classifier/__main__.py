"""`python -m services.classifier`: configured by CLASSIFIER_* environment variables (see settings.py)."""

from __future__ import annotations

import sys

from fashionsearch.model_service import run_model_service
from services.classifier.server import serve
from services.classifier.settings import Settings


def main() -> int:
    return run_model_service("classifier", Settings.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
