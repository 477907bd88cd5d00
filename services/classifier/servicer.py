"""gRPC Classifier servicer: maps protos to the domain and back, nothing else."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import grpc.aio
import numpy as np

from fashionsearch.batching import BatchPolicy, DynamicBatcher
from fashionsearch.classification import Classification
from fashionsearch.decode_threads import BatchSlots
from fashionsearch.errors import InvalidArgument, item_error_fields, rpc_errors
from fashionsearch.images import ImageLimits, decode_batch, decode_pixels, is_heavy
from fashionsearch.model_service import model_info
from fashionsearch.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2
from services.classifier.model import Classifier


def classification_fields(result: Classification, vector: np.ndarray | None = None) -> dict[str, Any]:
    """A classifier_pb2.Classification's fields as plain values: a reply built from these in one go is the same
    message, made in about 0.3x the time of one built from a message per label and attribute, each copied into its
    parent (15 against 57 us a photo of a batch reply, bench/README.md)."""
    return {
        "embedding": vector.tolist() if vector is not None else (),
        "attributes": [
            {"attribute": a.attribute, "labels": [{"label": s.label, "probability": s.probability} for s in a.labels]}
            for a in result.attributes
        ],
        "suggested_name": result.suggested_name,
        "keywords": result.keywords,
    }


class ClassifierServicer(classifier_pb2_grpc.ClassifierServicer):
    def __init__(
        self,
        classifier: Classifier,
        limits: ImageLimits,
        *,
        max_batch: int = 64,
        max_concurrent_batches: int = 1,
        default_top_k: int = 3,
        max_top_k: int = 10,
        batching: BatchPolicy = BatchPolicy(),  # noqa: B008 - frozen
    ) -> None:
        self._classifier = classifier
        self._limits = limits
        self._max_batch = max_batch
        self._batch_slots = BatchSlots(max_concurrent_batches)
        self._default_top_k = default_top_k
        self._max_top_k = max_top_k
        self._model_info = model_info(classifier.identity)
        embedder = classifier.embedder
        #: The embedder whose vectors this classifier also computes (one pass), as every answer names it.
        self._embedder_info = (
            common_pb2.ModelInfo(name=embedder.name, version=embedder.version, onnx_sha256=embedder.onnx_sha256)
            if embedder is not None
            else None
        )
        # Concurrent Classify calls share model calls (off when batching.max_delay_ms is 0).
        self.batcher = DynamicBatcher(self._classify_rows, batching, name="classifier")

    def _top_k(self, requested: int) -> int:
        if requested > self._max_top_k:
            raise InvalidArgument(f"top_k must be at most {self._max_top_k}, got {requested}")
        return requested or self._default_top_k

    def _prepare(self, data: bytes, top_k: int) -> tuple[np.ndarray, int]:
        return self._classifier.prepare(decode_pixels(data, self._limits, self._classifier.input_size)), top_k

    def _classify_rows(self, rows: list[tuple[np.ndarray, int]]) -> list[tuple[Classification, np.ndarray | None]]:
        batch, top_k = np.stack([row for row, _ in rows]), [k for _, k in rows]
        if self._embedder_info is None:
            return [(c, None) for c in self._classifier.classify_prepared(batch, top_k)]
        # One pass: the vectors come from the same model call, whether or not this call wants them.
        classifications, vectors = self._classifier.analyse_prepared(batch, top_k)
        return list(zip(classifications, vectors, strict=True))

    def _vectors(self, wanted: bool) -> common_pb2.ModelInfo | None:
        """The embedder's ModelInfo when the answer carries vectors (asked for, and computed here)."""
        return self._embedder_info if wanted else None

    @rpc_errors
    async def Classify(
        self, request: classifier_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        top_k = self._top_k(request.top_k)
        # Decoding and inference block, so they run in worker threads and the event loop keeps serving.
        prepare = functools.partial(self._prepare, request.image, top_k)
        result, vector = await self.batcher.submit(prepare, heavy=is_heavy(request.image))
        embedder = self._vectors(request.with_embedding)
        return classifier_pb2.ClassifyResponse(
            classification=classification_fields(result, vector if embedder else None),
            model=self._model_info,
            embedder_model=embedder,
        )

    def _classify_batch(
        self, images: list[bytes], top_k: int, with_embedding: bool
    ) -> list[tuple[Classification, np.ndarray | None] | InvalidArgument]:
        decoded = decode_batch(images, self._limits, self._classifier.input_size)
        good = [item for item in decoded if isinstance(item, np.ndarray)]
        analysed: Iterator[tuple[Classification, np.ndarray | None]]
        if with_embedding and good:
            batch = np.stack([self._classifier.prepare(item) for item in good])
            classifications, vectors = self._classifier.analyse_prepared(batch, [top_k] * len(good))
            analysed = zip(classifications, vectors, strict=True)
        else:
            analysed = ((c, None) for c in self._classifier.classify(good, top_k))
        return [next(analysed) if isinstance(item, np.ndarray) else item for item in decoded]

    @rpc_errors
    async def ClassifyBatch(
        self, request: classifier_pb2.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyBatchResponse:
        top_k = self._top_k(request.top_k)
        if len(request.images) > self._max_batch:
            raise InvalidArgument(f"a batch holds at most {self._max_batch} images, got {len(request.images)}")
        images = list(request.images)
        embedder = self._vectors(request.with_embedding)
        outcomes = await self._batch_slots.run(
            functools.partial(self._classify_batch, images, top_k, embedder is not None), images
        )
        results = [
            {"error": item_error_fields(outcome)}
            if isinstance(outcome, InvalidArgument)
            else {"classification": classification_fields(*outcome)}
            for outcome in outcomes
        ]
        return classifier_pb2.ClassifyBatchResponse(results=results, model=self._model_info, embedder_model=embedder)
