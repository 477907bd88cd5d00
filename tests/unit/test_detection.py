"""The one decoding function on hand-made detector outputs whose boxes are known."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionsearch.detection import (
    BoxVerification,
    Detection,
    box_iou,
    crop_box,
    decode_detections,
    non_max_suppression,
)
from fashionsearch.model_contract import (
    DetectionGroup,
    DetectionSpec,
    InputSpec,
    ModelContractError,
    ModelSpec,
    OutputHead,
    preprocess,
)

HEIGHT, WIDTH, STRIDE = 64, 48, 8
ROWS, COLS = HEIGHT // STRIDE, WIDTH // STRIDE
GROUPS = ("top", "shoes")


def _spec(**detection) -> ModelSpec:
    return ModelSpec(
        name="tiny-detector",
        kind="detector",
        version="1",
        onnx_sha256="0" * 64,
        input=InputSpec(name="image", height=HEIGHT, width=WIDTH, resize="pad", pad_value=255),
        detection=DetectionSpec(
            heatmap="hm",
            box_size="wh",
            offset="off",
            groups=tuple(DetectionGroup(g, (g.title(),)) for g in GROUPS),
            stride=STRIDE,
            **({"score_threshold": 0.3, "max_detections": 50, "nms_iou": 0.6} | detection),
        ),
    )


def _outputs(batch: int = 1) -> dict[str, np.ndarray]:
    return {
        "hm": np.zeros((batch, ROWS, COLS, len(GROUPS)), np.float32),
        "wh": np.zeros((batch, ROWS, COLS, 2), np.float32),
        "off": np.zeros((batch, ROWS, COLS, 2), np.float32),
    }


def _put(out, row, col, group, score, size=(16, 24), offset=(0.5, 0.5), photo=0):
    out["hm"][photo, row, col, GROUPS.index(group)] = score
    out["wh"][photo, row, col] = size
    out["off"][photo, row, col] = offset


def test_a_peak_becomes_a_box_around_its_centre():
    out = _outputs()
    _put(out, row=3, col=2, group="top", score=0.9, size=(16, 24), offset=(0.5, 0.25))
    [found] = decode_detections(out, _spec(), [(WIDTH, HEIGHT)])
    # centre = ((2 + 0.5) * 8, (3 + 0.25) * 8) = (20, 26); box = centre -+ (8, 12)
    assert found == [
        Detection(
            left=12.0, top=14.0, width=16.0, height=24.0, group="top", score=pytest.approx(0.9), sub_categories=("Top",)
        )
    ]


def test_the_letterbox_is_undone():
    # A 96x64 photo in a 48x64 input: halved to 48x32, centred with 16 rows of padding above.
    out = _outputs()
    _put(out, row=3, col=2, group="shoes", score=0.8, size=(16, 16), offset=(0.5, 0.5))
    [[box]] = decode_detections(out, _spec(), [(96, 64)])
    # input box x 12..28, y 20..36 -> photo x 24..56, y (20-16)*2 .. (36-16)*2
    assert (box.left, box.top, box.width, box.height) == pytest.approx((24, 8, 32, 32))
    assert box.group == "shoes"


@pytest.mark.parametrize("photo_size", [(300, 200), (41, 130), (48, 64), (1000, 37)])
def test_the_letterbox_is_the_one_preprocess_applies(photo_size):
    # A dark rectangle in the photo: where preprocess puts it, read back as a box, maps back onto the photo.
    width, height = photo_size
    spec = _spec()
    photo = np.full((height, width, 3), 255, np.uint8)
    rect = (width // 4, height // 4, width // 4 + width // 2, height // 4 + height // 2)  # x1, y1, x2, y2
    photo[rect[1] : rect[3], rect[0] : rect[2]] = 0
    seen = preprocess([Image.fromarray(photo)], spec.input)[0, ..., 0] < 0.5
    ys, xs = np.nonzero(seen)
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    out = _outputs()
    row, col = int(cy // STRIDE), int(cx // STRIDE)
    _put(out, row, col, "top", 0.9, size=(x2 - x1, y2 - y1), offset=(cx / STRIDE - col, cy / STRIDE - row))
    [[box]] = decode_detections(out, spec, [photo_size])
    # Within one input pixel of the rectangle, in photo pixels (resampling blurs the edge by up to a pixel).
    tolerance = max(width / WIDTH, height / HEIGHT) * 1.01
    assert np.allclose(box.xyxy, rect, atol=tolerance), (box.xyxy, rect)


def test_boxes_are_clipped_to_the_photo_and_boxes_in_the_padding_dropped():
    out = _outputs()
    _put(out, row=0, col=0, group="top", score=0.9, size=(40, 40), offset=(0.0, 0.0))
    [[box]] = decode_detections(out, _spec(), [(WIDTH, HEIGHT)])
    assert box.xyxy == (0.0, 0.0, 20.0, 20.0)
    # 96x64 photo: rows 0..15 of the input are padding; a small box there is no product.
    out = _outputs()
    _put(out, row=0, col=2, group="top", score=0.9, size=(8, 8), offset=(0.5, 0.5))
    assert decode_detections(out, _spec(), [(96, 64)]) == [[]]


def test_only_3x3_local_maxima_count():
    out = _outputs()
    _put(out, row=3, col=2, group="top", score=0.9, size=(4, 4))
    _put(out, row=3, col=3, group="top", score=0.8, size=(4, 4))  # neighbour: not a peak, although no overlap
    _put(out, row=5, col=3, group="top", score=0.7, size=(4, 4))  # two cells away: a peak of its own
    _put(out, row=3, col=3, group="shoes", score=0.5, size=(4, 4))  # same cell, other channel: its own peak
    [found] = decode_detections(out, _spec(), [(WIDTH, HEIGHT)])
    assert [(d.group, round(d.score, 2)) for d in found] == [("top", 0.9), ("top", 0.7), ("shoes", 0.5)]


def test_nms_is_class_agnostic_and_keeps_separate_boxes():
    out = _outputs()
    _put(out, row=3, col=2, group="top", score=0.9, size=(24, 24))
    _put(out, row=3, col=2, group="shoes", score=0.6, size=(24, 24))  # same box, other group: suppressed
    _put(out, row=7, col=5, group="shoes", score=0.5, size=(8, 8))  # far away: kept
    [found] = decode_detections(out, _spec(), [(WIDTH, HEIGHT)])
    assert [(d.group, round(d.score, 2)) for d in found] == [("top", 0.9), ("shoes", 0.5)]
    [found] = decode_detections(out, _spec(nms_iou=1.0), [(WIDTH, HEIGHT)])
    assert len(found) == 3


def test_score_threshold_is_inclusive_and_can_be_overridden():
    out = _outputs()
    _put(out, row=1, col=1, group="top", score=0.3)
    _put(out, row=6, col=4, group="top", score=0.29, size=(8, 8))
    [found] = decode_detections(out, _spec(), [(WIDTH, HEIGHT)])
    assert [round(d.score, 2) for d in found] == [0.3]
    [found] = decode_detections(out, _spec(), [(WIDTH, HEIGHT)], score_threshold=0.1)
    assert [round(d.score, 2) for d in found] == [0.3, 0.29]


def test_at_most_max_detections_the_best_first():
    out = _outputs()
    scores = [0.35, 0.9, 0.5, 0.75, 0.6, 0.4]
    for i, score in enumerate(scores):
        _put(out, row=(i // 3) * 4, col=(i % 3) * 2, group="top", score=score, size=(4, 4))
    [found] = decode_detections(out, _spec(max_detections=3), [(WIDTH, HEIGHT)])
    assert [round(d.score, 2) for d in found] == [0.9, 0.75, 0.6]
    [found] = decode_detections(out, _spec(), [(WIDTH, HEIGHT)], max_detections=1)
    assert len(found) == 1


def test_empty_heatmaps_and_batches():
    assert decode_detections(_outputs(2), _spec(), [(WIDTH, HEIGHT), (10, 500)]) == [[], []]
    assert decode_detections(_outputs(0), _spec(), []) == []


def test_each_photo_of_a_batch_keeps_its_own_boxes_and_size():
    out = _outputs(2)
    _put(out, row=3, col=2, group="top", score=0.9, size=(16, 16), photo=1)
    first, second = decode_detections(out, _spec(), [(WIDTH, HEIGHT), (96, 64)])
    assert first == [] and second[0].xyxy == pytest.approx((24, 8, 56, 40))


def test_outputs_that_do_not_match_the_contract_are_refused():
    out = _outputs()
    with pytest.raises(ModelContractError, match="'hm' has shape"):
        decode_detections(out, _spec(), [(WIDTH, HEIGHT), (WIDTH, HEIGHT)])
    del out["off"]
    with pytest.raises(ModelContractError, match="'off' is missing"):
        decode_detections(out, _spec(), [(WIDTH, HEIGHT)])
    classifier = ModelSpec(
        name="c",
        kind="classifier",
        version="1",
        onnx_sha256="0",
        input=_spec().input,
        outputs=(OutputHead("p", "gender", ("Men",)),),
    )
    with pytest.raises(ModelContractError, match="not a detector"):
        decode_detections(_outputs(), classifier, [(WIDTH, HEIGHT)])


def test_box_iou_and_nms():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    iou = box_iou(boxes, boxes)
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0 and np.allclose(np.diag(iou), 1)
    assert non_max_suppression(boxes, 0.3, 10).tolist() == [0, 2]
    assert non_max_suppression(boxes, 0.5, 10).tolist() == [0, 1, 2]
    assert non_max_suppression(boxes, 0.5, 2).tolist() == [0, 1]
    assert non_max_suppression(np.zeros((0, 4)), 0.5, 2).tolist() == []


def test_crop_box_adds_a_margin_in_whole_pixels_inside_the_photo():
    box = Detection(left=10.2, top=20.0, width=50.0, height=100.0, group="top", score=0.9)
    assert crop_box(box, 200, 300, margin=0.1) == (5, 10, 66, 130)
    assert crop_box(box, 40, 60, margin=0.1) == (5, 10, 40, 60)  # clipped to a small photo
    edge = Detection(left=199.5, top=299.9, width=0.5, height=0.1, group="top", score=0.9)
    assert crop_box(edge, 200, 300, margin=0.0) == (199, 299, 200, 300)  # never empty
    assert box.scaled(2, 0.5).xyxy == pytest.approx((20.4, 10.0, 120.4, 60.0))


RULE = {
    "candidate_threshold": 0.2,
    "intercept": -14.0,
    "score_weight": 10.0,
    "confidence_weight": 10.0,
    "keep_probability": 0.5,
    "classifier": "classifier:9",
}


def test_box_verification_weighs_the_score_against_the_classifiers_confidence():
    rule = BoxVerification.of(dataclasses.replace(_spec(), extra={"box_verification": RULE}))
    assert rule is not None and rule.classifier == "classifier:9"
    assert rule.product_probability(0.7, 0.7) == pytest.approx(0.5)
    assert rule.keeps(0.5, 0.95)  # a weak box the classifier reads with confidence
    assert not rule.keeps(0.9, 0.4)  # a strong box it cannot place
    assert not rule.keeps(0.19, 1.0)  # below the candidates
    assert BoxVerification.of(_spec()) is None  # a detector without a rule


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keep_probability": 1.0}, "keep_probability in"),
        ({"candidate_threshold": -0.1}, "candidate_threshold must be"),
        ({"intercept": float("nan")}, "finite numbers"),
        ({"classifier": "classifier"}, "'name:version'"),
        ({"score_weight": None}, "box_verification"),
    ],
)
def test_a_malformed_box_verification_is_refused(change, message):
    spec = dataclasses.replace(_spec(), extra={"box_verification": RULE | change})
    with pytest.raises(ModelContractError, match=message):
        BoxVerification.of(spec)
    missing = {k: v for k, v in RULE.items() if k != "intercept"}
    with pytest.raises(ModelContractError, match="intercept"):
        BoxVerification.of(dataclasses.replace(_spec(), extra={"box_verification": missing}))


def test_the_committed_detectors_box_verification_is_fitted_for_the_committed_classifier():
    # The gateway applies the rule only beside the classifier it was fitted with and otherwise falls back to the
    # detector's own threshold, silently but for a metric: serving a new classifier means refitting it
    # (`python -m training fit-box-verification models/detector --classifier models/classifier`).
    models = Path(__file__).resolve().parents[2] / "models"
    rule = BoxVerification.of(ModelSpec.load(models / "detector"))
    classifier = ModelSpec.load(models / "classifier")
    assert rule is not None and rule.classifier == classifier.identity
