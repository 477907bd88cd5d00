"""Detector settings, from DETECTOR_* environment variables only, validated before anything binds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fashionsearch.config import Env
from fashionsearch.model_service import ModelServiceSettings


@dataclass(frozen=True)
class Settings(ModelServiceSettings):
    """Everything the detector reads from its environment: the model services' shared variables."""

    port: int = 50053
    model_dir: Path = Path("models/detector")
    DEFAULT_METRICS_PORT: ClassVar[int] = 9104

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls(**cls.common_from_env(Env("DETECTOR_", environ)))
