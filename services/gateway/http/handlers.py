"""The HTTP API's request handlers: each reads its request (parsing.py), calls the GatewayService use case the gRPC
servicer calls too, and answers JSON (responses.py)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from grpc_health.v1 import health_pb2

from fashionsearch.catalogue import CONTENT_HASH_KEY, payload_by_field_name
from fashionsearch.errors import FashionSearchError, InvalidArgument, NotFound
from fashionsearch.serving import HealthServicer
from fashionsearch.store import Hit
from services.gateway.domain import CatalogueItem, SearchOptions
from services.gateway.http.openapi import openapi_document
from services.gateway.http.parsing import (
    DEFAULT_LIST_CHUNK,
    crop_of,
    form_text,
    int_field,
    item_id_of,
    load_json,
    options_from_json,
    options_from_params,
    outfit_options,
    payload_from_json,
    read_json,
    read_multipart,
    read_photo,
    single_field,
    text_options,
)
from services.gateway.http.responses import (
    ImageLinks,
    answer,
    attribute_json,
    box_json,
    error_body,
    filters_json,
    model_json,
    terms_json,
)
from services.gateway.predicted import CATEGORY_FIELD
from services.gateway.service import GatewayService, refuse_repeated_ids
from services.gateway.settings import Settings

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class HttpApi:
    """Request handlers over one GatewayService (the gRPC servicer's too); health is the gRPC server's."""

    def __init__(
        self, service: GatewayService, settings: Settings, health_servicer: HealthServicer | None = None
    ) -> None:
        self._service = service
        self._settings = settings
        self._health = health_servicer
        self._images = ImageLinks(
            settings.image_root.resolve() if settings.image_root else None, frozenset(settings.image_url_hosts)
        )

    def hit_json(self, hit: Hit) -> dict[str, Any]:
        payload = payload_by_field_name(hit.payload)
        return {
            "id": hit.id,
            "distance": round(float(hit.distance), 6),
            "payload": payload,
            "image_url": self._images.url(payload["image_ref"]),
        }

    # -- search --

    @property
    def body_limit(self) -> int:
        return self._settings.http_body_limit

    async def search(self, request: web.Request) -> web.Response:
        image, params = await read_photo(request, self.body_limit)
        crop, params = crop_of(params)
        options = options_from_params(params)
        result = await self._service.search(image, replace(options, crop=crop) if crop else options)
        return answer(
            request,
            {
                "attributes": [attribute_json(a) for a in result.classification.attributes],
                "suggested_name": result.suggested_name,
                "keywords": list(result.keywords),
                "hits": [self.hit_json(h) for h in result.hits],
                "applied_filters": filters_json(result.applied_filters),
                "classifier_model": model_json(result.classification.model),
                "embedder_model": model_json(result.embedder_model),
                "refine_terms": terms_json(result.refine_terms),
                "reason": result.reason,
            },
        )

    async def search_outfit(self, request: web.Request) -> web.Response:
        """POST /v1/search/outfit: every product in the photo, its box in whole pixels of the uploaded photo, each
        searched within its predicted subCategory; `attributes` and `hits` as in /v1/search."""
        image, params = await read_photo(request, self.body_limit)
        result = await self._service.search_outfit(image, outfit_options(params))
        items = [
            {
                "box": box_json(item.detection, result.size),
                "group": item.detection.group,
                "score": round(float(item.detection.score), 4),
                "attributes": [attribute_json(a) for a in item.classification.attributes],
                "suggested_name": item.classification.suggested_name,
                "keywords": list(item.keywords),
                "hits": [self.hit_json(h) for h in item.hits],
            }
            for item in result.items
        ]
        return web.json_response({"items": items})

    async def search_text(self, request: web.Request) -> web.Response:
        """POST /v1/search/text {"query": "women blue kurtas", "top_k": 5, "match": "both", "filters": {...}}."""
        query, options = text_options(await read_json(request))
        result = await self._service.search_text(query, options)
        return answer(
            request,
            {
                "hits": [self.hit_json(h) for h in result.hits],
                "terms": terms_json(result.terms),
                "unknown_words": list(result.unknown_words),
                "applied_filters": filters_json(result.applied_filters),
                "reason": result.reason,
                "text_model": model_json(result.text_model),
                "embedder_model": model_json(result.embedder_model),
            },
        )

    async def similar(self, request: web.Request) -> web.Response:
        """GET /v1/items/{id}/similar: more like this, options in the query string."""
        return await self._similar(request, item_id_of(request), options_from_params(list(request.query.items())))

    async def search_by_id(self, request: web.Request) -> web.Response:
        """POST /v1/search/by-id with a JSON body {id, top_k, filter_mode, filters}."""
        body = await read_json(request)
        if "id" not in body:
            raise InvalidArgument("the body needs the product 'id'")
        return await self._similar(request, int_field(body["id"], "product id"), options_from_json(body))

    async def _similar(self, request: web.Request, item_id: int, options: SearchOptions) -> web.Response:
        result = await self._service.search_by_id(item_id, options)
        return answer(
            request,
            {
                "hits": [self.hit_json(h) for h in result.hits],
                "applied_filters": filters_json(result.applied_filters),
                "refine_terms": terms_json(result.refine_terms),
                "reason": result.reason,
            },
        )

    # -- catalogue --

    async def get_item(self, request: web.Request) -> web.Response:
        item = await self._service.get(item_id_of(request))
        payload = payload_by_field_name(item.payload)
        return answer(
            request,
            {
                "id": item.id,
                "payload": payload,
                "content_hash": str(item.payload.get(CONTENT_HASH_KEY, "")),
                "image_url": self._images.url(payload["image_ref"]),
            },
        )

    async def item_image(self, request: web.Request) -> web.StreamResponse:
        item = await self._service.get(item_id_of(request))
        url = self._images.url(str(item.payload.get("image_ref") or ""))
        if url is None:
            raise NotFound(
                f"product {item.id} has no image the gateway can serve (files under GATEWAY_IMAGE_ROOT, URLs on the"
                " hosts of GATEWAY_IMAGE_URL_HOSTS)"
            )
        raise web.HTTPFound(url)

    async def put_item(self, request: web.Request) -> web.Response:
        """PUT /v1/items/{id}: multipart with 'image' (the photo), optional 'payload' (JSON) and 'content_hash'."""
        item_id = item_id_of(request)
        if request.content_type != "multipart/form-data":
            raise web.HTTPUnsupportedMediaType(
                text="send multipart/form-data with an 'image' file and an optional 'payload' JSON field"
            )
        fields = await read_multipart(request, self._settings.http_body_limit)
        unknown = sorted(set(fields) - {"image", "payload", "content_hash"})
        if unknown:
            raise InvalidArgument(f"unknown form field(s) {', '.join(unknown)}; allowed: image, payload, content_hash")
        image = single_field(fields, "image")
        if image is None:
            raise InvalidArgument("the multipart body has no 'image' field")
        raw_payload = single_field(fields, "payload")
        payload = (
            payload_from_json(load_json(form_text(raw_payload, "payload"), "form field 'payload'"))
            if raw_payload
            else {}
        )
        content_hash = single_field(fields, "content_hash")
        item = CatalogueItem(
            id=item_id,
            image=image,
            payload=payload,
            content_hash=form_text(content_hash, "content_hash") if content_hash else "",
        )
        outcomes = await self._upsert([item])
        if outcomes[0]["error"] is not None:
            error = outcomes[0]["error"]
            return error_body(error["status"], error["code"], error["message"])
        return web.json_response(outcomes[0])

    async def post_items(self, request: web.Request) -> web.Response:
        """POST /v1/items: {"items": [{id, image_base64, payload, content_hash}]} -> one result per item."""
        body = await read_json(request)
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
                    id=int_field(raw.get("id"), f"items[{position}].id"),
                    image=image,
                    payload=payload_from_json(raw.get("payload")),
                    content_hash=str(raw.get("content_hash") or ""),
                )
            )
        refuse_repeated_ids(items, "the request")
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
        return results

    async def delete_item(self, request: web.Request) -> web.Response:
        count = await self._service.delete([item_id_of(request)])
        return web.json_response({"item_count": count})

    async def delete_items(self, request: web.Request) -> web.Response:
        """POST /v1/items/delete {"ids": [...]}: ids that do not exist are ignored, as in gRPC DeleteItems."""
        body = await read_json(request)
        ids = body.get("ids")
        if not isinstance(ids, list):
            raise InvalidArgument('the body needs an "ids" list')
        count = await self._service.delete([int_field(i, "product id") for i in ids])
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
        chunk_size = int_field(params.pop("chunk_size", DEFAULT_LIST_CHUNK), "chunk_size")
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

    async def backup(self, request: web.Request) -> web.Response:
        made = await self._service.backup()
        return web.json_response(
            {"backup": made.name, "points": made.points, "seconds": made.seconds, "embedder": str(made.embedder)}
        )

    async def compact(self, request: web.Request) -> web.Response:
        done = await self._service.compact()
        return web.json_response(
            {
                "previous": done.previous,
                "collection": done.collection,
                "points": done.points,
                "replayed_writes": done.replayed,
                "seconds": round(done.seconds, 3),
            }
        )

    async def categories(self, request: web.Request) -> web.Response:
        """GET /v1/categories: the subCategory values in the catalogue with their counts (for the page's filter)."""
        counts = await self._service.categories()
        return web.json_response({"field": CATEGORY_FIELD, "values": [{"value": v, "count": n} for v, n in counts]})

    # -- operations --

    async def healthz(self, request: web.Request) -> web.Response:
        """The gRPC health status of the gateway (or of ?service=<full name>): 200 when SERVING, else 503."""
        service = request.query.get("service", "")
        unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        status = self._health.status(service) if self._health is not None else unknown
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
