"""`python -m services.embedder`: configured by EMBEDDER_* environment variables (see settings.py)."""

from __future__ import annotations

import sys

from fashionsearch.model_service import run_model_service
from services.embedder.server import serve
from services.embedder.settings import Settings


def main() -> int:
    return run_model_service("embedder", Settings.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
