"""The gateway's HTTP/JSON API and web page, served by aiohttp on the same event loop as the gRPC server.

Every endpoint calls the same GatewayService as the gRPC servicer, so validation and errors are the same; a
FashionSearchError becomes its HTTP status (fashionsearch/errors.py) with a JSON body
``{"error": {"status": 400, "code": "INVALID_ARGUMENT", "message": "..."}}``.

Product images: a payload's ``image_ref`` is either an http(s) URL (handed to browsers only when its host is in
GATEWAY_IMAGE_URL_HOSTS) or a path relative to GATEWAY_IMAGE_ROOT (the catalogue folder the indexer read, e.g.
sample_catalogue/), served under ``/images/``. The gateway stores no image bytes itself.

Request bodies larger than the body limit (Settings.http_body_limit: what one image of GATEWAY_MAX_IMAGE_BYTES
needs in the largest form a request can carry it; GATEWAY_HTTP_MAX_BODY_BYTES can lower it) are refused with 413:
from Content-Length before any of the body is read (also answering ``Expect: 100-continue`` that way), otherwise
while it streams in. Requests beyond the gateway's cap on work in flight, shared with gRPC, are answered 503 with
Retry-After before their body is read (services/gateway/admission.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import BodyPartReader, MultipartReader, hdrs, http_exceptions, web
from grpc_health.v1 import health, health_pb2

from fashionsearch.catalogue import CONTENT_HASH_KEY, PAYLOAD_FIELDS, payload_record
from fashionsearch.classification import AttributePrediction
from fashionsearch.errors import FashionSearchError, InvalidArgument, NotFound, Unavailable
from fashionsearch.parsing import parse_int, parse_json
from fashionsearch.store import FILTER_FIELDS, Hit, StoreError, VectorIndex
from services.gateway import text_http
from services.gateway.admission import Admission, http_admission, refused_response, request_bytes
from services.gateway.domain import (
    CatalogueItem,
    FilterMode,
    ModelId,
    SearchOptions,
)
from services.gateway.observability import (
    http_status_codes,
    metrics_endpoint,
    observe_early_answer,
    observing_middleware,
    send_request_id,
)
from services.gateway.security import (
    API_KEY_HEADER,
    MalformedRequestLog,
    http_middleware,
    http_refusal,
    http_ssl_context,
)
from services.gateway.service import GatewayService
from services.gateway.settings import Settings
from services.gateway.text_http import REFINE_PARAM, REFINE_PARAMETER, search_text_handler, terms_json

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"

FILTER_MODES = {mode.value: mode for mode in FilterMode}
SEARCH_PARAMS = ("top_k", "filter_mode")
FILTER_PREFIX = "filter."
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})
SERVER_HEADER = "fashionsearch"
_READ_CHUNK = 64 * 1024
_DEFAULT_LIST_CHUNK = 1000
#: Where the files under GATEWAY_IMAGE_ROOT (the catalogue folder the image_ref paths are relative to) are served.
CATALOGUE_PREFIX = "/catalogue/"
_CATEGORY_FIELD = "subCategory"
_CATEGORY_TTL_S = 30.0


def error_body(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "code": code, "message": message}}, status=status)


def _check_length(request: web.Request, limit: int) -> web.Response | None:
    length = request.content_length
    if length is not None and length > limit:
        return _too_large(limit, length)
    return None


def _too_large(limit: int, size: int | None = None) -> web.Response:
    size_text = f"{size} bytes" if size is not None else "larger"
    return error_body(
        413,
        "PAYLOAD_TOO_LARGE",
        f"the request body is {size_text}, more than the limit of {limit} bytes (derived from"
        " GATEWAY_MAX_IMAGE_BYTES, lowered by GATEWAY_HTTP_MAX_BODY_BYTES)",
    )


class _BodyTooLarge(Exception):
    pass


def _errors_middleware(max_body_bytes: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refused = _check_length(request, max_body_bytes)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except FashionSearchError as error:
            status = error.http_status
            return error_body(status, error.code.name, error.message)
        except (_BodyTooLarge, web.HTTPRequestEntityTooLarge):
            return _too_large(max_body_bytes)
        except (web.RequestPayloadError, ConnectionResetError) as error:
            # The body breaks its Content-Encoding or chunked framing, or the client left in the middle of it: the
            # client's doing, not a server error. Closing the connection stops aiohttp reading (and reporting) the
            # rest; a client that left gets nothing, and only a debug line is logged, as nginx does.
            if isinstance(error, ConnectionResetError):
                logger.debug("%s %s: the client closed the connection during the body", request.method, request.path)
                detail = "the connection closed before the whole body arrived"
            else:
                detail = str(error).strip().splitlines()[-1].strip()[:200]
            response = error_body(400, "INVALID_ARGUMENT", f"the request body could not be read: {detail}")
            response.force_close()
            return response
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code = error.reason.upper().replace(" ", "_").replace("-", "_")
            message = error.text if error.text and not error.text.startswith(f"{error.status}:") else error.reason
            if error.status == 404:
                message = f"no such endpoint: {request.method} {request.path} (the API is listed at /openapi.json)"
            elif isinstance(error, web.HTTPMethodNotAllowed):
                allowed = ", ".join(sorted(error.allowed_methods))
                message = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
            return error_body(error.status, code, message)
        except Exception:
            logger.exception("unexpected error on %s %s", request.method, request.path)
            return error_body(500, "INTERNAL", "internal error; the server log has the details")

    return errors


# ---- request parsing --------------------------------------------------------------------------------------------


def _int(value: Any, what: str) -> int:
    """An integer by `fashionsearch.parsing.parse_int`'s strict rules (the indexer's too); its error as a 400."""
    try:
        return parse_int(value, what)
    except ValueError as bad:
        raise InvalidArgument(str(bad)) from None


def _item_id(request: web.Request) -> int:
    return _int(request.match_info["id"], "product id")


def _mode(value: str | None, has_filters: bool) -> FilterMode:
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
            top_k = _int(value, "top_k")
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
        mode=_mode(mode, bool(filters)),
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
        filters.append((str(name), tuple(values)))
    top_k = body.get("top_k")
    mode = body.get("filter_mode")
    if mode is not None and not isinstance(mode, str):
        raise InvalidArgument("filter_mode must be a string")
    refine = body.get(REFINE_PARAM) or ""
    if not isinstance(refine, str):
        raise InvalidArgument(f"{REFINE_PARAM} must be a string of words")
    return SearchOptions(
        top_k=None if top_k is None else _int(top_k, "top_k"),
        mode=_mode(mode, bool(filters)),
        filters=tuple(filters),
        refine_text=refine,
    )


def _loads(text: bytes | str, what: str) -> Any:
    """`fashionsearch.parsing.parse_json`; its error as a 400."""
    try:
        return parse_json(text)
    except ValueError as bad:
        raise InvalidArgument(f"{what} is {bad}") from None


async def _read_json(request: web.Request) -> dict[str, Any]:
    body = _loads(await request.read(), "the request body")
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return body


async def _read_multipart(request: web.Request, limit: int) -> dict[str, list[tuple[bytes, str | None]]]:
    """Every part of a multipart/form-data body: name -> [(bytes, filename)], at most `limit` bytes in all."""
    try:
        return await _read_parts(await request.multipart(), limit)
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
        while chunk := await part.read_chunk(_READ_CHUNK):
            total += len(chunk)
            if total > limit:
                raise _BodyTooLarge()
            data.extend(chunk)
        fields.setdefault(part.name, []).append((bytes(data), part.filename))


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"form field {name!r} is not UTF-8 text") from None


def _single(fields: Mapping[str, list[tuple[bytes, str | None]]], name: str) -> bytes | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument(f"form field {name!r} is given {len(values)} times; send it once")
    return values[0][0]


def _payload(value: Any) -> dict[str, Any]:
    """A catalogue payload from JSON: known fields are type-checked, unknown ones left for the service to refuse."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument('payload must be a JSON object such as {"name": "...", "subCategory": "Topwear"}')
    payload: dict[str, Any] = {}
    for key, item in value.items():
        if key == "year":
            payload[key] = 0 if item in (None, "") else _int(item, "payload year")
        elif item is None:
            payload[key] = ""
        elif isinstance(item, str):
            payload[key] = item
        else:
            raise InvalidArgument(f"payload field {key!r} must be a string, got {item!r}")
    return payload


# ---- response shapes --------------------------------------------------------------------------------------------


def model_json(model: ModelId | None) -> dict[str, str] | None:
    if model is None:
        return None
    return {"name": model.name, "version": model.version, "onnx_sha256": model.onnx_sha256}


def attribute_json(attribute: AttributePrediction) -> dict[str, Any]:
    return {
        "attribute": attribute.attribute,
        "labels": [{"label": s.label, "probability": round(float(s.probability), 6)} for s in attribute.labels],
    }


def filters_json(filters: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    return {name: list(values) for name, values in filters.items()}


@dataclass(frozen=True)
class ImageLinks:
    """Turns a payload's image_ref into a URL the browser can load (or None when the gateway cannot serve it).

    A path is served from `root` (the catalogue folder) under /catalogue/, so `images/11292.jpg` is
    /catalogue/images/11292.jpg (until version 0.1 it was /images/images/11292.jpg; that prefix still answers, for
    one version); an http(s) URL is handed on (as the hit's image_url and as the
    redirect of /v1/items/{id}/image) only when its host is in `url_hosts` (GATEWAY_IMAGE_URL_HOSTS), so the
    gateway never sends a browser to a host its operator did not name.
    """

    root: Path | None
    url_hosts: frozenset[str] = frozenset()

    def url(self, ref: str) -> str | None:
        ref = ref.strip()
        if not ref:
            return None
        if ref.startswith(("http://", "https://")):
            return ref if self.allows(ref) else None
        if self.root is None or "\x00" in ref:
            return None
        path = Path(ref)
        if path.is_absolute():
            try:
                path = path.resolve().relative_to(self.root)
            except (ValueError, OSError):
                return None
        return CATALOGUE_PREFIX + urllib.parse.quote(path.as_posix())

    def allows(self, url: str) -> bool:
        """Whether `url` is an http(s) URL on an allowed host. Nothing a browser could read differently from
        urllib passes: no backslash (`https://elsewhere\\@allowed/` takes a browser to elsewhere), no user-info,
        space, control or non-ASCII character."""
        if not url.isascii() or not url.isprintable() or any(c in url for c in " \\@"):
            return False
        try:
            parts = urllib.parse.urlsplit(url)
            host = (parts.hostname or "").rstrip(".")
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and host in self.url_hosts

    def file(self, relative: str) -> Path | None:
        """The file under the root for a /catalogue/ path, or None when there is none (or it lies outside)."""
        if self.root is None or "\x00" in relative:
            return None
        try:
            target = (self.root / relative).resolve()
            if not target.is_relative_to(self.root) or target.suffix.lower() not in IMAGE_SUFFIXES:
                return None
            return target if target.is_file() else None
        except OSError:  # a name too long for the file system, a loop of links
            return None


# ---- the application --------------------------------------------------------------------------------------------


class HttpApi:
    """Request handlers over one GatewayService; health comes from the gRPC server's health servicer."""

    def __init__(
        self,
        service: GatewayService,
        index: VectorIndex,
        settings: Settings,
        health_servicer: health.aio.HealthServicer | None = None,
    ) -> None:
        self._service = service
        self._index = index
        self._settings = settings
        self._health = health_servicer
        self._images = ImageLinks(
            settings.image_root.resolve() if settings.image_root else None, frozenset(settings.image_url_hosts)
        )
        self._categories: tuple[float, list[dict[str, Any]]] | None = None

    def hit_json(self, hit: Hit) -> dict[str, Any]:
        payload = payload_record(hit.payload)
        return {
            "id": hit.id,
            "distance": round(float(hit.distance), 6),
            "payload": payload,
            "image_url": self._images.url(payload["image_ref"]),
        }

    # -- search --

    async def search(self, request: web.Request) -> web.Response:
        params = list(request.query.items())
        content_type = request.content_type
        if content_type == "multipart/form-data":
            fields = await _read_multipart(request, self._settings.http_body_limit)
            image = _single(fields, "image")
            if image is None:
                raise InvalidArgument("the multipart body has no 'image' field; attach the photo as image=@photo.jpg")
            for name, values in fields.items():
                if name != "image":
                    params.extend((name, _text(value, name)) for value, _ in values)
        elif content_type in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
            raise web.HTTPUnsupportedMediaType(
                text="send the photo as multipart/form-data (field 'image') or as the raw request body"
                " with an image/* or application/octet-stream content type"
            )
        else:
            image = await request.read()
        result = await self._service.search(image, options_from_params(params))
        return web.json_response(
            {
                "attributes": [attribute_json(a) for a in result.classification.attributes],
                "suggested_name": result.suggested_name,
                "keywords": list(result.keywords),
                "hits": [self.hit_json(h) for h in result.hits],
                "applied_filters": filters_json(result.applied_filters),
                "classifier_model": model_json(result.classification.model),
                "embedder_model": model_json(result.embedder_model),
                "refine_terms": terms_json(result.refine_terms),
            }
        )

    async def similar(self, request: web.Request) -> web.Response:
        """GET /v1/items/{id}/similar: more like this, options in the query string."""
        return await self._similar(_item_id(request), options_from_params(list(request.query.items())))

    async def search_by_id(self, request: web.Request) -> web.Response:
        """POST /v1/search/by-id with a JSON body {id, top_k, filter_mode, filters}."""
        body = await _read_json(request)
        if "id" not in body:
            raise InvalidArgument("the body needs the product 'id'")
        return await self._similar(_int(body["id"], "product id"), options_from_json(body))

    async def _similar(self, item_id: int, options: SearchOptions) -> web.Response:
        result = await self._service.search_by_id(item_id, options)
        return web.json_response(
            {
                "hits": [self.hit_json(h) for h in result.hits],
                "applied_filters": filters_json(result.applied_filters),
                "refine_terms": terms_json(result.refine_terms),
            }
        )

    # -- catalogue --

    async def get_item(self, request: web.Request) -> web.Response:
        item = await self._service.get(_item_id(request))
        payload = payload_record(item.payload)
        return web.json_response(
            {
                "id": item.id,
                "payload": payload,
                "content_hash": str(item.payload.get(CONTENT_HASH_KEY, "")),
                "image_url": self._images.url(payload["image_ref"]),
            }
        )

    async def item_image(self, request: web.Request) -> web.StreamResponse:
        item = await self._service.get(_item_id(request))
        url = self._images.url(str(item.payload.get("image_ref") or ""))
        if url is None:
            raise NotFound(
                f"product {item.id} has no image the gateway can serve (files under GATEWAY_IMAGE_ROOT, URLs on the"
                " hosts of GATEWAY_IMAGE_URL_HOSTS)"
            )
        raise web.HTTPFound(url)

    async def put_item(self, request: web.Request) -> web.Response:
        """PUT /v1/items/{id}: multipart with 'image' (the photo), optional 'payload' (JSON) and 'content_hash'."""
        item_id = _item_id(request)
        if request.content_type != "multipart/form-data":
            raise web.HTTPUnsupportedMediaType(
                text="send multipart/form-data with an 'image' file and an optional 'payload' JSON field"
            )
        fields = await _read_multipart(request, self._settings.http_body_limit)
        unknown = sorted(set(fields) - {"image", "payload", "content_hash"})
        if unknown:
            raise InvalidArgument(f"unknown form field(s) {', '.join(unknown)}; allowed: image, payload, content_hash")
        image = _single(fields, "image")
        if image is None:
            raise InvalidArgument("the multipart body has no 'image' field")
        raw_payload = _single(fields, "payload")
        payload = _payload(_loads(_text(raw_payload, "payload"), "form field 'payload'")) if raw_payload else {}
        content_hash = _single(fields, "content_hash")
        item = CatalogueItem(
            id=item_id,
            image=image,
            payload=payload,
            content_hash=_text(content_hash, "content_hash") if content_hash else "",
        )
        outcomes = await self._upsert([item])
        if outcomes[0]["error"] is not None:
            error = outcomes[0]["error"]
            return error_body(error["status"], error["code"], error["message"])
        return web.json_response(outcomes[0])

    async def post_items(self, request: web.Request) -> web.Response:
        """POST /v1/items: {"items": [{id, image_base64, payload, content_hash}]} -> one result per item."""
        body = await _read_json(request)
        raw_items = body.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            raise InvalidArgument('the body needs a non-empty "items" list')
        items = []
        for position, raw in enumerate(raw_items):
            if not isinstance(raw, dict):
                raise InvalidArgument(f"items[{position}] must be an object")
            try:
                image = base64.b64decode(str(raw.get("image_base64", "")), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArgument(f"items[{position}].image_base64 is not valid base64") from None
            items.append(
                CatalogueItem(
                    id=_int(raw.get("id"), f"items[{position}].id"),
                    image=image,
                    payload=_payload(raw.get("payload")),
                    content_hash=str(raw.get("content_hash") or ""),
                )
            )
        return web.json_response({"results": await self._upsert(items)})

    async def _upsert(self, items: list[CatalogueItem]) -> list[dict[str, Any]]:
        async def stream() -> AsyncIterator[CatalogueItem]:
            for item in items:
                yield item

        results = []
        async for outcome in self._service.upsert(stream()):
            error = None
            if outcome.error is not None:
                status = outcome.error.http_status
                error = {"status": status, "code": outcome.error.code.name, "message": outcome.error.message}
            results.append({"id": outcome.id, "upserted": error is None, "error": error})
        self._categories = None
        return results

    async def delete_item(self, request: web.Request) -> web.Response:
        count = await self._service.delete([_item_id(request)])
        self._categories = None
        return web.json_response({"item_count": count})

    async def delete_items(self, request: web.Request) -> web.Response:
        """POST /v1/items/delete {"ids": [...]}: ids that do not exist are ignored, as in gRPC DeleteItems."""
        body = await _read_json(request)
        ids = body.get("ids")
        if not isinstance(ids, list):
            raise InvalidArgument('the body needs an "ids" list')
        count = await self._service.delete([_int(i, "product id") for i in ids])
        self._categories = None
        return web.json_response({"item_count": count})

    async def list_items(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/items: every item's id and content hash, one JSON object per line (NDJSON), streamed.

        `chunk_size` is how many lines are read from the store and written at a time, not a page: the response
        always holds every item. (`page_size`, its name until version 0.1, is still read, for one version.)
        A failure after the first chunk ends the stream with an {"error": {...}} line; a client that goes away
        mid-stream is an ordinary event, logged as one INFO line."""
        params = dict(request.query)
        if "page_size" in params and "chunk_size" not in params:
            params["chunk_size"] = params.pop("page_size")
        chunk_size = _int(params.pop("chunk_size", _DEFAULT_LIST_CHUNK), "chunk_size")
        if params:
            raise InvalidArgument(f"unknown parameter(s) {', '.join(sorted(params))}; allowed: chunk_size")
        if not 1 <= chunk_size <= 10000:
            raise InvalidArgument(f"chunk_size must be between 1 and 10000, got {chunk_size}")
        pages = self._service.list_digests(chunk_size)
        first = await anext(pages, None)
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/x-ndjson"})
        await response.prepare(request)
        page, written = first, 0
        try:
            while page is not None:
                lines = "".join(json.dumps({"id": i, "content_hash": h}) + "\n" for i, h in page)
                await response.write(lines.encode())
                written += len(page)
                page = await anext(pages, None)
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError: the client closed the connection
            logger.info("the client closed the connection after %d items of GET /v1/items", written)
            return response
        except FashionSearchError as error:
            # The status line is gone already: the last line says the listing is incomplete, and why.
            logger.warning("listing items failed after the first page: %s", error.message)
            status = error.http_status
            line = {"error": {"status": status, "code": error.code.name, "message": error.message}}
            await response.write((json.dumps(line) + "\n").encode())
        await response.write_eof()
        return response

    async def stats(self, request: web.Request) -> web.Response:
        stats = await self._service.stats()
        stored = stats.stored_embedder
        return web.json_response(
            {
                "item_count": stats.item_count,
                "stored_embedder": {"name": stored.model, "version": stored.version} if stored else None,
                "running_embedder": model_json(stats.running_embedder),
                "classifier": model_json(stats.classifier),
            }
        )

    async def categories(self, request: web.Request) -> web.Response:
        """GET /v1/categories: the subCategory values in the catalogue with their counts (for the page's filter)."""
        now = time.monotonic()
        if self._categories is None or now - self._categories[0] > _CATEGORY_TTL_S:
            self._categories = (now, await self._count_categories())
        return web.json_response({"field": _CATEGORY_FIELD, "values": self._categories[1]})

    async def _count_categories(self) -> list[dict[str, Any]]:
        def count() -> dict[str, int]:
            counts: dict[str, int] = {}
            if self._index.info() is None:
                return counts
            for _, payload in self._index.scroll([_CATEGORY_FIELD], 1000):
                value = str(payload.get(_CATEGORY_FIELD) or "")
                if value:
                    counts[value] = counts.get(value, 0) + 1
            return counts

        try:
            counts = await asyncio.wait_for(asyncio.to_thread(count), self._settings.store_timeout_s * 4)
        except TimeoutError:
            raise Unavailable("the vector store did not list the categories in time") from None
        except StoreError as error:
            raise Unavailable(f"the vector store is unavailable: {error}") from None
        return [{"value": v, "count": n} for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    # -- operations --

    async def healthz(self, request: web.Request) -> web.Response:
        """The gRPC health status of the gateway (or of ?service=<full name>): 200 when SERVING, else 503."""
        service = request.query.get("service", "")
        status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if self._health is not None:
            try:
                reply = await self._health.Check(health_pb2.HealthCheckRequest(service=service), None)
                status = reply.status
            except AttributeError:  # Check() aborts through the (absent) context: the service is unknown.
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        serving = status == health_pb2.HealthCheckResponse.SERVING
        return web.json_response({"status": name}, status=200 if serving else 503)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self._settings))

    async def images(self, request: web.Request) -> web.StreamResponse:
        if "\x00" in request.match_info["path"]:  # as nginx does: no file name holds one, so the request is bad
            raise InvalidArgument("the image path holds a NUL character (%00)")
        target = self._images.file(request.match_info["path"])
        if target is None:
            if self._images.root is None:
                raise NotFound("product images are not served: GATEWAY_IMAGE_ROOT is not set")
            raise NotFound(f"no image at {request.match_info['path']!r}")
        return web.FileResponse(target, headers={hdrs.CACHE_CONTROL: "public, max-age=3600"})

    async def index_page(self, request: web.Request) -> web.StreamResponse:
        headers = {hdrs.CACHE_CONTROL: "no-cache", "Content-Security-Policy": self._page_policy}
        return web.FileResponse(WEB_DIR / "index.html", headers=headers)

    @property
    def _page_policy(self) -> str:
        """The page loads only its own script, style and API, and images from itself (thumbnails, the photo's
        blob: preview) and the allowed image hosts: an injected script could neither run nor send a read key the
        page keeps in sessionStorage anywhere else."""
        hosts = " ".join(f"http://{host} https://{host}" for host in sorted(self._images.url_hosts))
        return (
            f"default-src 'self'; img-src 'self' blob: data: {hosts}".rstrip()
            + "; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    """Name the product, not aiohttp and its version (RFC 9110 leaves the detail to the server; nginx's
    server_tokens off is the usual practice), and have browsers take each response as its declared type.
    aiohttp's own 400 for a request it cannot parse is sent before the application sees it, and keeps aiohttp's
    header (aio-libs/aiohttp#6463)."""
    response.headers[hdrs.SERVER] = SERVER_HEADER
    response.headers["X-Content-Type-Options"] = "nosniff"


def create_app(
    service: GatewayService,
    index: VectorIndex,
    settings: Settings,
    health_servicer: health.aio.HealthServicer | None = None,
    admission: Admission | None = None,
) -> web.Application:
    """The aiohttp application: JSON API under /v1, health, OpenAPI, images and the web page. `admission` is the
    cap on work in flight it shares with the gRPC server (its own one when not given)."""
    limit = settings.http_body_limit
    admission = admission or Admission(settings.max_concurrent_rpcs, settings.max_bytes_in_flight)
    api = HttpApi(service, index, settings, health_servicer)

    def early_refusal(request: web.Request) -> tuple[web.Response, grpc.StatusCode] | None:
        """The answer refusing a request from its headers alone, with the gRPC code it stands for, or None."""
        too_large = _check_length(request, limit)
        if too_large is not None:
            return too_large, grpc.StatusCode.RESOURCE_EXHAUSTED
        denied = http_refusal(settings.api_keys, request)
        if denied is not None:
            return error_body(denied.http_status, denied.code.name, denied.message), denied.code
        if not admission.has_room(request_bytes(request, limit)):
            admission.note_refusal(request.remote)
            return refused_response(admission), grpc.StatusCode.RESOURCE_EXHAUSTED
        return None

    async def expect(request: web.Request) -> web.Response | None:
        """Answer `Expect: 100-continue` with 413 when Content-Length is over the limit, 401/403 when the API key
        does not allow the call, or 503 when the gateway is at its cap on work in flight, before the body is sent."""
        answer = early_refusal(request)
        if answer is not None:  # aiohttp sends it without running the middlewares: counted and logged here
            observe_early_answer(request, *answer)
            return answer[0]
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    # HTTP status -> the gRPC code of the error that answers with it, so errors are counted by the same kinds.
    observe = observing_middleware(http_status_codes())
    middlewares = [
        observe,
        _errors_middleware(limit),
        http_middleware(settings.api_keys),
        http_admission(admission, limit),
    ]
    app = web.Application(client_max_size=limit, middlewares=middlewares)
    app.on_response_prepare.append(_server_header)
    app.on_response_prepare.append(send_request_id)
    app.router.add_post("/v1/search", api.search, expect_handler=expect)
    app.router.add_post("/v1/search/by-id", api.search_by_id, expect_handler=expect)
    app.router.add_post("/v1/search/text", search_text_handler(service, api), expect_handler=expect)
    app.router.add_get("/v1/items", api.list_items)
    app.router.add_post("/v1/items", api.post_items, expect_handler=expect)
    app.router.add_post("/v1/items/delete", api.delete_items, expect_handler=expect)
    app.router.add_get("/v1/items/{id}", api.get_item)
    app.router.add_put("/v1/items/{id}", api.put_item, expect_handler=expect)
    app.router.add_delete("/v1/items/{id}", api.delete_item)
    app.router.add_get("/v1/items/{id}/similar", api.similar)
    app.router.add_get("/v1/items/{id}/image", api.item_image)
    app.router.add_get("/v1/stats", api.stats)
    app.router.add_get("/v1/categories", api.categories)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/openapi.json", api.openapi)
    if settings.metrics_port is not None and settings.metrics_port == settings.http_port:
        app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get(CATALOGUE_PREFIX + "{path:.+}", api.images)
    app.router.add_get("/images/{path:.+}", api.images)  # the 0.1 prefix, kept for one version (deprecated)
    app.router.add_get("/", api.index_page)
    app.router.add_static("/static/", WEB_DIR, append_version=False)
    return app


class HttpServer:
    """The running HTTP site; close() is idempotent."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()


async def start_http(
    settings: Settings,
    service: GatewayService,
    index: VectorIndex,
    health_servicer: health.aio.HealthServicer | None = None,
    admission: Admission | None = None,
) -> HttpServer:
    """Serve the HTTP API and page on settings.host:settings.http_port (0 picks a free port) in this event loop."""
    if settings.http_port is None:
        raise ValueError("HTTP is disabled (http_port is None)")
    host = settings.host.strip("[]") or "0.0.0.0"
    runner = web.AppRunner(
        create_app(service, index, settings, health_servicer, admission),
        access_log=None,
        shutdown_timeout=settings.grace_s,
        logger=MalformedRequestLog(),
    )
    await runner.setup()
    site = web.TCPSite(
        runner, host, settings.http_port, ssl_context=http_ssl_context(settings.tls_cert_file, settings.tls_key_file)
    )
    try:
        await site.start()
    except OSError as bad:
        await runner.cleanup()
        raise OSError(f"cannot listen for HTTP on {host}:{settings.http_port}: {bad.strerror or bad}") from None
    port = int(runner.addresses[0][1])
    logger.info(
        "HTTP API and web page on %s:%s", host, port, extra={"http_port": port, "image_root": str(settings.image_root)}
    )
    return HttpServer(runner, host, port)


# ---- OpenAPI ----------------------------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid argument: undecodable, empty or oversized image, bad top_k, unknown filter field",
        404: "Unknown product id",
        409: "Failed precondition: the stored vectors come from another embedder version; re-index",
        413: "Request body over the limit (derived from GATEWAY_MAX_IMAGE_BYTES; GATEWAY_HTTP_MAX_BODY_BYTES)",
        401: "No API key, or an unknown one (see GATEWAY_READ_API_KEYS, GATEWAY_WRITE_API_KEYS)",
        403: "The key allows searches only, or catalogue writes are turned off",
        415: "Unsupported content type",
        503: "A dependency (classifier, embedder, vector store) is unavailable, or the gateway is at its limit of"
        " requests in flight (then with Retry-After)",
        504: "A dependency did not answer within its deadline",
    }
    return {str(s): _json(_ref("Error"), reasons[s]) for s in statuses}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the HTTP API."""
    string = {"type": "string"}
    integer = {"type": "integer"}
    id_param = {"name": "id", "in": "path", "required": True, "schema": {**integer, "minimum": 1}}
    search_params = [
        {
            "name": "top_k",
            "in": "query",
            "schema": {**integer, "minimum": 1, "maximum": settings.max_top_k, "default": settings.default_top_k},
        },
        {"name": "filter_mode", "in": "query", "schema": _ref("FilterMode")},
        {
            "name": "filter.{field}",
            "in": "query",
            "description": "Explicit filter, repeatable: filter.subCategory=Topwear&filter.baseColour=Black. "
            f"Fields: {', '.join(FILTER_FIELDS)}. Giving one implies filter_mode=explicit.",
            "schema": string,
        },
        REFINE_PARAMETER,
    ]
    model = {
        "type": ["object", "null"],
        "properties": {"name": string, "version": string, "onnx_sha256": string},
    }
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": _ref("ErrorDetail")}},
        "ErrorDetail": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": integer,
                "code": {**string, "description": "gRPC status name, e.g. INVALID_ARGUMENT"},
                "message": string,
            },
        },
        "FilterMode": {
            "type": "string",
            "enum": list(FILTER_MODES),
            "description": "predicted_subcategory (default): the predicted subCategory (or, for by-id, the item's);"
            " none: the whole catalogue; explicit: the filter.<field> parameters.",
        },
        "Payload": {
            "type": "object",
            "properties": {k: (integer if k == "year" else string) for k in PAYLOAD_FIELDS},
        },
        "Hit": {
            "type": "object",
            "properties": {
                "id": integer,
                "distance": {"type": "number", "description": "Euclidean distance between embeddings"},
                "payload": _ref("Payload"),
                "image_url": {"type": ["string", "null"]},
            },
        },
        "Filters": {"type": "object", "additionalProperties": {"type": "array", "items": string}},
        "SearchResponse": {
            "type": "object",
            "properties": {
                "attributes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "attribute": string,
                            "labels": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {"label": string, "probability": {"type": "number"}},
                                },
                            },
                        },
                    },
                },
                "suggested_name": string,
                "keywords": {"type": "array", "items": string},
                "hits": {"type": "array", "items": _ref("Hit")},
                "applied_filters": _ref("Filters"),
                "classifier_model": model,
                "embedder_model": model,
                "refine_terms": {"type": "array", "items": _ref("QueryTerm")},
            },
        },
        "SimilarResponse": {
            "type": "object",
            "properties": {
                "hits": {"type": "array", "items": _ref("Hit")},
                "applied_filters": _ref("Filters"),
                "refine_terms": {"type": "array", "items": _ref("QueryTerm")},
            },
        },
        "SearchByIdRequest": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": integer,
                "top_k": integer,
                "filter_mode": _ref("FilterMode"),
                "filters": _ref("Filters"),
                "refine": {**string, "description": "words that refine the search, e.g. 'in red'"},
            },
        },
        "Item": {
            "type": "object",
            "properties": {
                "id": integer,
                "payload": _ref("Payload"),
                "content_hash": string,
                "image_url": {"type": ["string", "null"]},
            },
        },
        "UpsertResult": {
            "type": "object",
            "properties": {
                "id": integer,
                "upserted": {"type": "boolean"},
                "error": {"oneOf": [{"type": "null"}, _ref("ErrorDetail")]},
            },
        },
        "ItemCount": {"type": "object", "properties": {"item_count": integer}},
        "Stats": {
            "type": "object",
            "properties": {
                "item_count": integer,
                "stored_embedder": model,
                "running_embedder": model,
                "classifier": model,
            },
        },
        "Health": {"type": "object", "properties": {"status": string}},
        **text_http.openapi_schemas(settings.max_top_k),
    }
    image_body = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}},
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }
    paths: dict[str, Any] = {
        "/v1/search": {
            "post": {
                "summary": "Search by photo: predicted attributes, suggested name and keywords, similar products",
                "parameters": search_params,
                "requestBody": {"required": True, "content": image_body},
                "responses": {
                    "200": _json(_ref("SearchResponse"), "Search result"),
                    **_errors(400, 409, 413, 415, 503, 504),
                },
            }
        },
        "/v1/search/by-id": {
            "post": {
                "summary": "More like this: products similar to a catalogue product (the product itself excluded)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SearchByIdRequest")}},
                },
                "responses": {"200": _json(_ref("SimilarResponse"), "Similar products"), **_errors(400, 404, 503, 504)},
            }
        },
        "/v1/items/{id}/similar": {
            "get": {
                "summary": "More like this (query-string form of /v1/search/by-id)",
                "parameters": [id_param, *search_params],
                "responses": {"200": _json(_ref("SimilarResponse"), "Similar products"), **_errors(400, 404, 503, 504)},
            }
        },
        "/v1/items": {
            "get": {
                "summary": "Every item's id and content hash, one JSON object per line",
                "parameters": [
                    {
                        "name": "chunk_size",
                        "in": "query",
                        "description": "Lines read and written at a time (every item is listed whatever its value)",
                        "schema": {**integer, "minimum": 1, "maximum": 10000, "default": _DEFAULT_LIST_CHUNK},
                    },
                    {
                        "name": "page_size",
                        "in": "query",
                        "description": "chunk_size's name until version 0.1",
                        "deprecated": True,
                        "schema": {**integer, "minimum": 1, "maximum": 10000},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "NDJSON lines {id, content_hash}",
                        "content": {"application/x-ndjson": {"schema": string}},
                    },
                    **_errors(400, 503, 504),
                },
            },
            "post": {
                "summary": "Upsert a batch of items; one result per item, in order",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["items"],
                                "properties": {
                                    "items": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id", "image_base64"],
                                            "properties": {
                                                "id": integer,
                                                "image_base64": string,
                                                "payload": _ref("Payload"),
                                                "content_hash": string,
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"results": {"type": "array", "items": _ref("UpsertResult")}}},
                        "Per-item results",
                    ),
                    **_errors(400, 413),
                },
            },
        },
        "/v1/items/delete": {
            "post": {
                "summary": "Delete items by id (unknown ids are ignored)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"ids": {"type": "array", "items": integer}}}
                        }
                    },
                },
                "responses": {"200": _json(_ref("ItemCount"), "Items left"), **_errors(400, 503, 504)},
            }
        },
        "/v1/items/{id}": {
            "get": {
                "summary": "One catalogue item",
                "parameters": [id_param],
                "responses": {"200": _json(_ref("Item"), "The item"), **_errors(400, 404, 503, 504)},
            },
            "put": {
                "summary": "Upsert one item: its photo and payload",
                "parameters": [id_param],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {
                                    "image": {"type": "string", "format": "binary"},
                                    "payload": {"type": "string", "description": "JSON object of Payload fields"},
                                    "content_hash": string,
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("UpsertResult"), "Stored"), **_errors(400, 409, 413, 415, 503, 504)},
            },
            "delete": {
                "summary": "Delete one item (an unknown id is not an error)",
                "parameters": [id_param],
                "responses": {"200": _json(_ref("ItemCount"), "Items left"), **_errors(400, 503, 504)},
            },
        },
        "/v1/items/{id}/image": {
            "get": {
                "summary": "Redirect to the item's image: a GATEWAY_IMAGE_ROOT file or a URL on a"
                " GATEWAY_IMAGE_URL_HOSTS host",
                "parameters": [id_param],
                "responses": {"302": {"description": "Location of the image"}, **_errors(400, 404)},
            }
        },
        "/v1/stats": {
            "get": {
                "summary": "Item count and the models in use",
                "responses": {"200": _json(_ref("Stats"), "Statistics"), **_errors(503, 504)},
            }
        },
        "/v1/categories": {
            "get": {
                "summary": "The subCategory values in the catalogue, most frequent first",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "field": string,
                                "values": {
                                    "type": "array",
                                    "items": {"type": "object", "properties": {"value": string, "count": integer}},
                                },
                            },
                        },
                        "Values and counts",
                    ),
                    **_errors(503),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "The gateway's gRPC health status",
                "parameters": [{"name": "service", "in": "query", "schema": string}],
                "responses": {
                    "200": _json(_ref("Health"), "SERVING"),
                    "503": _json(_ref("Health"), "NOT_SERVING or SERVICE_UNKNOWN"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (no API key; on GATEWAY_METRICS_PORT instead when that is set apart)",
                "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {}}}},
            }
        },
        "/catalogue/{path}": {
            "get": {
                "summary": "A product image under GATEWAY_IMAGE_ROOT (what a hit's image_url points to)",
                "parameters": [{"name": "path", "in": "path", "required": True, "schema": string}],
                "responses": {"200": {"description": "The image file"}, **_errors(404)},
            }
        },
        "/images/{path}": {
            "get": {
                "summary": "The same as /catalogue/{path}: the prefix of version 0.1, answered for one more version",
                "deprecated": True,
                "parameters": [{"name": "path", "in": "path", "required": True, "schema": string}],
                "responses": {"200": {"description": "The image file"}, **_errors(404)},
            }
        },
    }
    paths.update(text_http.openapi_paths(_errors))
    # /v1 needs a key as services/gateway/security.py decides: writes always, reads when read keys are set.
    for path, operations in paths.items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}, {}]
                operation["responses"].update(_errors(401, 403))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fashionsearch gateway HTTP API",
            "version": "1",
            "description": "JSON mirror of the fashionsearch.v1.Gateway gRPC service. Errors carry the gRPC code"
            " name and a message: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 409 FAILED_PRECONDITION, 503 UNAVAILABLE,"
            " 504 DEADLINE_EXCEEDED.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key as a bearer token"},
                "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
            },
        },
    }
