"""What the HTTP API answers: the JSON shapes of its results and errors, and the links to product images."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from fashionsearch.catalogue import PROTO_PAYLOAD_FIELDS
from fashionsearch.classification import AttributePrediction
from fashionsearch.detection import Detection
from fashionsearch.errors import InvalidArgument
from services.gateway.domain import ModelId, QueryTerm

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})
#: Where the files under GATEWAY_IMAGE_ROOT (the catalogue folder the image_ref paths are relative to) are served.
CATALOGUE_PREFIX = "/catalogue/"


def error_body(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "code": code, "message": message}}, status=status)


def check_length(request: web.Request, limit: int) -> web.Response | None:
    length = request.content_length
    if length is not None and length > limit:
        return too_large(limit, length)
    return None


def too_large(limit: int, size: int | None = None) -> web.Response:
    size_text = f"{size} bytes" if size is not None else "larger"
    return error_body(
        413,
        "PAYLOAD_TOO_LARGE",
        f"the request body is {size_text}, more than the limit of {limit} bytes (derived from"
        " GATEWAY_MAX_IMAGE_BYTES, lowered by GATEWAY_HTTP_MAX_BODY_BYTES)",
    )


def model_json(model: ModelId | None) -> dict[str, str] | None:
    if model is None:
        return None
    return {"name": model.name, "version": model.version, "onnx_sha256": model.onnx_sha256}


def attribute_json(attribute: AttributePrediction) -> dict[str, Any]:
    return {
        "attribute": attribute.attribute,
        "labels": [{"label": s.label, "probability": round(float(s.probability), 6)} for s in attribute.labels],
    }


def filters_json(filters: Mapping[str, tuple[str, ...]]) -> list[dict[str, Any]]:
    """Filters as gRPC's repeated FieldFilter: [{"field": "subCategory", "values": ["Topwear"]}]."""
    return [{"field": name, "values": list(values)} for name, values in filters.items()]


def term_json(term: QueryTerm) -> dict[str, Any]:
    return {
        "field": term.field,
        "value": term.value,
        "words": term.words,
        "confidence": round(float(term.confidence), 4),
        "corrected": term.corrected,
    }


def terms_json(terms: Sequence[QueryTerm]) -> list[dict[str, Any]]:
    """The words of a query that name an attribute value (search by words, and a photo search's refinement)."""
    return [term_json(t) for t in terms]


def box_json(detection: Detection, size: tuple[int, int]) -> dict[str, int]:
    """The box in whole pixels, inside the photo."""
    width, height = size
    left, top = min(max(0, round(detection.left)), width), min(max(0, round(detection.top)), height)
    right = min(max(left, round(detection.left + detection.width)), width)
    bottom = min(max(top, round(detection.top + detection.height)), height)
    return {"left": left, "top": top, "width": right - left, "height": bottom - top}


#: The request header asking for version 0.1's JSON names in the answer (deprecated; read for one more version).
JSON_VERSION_HEADER = "X-Fashionsearch-Json-Version"
JSON_0_1 = "0.1"


def wants_json_0_1(request: web.Request) -> bool:
    """Whether the request asks for version 0.1's JSON shape; another version than 0.1 is a 400."""
    version = request.headers.get(JSON_VERSION_HEADER, "").strip()
    if version in ("", JSON_0_1):
        return version == JSON_0_1
    raise InvalidArgument(
        f"{JSON_VERSION_HEADER}: {version[:20]!r} is not a JSON version this gateway writes: leave the header out"
        f" for the current names, or send {JSON_0_1} for version 0.1's (deprecated)"
    )


def json_0_1(body: dict[str, Any]) -> dict[str, Any]:
    """An answer in version 0.1's shape: payload keys are the stored keys (masterCategory), and applied_filters an
    object {field: [values]}."""

    def payload(fields: Mapping[str, Any]) -> dict[str, Any]:
        return {PROTO_PAYLOAD_FIELDS[name]: value for name, value in fields.items()}

    old = dict(body)
    if "payload" in old:
        old["payload"] = payload(old["payload"])
    if "hits" in old:
        old["hits"] = [{**hit, "payload": payload(hit["payload"])} for hit in old["hits"]]
    if "applied_filters" in old:
        old["applied_filters"] = {f["field"]: f["values"] for f in old["applied_filters"]}
    return old


def answer(request: web.Request, body: dict[str, Any]) -> web.Response:
    """A JSON answer holding payloads or filters: in version 0.1's shape when the request asks for it."""
    return web.json_response(json_0_1(body) if wants_json_0_1(request) else body)


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
