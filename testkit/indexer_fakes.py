"""An in-memory indexer target and a manifest of placeholder images, for the indexer pipeline tests."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from jobs.indexer.manifest import Manifest
from jobs.indexer.targets import JobError, StageTimes, WriteItem

JPEG = b"\xff\xd8\xff\xe0"


class FakeTarget:
    """Stores (hash, row) per id; refuses images containing b"REFUSE"; can fail after n writes."""

    def __init__(self, embedder: str = "emb@1", fail_after_writes: int | None = None) -> None:
        self.embedder = embedder
        self.points: dict[int, tuple[str, str]] = {}
        self.writes: list[list[int]] = []
        self.finished: list[bool] = []
        self.fail_after_writes = fail_after_writes
        self.times = StageTimes()

    def prepare(self) -> str:
        return self.embedder

    def describe(self) -> str:
        return "fake"

    def digests(self) -> Iterator[tuple[int, str]]:
        yield from ((i, h) for i, (h, _) in self.points.items())

    def write(self, items: Sequence[WriteItem]) -> list[str | None]:
        if self.fail_after_writes is not None and len(self.writes) >= self.fail_after_writes:
            raise JobError("embedder down")
        self.writes.append([item.row.id for item in items])
        errors: list[str | None] = []
        for item in items:
            if b"REFUSE" in item.image:
                errors.append("embedder refused the image: corrupt")
            else:
                self.points[item.row.id] = (item.content_hash, item.row.name)
                errors.append(None)
        return errors

    def delete(self, ids: Sequence[int]) -> int:
        gone = [i for i in ids if i in self.points]
        for i in gone:
            del self.points[i]
        return len(gone)

    def finish(self, *, complete: bool) -> list[str]:
        self.finished.append(complete)
        return ["finished"]

    def close(self) -> None:
        pass


def fake_catalogue(tmp_path: Path, ids: Sequence[int], *, names: dict[int, str] | None = None) -> Manifest:
    images = tmp_path / "img"
    images.mkdir(exist_ok=True)
    lines = []
    for i in ids:
        path = images / f"{i}.jpg"
        if not path.exists():
            path.write_bytes(JPEG + f"image {i}".encode())
        lines.append(json.dumps({"id": i, "image": f"img/{i}.jpg", "name": (names or {}).get(i, f"item {i}")}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Manifest.file(manifest)
