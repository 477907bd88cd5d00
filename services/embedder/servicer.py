"""gRPC Embedder servicer: maps protos to the domain and back, nothing else."""

from __future__ import annotations

import asyncio
import functools

import grpc.aio
import numpy as np

from fashionsearch.batching import BatchPolicy, DynamicBatcher
from fashionsearch.decode_threads import BatchSlots
from fashionsearch.errors import FailedPrecondition, InvalidArgument, item_error_fields, rpc_errors
from fashionsearch.images import ImageLimits, decode_batch, decode_pixels, is_heavy
from fashionsearch.model_service import model_info
from fashionsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from services.embedder.model import Embedder
from services.embedder.text_model import TextEmbedder, TextVector


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    def __init__(
        self,
        embedder: Embedder,
        limits: ImageLimits,
        *,
        max_batch: int = 64,
        max_concurrent_batches: int = 1,
        batching: BatchPolicy = BatchPolicy(),  # noqa: B008 - frozen
        text: TextEmbedder | None = None,
        text_refused: str = "",
    ) -> None:
        self._embedder = embedder
        self._limits = limits
        self._max_batch = max_batch
        self._batch_slots = BatchSlots(max_concurrent_batches)
        self._model_info = model_info(embedder.identity)
        # Concurrent Embed calls share model calls (off when batching.max_delay_ms is 0).
        self.batcher = DynamicBatcher(self._embed_rows, batching, name="embedder")
        self._text = text
        self._text_refused = text_refused
        self._text_info = model_info(text.identity) if text is not None else None

    def _prepare(self, data: bytes) -> np.ndarray:
        return self._embedder.prepare(decode_pixels(data, self._limits, self._embedder.input_size))

    def _embed_rows(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        return list(self._embedder.embed_prepared(np.stack(rows)))

    @rpc_errors
    async def Embed(
        self, request: embedder_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedResponse:
        # Decoding and inference block, so they run in worker threads and the event loop keeps serving.
        prepare = functools.partial(self._prepare, request.image)
        vector = await self.batcher.submit(prepare, heavy=is_heavy(request.image))
        return embedder_pb2.EmbedResponse(
            embedding=embedder_pb2.Embedding(vector=vector.tolist()), model=self._model_info
        )

    def _embed_batch(self, images: list[bytes]) -> list[np.ndarray | InvalidArgument]:
        decoded = decode_batch(images, self._limits, self._embedder.input_size)
        good = [item for item in decoded if isinstance(item, np.ndarray)]
        vectors = iter(self._embedder.embed(good))
        return [next(vectors) if isinstance(item, np.ndarray) else item for item in decoded]

    @rpc_errors
    async def EmbedBatch(
        self, request: embedder_pb2.EmbedBatchRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedBatchResponse:
        if len(request.images) > self._max_batch:
            raise InvalidArgument(f"a batch holds at most {self._max_batch} images, got {len(request.images)}")
        images = list(request.images)
        outcomes = await self._batch_slots.run(functools.partial(self._embed_batch, images), images)
        results = [
            embedder_pb2.EmbedResult(error=common_pb2.ItemError(**item_error_fields(outcome)))
            if isinstance(outcome, InvalidArgument)
            else embedder_pb2.EmbedResult(embedding=embedder_pb2.Embedding(vector=outcome.tolist()))
            for outcome in outcomes
        ]
        return embedder_pb2.EmbedBatchResponse(results=results, model=self._model_info)

    def _text_model(self) -> TextEmbedder:
        if self._text is None:
            if self._text_refused:
                raise FailedPrecondition(f"this embedder serves no text model: {self._text_refused}")
            raise FailedPrecondition(
                "this embedder serves no text model (put one in EMBEDDER_TEXT_MODEL_DIR: python -m training train-text)"
            )
        return self._text

    @rpc_errors
    async def EmbedText(
        self, request: embedder_pb2.EmbedTextRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedTextResponse:
        [outcome] = await asyncio.to_thread(self._text_model().embed, [request.query])
        if isinstance(outcome, InvalidArgument):
            raise outcome
        return embedder_pb2.EmbedTextResponse(
            text=text_embedding(outcome), model=self._text_info, image_model=self._model_info
        )

    @rpc_errors
    async def EmbedTextBatch(
        self, request: embedder_pb2.EmbedTextBatchRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedTextBatchResponse:
        text = self._text_model()
        if len(request.queries) > self._max_batch:
            raise InvalidArgument(f"a batch holds at most {self._max_batch} queries, got {len(request.queries)}")
        outcomes = await asyncio.to_thread(text.embed, list(request.queries))
        results = [
            embedder_pb2.EmbedTextResult(error=common_pb2.ItemError(**item_error_fields(outcome)))
            if isinstance(outcome, InvalidArgument)
            else embedder_pb2.EmbedTextResult(text=text_embedding(outcome))
            for outcome in outcomes
        ]
        return embedder_pb2.EmbedTextBatchResponse(results=results, model=self._text_info, image_model=self._model_info)


def text_embedding(outcome: TextVector) -> embedder_pb2.TextEmbedding:
    understanding = outcome.understanding
    return embedder_pb2.TextEmbedding(
        embedding=embedder_pb2.Embedding(vector=outcome.vector.tolist()),
        terms=[
            common_pb2.QueryTerm(
                field=t.field, value=t.value, words=t.words, confidence=t.confidence, corrected=t.corrected
            )
            for t in understanding.terms
        ],
        unknown_words=list(understanding.unknown_words),
        word_count=understanding.word_count,
    )
