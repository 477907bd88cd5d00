"""The detector as a real grpc.aio server on a free port, with the tiny ONNX detector (it finds coloured squares)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from prometheus_client import REGISTRY

from fashionsearch.config import ConfigError
from fashionsearch.detection import BoxVerification, box_iou
from fashionsearch.model_contract import ModelContractError, ModelSpec, file_sha256
from fashionsearch.model_variants import VNNI_FLAGS, cpu_flags
from fashionsearch.v1 import detector_pb2, detector_pb2_grpc
from services.detector.server import start
from services.detector.settings import Settings
from services.gateway.clients import GrpcDetector
from testkit.service_helpers import BAD_IMAGES, SERVING, health_status
from testkit.tiny_detector import (
    GROUPS,
    SHOES_COLOUR,
    TOP_COLOUR,
    add_int8_variant,
    photo_of_squares,
    write_tiny_detector,
)
from testkit.tiny_models import write_tiny_classifier

pytestmark = pytest.mark.integration

Body = Callable[[detector_pb2_grpc.DetectorStub, grpc.aio.Channel], Awaitable[None]]

#: A 384x512 photo, 4x the tiny detector's input: a blue "top" and a yellow "shoes" of 3x3 cells each.
SQUARES = [(64, 128, 96, TOP_COLOUR), (224, 320, 96, SHOES_COLOUR)]
EXPECTED = [("top", (64, 128, 160, 224)), ("shoes", (224, 320, 320, 416))]
SCENE = photo_of_squares((384, 512), SQUARES)
WHITE = photo_of_squares((300, 200), [])
#: Boxes are float32 on the wire: left + width may pass the edge by a rounding error.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    model_dir = write_tiny_detector(tmp_path_factory.mktemp("detector"))
    return Settings(port=0, host="127.0.0.1", model_dir=model_dir, grace_s=0.5)


def run(settings: Settings, body: Body) -> None:
    async def scenario() -> None:
        running = await start(settings)
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                await body(detector_pb2_grpc.DetectorStub(channel), channel)
        finally:
            await running.stop(settings.grace_s)

    asyncio.run(scenario())


def found(detections: detector_pb2.Detections) -> list[tuple[str, tuple[float, ...]]]:
    return [
        (d.group, (d.box.left, d.box.top, d.box.left + d.box.width, d.box.top + d.box.height))
        for d in detections.detections
    ]


def assert_found(detections: detector_pb2.Detections, expected, min_iou: float = 0.99) -> None:  # type: ignore[no-untyped-def]
    got = found(detections)
    assert sorted(g for g, _ in got) == sorted(g for g, _ in expected), got
    for group, box in expected:
        [match] = [b for g, b in got if g == group]
        assert box_iou(np.array(match), np.array(box))[0, 0] >= min_iou, (group, match, box)


def test_settings_from_the_detector_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"DETECTOR_MODEL_DIR": str(tmp_path), "DETECTOR_BATCH_MAX_DELAY_MS": "2"})
    assert settings.port == 50053 and settings.metrics_port == 9104 and settings.model_dir == tmp_path
    assert settings.batch_policy.enabled and settings.flip_test is None  # model.json's choice
    for raw, flip_test in (("auto", None), ("true", True), ("off", False), ("AUTO", None)):
        env = {"DETECTOR_MODEL_DIR": str(tmp_path), "DETECTOR_FLIP_TEST": raw}
        assert Settings.from_env(env).flip_test is flip_test, raw
    with pytest.raises(ConfigError, match="DETECTOR_FLIP_TEST"):
        Settings.from_env({"DETECTOR_MODEL_DIR": str(tmp_path), "DETECTOR_FLIP_TEST": "sometimes"})


def test_health_is_serving_and_reflection_lists_the_services(settings: Settings) -> None:
    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        assert await health_status(channel) == SERVING
        assert await health_status(channel, "fashionsearch.v1.Detector") == SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in reflection.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
        assert {"fashionsearch.v1.Detector", "grpc.health.v1.Health"} <= names

    run(settings, body)


def test_detect_finds_each_product_in_pixels_of_the_photo(settings: Settings) -> None:
    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.Detect(detector_pb2.DetectRequest(image=SCENE), timeout=5)
        assert reply.model.name == "tiny-detector" and len(reply.model.onnx_sha256) == 64
        assert (reply.detections.image_width, reply.detections.image_height) == (384, 512)
        assert_found(reply.detections, EXPECTED)
        scores = [d.score for d in reply.detections.detections]
        assert scores == sorted(scores, reverse=True) and all(0.3 <= s <= 1 for s in scores)
        # each with the catalogue subCategories of its group, as the model's model.json lists them
        covered = {g.name: list(g.sub_categories) for g in GROUPS}
        assert all(list(d.sub_categories) == covered[d.group] for d in reply.detections.detections)

    run(settings, body)


def test_a_photo_without_a_product_has_no_detections(settings: Settings) -> None:
    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.Detect(detector_pb2.DetectRequest(image=WHITE), timeout=5)
        assert list(reply.detections.detections) == []
        assert (reply.detections.image_width, reply.detections.image_height) == (300, 200)

    run(settings, body)


def test_a_12_megapixel_jpeg_decoded_at_a_reduced_scale_gives_boxes_at_full_size(settings: Settings) -> None:
    # 3072x4096 is the scene at 8x: decoded in draft mode at 1/8 or 1/4, the boxes are scaled back.
    big = photo_of_squares((3072, 4096), [(x * 8, y * 8, s * 8, c) for x, y, s, c in SQUARES], image_format="JPEG")
    expected = [(g, tuple(v * 8 for v in box)) for g, box in EXPECTED]

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.Detect(detector_pb2.DetectRequest(image=big), timeout=10)
        assert (reply.detections.image_width, reply.detections.image_height) == (3072, 4096)
        assert_found(reply.detections, expected, min_iou=0.95)

    run(settings, body)


def test_boxes_are_in_the_frame_of_the_photo_as_shown_after_its_exif_orientation(settings: Settings) -> None:
    # Stored on its side with orientation 6 ("turn 90 degrees clockwise to show"): shown as the 384x512 scene.
    stored = Image.open(io.BytesIO(SCENE)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.Detect(detector_pb2.DetectRequest(image=buffer.getvalue()), timeout=5)
        assert (reply.detections.image_width, reply.detections.image_height) == (384, 512)
        assert_found(reply.detections, EXPECTED, min_iou=0.95)

    run(settings, body)


def test_a_panorama_and_a_narrow_strip(settings: Settings) -> None:
    panorama = photo_of_squares((4000, 500), [(1800, 50, 400, TOP_COLOUR)], image_format="JPEG")
    strip = photo_of_squares((60, 3000), [(0, 2900, 60, SHOES_COLOUR)])

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.Detect(detector_pb2.DetectRequest(image=panorama), timeout=5)
        assert (reply.detections.image_width, reply.detections.image_height) == (4000, 500)
        # The photo is 12 input pixels high: the tiny model places the square only to within a cell (333 pixels).
        [(group, (left, top, right, bottom))] = found(reply.detections)
        assert group == "top" and 1800 <= (left + right) / 2 <= 2200
        assert 0 <= left < right <= 4000 + TOLERANCE and 0 <= top < bottom <= 500 + TOLERANCE
        reply = await stub.Detect(detector_pb2.DetectRequest(image=strip), timeout=5)
        assert (reply.detections.image_width, reply.detections.image_height) == (60, 3000)
        for _, (left, top, right, bottom) in found(reply.detections):  # whatever it finds lies inside the photo
            assert 0 <= left < right <= 60 + TOLERANCE and 0 <= top < bottom <= 3000 + TOLERANCE

    run(settings, body)


def test_batch_matches_single_calls_and_reports_bad_items(settings: Settings) -> None:
    bad = [data for data, _ in BAD_IMAGES.values()]
    images = [SCENE, *bad, WHITE]

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.DetectBatch(detector_pb2.DetectBatchRequest(images=images), timeout=5)
        assert len(reply.results) == len(images) and reply.model.name == "tiny-detector"
        for result, (_, fragment) in zip(reply.results[1:-1], BAD_IMAGES.values(), strict=True):
            assert result.WhichOneof("outcome") == "error"
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert fragment in result.error.message
        for index in (0, -1):
            single = await stub.Detect(detector_pb2.DetectRequest(image=images[index]), timeout=5)
            assert reply.results[index].detections == single.detections
        assert list((await stub.DetectBatch(detector_pb2.DetectBatchRequest(), timeout=5)).results) == []

    run(settings, body)


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_is_invalid_argument_and_the_service_keeps_serving(settings: Settings, case: str) -> None:
    data, fragment = BAD_IMAGES[case]

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Detect(detector_pb2.DetectRequest(image=data), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in caught.value.details()
        assert (await stub.Detect(detector_pb2.DetectRequest(image=SCENE), timeout=5)).detections.detections
        assert await health_status(channel) == SERVING

    run(settings, body)


def test_batch_limit(settings: Settings) -> None:
    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DetectBatch(detector_pb2.DetectBatchRequest(images=[SCENE] * 3), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 2 images, got 3" in caught.value.details()

    run(replace(settings, max_batch=2), body)


def test_concurrent_calls_batched_answer_like_single_ones(settings: Settings) -> None:
    batched = replace(settings, batch_max_delay_ms=50.0, batch_max_size=8)
    images = [SCENE, WHITE] * 6

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        replies = await asyncio.gather(*(stub.Detect(detector_pb2.DetectRequest(image=i), timeout=10) for i in images))
        for reply, image in zip(replies, images, strict=True):
            assert found(reply.detections) == (found(replies[0].detections) if image == SCENE else [])
        assert_found(replies[0].detections, EXPECTED)

    run(batched, body)


def test_a_classifier_folder_is_refused(tmp_path: Path, settings: Settings) -> None:
    wrong = replace(settings, model_dir=write_tiny_classifier(tmp_path))

    async def scenario() -> None:
        with pytest.raises(ModelContractError, match="but a detector is needed"):
            await start(wrong)

    asyncio.run(scenario())


def answered_by(sha: str, precision: str) -> Body:
    """A scenario: the reply names the file `sha`, finds the squares, and model_info says `precision`."""

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        reply = await stub.Detect(detector_pb2.DetectRequest(image=SCENE), timeout=5)
        assert reply.model.onnx_sha256 == sha
        assert_found(reply.detections, EXPECTED, min_iou=0.9)
        labels = {"service": "detector", "name": "tiny-detector", "version": "tiny-1", "onnx_sha256": sha}
        assert (
            REGISTRY.get_sample_value("fashionsearch_model_info", labels | {"precision": precision, "vectors_of": ""})
            == 1.0
        )

    return body


def test_the_int8_variant_is_served_as_detector_precision_says(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = write_tiny_detector(tmp_path / "detector")
    files = {"int8": file_sha256(add_int8_variant(model_dir)), "float": file_sha256(model_dir / "model.onnx")}
    auto = "int8" if cpu_flags() & set(VNNI_FLAGS) else "float"  # auto takes int8 only on a CPU with VNNI
    for precision, served in (("int8", "int8"), ("float", "float"), ("auto", auto)):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            run(replace(settings, model_dir=model_dir, precision=precision), answered_by(files[served], served))
        assert f"({served}) is SERVING" in caplog.text, precision


def images_through_the_model() -> float:
    return REGISTRY.get_sample_value("fashionsearch_inference_batch_size_sum", {"service": "detector"}) or 0.0


def test_the_flip_test_is_served_as_model_json_and_detector_flip_test_say(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = write_tiny_detector(tmp_path / "detector")
    spec = ModelSpec.load(model_dir)
    assert spec.detection is not None

    def serve_flip_test(threshold: float) -> None:
        """model.json serves the flip test, at a score threshold of its own."""
        flip = replace(spec.detection, flip_test=True, flip_test_score_threshold=threshold)  # type: ignore[arg-type]
        replace(spec, detection=flip).write(model_dir)

    def answers(expected: list[tuple[str, tuple[int, ...]]], images_per_photo: int) -> Body:
        async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
            before = images_through_the_model()
            reply = await stub.Detect(detector_pb2.DetectRequest(image=SCENE), timeout=5)
            assert_found(reply.detections, expected)
            batch = await stub.DetectBatch(detector_pb2.DetectBatchRequest(images=[SCENE, WHITE]), timeout=5)
            assert batch.results[0].detections == reply.detections
            # With the flip test the photos' mirror images go through the model too, in the same runs.
            assert images_through_the_model() - before == 3 * images_per_photo

        return body

    def started_with(environ: dict[str, str], body: Body) -> tuple[bool, float]:
        chosen = Settings.from_env({"DETECTOR_MODEL_DIR": str(model_dir), "DETECTOR_PORT": "0"} | environ)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            run(replace(settings, model_dir=model_dir, flip_test=chosen.flip_test), body)
        [started] = [r for r in caplog.records if hasattr(r, "flip_test")]
        return started.flip_test, started.score_threshold

    serve_flip_test(0.5)  # the squares score about 0.85
    assert started_with({}, answers(EXPECTED, 2)) == (True, 0.5)
    serve_flip_test(0.9)
    assert started_with({}, answers([], 2)) == (True, 0.9)
    assert started_with({"DETECTOR_FLIP_TEST": "auto"}, answers([], 2)) == (True, 0.9)
    assert started_with({"DETECTOR_FLIP_TEST": "false"}, answers(EXPECTED, 1)) == (False, 0.3)
    replace(spec, detection=replace(spec.detection, flip_test_score_threshold=0.9)).write(model_dir)  # type: ignore[arg-type]
    assert started_with({}, answers(EXPECTED, 1)) == (False, 0.3)
    assert started_with({"DETECTOR_FLIP_TEST": "true"}, answers([], 2)) == (True, 0.9)


def test_a_call_chooses_the_flip_test_and_batched_calls_of_both_modes_answer_as_alone(settings: Settings) -> None:
    batched = replace(settings, batch_max_delay_ms=50.0, batch_max_size=8, flip_test=False)
    modes = [True, False, None] * 3

    async def detect(stub: detector_pb2_grpc.DetectorStub, flip_test: bool | None) -> detector_pb2.Detections:
        reply = await stub.Detect(detector_pb2.DetectRequest(image=SCENE, flip_test=flip_test), timeout=10)
        return reply.detections

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        alone = {}
        for mode in (True, False, None):
            before = images_through_the_model()
            alone[mode] = await detect(stub, mode)
            # The flip test sends the photo's mirror image through the model too; unset is the service's setting.
            assert images_through_the_model() - before == (2 if mode else 1)
            assert_found(alone[mode], EXPECTED, min_iou=0.9)
        assert alone[None] == alone[False]
        together = await asyncio.gather(*(detect(stub, mode) for mode in modes))
        assert [found(d) for d in together] == [found(alone[mode]) for mode in modes]
        batch = await stub.DetectBatch(detector_pb2.DetectBatchRequest(images=[SCENE], flip_test=True), timeout=5)
        assert batch.results[0].detections == alone[True]

    run(batched, body)


def test_candidates_come_with_the_models_box_verification(tmp_path: Path, settings: Settings) -> None:
    model_dir = write_tiny_detector(tmp_path / "detector")
    spec = ModelSpec.load(model_dir)
    rule = {
        "candidate_threshold": 0.001,
        "intercept": -5.0,
        "score_weight": 8.0,
        "confidence_weight": 3.0,
        "keep_probability": 0.45,
        "classifier": "classifier:9",
    }
    # The served threshold above the squares' scores: only candidates find them.
    spec = replace(spec, detection=replace(spec.detection, score_threshold=0.9))  # type: ignore[arg-type]
    replace(spec, extra=dict(spec.extra) | {"box_verification": rule}).write(model_dir)

    async def body(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        served = await stub.Detect(detector_pb2.DetectRequest(image=SCENE), timeout=5)
        assert not served.HasField("verification")
        asked = await stub.Detect(detector_pb2.DetectRequest(image=SCENE, with_candidates=True), timeout=5)
        got = asked.verification
        assert got.classifier == "classifier:9" and got.keep_probability == pytest.approx(0.45)
        assert asked.score_threshold == pytest.approx(0.9) == served.score_threshold
        assert (got.intercept, got.score_weight, got.confidence_weight) == (-5.0, 8.0, 3.0)
        # Down to the candidate threshold: boxes under the served threshold come too, best first.
        assert found(served.detections) == []
        assert_found(asked.detections, EXPECTED)
        scores = [d.score for d in asked.detections.detections]
        assert min(scores) >= 0.001 and scores == sorted(scores, reverse=True)

    run(replace(settings, model_dir=model_dir), body)

    async def through_the_gateways_client(stub: detector_pb2_grpc.DetectorStub, channel: grpc.aio.Channel) -> None:
        found = await GrpcDetector(channel, timeout_s=5).detect(SCENE, flip_test=False, with_candidates=True)
        assert found.verification == BoxVerification(**rule) and found.score_threshold == pytest.approx(0.9)
        assert sorted(d.group for d in found.detections) == ["shoes", "top"]
        plain = await GrpcDetector(channel, timeout_s=5).detect(SCENE)
        assert plain.verification is None and plain.detections == ()

    run(replace(settings, model_dir=model_dir), through_the_gateways_client)

    broken = replace(spec, extra=dict(spec.extra) | {"box_verification": rule | {"keep_probability": 2}})
    broken.write(model_dir)

    async def refused() -> None:
        with pytest.raises(ModelContractError, match="keep_probability"):
            await start(replace(settings, model_dir=model_dir))

    asyncio.run(refused())
