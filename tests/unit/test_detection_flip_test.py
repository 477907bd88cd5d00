"""The flip test (fashionsearch.detection.run_detector): the photo and its mirror image in one model run, the
mirror's maps mirrored back and averaged with the photo's, then decoded as without it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from fashionsearch.detection import Detection, RunModel, merge_mirrored, run_detector, with_mirrors
from fashionsearch.model_contract import (
    DetectionGroup,
    DetectionSpec,
    InputSpec,
    ModelContractError,
    ModelSpec,
    preprocess,
)
from fashionsearch.onnx_model import OnnxModel
from testkit.tiny_detector import SHOES_COLOUR, TOP_COLOUR, write_tiny_detector

#: The tiny detector's 96x128 input at twice the size: no letterbox padding, cells of 16 photo pixels.
PHOTO_W, PHOTO_H = 192, 256


def photo(squares: list[tuple[int, int, int, tuple[int, int, int]]]) -> np.ndarray:
    image = np.full((PHOTO_H, PHOTO_W, 3), 255, np.uint8)
    for left, top, side, colour in squares:
        image[top : top + side, left : left + side] = colour
    return image


@pytest.fixture
def tiny(tmp_path: Path) -> OnnxModel:
    return OnnxModel(write_tiny_detector(tmp_path), expected_kind="detector")


def detections(model: OnnxModel, images: list[np.ndarray], flip_test: bool, run: RunModel | None = None):  # type: ignore[no-untyped-def]
    sizes = [(image.shape[1], image.shape[0]) for image in images]
    batch = preprocess(images, model.spec.input)
    return run_detector(run or model.run, batch, model.spec, sizes, flip_test=flip_test)


def lopsided(model: OnnxModel) -> RunModel:
    """The tiny detector made left/right-asymmetric, as a trained network's padding and strides make it: its scores
    grow from left to right, its boxes widen, and its centres sit left of their cell's middle."""
    cols = model.spec.input.width // 8
    ramp = np.linspace(0.7, 1.0, cols, dtype=np.float32)[None, None, :, None]

    def run(batch: np.ndarray) -> Mapping[str, np.ndarray]:
        out = dict(model.run(batch))
        out["heatmap"] = out["heatmap"] * ramp
        out["box_size"] = out["box_size"] * np.concatenate([1 + ramp / 4, np.ones_like(ramp)], axis=-1)
        out["offset"] = out["offset"] - np.array([0.2, 0.0], np.float32)
        return out

    return run


def mirrored(d: Detection) -> Detection:
    return dataclasses.replace(d, left=PHOTO_W - d.left - d.width)


def test_one_model_run_sees_the_photos_then_their_mirror_images(tiny: OnnxModel) -> None:
    seen: list[np.ndarray] = []

    def spy(batch: np.ndarray) -> Mapping[str, np.ndarray]:
        seen.append(batch)
        return tiny.run(batch)

    images = [photo([(16, 32, 48, TOP_COLOUR)]), photo([(128, 160, 48, SHOES_COLOUR)])]
    detections(tiny, images, flip_test=True, run=spy)
    [batch] = seen
    rows = preprocess(images, tiny.spec.input)
    assert len(batch) == 4 and np.array_equal(batch[:2], rows) and np.array_equal(batch[2:], rows[:, :, ::-1])
    seen.clear()
    detections(tiny, images, flip_test=False, run=spy)
    assert len(seen) == 1 and np.array_equal(seen[0], rows)


def test_a_symmetric_photo_s_flip_averaged_maps_equal_its_plain_maps(tiny: OnnxModel) -> None:
    # Two squares placed as each other's mirror image, and one centred on the photo's middle.
    image = photo([(16, 32, 48, TOP_COLOUR), (128, 32, 48, TOP_COLOUR), (72, 160, 48, SHOES_COLOUR)])
    assert np.array_equal(image, image[:, ::-1])
    rows = preprocess([image], tiny.spec.input)
    plain = tiny.run(rows)
    merged = merge_mirrored(tiny.run(with_mirrors(rows)), tiny.spec.detection, 1)  # type: ignore[arg-type]
    for name, array in plain.items():
        np.testing.assert_allclose(merged[name], array, atol=1e-6, err_msg=name)
    flipped, alone = detections(tiny, [image], True), detections(tiny, [image], False)
    # The centred square spans an even number of cells: two tied peaks, in both modes alike.
    assert [d.group for d in flipped[0]] == [d.group for d in alone[0]] == ["top", "top", "shoes", "shoes"]
    for a, b in zip(flipped[0], alone[0], strict=True):
        assert a.xyxy == pytest.approx(b.xyxy, abs=1e-4) and a.score == pytest.approx(b.score, abs=1e-6)


def test_a_mirrored_photo_gives_mirrored_boxes_even_from_a_lopsided_model(tiny: OnnxModel) -> None:
    image = photo([(16, 32, 48, TOP_COLOUR), (112, 160, 48, SHOES_COLOUR)])
    mirror = np.ascontiguousarray(image[:, ::-1])
    run = lopsided(tiny)
    # Without the flip test the lopsided model scores and places the mirror image's products differently ...
    [plain], [plain_mirror] = detections(tiny, [image], False, run), detections(tiny, [mirror], False, run)
    by_group = {d.group: d for d in plain_mirror}
    assert sorted(by_group) == sorted(d.group for d in plain) == ["shoes", "top"]
    for d in plain:
        assert abs(d.score - by_group[d.group].score) > 0.05
        assert abs(d.left - mirrored(by_group[d.group]).left) > 1
    # ... with it, the two photos' boxes are each other's mirror image, at the same scores.
    [found], [found_mirror] = detections(tiny, [image], True, run), detections(tiny, [mirror], True, run)
    assert [d.group for d in found] == [d.group for d in found_mirror] and sorted(by_group) == ["shoes", "top"]
    for a, b in zip(found, found_mirror, strict=True):
        assert mirrored(b).xyxy == pytest.approx(a.xyxy, abs=1e-3) and b.score == pytest.approx(a.score, abs=1e-6)


# Hand-made outputs on a 64x48 input (8 rows x 6 columns of 8 pixels): the mirror's cell column c is the photo's
# column 5 - c.
SPEC = ModelSpec(
    name="hand-made",
    kind="detector",
    version="1",
    onnx_sha256="0" * 64,
    input=InputSpec(name="image", height=64, width=48, resize="pad", pad_value=255),
    detection=DetectionSpec(
        heatmap="hm", box_size="wh", offset="off", groups=(DetectionGroup("top", ("Topwear",)),), stride=8
    ),
)


def hand_made(photo_peak: tuple[int, float, float, float], mirror_peak: tuple[int, float, float, float]) -> RunModel:
    """Outputs for one photo and its mirror: each row's one peak as (column, score, box width, x offset) at row 3,
    box height 24, y offset 0.5."""

    def run(batch: np.ndarray) -> Mapping[str, np.ndarray]:
        assert len(batch) == 2
        out = {"hm": np.zeros((2, 8, 6, 1), np.float32), "wh": np.zeros((2, 8, 6, 2), np.float32)}
        out["off"] = np.zeros((2, 8, 6, 2), np.float32)
        for k, (col, score, width, dx) in enumerate((photo_peak, mirror_peak)):
            out["hm"][k, 3, col, 0] = score
            out["wh"][k, 3, col] = (width, 24)
            out["off"][k, 3, col] = (dx, 0.5)
        return out

    return run


def test_the_mirror_s_centre_comes_back_to_the_photo_s_cell_and_its_x_offset_turns_into_1_minus_dx() -> None:
    # The photo sees a centre at (1 + 0.25) * 8 = 10; the mirror the same product at 48 - 10 = 38 = (4 + 0.75) * 8.
    run = hand_made(photo_peak=(1, 0.8, 16, 0.25), mirror_peak=(4, 0.6, 20, 0.75))
    [[found]] = run_detector(run, np.zeros((1, 64, 48, 3), np.float32), SPEC, [(48, 64)], flip_test=True)
    # Score and width averaged; the centre stays at x 10 (an x offset taken as it is would move it to 12).
    assert found.score == pytest.approx(0.7) and found.width == pytest.approx(18)
    assert (found.left + found.width / 2, found.top + found.height / 2) == pytest.approx((10, 28))


def test_the_flip_test_is_served_at_its_own_threshold_and_model_json_says_whether_it_is_on() -> None:
    run = hand_made(photo_peak=(1, 0.8, 16, 0.25), mirror_peak=(4, 0.6, 20, 0.75))
    batch = np.zeros((1, 64, 48, 3), np.float32)
    assert SPEC.detection is not None
    own = dataclasses.replace(SPEC.detection, score_threshold=0.3, flip_test_score_threshold=0.75)
    spec = dataclasses.replace(SPEC, detection=own)
    assert run_detector(run, batch, spec, [(48, 64)], flip_test=True) == [[]]  # 0.7 < 0.75
    [[found]] = run_detector(run, batch, spec, [(48, 64)], flip_test=True, score_threshold=0.5)
    assert found.score == pytest.approx(0.7)
    served = dataclasses.replace(spec, detection=dataclasses.replace(own, flip_test=True))
    assert run_detector(run, batch, served, [(48, 64)]) == [[]]  # None: model.json's mode, and its threshold


def test_outputs_without_the_mirror_rows_are_refused() -> None:
    assert SPEC.detection is not None
    outputs = {name: np.zeros((1, 8, 6, 1 if name == "hm" else 2), np.float32) for name in ("hm", "wh", "off")}
    with pytest.raises(ModelContractError, match="'hm' needs 2 rows, got 1 rows"):
        merge_mirrored(outputs, SPEC.detection, 1)
