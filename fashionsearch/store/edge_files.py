"""A Qdrant Edge shard's files: copies for backups that restore without rebuilding the graph, and reading them
into the OS page cache when a collection opens (``warm_page_cache``).

A shard's files are only consistent while nothing writes to it and after a flush, and writing a copy is slow on a
busy disk (50 MB/s measured here: 4.4 s for a 200k-point shard, over the gateway's 5 s store timeout at 1M points).
So a copy is made in two steps: ``copy_tree`` while writes go on (torn, but most of it right), then, with the writes
held and the shard flushed, ``refresh_tree``, which reads the shard and the copy side by side and rewrites only the
blocks that differ (reads from the page cache, where both are). Comparing contents, not sizes and mtimes: a write
through a memory map that is already dirty updates no mtime.

Qdrant preallocates its files sparsely (WAL segments and vector chunks of 32 MiB, mostly holes), so the copy keeps
the holes: a byte-for-byte copy of a 100k-point shard allocates 161 MiB instead of its 54. The write-ahead log is
part of the copy on purpose: it carries the shard's operation counter, and a shard loaded without it numbers new
operations from 1 again, so an update of a point already stored (whose version is higher) is silently ignored
(measured with qdrant-edge 0.9).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 1 << 20


def _data_blocks(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of the file's data, in blocks of at most _BLOCK bytes, skipping its holes."""
    offset = 0
    while offset < size:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: only a hole from offset to the end
                raise
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        for start in range(data, hole, _BLOCK):
            yield start, min(_BLOCK, hole - start)
        offset = hole


def copy_file_sparse(source: Path, target: Path, *, changed_only: bool = False) -> int:
    """Copy source to target writing only the data regions, so that holes stay holes; with changed_only, target
    exists and only the blocks that differ are written. Not synced to disk (sync_tree does that, after the writes
    the copy held up have been let go). Returns the bytes written."""
    written = 0
    with source.open("rb") as src, target.open("r+b" if changed_only else "xb") as dst:
        size = os.fstat(src.fileno()).st_size
        for offset, length in _data_blocks(src.fileno(), size):
            block = os.pread(src.fileno(), length, offset)
            if changed_only and os.pread(dst.fileno(), len(block), offset) == block:
                continue
            os.pwrite(dst.fileno(), block, offset)
            written += len(block)
        if os.fstat(dst.fileno()).st_size != size:
            dst.truncate(size)
    return written


def copy_tree(source: Path, target: Path) -> int:
    """Copy the folder source to target (which must not exist), keeping the files' holes; symbolic links, sockets
    and other non-regular files are left out (a shard has none). Returns the bytes written."""
    target.mkdir(parents=True)
    return refresh_tree(source, target)  # every file new to the empty target: written whole


def refresh_tree(source: Path, target: Path) -> int:
    """Bring target, an earlier copy_tree of source, up to date with source: blocks that differ rewritten, new files
    copied, files no longer in source removed. Returns the bytes written."""
    written = 0
    present = set()
    for folder, subfolders, files in os.walk(source):
        here = Path(folder)
        there = target / here.relative_to(source)
        present.add(there)
        for name in subfolders:
            (there / name).mkdir(exist_ok=True)
        for name in files:
            if (here / name).is_file() and not (here / name).is_symlink():
                present.add(there / name)
                written += copy_file_sparse(here / name, there / name, changed_only=(there / name).is_file())
    for path in sorted(target.rglob("*"), reverse=True):  # files before the folders that hold them
        if path not in present:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
    return written


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under folder (a copy made by copy_tree), so that it survives a crash."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:  # files before the folders that list them
        if path.is_symlink():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digests(folder: Path) -> list[list[str]]:
    """[relative path, sha256] of every regular file under folder, sorted by path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return [[path.relative_to(folder).as_posix(), file_sha256(path)] for path in files]


def tree_data_bytes(folder: Path) -> int:
    """Bytes of data (holes left out) of the regular files under folder."""
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_blocks * 512
        except OSError:
            continue  # gone meanwhile
    return total


def warm_page_cache(folder: Path) -> int:
    """Read every regular file under folder once, so that its pages are in the OS page cache; returns the bytes read.

    Why: Qdrant Edge loads a segment's vectors and graph into memory, but reads its payloads and payload indexes
    through memory maps on demand, and it drops the shard's pages from the cache when it closes. At 10M points the
    first searches after an open then wait for the disk (5 page faults a search for the hits' payloads alone): p50
    7 to 10 ms over the first hundred, 3 over the next hundreds, against 2.4 from the first search once the files
    were read (bench/README.md, "Ten million points: the files read ahead at open"). Files vanishing meanwhile (a
    compaction removing a segment) are skipped."""
    read = 0
    for path in sorted(folder.rglob("*")):
        try:
            if not path.is_file() or path.is_symlink():
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            for offset, length in _data_blocks(fd, size):
                read += len(os.pread(fd, length, offset))
        except OSError:
            continue
        finally:
            os.close(fd)
    return read
