"""The detector's scenes (boxes where the products are), targets, and a tiny end-to-end run through the export's
parity gate and the shared decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionsearch.model_contract import InputSpec, ModelSpec
from testkit.training_data import make_lite_dataset
from training import data, scenes
from training.recipes import detector

COLOURS = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 230], [240, 220, 20]], dtype=np.uint8)


def rectangles(count: int) -> scenes.Products:
    """Packshots of one pure-colour rectangle each on white, 80x60 like the dataset's."""
    images = np.full((count, 80, 60, 3), 255, dtype=np.uint8)
    for k in range(count):
        images[k, 10 + k : 70 - k, 8 + 2 * k : 52 - k] = COLOURS[k]
    masks = scenes.product_masks(images)
    return scenes.Products(images, masks, np.arange(count) % len(scenes.GROUPS), np.arange(count) + 100)


def test_product_masks_cut_out_the_product_by_the_white_background() -> None:
    pool = rectangles(2)
    expected = np.zeros((80, 60), dtype=bool)
    expected[10:70, 8:52] = True
    ys, xs = np.nonzero(pool.masks[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 69, 8, 51)
    # The background's soft edge may take the corner pixels, nothing more.
    assert (pool.masks[0] != expected).sum() <= 4


@pytest.mark.parametrize("seed", range(6))
def test_scene_boxes_are_the_visible_products(seed: int) -> None:
    """On a black canvas, each ground-truth box is the bounding box of the pixels of its product's colour."""
    pool = rectangles(4)
    rng = np.random.default_rng(seed)
    canvas = np.zeros((240, 200, 3), dtype=np.float32)
    scene = scenes.compose(rng, 240, 200, pool, [0, 1, 2, 3], canvas, "scatter", max_angle=0.0)
    assert len(scene.boxes) >= 1
    for box, product in zip(scene.boxes, scene.ids, strict=True):
        colour = COLOURS[int(product) - 100].astype(np.int16)
        close = np.abs(scene.image.astype(np.int16) - colour).max(axis=-1) < 40
        ys, xs = np.nonzero(close)
        seen = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(seen - box).max() <= 2, (box, seen)


def test_letterbox_moves_the_boxes_with_the_pixels() -> None:
    spec = InputSpec(name="image", height=64, width=64, resize="pad", pad_value=0.0)
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[10:30, 20:60] = 255
    scene = scenes.Scene(image, np.array([[20, 10, 60, 30]], np.float32), np.array([0]), np.array([1]))
    moved = scenes.letterbox(scene, spec)
    ys, xs = np.nonzero(moved.image[..., 0] > 127)
    assert np.allclose(moved.boxes[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1)


def test_targets_put_each_centre_in_its_cell() -> None:
    boxes = np.array([[20, 36, 60, 100]], np.float32)  # centre (40, 68): cell (5, 8), offset (0, 0.5)
    heat, size, offset = detector.targets(boxes, np.array([2]), 128, 96, classes=4)
    assert heat.shape == (16, 12, 4)
    assert heat[8, 5, 2] == 1.0 and (heat[..., [0, 1, 3]] == 0).all()
    assert np.argwhere(heat == 1.0).tolist() == [[8, 5, 2]]
    assert np.allclose(size[8, 5], [np.log(40), np.log(64), 1])
    assert np.allclose(offset[8, 5], [0.0, 0.5, 1])
    assert size[..., 2].sum() == 1


def test_average_precision_of_a_perfect_and_a_mixed_ranking() -> None:
    from training.detector_eval import average_precision

    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    # right, wrong, right of 2 boxes: precision 1 up to recall 0.5, then 2/3 up to 1.
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2) == pytest.approx(
        0.5 + 0.5 * 2 / 3
    )


def test_tiny_detector_trains_exports_through_the_parity_gate_and_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fashionsearch.detection import decode_detections
    from training.detector_eval import NMS_CANDIDATES, THRESHOLD_CANDIDATES, choose_threshold, detect, score
    from training.export import export_model
    from training.recipe import TrainOptions

    root = tmp_path / "data"
    make_lite_dataset(root)
    dataset = data.load_dataset(root, tmp_path / "cache")
    split = data.get_split(dataset, tmp_path / "split.csv", create=True)
    monkeypatch.setattr(
        detector, "DETECTOR_INPUT", InputSpec(name="image", height=64, width=64, resize="pad", pad_value=128.0)
    )
    options = TrainOptions(epochs=1, batch_size=4, limit=8, threads=1, verbose=0, jit_compile=False)
    trained = detector.train_detector(dataset, split, tmp_path / "run", options)
    spec = export_model(trained, tmp_path / "detector", min_parity_images=8)

    loaded = ModelSpec.load(tmp_path / "detector")
    assert loaded.kind == "detector" and loaded.detection is not None
    assert [g.name for g in loaded.detection.groups] == list(scenes.GROUP_NAMES)
    assert spec.extra["parity"]["max_abs_diff"] <= 1e-4

    from training.inference import onnx_session

    session = onnx_session(tmp_path / "detector" / "model.onnx", threads=1)
    photos = scenes.test_scenes(scenes.split_products(dataset, split, "test"), 2, seed=1)
    assert all(p.image.shape == (scenes.TEST_HEIGHT, scenes.TEST_WIDTH, 3) for p in photos)
    found = detect(session, loaded, [p.image for p in photos])
    result = score(loaded, photos, found)
    assert 0.0 <= result["box_recall"] <= 1.0
    choice = choose_threshold(tmp_path / "detector", dataset, split, 2, seed=2, threads=1)
    tuned = ModelSpec.load(tmp_path / "detector")
    assert tuned.detection is not None and tuned.detection.score_threshold == choice["chosen"] in THRESHOLD_CANDIDATES
    assert tuned.onnx_sha256 == spec.onnx_sha256
    # The served mode's NMS IoU is chosen with its threshold, each candidate measured.
    assert tuned.detection.nms_iou == choice["nms_iou"] in NMS_CANDIDATES
    assert sorted(float(n) for n in choice["by_nms_iou"]) == sorted(NMS_CANDIDATES)
    # The flip test's threshold is chosen apart and kept beside the other; --serve makes it the served mode.
    flipped = choose_threshold(tmp_path / "detector", dataset, split, 2, seed=2, threads=1, flip_test=True, serve=True)
    both = ModelSpec.load(tmp_path / "detector")
    assert both.detection is not None and both.detection.flip_test and flipped["flip_test"]
    assert both.detection.flip_test_score_threshold == flipped["chosen"] in THRESHOLD_CANDIDATES
    assert both.detection.score_threshold == choice["chosen"]
    assert (
        both.extra["threshold_choice"] == tuned.extra["threshold_choice"] and "flip_test_threshold_choice" in both.extra
    )
    assert score(both, photos, found, flip_test=False)["box_recall"] == result["box_recall"]
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 64, 64, 3), np.float32)})
    assert decode_detections(dict(zip(names, outputs, strict=True)), loaded, [(600, 800)], score_threshold=1.0) == [[]]

    # The int8 variant: the frozen trunk's taps found by the head's name scope, both plans measured, the file
    # written, listed in model.json only when it passes the gate, and the test split compared side by side.
    import onnx

    from fashionsearch.model_variants import variants
    from training import quantize_detector

    taps = quantize_detector.trunk_taps(onnx.load(str(tmp_path / "detector" / "model.onnx")))
    assert len(taps) == len(detector.TAP_NAMES), taps
    made = quantize_detector.run(tmp_path / "detector", dataset, split, calibration_size=4, choose_photos=2, threads=1)
    assert set(made["plans"]) == {p.plan.name for p in quantize_detector.PLANS} and made["plan"] in made["plans"]
    assert all(t["ms_per_photo_batch1"] > 0 for t in made["plans"].values())  # timed alternating, each plan
    listed = [v.file for v in variants(ModelSpec.load(tmp_path / "detector"))]
    assert listed == ["model.onnx", "model.int8.onnx"] if made["listed"] else ["model.onnx"]
    assert made["listed"] == (made["gate_problems"] == [])
    compared = quantize_detector.compare_on_test(tmp_path / "detector", dataset, split, 2, seed=1, threads=1)
    assert [compared[k]["file"] for k in ("float", "int8")] == ["model.onnx", "model.int8.onnx"]
    assert all(0.0 <= compared["int8"]["shifts"][shift]["box_recall"] <= 1.0 for shift in compared["float"]["shifts"])
    assert compared["float"]["flip_test"] and compared["int8"]["flip_test"]  # the mode model.json serves
    path = quantize_detector.write_report(compared, "a command", tmp_path / "report")
    assert "| clean |" in path.read_text()

    from training import detector_compare

    modes = detector_compare.compare_flip_test(tmp_path / "detector", dataset, split, 2, seed=1, threads=1)
    assert [modes[m]["flip_test"] for m in ("without", "flip test")] == [False, True]
    assert modes["without"]["score_threshold"] == choice["chosen"]
    assert modes["flip test"]["score_threshold"] == flipped["chosen"]
    assert all(m["latency_ms"]["model"]["fastest"] > 0 for m in modes.values())
    path = detector_compare.write_flip_report(modes, "a command", tmp_path / "report")
    assert path.name == "flip-test.md" and "| clean |" in path.read_text()


def test_served_threshold_is_the_lowest_that_keeps_precision_else_the_best_f1() -> None:
    from training.detector_eval import PRECISION_FLOOR, pick_threshold

    def table(*rows: tuple[float, float, float]) -> dict[float, dict[str, float]]:
        return {t: {"box_recall": r, "box_precision": p} for t, r, p in rows}

    precise = table((0.2, 0.95, PRECISION_FLOOR - 0.1), (0.3, 0.9, PRECISION_FLOOR), (0.4, 0.8, 0.95))
    assert pick_threshold(precise)[0] == 0.3
    # no threshold keeps the floor: recall and precision balanced (F1 0.78 at 0.3 against 0.66 and 0.75)
    imprecise = table((0.2, 0.95, 0.5), (0.3, 0.8, 0.76), (0.4, 0.6, PRECISION_FLOOR - 0.01))
    threshold, rule = pick_threshold(imprecise)
    assert threshold == 0.3 and "F1" in rule
