"""The indexer pipeline against an in-memory fake target: incremental runs, prune, rejects, shards, summary."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from jobs.indexer.fetch import ImageFetcher
from jobs.indexer.manifest import Manifest
from jobs.indexer.runner import Options, Progress, Summary, run
from testkit.indexer_fakes import JPEG, FakeTarget, fake_catalogue


def _run(manifest: Manifest, target: FakeTarget, tmp_path: Path, **options: object) -> Summary:
    return run(
        manifest,
        target,
        ImageFetcher(root=manifest.image_root),
        Options(batch_size=4, inflight=2, fetch_threads=2, **options),  # type: ignore[arg-type]
        rejects_path=tmp_path / "rejects.csv",
    )


def _rejects(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "rejects.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_first_run_then_unchanged_then_changed_then_prune(tmp_path: Path) -> None:
    target = FakeTarget()
    manifest = fake_catalogue(tmp_path, range(1, 11))
    first = _run(manifest, target, tmp_path)
    assert (first.added, first.updated, first.unchanged, first.rejected, first.complete) == (10, 0, 0, 0, True)
    assert sorted(target.points) == list(range(1, 11)) and all(len(w) <= 4 for w in target.writes)

    writes_before = len(target.writes)
    again = _run(manifest, target, tmp_path)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 10)
    assert len(target.writes) == writes_before  # nothing embedded

    (tmp_path / "img" / "3.jpg").write_bytes(JPEG + b"new photo")
    changed = _run(fake_catalogue(tmp_path, range(1, 13), names={5: "renamed"}), target, tmp_path)
    assert (changed.added, changed.updated, changed.unchanged) == (2, 2, 8)
    assert target.points[5][1] == "renamed"

    pruned = _run(fake_catalogue(tmp_path, range(3, 13), names={5: "renamed"}), target, tmp_path, prune=True)
    assert (pruned.deleted, pruned.unchanged) == (2, 10)
    assert sorted(target.points) == list(range(3, 13))
    assert target.finished == [True] * 4


def test_a_new_embedder_changes_every_hash(tmp_path: Path) -> None:
    target = FakeTarget()
    manifest = fake_catalogue(tmp_path, range(1, 6))
    _run(manifest, target, tmp_path)
    target.embedder = "emb@2"
    assert _run(manifest, target, tmp_path).updated == 5


def test_rejects_are_written_with_reasons_and_the_rest_continue(tmp_path: Path) -> None:
    manifest = fake_catalogue(tmp_path, range(1, 8))
    (tmp_path / "img" / "2.jpg").unlink()
    (tmp_path / "img" / "3.jpg").write_bytes(b"plain text")
    (tmp_path / "img" / "4.jpg").write_bytes(JPEG + b"REFUSE")
    with open(manifest.path, "a", encoding="utf-8") as f:
        f.write("{broken\n")
        f.write(json.dumps({"id": 5, "image": "img/5.jpg"}) + "\n")  # duplicate id
    target = FakeTarget()
    summary = _run(manifest, target, tmp_path)
    assert (summary.added, summary.rejected, summary.complete) == (4, 5, True)
    reasons = {row["id"] or row["line"]: row["reason"] for row in _rejects(tmp_path)}
    assert reasons["2"].startswith("missing file")
    assert reasons["3"].startswith("undecodable image")
    assert reasons["4"] == "embedder refused the image: corrupt"
    assert reasons["8"].startswith("bad row: not valid JSON")
    assert reasons["5"].startswith("duplicate id 5")
    assert sorted(target.points) == [1, 5, 6, 7]


def test_prune_keeps_items_that_are_listed_but_rejected(tmp_path: Path) -> None:
    target = FakeTarget()
    _run(fake_catalogue(tmp_path, range(1, 6)), target, tmp_path)
    manifest = fake_catalogue(tmp_path, range(1, 5))
    (tmp_path / "img" / "2.jpg").unlink()
    summary = _run(manifest, target, tmp_path, prune=True)
    assert (summary.deleted, summary.rejected) == (1, 1)
    assert sorted(target.points) == [1, 2, 3, 4]


def test_shards_together_index_everything_once(tmp_path: Path) -> None:
    target = FakeTarget()
    manifest = fake_catalogue(tmp_path, range(1, 101))
    added = [_run(manifest, target, tmp_path, shard=(k, 3)).added for k in range(3)]
    assert sum(added) == 100 and min(added) > 15
    assert sorted(target.points) == list(range(1, 101))
    # A sharded prune only touches ids of its own shard.
    summary = _run(fake_catalogue(tmp_path, []), target, tmp_path, shard=(1, 3), prune=True)
    assert summary.deleted == added[1] and len(target.points) == 100 - added[1]


def test_a_failed_run_is_incomplete_and_the_next_run_resumes(tmp_path: Path) -> None:
    manifest = fake_catalogue(tmp_path, range(1, 41))
    target = FakeTarget(fail_after_writes=3)
    failed = _run(manifest, target, tmp_path, prune=True)
    assert not failed.complete and "embedder down" in failed.error
    assert target.finished == []  # no switch, no prune after a failure
    stored = len(target.points)
    assert 0 < stored < 40
    target.fail_after_writes = None
    resumed = _run(manifest, target, tmp_path)
    assert (resumed.added, resumed.unchanged) == (40 - stored, stored)
    assert sorted(target.points) == list(range(1, 41))


def test_too_many_rejects_block_the_switch(tmp_path: Path) -> None:
    manifest = fake_catalogue(tmp_path, range(1, 11))
    for i in (1, 2):
        (tmp_path / "img" / f"{i}.jpg").unlink()
    target = FakeTarget()
    summary = _run(manifest, target, tmp_path, max_reject_fraction=0.1)
    assert target.finished == [False] and any("rejected" in n for n in summary.notes)


def test_progress_and_summary_text() -> None:
    stream = io.StringIO()
    progress = Progress(100, stream)
    summary = Summary(added=5, updated=1, unchanged=3, rejected=1, elapsed_s=2.0, target="fake", embedder="e@1")
    progress.update(summary, force=True)
    assert "10/100" in stream.getvalue() and "items/s" in stream.getvalue()
    text = summary.render(Path("r.csv"))
    for word in ("added", "updated", "unchanged", "deleted", "rejected", "elapsed", "items/s", "r.csv"):
        assert word in text
    assert summary.as_dict()["items_per_s"] == pytest.approx(5.0)
