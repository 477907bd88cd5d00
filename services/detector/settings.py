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
    """Everything the detector reads from its environment: the model services' shared variables, and
    DETECTOR_FLIP_TEST."""

    port: int = 50053
    model_dir: Path = Path("models/detector")
    #: The flip test (fashionsearch/detection.py `run_detector`): None (DETECTOR_FLIP_TEST=auto or unset) serves
    #: what model.json's `detection.flip_test` says; true or false forces it.
    flip_test: bool | None = None
    DEFAULT_METRICS_PORT: ClassVar[int] = 9104

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env("DETECTOR_", environ)
        auto = env.get_str("FLIP_TEST", "auto").lower() == "auto"
        return cls(**cls.common_from_env(env), flip_test=None if auto else env.get_bool("FLIP_TEST", False))
