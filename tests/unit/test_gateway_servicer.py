"""Gateway servicer: proto <-> domain mapping and status codes, with fakes behind the service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from fashionsearch.catalogue import payload_from_proto, payload_to_proto
from fashionsearch.store.brute import BruteForceIndex
from fashionsearch.v1 import gateway_pb2
from services.gateway.limits import Limits
from services.gateway.service import GatewayService
from services.gateway.servicer import GatewayServicer
from testkit.gateway_fakes import FakeClassifier, FakeEmbedder, image, run_async


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class FakeContext:
    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


PAYLOAD = gateway_pb2.ItemPayload(
    name="Puma Men Navy Blue Casual Shirt",
    gender="Men",
    master_category="Apparel",
    sub_category="Topwear",
    article_type="Shirts",
    base_colour="Navy Blue",
    season="Fall",
    year=2012,
    usage="Casual",
    image_ref="images/1.jpg",
)


@pytest.fixture
def servicer():
    service = GatewayService(FakeClassifier(), FakeEmbedder(), BruteForceIndex(), Limits(max_top_k=10))
    return GatewayServicer(service)


async def _upsert(servicer: GatewayServicer, items: list[gateway_pb2.CatalogueItem]) -> list:
    async def requests() -> AsyncIterator[gateway_pb2.UpsertItemsRequest]:
        for item in items:
            yield gateway_pb2.UpsertItemsRequest(item=item)

    return [r async for r in servicer.UpsertItems(requests(), FakeContext())]


@run_async
async def test_upsert_batch_answers_each_item_in_order_and_refuses_oversized_batches(servicer):
    request = gateway_pb2.UpsertBatchRequest(
        items=[
            gateway_pb2.CatalogueItem(id=7, image=image("7"), payload=PAYLOAD, content_hash="h7"),
            gateway_pb2.CatalogueItem(id=8, image=b"", payload=PAYLOAD),
            gateway_pb2.CatalogueItem(id=9, image=image("9"), payload=PAYLOAD),
        ]
    )
    reply = await servicer.UpsertBatch(request, FakeContext())
    assert [(r.id, r.upserted) for r in reply.results] == [(7, True), (8, False), (9, True)]
    assert reply.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "empty" in reply.results[1].error.message
    stored = await servicer.GetItem(gateway_pb2.GetItemRequest(id=7), FakeContext())
    assert stored.content_hash == "h7" and stored.payload.article_type == PAYLOAD.article_type

    stats = await servicer.GetStats(gateway_pb2.GetStatsRequest(), FakeContext())
    too_many = gateway_pb2.UpsertBatchRequest(
        items=[gateway_pb2.CatalogueItem(id=i, image=image(str(i))) for i in range(1, stats.max_upsert_batch + 2)]
    )
    with pytest.raises(Aborted) as aborted:
        await servicer.UpsertBatch(too_many, FakeContext())
    assert aborted.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {stats.max_upsert_batch} items" in aborted.value.details


def test_payload_round_trip():
    stored = payload_from_proto(PAYLOAD)
    assert stored["masterCategory"] == "Apparel" and stored["image_ref"] == "images/1.jpg" and stored["year"] == 2012
    assert payload_to_proto(stored) == PAYLOAD
    assert payload_to_proto({"year": "n/a", "gender": "Men"}) == gateway_pb2.ItemPayload(gender="Men")


@run_async
async def test_search_response_is_complete(servicer):
    replies = await _upsert(
        servicer,
        [gateway_pb2.CatalogueItem(id=i, image=image(str(i)), payload=PAYLOAD) for i in (1, 2)]
        + [gateway_pb2.CatalogueItem(id=3, image=b"bad", payload=PAYLOAD)],
    )
    assert [(r.id, r.upserted) for r in replies] == [(1, True), (2, True), (3, False)]
    assert replies[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "JPEG" in replies[2].error.message
    assert not replies[0].HasField("error")

    reply = await servicer.Search(gateway_pb2.SearchRequest(image=image("q")), FakeContext())
    assert reply.suggested_name == "Men Navy Blue Casual Shirts"
    assert "shirts" in reply.keywords
    assert [h.id for h in reply.hits] and reply.hits[0].payload == PAYLOAD
    assert [(f.field, list(f.values)) for f in reply.applied_filters] == [("subCategory", ["Topwear"])]
    assert reply.classifier_model.name == "fake-classifier" and reply.embedder_model.version == "e1"
    heads = {a.attribute: a.labels[0].label for a in reply.attributes}
    assert heads["articleType"] == "Shirts" and reply.attributes[0].labels[0].probability == pytest.approx(0.9)

    explicit = await servicer.Search(
        gateway_pb2.SearchRequest(
            image=image("q"),
            top_k=1,
            filter_mode=gateway_pb2.FILTER_MODE_EXPLICIT,
            filters=[gateway_pb2.FieldFilter(field="gender", values=["Men", "Boys"])],
        ),
        FakeContext(),
    )
    assert len(explicit.hits) == 1
    assert [(f.field, list(f.values)) for f in explicit.applied_filters] == [("gender", ["Men", "Boys"])]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (gateway_pb2.SearchRequest(image=b""), grpc.StatusCode.INVALID_ARGUMENT),
        (gateway_pb2.SearchRequest(image=image("q"), top_k=0), grpc.StatusCode.INVALID_ARGUMENT),
        (gateway_pb2.SearchRequest(image=image("q"), top_k=-3), grpc.StatusCode.INVALID_ARGUMENT),
        (gateway_pb2.SearchRequest(image=image("q"), top_k=11), grpc.StatusCode.INVALID_ARGUMENT),
        (gateway_pb2.SearchRequest(image=image("q"), filter_mode=9), grpc.StatusCode.INVALID_ARGUMENT),
        (
            gateway_pb2.SearchRequest(
                image=image("q"),
                filter_mode=gateway_pb2.FILTER_MODE_EXPLICIT,
                filters=[gateway_pb2.FieldFilter(field="brand", values=["Puma"])],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
@run_async
async def test_search_errors_become_status_codes(servicer, request_, code):
    with pytest.raises(Aborted) as aborted:
        await servicer.Search(request_, FakeContext())
    assert aborted.value.code == code and aborted.value.details


@run_async
async def test_item_rpcs(servicer):
    await _upsert(servicer, [gateway_pb2.CatalogueItem(id=i, image=image(str(i)), payload=PAYLOAD) for i in (1, 2)])
    item = await servicer.GetItem(gateway_pb2.GetItemRequest(id=2), FakeContext())
    assert item.id == 2 and item.payload == PAYLOAD
    similar = await servicer.SearchById(gateway_pb2.SearchByIdRequest(id=2), FakeContext())
    assert [h.id for h in similar.hits] == [1]
    stats = await servicer.GetStats(gateway_pb2.GetStatsRequest(), FakeContext())
    assert stats.item_count == 2 and stats.stored_embedder.name == "fake-embedder"
    assert stats.running_embedder.version == "e1" and stats.classifier.name == "fake-classifier"
    deleted = await servicer.DeleteItems(gateway_pb2.DeleteItemsRequest(ids=[2, 77]), FakeContext())
    assert deleted.item_count == 1
    for call, message in (
        (servicer.GetItem, gateway_pb2.GetItemRequest(id=2)),
        (servicer.SearchById, gateway_pb2.SearchByIdRequest(id=2)),
    ):
        with pytest.raises(Aborted) as aborted:
            await call(message, FakeContext())
        assert aborted.value.code == grpc.StatusCode.NOT_FOUND and "2" in aborted.value.details


@run_async
async def test_unexpected_errors_are_internal_without_leaking_details(servicer, caplog):
    class Exploding(BruteForceIndex):
        def count(self) -> int:
            raise AssertionError("secret internals")

    exploding = GatewayServicer(GatewayService(FakeClassifier(), FakeEmbedder(), Exploding()))
    with pytest.raises(Aborted) as aborted:
        await exploding.GetStats(gateway_pb2.GetStatsRequest(), FakeContext())
    assert aborted.value.code == grpc.StatusCode.INTERNAL
    assert "secret" not in aborted.value.details and "server log" in aborted.value.details
    assert "secret internals" in caplog.text
