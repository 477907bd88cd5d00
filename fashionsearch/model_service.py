"""What the two model services (classifier, embedder) share: settings, start-up and `main()`.

Each service keeps what is its own (the model adapter, the servicer, extra settings such as the classifier's
top_k) and hands the rest to this module:

    settings = Settings.from_env()                  # ModelServiceSettings + the service's own fields
    running = await start_model_server("embedder", settings, model, register, service_names)
    # bound, model warmed up, health SERVING; then running.wait_for_signal(...)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import grpc.aio

from fashionsearch import metrics
from fashionsearch.batching import BatchPolicy
from fashionsearch.config import ConfigError, Env
from fashionsearch.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, ImageLimits
from fashionsearch.logs import configure_logging
from fashionsearch.model_contract import ModelContractError
from fashionsearch.model_variants import PRECISIONS
from fashionsearch.onnx_model import ModelIdentity, OnnxAdapter
from fashionsearch.serving import DEFAULT_MAX_MESSAGE_BYTES, RunningServer, StopSignal, start_server
from fashionsearch.v1 import common_pb2

logger = logging.getLogger(__name__)

# Model services are stateless and scaled out behind one name: clients reconnect this often, and so find new replicas.
# Their calls are short (seconds at most), so the same time again to finish in-flight calls is plenty.
MAX_CONNECTION_AGE_S = 60.0


@dataclass(frozen=True)
class ModelServiceSettings:
    """The variables every model service reads, each under its own prefix (CLASSIFIER_PORT, EMBEDDER_PORT, ...).

    A service subclasses it to set its port and model folder defaults and to add its own fields.
    """

    port: int = 0
    host: str = "[::]"
    model_dir: Path = Path("models")
    #: Which of the model folder's files to serve (fashionsearch/model_variants.py): "auto" takes the int8 variant
    #: when the CPU has 8-bit dot products (VNNI) and float otherwise; "int8" and "float" force one.
    precision: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_image_bytes: int = DEFAULT_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    min_image_side: int = DEFAULT_MIN_SIDE
    max_batch: int = 64
    #: Batch calls whose decoding and inference run at once; more wait their turn holding only their request. Each
    #: holds a batch's activations, so this bounds the peak memory whatever callers send (decode_threads.BatchSlots).
    #: Two: each runs on one onnxruntime thread, so two batch calls (the indexer's, or the gateway's UpsertBatch
    #: ones) use both cores of the 2-core deployment: re-embedding through one-pass int8 1.6x the images/s of one at
    #: a time (bench/README.md, issue 30), for a second batch's activations (peak about 300 MB against 210 MB with
    #: the served models, bench/batch_memory.py).
    max_concurrent_batches: int = 2
    #: Dynamic batching of single-image calls, off by default: the gateway already sends concurrent searches as
    #: batch calls, and batching here alone changed CPU per search by only 0.9x to 1.4x (bench/README.md);
    #: worth turning on for other clients that send many single calls at once.
    batch_max_size: int = 32
    batch_max_delay_ms: float = 0.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_s: float = 5.0
    log_level: str = "INFO"
    #: Port of the Prometheus /metrics listener; None (the default in code, or 0 in the environment) = none.
    metrics_port: int | None = None
    #: What *_METRICS_PORT defaults to when unset: each service has its own.
    DEFAULT_METRICS_PORT: ClassVar[int] = 0

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_image_bytes, self.max_image_pixels, self.min_image_side)

    @property
    def batch_policy(self) -> BatchPolicy:
        """Dynamic batching of single-image calls (fashionsearch/batching.py)."""
        return BatchPolicy(self.batch_max_size, self.batch_max_delay_ms)

    @classmethod
    def common_from_env(cls, env: Env) -> dict[str, Any]:
        """The shared fields read from `env`, with this class's defaults; validated before anything binds."""
        return {
            "port": env.port("PORT", cls.port),
            "host": env.get_str("HOST", cls.host),
            "model_dir": env.path("MODEL_DIR", cls.model_dir, must_exist="dir"),
            "precision": env.choice("PRECISION", cls.precision, PRECISIONS),
            "intra_op_threads": env.get_int("INTRA_OP_THREADS", cls.intra_op_threads, min=0, max=256),
            "inter_op_threads": env.get_int("INTER_OP_THREADS", cls.inter_op_threads, min=0, max=256),
            "max_image_bytes": env.get_int("MAX_IMAGE_BYTES", cls.max_image_bytes, min=1),
            "max_image_pixels": env.get_int("MAX_IMAGE_PIXELS", cls.max_image_pixels, min=1),
            "min_image_side": env.get_int("MIN_IMAGE_SIDE", cls.min_image_side, min=1),
            "max_batch": env.get_int("MAX_BATCH", cls.max_batch, min=1, max=4096),
            "max_concurrent_batches": env.get_int("MAX_CONCURRENT_BATCHES", cls.max_concurrent_batches, min=1, max=64),
            "batch_max_size": env.get_int("BATCH_MAX_SIZE", cls.batch_max_size, min=1, max=4096),
            "batch_max_delay_ms": env.get_float("BATCH_MAX_DELAY_MS", cls.batch_max_delay_ms, min=0, max=1000),
            "max_message_bytes": env.get_int("MAX_MESSAGE_BYTES", cls.max_message_bytes, min=1024),
            "grace_s": env.get_float("GRACE_S", cls.grace_s, min=0, max=600),
            "log_level": env.choice("LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")),
            "metrics_port": env.port("METRICS_PORT", cls.DEFAULT_METRICS_PORT) or None,
        }


def model_info(identity: ModelIdentity) -> common_pb2.ModelInfo:
    """The model identity every model service returns with its answers."""
    return common_pb2.ModelInfo(name=identity.name, version=identity.version, onnx_sha256=identity.sha256)


class ServedModel(Protocol):
    """What start-up needs from a model adapter."""

    @property
    def identity(self) -> ModelIdentity: ...

    def warm_up(self, batch_size: int = 1) -> None: ...


async def start_model_server(
    kind: str,
    settings: ModelServiceSettings,
    model: ServedModel,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    describe: Mapping[str, Any] | None = None,
) -> RunningServer:
    """Bind, warm the model up, then health SERVING; returns once serving. A failed warm-up stops the server."""
    identity = model.identity
    running = await start_server(
        register,
        service_names,
        host=settings.host,
        port=settings.port,
        max_message_bytes=settings.max_message_bytes,
        max_connection_age_s=MAX_CONNECTION_AGE_S,
        describe={
            "model": str(identity),
            **(describe or {}),
            "model_sha256": identity.sha256,
            "precision": identity.precision,
            "model_dir": str(settings.model_dir),
            "batch_max_size": settings.batch_max_size,
            "batch_max_delay_ms": settings.batch_max_delay_ms,
        },
    )
    metrics.describe_model(
        kind,
        identity.name,
        identity.version,
        identity.sha256,
        identity.precision,
        str((describe or {}).get("vectors_of") or ""),
    )
    running.serve_metrics(settings.metrics_port)
    try:
        # At the largest batch when batching: the memory a full batch needs is taken before SERVING, not under load.
        await asyncio.to_thread(model.warm_up, settings.batch_max_size if settings.batch_policy.enabled else 1)
    except BaseException:
        await running.stop(0)
        raise
    await running.set_serving()
    logger.info("%s %s (%s) is SERVING on port %s", kind, identity, identity.precision, running.port)
    return running


def served_file(model: OnnxAdapter) -> dict[str, Any]:
    """For the start-up log: which of the model folder's files is served, and why (*_PRECISION, the CPU)."""
    return {"model_file": model.variant.describe(), "model_file_chosen": model.variant_reason}


S = TypeVar("S", bound=ModelServiceSettings)


async def serve_until_stopped(start: Callable[[S], Awaitable[RunningServer]], settings: S) -> None:
    """Start a model service, run it until SIGTERM or SIGINT, then shut down gracefully."""
    stop = StopSignal()  # before loading the model, so a SIGTERM during start-up still shuts down cleanly
    running = await start(settings)
    await running.wait_for_signal(settings.grace_s, stop)


def run_model_service(
    kind: str,
    from_env: Callable[[], ModelServiceSettings],
    serve: Callable[[Any], Coroutine[Any, Any, None]],
) -> int:
    """The body of `python -m services.<kind>`: exit status 2, with the reason logged, when it cannot start."""
    configure_logging()
    try:
        settings = from_env()
        configure_logging(settings.log_level)
        asyncio.run(serve(settings))
    except (ConfigError, ModelContractError, OSError) as bad:
        logging.getLogger(f"services.{kind}").error("cannot start: %s", bad)
        return 2
    return 0
