"""Ports for the gateway's dependencies (classifier, embedder, detector) and their gRPC adapters.

Every call carries the request id being served (x-request-id metadata), so the peers' logs carry it too.

Each adapter reuses one channel and gives every call its own deadline. A dependency that is down fails fast with
UNAVAILABLE (calls are not wait_for_ready), one that is too slow with DEADLINE_EXCEEDED, so the gateway never
hangs on a peer.

With `batch_max_size` > 1, concurrent searches' single-image calls go out together as one ClassifyBatch /
EmbedBatch call (fashionsearch/batching.py): while one is in flight the next searches queue, and the next call
takes them all (a lone search goes at once). A model service then handles one RPC per batch instead of one per
search, which is most of its CPU per search. An image too large to share a message goes alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

import grpc
import grpc.aio
import numpy as np

from fashionsearch.batching import REQUEST_SLACK_BYTES, BatchPolicy, BatchStats, DynamicBatcher, bounded_chunks
from fashionsearch.channels import probe_image
from fashionsearch.classification import AttributePrediction, LabelScore
from fashionsearch.detection import BoxVerification, Detection
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
from fashionsearch.logs import new_batch_id, request_id, request_metadata
from fashionsearch.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    common_pb2,
    detector_pb2,
    detector_pb2_grpc,
    embedder_pb2,
    embedder_pb2_grpc,
)
from services.gateway.domain import Classification, Embedding, FoundProducts, ModelId, QueryTerm, TextEmbedding

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ClassifierPort(Protocol):
    """Predicts attributes of one image, or of a batch with a result or an error per image; the answers carry the
    photo's vector when the classifier computes it in the same pass (one pass)."""

    async def classify(self, image: bytes) -> Classification: ...

    async def classify_batch(self, images: Sequence[bytes]) -> list[Classification | FashionSearchError]:
        """One outcome per image, in order; raises only when the whole call fails."""
        ...

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


class DetectorPort(Protocol):
    """Finds the products in one photo."""

    async def detect(self, image: bytes, flip_test: bool | None = None, with_candidates: bool = False) -> FoundProducts:
        """`flip_test`: ask for the detector's flip test (True), not (False), or its own setting (None);
        `with_candidates`: also the weak boxes, with the rule to verify them by (FoundProducts.verification)."""
        ...


_ITEM_ERRORS: dict[int, type[FashionSearchError]] = {
    code_number(cls.code): cls
    for cls in (InvalidArgument, NotFound, FailedPrecondition, Unavailable, DeadlineExceeded, ResourceExhausted)
}


def item_error(error: common_pb2.ItemError) -> FashionSearchError:
    """The FashionSearchError an ItemError of a batch reply stands for."""
    return _ITEM_ERRORS.get(error.code, Internal)(error.message or "the item failed")


def message_chunks(images: Sequence[bytes], max_message_bytes: int) -> Iterator[list[bytes]]:
    """The images in order, in as few batch requests as fit in the message limit: every image the gateway accepts
    fits in one message, but a few of them together may not."""
    sizes = [len(image) + 16 for image in images]  # + the field's tag and length
    yield from bounded_chunks(images, sizes, len(images), max_message_bytes - REQUEST_SLACK_BYTES)


def model_id(info: common_pb2.ModelInfo) -> ModelId:
    return ModelId(name=info.name, version=info.version, onnx_sha256=info.onnx_sha256)


class CallBatcher(Generic[T]):
    """Concurrent single-image calls of one client sent as one batch call (off when max_size is 1).

    `send(images, timeout_s)` makes the batch call and returns one answer or FashionSearchError per image. Each
    call keeps its own deadline, `timeout_s` from the moment it is queued, whether it waits for the batch in
    flight or is inside its own; a call that gives up (or whose search is cancelled) leaves the queue. A batch
    call gets the time left to the latest deadline in it, so no call in it is cut short.
    """

    def __init__(
        self,
        send: Callable[[list[bytes], float], Awaitable[Sequence[T | FashionSearchError]]],
        max_size: int,
        max_message_bytes: int,
        timeout_s: float,
        peer: str,
        in_flight: int = 1,
    ) -> None:
        self._send = send
        self._batcher: DynamicBatcher[tuple[bytes, float, str | None], T] = DynamicBatcher(
            self._run, BatchPolicy(max_size, in_flight=in_flight), name=f"gateway to {peer}"
        )
        #: Larger images go alone, so a full batch always fits in one message.
        self._max_image_bytes = max_message_bytes // max_size if max_size > 1 else -1
        self._timeout_s = timeout_s
        self._peer = peer

    @property
    def stats(self) -> BatchStats:
        return self._batcher.stats

    @property
    def queued(self) -> int:
        """Calls waiting for the batch in flight to finish."""
        return self._batcher.queued

    def takes(self, image: bytes) -> bool:
        return len(image) <= self._max_image_bytes

    async def submit(self, image: bytes) -> T:
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        try:
            call = (image, deadline, request_id.get())
            return await asyncio.wait_for(self._batcher.submit_ready(call), self._timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(f"the {self._peer} did not answer in time") from None

    async def _run(self, calls: list[tuple[bytes, float, str | None]]) -> Sequence[T | FashionSearchError]:
        timeout_s = max(deadline for _, deadline, _ in calls) - asyncio.get_running_loop().time()
        if timeout_s <= 0:  # all of them are giving up this very moment
            return [DeadlineExceeded(f"the {self._peer} did not answer in time") for _ in calls]
        # A batch of one carries its search's own id; a larger one an id of its own, logged here with its members,
        # so the peer's metadata stays one short id whatever the callers sent and each search can be followed.
        ids = [rid for _, _, rid in calls if rid is not None]
        carried = calls[0][2] if len(calls) == 1 else new_batch_id()
        token = request_id.set(carried)  # the log line below belongs to the batch, not to its first search
        if len(calls) > 1:
            logger.info(
                "batch %s to the %s: %s searches",
                carried,
                self._peer,
                len(calls),
                extra={"batch_id": carried, "request_ids": ids},
            )
        try:
            return await self._send([image for image, _, _ in calls], timeout_s)
        finally:
            request_id.reset(token)

    async def close(self) -> None:
        await self._batcher.close()


class GrpcClassifier:
    """ClassifierPort over the classifier service's Classify RPC (ClassifyBatch for batches and concurrent calls).

    With `with_embedding`, every call asks for the photo's vector too; a classifier that serves the embedder's
    projection on the same trunk (one pass) answers with it, and the Classification carries it.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout_s: float,
        batch_timeout_s: float | None = None,
        top_k: int = 3,
        batch_max_size: int = 1,
        batch_in_flight: int = 1,
        max_message_bytes: int = 4 * 1024 * 1024,
        with_embedding: bool = False,
    ) -> None:
        self._stub = classifier_pb2_grpc.ClassifierStub(channel)
        self._timeout_s = timeout_s
        self._batch_timeout_s = batch_timeout_s or timeout_s
        self._top_k = top_k
        self._max_message_bytes = max_message_bytes
        self._with_embedding = with_embedding
        self._model: ModelId | None = None
        self.batching = CallBatcher(
            self._classify_batch, batch_max_size, max_message_bytes, timeout_s, "classifier", batch_in_flight
        )

    async def classify(self, image: bytes) -> Classification:
        if self.batching.takes(image):
            return await self.batching.submit(image)
        try:
            reply = await self._stub.Classify(
                classifier_pb2.ClassifyRequest(image=image, top_k=self._top_k, with_embedding=self._with_embedding),
                timeout=self._timeout_s,
                metadata=request_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "the classifier") from None
        self._model = model_id(reply.model)
        vectors = model_id(reply.embedder_model) if reply.HasField("embedder_model") else None
        return self._classification(reply.classification, vectors)

    async def classify_batch(self, images: Sequence[bytes]) -> list[Classification | FashionSearchError]:
        """One outcome per image, in order, in as few ClassifyBatch calls as the message limit allows."""
        outcomes: list[Classification | FashionSearchError] = []
        for chunk in message_chunks(images, self._max_message_bytes):
            outcomes.extend(await self._classify_batch(chunk, self._batch_timeout_s))
        return outcomes

    async def _classify_batch(self, images: list[bytes], timeout_s: float) -> list[Classification | FashionSearchError]:
        try:
            reply = await self._stub.ClassifyBatch(
                classifier_pb2.ClassifyBatchRequest(
                    images=images, top_k=self._top_k, with_embedding=self._with_embedding
                ),
                timeout=timeout_s,
                metadata=request_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "the classifier") from None
        if len(reply.results) != len(images):
            raise Internal(f"the classifier answered {len(reply.results)} results for {len(images)} images")
        self._model = model_id(reply.model)
        vectors = model_id(reply.embedder_model) if reply.HasField("embedder_model") else None
        return [
            self._classification(r.classification, vectors)
            if r.WhichOneof("outcome") == "classification"
            else item_error(r.error)
            for r in reply.results
        ]

    def _classification(self, reply: classifier_pb2.Classification, vectors: ModelId | None) -> Classification:
        assert self._model is not None
        embedding = None
        if vectors is not None and len(reply.embedding):
            embedding = Embedding(vector=np.asarray(reply.embedding, dtype=np.float32), model=vectors)
        return Classification(
            attributes=tuple(
                AttributePrediction(
                    attribute=head.attribute,
                    labels=tuple(LabelScore(label=s.label, probability=s.probability) for s in head.labels),
                )
                for head in reply.attributes
            ),
            suggested_name=reply.suggested_name,
            keywords=tuple(reply.keywords),
            model=self._model,
            embedding=embedding,
        )

    async def model(self) -> ModelId | None:
        if self._model is None:
            try:
                await self.classify(probe_image())
            except Exception as error:  # noqa: BLE001 - stats must answer even when the classifier is down
                logger.warning("could not learn the classifier model: %s", error)
        return self._model


class GrpcEmbedder:
    """EmbedderPort over the embedder service's Embed RPC (EmbedBatch for batches and concurrent calls)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout_s: float,
        batch_timeout_s: float | None = None,
        batch_max_size: int = 1,
        batch_in_flight: int = 1,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        """`max_message_bytes`: the channel's message limit; a batch is sent in as many calls as fit in it."""
        self._stub = embedder_pb2_grpc.EmbedderStub(channel)
        self._timeout_s = timeout_s
        self._batch_timeout_s = batch_timeout_s or timeout_s
        self._max_message_bytes = max_message_bytes
        self._model: ModelId | None = None
        self.batching = CallBatcher(
            self._embed_many, batch_max_size, max_message_bytes, timeout_s, "embedder", batch_in_flight
        )

    async def embed(self, image: bytes) -> Embedding:
        if self.batching.takes(image):
            return await self.batching.submit(image)
        try:
            reply = await self._stub.Embed(
                embedder_pb2.EmbedRequest(image=image), timeout=self._timeout_s, metadata=request_metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "the embedder") from None
        self._model = model_id(reply.model)
        return Embedding(vector=np.asarray(reply.embedding.vector, dtype=np.float32), model=self._model)

    async def embed_batch(self, images: Sequence[bytes]) -> list[Embedding | FashionSearchError]:
        outcomes: list[Embedding | FashionSearchError] = []
        models: set[ModelId] = set()
        for chunk in message_chunks(images, self._max_message_bytes):
            part = await self._embed_many(chunk, self._batch_timeout_s)
            models.update(e.model for e in part if isinstance(e, Embedding))
            if len(models) > 1:
                raise Unavailable("the embedder changed version during a batch; try again")
            outcomes.extend(part)
        return outcomes

    async def _embed_many(self, images: Sequence[bytes], timeout_s: float) -> list[Embedding | FashionSearchError]:
        try:
            reply = await self._stub.EmbedBatch(
                embedder_pb2.EmbedBatchRequest(images=list(images)), timeout=timeout_s, metadata=request_metadata()
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


class GrpcDetector:
    """DetectorPort over the detector service's Detect RPC."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self._stub = detector_pb2_grpc.DetectorStub(channel)
        self._timeout_s = timeout_s

    async def detect(self, image: bytes, flip_test: bool | None = None, with_candidates: bool = False) -> FoundProducts:
        request = detector_pb2.DetectRequest(image=image, flip_test=flip_test, with_candidates=with_candidates)
        try:
            reply = await self._stub.Detect(
                request,
                timeout=self._timeout_s,
                metadata=request_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "the detector") from None
        found = reply.detections
        return FoundProducts(
            detections=tuple(
                Detection(d.box.left, d.box.top, d.box.width, d.box.height, d.group, d.score, tuple(d.sub_categories))
                for d in found.detections
            ),
            size=(found.image_width, found.image_height),
            model=model_id(reply.model),
            verification=_verification(reply.verification) if reply.HasField("verification") else None,
            score_threshold=reply.score_threshold,
        )


def _verification(rule: detector_pb2.BoxVerification) -> BoxVerification:
    """The detector's rule from its message, which has the rule's fields by name."""
    return BoxVerification(**{f.name: getattr(rule, f.name) for f in dataclasses.fields(BoxVerification)})
