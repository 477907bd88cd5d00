"""A manifest row whose text cannot be written (a lone surrogate escape in JSONL, a byte that is not UTF-8 in CSV or
styles.csv) is one reject with its reason; the other rows are indexed and a rerun finds them unchanged. The job runs
as a subprocess through a real in-process gateway, as in test_indexer_job.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gateway_stack import Stack, start_stack
from tests.integration.indexer_fixtures import product_jpeg, write_dataset
from tests.integration.test_indexer_job import _addr, _counts, _digests, run_job

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = start_stack(tmp_path)
    try:
        yield running
    finally:
        running.close()


def _images(root: Path, ids: range) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (root / f"{i}.jpg").write_bytes(product_jpeg(i))


def _rejects(tmp_path: Path) -> str:
    return (tmp_path / "rejects.csv").read_text(encoding="utf-8", errors="strict")


def test_a_lone_surrogate_in_a_jsonl_row_is_one_reject(stack: Stack, tmp_path: Path) -> None:
    _images(tmp_path, range(1, 5))
    lines = [json.dumps({"id": i, "image": f"{i}.jpg", "name": f"Product {i}"}) for i in range(1, 5)]
    lines[1] = '{"id": 2, "image": "2.jpg", "name": "Bad \\ud800 name"}'  # JSON's escape: valid JSON, not text
    lines[2] = '{"id": 3, "image": "3.jpg", "baseColour": "\\udfff"}'
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ("--manifest", str(manifest), "--gateway", _addr(stack.gateway))
    code, first = run_job(tmp_path, *args)
    assert code == 2 and _counts(first) == (2, 0, 0, 0, 2)
    rejects = _rejects(tmp_path)
    assert "name is not UTF-8 text" in rejects and "baseColour is not UTF-8 text" in rejects, rejects
    assert set(_digests(stack)) == {1, 4}
    code, again = run_job(tmp_path, *args)
    assert code == 2 and _counts(again) == (0, 0, 2, 0, 2)


def test_a_byte_that_is_not_utf8_in_a_csv_row_is_one_reject(stack: Stack, tmp_path: Path) -> None:
    _images(tmp_path, range(1, 4))
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"id,image,name\n1,1.jpg,One\n2,2.jpg,Caf\xe9 Latin-1\n3,3.jpg,Three\n")
    args = ("--manifest", str(manifest), "--gateway", _addr(stack.gateway))
    code, first = run_job(tmp_path, *args)
    assert code == 2 and _counts(first) == (2, 0, 0, 0, 1)
    assert "name is not UTF-8 text" in _rejects(tmp_path)
    assert set(_digests(stack)) == {1, 3}
    code, again = run_job(tmp_path, *args)
    assert code == 2 and _counts(again) == (0, 0, 2, 0, 1)


def test_a_byte_that_is_not_utf8_in_styles_csv_is_one_reject(stack: Stack, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", range(1, 4))
    styles = (dataset / "styles.csv").read_bytes().replace(b"Product 2, size M", b"Product 2 \xff size M")
    (dataset / "styles.csv").write_bytes(styles)
    code, first = run_job(tmp_path, "--dataset", str(dataset), "--gateway", _addr(stack.gateway))
    assert code == 2 and _counts(first) == (2, 0, 0, 0, 1)
    assert "the line is not UTF-8 text" in _rejects(tmp_path)
    assert set(_digests(stack)) == {1, 3}
