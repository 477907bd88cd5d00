"""Which environment variables a service's settings read: deployment files are checked against it."""

from __future__ import annotations

import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIXES = {"classifier": "CLASSIFIER_", "embedder": "EMBEDDER_", "detector": "DETECTOR_", "gateway": "GATEWAY_"}


class RecordingEnviron(dict):
    """An environment that notes every variable name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key, default=None):  # noqa: ANN001, ANN201 - dict's own signature
        self.read.add(key)
        return super().get(key, default)


def variables_read_by(service: str) -> set[str]:
    """Every variable the service's Settings.from_env looks up (run for real, with an empty environment)."""
    settings = importlib.import_module(f"services.{service}.settings").Settings
    # The model folder must exist; which folder does not matter here.
    environ = RecordingEnviron({} if service == "gateway" else {f"{PREFIXES[service]}MODEL_DIR": str(REPO)})
    settings.from_env(environ)
    assert environ.read, f"services/{service}/settings.py reads no variables"
    assert all(name.startswith(PREFIXES[service]) for name in environ.read), sorted(environ.read)
    return environ.read
