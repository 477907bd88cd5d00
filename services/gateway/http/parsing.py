"""Reading HTTP requests into the gateway's domain: numbers, search options from a query string, a form or JSON,
JSON and multipart bodies (within the body limit), catalogue payloads. Every bad input is an InvalidArgument (400)
that says what was wrong."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Mapping
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, StreamReader, http_exceptions, web

from fashionsearch.catalogue import PROTO_PAYLOAD_FIELDS
from fashionsearch.errors import InvalidArgument
from fashionsearch.parsing import check_text, parse_int, parse_json
from fashionsearch.store import FILTER_FIELDS
from services.gateway.admission import BODY_KEY, BodyTooLarge
from services.gateway.domain import Crop, FilterMode, SearchOptions, TextMatch, TextSearchOptions

FILTER_MODES = {mode.value: mode for mode in FilterMode}
FILTER_PREFIX = "filter."
#: The refinement words' parameter (form, query string) and JSON field of photo and by-id searches.
REFINE_PARAM = "refine"
READ_CHUNK = 64 * 1024
#: GET /v1/items: lines read from the store and written at a time.
DEFAULT_LIST_CHUNK = 1000
#: POST /v1/search/text: its match modes and the fields of its body.
TEXT_MATCHES = {match.value: match for match in TextMatch}
_TEXT_FIELDS = ("query", "top_k", "match", "filters")
#: The photo search's parameter choosing what of the photo is read.
CROP_PARAM = "crop"
CROPS = {crop.value: crop for crop in Crop}
#: POST /v1/search/outfit: its parameters (query string or multipart fields).
_OUTFIT_PARAMS = ("top_k", REFINE_PARAM)


async def body_of(request: web.Request) -> bytes:
    """The request's body: read by the admission middleware (services/gateway/admission.py), which reserves its
    bytes as they arrive and times out a body that stops coming, or read here for a route it does not count."""
    body = request.get(BODY_KEY)
    return body if isinstance(body, bytes) else await request.read()


def int_field(value: Any, what: str) -> int:
    """An integer by `fashionsearch.parsing.parse_int`'s strict rules (the indexer's too); its error as a 400."""
    try:
        return parse_int(value, what)
    except ValueError as bad:
        raise InvalidArgument(str(bad)) from None


def item_id_of(request: web.Request) -> int:
    return int_field(request.match_info["id"], "product id")


def filter_mode(value: str | None, has_filters: bool) -> FilterMode:
    """The filter mode; with filters given and no mode, the explicit mode is meant."""
    if value is None or value == "":
        return FilterMode.EXPLICIT if has_filters else FilterMode.PREDICTED_SUBCATEGORY
    mode = FILTER_MODES.get(value)
    if mode is None:
        raise InvalidArgument(f"unknown filter_mode {value!r}; allowed: {', '.join(FILTER_MODES)}")
    return mode


def options_from_params(params: list[tuple[str, str]]) -> SearchOptions:
    """SearchOptions from query or form parameters: top_k, filter_mode and filter.<field>=<value> (repeatable)."""
    top_k: int | None = None
    mode: str | None = None
    refine = ""
    filters: dict[str, list[str]] = {}
    for name, value in params:
        if name == "top_k":
            top_k = int_field(value, "top_k")
        elif name == "filter_mode":
            mode = value.strip()
        elif name == REFINE_PARAM:
            refine = value
        elif name.startswith(FILTER_PREFIX):
            filters.setdefault(name[len(FILTER_PREFIX) :], []).append(value)
        else:
            raise InvalidArgument(
                f"unknown parameter {name!r}; allowed: top_k, filter_mode, refine, filter.<field> with a field of "
                f"{', '.join(FILTER_FIELDS)}"
            )
    return SearchOptions(
        top_k=top_k,
        mode=filter_mode(mode, bool(filters)),
        filters=tuple((name, tuple(values)) for name, values in filters.items()),
        refine_text=refine,
    )


def options_from_json(body: Mapping[str, Any]) -> SearchOptions:
    """SearchOptions from a JSON object: top_k, filter_mode and filters {field: value or [values]}."""
    raw_filters = body.get("filters") or {}
    if not isinstance(raw_filters, dict):
        raise InvalidArgument('filters must be an object such as {"subCategory": ["Topwear"]}')
    filters: list[tuple[str, tuple[str, ...]]] = []
    for name, values in raw_filters.items():
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidArgument(f"filter {name!r} must be a string or a list of strings")
        try:
            check_text(name, "a filter field name")
            for value in values:
                check_text(value, f"filter {name!r}")
        except ValueError as bad:
            raise InvalidArgument(str(bad)) from None
        filters.append((str(name), tuple(values)))
    top_k = body.get("top_k")
    mode = body.get("filter_mode")
    if mode is not None and not isinstance(mode, str):
        raise InvalidArgument("filter_mode must be a string")
    refine = body.get(REFINE_PARAM) or ""
    if not isinstance(refine, str):
        raise InvalidArgument(f"{REFINE_PARAM} must be a string of words")
    return SearchOptions(
        top_k=None if top_k is None else int_field(top_k, "top_k"),
        mode=filter_mode(mode, bool(filters)),
        filters=tuple(filters),
        refine_text=refine,
    )


def text_options(body: dict[str, Any]) -> tuple[str, TextSearchOptions]:
    """The query and options of a /v1/search/text body."""
    unknown = sorted(set(body) - set(_TEXT_FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_TEXT_FIELDS)}")
    query = body.get("query")
    if not isinstance(query, str):
        raise InvalidArgument('the body needs the "query" as a string, e.g. {"query": "black formal shoes men"}')
    match = body.get("match")
    if match is not None and match not in TEXT_MATCHES:
        raise InvalidArgument(f"unknown match {match!r}; allowed: {', '.join(TEXT_MATCHES)}")
    base = options_from_json({k: body[k] for k in ("top_k", "filters") if k in body})
    return query, TextSearchOptions(top_k=base.top_k, match=TEXT_MATCHES.get(match or ""), filters=base.filters)


def crop_of(params: list[tuple[str, str]]) -> tuple[Crop | None, list[tuple[str, str]]]:
    """The `crop` parameter of a photo search (None when not given) and the other parameters."""
    crops = [value.strip() for name, value in params if name == CROP_PARAM]
    rest = [(name, value) for name, value in params if name != CROP_PARAM]
    if not crops:
        return None, rest
    if len(crops) > 1 or crops[0] not in CROPS:
        raise InvalidArgument(f"crop must be given once, one of {', '.join(CROPS)}; got {', '.join(crops)}")
    return CROPS[crops[0]], rest


def outfit_options(params: list[tuple[str, str]]) -> SearchOptions:
    top_k, refine = None, ""
    for name, value in params:
        if name == "top_k":
            top_k = int_field(value, "top_k")
        elif name == REFINE_PARAM:
            refine = value
        else:
            raise InvalidArgument(f"unknown parameter {name!r}; allowed: {', '.join(_OUTFIT_PARAMS)}")
    return SearchOptions(top_k=top_k, refine_text=refine)


def check_query_text(request: web.Request) -> None:
    """Refuse a query string whose percent-escapes are not UTF-8 (a lone surrogate's %ED%A0%80, a stray %FF): the
    decoder would put U+FFFD in their place, and a filter would then search for that instead of being refused."""
    try:
        urllib.parse.unquote_to_bytes(request.rel_url.raw_query_string).decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidArgument(
            f"the query string is not UTF-8 text: its percent-escapes decode to a byte sequence that is not"
            f" ({error.reason} at byte {error.start})"
        ) from None


async def read_photo(request: web.Request, body_limit: int) -> tuple[bytes, list[tuple[str, str]]]:
    """The photo of a photo search (a multipart 'image' field or the raw body) and its parameters (the query
    string's, then the multipart form's other fields)."""
    params = list(request.query.items())
    content_type = request.content_type
    if content_type == "multipart/form-data":
        fields = await read_multipart(request, body_limit)
        image = single_field(fields, "image")
        if image is None:
            raise InvalidArgument("the multipart body has no 'image' field; attach the photo as image=@photo.jpg")
        for name, values in fields.items():
            if name != "image":
                params.extend((name, form_text(value, name)) for value, _ in values)
        return image, params
    if content_type in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
        raise web.HTTPUnsupportedMediaType(
            text="send the photo as multipart/form-data (field 'image') or as the raw request body"
            " with an image/* or application/octet-stream content type"
        )
    return await body_of(request), params


def load_json(text: bytes | str, what: str) -> Any:
    """`fashionsearch.parsing.parse_json`; its error as a 400."""
    try:
        return parse_json(text)
    except ValueError as bad:
        raise InvalidArgument(f"{what} is {bad}") from None


async def read_json(request: web.Request) -> dict[str, Any]:
    body = load_json(await body_of(request), "the request body")
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return body


async def read_multipart(request: web.Request, limit: int) -> dict[str, list[tuple[bytes, str | None]]]:
    """Every part of a multipart/form-data body: name -> [(bytes, filename)], at most `limit` bytes in all."""
    body = await body_of(request)
    # Its high-water mark above the whole body: the body is already read, and a reader over the connection's
    # protocol would otherwise pause the connection's parser (an AssertionError in aiohttp) for a body over 2 chunks.
    stream = StreamReader(request.protocol, max(READ_CHUNK, len(body)), loop=asyncio.get_running_loop())
    stream.feed_data(body)
    stream.feed_eof()
    try:
        return await _read_parts(MultipartReader(request.headers, stream), limit)
    except ValueError as bad:  # aiohttp's word for a body (or boundary) that is not multipart
        raise InvalidArgument(f"the body is not valid multipart/form-data: {bad}") from None
    except http_exceptions.HttpProcessingError as bad:  # a part's headers are not valid HTTP headers
        raise InvalidArgument(f"the body is not valid multipart/form-data: {bad.message}") from None


async def _read_parts(reader: MultipartReader, limit: int) -> dict[str, list[tuple[bytes, str | None]]]:
    fields: dict[str, list[tuple[bytes, str | None]]] = {}
    total = 0
    while True:
        part = await reader.next()
        if part is None:
            return fields
        if not isinstance(part, BodyPartReader) or not part.name:
            raise InvalidArgument("every part of the multipart body must be a named form field")
        data = bytearray()
        while chunk := await part.read_chunk(READ_CHUNK):
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge()
            data.extend(chunk)
        fields.setdefault(part.name, []).append((bytes(data), part.filename))


def form_text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"form field {name!r} is not UTF-8 text") from None


def single_field(fields: Mapping[str, list[tuple[bytes, str | None]]], name: str) -> bytes | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument(f"form field {name!r} is given {len(values)} times; send it once")
    return values[0][0]


#: A request payload's JSON key -> the stored payload key: ItemPayload's field names, and (deprecated, read for one
#: version) version 0.1's, the stored keys themselves.
PAYLOAD_KEYS = {**{key: key for key in PROTO_PAYLOAD_FIELDS.values()}, **PROTO_PAYLOAD_FIELDS}


def payload_from_json(value: Any) -> dict[str, Any]:
    """A catalogue payload from JSON (ItemPayload's field names, or version 0.1's): known fields are type-checked,
    unknown ones left for the service to refuse."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument('payload must be a JSON object such as {"name": "...", "sub_category": "Topwear"}')
    payload: dict[str, Any] = {}
    for name, item in value.items():
        key = PAYLOAD_KEYS.get(name, str(name))
        if key in payload:
            raise InvalidArgument(f"payload field {name!r} is given twice: under its name and its version 0.1 name")
        if key == "year":
            payload[key] = 0 if item in (None, "") else int_field(item, "payload year")
        elif item is None:
            payload[key] = ""
        elif isinstance(item, str):
            payload[key] = item
        else:
            raise InvalidArgument(f"payload field {name!r} must be a string, got {item!r}")
    return payload
