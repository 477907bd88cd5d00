"""Classifier server: load and check the model, bind, warm up, then SERVING until a stop signal."""

from __future__ import annotations

from fashionsearch.model_service import serve_until_stopped, served_file, start_model_server
from fashionsearch.serving import RunningServer, service_name
from fashionsearch.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.model import Classifier, OnnxClassifier
from services.classifier.servicer import ClassifierServicer
from services.classifier.settings import Settings


async def start(settings: Settings, classifier: Classifier | None = None) -> RunningServer:
    """Start the server and return once it is SERVING (model loaded and warmed up)."""
    describe = {}
    if classifier is None:
        # Refuses to go on, naming every difference, when model.onnx does not match model.json.
        loaded = OnnxClassifier.from_dir(
            settings.model_dir,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            precision=settings.precision,
            embedding=settings.one_pass,
        )
        describe = served_file(loaded)
        classifier = loaded
    if classifier.embedder is not None:
        describe["vectors_of"] = classifier.embedder.identity
    servicer = ClassifierServicer(
        classifier,
        settings.image_limits,
        max_batch=settings.max_batch,
        max_concurrent_batches=settings.max_concurrent_batches,
        default_top_k=settings.default_top_k,
        max_top_k=settings.max_top_k,
        batching=settings.batch_policy,
    )
    running = await start_model_server(
        "classifier",
        settings,
        classifier,
        lambda server: classifier_pb2_grpc.add_ClassifierServicer_to_server(servicer, server),
        [service_name(classifier_pb2, "Classifier")],
        describe=describe,
    )
    running.add_closer(servicer.batcher.close)
    return running


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    await serve_until_stopped(start, settings)
