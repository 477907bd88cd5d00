"""Detector server: load and check the model, bind, warm up, then SERVING until a stop signal."""

from __future__ import annotations

from fashionsearch.model_service import serve_until_stopped, start_model_server
from fashionsearch.serving import RunningServer, service_name
from fashionsearch.v1 import detector_pb2, detector_pb2_grpc
from services.detector.model import Detector, OnnxDetector
from services.detector.servicer import DetectorServicer
from services.detector.settings import Settings


async def start(settings: Settings, detector: Detector | None = None) -> RunningServer:
    """Start the server and return once it is SERVING (model loaded and warmed up)."""
    described: dict[str, object] | None = None
    if detector is None:
        # Refuses to go on, naming every difference, when model.onnx does not match model.json.
        onnx_detector = OnnxDetector.from_dir(
            settings.model_dir,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            precision=settings.precision,
        )
        if settings.flip_test is not None:
            onnx_detector.flip_test = settings.flip_test
        detector = onnx_detector
        described = {
            "groups": list(onnx_detector.groups),
            "flip_test": onnx_detector.flip_test,
            "score_threshold": onnx_detector.score_threshold,
        }
    servicer = DetectorServicer(
        detector,
        settings.image_limits,
        max_batch=settings.max_batch,
        max_concurrent_batches=settings.max_concurrent_batches,
        batching=settings.batch_policy,
    )
    running = await start_model_server(
        "detector",
        settings,
        detector,
        lambda server: detector_pb2_grpc.add_DetectorServicer_to_server(servicer, server),
        [service_name(detector_pb2, "Detector")],
        describe=described,
    )
    running.add_closer(servicer.batcher.close)
    return running


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    await serve_until_stopped(start, settings)
