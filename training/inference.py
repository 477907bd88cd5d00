"""An exported model in onnxruntime on the CPU, as evaluation, the parity gate and the throughput bench run it
(no TensorFlow needed).

`measure_throughput` is what `bench/model_throughput.py` prints and `training.production_report` puts in the
reports, against the production models' budget.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from fashionsearch.model_contract import MODEL_FILE, ModelSpec

# The production models' budget (a model at batch 64 on 2 threads, and its ONNX file).
BUDGET_IMAGES_PER_S = 500.0  # issue 20: the pretrained trunk at >= 500 images/s at batch 64 on 2 threads
BUDGET_ONNX_MB = 20.0


def onnx_session(path: str | Path, threads: int = 2) -> Any:
    """A CPU session with `threads` intra-op threads and one inter-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure_throughput(
    model_dir: Path, threads: int, seconds: float, batch: int, file: str = MODEL_FILE
) -> tuple[float, float]:
    """(images per second, ONNX megabytes) for one model folder's `file` (model.onnx or a variant beside it, such as
    model.int8.onnx), on random input of the model's size."""
    spec = ModelSpec.load(model_dir)
    rate = images_per_second(model_dir / file, spec.input.height, spec.input.width, threads, seconds, batch)
    return rate, (model_dir / file).stat().st_size / 1e6


def images_per_second_alternating(
    onnx_files: Mapping[str, Path],
    height: int,
    width: int,
    threads: int,
    batch: int = 64,
    rounds: int = 5,
    calls: int = 8,
) -> dict[str, float]:
    """name -> images per second of each ONNX file on the same random (batch, height, width, 3) input, the files
    timed in turn within each round (`calls` batches each) and each file's fastest round kept: every file meets the
    same machine load, so a busy moment on a shared machine does not favour one of them."""
    x = np.random.default_rng(0).random((batch, height, width, 3), dtype=np.float32)
    runs = {}
    for name, path in onnx_files.items():
        session = onnx_session(path, threads)
        feed = {session.get_inputs()[0].name: x}
        session.run(None, feed)  # the first call allocates: not timed
        runs[name] = partial(session.run, None, feed)
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            for _ in range(calls):
                run()
            best[name] = max(best[name], calls * batch / (time.perf_counter() - started))
    return best


def images_per_second(onnx_file: Path, height: int, width: int, threads: int, seconds: float, batch: int) -> float:
    """Images per second of an image model's ONNX file on random (batch, height, width, 3) input."""
    session = onnx_session(onnx_file, threads)
    rng = np.random.default_rng(0)
    x = rng.random((batch, height, width, 3), dtype=np.float32)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(5):
        session.run(None, feed)
    # Best of a few windows: the CPU is shared, the fastest window is the least disturbed one.
    best = 0.0
    windows = 3
    for _ in range(windows):
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / windows:
            session.run(None, feed)
            n += batch
        best = max(best, n / (time.perf_counter() - started))
    return best
