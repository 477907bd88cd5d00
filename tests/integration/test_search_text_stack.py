"""Search by words and refine with words through a real gateway (gRPC and HTTP) over the tiny image and text
models and a Qdrant Edge store."""

from __future__ import annotations

import grpc
import pytest

from fashionsearch.v1 import gateway_pb2
from testkit.gateway_stack import Stack, jpeg, start_stack
from testkit.http_api import Http, error_of
from testkit.process_stack import free_port

pytestmark = pytest.mark.integration

COLOURS = {"Red": (200, 30, 30), "Navy Blue": (20, 30, 90), "White": (245, 245, 245)}
ARTICLES = (("Topwear", "Tshirts"), ("Bottomwear", "Jeans"), ("Topwear", "Kurtas"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    running = start_stack(tmp_path_factory.mktemp("stack"), text_model=True, http_port=free_port())
    items, pid = [], 300
    for colour, rgb in COLOURS.items():
        for (sub, article), gender in zip(ARTICLES, ("Men", "Men", "Women"), strict=True):
            pid += 1
            items.append(
                gateway_pb2.CatalogueItem(
                    id=pid,
                    image=jpeg(rgb, stripe=(pid % 7 * 30, 0, 0)),
                    payload=gateway_pb2.ItemPayload(
                        name=f"Brand {gender} {colour} {article}",
                        gender=gender,
                        master_category="Apparel",
                        sub_category=sub,
                        article_type=article,
                        base_colour=colour,
                        season="Summer",
                        usage="Casual",
                    ),
                )
            )
    assert all(r.upserted for r in running.upsert(items))
    yield running
    running.close()


@pytest.fixture(scope="module")
def api(stack) -> Http:
    return Http(stack.gateway_settings.http_port)


def test_search_text_reads_the_words_and_filters(stack):
    both = gateway_pb2.TEXT_MATCH_BOTH
    reply = stack.stub.SearchText(gateway_pb2.SearchTextRequest(query="red jeans", match=both), timeout=10)
    assert [(f.field, list(f.values)) for f in reply.applied_filters] == [
        ("baseColour", ["Red"]),
        ("articleType", ["Jeans"]),
    ]
    assert [h.payload.name for h in reply.hits] == ["Brand Men Red Jeans"]
    typo = stack.stub.SearchText(gateway_pb2.SearchTextRequest(query="red jeens"), timeout=10)
    assert [(t.value, t.corrected) for t in typo.terms] == [("Red", False), ("Jeans", True)]
    assert reply.text_model.name == "tiny-text-embedder" and reply.embedder_model.version == "tiny-1"
    vector_only = stack.stub.SearchText(
        gateway_pb2.SearchTextRequest(query="red jeens", match=gateway_pb2.TEXT_MATCH_VECTOR, top_k=4), timeout=10
    )
    assert len(vector_only.hits) == 4 and not vector_only.applied_filters


def test_search_text_bad_input(stack):
    for query in ("", "   ", "x" * 257, "red\x00"):
        with pytest.raises(grpc.RpcError) as caught:
            stack.stub.SearchText(gateway_pb2.SearchTextRequest(query=query), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = stack.stub.SearchText(gateway_pb2.SearchTextRequest(query="xqzt blorp"), timeout=10)
    assert not unknown.hits and "is known" in unknown.reason and list(unknown.unknown_words) == ["xqzt", "blorp"]


def test_refine_a_photo_and_an_item_with_words(stack):
    photo = jpeg(COLOURS["Navy Blue"])
    reply = stack.stub.Search(
        gateway_pb2.SearchRequest(image=photo, filter_mode=gateway_pb2.FILTER_MODE_NONE, refine_text="in red"),
        timeout=10,
    )
    assert {h.payload.base_colour for h in reply.hits} == {"Red"}
    assert [(t.field, t.value) for t in reply.refine_terms] == [("baseColour", "Red")]
    by_id = stack.stub.SearchById(
        gateway_pb2.SearchByIdRequest(id=301, filter_mode=gateway_pb2.FILTER_MODE_NONE, refine_text="navy blue"),
        timeout=10,
    )
    assert {h.payload.base_colour for h in by_id.hits} == {"Navy Blue"} and by_id.refine_terms[0].value == "Navy Blue"
    assert reply.reason == by_id.reason == ""
    kept = stack.stub.SearchById(
        gateway_pb2.SearchByIdRequest(
            id=301,
            refine_text="in red",
            filter_mode=gateway_pb2.FILTER_MODE_EXPLICIT,
            filters=[gateway_pb2.FieldFilter(field="baseColour", values=["Navy Blue"])],
        ),
        timeout=10,
    )
    assert {h.payload.base_colour for h in kept.hits} == {"Navy Blue"} and "filter is kept" in kept.reason
    with pytest.raises(grpc.RpcError) as caught:
        stack.stub.SearchById(gateway_pb2.SearchByIdRequest(id=301, refine_text="xqzt"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("refine_text: none of the words")


def test_http_search_text_mirrors_grpc(api, stack):
    status, body = api.json("POST", "/v1/search/text", {"query": "women kurta", "top_k": 3, "match": "both"})
    assert status == 200, body
    reply = stack.stub.SearchText(
        gateway_pb2.SearchTextRequest(query="women kurta", top_k=3, match=gateway_pb2.TEXT_MATCH_BOTH), timeout=10
    )
    assert [h["id"] for h in body["hits"]] == [h.id for h in reply.hits]
    assert body["applied_filters"] == [
        {"field": "gender", "values": ["Women"]},
        {"field": "articleType", "values": ["Kurtas"]},
    ]
    assert body["terms"][0] == {
        "field": "gender",
        "value": "Women",
        "words": "women",
        "confidence": 0.99,
        "corrected": False,
    }
    assert body["reason"] == "" and body["text_model"]["name"] == "tiny-text-embedder"
    status, body = api.json(
        "POST", "/v1/search/text", {"query": "red", "match": "filters", "filters": {"articleType": "Jeans"}}
    )
    assert status == 200 and [h["payload"]["name"] for h in body["hits"]] == ["Brand Men Red Jeans"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, '"query"'),
        ({"query": ""}, "empty"),
        ({"query": " \n "}, "empty"),
        ({"query": "x" * 300}, "300 characters"),
        ({"query": "red\u0007"}, "control"),
        ({"query": 5}, '"query"'),
        ({"query": "red", "match": "fuzzy"}, "unknown match"),
        ({"query": "red", "colour": "Red"}, "unknown field"),
        ({"query": "red", "top_k": 0}, "top_k"),
    ],
)
def test_http_search_text_bad_input_is_400(api, body, fragment):
    status, answer = api.json("POST", "/v1/search/text", body)
    assert fragment in error_of(status, answer, 400, "INVALID_ARGUMENT")


def test_http_refine_and_openapi(api):
    status, body = api.upload("/v1/search?filter_mode=none&refine=navy%20blue", {"image": jpeg(COLOURS["Red"])})
    assert status == 200 and {h["payload"]["base_colour"] for h in body["hits"]} == {"Navy Blue"}, body
    assert body["refine_terms"][0]["value"] == "Navy Blue"
    status, body = api.json("GET", "/v1/items/304/similar?filter_mode=none&refine=red")
    assert status == 200 and {h["payload"]["base_colour"] for h in body["hits"]} == {"Red"}, body
    status, body = api.json("POST", "/v1/search/by-id", {"id": 301, "filter_mode": "none", "refine": "xqzt"})
    assert "refine_text" in error_of(status, body, 400)
    # The caller's explicit filter wins over the words on its field, as in /v1/search/text, and the answer says so.
    status, body = api.json("GET", "/v1/items/304/similar?refine=in%20red&filter.baseColour=Navy%20Blue")
    assert status == 200 and {h["payload"]["base_colour"] for h in body["hits"]} == {"Navy Blue"}, body
    assert "baseColour Red" in body["reason"] and "filter is kept" in body["reason"], body
    status, spec = api.json("GET", "/openapi.json")
    assert status == 200 and "/v1/search/text" in spec["paths"]
    assert "QueryTerm" in spec["components"]["schemas"]
    assert "security" in spec["paths"]["/v1/search/text"]["post"]
