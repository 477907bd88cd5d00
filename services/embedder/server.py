"""Embedder server: load and check the model, bind, warm up, then SERVING until a stop signal."""

from __future__ import annotations

import asyncio
import logging

from fashionsearch.model_contract import ModelContractError
from fashionsearch.model_service import serve_until_stopped, served_file, start_model_server
from fashionsearch.serving import RunningServer, service_name
from fashionsearch.v1 import embedder_pb2, embedder_pb2_grpc
from services.embedder.model import Embedder, OnnxEmbedder
from services.embedder.servicer import EmbedderServicer
from services.embedder.settings import Settings
from services.embedder.text_model import OnnxTextEmbedder, TextEmbedder

logger = logging.getLogger(__name__)


async def start(
    settings: Settings, embedder: Embedder | None = None, text_embedder: TextEmbedder | None = None
) -> RunningServer:
    """Start the server and return once it is SERVING (models loaded and warmed up)."""
    describe = {}
    if embedder is None:
        # Refuses to go on, naming every difference, when model.onnx does not match model.json.
        loaded = OnnxEmbedder.from_dir(
            settings.model_dir,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            precision=settings.precision,
        )
        describe = served_file(loaded)
        embedder = loaded
    text_refused = ""
    if text_embedder is None and settings.text_model_dir is not None:
        # Refuses, too, a text model trained for another image embedder: its vectors would not meet the photos'.
        try:
            text_embedder = OnnxTextEmbedder(
                settings.text_model_dir,
                embedder.identity,
                intra_op_threads=settings.intra_op_threads,
                inter_op_threads=settings.inter_op_threads,
            )
        except ModelContractError as refused:
            if settings.text_model_required:
                raise
            text_refused = str(refused)
            logger.error("serving no text model: %s", refused)
    if text_embedder is not None:
        await asyncio.to_thread(text_embedder.warm_up)
    servicer = EmbedderServicer(
        embedder,
        settings.image_limits,
        max_batch=settings.max_batch,
        max_concurrent_batches=settings.max_concurrent_batches,
        batching=settings.batch_policy,
        text=text_embedder,
        text_refused=text_refused,
    )
    running = await start_model_server(
        "embedder",
        settings,
        embedder,
        lambda server: embedder_pb2_grpc.add_EmbedderServicer_to_server(servicer, server),
        [service_name(embedder_pb2, "Embedder")],
        describe={
            "dim": embedder.dim,
            "text_model": str(text_embedder.identity) if text_embedder else None,
            **describe,
        },
    )
    running.add_closer(servicer.batcher.close)
    return running


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    await serve_until_stopped(start, settings)
