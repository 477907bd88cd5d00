"""gRPC Detector servicer: maps protos to the domain and back, nothing else."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import grpc.aio
import numpy as np

from fashionsearch.batching import BatchPolicy, DynamicBatcher
from fashionsearch.decode_threads import BatchSlots
from fashionsearch.detection import BoxVerification, Detection
from fashionsearch.errors import InvalidArgument, item_error_fields, rpc_errors
from fashionsearch.images import ImageLimits, decode_pixels, displayed_size, is_heavy
from fashionsearch.model_service import model_info
from fashionsearch.v1 import common_pb2, detector_pb2, detector_pb2_grpc
from services.detector.model import Detector


@dataclass(frozen=True)
class Prepared:
    """One decoded image ready for the model: its input row, the size it was decoded at, its full size, the flip
    test its call asked for (None: the detector's setting) and the score to detect down to (None: the served one)."""

    row: np.ndarray
    decoded_size: tuple[int, int]
    full_size: tuple[int, int]
    flip_test: bool | None = None
    score_threshold: float | None = None


@dataclass(frozen=True)
class Found:
    """The detections of one image in pixels of its full size."""

    detections: list[Detection]
    size: tuple[int, int]


def to_proto(found: Found) -> detector_pb2.Detections:
    return detector_pb2.Detections(
        detections=[
            detector_pb2.Detection(
                box=common_pb2.Box(left=d.left, top=d.top, width=d.width, height=d.height),
                group=d.group,
                score=d.score,
                sub_categories=d.sub_categories,
            )
            for d in found.detections
        ],
        image_width=found.size[0],
        image_height=found.size[1],
    )


def rule_to_proto(rule: BoxVerification) -> detector_pb2.BoxVerification:
    return detector_pb2.BoxVerification(**dataclasses.asdict(rule))  # the message has the rule's fields, by name


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    def __init__(
        self,
        detector: Detector,
        limits: ImageLimits,
        *,
        max_batch: int = 64,
        max_concurrent_batches: int = 1,
        batching: BatchPolicy = BatchPolicy(),  # noqa: B008 - frozen
    ) -> None:
        self._detector = detector
        self._limits = limits
        self._max_batch = max_batch
        self._batch_slots = BatchSlots(max_concurrent_batches)
        self._model_info = model_info(detector.identity)
        # Concurrent Detect calls share model calls (off when batching.max_delay_ms is 0).
        self.batcher = DynamicBatcher(self._detect_rows, batching, name="detector")

    def _prepare(self, data: bytes, flip_test: bool | None = None, score_threshold: float | None = None) -> Prepared:
        # A large JPEG is decoded at a reduced scale (still twice the model's input); boxes are scaled back to the
        # photo's full size, the frame the caller knows.
        pixels = decode_pixels(data, self._limits, self._detector.input_size)
        decoded = (pixels.shape[1], pixels.shape[0])
        return Prepared(self._detector.prepare(pixels), decoded, displayed_size(data), flip_test, score_threshold)

    def _detect_rows(self, rows: Sequence[Prepared]) -> list[Found]:
        """One model call per mode among the rows (calls batched together may have asked for the flip test or not,
        for candidates or not)."""
        found: dict[int, list[Detection]] = {}
        for flip_test, threshold in dict.fromkeys((p.flip_test, p.score_threshold) for p in rows):
            mine = [k for k, p in enumerate(rows) if (p.flip_test, p.score_threshold) == (flip_test, threshold)]
            batch = np.stack([rows[k].row for k in mine])
            sizes = [rows[k].decoded_size for k in mine]
            found.update(zip(mine, self._detector.detect_prepared(batch, sizes, flip_test, threshold), strict=True))
        return [_full_size(found[k], p) for k, p in enumerate(rows)]

    @rpc_errors
    async def Detect(
        self, request: detector_pb2.DetectRequest, context: grpc.aio.ServicerContext
    ) -> detector_pb2.DetectResponse:
        # Decoding and inference block, so they run in worker threads and the event loop keeps serving.
        flip_test = request.flip_test if request.HasField("flip_test") else None
        # Candidates, when asked for and the model has a rule to verify them by: down to its candidate threshold.
        rule = self._detector.verification if request.with_candidates else None
        threshold = rule.candidate_threshold if rule is not None else None
        prepare = functools.partial(self._prepare, request.image, flip_test, threshold)
        found = await self.batcher.submit(prepare, heavy=is_heavy(request.image))
        served = self._detector.served_threshold(self._detector.flip_test if flip_test is None else flip_test)
        return detector_pb2.DetectResponse(
            detections=to_proto(found),
            model=self._model_info,
            verification=rule_to_proto(rule) if rule is not None else None,
            score_threshold=served,
        )

    def _detect_batch(self, images: list[bytes], flip_test: bool | None) -> list[Found | InvalidArgument]:
        prepared: list[Prepared | InvalidArgument] = []
        for data in images:
            try:
                prepared.append(self._prepare(data, flip_test))
            except InvalidArgument as bad:
                prepared.append(bad)
        good = [p for p in prepared if isinstance(p, Prepared)]
        found = iter(self._detect_rows(good) if good else [])
        return [next(found) if isinstance(p, Prepared) else p for p in prepared]

    @rpc_errors
    async def DetectBatch(
        self, request: detector_pb2.DetectBatchRequest, context: grpc.aio.ServicerContext
    ) -> detector_pb2.DetectBatchResponse:
        if len(request.images) > self._max_batch:
            raise InvalidArgument(f"a batch holds at most {self._max_batch} images, got {len(request.images)}")
        images = list(request.images)
        flip_test = request.flip_test if request.HasField("flip_test") else None
        outcomes = await self._batch_slots.run(functools.partial(self._detect_batch, images, flip_test), images)
        results = [
            detector_pb2.DetectResult(error=common_pb2.ItemError(**item_error_fields(outcome)))
            if isinstance(outcome, InvalidArgument)
            else detector_pb2.DetectResult(detections=to_proto(outcome))
            for outcome in outcomes
        ]
        return detector_pb2.DetectBatchResponse(results=results, model=self._model_info)


def _full_size(detections: list[Detection], prepared: Prepared) -> Found:
    (width, height), (full_w, full_h) = prepared.decoded_size, prepared.full_size
    if (width, height) == (full_w, full_h):
        return Found(detections, prepared.full_size)
    return Found([d.scaled(full_w / width, full_h / height) for d in detections], prepared.full_size)
