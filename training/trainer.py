"""Keras training loop shared by every recipe: callbacks, history saved as JSON each epoch, timing."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.keras"
HISTORY_FILE = "history.json"
#: Share of a ProgressSchedule spent warming up to the peak learning rate (every recipe that uses one).
WARMUP = 0.03


class JsonHistory(keras.callbacks.Callback):
    """Writes every epoch's logs (and the learning rate) to a JSON file, so curves survive a crash and the
    report can plot them."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.history: dict[str, list[float]] = {}
        self.started = time.monotonic()
        self.batches = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches += 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["seconds"] = time.monotonic() - self.started
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.path.write_text(json.dumps(self.history, indent=1))


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the batch that exceeds `seconds` (the epoch still ends with its validation)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = time.monotonic()
        self.exhausted = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if time.monotonic() - self.started > self.seconds:
            self.exhausted = True
            self.model.stop_training = True


class ProgressSchedule(keras.callbacks.Callback):
    """Warm-up + cosine learning rate over progress = max(step / total_steps, elapsed / budget); stops at 1.

    `offset_steps` / `offset_seconds` continue a resumed run where it stopped.
    """

    def __init__(
        self,
        peak: float,
        total_steps: int,
        budget_s: float,
        warmup: float,
        offset_steps: int = 0,
        offset_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.peak, self.total_steps, self.budget_s, self.warmup = peak, max(1, total_steps), budget_s, warmup
        self.steps = offset_steps
        self.offset_seconds = offset_seconds
        self.started = time.monotonic()
        self.progress = 0.0

    def elapsed(self) -> float:
        return self.offset_seconds + time.monotonic() - self.started

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.progress = min(1.0, max(self.steps / self.total_steps, self.elapsed() / self.budget_s))
        if self.progress < self.warmup:
            lr = self.peak * (0.1 + 0.9 * self.progress / self.warmup)
        else:
            p = (self.progress - self.warmup) / (1.0 - self.warmup)
            lr = self.peak * (0.005 + 0.995 * 0.5 * (1.0 + math.cos(math.pi * p)))
        self.model.optimizer.learning_rate.assign(lr)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps += 1
        if self.progress >= 1.0:
            self.model.stop_training = True


@dataclass
class FitResult:
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int  # 1-based
    seconds: float
    batches: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "seconds": round(self.seconds, 1),
            "batches": self.batches,
            "settings": self.settings,
            "history": {k: [round(v, 6) for v in vals] for k, vals in self.history.items()},
        }


def fit(
    model: keras.Model,
    train_ds: Any,
    val_ds: Any,
    run_dir: Path,
    epochs: int,
    monitor: str = "val_loss",
    mode: str = "min",
    lr_patience: int = 3,
    stop_patience: int = 8,
    verbose: int = 2,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    max_seconds: float | None = None,
    settings: dict[str, Any] | None = None,
) -> FitResult:
    """model.fit with ReduceLROnPlateau, EarlyStopping (best weights restored) and ModelCheckpoint (best only)
    on `monitor`; the history goes to run_dir/history.json after every epoch."""
    run_dir.mkdir(parents=True, exist_ok=True)
    history_cb = JsonHistory(run_dir / HISTORY_FILE)
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5, patience=lr_patience, verbose=1),
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=stop_patience, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / CHECKPOINT_FILE), monitor=monitor, mode=mode, save_best_only=True, verbose=0
        ),
        history_cb,
    ]
    budget = TimeBudget(max_seconds) if max_seconds else None
    if budget is not None:
        callbacks.append(budget)
    started = time.monotonic()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    seconds = time.monotonic() - started
    hist = history_cb.history
    values = hist.get(monitor, [])
    if values:
        best = (min if mode == "min" else max)(range(len(values)), key=values.__getitem__) + 1
    else:
        best = len(hist.get("loss", []))
    log.info("trained %d epochs in %.0f s; best %s at epoch %d", len(hist.get("loss", [])), seconds, monitor, best)
    return FitResult(
        history=hist,
        epochs_run=len(hist.get("loss", [])),
        best_epoch=best,
        seconds=seconds,
        batches=history_cb.batches,
        settings=dict(settings or {})
        | {
            "epochs": epochs,
            "monitor": monitor,
            "steps_per_epoch": steps_per_epoch,
            "max_seconds": max_seconds,
            "stopped_by_time_budget": bool(budget and budget.exhausted),
        },
    )
