"""edge_files: a shard's files copied with their holes kept and their contents identical, and their digests."""

from __future__ import annotations

import os

from fashionsearch.store.edge_files import copy_tree, refresh_tree, tree_data_bytes, tree_digests, warm_page_cache


def test_a_copy_keeps_the_bytes_and_the_holes(tmp_path):
    source = tmp_path / "shard"
    (source / "wal").mkdir(parents=True)
    sparse = source / "wal" / "open-1"
    with sparse.open("wb") as f:  # like Qdrant's preallocated segments: a little data, mostly hole
        f.write(b"head" * 1000)
        f.seek(16 << 20)
        f.write(b"middle")
        f.truncate(32 << 20)
    (source / "edge_config.json").write_text('{"a": 1}')
    (source / "empty").mkdir()

    copy_tree(source, tmp_path / "copy")

    copied = tmp_path / "copy" / "wal" / "open-1"
    assert copied.read_bytes() == sparse.read_bytes()
    assert os.stat(copied).st_size == 32 << 20
    assert os.stat(copied).st_blocks * 512 <= os.stat(sparse).st_blocks * 512 + (1 << 16)  # no hole filled in
    assert (tmp_path / "copy" / "empty").is_dir()
    assert tree_digests(tmp_path / "copy") == tree_digests(source)
    assert [path for path, _ in tree_digests(source)] == ["edge_config.json", "wal/open-1"]


def test_a_refresh_rewrites_only_what_changed_and_follows_new_and_removed_files(tmp_path):
    source = tmp_path / "shard"
    (source / "segments" / "a").mkdir(parents=True)
    chunk = source / "segments" / "a" / "vectors"
    with chunk.open("wb") as f:
        f.write(b"\1" * (3 << 20))
        f.truncate(8 << 20)
    (source / "segments" / "a" / "gone").write_text("old")
    (source / "edge_config.json").write_text("{}")
    copy_tree(source, tmp_path / "copy")

    # Writes after the first copy: a block changed in place, data written into a hole, a file grown, a new file
    # and folder, a file removed.
    with chunk.open("r+b") as f:
        f.seek(2 << 20)
        f.write(b"\2" * 100)
        f.seek(6 << 20)
        f.write(b"\3" * 100)
    (source / "segments" / "a" / "gone").unlink()
    (source / "segments" / "b").mkdir()
    (source / "segments" / "b" / "new").write_bytes(b"\4" * 10)
    with (source / "edge_config.json").open("ab") as f:
        f.write(b"{}")

    written = refresh_tree(source, tmp_path / "copy")

    assert tree_digests(tmp_path / "copy") == tree_digests(source)
    assert written < 3 << 20  # the two changed blocks and the small files, not the whole 3 MiB of data again
    assert not (tmp_path / "copy" / "segments" / "a" / "gone").exists()


def test_reading_ahead_reads_each_file_s_data_and_skips_the_holes_and_what_vanished(tmp_path):
    folder = tmp_path / "segments"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "payload.dat").write_bytes(b"x" * 300_000)
    with (folder / "sparse.dat").open("wb") as f:  # 1 MiB of data in a 64 MiB file: its holes are not read
        f.write(b"y" * (1 << 20))
        f.truncate(64 << 20)
    os.symlink(folder / "a" / "payload.dat", folder / "link")

    read = warm_page_cache(folder)

    assert (1 << 20) + 300_000 <= read < 2 * (1 << 20) + 300_000  # whole blocks of data, a link not followed
    assert tree_data_bytes(folder) >= (1 << 20) + 300_000
    assert warm_page_cache(tmp_path / "gone") == 0
