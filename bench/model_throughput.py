"""Throughput and size of every exported model under models/: images/s at batch 64 with onnxruntime on the CPU.

    python bench/model_throughput.py [--models models] [--threads 2] [--seconds 5] [--batch 64]

Prints one Markdown table row per model folder (model.onnx + model.json) with its ONNX size; needs no
TensorFlow. The budget of the production models is >= 500 images/s and <= 20 MB (issue 20).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnxruntime as ort

from fashionsearch.model_contract import MODEL_FILE, ModelSpec
from training.inference import BUDGET_IMAGES_PER_S, BUDGET_ONNX_MB, measure_throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parent.parent / "models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per model")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    folders = sorted(p.parent for p in args.models.glob(f"*/{MODEL_FILE}"))
    if not folders:
        print(f"no models under {args.models}", file=sys.stderr)
        return 1
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, batch {args.batch}")
    print()
    print("| model | input | images/s | ONNX MB | within budget (>= 500/s, <= 20 MB) |")
    print("| --- | --- | --- | --- | --- |")
    for folder in folders:
        spec = ModelSpec.load(folder)
        rate, mb = measure_throughput(folder, args.threads, args.seconds, args.batch)
        ok = "yes" if rate >= BUDGET_IMAGES_PER_S and mb <= BUDGET_ONNX_MB else "no"
        print(f"| {folder.name} | {spec.input.height}x{spec.input.width} | {rate:,.0f} | {mb:.2f} | {ok} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
