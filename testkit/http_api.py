"""The in-process gateway with its HTTP API that the test_gateway_http*.py modules share: a small catalogue with
product images on disk, a blocking HTTP client, multipart bodies, and the module-scoped fixtures (import them)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fashionsearch.v1 import gateway_pb2
from testkit.gateway_stack import Stack, jpeg, start_stack
from testkit.process_stack import free_port

HOST = "127.0.0.1"
MAX_BODY = 256 * 1024
MAX_IMAGE = 128 * 1024
COLOURS = {
    "Black": (20, 20, 20),
    "White": (245, 245, 245),
    "Red": (200, 30, 30),
    "Navy Blue": (20, 30, 90),
    "Green": (30, 150, 60),
}
SUBCATEGORIES = ("Topwear", "Bottomwear", "Shoes")


def _catalogue(image_root: Path) -> list[gateway_pb2.CatalogueItem]:
    (image_root / "images").mkdir(parents=True)
    items = []
    pid = 200
    for colour_name, rgb in COLOURS.items():
        for i, stripe in enumerate((None, (255, 255, 255), (0, 0, 0))):
            pid += 1
            sub = SUBCATEGORIES[pid % len(SUBCATEGORIES)]
            image = jpeg(rgb, stripe=stripe)
            (image_root / "images" / f"{pid}.jpg").write_bytes(image)
            items.append(
                gateway_pb2.CatalogueItem(
                    id=pid,
                    image=image,
                    payload=gateway_pb2.ItemPayload(
                        name=f"Brand{i} Men {colour_name} {sub}",
                        gender="Men",
                        master_category="Apparel",
                        sub_category=sub,
                        article_type="Tshirts",
                        base_colour=colour_name,
                        season="Summer",
                        year=2012,
                        usage="Casual",
                        image_ref=f"images/{pid}.jpg",
                    ),
                )
            )
    return items


class Http:
    """A tiny blocking HTTP client for one base URL; 4xx/5xx answers are returned, not raised."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://{HOST}:{port}"
        self._no_redirect = urllib.request.build_opener(_NoRedirect)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {**(headers or {}), **({"Content-Type": content_type} if content_type else {})}
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with self._no_redirect.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            kwargs.setdefault("content_type", "application/json")
        status, headers, data = self.call(method, path, body, **kwargs)
        assert headers.get("Content-Type", "").startswith("application/json"), (status, headers, data[:200])
        return status, json.loads(data)

    def upload(self, path: str, fields: dict[str, bytes | str], method: str = "POST", **kwargs: Any) -> tuple[int, Any]:
        body, content_type = multipart(fields)
        return self.json(method, path, body, content_type=content_type, **kwargs)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def multipart(fields: dict[str, bytes | str]) -> tuple[bytes, str]:
    """A multipart/form-data body: bytes values are files, str values are plain fields."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            )
            data = value
        else:
            head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
            data = value.encode()
        parts.append(f"--{boundary}\r\n".encode() + head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def error_of(status: int, body: Any, expected_status: int, code: str | None = None) -> str:
    """The error message of an error answer, after checking its shape."""
    assert status == expected_status, body
    error = body["error"]
    assert error["status"] == expected_status and error["message"], body
    if code is not None:
        assert error["code"] == code, body
    return str(error["message"])


@pytest.fixture(scope="module")
def catalogue_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("catalogue")


@pytest.fixture(scope="module")
def items(catalogue_dir) -> list[gateway_pb2.CatalogueItem]:
    return _catalogue(catalogue_dir)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, catalogue_dir, items) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("stack"),
        max_top_k=20,
        http_port=free_port(),
        http_max_body_bytes=MAX_BODY,
        max_image_bytes=MAX_IMAGE,
        image_root=catalogue_dir,
    )
    replies = running.upsert(items)
    assert all(r.upserted for r in replies), [r.error.message for r in replies if not r.upserted]
    yield running
    running.close()


@pytest.fixture(scope="module")
def api(stack) -> Http:
    return Http(stack.gateway_settings.http_port)


QUERY = jpeg(COLOURS["Red"], stripe=(255, 255, 255))
