"""Image reading of the indexer job: files and http(s) URLs (a local http.server on loopback)."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.indexer.fetch import FetchError, ImageFetcher, looks_like_image

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 100
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 20
WEBP = b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 10


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_signatures() -> None:
    assert looks_like_image(JPEG) and looks_like_image(PNG) and looks_like_image(WEBP)
    assert not looks_like_image(b"%PDF-1.7") and not looks_like_image(b"RIFF\0\0\0\0WAVE")


def test_files(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(JPEG)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"hello")
    (tmp_path / "big.jpg").write_bytes(JPEG + b"\0" * 200)
    fetcher = ImageFetcher(root=tmp_path, max_bytes=250)
    assert fetcher.fetch("a.jpg") == JPEG
    assert fetcher.fetch(str(tmp_path / "a.jpg")) == JPEG
    cases = {
        "missing.jpg": "missing file",
        "empty.jpg": "empty",
        "text.jpg": "undecodable image",
        "big.jpg": "too large",
        ".": "missing file",
    }
    for ref, reason in cases.items():
        with pytest.raises(FetchError, match=reason):
            fetcher.fetch(ref)


def test_urls(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    (root / "a.jpg").write_bytes(JPEG)
    (root / "junk.jpg").write_bytes(b"<html>")
    fetcher = ImageFetcher(root=tmp_path, timeout_s=5)
    assert fetcher.fetch(f"{base}/a.jpg") == JPEG
    with pytest.raises(FetchError, match="unreachable URL: .*HTTP 404"):
        fetcher.fetch(f"{base}/missing.jpg")
    with pytest.raises(FetchError, match="undecodable image"):
        fetcher.fetch(f"{base}/junk.jpg")
    with pytest.raises(FetchError, match="unreachable URL"):
        fetcher.fetch(f"http://127.0.0.1:{_closed_port()}/a.jpg")
