"""Classifier settings, from CLASSIFIER_* environment variables only, validated before anything binds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fashionsearch.config import Env
from fashionsearch.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, ImageLimits
from fashionsearch.serving import DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Settings:
    """Everything the classifier reads from its environment."""

    port: int = 50051
    host: str = "[::]"
    model_dir: Path = Path("models/classifier")
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_image_bytes: int = DEFAULT_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    min_image_side: int = DEFAULT_MIN_SIDE
    max_batch: int = 64
    default_top_k: int = 3
    max_top_k: int = 10
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_s: float = 5.0
    log_level: str = "INFO"

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_image_bytes, self.max_image_pixels, self.min_image_side)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env("CLASSIFIER_", environ)
        max_top_k = env.get_int("MAX_TOP_K", cls.max_top_k, min=1, max=1000)
        return cls(
            port=env.port("PORT", cls.port),
            host=env.get_str("HOST", cls.host),
            model_dir=env.path("MODEL_DIR", cls.model_dir, must_exist="dir"),
            intra_op_threads=env.get_int("INTRA_OP_THREADS", cls.intra_op_threads, min=0, max=256),
            inter_op_threads=env.get_int("INTER_OP_THREADS", cls.inter_op_threads, min=0, max=256),
            max_image_bytes=env.get_int("MAX_IMAGE_BYTES", cls.max_image_bytes, min=1),
            max_image_pixels=env.get_int("MAX_IMAGE_PIXELS", cls.max_image_pixels, min=1),
            min_image_side=env.get_int("MIN_IMAGE_SIDE", cls.min_image_side, min=1),
            max_batch=env.get_int("MAX_BATCH", cls.max_batch, min=1, max=4096),
            default_top_k=env.get_int("DEFAULT_TOP_K", cls.default_top_k, min=1, max=max_top_k),
            max_top_k=max_top_k,
            max_message_bytes=env.get_int("MAX_MESSAGE_BYTES", cls.max_message_bytes, min=1024),
            grace_s=env.get_float("GRACE_S", cls.grace_s, min=0, max=600),
            log_level=env.choice("LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")),
        )
