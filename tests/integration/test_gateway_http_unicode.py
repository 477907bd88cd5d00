"""Text that JSON can carry and UTF-8 cannot: a lone surrogate escape ("\\ud800") in filters, payloads and queries is
a 400 naming the field, never a 500; in a batch, only the item that holds it fails. Over a real in-process gateway
(tiny ONNX models, Qdrant Edge), as in test_gateway_http.py."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from testkit import http_api
from testkit.gateway_stack import jpeg
from testkit.http_api import error_of

pytestmark = pytest.mark.integration

api, catalogue_dir, items, stack = http_api.api, http_api.catalogue_dir, http_api.items, http_api.stack

SURROGATE = "\ud800"


def _garbage_of_another_loop(record: logging.LogRecord) -> bool:
    """asyncio's "Task was destroyed but it is pending!" is logged whenever the garbage collector happens to free a
    pending task, whichever test's event loop left it (seen once, on a loaded machine, for an aiohttp connection
    handler); it says nothing about how the request under test was handled."""
    return record.name == "asyncio" and record.getMessage().startswith("Task was destroyed but it is pending")


def _no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if (r.levelname == "ERROR" or r.exc_info) and not _garbage_of_another_loop(r)]
    assert not errors, caplog.text[:2000]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/search/by-id", {"filters": {"baseColour": SURROGATE}}, "baseColour"),
        ("/v1/search/by-id", {"filters": {"baseColour": ["Red", "x" + SURROGATE]}}, "baseColour"),
        ("/v1/search/by-id", {"filters": {SURROGATE: "Red"}}, "filter field"),
        ("/v1/search/text", {"query": "red shirt", "filters": {"gender": SURROGATE}}, "gender"),
        ("/v1/search/text", {"query": "red " + SURROGATE}, "query"),
        ("/v1/search/by-id", {"refine": "in red " + SURROGATE}, "refine"),
    ],
)
def test_a_lone_surrogate_in_a_search_is_400_naming_the_field(api, items, caplog, path, body, field):
    if path.endswith("by-id"):
        body = {**body, "id": items[0].id}
    message = error_of(*api.json("POST", path, body), 400, "INVALID_ARGUMENT")
    assert field in message, message
    _no_error_logged(caplog)


@pytest.mark.parametrize(
    "query", ["filter.baseColour=%ED%A0%80", "filter.na%ED%A0%80me=Red", "refine=in%20red%ED%A0%80", "top_k=%FF"]
)
def test_a_query_string_that_is_not_utf8_is_400(api, items, caplog, query):
    # aiohttp decodes such escapes to U+FFFD, and a filter then searched for that (200, no hits) instead of refusing.
    for path in (f"/v1/items/{items[0].id}/similar", "/v1/items"):
        message = error_of(*api.json("GET", f"{path}?{query}"), 400, "INVALID_ARGUMENT")
        assert "query string is not UTF-8" in message, message
    _no_error_logged(caplog)


def test_a_lone_surrogate_in_one_item_fails_that_item_only(api, caplog):
    good = base64.b64encode(jpeg((90, 90, 200))).decode()
    status, body = api.json(
        "POST",
        "/v1/items",
        {
            "items": [
                {"id": 9301, "image_base64": good, "payload": {"name": "Blue one"}},
                {"id": 9302, "image_base64": good, "payload": {"name": "Bad " + SURROGATE}},
                {"id": 9303, "image_base64": good, "content_hash": "h" + SURROGATE},
                {"id": 9304, "image_base64": good, "payload": {"sub_category": "Topwear"}},
            ]
        },
    )
    assert status == 200, body
    results = body["results"]
    assert [(r["id"], r["upserted"]) for r in results] == [(9301, True), (9302, False), (9303, False), (9304, True)]
    assert results[1]["error"]["status"] == 400 and "payload field 'name'" in results[1]["error"]["message"]
    assert results[2]["error"]["status"] == 400 and "content_hash" in results[2]["error"]["message"]
    assert api.json("GET", "/v1/items/9301")[0] == 200 and api.json("GET", "/v1/items/9304")[0] == 200
    error_of(*api.json("GET", "/v1/items/9302"), 404)
    _no_error_logged(caplog)


def test_a_lone_surrogate_in_a_put_payload_is_400_naming_the_field(api, caplog):
    caplog.set_level(logging.INFO)
    payload = json.dumps({"name": "Shirt", "base_colour": SURROGATE})  # json.dumps writes the \ud800 escape
    message = error_of(*api.upload("/v1/items/9305", {"image": jpeg((200, 20, 20)), "payload": payload}, "PUT"), 400)
    assert "payload field 'baseColour'" in message, message
    error_of(*api.json("GET", "/v1/items/9305"), 404)
    _no_error_logged(caplog)
