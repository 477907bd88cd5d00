"""The gateway's HTTP/JSON API over a real in-process gateway (tiny ONNX models, Qdrant Edge store in tmp_path):
searches, catalogue writes, stats, health, documents and error mapping. Body limits, images, headers and HTTP
settings are in test_gateway_http_server.py; the gateway and the client both modules use, in http_api.py.

Requests go through urllib and raw sockets, like any HTTP client would send them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from fashionsearch.catalogue import PAYLOAD_FIELDS, PROTO_PAYLOAD_FIELDS
from fashionsearch.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FashionSearchError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from fashionsearch.v1 import gateway_pb2
from services.gateway.http.app import create_app, start_http
from services.gateway.http.responses import JSON_VERSION_HEADER
from testkit import http_api
from testkit.gateway_stack import jpeg, predicted_subcategories
from testkit.http_api import HOST, MAX_IMAGE, QUERY, SUBCATEGORIES, Http, error_of
from testkit.service_helpers import BAD_IMAGES

pytestmark = pytest.mark.integration

# The shared module-scoped fixtures (one gateway for this module).
api, catalogue_dir, items, stack = http_api.api, http_api.catalogue_dir, http_api.items, http_api.stack


# ---- search by photo ------------------------------------------------------------------------------------------


def test_search_by_multipart_upload_mirrors_grpc(api, stack):
    status, body = api.upload("/v1/search?filter_mode=none", {"image": QUERY})
    assert status == 200, body
    reply = stack.stub.Search(
        gateway_pb2.SearchRequest(image=QUERY, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=10
    )
    assert [h["id"] for h in body["hits"]] == [h.id for h in reply.hits]
    assert [h["distance"] for h in body["hits"]] == pytest.approx([h.distance for h in reply.hits], abs=1e-5)
    assert body["suggested_name"] == reply.suggested_name and body["keywords"] == list(reply.keywords)
    assert len(body["hits"]) == 5 and body["applied_filters"] == []
    top = body["hits"][0]
    assert top["payload"]["base_colour"] == "Red" and top["payload"]["year"] == 2012
    assert top["image_url"] == f"/catalogue/images/{top['id']}.jpg"  # image_ref images/<id>.jpg, no folder doubled
    heads = {a["attribute"]: a["labels"] for a in body["attributes"]}
    assert "subCategory" in heads and 0 < heads["subCategory"][0]["probability"] <= 1
    assert body["classifier_model"]["name"] and body["embedder_model"]["version"] == "tiny-1"


def test_search_by_raw_body_with_top_k(api):
    status, _, data = api.call("POST", "/v1/search?top_k=3&filter_mode=none", QUERY, "image/jpeg")
    assert status == 200
    assert len(json.loads(data)["hits"]) == 3


def test_search_default_filter_is_the_predicted_subcategory(api):
    status, body = api.upload("/v1/search", {"image": QUERY})
    assert status == 200
    labels = next(a["labels"] for a in body["attributes"] if a["attribute"] == "subCategory")
    predicted = predicted_subcategories([(label["label"], label["probability"]) for label in labels])
    assert predicted[0] == labels[0]["label"]
    assert body["applied_filters"] == [{"field": "subCategory", "values": predicted}]
    assert all(h["payload"]["sub_category"] in predicted for h in body["hits"])


def test_search_with_explicit_filters_in_form_fields(api):
    status, body = api.upload(
        "/v1/search", {"image": QUERY, "filter.baseColour": "Green", "filter.subCategory": "Shoes", "top_k": "10"}
    )
    assert status == 200, body
    assert body["applied_filters"] == [
        {"field": "baseColour", "values": ["Green"]},
        {"field": "subCategory", "values": ["Shoes"]},
    ]
    assert body["hits"] and all(
        h["payload"]["base_colour"] == "Green" and h["payload"]["sub_category"] == "Shoes" for h in body["hits"]
    )


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_is_400_with_the_reason(api, case):
    data, fragment = BAD_IMAGES[case]
    message = error_of(*api.upload("/v1/search", {"image": data}), 400, "INVALID_ARGUMENT")
    assert fragment in message


def test_image_over_the_image_limit_is_400(api):
    big = b"\xff\xd8\xff" + b"\0" * (MAX_IMAGE + 10)
    message = error_of(*api.json("POST", "/v1/search", big, content_type="image/jpeg"), 400, "INVALID_ARGUMENT")
    assert "limit" in message


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("top_k=0", "top_k must be between 1 and 20"),
        ("top_k=-1", "top_k must be between 1 and 20"),
        ("top_k=21", "top_k must be between 1 and 20"),
        ("top_k=many", "top_k must be an integer"),
        ("filter.brand=Nike", "unknown filter field 'brand'"),
        ("colour=red", "unknown parameter 'colour'"),
        ("filter_mode=fuzzy", "unknown filter_mode 'fuzzy'"),
        ("filter_mode=explicit", "needs at least one filter"),
        ("filter_mode=none&filter.gender=Men", "only allowed with the explicit filter mode"),
    ],
)
def test_bad_search_options_are_400(api, query, fragment):
    message = error_of(*api.upload(f"/v1/search?{query}", {"image": QUERY}), 400, "INVALID_ARGUMENT")
    assert fragment in message


def test_search_needs_an_image(api):
    assert "no 'image' field" in error_of(*api.upload("/v1/search", {"top_k": "3"}), 400)
    message = error_of(*api.json("POST", "/v1/search", {"image": "x"}), 415)
    assert "multipart/form-data" in message


# ---- more like this -------------------------------------------------------------------------------------------


def test_similar_by_get_and_post_mirror_grpc(api, stack, items):
    item_id = items[4].id
    status, by_get = api.json("GET", f"/v1/items/{item_id}/similar?top_k=4&filter_mode=none")
    assert status == 200
    status, by_post = api.json("POST", "/v1/search/by-id", {"id": item_id, "top_k": 4, "filter_mode": "none"})
    assert status == 200
    reply = stack.stub.SearchById(
        gateway_pb2.SearchByIdRequest(id=item_id, top_k=4, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=10
    )
    ids = [h.id for h in reply.hits]
    assert [h["id"] for h in by_get["hits"]] == ids == [h["id"] for h in by_post["hits"]]
    assert item_id not in ids


def test_similar_default_filter_is_the_items_subcategory(api, items):
    status, body = api.json("GET", f"/v1/items/{items[0].id}/similar")
    assert status == 200
    assert body["applied_filters"] == [{"field": "subCategory", "values": [items[0].payload.sub_category]}]


def test_similar_with_json_filters(api, items):
    status, body = api.json("POST", "/v1/search/by-id", {"id": items[0].id, "filters": {"baseColour": "Red"}})
    assert status == 200
    assert body["applied_filters"] == [{"field": "baseColour", "values": ["Red"]}]
    assert all(h["payload"]["base_colour"] == "Red" for h in body["hits"])


def test_similar_errors(api):
    assert "not in the catalogue" in error_of(*api.json("GET", "/v1/items/999999/similar"), 404, "NOT_FOUND")
    assert "product id must be an integer" in error_of(*api.json("GET", "/v1/items/abc/similar"), 400)
    assert "between 1 and" in error_of(*api.json("GET", "/v1/items/0/similar"), 400)
    assert "needs the product 'id'" in error_of(*api.json("POST", "/v1/search/by-id", {"top_k": 3}), 400)
    assert "not valid JSON" in error_of(*api.json("POST", "/v1/search/by-id", b"{nope", content_type="x"), 400)


HOSTILE = {
    "JSON nested 100,000 deep": ("POST", "/v1/search/by-id", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    "an id of 10,000 digits": ("POST", "/v1/search/by-id", b'{"id": ' + b"7" * 10_000 + b"}", "application/json"),
    "a year of 10,000 digits": ("POST", "/v1/items", b'{"items": [{"id": 1, "payload": {"year": ' + b"7" * 10_000
                                + b"}}]}", "application/json"),
    "multipart without a boundary": ("POST", "/v1/search", b"hello", "multipart/form-data"),
    "multipart with a body that is not": ("PUT", "/v1/items/5", b"hello", "multipart/form-data; boundary=xyz"),
    "a part header that is not HTTP": ("POST", "/v1/search", b"--x\r\nnot a header\r\n\r\nabc\r\n--x--\r\n",
                                       "multipart/form-data; boundary=x"),
    "a NUL in an image path": ("GET", "/catalogue/images/%00.jpg", None, None),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bodies_and_paths_are_400_without_a_traceback(api, caplog, case):
    method, path, body, content_type = HOSTILE[case]
    status, headers, data = api.call(method, path, body, content_type)
    assert status == 400, (status, data[:300])
    assert json.loads(data)["error"]["code"] == "INVALID_ARGUMENT"
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info], caplog.text[:2000]


def test_a_body_the_client_breaks_or_abandons_is_no_server_error(api, caplog):
    """A gzip body that is not gzip is a 400; a client that leaves in the middle of its body leaves a debug line.
    Neither logs an error with a traceback."""
    caplog.set_level(logging.DEBUG, logger="services.gateway.http")
    with socket.create_connection((HOST, api.port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"
        )
        head = conn.recv(4096)
    assert head.startswith(b"HTTP/1.1 400 ") and b"could not be read" in head, head
    with socket.create_connection((HOST, api.port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 50000\r\n\r\n" + QUERY[:1000]
        )
    deadline = time.monotonic() + 10
    while "closed the connection during the body" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "closed the connection during the body" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text[:3000]


@pytest.mark.parametrize("text", ["1_580", "\u0661\u0665\u0668\u0660", "1580 ", " 1580", "+1580", "1580.0"])
def test_ids_top_k_and_chunk_size_are_read_strictly(api, items, text):
    """Python's int() takes all of these; the gRPC API and the indexer take none, and neither does HTTP."""
    item_id = str(items[0].id)
    quoted = urllib.parse.quote(text)
    requests = [
        ("GET", f"/v1/items/{quoted}", None),
        ("GET", f"/v1/items/{quoted}/similar", None),
        ("DELETE", f"/v1/items/{quoted}", None),
        ("GET", f"/v1/items/{item_id}/similar?top_k={quoted}", None),
        ("GET", f"/v1/items?chunk_size={quoted}", None),
        ("POST", "/v1/search/by-id", {"id": text}),
        ("POST", "/v1/search/by-id", {"id": int(item_id), "top_k": text}),
        ("POST", "/v1/items/delete", {"ids": [text]}),
    ]
    for method, path, body in requests:
        message = error_of(*api.json(method, path, body), 400, "INVALID_ARGUMENT")
        assert "digits 0-9" in message, (method, path, body, message)
    message = error_of(*api.upload(f"/v1/search?top_k={quoted}", {"image": QUERY}), 400)
    assert "top_k must be an integer written with the digits 0-9" in message


# ---- JSON names -----------------------------------------------------------------------------------------------

SNAKE_CASE = re.compile(r"[a-z][a-z0-9_]*")
VERSION_0_1 = {JSON_VERSION_HEADER: "0.1"}


def keys_of(value: Any) -> set[str]:
    """Every key of every object in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


def answers(api: Http, item_id: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The answers that hold payloads or applied filters, with `headers`."""
    search = {"image": QUERY, "filter.baseColour": "Red", "top_k": "3"}
    requests = {
        "search": lambda: api.upload("/v1/search", search, headers=headers),
        "similar": lambda: api.json("GET", f"/v1/items/{item_id}/similar?top_k=3", headers=headers),
        "by-id": lambda: api.json(
            "POST", "/v1/search/by-id", {"id": item_id, "filters": {"subCategory": "Topwear"}}, headers=headers
        ),
        "item": lambda: api.json("GET", f"/v1/items/{item_id}", headers=headers),
    }
    out = {}
    for name, request in requests.items():
        status, body = request()
        assert status == 200, (name, body)
        out[name] = body
    return out


def test_every_json_key_is_snake_case_and_applied_filters_a_list_as_over_grpc(api, items):
    found = answers(api, items[0].id)
    for name, body in found.items():
        assert all(SNAKE_CASE.fullmatch(key) for key in keys_of(body)), (name, sorted(keys_of(body)))
    payload_keys = list(PROTO_PAYLOAD_FIELDS)  # ItemPayload's field names, in its order
    assert list(found["item"]["payload"]) == payload_keys
    assert all(
        list(h["payload"]) == payload_keys for name in ("search", "similar", "by-id") for h in found[name]["hits"]
    )
    assert found["search"]["applied_filters"] == [{"field": "baseColour", "values": ["Red"]}]
    assert found["by-id"]["applied_filters"] == [{"field": "subCategory", "values": ["Topwear"]}]
    assert found["similar"]["applied_filters"] == [{"field": "subCategory", "values": [items[0].payload.sub_category]}]


def test_version_0_1_json_names_on_request_for_one_version(api, items):
    """X-Fashionsearch-Json-Version: 0.1 gets the old shape: the same answers, payload keys as the catalogue's
    columns (masterCategory) and applied_filters an object."""
    current, old = answers(api, items[0].id), answers(api, items[0].id, VERSION_0_1)

    def as_0_1(payload: dict[str, Any]) -> dict[str, Any]:
        return {PROTO_PAYLOAD_FIELDS[k]: v for k, v in payload.items()}

    assert list(old["item"]["payload"]) == list(PAYLOAD_FIELDS)
    assert old["item"] == {**current["item"], "payload": as_0_1(current["item"]["payload"])}
    for name in ("search", "similar", "by-id"):
        assert [h["payload"] for h in old[name]["hits"]] == [as_0_1(h["payload"]) for h in current[name]["hits"]]
        assert old[name]["applied_filters"] == {f["field"]: f["values"] for f in current[name]["applied_filters"]}
        assert [h["id"] for h in old[name]["hits"]] == [h["id"] for h in current[name]["hits"]]
    assert old["search"]["applied_filters"] == {"baseColour": ["Red"]}
    assert "masterCategory" in old["search"]["hits"][0]["payload"]
    status, body = api.json("GET", f"/v1/items/{items[0].id}", headers={JSON_VERSION_HEADER: "0.2"})
    assert "0.1" in error_of(status, body, 400, "INVALID_ARGUMENT")


def test_payloads_in_version_0_1_names_are_still_read(api):
    old_names = {"name": "Old Names Tee", "subCategory": "Topwear", "baseColour": "Olive", "articleType": "Tshirts"}
    status, body = api.upload("/v1/items/9301", {"image": jpeg((90, 110, 30)), "payload": json.dumps(old_names)}, "PUT")
    assert status == 200, body
    status, item = api.json("GET", "/v1/items/9301")
    assert status == 200
    assert (item["payload"]["sub_category"], item["payload"]["base_colour"], item["payload"]["article_type"]) == (
        "Topwear",
        "Olive",
        "Tshirts",
    )
    both = {"image": jpeg((90, 110, 30)), "payload": json.dumps({"sub_category": "Topwear", "subCategory": "Shoes"})}
    assert "given twice" in error_of(*api.upload("/v1/items/9301", both, "PUT"), 400, "INVALID_ARGUMENT")
    assert api.json("DELETE", "/v1/items/9301")[0] == 200


def test_openapi_documents_the_json_names_and_the_deprecated_shape(api):
    status, document = api.json("GET", "/openapi.json")
    assert status == 200
    schemas = document["components"]["schemas"]
    assert list(schemas["Payload"]["properties"]) == list(PROTO_PAYLOAD_FIELDS)
    assert schemas["AppliedFilters"]["items"] == {"$ref": "#/components/schemas/FieldFilter"}
    for response in ("SearchResponse", "SimilarResponse", "SearchTextResponse"):
        assert schemas[response]["properties"]["applied_filters"] == {"$ref": "#/components/schemas/AppliedFilters"}
    # Every operation whose answer holds payloads or applied filters takes the deprecated header.
    shaped = [
        f'"#/components/schemas/{name}"' for name in ("SearchResponse", "SimilarResponse", "SearchTextResponse", "Item")
    ]
    operations = {
        f"{method.upper()} {path}": operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if any(ref in json.dumps(operation["responses"].get("200", {})) for ref in shaped)
    }
    assert len(operations) == 5, sorted(operations)
    for name, operation in operations.items():
        (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == JSON_VERSION_HEADER and header["deprecated"] is True, (name, header)
    assert "snake_case" in document["info"]["description"]


# ---- catalogue writes -----------------------------------------------------------------------------------------


def test_put_get_delete_one_item(api, stack):
    payload = {"name": "Test Green Shirt", "sub_category": "Topwear", "base_colour": "Green", "year": 2020}
    status, body = api.upload("/v1/items/9001", {"image": jpeg((0, 200, 0)), "payload": json.dumps(payload)}, "PUT")
    assert status == 200 and body == {"id": 9001, "upserted": True, "error": None}
    status, item = api.json("GET", "/v1/items/9001")
    assert status == 200
    assert item["payload"]["name"] == "Test Green Shirt" and item["payload"]["year"] == 2020
    assert item["payload"]["sub_category"] == "Topwear" and item["payload"]["base_colour"] == "Green"
    assert item["payload"]["gender"], "missing filter attributes are predicted"
    assert stack.stub.GetItem(gateway_pb2.GetItemRequest(id=9001), timeout=5).payload.name == "Test Green Shirt"
    count = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=5).item_count
    status, body = api.json("DELETE", "/v1/items/9001")
    assert status == 200 and body == {"item_count": count - 1}
    error_of(*api.json("GET", "/v1/items/9001"), 404, "NOT_FOUND")


def test_put_item_errors(api):
    assert "empty" in error_of(*api.upload("/v1/items/9002", {"image": b""}, "PUT"), 400, "INVALID_ARGUMENT")
    message = error_of(*api.upload("/v1/items/9002", {"image": b"%PDF-1.7 not a photo" * 3}, "PUT"), 400)
    assert "not a JPEG, PNG or WebP" in message
    bad_field = {"image": jpeg((1, 2, 3)), "payload": json.dumps({"brand": "Nike"})}
    assert "unknown payload field(s) brand" in error_of(*api.upload("/v1/items/9002", bad_field, "PUT"), 400)
    bad_year = {"image": jpeg((1, 2, 3)), "payload": json.dumps({"year": "last"})}
    assert "payload year must be an integer" in error_of(*api.upload("/v1/items/9002", bad_year, "PUT"), 400)
    assert "not valid JSON" in error_of(*api.upload("/v1/items/9002", {"image": QUERY, "payload": "{"}, "PUT"), 400)
    assert "unknown form field(s) colour" in error_of(
        *api.upload("/v1/items/9002", {"image": QUERY, "colour": "red"}, "PUT"), 400
    )
    error_of(*api.json("PUT", "/v1/items/9002", {"image": "x"}), 415)
    error_of(*api.json("GET", "/v1/items/9002"), 404)


def test_batch_upsert_reports_each_item_and_batch_delete(api):
    import base64

    good = base64.b64encode(jpeg((90, 90, 200))).decode()
    bad = base64.b64encode(b"not an image at all").decode()
    status, body = api.json(
        "POST",
        "/v1/items",
        {
            "items": [
                {"id": 9101, "image_base64": good, "payload": {"name": "Blue one", "sub_category": "Topwear"}},
                {"id": 9102, "image_base64": bad},
                {"id": 9103, "image_base64": good, "content_hash": "abc"},
            ]
        },
    )
    assert status == 200, body
    results = body["results"]
    assert [(r["id"], r["upserted"]) for r in results] == [(9101, True), (9102, False), (9103, True)]
    assert results[1]["error"]["status"] == 400 and results[1]["error"]["code"] == "INVALID_ARGUMENT"
    assert api.json("GET", "/v1/items/9103")[1]["content_hash"] == "abc"
    status, body = api.json("POST", "/v1/items/delete", {"ids": [9101, 9103, 424242]})
    assert status == 200 and isinstance(body["item_count"], int)
    error_of(*api.json("GET", "/v1/items/9101"), 404)
    assert "non-empty" in error_of(*api.json("POST", "/v1/items", {"items": []}), 400)
    assert "base64" in error_of(*api.json("POST", "/v1/items", {"items": [{"id": 1, "image_base64": "@@"}]}), 400)
    twice = {
        "items": [{"id": 9104, "image_base64": good}, {"id": 9104, "image_base64": good, "payload": {"gender": "x"}}]
    }
    assert "product id 9104 appears more than once" in error_of(*api.json("POST", "/v1/items", twice), 400)
    error_of(*api.json("GET", "/v1/items/9104"), 404)  # refused whole, as UpsertBatch does: nothing stored
    assert '"ids" list' in error_of(*api.json("POST", "/v1/items/delete", {"ids": 3}), 400)


def test_list_items_streams_every_item_whatever_the_chunk_size(api, items):
    listings = []
    for query in ("", "?chunk_size=3", "?page_size=3"):  # page_size: chunk_size's old name, read for one version
        status, headers, data = api.call("GET", "/v1/items" + query)
        assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
        listings.append(sorted(json.loads(line)["id"] for line in data.decode().splitlines()))
    assert listings[0] == listings[1] == listings[2] and {i.id for i in items} <= set(listings[0])
    assert len(listings[0]) > 3
    assert "chunk_size must be between" in error_of(*api.json("GET", "/v1/items?chunk_size=0"), 400)
    assert "allowed: chunk_size" in error_of(*api.json("GET", "/v1/items?limit=3"), 400)


def test_a_client_leaving_mid_listing_is_one_info_line(stack, caplog, monkeypatch):
    """Closing the connection while GET /v1/items streams is ordinary: no ERROR, no traceback."""
    reset = threading.Event()
    listing = stack.wired.service.list_digests

    async def held_after_the_first_chunk(page_size):
        # The gateway writes the next chunk only once the client has reset the connection, so that write finds it
        # gone whatever the machine's speed (a small catalogue could otherwise be written out before the reset).
        pages = listing(page_size)
        first = await anext(pages, None)
        if first is not None:
            yield first
        await asyncio.to_thread(reset.wait, 10)
        async for page in pages:
            yield page

    monkeypatch.setattr(stack.wired.service, "list_digests", held_after_the_first_chunk)
    with caplog.at_level(logging.INFO, logger="services.gateway"):
        with socket.create_connection((HOST, stack.gateway_settings.http_port), timeout=10) as client:
            client.sendall(b"GET /v1/items?chunk_size=1 HTTP/1.1\r\nHost: test\r\n\r\n")
            assert client.recv(64).startswith(b"HTTP/1.1 200")
            # Reset at once (SO_LINGER 0): the gateway's next write finds the connection gone.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("closed the connection" in r.message for r in caplog.records):
            time.sleep(0.05)
    records = [r for r in caplog.records if r.name.startswith("services.gateway")]
    gone = [r for r in records if "closed the connection" in r.message]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO and gone[0].exc_info is None, gone
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]


# ---- stats, categories, health --------------------------------------------------------------------------------


def test_stats_mirror_grpc(api, stack):
    status, body = api.json("GET", "/v1/stats")
    reply = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=5)
    assert status == 200
    assert body["item_count"] == reply.item_count
    assert body["stored_embedder"] == {"name": "tiny-embedder", "version": "tiny-1"}
    assert body["running_embedder"]["name"] == "tiny-embedder" and body["classifier"]["name"]


def test_categories_count_the_catalogue(api, items):
    status, body = api.json("GET", "/v1/categories")
    assert status == 200 and body["field"] == "subCategory"
    counts = {v["value"]: v["count"] for v in body["values"]}
    for sub in SUBCATEGORIES:
        assert counts[sub] >= sum(1 for i in items if i.payload.sub_category == sub)


def test_health_reflects_grpc_health(api, stack):
    assert api.json("GET", "/healthz") == (200, {"status": "SERVING"})
    name = "fashionsearch.v1.Gateway"
    assert api.json("GET", f"/healthz?service={name}") == (200, {"status": "SERVING"})
    assert api.json("GET", "/healthz?service=nope") == (503, {"status": "SERVICE_UNKNOWN"})
    health = stack.gateway.health
    stack.threads.run(health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))
    try:
        assert api.json("GET", "/healthz") == (503, {"status": "NOT_SERVING"})
    finally:
        stack.threads.run(health.set("", health_pb2.HealthCheckResponse.SERVING))


def test_classifier_down_is_503_and_the_api_recovers(api, stack):
    stack.stop_classifier()
    try:
        started = time.monotonic()
        message = error_of(*api.upload("/v1/search", {"image": QUERY}), 503, "UNAVAILABLE")
        assert time.monotonic() - started < stack.gateway_settings.classify_timeout_s
        assert "classifier" in message
    finally:
        stack.restart_classifier()
    deadline = time.monotonic() + 10
    while (status := api.upload("/v1/search", {"image": QUERY})[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.2)  # the gateway's channel reconnects with a backoff
    assert status == 200


# ---- documents and pages --------------------------------------------------------------------------------------


def test_openapi_document_lists_every_route(api, stack):
    status, document = api.json("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    app = create_app(None, stack.gateway_settings)  # type: ignore[arg-type]
    documented = {(path, method.upper()) for path, operations in document["paths"].items() for method in operations}
    routed = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or path.startswith("/static") or path == "/":
            continue
        routed.add((path.replace("{path:.+}", "{path}"), route.method))
    assert routed - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routed == set(), "the OpenAPI document lists operations no route serves"
    text = json.dumps(document)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in document["components"]["schemas"], ref
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["summary"] and operation["responses"]


def test_web_page_and_assets_are_served(api):
    status, headers, page = api.call("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/static/app.js" in page and b"/static/style.css" in page
    for asset in ("app.js", "style.css"):
        assert api.call("GET", f"/static/{asset}")[0] == 200
    assert "GET /nope" in error_of(*api.json("GET", "/nope"), 404)
    assert error_of(*api.json("DELETE", "/v1/stats"), 405)


# ---- error mapping --------------------------------------------------------------------------------------------


class _Failing:
    """Stands in for GatewayService: every use case raises the given error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def stats(self) -> Any:
        raise self.error

    async def get(self, item_id: int) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidArgument("bad"), 400, "INVALID_ARGUMENT"),
        (NotFound("gone"), 404, "NOT_FOUND"),
        (FailedPrecondition("re-index the catalogue"), 409, "FAILED_PRECONDITION"),
        (ResourceExhausted("too many"), 413, "RESOURCE_EXHAUSTED"),
        (Unavailable("the embedder is down"), 503, "UNAVAILABLE"),
        (DeadlineExceeded("the embedder did not answer in time"), 504, "DEADLINE_EXCEEDED"),
        (RuntimeError("secret internals"), 500, "INTERNAL"),
    ],
)
def test_errors_map_to_http_statuses(stack, error, status, code):
    settings = replace(stack.gateway_settings, http_port=0)
    server = stack.threads.run(start_http(settings, _Failing(error), None))  # type: ignore[arg-type]
    try:
        client = Http(server.port)
        for path in ("/v1/stats", "/v1/items/5"):
            reply_status, body = client.json("GET", path)
            message = error_of(reply_status, body, status, code)
            if isinstance(error, FashionSearchError):
                assert message == error.message
            else:
                assert "secret" not in message and "server log" in message
    finally:
        stack.threads.run(server.close())


def test_grpc_still_serves_beside_http(stack):
    reply = stack.stub.Search(
        gateway_pb2.SearchRequest(image=QUERY, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=10
    )
    assert reply.hits
    with pytest.raises(grpc.RpcError):
        stack.stub.Search(gateway_pb2.SearchRequest(image=b""), timeout=10)
