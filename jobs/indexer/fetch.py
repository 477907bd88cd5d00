"""Image bytes for a manifest row: a file under the image root, or an http(s) URL on a public address.

Only a cheap signature check happens here (JPEG, PNG, WebP, GIF, BMP or TIFF magic bytes); full decoding is the
embedder's job, and an image it cannot decode comes back as a per-item error that the job rejects with the
service's reason.  Decoding every image twice would cost more than the whole upsert on a small machine.

A manifest is input from elsewhere, so by default it cannot point the job at what the job can reach and its
author cannot:

- a file path must be relative and stay inside the image root (no absolute path, no `..`); `allow_outside_root`
  lifts this for a manifest that is trusted;
- a URL must resolve to public addresses only: loopback, private, link-local, carrier-grade NAT, multicast and
  other non-global addresses (cloud metadata endpoints among them) are refused, checked on the address the job
  then connects to (the name is resolved once, so a second answer cannot swap in another address) and again on
  every redirect; `allow_private_urls` lifts this for an intranet image server;
- a download has one deadline for everything (name lookup, connection, redirects, headers and body), not a
  timeout per socket read, so a server sending a byte at a time cannot hold a row for longer.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: Redirects followed per download (curl and browsers allow more; an image URL needs one or two at most).
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 64 * 1024

_SIGNATURES: tuple[bytes, ...] = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
)


class FetchError(Exception):
    """The image could not be read; the message is the reject reason."""


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def looks_like_image(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def refused_address(address: str) -> str | None:
    """Why the job must not connect to `address` unless private URLs are allowed, or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") names a link
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    for kind, test in _ADDRESS_KINDS:
        if test(ip):
            return kind
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ADDRESS_KINDS = (
    ("a loopback address", lambda ip: ip.is_loopback),
    ("a link-local address", lambda ip: ip.is_link_local),
    ("a private address", lambda ip: ip.is_private),
    ("a multicast address", lambda ip: ip.is_multicast),
    ("an unspecified address", lambda ip: ip.is_unspecified),
    ("a reserved address", lambda ip: ip.is_reserved),
    # What is left and still not global: shared address space (100.64.0.0/10, carrier-grade NAT, also some
    # clouds' internal services) and other special-purpose blocks.
    ("a non-public address", lambda ip: not ip.is_global),
)


class _Deadline:
    """The one deadline of a download."""

    def __init__(self, seconds: float, url: str) -> None:
        self.at = time.monotonic() + seconds
        self.seconds = seconds
        self.url = url

    def left(self) -> float:
        """Seconds left; FetchError when none are."""
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise self.expired()
        return remaining

    def expired(self) -> FetchError:
        return FetchError(f"unreachable URL: {self.url}: not downloaded within {self.seconds:g} s")


@dataclass(frozen=True)
class ImageFetcher:
    """Reads image references: relative paths under ``root``; URLs within ``timeout_s`` in all; at most
    ``max_bytes``. See the module docs for what is refused unless the two allow_* flags say otherwise."""

    root: Path
    timeout_s: float = 10.0
    max_bytes: int = DEFAULT_MAX_BYTES
    allow_private_urls: bool = False
    allow_outside_root: bool = False
    _tls: ssl.SSLContext = field(default_factory=ssl.create_default_context, init=False, repr=False, compare=False)

    @property
    def _root_prefix(self) -> str:
        return f"{os.fspath(self.root).rstrip('/')}/"

    def fetch(self, ref: str) -> bytes:
        data = self._fetch_url(ref) if is_url(ref) else self._read_file(ref)
        if not data:
            raise FetchError("undecodable image: the image is empty (0 bytes)")
        if not looks_like_image(data):
            raise FetchError("undecodable image: not a JPEG, PNG, WebP, GIF, BMP or TIFF file")
        return data

    # ---- files ----------------------------------------------------------------------------------------------

    def _read_file(self, ref: str) -> bytes:
        # Plain string paths and one unbuffered read: this runs once per catalogue item, even when unchanged.
        if "\x00" in ref:
            raise FetchError("refused path: it holds a NUL character")
        if ref.startswith("/"):
            if not self.allow_outside_root:
                raise FetchError(
                    f"refused path: {ref} is absolute; image paths are relative to the image root"
                    " (--allow-paths-outside-root for a trusted manifest)"
                )
            path = ref
        else:
            if not self.allow_outside_root and ".." in ref.split("/"):
                raise FetchError(
                    f"refused path: {ref} climbs out of the image root with '..'"
                    " (--allow-paths-outside-root for a trusted manifest)"
                )
            path = f"{self._root_prefix}{ref}"
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size > self.max_bytes:
                    raise FetchError(f"image too large: {path} is over {self.max_bytes} bytes")
                data = f.read(size + 1) if size else f.read()
        except FileNotFoundError:
            raise FetchError(f"missing file: {path}") from None
        except IsADirectoryError:
            raise FetchError(f"missing file: {path} is a directory") from None
        except OSError as exc:
            raise FetchError(f"unreadable file: {path}: {exc.strerror or exc}") from None
        if len(data) > self.max_bytes:
            raise FetchError(f"image too large: {path} is over {self.max_bytes} bytes")
        return data

    # ---- URLs -----------------------------------------------------------------------------------------------

    def _fetch_url(self, url: str) -> bytes:
        deadline = _Deadline(self.timeout_s, url)
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            location = self._get(current, deadline)
            if isinstance(location, bytes):
                return location
            current = location
        raise FetchError(f"unreachable URL: {url}: more than {MAX_REDIRECTS} redirects")

    def _get(self, url: str, deadline: _Deadline) -> bytes | str:
        """One request: the body, or the absolute URL a redirect points to."""
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchError(f"unreachable URL: {url}: {exc}") from None
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise FetchError(f"unreachable URL: {url}: only http(s) URLs with a host are fetched")
        sock = self._connect(url, host, port, deadline)
        # At the deadline the socket is shut down, which ends any read blocked in it: a per-read timeout alone
        # would let a server that sends a byte at a time hold the download for ever.
        current = [sock]
        watchdog = threading.Timer(max(0.0, deadline.at - time.monotonic()), lambda: _shut(current[0]))
        watchdog.daemon = True
        watchdog.start()
        try:
            if parts.scheme == "https":
                sock = current[0] = self._tls.wrap_socket(sock, server_hostname=host)
                connection: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, context=self._tls)
            else:
                connection = http.client.HTTPConnection(host, port)
            connection.sock = sock  # already connected, to the address that was checked
            path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            connection.request("GET", path, headers={"User-Agent": "fashionsearch-indexer/1", "Accept": "image/*"})
            response = connection.getresponse()
            if response.status in _REDIRECTS and response.getheader("Location"):
                return urllib.parse.urljoin(url, response.getheader("Location", ""))
            if response.status != 200:
                raise FetchError(f"unreachable URL: {url}: HTTP {response.status} {response.reason}")
            length = response.getheader("Content-Length", "")
            if length.isdigit() and int(length) > self.max_bytes:
                raise FetchError(f"image too large: {url} is over {self.max_bytes} bytes")
            data = bytearray()
            while len(data) <= self.max_bytes and (chunk := response.read1(_READ_CHUNK)):
                data += chunk
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if time.monotonic() >= deadline.at:
                raise deadline.expired() from None
            raise FetchError(f"unreachable URL: {url}: {exc or type(exc).__name__}") from None
        finally:
            watchdog.cancel()
            sock.close()
        if time.monotonic() >= deadline.at:
            raise deadline.expired()  # the end of the body may have been the shutdown, not the server's
        if len(data) > self.max_bytes:
            raise FetchError(f"image too large: {url} is over {self.max_bytes} bytes")
        return bytes(data)

    def _connect(self, url: str, host: str, port: int, deadline: _Deadline) -> socket.socket:
        """A socket connected to one of `host`'s addresses that passed the address check, with a timeout of what is
        left of the deadline on each read (the watchdog bounds their sum)."""
        addresses = _resolve(host, port, deadline)
        refused = {} if self.allow_private_urls else {a: why for _, a in addresses if (why := refused_address(a[0]))}
        allowed = [(family, address) for family, address in addresses if address not in refused]
        if not allowed:  # the reject file may go back to whoever wrote the manifest: no address in it
            why = next(iter(refused.values()))
            raise FetchError(
                f"refused URL: {url}: {host} is {why}; the job fetches from public addresses only"
                " (--allow-private-urls for an intranet image server)"
            )
        error: OSError | None = None
        for family, address in allowed:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(deadline.left())
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if time.monotonic() >= deadline.at:
            raise deadline.expired()
        raise FetchError(f"unreachable URL: {url}: {error.strerror if error and error.strerror else error}")


#: A socket address as getaddrinfo() gives it: (host, port), or (host, port, flowinfo, scope_id) for IPv6.
_SockAddr = tuple[Any, ...]


def _resolve(host: str, port: int, deadline: _Deadline) -> list[tuple[socket.AddressFamily, _SockAddr]]:
    """`host`'s addresses, looked up once (the addresses checked are the ones connected to) within the deadline:
    getaddrinfo() cannot be interrupted, so it runs in a thread that is left to finish on its own if it is slow."""
    found: list[Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, _SockAddr]] | OSError] = []
    try:
        ipaddress.ip_address(host)
        literal = True  # an address, not a name: getaddrinfo() answers at once
    except ValueError:
        literal = False

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    if literal:
        lookup()
    else:
        thread = threading.Thread(target=lookup, name="resolve", daemon=True)
        thread.start()
        thread.join(deadline.left())
    if not found:
        raise deadline.expired()
    if isinstance(found[0], OSError):
        raise FetchError(f"unreachable URL: {deadline.url}: cannot resolve {host}: {found[0].strerror or found[0]}")
    return [(family, address) for family, _, _, _, address in found[0]]


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the download ended as the deadline came
