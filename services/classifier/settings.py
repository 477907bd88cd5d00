"""Classifier settings, from CLASSIFIER_* environment variables only, validated before anything binds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fashionsearch.config import Env
from fashionsearch.model_service import ModelServiceSettings


@dataclass(frozen=True)
class Settings(ModelServiceSettings):
    """Everything the classifier reads from its environment: the model services' shared variables, and top_k."""

    port: int = 50051
    model_dir: Path = Path("models/classifier")
    DEFAULT_METRICS_PORT: ClassVar[int] = 9101
    default_top_k: int = 3
    max_top_k: int = 10
    #: Serve the variant with the embedder's projection on the same trunk when model.json lists one, so one model
    #: call gives a search both the attributes and the vector (CLASSIFIER_ONE_PASS=false: the plain classifier).
    one_pass: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env("CLASSIFIER_", environ)
        max_top_k = env.get_int("MAX_TOP_K", cls.max_top_k, min=1, max=1000)
        return cls(
            **cls.common_from_env(env),
            default_top_k=env.get_int("DEFAULT_TOP_K", cls.default_top_k, min=1, max=max_top_k),
            max_top_k=max_top_k,
            one_pass=env.get_bool("ONE_PASS", cls.one_pass),
        )
