"""Embedder settings, from EMBEDDER_* environment variables only, validated before anything binds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fashionsearch.config import Env
from fashionsearch.model_service import ModelServiceSettings


@dataclass(frozen=True)
class Settings(ModelServiceSettings):
    """Everything the embedder reads from its environment: the model services' shared variables."""

    port: int = 50052
    model_dir: Path = Path("models/embedder")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls(**cls.common_from_env(Env("EMBEDDER_", environ)))
