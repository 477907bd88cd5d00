"""The detector's report: mAP@0.5 and AP per group on the composite test split, clean and under shopper shifts.

The exported model runs in onnxruntime, fed by the contract's `preprocess()`, and its outputs go through the one
path the detector service uses, `fashionsearch.detection.run_detector` (with the flip test or without, and with a
low score threshold, so the whole precision-recall curve is seen). AP is the area under the interpolated
precision envelope (all points, as PASCAL VOC 2010+), a detection matching an unmatched ground-truth box of its
group at IoU >= 0.5, best score first. At the served threshold (model.json's, for the mode measured), the
class-agnostic box recall and precision, the share of photos whose every product was found, and how often a found
product's group is right.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fashionsearch.detection import Detection, box_iou, run_detector
from fashionsearch.model_contract import MODEL_FILE, ModelSpec, preprocess
from training import data, scenes, shopper
from training.inference import onnx_session

log = logging.getLogger(__name__)

IOU = 0.5
AP_THRESHOLD = 0.01  # decode down to here for AP; the served threshold is model.json's
THRESHOLDS = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5)  # the clean photos' box metrics at these score thresholds too
#: Every hundredth: with steps of 0.05 the rule stopped up to 0.04 above the lowest threshold it allows (0.35 where
#: 0.33 keeps the precision), and the products between went unfound.
THRESHOLD_CANDIDATES = tuple(round(0.1 + 0.01 * k, 2) for k in range(41))
#: The served threshold keeps box precision at least this high on validation scenes: the issue's goal is 0.85 on
#: photos we do not have, and three points of margin cover the test split's distance from validation (v1: 0.902 on
#: validation, 0.881 on test at the same threshold). Among those, the lowest threshold: the most products found.
PRECISION_FLOOR = 0.88
#: The NMS IoU is chosen with the served mode's threshold: a lower one removes more second boxes on one product
#: (precision), so a lower score threshold keeps the precision floor (recall), until it removes products that
#: overlap. Detector 2 on tune-detector's 200 validation scenes, box recall at the floor: 0.3 0.828, 0.4 0.824, 0.5
#: 0.828 (chosen, more photos with every product found), 0.6 (its first setting) 0.819, 0.7 0.797.
NMS_CANDIDATES = (0.3, 0.4, 0.5, 0.6, 0.7)

Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]
#: Shopper shifts that leave the boxes where they are (training/shopper.py's photometric families).
SHIFTS: tuple[tuple[str, Shift], ...] = (
    ("clean", lambda img, rng: img),
    ("dim (brightness 0.5, gamma 1.2)", lambda img, rng: shopper.light(img, brightness=0.5, gamma=1.2)),
    ("warm cast (+12%)", lambda img, rng: shopper.light(img, gains=shopper.temperature(0.12))),
    ("low contrast (0.6)", lambda img, rng: shopper.light(img, contrast=0.6)),
    ("blur (radius 3)", lambda img, rng: shopper.blur(img, 3.0)),
    ("noise (sigma 15)", lambda img, rng: shopper.noise(img, 15.0, rng)),
    ("JPEG quality 15", lambda img, rng: shopper.jpeg(img, 15)),
    ("random phone effects", lambda img, rng: shopper.phone_effects(img, rng)),
)


def detect(
    session: Any,
    spec: ModelSpec,
    images: Sequence[np.ndarray],
    batch: int = 16,
    score_threshold: float | None = AP_THRESHOLD,
    max_detections: int | None = 100,
    flip_test: bool | None = None,
) -> list[list[Detection]]:
    """Each photo's detections, best first; None for the threshold, the limit and the flip test: model.json's, as
    served."""
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name

    def run(rows: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, {input_name: rows}), strict=True))

    out: list[list[Detection]] = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        sizes = [(img.shape[1], img.shape[0]) for img in chunk]
        rows = preprocess(list(chunk), spec.input)
        out.extend(
            run_detector(
                run,
                rows,
                spec,
                sizes,
                flip_test=flip_test,
                score_threshold=score_threshold,
                max_detections=max_detections,
            )
        )
    return out


def average_precision(scores: np.ndarray, matched: np.ndarray, positives: int) -> float:
    """All-point interpolated AP of detections (score, matched a ground truth) against `positives` boxes."""
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = np.concatenate([[0.0], tp / positives, [1.0]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def match(dets: list[Detection], boxes: np.ndarray, groups: Sequence[str], same_group: bool) -> np.ndarray:
    """For each detection (sorted by score), whether it takes a still unmatched ground-truth box at IoU >= 0.5
    (of its own group when same_group); greedy, best IoU first."""
    taken = np.zeros(len(boxes), dtype=bool)
    out = np.zeros(len(dets), dtype=bool)
    if not len(boxes) or not dets:
        return out
    ious = box_iou(np.asarray([d.xyxy for d in dets]), boxes)
    for k, det in enumerate(dets):
        candidates = ious[k].copy()
        candidates[taken] = 0.0
        if same_group:
            candidates[[g != det.group for g in groups]] = 0.0
        best = int(np.argmax(candidates))
        if candidates[best] >= IOU:
            taken[best] = out[k] = True
    return out


def box_metrics(photos: Sequence[scenes.Scene], found: list[list[Detection]], threshold: float) -> dict[str, float]:
    """Detections at or above `threshold`: class-agnostic box recall and precision (IoU >= 0.5, each box matched
    once), the share of photos whose every product was found, and the share of found products whose group is right."""
    truths = served = hits = photos_all = right_group = 0
    for scene, dets in zip(photos, found, strict=True):
        groups = [scenes.GROUP_NAMES[g] for g in scene.groups]
        kept = [d for d in dets if d.score >= threshold]
        ok = match(kept, scene.boxes, groups, same_group=False)
        truths += len(scene.boxes)
        served += len(kept)
        hits += int(ok.sum())
        photos_all += int(ok.sum() == len(scene.boxes))
        right_group += int(match(kept, scene.boxes, groups, same_group=True).sum())
    return {
        "box_recall": hits / max(truths, 1),
        "box_precision": hits / max(served, 1),
        "photos_all_found": photos_all / max(len(photos), 1),
        "group_right_of_found": right_group / max(hits, 1),
    }


def flip_test_of(spec: ModelSpec, flip_test: bool | None) -> bool:
    """Whether the flip test is on: `flip_test`, or model.json's choice when None."""
    assert spec.detection is not None
    return spec.detection.flip_test if flip_test is None else flip_test


def score(
    spec: ModelSpec, photos: Sequence[scenes.Scene], found: list[list[Detection]], flip_test: bool | None = None
) -> dict[str, Any]:
    """AP per group and mAP (detections down to AP_THRESHOLD), and the box metrics at the served threshold of the
    mode the detections were made in (`flip_test`; None: model.json's)."""
    assert spec.detection is not None
    names = [g.name for g in spec.detection.groups]
    per_group: dict[str, tuple[list[float], list[bool]]] = {n: ([], []) for n in names}
    positives = dict.fromkeys(names, 0)
    for scene, dets in zip(photos, found, strict=True):
        groups = [scenes.GROUP_NAMES[g] for g in scene.groups]
        for g in groups:
            positives[g] += 1
        for name in names:
            mine = [d for d in dets if d.group == name]
            ok = match(mine, scene.boxes, groups, same_group=True)
            per_group[name][0].extend(d.score for d in mine)
            per_group[name][1].extend(bool(v) for v in ok)
    ap = {
        n: average_precision(np.asarray(per_group[n][0]), np.asarray(per_group[n][1], dtype=bool), positives[n])
        for n in names
    }
    present = [v for v in ap.values() if np.isfinite(v)]
    return {
        "mAP50": float(np.mean(present)) if present else float("nan"),
        "ap50": ap,
        "boxes": positives,
    } | box_metrics(photos, found, spec.detection.served_threshold(flip_test_of(spec, flip_test)))


def pick_threshold(table: dict[float, dict[str, float]]) -> tuple[float, str]:
    """(threshold, the rule that chose it) from box recall and precision per candidate threshold."""
    precise = [t for t, m in table.items() if m["box_precision"] >= PRECISION_FLOOR]
    if precise:
        return min(precise), f"lowest threshold with box precision >= {PRECISION_FLOOR}"

    def f1(m: dict[str, float]) -> float:
        return 2 * m["box_recall"] * m["box_precision"] / max(m["box_recall"] + m["box_precision"], 1e-9)

    return max(table, key=lambda t: f1(table[t])), f"best F1 (no threshold reached box precision {PRECISION_FLOOR})"


def choose_threshold(
    model_dir: Path,
    dataset: data.Dataset,
    split: dict[int, str],
    count: int,
    seed: int,
    threads: int = 2,
    flip_test: bool | None = None,
    serve: bool = False,
) -> dict[str, Any]:
    """The served score threshold, chosen on composite scenes of VALIDATION-split products (never the test split):
    the lowest candidate whose box precision reaches PRECISION_FLOOR (the best recall that keeps precision), or the
    best F1 of box recall and precision when none does. Written into model.json's detection section, one per mode:
    `score_threshold` without the flip test, `flip_test_score_threshold` with it (`flip_test` None: the mode
    model.json serves). `serve`: model.json then serves that mode (`detection.flip_test`).

    When the mode tuned is the one served, the NMS IoU is chosen with it (NMS_CANDIDATES, each with its own
    threshold by the rule above; the most recall wins); the other mode keeps its threshold, so tune it again after."""
    spec = ModelSpec.load(model_dir)
    assert spec.detection is not None
    flip = flip_test_of(spec, flip_test)
    session = onnx_session(model_dir / MODEL_FILE, threads=threads)
    photos = scenes.test_scenes(scenes.split_products(dataset, split, "val"), count, seed)
    served_mode = serve or flip == spec.detection.flip_test
    tables = {}
    for nms in NMS_CANDIDATES if served_mode else (spec.detection.nms_iou,):
        trial = dataclasses.replace(spec, detection=dataclasses.replace(spec.detection, nms_iou=nms))
        found = detect(session, trial, [p.image for p in photos], flip_test=flip)
        tables[nms] = {t: box_metrics(photos, found, t) for t in THRESHOLD_CANDIDATES}
    picks = {nms: pick_threshold(table) for nms, table in tables.items()}

    def merit(nms: float) -> tuple[bool, float, float]:
        threshold, rule = picks[nms]
        metrics = tables[nms][threshold]
        return rule.startswith("lowest"), metrics["box_recall"], metrics["photos_all_found"]

    nms = max(tables, key=merit)
    best, rule = picks[nms]
    table = tables[nms]
    if flip:
        chosen = dataclasses.replace(spec.detection, flip_test_score_threshold=best, nms_iou=nms)
    else:
        chosen = dataclasses.replace(spec.detection, score_threshold=best, nms_iou=nms)
    if serve:
        chosen = dataclasses.replace(chosen, flip_test=flip)
    choice = {
        "photos": count,
        "seed": seed,
        "split": "val",
        "flip_test": flip,
        "chosen": best,
        "rule": rule,
        "nms_iou": nms,
        "by_nms_iou": {str(n): {"threshold": picks[n][0]} | tables[n][picks[n][0]] for n in tables},
        "by_threshold": {str(t): m for t, m in table.items()},
    }
    key = "flip_test_threshold_choice" if flip else "threshold_choice"
    other = "threshold_choice" if flip else "flip_test_threshold_choice"
    if nms != spec.detection.nms_iou and other in spec.extra:
        log.warning("NMS IoU %s -> %s: tune the other mode's threshold again (%s)", spec.detection.nms_iou, nms, other)
    dataclasses.replace(spec, detection=chosen, extra=dict(spec.extra) | {key: choice}).write(model_dir)
    return choice


def evaluate_detector(
    model_dir: Path,
    dataset: data.Dataset,
    split: dict[int, str],
    count: int,
    seed: int,
    threads: int = 2,
    file: str = MODEL_FILE,
    photos: Sequence[scenes.Scene] | None = None,
    flip_test: bool | None = None,
) -> dict[str, Any]:
    """`file`: which of the folder's ONNX files (model.onnx, or a variant such as model.int8.onnx); `photos`: the
    composite test split when already made (it is the same for the same count and seed); `flip_test`: with the
    flip test or without (None: as model.json serves)."""
    spec = ModelSpec.load(model_dir)
    assert spec.detection is not None
    flip = flip_test_of(spec, flip_test)
    session = onnx_session(model_dir / file, threads=threads)
    if photos is None:
        photos = scenes.composite_test_split(dataset, split, count, seed)
    results: dict[str, Any] = {
        "model": spec.identity,
        "file": file,
        "flip_test": flip,
        "score_threshold": spec.detection.served_threshold(flip),
        "photos": count,
        "seed": seed,
        "products": int(sum(len(s.boxes) for s in photos)),
        "onnx_mb": (model_dir / file).stat().st_size / 1e6,
        "shifts": {},
    }
    for k, (name, shift) in enumerate(SHIFTS):
        rng = np.random.default_rng(seed + k)
        shifted = [scenes.Scene(shift(s.image, rng), s.boxes, s.groups, s.ids) for s in photos]
        started = time.monotonic()
        found = detect(session, spec, [s.image for s in shifted], flip_test=flip)
        results["shifts"][name] = score(spec, shifted, found, flip) | {"seconds": time.monotonic() - started}
        if name == "clean":
            results["clean_by_threshold"] = {str(t): box_metrics(shifted, found, t) for t in THRESHOLDS}
    results["ms_per_photo_batch1"] = latency_ms(session, spec, photos[0].image, flip_test=flip)
    return results


def latency_ms(
    session: Any, spec: ModelSpec, image: np.ndarray, runs: int = 30, flip_test: bool | None = None
) -> float:
    """Median milliseconds of preprocess + model + decode for one 600x800 photo (batch 1), decoded as served."""
    times = []
    for _ in range(runs + 3):
        started = time.perf_counter()
        detect(session, spec, [image], batch=1, score_threshold=None, max_detections=None, flip_test=flip_test)
        times.append(time.perf_counter() - started)
    return float(np.median(times[3:]) * 1000)


def markdown(results: dict[str, Any], command: str) -> list[str]:
    shifts = results["shifts"]
    clean = shifts["clean"]
    groups = list(clean["ap50"])
    lines = [
        f"`{command}`",
        "",
        f"Model {results['model']} ({results.get('file', MODEL_FILE)}, flip test "
        f"{'on' if results.get('flip_test') else 'off'}, score threshold {results.get('score_threshold', '?')}); "
        f"{results['photos']} composite test photos (seed {results['seed']}, "
        f"{results['products']} products, 600x800 JPEG, 2 to 4 test-split products each); ONNX "
        f"{results['onnx_mb']:.1f} MB; {results['ms_per_photo_batch1']:.0f} ms per photo at batch 1 on 2 threads "
        "(preprocess, model, decode).",
        "",
        "| photos | mAP@0.5 | box recall | box precision | all products found | group right (found) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in shifts.items():
        lines.append(
            f"| {name} | {r['mAP50']:.3f} | {r['box_recall']:.3f} | {r['box_precision']:.3f} | "
            f"{r['photos_all_found']:.3f} | {r['group_right_of_found']:.3f} |"
        )
    lines += [
        "",
        "AP@0.5 per group, clean and under random phone effects (boxes: the ground-truth boxes of the group):",
        "",
        "| group | boxes | AP@0.5 clean | AP@0.5 phone effects |",
        "|---|---|---|---|",
    ]
    phone = shifts.get("random phone effects", clean)
    for g in groups:
        lines.append(f"| {g} | {clean['boxes'][g]} | {clean['ap50'][g]:.3f} | {phone['ap50'][g]:.3f} |")
    lines += [
        "",
        "Clean photos at other score thresholds (model.json's is the served one; a threshold is chosen on "
        "validation scenes, never on this table):",
        "",
        "| score threshold | box recall | box precision | all products found | group right (found) |",
        "|---|---|---|---|---|",
    ]
    for t, r in results.get("clean_by_threshold", {}).items():
        lines.append(
            f"| {t} | {r['box_recall']:.3f} | {r['box_precision']:.3f} | {r['photos_all_found']:.3f} | "
            f"{r['group_right_of_found']:.3f} |"
        )
    return lines


def write_report(results: dict[str, Any], command: str, report_dir: Path, preamble: Sequence[str] = ()) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    path = report_dir / "evaluation.md"
    path.write_text("\n".join(["# Detector evaluation", "", *preamble, *markdown(results, command)]) + "\n")
    return path
