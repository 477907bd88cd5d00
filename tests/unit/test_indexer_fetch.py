"""Image reading of the indexer job: files and http(s) URLs (a local http.server on loopback)."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.indexer.fetch import FetchError, ImageFetcher, looks_like_image, refused_address
from testkit.process_stack import free_port

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
    assert ImageFetcher(root=tmp_path, allow_outside_root=True).fetch(str(tmp_path / "a.jpg")) == JPEG
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
    fetcher = ImageFetcher(root=tmp_path, timeout_s=5, allow_private_urls=True)
    assert fetcher.fetch(f"{base}/a.jpg") == JPEG
    with pytest.raises(FetchError, match="unreachable URL: .*HTTP 404"):
        fetcher.fetch(f"{base}/missing.jpg")
    with pytest.raises(FetchError, match="undecodable image"):
        fetcher.fetch(f"{base}/junk.jpg")
    with pytest.raises(FetchError, match="unreachable URL"):
        fetcher.fetch(f"http://127.0.0.1:{free_port()}/a.jpg")  # nothing listens there


def test_paths_stay_inside_the_image_root(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(JPEG)
    (tmp_path / "secret.jpg").write_bytes(JPEG + b"SECRET")
    fetcher = ImageFetcher(root=root)
    assert fetcher.fetch("sub/a.jpg") == JPEG
    for ref in (str(tmp_path / "secret.jpg"), "../secret.jpg", "sub/../../secret.jpg", "/etc/passwd", "a\x00.jpg"):
        with pytest.raises(FetchError, match="refused path") as refused:
            fetcher.fetch(ref)
        assert "SECRET" not in str(refused.value)
    trusted = ImageFetcher(root=root, allow_outside_root=True)
    assert trusted.fetch("../secret.jpg") == trusted.fetch(str(tmp_path / "secret.jpg")) == JPEG + b"SECRET"


class _Counting(_QuietHandler):
    """Serves the folder and counts the requests that reached it; /redirect?to=URL redirects."""

    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture
def counting_server(tmp_path: Path) -> Iterator[tuple[int, type[_Counting]]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.jpg").write_bytes(JPEG)
    handler = type("Handler", (_Counting,), {"requests": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_loopback_private_and_link_local_urls_are_refused_before_connecting(tmp_path, counting_server) -> None:
    port, handler = counting_server
    fetcher = ImageFetcher(root=tmp_path, timeout_s=5)
    for url, kind in (
        (f"http://127.0.0.1:{port}/a.jpg", "loopback"),
        (f"http://localhost:{port}/a.jpg", "loopback"),  # the check is on the resolved address, not the name
        (f"http://[::ffff:127.0.0.1]:{port}/a.jpg", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),  # a cloud metadata endpoint
        ("http://10.0.0.1/a.jpg", "private"),
        ("http://192.168.1.1/a.jpg", "private"),
        ("http://100.100.100.200/a.jpg", "non-public"),
        ("http://0.0.0.0/a.jpg", "private"),
    ):
        with pytest.raises(FetchError, match=f"refused URL: .*{kind}.*--allow-private-urls"):
            fetcher.fetch(url)
    assert handler.requests == 0
    allowed = ImageFetcher(root=tmp_path, timeout_s=5, allow_private_urls=True)
    assert allowed.fetch(f"http://localhost:{port}/a.jpg") == JPEG and handler.requests == 1


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.2", "a loopback address"),
        ("::1", "a loopback address"),
        ("fe80::1%eth0", "a link-local address"),
        ("fd00::1", "a private address"),
        ("::ffff:10.1.2.3", "a private address"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "a link-local address"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", "a loopback address"),  # 6to4 of 127.0.0.1
        ("224.0.0.251", "a multicast address"),
        ("100.64.0.1", "a non-public address"),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert refused_address(address) == kind


def _as_if_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let 127.0.0.1 pass the address check (standing in for a public server: tests reach no other host)."""
    real = refused_address
    monkeypatch.setattr("jobs.indexer.fetch.refused_address", lambda a: None if a == "127.0.0.1" else real(a))


def test_every_redirect_is_checked(tmp_path, counting_server, monkeypatch) -> None:
    port, handler = counting_server
    _as_if_public(monkeypatch)
    fetcher = ImageFetcher(root=tmp_path, timeout_s=5)
    assert fetcher.fetch(f"http://127.0.0.1:{port}/redirect?to=/a.jpg") == JPEG
    with pytest.raises(FetchError, match=r"refused URL: http://127\.0\.0\.2:\d+/a\.jpg: .*loopback"):
        fetcher.fetch(f"http://127.0.0.1:{port}/redirect?to=http://127.0.0.2:{port}/a.jpg")
    with pytest.raises(FetchError, match="refused URL: .*link-local"):
        fetcher.fetch(f"http://127.0.0.1:{port}/redirect?to=http://169.254.169.254/latest/meta-data/")
    loop = (
        f"http://127.0.0.1:{port}/redirect?to=/redirect?to=/redirect?to=/redirect?to=/redirect?to=/redirect?to=/a.jpg"
    )
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetcher.fetch(loop)


def test_the_checked_address_is_the_one_connected_to(tmp_path, counting_server, monkeypatch) -> None:
    """DNS rebinding: a name that answers a public address to the check and a private one to the connection.
    The name is resolved once per request and the job connects to that address."""
    port, handler = counting_server
    _as_if_public(monkeypatch)
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - socket.getaddrinfo's signature
        if host == "images.example":
            host = next(answers)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    assert ImageFetcher(root=tmp_path, timeout_s=5).fetch(f"http://images.example:{port}/a.jpg") == JPEG
    assert handler.requests == 1
    with pytest.raises(FetchError, match="refused URL: .*loopback"):  # the next lookup answers the private one
        ImageFetcher(root=tmp_path, timeout_s=5).fetch(f"http://images.example:{port}/a.jpg")


class _Dripping(http.server.BaseHTTPRequestHandler):
    """Answers one byte every 0.2 s for 40 s: in a header (/headers) or in the body (any other path)."""

    def do_GET(self) -> None:
        try:
            if self.path == "/headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                drip = b"a"
            else:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + JPEG[:4])
                drip = b"\0"
            for _ in range(200):
                self.wfile.write(drip)
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client went away at its deadline

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.mark.parametrize("path", ["/body", "/headers"])
def test_a_download_has_one_deadline_however_slowly_the_server_sends(tmp_path, path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dripping)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    timeout_s = 1.5
    fetcher = ImageFetcher(root=tmp_path, timeout_s=timeout_s, allow_private_urls=True)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match="not downloaded within 1.5 s"):
            fetcher.fetch(f"http://127.0.0.1:{server.server_address[1]}{path}")
    finally:
        server.shutdown()
        server.server_close()
    # Each read alone came well within the timeout: a per-read timeout would have let the drip run its 40 s.
    assert time.monotonic() - started < 10 * timeout_s


def test_a_declared_length_over_the_limit_is_refused_before_the_body(tmp_path, counting_server) -> None:
    port, _ = counting_server
    (tmp_path / "www" / "big.jpg").write_bytes(JPEG + b"\0" * 5000)
    fetcher = ImageFetcher(root=tmp_path, timeout_s=5, max_bytes=1000, allow_private_urls=True)
    with pytest.raises(FetchError, match="image too large"):
        fetcher.fetch(f"http://127.0.0.1:{port}/big.jpg")
