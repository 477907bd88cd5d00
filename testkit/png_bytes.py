"""Hand-made PNG files for the image-decoding tests: a header can claim any size while the file stays tiny."""

from __future__ import annotations

import struct
import zlib


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, *, depth: int = 8, colour: int = 2, idat: bytes = b"\x00" * 64) -> bytes:
    """A PNG (valid CRCs) whose header claims width x height pixels, with only `idat` as its data: a decompression
    bomb's shape."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(idat))
        + png_chunk(b"IEND", b"")
    )
