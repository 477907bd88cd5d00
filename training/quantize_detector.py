"""The detector's eight-bit variant (`python -m training quantize-detector`), with training/quantize.py's machinery.

1. Calibration: seeded synthesised scenes of training-split products (training/scenes.py `training_scenes`, the
   kind of photo the detector was trained on), MinMax ranges, QDQ, per-channel int8 weights, uint8 activations.
2. What stays float is chosen on composite scenes of validation-split products, clean and under the phone's random
   effects, among `PLANS`: the pyramid, tower and heads (the trunk alone in int8), or only the three output
   convolutions and what follows them; the plan whose worst loss against float (mAP@0.5, box recall and precision at
   the served threshold, either kind of photo) is least among those near the fastest at batch 1 on 2 threads (the
   plans timed in alternating rounds, the fastest round each: `time_plans`).
3. The gate (`GATE`, on the clean validation scenes): a variant that loses more is written but not listed in
   model.json.
   The test split is measured separately: `python -m training evaluate-detector models/detector --precision int8`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fashionsearch.model_contract import MODEL_FILE, ModelSpec
from fashionsearch.model_variants import Variant
from training import data, detector_compare, detector_eval, scenes
from training.inference import onnx_session
from training.quantize import MIN_SPEED_SHARE, Plan, downstream, int8_file, int8_variant, quantize, write_variants

log = logging.getLogger(__name__)

#: The recipe's head model (training/recipes/detector.py `build_head`): its nodes carry this name scope in the ONNX.
HEAD_SCOPE = "detector_head"
#: The most the int8 file may lose against float on the clean validation scenes (the acceptance rule for it).
GATE = {"mAP50": 0.01, "box_recall": 0.01, "box_precision": 0.01}


@dataclass(frozen=True)
class DetectorPlan:
    """`float_from`: "pyramid" keeps everything after the frozen trunk's taps in float (the head model: the trained
    stride-32 stage, the pyramid, the tower and the heads), "outputs" only the three
    1x1 output convolutions and their activations (the pyramid and the tower in int8 too)."""

    plan: Plan
    float_from: str


PLANS = (
    DetectorPlan(
        Plan("the frozen trunk in int8 (its trained stride-32 stage, pyramid, tower and heads in float)"), "pyramid"
    ),
    DetectorPlan(Plan("trunk, pyramid and tower in int8 (the output convolutions in float)"), "outputs"),
)


def trunk_taps(model: onnx.ModelProto) -> set[str]:
    """The frozen trunk's tensors the head model reads (its stride 8 and 16 features): the head is every node named in
    HEAD_SCOPE and everything computed from them (the exporter leaves some nodes without the scope)."""
    graph = model.graph
    scoped = {o for n in graph.node if HEAD_SCOPE in n.name for o in n.output}
    in_head = set(downstream(graph, scoped)) | {n.name for n in graph.node if HEAD_SCOPE in n.name}
    head = [n for n in graph.node if n.name in in_head]
    made_in_head = {o for n in head for o in n.output}
    constants = {t.name for t in graph.initializer}
    return {i for n in head for i in n.input if i and i not in made_in_head and i not in constants}


def output_convolutions_input(model: onnx.ModelProto) -> set[str]:
    """The tensors the last convolution before each graph output reads (the tower's output)."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    constants = {t.name for t in graph.initializer}
    ends = set()
    for output in graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type != "Conv":
            node = next((producer[i] for i in node.input if i in producer and i not in constants), None)
        if node is None:
            raise ValueError(f"no convolution before the output {output.name!r}")
        ends.add(node.input[0])
    return ends


def float_end(model: onnx.ModelProto, float_from: str) -> set[str]:
    return trunk_taps(model) if float_from == "pyramid" else output_convolutions_input(model)


def quantize_file(model_dir: Path, target: Path, calibration: np.ndarray, choice: DetectorPlan) -> None:
    """model.onnx quantized by `choice` into `target`, ranges from `calibration` (uint8 photos)."""
    spec = ModelSpec.load(model_dir)
    end = float_end(onnx.load(str(model_dir / MODEL_FILE)), choice.float_from)
    quantize(model_dir / MODEL_FILE, target, spec.input, calibration, choice.plan, end)


def calibration_scenes(dataset: data.Dataset, split: dict[int, str], spec: ModelSpec, count: int) -> np.ndarray:
    """`count` seeded training scenes at the model's input size (uint8), from training-split products."""
    pool = scenes.split_products(dataset, split, "train")
    return np.stack([s.image for s in scenes.training_scenes(pool, count, spec.input, seed=7)])


#: The photos a plan is chosen on: as they are, and under the phone's random effects (as users take them).
SHIFTS = ("clean", "random phone effects")


def choice_photos(dataset: data.Dataset, split: dict[int, str], count: int) -> dict[str, list[scenes.Scene]]:
    """Composite scenes of validation-split products (tune-detector's seed), clean and with phone effects."""
    photos = scenes.test_scenes(scenes.split_products(dataset, split, "val"), count, scenes.TEST_SEED + 1)
    shift = dict(detector_eval.SHIFTS)["random phone effects"]
    rng = np.random.default_rng(scenes.TEST_SEED + 1)
    shifted = [scenes.Scene(shift(p.image, rng), p.boxes, p.groups, p.ids) for p in photos]
    return {"clean": photos, "random phone effects": shifted}


def measure(path: Path, spec: ModelSpec, photos: dict[str, list[scenes.Scene]], threads: int) -> dict[str, Any]:
    """Per shift mAP@0.5, box recall and precision at the served threshold."""
    session = onnx_session(path, threads=threads)
    result: dict[str, Any] = {}
    for name, shifted in photos.items():
        scored = detector_eval.score(spec, shifted, detector_eval.detect(session, spec, [p.image for p in shifted]))
        result[name] = {k: scored[k] for k in GATE}
    return result


def time_plans(files: dict[str, Path], spec: ModelSpec, image: np.ndarray, threads: int) -> dict[str, float]:
    """plan -> ms per photo at batch 1 (preprocess, model, decode), the fastest of detector_compare's alternating
    rounds: every plan meets the same machine load, so a busy moment on a shared machine does not decide the plan."""
    contenders = {
        name: {"photo": detector_compare.timed_parts(onnx_session(path, threads=threads), spec, image, False)["photo"]}
        for name, path in files.items()
    }
    return {name: t["photo"]["fastest"] for name, t in detector_compare.alternating_ms(contenders).items()}


def list_int8(model_dir: Path, parity: dict[str, Any]) -> None:
    """model.json's variants: model.int8.onnx (the detector has no other variant)."""
    spec = ModelSpec.load(model_dir)
    write_variants(model_dir, [int8_variant(model_dir, Variant(MODEL_FILE, spec.onnx_sha256), parity)])


def drops(reference: dict[str, Any], other: dict[str, Any], shift: str = "clean") -> dict[str, float]:
    return {k: reference[shift][k] - other[shift][k] for k in GATE}


def worst_drop(reference: dict[str, Any], other: dict[str, Any]) -> float:
    """The largest loss against float over the metrics and the shifts measured."""
    return max(d for shift in SHIFTS for d in drops(reference, other, shift).values())


def gate_problems(reference: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Where int8 loses more than GATE on the clean photos (empty: it passes)."""
    return [f"{k} {d:.4f} below float" for k, d in drops(reference, other).items() if d > GATE[k]]


def run(
    model_dir: Path,
    dataset: data.Dataset,
    split: dict[int, str],
    *,
    calibration_size: int = 300,
    choose_photos: int = 200,
    threads: int = 2,
    plans: Sequence[DetectorPlan] = PLANS,
) -> dict[str, Any]:
    """Steps 1-3 of the module docstring: writes model.int8.onnx and, when it passes GATE, its variant in
    model.json; returns what was measured."""
    spec = ModelSpec.load(model_dir)
    calibration = calibration_scenes(dataset, split, spec, calibration_size)
    photos = choice_photos(dataset, split, choose_photos)
    reference = measure(model_dir / MODEL_FILE, spec, photos, threads)
    tried: dict[str, Any] = {}
    target = model_dir / int8_file(MODEL_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        for k, choice in enumerate(plans):
            path = Path(tmp) / f"plan{k}.onnx"
            quantize_file(model_dir, path, calibration, choice)
            tried[choice.plan.name] = measure(path, spec, photos, threads) | {"file": path}
        some = photos["clean"][0].image
        for name, ms in time_plans({n: t["file"] for n, t in tried.items()}, spec, some, threads).items():
            tried[name]["ms_per_photo_batch1"] = ms
            log.info("plan %r: %s", name, tried[name])
        fastest = min(t["ms_per_photo_batch1"] for t in tried.values())
        fast = [p for p in plans if fastest >= MIN_SPEED_SHARE * tried[p.plan.name]["ms_per_photo_batch1"]]
        best = min(fast, key=lambda p: worst_drop(reference, tried[p.plan.name]))
        shutil.move(tried[best.plan.name]["file"], target)  # /tmp may be another filesystem
    for t in tried.values():
        del t["file"]
    chosen = tried[best.plan.name]
    problems = gate_problems(reference, chosen)
    parity = {
        "split": "val",
        "photos": choose_photos,
        "seed": scenes.TEST_SEED + 1,
        **{
            name: {shift: {k: round(m[shift][k], 4) for k in GATE} for shift in SHIFTS}
            for name, m in (("float", reference), ("int8", chosen))
        },
        "plan": best.plan.name,
        "calibration_scenes": calibration_size,
    }
    if problems:  # a variant that fails the gate stays on disk, unlisted
        write_variants(model_dir, [])
    else:
        list_int8(model_dir, parity)
    return {
        "float": reference,
        "plans": tried,
        "plan": best.plan.name,
        "gate_problems": problems,
        "listed": not problems,
    }


def compare_on_test(
    model_dir: Path, dataset: data.Dataset, split: dict[int, str], count: int, seed: int, threads: int = 2
) -> dict[str, Any]:
    """detector_eval's evaluation of model.onnx and model.int8.onnx on the same composite test photos (in the mode
    model.json serves, with the flip test or without); the latencies measured again at the end, the two files
    alternating (detector_compare.alternating_ms): the whole photo (preprocess, model, decode) and the model alone."""
    spec = ModelSpec.load(model_dir)
    photos = scenes.composite_test_split(dataset, split, count, seed)
    files = {"float": MODEL_FILE, "int8": int8_file(MODEL_FILE)}
    results = {
        name: detector_eval.evaluate_detector(model_dir, dataset, split, count, seed, threads, file, photos)
        for name, file in files.items()
    }
    contenders = {
        name: detector_compare.timed_parts(
            onnx_session(model_dir / file, threads=threads), spec, photos[0].image, results[name]["flip_test"]
        )
        for name, file in files.items()
    }
    detector_compare.add_latencies(results, contenders)
    return results


def markdown(results: dict[str, Any], command: str) -> list[str]:
    """Float and int8 side by side: every shift's mAP@0.5 and box recall and precision at the served threshold."""
    f, q = results["float"], results["int8"]
    intro = (
        f"Model {f['model']}; {f['photos']} composite test photos (seed {f['seed']}, {f['products']} products), flip "
        f"test {'on' if f.get('flip_test') else 'off'}. ONNX {f['onnx_mb']:.1f} MB float, {q['onnx_mb']:.1f} MB int8."
    )
    return [f"`{command}`", "", *detector_compare.side_by_side(results, intro, "the two files alternating")]


def write_report(results: dict[str, Any], command: str, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "int8.json").write_text(json.dumps(results, indent=1) + "\n")
    path = report_dir / "int8.md"
    path.write_text("\n".join(["# Detector: int8 against float", "", *markdown(results, command)]) + "\n")
    return path
