"""Embedder settings, from EMBEDDER_* environment variables only, validated before anything binds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fashionsearch.config import Env
from fashionsearch.model_service import ModelServiceSettings

#: The text model's folder name beside the image model's (models/embedder -> models/text-embedder).
TEXT_MODEL_FOLDER = "text-embedder"


@dataclass(frozen=True)
class Settings(ModelServiceSettings):
    """Everything the embedder reads from its environment: the model services' shared variables, and the text model
    served beside the image model (EMBEDDER_TEXT_MODEL_DIR; by default the text-embedder folder beside the model
    folder when it holds a model.json; EMBEDDER_TEXT_ENABLED=false serves none).

    A text model named in EMBEDDER_TEXT_MODEL_DIR must fit the image model, or the service does not start; one only
    found beside it is left out when it does not fit (logged; text calls then say why), so an image model upgrade
    keeps photo search running until the text model is retrained."""

    port: int = 50052
    model_dir: Path = Path("models/embedder")
    text_model_dir: Path | None = None
    #: True when text_model_dir was configured explicitly (then a text model that does not fit stops the start).
    text_model_required: bool = True
    DEFAULT_METRICS_PORT: ClassVar[int] = 9102

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env("EMBEDDER_", environ)
        common = cls.common_from_env(env)
        text_model_dir, required = None, True
        if env.get_bool("TEXT_ENABLED", True):
            beside = common["model_dir"].parent / TEXT_MODEL_FOLDER
            if env.get_str("TEXT_MODEL_DIR", ""):
                text_model_dir = env.path("TEXT_MODEL_DIR", beside, must_exist="dir")
            elif (beside / "model.json").is_file():
                text_model_dir, required = beside, False
        return cls(**common, text_model_dir=text_model_dir, text_model_required=required)
