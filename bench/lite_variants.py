"""Serving speed of the EfficientNet-Lite trunks (Lite0, Lite1, Lite2) at several input sizes, against the budget.

    python bench/lite_variants.py [--variants lite0,lite1,lite2] [--sizes 128x96,144x108,160x120]
        [--threads 2] [--seconds 6] [--batch 64] [--int8]

Which trunk and input size a recipe can afford to serve (issue 20: >= 500 images/s at batch 64 on 2 threads,
each ONNX file <= 20 MB) is a question of architecture, not of training: each trunk is built by `training.lite`
with random weights (speed and size do not depend on them), with the pooled features and one 98-class head
like the classifier's articleType, exported through tf2onnx as the served models are, and timed with
onnxruntime on random input. The served models/classifier is measured in the same run for reference (its seven
heads and the hierarchy decoding cost little beside the trunk). Needs TensorFlow (requirements/training.txt).

`--int8` adds each trunk statically quantized as the served int8 files are (`training.quantize`: QDQ, per-channel
int8 weights, uint8 activations; calibrated on random photos, which sets the scales but not the speed) and the served
classifier's int8 file: what a larger trunk costs once eight-bit inference pays for it (issue 30, step 3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from fashionsearch.model_contract import MODEL_FILE, InputSpec  # noqa: E402
from training import lite  # noqa: E402
from training.export import keras_to_onnx  # noqa: E402
from training.inference import BUDGET_IMAGES_PER_S, BUDGET_ONNX_MB, images_per_second, measure_throughput  # noqa: E402
from training.quantize import Plan, int8_file, quantize  # noqa: E402

ARTICLE_TYPES = 98  # the classifier's articleType head
#: Every operator onnxruntime can quantize, the head included (one small Dense: its precision does not move the speed).
INT8_PLAN = Plan("every operator", float_heads=False)


def trunk_model(variant: str, height: int, width: int) -> keras.Model:
    """Scaled RGB -> a Lite trunk -> pooled features -> one softmax head, all blocks in one model."""
    early, late = lite.build_trunk(height, width, split=len(lite.blocks(variant)), variant=variant)
    inputs = keras.Input((height, width, 3), name="image")
    outputs = keras.layers.Dense(ARTICLE_TYPES, activation="softmax", name="articleType")(late(early(inputs)))
    return keras.Model(inputs, outputs, name=f"efficientnet_{variant}")


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--sizes wants HEIGHTxWIDTH values such as 144x108, got {text!r}") from None
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="lite0,lite1,lite2")
    parser.add_argument("--sizes", default="128x96,144x108,160x120")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--int8", action="store_true", help="each trunk statically quantized too")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(lite.VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(lite.VARIANTS)}")
    sizes = [parse_size(s) for s in args.sizes.split(",")]

    rows: list[tuple[str, str, str, float, float]] = []
    served = REPO_ROOT / "models" / "classifier"
    if (served / "model.json").is_file():
        rate, mb = measure_throughput(served, args.threads, args.seconds, args.batch)
        rows.append(("models/classifier (served)", "", "", mb, rate))
        if args.int8 and (served / int8_file(MODEL_FILE)).is_file():
            rate, mb = measure_throughput(served, args.threads, args.seconds, args.batch, int8_file(MODEL_FILE))
            rows.append(("models/classifier (served, int8)", "", "", mb, rate))
    calibration = np.random.default_rng(0).integers(0, 256, (64, 80, 60, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            for height, width in sizes:
                model = trunk_model(variant, height, width)
                path = Path(tmp) / f"{variant}-{height}x{width}.onnx"
                spec = InputSpec(name="image", height=height, width=width, **lite.LITE_SCALING)
                keras_to_onnx(model, spec, path)
                blocks = str(len(lite.blocks(variant)))
                files = [(variant, path)]
                if args.int8:
                    quantized = path.with_name(int8_file(path.name))
                    quantize(path, quantized, spec, calibration, INT8_PLAN, set())
                    files.append((f"{variant} int8", quantized))
                for name, file in files:
                    rate = images_per_second(file, height, width, args.threads, args.seconds, args.batch)
                    rows.append((name, f"{height}x{width}", blocks, file.stat().st_size / 1e6, rate))
                keras.backend.clear_session()

    load = os.getloadavg()[0]
    print(
        f"\nimages/s at batch {args.batch} on {args.threads} onnxruntime threads (best of 3 windows of "
        f"{args.seconds / 3:.1f} s; load average {load:.1f} at the end); budget >= {BUDGET_IMAGES_PER_S:.0f} "
        f"images/s and <= {BUDGET_ONNX_MB:.0f} MB per file\n"
    )
    print("| trunk | input | blocks | ONNX MB | images/s | within the budget |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, size, count, mb, rate in rows:
        fits = "yes" if rate >= BUDGET_IMAGES_PER_S and mb <= BUDGET_ONNX_MB else "no"
        print(f"| {name} | {size} | {count} | {mb:.1f} | {rate:,.0f} | {fits} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
