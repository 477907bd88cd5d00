"""Fuzzing untrusted input: image bytes and gateway request options, over gRPC-shaped and HTTP-shaped requests.

Every input must end as a result or as one of our own errors (InvalidArgument for bad input) with a message;
never another exception, never a hang (a per-example deadline), never unbounded memory (peak RSS checked).
CI runs a bounded number of examples per test; run longer on demand:

    FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/unit/test_fuzz.py -q
"""

from __future__ import annotations

import asyncio
import io
import os
import resource
import struct
import sys
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fashionsearch.errors import FashionSearchError, InvalidArgument
from fashionsearch.images import ImageLimits, decode_image
from fashionsearch.store import FILTER_FIELDS, StoredPoint
from fashionsearch.store.brute import BruteForceIndex
from fashionsearch.v1 import gateway_pb2
from services.gateway.domain import FilterMode, SearchOptions
from services.gateway.http.parsing import options_from_json, options_from_params
from services.gateway.limits import Limits
from services.gateway.service import GatewayService
from services.gateway.servicer import search_options
from testkit.gateway_fakes import DIM, EMBEDDER_MODEL, FakeClassifier, FakeEmbedder, image, vector_for
from testkit.png_bytes import png_declaring

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
#: No single input may take longer than this to decode or validate (generous: CI machines are shared).
DEADLINE = timedelta(seconds=float(os.environ.get("FUZZ_DEADLINE_S", "5")))
#: Peak memory the whole fuzz run may add to this process.
MAX_RSS_GROWTH_MB = 512

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = ImageLimits(max_bytes=1024 * 1024, max_pixels=4_000_000, min_side=8)
TARGET = (60, 80)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@pytest.fixture(scope="module", autouse=True)
def memory_stays_bounded():
    before = _peak_rss_mb()
    yield
    growth = _peak_rss_mb() - before
    assert growth < MAX_RSS_GROWTH_MB, f"fuzzing raised peak memory by {growth:.0f} MB"


# ---- image decoding ---------------------------------------------------------------------------------------------


def _encode(picture: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
    return rgb if mode == "RGB" else rgb.convert(mode)


def _seeds() -> dict[str, bytes]:
    """Valid images of every shape the decoder handles, to mutate."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    palette = _noise(24, 32).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    grey16 = Image.fromarray((np.arange(24 * 32, dtype=np.uint16).reshape(32, 24) * 80).astype(np.uint16))
    return {
        "jpeg": _encode(_noise(40, 56), "JPEG", quality=80),
        "jpeg-progressive": _encode(_noise(40, 56), "JPEG", progressive=True),
        "jpeg-exif": _encode(_noise(40, 56), "JPEG", exif=exif.tobytes()),
        "jpeg-cmyk": _encode(_noise(24, 32, "CMYK"), "JPEG"),
        "jpeg-grey": _encode(_noise(24, 32, "L"), "JPEG"),
        "png-rgba": _encode(_noise(24, 32, "RGBA"), "PNG"),
        "png-palette-alpha": _encode(palette, "PNG", transparency=0),
        "png-16bit": _encode(grey16, "PNG"),
        "png-la": _encode(_noise(24, 32, "LA"), "PNG"),
        "webp": _encode(_noise(24, 32), "WEBP"),
        "webp-lossless-alpha": _encode(_noise(24, 32, "RGBA"), "WEBP", lossless=True),
    }


SEEDS = _seeds()


def _check_decoded(data: bytes, target: tuple[int, int] | None = None) -> None:
    try:
        picture = decode_image(data, LIMITS, target)
    except InvalidArgument as refused:
        assert refused.message and len(refused.message) < 1000
        return
    assert picture.mode == "RGB"
    width, height = picture.size
    assert min(width, height) >= LIMITS.min_side and width * height <= LIMITS.max_pixels


@FUZZ
@given(data=st.binary(max_size=4096), draft=st.booleans())
def test_any_bytes_decode_or_are_refused(data: bytes, draft: bool) -> None:
    _check_decoded(data, TARGET if draft else None)


@FUZZ
@given(
    magic=st.sampled_from(
        [b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xc0", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x01\x00\x00WEBPVP8 "]
    ),
    tail=st.binary(max_size=2048),
)
def test_format_signatures_followed_by_garbage_are_refused_or_decoded(magic: bytes, tail: bytes) -> None:
    _check_decoded(magic + tail, TARGET)


@FUZZ
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete", "repeat"]), st.floats(0, 1), st.binary(min_size=1, max_size=8)
        ),
        max_size=8,
    ),
    keep=st.floats(0.05, 1.0),
    draft=st.booleans(),
)
def test_mutated_images_decode_or_are_refused(seed: str, edits: list, keep: float, draft: bool) -> None:
    data = bytearray(SEEDS[seed])
    for operation, where, chunk in edits:
        at = int(where * (len(data) - 1))
        if operation == "set":
            data[at : at + len(chunk)] = chunk
        elif operation == "insert":
            data[at:at] = chunk
        elif operation == "delete":
            del data[at : at + len(chunk)]
        else:
            data[at:at] = data[at : at + 64] * 2
    _check_decoded(bytes(data[: max(1, int(len(data) * keep))]), TARGET if draft else None)


@FUZZ
@given(
    width=st.integers(0, 2**31 - 1),
    height=st.integers(0, 2**31 - 1),
    depth_colour=st.sampled_from([(8, 2), (8, 6), (16, 0), (8, 3), (1, 0), (7, 2)]),
    idat=st.binary(max_size=512),
)
def test_png_headers_declaring_any_size_never_allocate_it(width: int, height: int, depth_colour, idat: bytes) -> None:
    """A valid-CRC IHDR with any dimensions: refused from the header, or decoded within the pixel limit."""
    depth, colour = depth_colour
    _check_decoded(png_declaring(width, height, depth=depth, colour=colour, idat=idat))


@FUZZ
@given(width=st.integers(0, 65535), height=st.integers(0, 65535), draft=st.booleans())
def test_jpeg_frame_headers_declaring_any_size(width: int, height: int, draft: bool) -> None:
    data = bytearray(SEEDS["jpeg"])
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    _check_decoded(bytes(data), TARGET if draft else None)


# ---- gateway request validation ---------------------------------------------------------------------------------

_INDEX = BruteForceIndex()


def _loaded_index() -> BruteForceIndex:
    """A small catalogue of the fake embedder's vectors, so searches reach the store's own filter checks."""
    if _INDEX.info() is None:
        _INDEX.ensure_collection(DIM, EMBEDDER_MODEL.identity)
        _INDEX.upsert(
            [
                StoredPoint(id=i, vector=vector_for(image(str(i))), payload={"subCategory": sub, "name": f"item {i}"})
                for i, sub in enumerate(["Topwear", "Bottomwear", "Shoes", "Topwear"], start=1)
            ]
        )
    return _INDEX


def _service() -> GatewayService:
    return GatewayService(FakeClassifier(), FakeEmbedder(), _loaded_index(), Limits(max_top_k=50, max_image_bytes=4096))


def _run_search(data: bytes, options: SearchOptions) -> None:
    async def search() -> None:
        try:
            result = await _service().search(data, options)
        except FashionSearchError as refused:
            assert isinstance(refused, InvalidArgument), refused
            assert refused.message
            return
        assert len(result.hits) <= (options.top_k or 5)

    asyncio.run(search())


_field = st.one_of(st.sampled_from(FILTER_FIELDS), st.text(max_size=24))
_values = st.lists(st.text(max_size=24), max_size=4)
_images = st.one_of(st.binary(max_size=64), st.sampled_from([image("q"), b"bad image", b"", b"x" * 5000]))


@FUZZ
@given(
    data=_images,
    top_k=st.one_of(st.none(), st.integers(-(2**63), 2**63)),
    mode=st.sampled_from(list(FilterMode)),
    filters=st.lists(st.tuples(_field, _values), max_size=5),
)
def test_search_options_are_validated(data: bytes, top_k, mode, filters) -> None:
    _run_search(data, SearchOptions(top_k=top_k, mode=mode, filters=tuple((f, tuple(v)) for f, v in filters)))


@FUZZ
@given(
    top_k=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    mode=st.integers(-(2**31), 2**31 - 1),
    filters=st.lists(st.tuples(_field, _values), max_size=4),
)
def test_grpc_search_requests_are_validated(top_k, mode, filters) -> None:
    request = gateway_pb2.SearchRequest(image=image("q"), filter_mode=mode)
    if top_k is not None:
        request.top_k = top_k
    for name, values in filters:
        request.filters.add(field=name, values=values)
    try:
        options = search_options(gateway_pb2.SearchRequest.FromString(request.SerializeToString()))
    except InvalidArgument as refused:
        assert "filter_mode" in refused.message
        return
    _run_search(request.image, options)


@FUZZ
@given(
    params=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["top_k", "filter_mode", "filter.subCategory"]), st.text(max_size=20)),
            st.text(max_size=20),
        ),
        max_size=6,
    )
)
def test_http_query_parameters_are_validated(params) -> None:
    try:
        options = options_from_params(params)
    except InvalidArgument as refused:
        assert refused.message
        return
    _run_search(image("q"), options)


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "top_k": _json,
            "filter_mode": st.one_of(_json, st.sampled_from([m.value for m in FilterMode])),
            "filters": st.one_of(_json, st.dictionaries(_field, st.one_of(st.text(max_size=12), _values), max_size=3)),
            "id": _json,
        },
    )
)
def test_http_json_bodies_are_validated(body) -> None:
    try:
        options = options_from_json(body)
    except InvalidArgument as refused:
        assert refused.message
        return
    _run_search(image("q"), options)
