"""Ports for the gateway's dependencies (classifier, embedder) and their gRPC adapters.

Each adapter reuses one channel and gives every call its own deadline. A dependency that is down fails fast with
UNAVAILABLE (calls are not wait_for_ready), one that is too slow with DEADLINE_EXCEEDED, so the gateway never
hangs on a peer.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from functools import cache
from typing import Protocol

import grpc
import grpc.aio
import numpy as np
from PIL import Image

from fashionsearch.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FashionSearchError,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    code_number,
    from_rpc_error,
)
from fashionsearch.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
)
from services.gateway.domain import (
    AttributePrediction,
    Classification,
    Embedding,
    LabelScore,
    ModelId,
    QueryTerm,
    TextEmbedding,
)

logger = logging.getLogger(__name__)


class ClassifierPort(Protocol):
    """Predicts attributes of one image."""

    async def classify(self, image: bytes) -> Classification: ...

    async def model(self) -> ModelId | None:
        """The running model, from the last answer or a probe; None when the classifier cannot be reached."""
        ...


class EmbedderPort(Protocol):
    """Embeds one image, or a batch with a result or an error per image."""

    async def embed(self, image: bytes) -> Embedding: ...

    async def embed_batch(self, images: Sequence[bytes]) -> list[Embedding | FashionSearchError]:
        """One outcome per image, in order; raises only when the whole call fails."""
        ...

    async def model(self) -> ModelId | None:
        """The running model, from the last answer or a probe; None when the embedder cannot be reached."""
        ...

    async def embed_text(self, query: str) -> TextEmbedding:
        """A text query's vector in the image space, with the attribute values its words name."""
        ...


_ITEM_ERRORS: dict[int, type[FashionSearchError]] = {
    code_number(cls.code): cls
    for cls in (InvalidArgument, NotFound, FailedPrecondition, Unavailable, DeadlineExceeded, ResourceExhausted)
}


def item_error(error: common_pb2.ItemError) -> FashionSearchError:
    """The FashionSearchError an ItemError of a batch reply stands for."""
    return _ITEM_ERRORS.get(error.code, Internal)(error.message or "the item failed")


def model_id(info: common_pb2.ModelInfo) -> ModelId:
    return ModelId(name=info.name, version=info.version, onnx_sha256=info.onnx_sha256)


@cache
def probe_image() -> bytes:
    """A small plain PNG that any image model accepts; used only to learn which model is running."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 200, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Reconnect quickly after a peer restarts, so UNAVAILABLE does not outlast the peer's outage by much.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


class GrpcClassifier:
    """ClassifierPort over the classifier service's Classify RPC."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, top_k: int = 3) -> None:
        self._stub = classifier_pb2_grpc.ClassifierStub(channel)
        self._timeout_s = timeout_s
        self._top_k = top_k
        self._model: ModelId | None = None

    async def classify(self, image: bytes) -> Classification:
        try:
            reply = await self._stub.Classify(
                classifier_pb2.ClassifyRequest(image=image, top_k=self._top_k), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "the classifier") from None
        self._model = model_id(reply.model)
        return Classification(
            attributes=tuple(
                AttributePrediction(
                    attribute=head.attribute,
                    labels=tuple(LabelScore(label=s.label, probability=s.probability) for s in head.labels),
                )
                for head in reply.classification.attributes
            ),
            model=self._model,
        )

    async def model(self) -> ModelId | None:
        if self._model is None:
            try:
                await self.classify(probe_image())
            except Exception as error:  # noqa: BLE001 - stats must answer even when the classifier is down
                logger.warning("could not learn the classifier model: %s", error)
        return self._model


class GrpcEmbedder:
    """EmbedderPort over the embedder service's Embed RPC."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, batch_timeout_s: float | None = None) -> None:
        self._stub = embedder_pb2_grpc.EmbedderStub(channel)
        self._timeout_s = timeout_s
        self._batch_timeout_s = batch_timeout_s or timeout_s
        self._model: ModelId | None = None

    async def embed(self, image: bytes) -> Embedding:
        try:
            reply = await self._stub.Embed(embedder_pb2.EmbedRequest(image=image), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "the embedder") from None
        self._model = model_id(reply.model)
        return Embedding(vector=np.asarray(reply.embedding.vector, dtype=np.float32), model=self._model)

    async def embed_batch(self, images: Sequence[bytes]) -> list[Embedding | FashionSearchError]:
        try:
            reply = await self._stub.EmbedBatch(
                embedder_pb2.EmbedBatchRequest(images=list(images)), timeout=self._batch_timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "the embedder") from None
        if len(reply.results) != len(images):
            raise Internal(f"the embedder answered {len(reply.results)} results for {len(images)} images")
        self._model = model_id(reply.model)
        return [
            Embedding(vector=np.asarray(r.embedding.vector, dtype=np.float32), model=self._model)
            if r.WhichOneof("outcome") == "embedding"
            else item_error(r.error)
            for r in reply.results
        ]

    async def embed_text(self, query: str) -> TextEmbedding:
        try:
            reply = await self._stub.EmbedText(embedder_pb2.EmbedTextRequest(query=query), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "the embedder") from None
        text = reply.text
        return TextEmbedding(
            vector=np.asarray(text.embedding.vector, dtype=np.float32),
            terms=tuple(
                QueryTerm(field=t.field, value=t.value, words=t.words, confidence=t.confidence, corrected=t.corrected)
                for t in text.terms
            ),
            unknown_words=tuple(text.unknown_words),
            word_count=text.word_count,
            model=model_id(reply.model),
            image_model=model_id(reply.image_model),
        )

    async def model(self) -> ModelId | None:
        if self._model is None:
            try:
                await self.embed(probe_image())
            except Exception as error:  # noqa: BLE001 - stats must answer even when the embedder is down
                logger.warning("could not learn the embedder model: %s", error)
        return self._model
