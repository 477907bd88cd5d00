"""onnxruntime against Keras/TensorFlow for each served model that has a saved Keras model, batch 1 and 64.

For every models/<dir>/ (model.onnx + model.json) the Keras counterpart is looked up as
.cache/runs/<model name>/model.keras (what training writes); models without one are listed as such. Both run on
the same preprocessed catalogue images with the same number of CPU threads; the table gives the median time per
batch, the ratio Keras / onnxruntime, and the largest output difference (parity).

    python bench/onnx_vs_keras.py [--threads 1] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fashionsearch.model_contract import ModelSpec, preprocess  # noqa: E402
from fashionsearch.onnx_model import OnnxModel  # noqa: E402

BATCHES = (1, 64)


def keras_file(spec: ModelSpec) -> Path | None:
    # The run folder is named after the recipe that made the model (e.g. classifier-heads for the classifier).
    recipe = str(spec.extra.get("training", {}).get("recipe", spec.name))
    for candidate in (
        REPO_ROOT / ".cache" / "runs" / recipe / "model.keras",
        REPO_ROOT / ".cache" / "runs" / spec.name / "model.keras",
        REPO_ROOT / "reports" / spec.name / "model.keras",
    ):
        if candidate.is_file():
            return candidate
    return None


def catalogue_images(count: int) -> list[Image.Image]:
    folder = REPO_ROOT / "sample_catalogue" / "images"
    paths = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    images = [Image.open(p).convert("RGB") for p in paths]
    rng = np.random.default_rng(0)
    while len(images) < count:
        images.append(Image.fromarray(rng.integers(0, 256, size=(80, 60, 3), dtype=np.uint8)))
    return images


def median_ms(call, repeats: int) -> float:
    for _ in range(10):  # warm-up: graph tracing, allocations, caches
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both runtimes (as served: 1)")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    rows: list[tuple] = []
    missing: list[str] = []
    seen: dict[str, str] = {}
    images = catalogue_images(max(BATCHES))
    tf: Any = None
    for model_dir in sorted(p.parent for p in (REPO_ROOT / "models").glob("*/model.json")):
        spec = ModelSpec.load(model_dir)
        if spec.onnx_sha256 in seen:
            missing.append(
                f"{model_dir.name} ({spec.name}@{spec.version}): the same ONNX file as {seen[spec.onnx_sha256]}"
            )
            continue
        seen[spec.onnx_sha256] = model_dir.name
        source = keras_file(spec)
        if source is None:
            missing.append(f"{model_dir.name} ({spec.name}@{spec.version}): no saved Keras model under .cache/runs")
            continue
        if tf is None:
            import tensorflow  # noqa: PLC0415 - heavy, only when a Keras model exists

            tf = tensorflow

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras  # noqa: PLC0415

        import training.layers  # noqa: F401, PLC0415 - registers the custom layers the saved models use

        onnx = OnnxModel(model_dir, intra_op_threads=args.threads, inter_op_threads=1)
        model = keras.saving.load_model(source, compile=False)
        infer = tf.function(lambda x, m=model: m(x, training=False), reduce_retracing=True)
        names = list(onnx.output_names)
        for batch_size in BATCHES:
            batch = preprocess(images[:batch_size], spec.input)
            ort_out = onnx.run(batch)
            keras_out = infer(tf.constant(batch))
            keras_list = [np.asarray(t) for t in (keras_out if isinstance(keras_out, list | tuple) else [keras_out])]
            if isinstance(keras_out, dict):
                keras_list = [np.asarray(keras_out[k]) for k in sorted(keras_out)]
            ort_list = [ort_out[k] for k in names]
            try:
                diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ort_list, keras_list, strict=True))
            except ValueError:
                diff = float("nan")  # outputs in a different order or shape: timing still valid
            tensor = tf.constant(batch)
            ort_ms = median_ms(lambda b=batch, run=onnx.run: run(b), args.repeats)
            keras_ms = median_ms(lambda b=tensor, run=infer: run(b), args.repeats)
            rows.append((model_dir.name, f"{spec.name}@{spec.version}", batch_size, ort_ms, keras_ms, diff))
            print(f"  done {model_dir.name} batch {batch_size}", file=sys.stderr, flush=True)

    print(f"\nonnxruntime vs Keras/TensorFlow, {args.threads} CPU thread(s), median of {args.repeats} runs")
    print(f"{platform.machine()}, Python {platform.python_version()}\n")
    print(
        "| model dir         | model               | batch | onnxruntime ms | keras ms | keras / ort | max abs diff |"
    )
    print(
        "|-------------------|---------------------|-------|----------------|----------|-------------|--------------|"
    )
    for name, ident, batch_size, ort_ms, keras_ms, diff in rows:
        print(
            f"| {name:<17} | {ident:<19} | {batch_size:>5} | {ort_ms:>14.2f} | {keras_ms:>8.2f} |"
            f" {keras_ms / ort_ms:>10.1f}x | {diff:>12.2e} |"
        )
    for line in missing:
        print(f"| {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
