"""The gateway end to end over real grpc.aio servers in process: tiny ONNX models and a Qdrant Edge store."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from fashionsearch.serving import RunningServer, service_name, start_server
from fashionsearch.v1 import embedder_pb2, embedder_pb2_grpc, gateway_pb2
from testkit.gateway_stack import Stack, jpeg, predicted_subcategories, start_stack
from testkit.waiting import DEADLINE_S

pytestmark = pytest.mark.integration

COLOURS = {
    "Black": (20, 20, 20),
    "White": (245, 245, 245),
    "Red": (200, 30, 30),
    "Navy Blue": (20, 30, 90),
    "Green": (30, 150, 60),
    "Yellow": (230, 210, 40),
}
SUBCATEGORIES = ("Topwear", "Bottomwear", "Shoes")


def _catalogue() -> list[gateway_pb2.CatalogueItem]:
    items = []
    pid = 100
    for colour_name, rgb in COLOURS.items():
        for i, stripe in enumerate((None, (255, 255, 255), (0, 0, 0), (200, 120, 0))):
            pid += 1
            sub = SUBCATEGORIES[pid % len(SUBCATEGORIES)]
            items.append(
                gateway_pb2.CatalogueItem(
                    id=pid,
                    image=jpeg(rgb, stripe=stripe),
                    payload=gateway_pb2.ItemPayload(
                        name=f"Brand{i} Men {colour_name} {'Striped ' if stripe else ''}{sub} Item",
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


CATALOGUE = _catalogue()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    running = start_stack(tmp_path_factory.mktemp("stack"), max_top_k=20)
    replies = running.upsert(CATALOGUE)
    assert all(r.upserted for r in replies), [r.error.message for r in replies if not r.upserted]
    yield running
    running.close()


def _code(call, *args, **kwargs) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failed:
        call(*args, **kwargs)
    assert failed.value.details(), "every error carries a message"
    return failed.value.code()


def test_health_is_serving(stack):
    health = health_pb2_grpc.HealthStub(stack.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="fashionsearch.v1.Gateway"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_search_finds_the_same_image_first(stack):
    query = CATALOGUE[9]
    reply = stack.stub.Search(
        gateway_pb2.SearchRequest(image=query.image, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=10
    )
    assert reply.hits[0].id == query.id and reply.hits[0].distance == pytest.approx(0, abs=1e-3)
    assert len(reply.hits) == 5
    assert [h.distance for h in reply.hits] == sorted(h.distance for h in reply.hits)
    assert reply.hits[0].payload == query.payload
    assert {a.attribute for a in reply.attributes} >= {"subCategory", "articleType", "gender", "baseColour"}
    assert reply.suggested_name and reply.keywords
    assert reply.classifier_model.name == "tiny-classifier" and reply.embedder_model.name == "tiny-embedder"
    assert len(reply.embedder_model.onnx_sha256) == 64


def test_search_default_filter_is_the_predicted_subcategory(stack):
    reply = stack.stub.Search(gateway_pb2.SearchRequest(image=CATALOGUE[0].image, top_k=20), timeout=10)
    labels = next(a.labels for a in reply.attributes if a.attribute == "subCategory")
    predicted = predicted_subcategories([(label.label, label.probability) for label in labels])
    assert predicted[0] == labels[0].label
    assert [(f.field, list(f.values)) for f in reply.applied_filters] == [("subCategory", predicted)]
    assert all(h.payload.sub_category in predicted for h in reply.hits)


def test_search_with_explicit_filters(stack):
    reply = stack.stub.Search(
        gateway_pb2.SearchRequest(
            image=CATALOGUE[0].image,
            top_k=20,
            filter_mode=gateway_pb2.FILTER_MODE_EXPLICIT,
            filters=[
                gateway_pb2.FieldFilter(field="baseColour", values=["Red", "Green"]),
                gateway_pb2.FieldFilter(field="subCategory", values=["Shoes"]),
            ],
        ),
        timeout=10,
    )
    assert reply.hits
    assert all(h.payload.base_colour in ("Red", "Green") and h.payload.sub_category == "Shoes" for h in reply.hits)


def test_search_by_id_excludes_the_item(stack):
    item = CATALOGUE[5]
    reply = stack.stub.SearchById(
        gateway_pb2.SearchByIdRequest(id=item.id, top_k=20, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=10
    )
    assert len(reply.hits) == 20 and item.id not in [h.id for h in reply.hits]
    same_sub = stack.stub.SearchById(gateway_pb2.SearchByIdRequest(id=item.id), timeout=10)
    assert all(h.payload.sub_category == item.payload.sub_category for h in same_sub.hits)
    assert _code(stack.stub.SearchById, gateway_pb2.SearchByIdRequest(id=999_999), timeout=10) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_upsert_get_delete_and_stats(stack):
    extra = gateway_pb2.CatalogueItem(
        id=5000, image=jpeg((90, 10, 120)), payload=gateway_pb2.ItemPayload(name="Extra", sub_category="Topwear")
    )
    replies = stack.upsert([extra, gateway_pb2.CatalogueItem(id=5001, image=b"not an image"), extra])
    assert [(r.id, r.upserted) for r in replies] == [(5000, True), (5001, False), (5000, False)]
    assert replies[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "JPEG" in replies[1].error.message
    assert "appears more than once" in replies[2].error.message  # one stream names an id once, as UpsertBatch

    got = stack.stub.GetItem(gateway_pb2.GetItemRequest(id=5000), timeout=10)
    assert got.payload.name == "Extra" and got.payload.sub_category == "Topwear"
    stats = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=10)
    assert stats.item_count == len(CATALOGUE) + 1
    assert stats.stored_embedder.name == "tiny-embedder" and stats.stored_embedder.version == "tiny-1"
    assert stats.running_embedder.version == "tiny-1" and stats.classifier.name == "tiny-classifier"

    deleted = stack.stub.DeleteItems(gateway_pb2.DeleteItemsRequest(ids=[5000, 5001]), timeout=10)
    assert deleted.item_count == len(CATALOGUE)
    assert _code(stack.stub.GetItem, gateway_pb2.GetItemRequest(id=5000), timeout=10) == grpc.StatusCode.NOT_FOUND


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb's header)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then length and type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_SEARCHES = {
    "non-image bytes": gateway_pb2.SearchRequest(image=b"this is not an image"),
    "zero bytes": gateway_pb2.SearchRequest(image=b""),
    "truncated JPEG": gateway_pb2.SearchRequest(image=CATALOGUE[0].image[: len(CATALOGUE[0].image) // 2]),
    "1x1 image": gateway_pb2.SearchRequest(image=_tiny_png()),
    "PNG declaring 20000x20000": gateway_pb2.SearchRequest(image=_png_declaring(20000, 20000)),
    "top_k 0": gateway_pb2.SearchRequest(image=CATALOGUE[0].image, top_k=0),
    "top_k negative": gateway_pb2.SearchRequest(image=CATALOGUE[0].image, top_k=-1),
    "top_k above bound": gateway_pb2.SearchRequest(image=CATALOGUE[0].image, top_k=21),
    "unknown filter field": gateway_pb2.SearchRequest(
        image=CATALOGUE[0].image,
        filter_mode=gateway_pb2.FILTER_MODE_EXPLICIT,
        filters=[gateway_pb2.FieldFilter(field="brand", values=["Puma"])],
    ),
}


@pytest.mark.parametrize("case", list(BAD_SEARCHES))
def test_bad_search_input_is_invalid_argument(stack, case):
    assert _code(stack.stub.Search, BAD_SEARCHES[case], timeout=10) == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_id_is_not_found(stack):
    assert _code(stack.stub.GetItem, gateway_pb2.GetItemRequest(id=424242), timeout=10) == grpc.StatusCode.NOT_FOUND


def test_still_serving_after_bad_input(stack):
    for request in BAD_SEARCHES.values():
        with pytest.raises(grpc.RpcError):
            stack.stub.Search(request, timeout=10)
    reply = stack.stub.Search(
        gateway_pb2.SearchRequest(image=CATALOGUE[3].image, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=10
    )
    assert reply.hits[0].id == CATALOGUE[3].id


def test_classifier_down_is_unavailable_within_the_deadline(tmp_path):
    timeout_s = 20.0
    stack = start_stack(tmp_path, classify_timeout_s=timeout_s)
    try:
        stack.upsert(CATALOGUE[:4])
        stack.stop_classifier()
        started = time.monotonic()
        code = _code(stack.stub.Search, gateway_pb2.SearchRequest(image=CATALOGUE[0].image), timeout=2 * timeout_s)
        elapsed = time.monotonic() - started
        assert code == grpc.StatusCode.UNAVAILABLE
        assert elapsed < timeout_s / 2, f"answered after {elapsed:.2f} s, not long before the {timeout_s} s deadline"
        # The gateway itself still serves what does not need the classifier...
        similar = stack.stub.SearchById(gateway_pb2.SearchByIdRequest(id=CATALOGUE[0].id), timeout=10)
        assert CATALOGUE[0].id not in [h.id for h in similar.hits]
        # ...and searches again once the classifier is back.
        stack.restart_classifier()
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                reply = stack.stub.Search(
                    gateway_pb2.SearchRequest(image=CATALOGUE[0].image, filter_mode=gateway_pb2.FILTER_MODE_NONE),
                    timeout=10,
                )
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
                time.sleep(0.2)
        assert reply.hits[0].id == CATALOGUE[0].id
    finally:
        stack.close()


#: How long the slow embedder takes: far longer than the gateway's deadline for it.
SLOW_S = 20.0


class SlowEmbedder(embedder_pb2_grpc.EmbedderServicer):
    """An embedder that takes far longer than the gateway's deadline."""

    async def Embed(self, request, context):
        await asyncio.sleep(SLOW_S)
        return embedder_pb2.EmbedResponse()

    async def EmbedBatch(self, request, context):
        await asyncio.sleep(SLOW_S)
        return embedder_pb2.EmbedBatchResponse()


async def _start_slow_embedder(settings) -> RunningServer:
    running = await start_server(
        lambda server: embedder_pb2_grpc.add_EmbedderServicer_to_server(SlowEmbedder(), server),
        [service_name(embedder_pb2, "Embedder")],
        host=settings.host,
        port=0,
    )
    await running.set_serving()
    return running


def test_slow_embedder_is_deadline_exceeded(tmp_path):
    stack = start_stack(tmp_path, embedder_start=_start_slow_embedder, embed_timeout_s=0.3, embed_batch_timeout_s=0.3)
    try:
        started = time.monotonic()
        code = _code(stack.stub.Search, gateway_pb2.SearchRequest(image=CATALOGUE[0].image), timeout=2 * SLOW_S)
        elapsed = time.monotonic() - started
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed < SLOW_S / 2, f"answered after {elapsed:.2f} s: it waited for the slow embedder"
        replies = stack.upsert(CATALOGUE[:2])
        assert [r.error.code for r in replies] == [grpc.StatusCode.DEADLINE_EXCEEDED.value[0]] * 2
        stats = stack.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=10)  # still serving
        assert stats.item_count == 0 and not stats.HasField("running_embedder")
    finally:
        stack.close()


def test_other_embedder_version_is_failed_precondition(tmp_path):
    first = start_stack(tmp_path)
    try:
        first.upsert(CATALOGUE[:3])
    finally:
        first.close()
    second = start_stack(tmp_path, embedder_version="tiny-2")  # same store, newer embedder
    try:
        code = _code(second.stub.Search, gateway_pb2.SearchRequest(image=CATALOGUE[0].image), timeout=10)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        stats = second.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=10)
        assert stats.item_count == 3 and stats.stored_embedder.version == "tiny-1"
        assert stats.running_embedder.version == "tiny-2"
    finally:
        second.close()
