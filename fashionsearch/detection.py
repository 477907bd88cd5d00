"""A detector's outputs -> boxes on the original photo: the one decoding function serving and evaluation share.

The detector (DETECTOR_CONTRACT.md) sees the photo letterboxed into its input and answers, per cell of a grid
`stride` pixels apart, a centre probability per group (`heatmap`), the box's (width, height) in input pixels
(`box_size`) and the centre's (dx, dy) inside its cell (`offset`). `decode_detections` picks the heatmap's local
maxima (3x3), keeps those at or above the score threshold, builds each box around its centre, maps it back
through the same letterbox `preprocess()` applied, clips it to the photo, and removes boxes that overlap a
better one (class-agnostic NMS). Plain NumPy: the services import no TensorFlow.

`run_detector` is the one path from a preprocessed batch to detections, serving's and evaluation's alike: with the
flip test (CenterNet's test-time augmentation) the batch and its mirror images go through the model in one run,
the mirror's maps are mirrored back and averaged with the photo's, and the average is decoded as above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fashionsearch.model_contract import DetectionSpec, ModelContractError, ModelSpec, letterbox


@dataclasses.dataclass(frozen=True)
class Detection:
    """One product found in a photo: its box in pixels of the original photo, its group and score, and the catalogue
    subCategories that group covers (model.json's detection.groups; empty for a group of articleTypes alone)."""

    left: float
    top: float
    width: float
    height: float
    group: str
    score: float
    sub_categories: tuple[str, ...] = ()

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.left, self.top, self.left + self.width, self.top + self.height

    def scaled(self, sx: float, sy: float) -> Detection:
        """The same detection on the photo resized by (sx, sy), e.g. from a reduced-scale decode to full size."""
        return dataclasses.replace(
            self, left=self.left * sx, top=self.top * sy, width=self.width * sx, height=self.height * sy
        )


def detection_spec(spec: ModelSpec) -> DetectionSpec:
    if spec.detection is None:
        raise ModelContractError(f"{spec.identity} is a {spec.kind}, not a detector: it has no detection section")
    return spec.detection


#: One model run: a preprocessed float32 (N, H, W, 3) batch -> output name -> array.
RunModel = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def run_detector(
    run: RunModel,
    batch: np.ndarray,
    spec: ModelSpec,
    original_sizes: Sequence[tuple[int, int]],
    *,
    flip_test: bool | None = None,
    score_threshold: float | None = None,
    max_detections: int | None = None,
) -> list[list[Detection]]:
    """Detections of a preprocessed batch (`decode_detections`), with the flip test or without.

    `flip_test` None: model.json's choice (`detection.flip_test`). The served score threshold is the one chosen for
    the mode in use (`DetectionSpec.served_threshold`); `score_threshold` overrides it, as in decode_detections.
    """
    det = detection_spec(spec)
    flip = det.flip_test if flip_test is None else flip_test
    outputs = merge_mirrored(run(with_mirrors(batch)), det, len(batch)) if flip else run(batch)
    threshold = det.served_threshold(flip) if score_threshold is None else score_threshold
    return decode_detections(outputs, spec, original_sizes, score_threshold=threshold, max_detections=max_detections)


def with_mirrors(batch: np.ndarray) -> np.ndarray:
    """The NHWC batch followed by its rows mirrored left to right, so one model run sees both.

    Mirroring the model's input (letterbox padding included) rather than the photo keeps the maps of the two in
    the same input frame, whatever side the letterbox put an odd pixel of padding on.
    """
    return np.concatenate([batch, batch[:, :, ::-1, :]])


def merge_mirrored(outputs: Mapping[str, np.ndarray], det: DetectionSpec, count: int) -> dict[str, np.ndarray]:
    """The flip test's maps for `count` photos from the outputs of `with_mirrors(batch)` (2 x count rows).

    A mirror image's cell column c is the photo's column cols - 1 - c, so its maps are reversed along the width.
    Heatmaps and box sizes (width and height do not change in a mirror) are then averaged as they are; a centre at
    (c + dx) * stride in the mirror lies at (cols - c - dx) * stride = ((cols - 1 - c) + (1 - dx)) * stride in the
    photo, so the mirror's x offset becomes 1 - dx before it is averaged (dy is the same in both).
    """
    merged = {}
    for name in (det.heatmap, det.box_size, det.offset):
        array = np.asarray(outputs[name]) if name in outputs else None
        if array is None or len(array) != 2 * count:
            got = "missing" if array is None else f"{len(array)} rows"
            raise ModelContractError(f"flip test: detector output {name!r} needs {2 * count} rows, got {got}")
        plain, mirrored = array[:count], array[count:, :, ::-1, :].copy()
        if name == det.offset:
            mirrored[..., 0] = 1.0 - mirrored[..., 0]
        merged[name] = (plain + mirrored) / 2
    return merged


def decode_detections(
    outputs: Mapping[str, np.ndarray],
    spec: ModelSpec,
    original_sizes: Sequence[tuple[int, int]],
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
) -> list[list[Detection]]:
    """Per photo of the batch, its detections sorted by score (highest first), boxes in original pixels.

    `original_sizes` holds each photo's (width, height) before preprocessing. `score_threshold` and
    `max_detections` default to model.json's; evaluation (mAP) passes a lower threshold to see the whole curve.
    """
    det = detection_spec(spec)
    threshold = det.score_threshold if score_threshold is None else score_threshold
    limit = det.max_detections if max_detections is None else max_detections
    heatmap, box_size, offset = _checked_outputs(outputs, spec, det, len(original_sizes))
    peaks = _local_maxima(heatmap) & (heatmap >= threshold)
    return [
        _decode_one(heatmap[i], box_size[i], offset[i], peaks[i], spec, det, size, limit)
        for i, size in enumerate(original_sizes)
    ]


def _checked_outputs(
    outputs: Mapping[str, np.ndarray], spec: ModelSpec, det: DetectionSpec, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    grid = (spec.input.height // det.stride, spec.input.width // det.stride)
    expected = {
        det.heatmap: (batch, *grid, len(det.groups)),
        det.box_size: (batch, *grid, 2),
        det.offset: (batch, *grid, 2),
    }
    arrays = []
    for name, shape in expected.items():
        if name not in outputs:
            raise ModelContractError(f"detector output {name!r} is missing; got {sorted(outputs)}")
        array = np.asarray(outputs[name])
        if array.shape != shape:
            raise ModelContractError(f"detector output {name!r} has shape {array.shape}, expected {shape}")
        arrays.append(array)
    return arrays[0], arrays[1], arrays[2]


def _local_maxima(heatmap: np.ndarray) -> np.ndarray:
    """True where a cell is the maximum of its 3x3 neighbourhood in its channel (CenterNet's max-pool NMS)."""
    _, rows, cols, _ = heatmap.shape
    padded = np.pad(heatmap, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = heatmap.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(pooled, padded[:, dy : dy + rows, dx : dx + cols], out=pooled)
    is_max: np.ndarray = heatmap >= pooled
    return is_max


def _decode_one(
    heatmap: np.ndarray,
    box_size: np.ndarray,
    offset: np.ndarray,
    peaks: np.ndarray,
    spec: ModelSpec,
    det: DetectionSpec,
    original_size: tuple[int, int],
    limit: int,
) -> list[Detection]:
    rows, cols, groups = np.nonzero(peaks)
    if len(rows) == 0:
        return []
    scores = heatmap[rows, cols, groups].astype(np.float64)
    centre_x = (cols + offset[rows, cols, 0].astype(np.float64)) * det.stride
    centre_y = (rows + offset[rows, cols, 1].astype(np.float64)) * det.stride
    half_w = np.maximum(box_size[rows, cols, 0].astype(np.float64), 0.0) / 2
    half_h = np.maximum(box_size[rows, cols, 1].astype(np.float64), 0.0) / 2

    # Undo the letterbox: model-input pixels -> original pixels, per axis (the resize rounds each side).
    width, height = original_size
    placed = letterbox(width, height, spec.input)
    sx, sy = width / placed.width, height / placed.height
    x1 = np.clip((centre_x - half_w - placed.left) * sx, 0, width)
    x2 = np.clip((centre_x + half_w - placed.left) * sx, 0, width)
    y1 = np.clip((centre_y - half_h - placed.top) * sy, 0, height)
    y2 = np.clip((centre_y + half_h - placed.top) * sy, 0, height)

    # A box wholly in the padding clips to nothing; it is not a product of the photo.
    real = (x2 > x1) & (y2 > y1)
    order = np.argsort(-scores[real], kind="stable")
    boxes = np.stack([x1, y1, x2, y2], axis=1)[real][order]
    kept = non_max_suppression(boxes, det.nms_iou, limit)
    chosen_scores, chosen_groups = scores[real][order][kept], groups[real][order][kept]
    return [
        Detection(
            left=float(b[0]),
            top=float(b[1]),
            width=float(b[2] - b[0]),
            height=float(b[3] - b[1]),
            group=det.groups[g].name,
            score=float(s),
            sub_categories=det.groups[g].sub_categories,
        )
        for b, g, s in zip(boxes[kept], chosen_groups, chosen_scores, strict=True)
    ]


def box_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU matrix (len(boxes), len(others)) of boxes given as (x1, y1, x2, y2) rows."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    iou: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def non_max_suppression(boxes: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, at most `limit`; `boxes` are (x1, y1, x2, y2) rows, best first.

    A box is dropped when its IoU with a kept box is above `iou_threshold`.
    """
    alive = np.ones(len(boxes), dtype=bool)
    kept: list[int] = []
    for i in range(len(boxes)):
        if len(kept) == limit:
            break
        if not alive[i]:
            continue
        kept.append(i)
        alive[i + 1 :] &= box_iou(boxes[i], boxes[i + 1 :])[0] <= iou_threshold
    return np.asarray(kept, dtype=np.int64)


#: Context kept around a product when it is cut out: this share of its box's width and height on each side (the
#: catalogue's packshots show the whole product with a little room around it).
CROP_MARGIN = 0.08


def crop_box(detection: Detection, width: int, height: int, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """The pixels (left, top, right, bottom) to cut out of a width x height photo for `detection`: its box grown by
    `margin` on each side, to whole pixels, within the photo and at least one pixel each way."""
    x1, y1, x2, y2 = detection.xyxy
    grow_x, grow_y = detection.width * margin, detection.height * margin
    left = min(max(0, int(np.floor(x1 - grow_x))), width - 1)
    top = min(max(0, int(np.floor(y1 - grow_y))), height - 1)
    right = max(min(width, int(np.ceil(x2 + grow_x))), left + 1)
    bottom = max(min(height, int(np.ceil(y2 + grow_y))), top + 1)
    return left, top, right, bottom


@dataclasses.dataclass(frozen=True)
class BoxVerification:
    """A second look at a detector's boxes, with the classifier (model.json's `box_verification`, fitted by
    `python -m training fit-box-verification`): every detection down to `candidate_threshold` is cut out and
    classified, and kept when the chance that it is a product, a logistic function of the detector's score and the
    classifier's top subCategory probability for the cut-out, reaches `keep_probability`. The classifier knows
    products far better than the detector's heatmap, so a weak box it reads with confidence is kept and a strong
    box it cannot place is dropped: on validation scenes more products are found at the same box precision
    (reports/detector/README.md). Fitted with one classifier (`classifier`, "name:version") and the flip test on
    both models; its probabilities are not those of another classifier."""

    candidate_threshold: float
    intercept: float
    score_weight: float
    confidence_weight: float
    keep_probability: float
    classifier: str

    def product_probability(self, score: float, confidence: float) -> float:
        z = self.intercept + self.score_weight * score + self.confidence_weight * confidence
        return float(1.0 / (1.0 + np.exp(-z)))

    def keeps(self, score: float, confidence: float) -> bool:
        return (
            score >= self.candidate_threshold and self.product_probability(score, confidence) >= self.keep_probability
        )

    def problems(self) -> list[str]:
        numbers = (self.candidate_threshold, self.intercept, self.score_weight, self.confidence_weight)
        problems = []
        if not all(isinstance(v, int | float) and np.isfinite(v) for v in numbers):
            problems.append(f"box_verification needs finite numbers, got {numbers}")
        if not 0.0 <= self.candidate_threshold <= 1.0 or not 0.0 < self.keep_probability < 1.0:
            problems.append("box_verification: candidate_threshold must be in [0, 1] and keep_probability in (0, 1)")
        if not isinstance(self.classifier, str) or ":" not in self.classifier:
            problems.append(f"box_verification.classifier must be 'name:version', got {self.classifier!r}")
        return problems

    @classmethod
    def of(cls, spec: ModelSpec) -> BoxVerification | None:
        """The detector's rule (model.json's top-level `box_verification`), or None when it has none."""
        data = spec.extra.get("box_verification")
        if not data:
            return None
        try:
            rule = cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})
        except (KeyError, TypeError) as error:
            raise ModelContractError(f"{spec.identity}: box_verification lacks or mistypes {error}") from None
        if problems := rule.problems():
            raise ModelContractError(f"{spec.identity}: " + "; ".join(problems))
        return rule
