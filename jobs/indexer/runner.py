"""The pipeline: manifest rows -> image bytes + content hash -> skip unchanged -> batched writes -> prune -> finish.

Memory stays bounded: rows are read a chunk at a time, and at most ``inflight`` write batches are pending.  The
only per-item state is the store's (id, hash) map (24 bytes per stored item, see ``digest``) and the set of ids
this run added (for duplicate detection).  Because every written point carries its content hash, the store is the
checkpoint: a run killed at any moment is resumed by running it again, which skips what was already written.
"""

from __future__ import annotations

import csv
import itertools
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from fashionsearch import metrics
from fashionsearch.catalogue import parse_id
from fashionsearch.errors import StoreError
from jobs.indexer.digest import StoredDigests, content_hash
from jobs.indexer.fetch import FetchError, ImageFetcher, is_url
from jobs.indexer.manifest import BadRow, Manifest, Row, in_shard, shard_of
from jobs.indexer.targets import JobError, Target, WriteItem

logger = logging.getLogger(__name__)


class Interrupted(Exception):
    """SIGTERM or SIGINT: stop after the batches in flight, without pruning or switching."""


@dataclass(frozen=True)
class Options:
    batch_size: int = 64
    # Four batches in flight keep a one-thread embedder busy while earlier batches are being stored.
    inflight: int = 4
    fetch_threads: int = 8
    prune: bool = False
    shard: tuple[int, int] = (0, 1)
    max_reject_fraction: float = 0.05


@dataclass
class Summary:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    elapsed_s: float = 0.0
    complete: bool = False
    interrupted: bool = False
    error: str = ""
    target: str = ""
    embedder: str = ""
    notes: list[str] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=dict)

    @property
    def handled(self) -> int:
        return self.added + self.updated + self.unchanged + self.rejected

    @property
    def items_per_s(self) -> float:
        return self.handled / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def embedded_per_s(self) -> float:
        return (self.added + self.updated) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "rejected": self.rejected,
            "elapsed_s": round(self.elapsed_s, 3),
            "items_per_s": round(self.items_per_s, 1),
            "embedded_per_s": round(self.embedded_per_s, 1),
            "complete": self.complete,
            "interrupted": self.interrupted,
            "error": self.error,
            "target": self.target,
            "embedder": self.embedder,
            "notes": self.notes,
            "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()},
        }

    def render(self, rejects_path: Path | None) -> str:
        lines = [f"indexer summary: {self.target} (embedder {self.embedder or '?'})"]
        for label, value in (
            ("added", self.added),
            ("updated", self.updated),
            ("unchanged", self.unchanged),
            ("deleted", self.deleted),
        ):
            lines.append(f"  {label:<10} {value}")
        where = f"  (reasons in {rejects_path})" if self.rejected and rejects_path else ""
        lines.append(f"  {'rejected':<10} {self.rejected}{where}")
        lines.append(f"  {'elapsed':<10} {self.elapsed_s:.2f} s")
        lines.append(f"  {'items/s':<10} {self.items_per_s:.0f} handled, {self.embedded_per_s:.0f} embedded")
        if self.stage_s:
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in self.stage_s.items())
            lines.append(f"  {'time in':<10} {parts}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.interrupted:
            lines.append("  INTERRUPTED: run the same command again to resume")
        if self.error:
            lines.append(f"  FAILED: {self.error} (run the same command again to resume)")
        return "\n".join(lines)


class RejectWriter:
    """CSV of the items that were not indexed, with the reason: line, id, image, reason."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._writer: Any = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A rejected row's id or image may hold what UTF-8 cannot carry (the very reason it was rejected).
            self._file = open(path, "w", encoding="utf-8", errors="backslashreplace", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["line", "id", "image", "reason"])
            self._file.flush()

    def write(self, line: int, item_id: Any, image: str, reason: str) -> None:
        logger.debug("rejected line %s id %s: %s", line, item_id, reason)
        if self._writer is not None:
            self._writer.writerow([line, item_id, image, reason])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressMetrics:
    """The run's counts as Prometheus counters (fashionsearch_indexer_items_total by outcome), for --metrics-port."""

    OUTCOMES = ("added", "updated", "unchanged", "rejected", "deleted")

    def __init__(self, expected: int | None) -> None:
        self._counted = dict.fromkeys(self.OUTCOMES, 0)
        self._counters = {outcome: metrics.INDEXER_ITEMS.labels(outcome) for outcome in self.OUTCOMES}
        if expected:
            metrics.INDEXER_ITEMS_EXPECTED.set(expected)

    def sync(self, s: Summary) -> None:
        for outcome, counted in self._counted.items():
            now = getattr(s, outcome)
            if now > counted:
                self._counters[outcome].inc(now - counted)
                self._counted[outcome] = now


class Progress:
    """One status line on stderr: a bar with a percentage when the row count is known, items/s, the counts; and
    the same counts as metrics when given a ProgressMetrics."""

    def __init__(
        self,
        total: int | None,
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        every_s: float | None = None,
        metrics: ProgressMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._stream = stream or sys.stderr
        self._total = total
        self._enabled = enabled
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._interval = every_s if every_s is not None else (0.2 if self._tty else 10.0)
        self._last = 0.0
        self._started = time.perf_counter()
        self._drawn = False

    def update(self, s: Summary, *, force: bool = False) -> None:
        if self._metrics is not None:
            self._metrics.sync(s)
        if not self._enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        done = s.handled
        rate = done / elapsed
        if self._total:
            frac = min(done / self._total, 1.0)
            filled = int(frac * 24)
            head = f"[{'#' * filled}{'.' * (24 - filled)}] {frac:6.1%} {done}/{self._total}"
        else:
            head = f"{done} rows"
        text = f"{head}  {rate:,.0f} items/s  +{s.added} ~{s.updated} ={s.unchanged} x{s.rejected}  {elapsed:,.0f}s"
        if self._tty:
            self._stream.write("\r" + text.ljust(100))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._enabled and self._drawn and self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class StopRequest:
    """Set by SIGTERM/SIGINT; the pipeline checks it at safe points (between chunks and batches), so the batches in
    flight finish and are counted, and nothing is switched or pruned."""

    def __init__(self) -> None:
        self.reason = ""

    def handle(self, signum: int, frame: Any) -> None:
        self.reason = signal.Signals(signum).name

    def check(self) -> None:
        if self.reason:
            raise Interrupted(self.reason)


def run(
    manifest: Manifest,
    target: Target,
    fetcher: ImageFetcher,
    options: Options,
    *,
    rejects_path: Path | None,
    progress: Progress | None = None,
) -> Summary:
    """Index the manifest into the target; never raises for per-item problems, which become rejects."""
    summary = Summary()
    started = time.perf_counter()
    rejects = RejectWriter(rejects_path)
    progress = progress or Progress(None, enabled=False)
    stop = StopRequest()
    previous_handlers = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous_handlers[sig] = signal.signal(sig, stop.handle)
        except ValueError:  # not the main thread (tests calling run() from a worker)
            pass
    try:
        summary.embedder = target.prepare()
        summary.target = target.describe()
        t0 = time.perf_counter()
        stored = StoredDigests(target.digests())
        summary.stage_s["scan store"] = time.perf_counter() - t0
        logger.info("%s holds %d items", summary.target, len(stored))
        stop.check()
        _index_rows(manifest, target, fetcher, options, stored, summary, rejects, progress, stop)
        total_rows = summary.handled
        too_many = total_rows > 0 and summary.rejected / total_rows > options.max_reject_fraction
        if options.prune:
            index, count = options.shard
            gone = [i for i in stored.unseen_ids() if shard_of(i, count) == index]
            t0 = time.perf_counter()
            for chunk in _chunks(gone, 1000):
                stop.check()
                summary.deleted += target.delete(chunk)
            summary.stage_s["prune"] = time.perf_counter() - t0
        if too_many:
            summary.notes.append(
                f"{summary.rejected} of {total_rows} rows rejected (over {options.max_reject_fraction:.0%})"
            )
        stop.check()
        summary.notes.extend(target.finish(complete=not too_many))
        summary.complete = True
    except Interrupted as exc:
        summary.interrupted = True
        summary.error = f"interrupted by {exc}"
    except (JobError, StoreError, OSError, ValueError) as exc:
        summary.error = str(exc)
        logger.error("indexer failed: %s", exc)
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        rejects.close()
        summary.elapsed_s = time.perf_counter() - started
        summary.stage_s.update(target.times.seconds)
        progress.update(summary, force=True)
        progress.close()
    return summary


def _index_rows(
    manifest: Manifest,
    target: Target,
    fetcher: ImageFetcher,
    options: Options,
    stored: StoredDigests,
    summary: Summary,
    rejects: RejectWriter,
    progress: Progress,
    stop: StopRequest,
) -> None:
    embedder = summary.embedder
    added_ids: set[int] = set()
    pending: deque[tuple[Future[list[str | None]], list[WriteItem], list[bool]]] = deque()
    batch: list[WriteItem] = []
    batch_is_update: list[bool] = []
    read_s = 0.0

    def load(row: Row) -> tuple[str, bytes] | FetchError:
        try:
            data = fetcher.fetch(row.image)
        except FetchError as exc:
            return exc
        return content_hash(row, data, embedder), data

    def settle(entry: tuple[Future[list[str | None]], list[WriteItem], list[bool]]) -> None:
        future, items, is_update = entry
        errors = future.result()
        for item, update, error in zip(items, is_update, errors, strict=True):
            if error is None:
                if update:
                    summary.updated += 1
                else:
                    summary.added += 1
            else:
                summary.rejected += 1
                rejects.write(item.row.line, item.row.id, item.row.image, error)

    def flush(pool: ThreadPoolExecutor) -> None:
        nonlocal batch, batch_is_update
        if not batch:
            return
        pending.append((pool.submit(target.write, batch), batch, batch_is_update))
        batch, batch_is_update = [], []
        while len(pending) >= options.inflight or (pending and pending[0][0].done()):
            settle(pending.popleft())
            progress.update(summary)

    rows = in_shard(manifest.rows(), *options.shard)
    threads = max(1, options.fetch_threads)
    with (
        ThreadPoolExecutor(threads, thread_name_prefix="fetch") as fetch_pool,
        ThreadPoolExecutor(max(1, options.inflight), thread_name_prefix="write") as write_pool,
    ):
        try:
            for chunk in _chunks(rows, max(options.batch_size, 256)):
                stop.check()
                good: list[tuple[Row, int]] = []
                positions = stored.positions([r.id for r in chunk if isinstance(r, Row)])
                it_pos = iter(positions)
                for row in chunk:
                    if isinstance(row, BadRow):
                        summary.rejected += 1
                        rejects.write(row.line, row.raw_id, row.image, row.reason)
                        try:  # still listed in the manifest: not pruned
                            pos = stored.positions([parse_id(row.raw_id)])[0]
                            if pos >= 0:
                                stored.mark_seen(int(pos))
                        except ValueError:
                            pass
                        continue
                    pos = int(next(it_pos))
                    if (pos >= 0 and stored.was_seen(pos)) or row.id in added_ids:
                        summary.rejected += 1
                        rejects.write(row.line, row.id, row.image, f"duplicate id {row.id}: listed earlier too")
                        continue
                    if pos >= 0:
                        stored.mark_seen(pos)
                    else:
                        added_ids.add(row.id)
                    good.append((row, pos))
                t0 = time.perf_counter()
                # Local files are read inline (a page-cache read is cheaper than a thread hand-off); downloads
                # wait on the network, so they go to the thread pool.
                remote = threads > 1 and any(is_url(r.image) for r, _ in good)
                loaded = list(fetch_pool.map(load, [r for r, _ in good])) if remote else [load(r) for r, _ in good]
                read_s += time.perf_counter() - t0
                for (row, pos), result in zip(good, loaded, strict=True):
                    if isinstance(result, FetchError):
                        summary.rejected += 1
                        rejects.write(row.line, row.id, row.image, str(result))
                        continue
                    digest, data = result
                    if stored.matches(pos, digest):
                        summary.unchanged += 1
                        continue
                    batch.append(WriteItem(row=row, image=data, content_hash=digest))
                    batch_is_update.append(pos >= 0)
                    if len(batch) >= options.batch_size:
                        flush(write_pool)
                        stop.check()
                progress.update(summary)
            flush(write_pool)
            while pending:
                settle(pending.popleft())
                progress.update(summary)
        finally:
            summary.stage_s["read+hash"] = read_s
            # On an error, let the batches in flight finish (they are correct writes) before leaving.
            while pending:
                entry = pending.popleft()
                try:
                    settle(entry)
                except Exception:  # the first error is the one reported
                    logger.debug("a pending batch failed too", exc_info=True)
