"""Image bytes for a manifest row: a local file, or an http(s) URL fetched with a timeout and a size limit.

Only a cheap signature check happens here (JPEG, PNG, WebP, GIF, BMP or TIFF magic bytes); full decoding is the
embedder's job, and an image it cannot decode comes back as a per-item error that the job rejects with the
service's reason.  Decoding every image twice would cost more than the whole upsert on a small machine.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BYTES = 10 * 1024 * 1024

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


@dataclass(frozen=True)
class ImageFetcher:
    """Reads image references: relative paths against ``root``, URLs with ``timeout_s``; at most ``max_bytes``."""

    root: Path
    timeout_s: float = 10.0
    max_bytes: int = DEFAULT_MAX_BYTES

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

    def _read_file(self, ref: str) -> bytes:
        # Plain string paths and one unbuffered read: this runs once per catalogue item, even when unchanged.
        path = ref if ref.startswith("/") else f"{self._root_prefix}{ref}"
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

    def _fetch_url(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": "fashionsearch-indexer/1"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = response.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"unreachable URL: {url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise FetchError(f"unreachable URL: {url}: {exc.reason}") from None
        except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
            raise FetchError(f"unreachable URL: {url}: {exc or type(exc).__name__}") from None
        if len(data) > self.max_bytes:
            raise FetchError(f"image too large: {url} is over {self.max_bytes} bytes")
        return data
