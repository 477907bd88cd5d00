"""Two ways of running the detector on the same composite test photos, side by side, their latencies measured
alternating in one run: float against int8 (quantize_detector.compare_on_test, int8.md) and the flip test against
the photo alone (`python -m training evaluate-detector --flip-test`, flip-test.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fashionsearch.detection import with_mirrors
from fashionsearch.model_contract import MODEL_FILE, ModelSpec, preprocess
from training import data, detector_eval, scenes
from training.inference import onnx_session

#: Latency rounds per contender; each round times every contender in turn.
ROUNDS = 7
#: Calls per round and part.
RUNS = 20
#: The flip test's two modes, in the order the report shows them.
FLIP_MODES = {"without": False, "flip test": True}


def timed_parts(session: Any, spec: ModelSpec, image: np.ndarray, flip_test: bool) -> dict[str, Callable[[], object]]:
    """What alternating_ms times for one way of detecting a photo at batch 1: the whole photo (preprocess, model,
    decode as served) and the model alone (one run of what it sees: the photo, or the photo and its mirror)."""
    rows = preprocess([image], spec.input)
    feed = {session.get_inputs()[0].name: with_mirrors(rows) if flip_test else rows}
    return {
        "photo": lambda: detector_eval.detect(session, spec, [image], 1, None, None, flip_test),
        "model": lambda: session.run(None, feed),
    }


def alternating_ms(
    contenders: Mapping[str, Mapping[str, Callable[[], object]]], rounds: int = ROUNDS
) -> dict[str, Any]:
    """contender -> part -> the fastest and the median of `rounds` rounds of RUNS calls, in ms per call; every
    contender's every part is timed in turn within each round, so all meet the same machine load (the fastest
    round is the least disturbed one on a shared machine)."""
    times: dict[str, dict[str, list[float]]] = {c: {part: [] for part in parts} for c, parts in contenders.items()}
    for _ in range(rounds):
        for name, parts in contenders.items():
            for part, call in parts.items():
                call()  # one untimed call: the timed ones meet warm caches
                started = time.perf_counter()
                for _ in range(RUNS):
                    call()
                times[name][part].append((time.perf_counter() - started) / RUNS * 1000)
    return {
        name: {part: {"fastest": min(t), "median": float(np.median(t))} for part, t in parts.items()}
        for name, parts in times.items()
    }


def add_latencies(results: dict[str, Any], contenders: Mapping[str, Mapping[str, Callable[[], object]]]) -> None:
    """Time the contenders alternating and put each one's latencies into its results."""
    for name, latency in alternating_ms(contenders).items():
        results[name]["ms_per_photo_batch1"] = latency["photo"]["fastest"]
        results[name]["latency_ms"] = latency


def compare_flip_test(
    model_dir: Path,
    dataset: data.Dataset,
    split: dict[int, str],
    count: int,
    seed: int,
    threads: int = 2,
    file: str = MODEL_FILE,
) -> dict[str, Any]:
    """detector_eval's evaluation of `file` without and with the flip test on the same composite test photos, each
    at its own served threshold; then both latencies, alternating."""
    spec = ModelSpec.load(model_dir)
    photos = scenes.composite_test_split(dataset, split, count, seed)
    results = {
        mode: detector_eval.evaluate_detector(model_dir, dataset, split, count, seed, threads, file, photos, flip)
        for mode, flip in FLIP_MODES.items()
    }
    session = onnx_session(model_dir / file, threads=threads)
    image = photos[0].image
    add_latencies(results, {mode: timed_parts(session, spec, image, flip) for mode, flip in FLIP_MODES.items()})
    return results


def side_by_side(results: dict[str, Any], intro: str, alternating: str, cost: bool = False) -> list[str]:
    """Two contenders' results (the first two of `results`): latencies (`alternating` says what alternated; the
    ratio is the first's time over the second's, a speed-up, or with `cost` the second's over the first's), then
    every shift's mAP@0.5 and box recall and precision at each one's served threshold."""
    (a_name, a), (b_name, b) = list(results.items())[:2]
    over, under = (b_name, a_name) if cost else (a_name, b_name)
    lines = [
        intro,
        "",
        f"Milliseconds at batch 1 on 2 threads, {alternating} ({ROUNDS} rounds of {RUNS}; fastest round, median in "
        "brackets):",
        "",
        f"| | {a_name} | {b_name} | {over} / {under} (fastest) |",
        "|---|---|---|---|",
    ]
    for part, title in (("photo", "a 600x800 photo: preprocess, model, decode"), ("model", "the model alone")):
        x, y = a["latency_ms"][part], b["latency_ms"][part]
        ratio = y["fastest"] / x["fastest"] if cost else x["fastest"] / y["fastest"]
        lines.append(
            f"| {title} | {x['fastest']:.1f} ({x['median']:.1f}) | {y['fastest']:.1f} ({y['median']:.1f}) | "
            f"{ratio:.2f}x |"
        )
    return [
        *lines,
        "",
        "mAP@0.5, and box recall and precision at the served score threshold (model.json's), each on the same "
        "photos (detector_eval's shifts):",
        "",
        *per_shift(results, {"mAP50": "mAP@0.5", "box_recall": "box recall", "box_precision": "box precision"}),
    ]


def per_shift(results: dict[str, Any], metrics: dict[str, str]) -> list[str]:
    """A table of the first two contenders' `metrics` (key -> title) under every shift, side by side."""
    (a_name, a), (b_name, b) = list(results.items())[:2]
    header = "".join(f" {title} {a_name} | {b_name} |" for title in metrics.values())
    lines = [f"| photos |{header}", "|---|" + "---|---|" * len(metrics)]
    for name, x in a["shifts"].items():
        y = b["shifts"][name]
        lines.append(f"| {name} | " + " | ".join(f"{x[k]:.3f} | {y[k]:.3f}" for k in metrics) + " |")
    return lines


def flip_markdown(results: dict[str, Any], command: str) -> list[str]:
    plain, flipped = results["without"], results["flip test"]
    intro = (
        f"Model {plain['model']} ({plain['file']}); {plain['photos']} composite test photos (seed {plain['seed']}, "
        f"{plain['products']} products). Without the flip test at score threshold {plain['score_threshold']}, with "
        f"it (the photo and its mirror image in one model run, their maps averaged) at "
        f"{flipped['score_threshold']}: each mode's threshold from model.json, chosen on validation scenes."
    )
    lines = [f"`{command}`", "", *side_by_side(results, intro, "the two modes alternating", cost=True)]
    lines += [
        "",
        "At the served threshold: photos whose every product was found, and found products whose group is right:",
        "",
        *per_shift(results, {"photos_all_found": "all found", "group_right_of_found": "group right"}),
        "",
        "Clean photos at other score thresholds (box recall / box precision):",
        "",
        "| score threshold | without | flip test |",
        "|---|---|---|",
    ]
    for t, x in plain["clean_by_threshold"].items():
        y = flipped["clean_by_threshold"][t]
        lines.append(
            f"| {t} | {x['box_recall']:.3f} / {x['box_precision']:.3f} | "
            f"{y['box_recall']:.3f} / {y['box_precision']:.3f} |"
        )
    lines += ["", "AP@0.5 per group, clean:", "", "| group | boxes | without | flip test |", "|---|---|---|---|"]
    for g, ap in plain["shifts"]["clean"]["ap50"].items():
        lines.append(
            f"| {g} | {plain['shifts']['clean']['boxes'][g]} | {ap:.3f} | {flipped['shifts']['clean']['ap50'][g]:.3f} |"
        )
    return lines


def write_flip_report(results: dict[str, Any], command: str, report_dir: Path) -> Path:
    """flip-test.md (model.onnx) or flip-test-int8.md (model.int8.onnx), with its JSON beside it."""
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = "flip-test" if results["without"]["file"] == MODEL_FILE else "flip-test-int8"
    (report_dir / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    path = report_dir / f"{stem}.md"
    title = "# Detector: the flip test against the photo alone"
    path.write_text("\n".join([title, "", *flip_markdown(results, command)]) + "\n")
    return path
