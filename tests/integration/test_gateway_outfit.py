"""Outfit search and crop=auto through a real in-process stack: tiny classifier, embedder and detector (it finds
coloured squares), a gateway with its HTTP API and an Edge store. Photos of 1024x1280 are 4x the detector's 256x320
input, so a square of 96 pixels at multiples of 32 covers 3x3 cells and comes back exactly."""

from __future__ import annotations

import io
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from fashionsearch.detection import Detection, box_iou
from fashionsearch.images import ImageLimits
from fashionsearch.v1 import gateway_pb2
from services.gateway import crops
from testkit.gateway_stack import Stack, jpeg, predicted_subcategories, start_stack
from testkit.http_api import Http, error_of
from testkit.process_stack import free_port
from testkit.tiny_detector import GROUPS, SHOES_COLOUR, TOP_COLOUR, photo_of_squares, write_tiny_detector
from testkit.tiny_models import DEFAULT_HEADS

pytestmark = pytest.mark.integration

SIZE = (1024, 1280)
SQUARES = [(128, 256, 96, TOP_COLOUR), (448, 640, 96, SHOES_COLOUR)]
EXPECTED = [("top", (128, 256, 224, 352)), ("shoes", (448, 640, 544, 736))]
OUTFIT = photo_of_squares(SIZE, SQUARES, image_format="JPEG")
ITEM_KEYS = {"box", "group", "score", "attributes", "suggested_name", "keywords", "hits"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    root = tmp_path_factory.mktemp("outfit")
    running = start_stack(
        root,
        text_model=True,
        detector_dir=write_tiny_detector(root / "detector", height=320, width=256),
        http_port=free_port(),
    )
    # Every subCategory the tiny classifier can predict is in the catalogue, so every product found has hits.
    items = []
    for n, sub in enumerate(DEFAULT_HEADS["subCategory"] * 4):
        colour = (40 * (n % 6), 30 * (n % 7), 255 - 20 * (n % 9))
        payload = gateway_pb2.ItemPayload(name=f"Item {n} {sub}", sub_category=sub, article_type="Tshirts")
        items.append(gateway_pb2.CatalogueItem(id=n + 1, image=jpeg(colour), payload=payload))
    assert all(r.upserted for r in running.upsert(items))
    yield running
    running.close()


@pytest.fixture(scope="module")
def api(stack) -> Http:
    return Http(stack.gateway_settings.http_port)


def xyxy(box: Any) -> tuple[float, float, float, float]:
    if isinstance(box, dict):
        return box["left"], box["top"], box["left"] + box["width"], box["top"] + box["height"]
    return box.left, box.top, box.left + box.width, box.top + box.height


def assert_boxes(found: list[tuple[str, tuple[float, ...]]], expected: list[tuple[str, tuple[int, ...]]]) -> None:
    assert sorted(g for g, _ in found) == sorted(g for g, _ in expected), found
    for group, box in expected:
        [match] = [b for g, b in found if g == group]
        assert box_iou(np.array(match), np.array(box))[0, 0] >= 0.9, (group, match, box)


def test_search_outfit_finds_each_product_and_searches_it_in_its_predicted_subcategory(stack):
    reply = stack.stub.SearchOutfit(gateway_pb2.SearchOutfitRequest(image=OUTFIT, top_k=3), timeout=10)
    assert (reply.image_width, reply.image_height) == SIZE
    assert reply.detector_model.name == "tiny-detector" and reply.classifier_model.name == "tiny-classifier"
    assert reply.embedder_model.name == "tiny-embedder"
    assert_boxes([(i.group, xyxy(i.box)) for i in reply.items], EXPECTED)
    assert [i.score for i in reply.items] == sorted((i.score for i in reply.items), reverse=True)
    covered = {g.name: list(g.sub_categories) for g in GROUPS}
    for item in reply.items:
        labels = next(a.labels for a in item.attributes if a.attribute == "subCategory")
        predicted = predicted_subcategories([(label.label, label.probability) for label in labels])
        assert predicted[0] == labels[0].label
        # the classifier's subCategories, then those of the detector's group for the box
        searched = list(dict.fromkeys(predicted + covered[item.group]))
        assert [(f.field, list(f.values)) for f in item.applied_filters] == [("subCategory", searched)]
        assert 1 <= len(item.hits) <= 3 and {h.payload.sub_category for h in item.hits} <= set(searched)
        assert item.suggested_name and item.keywords


def test_each_product_is_read_from_its_cut_out(stack):
    # What the gateway classifies for a product is what Search answers for that product cut out alone (searched
    # with the outfit item's filters: the predicted subCategory widened by the detector's group).
    detections = [Detection(*box[:2], box[2] - box[0], box[3] - box[1], group, 1.0) for group, box in EXPECTED]
    photo = crops.decode_photo(OUTFIT, ImageLimits())
    reply = stack.stub.SearchOutfit(gateway_pb2.SearchOutfitRequest(image=OUTFIT), timeout=10)
    for item in reply.items:
        [cut] = crops.cut_out(photo, [d for d in detections if d.group == item.group])
        request = gateway_pb2.SearchRequest(
            image=cut,
            crop=gateway_pb2.CROP_NONE,
            filter_mode=gateway_pb2.FILTER_MODE_EXPLICIT,
            filters=item.applied_filters,
        )
        alone = stack.stub.Search(request, timeout=10)
        assert [a.labels[0].label for a in item.attributes] == [a.labels[0].label for a in alone.attributes]
        assert [h.id for h in item.hits] == [h.id for h in alone.hits]


def test_all_products_of_a_photo_are_classified_and_embedded_in_one_batch_call(stack):
    classifier, embedder = (batcher.stats for batcher in stack.wired.batchers[:2])
    before = (classifier.batches, embedder.batches)
    photo = photo_of_squares(SIZE, [(x, y, 32, TOP_COLOUR) for x in (64, 256, 448, 640) for y in (64, 448, 832)])
    reply = stack.stub.SearchOutfit(gateway_pb2.SearchOutfitRequest(image=photo), timeout=10)
    assert len(reply.items) == 12
    assert (classifier.batches, embedder.batches) == (before[0] + 1, before[1] + 1)
    assert classifier.largest >= 12 and embedder.largest >= 12


def test_http_outfit_answer_has_exactly_the_documented_shape(api, stack):
    status, body = api.upload("/v1/search/outfit", {"image": OUTFIT, "top_k": "2"})
    assert status == 200, body
    assert set(body) == {"items"} and len(body["items"]) == 2
    _, single = api.upload("/v1/search?filter_mode=none", {"image": OUTFIT})
    for item in body["items"]:
        assert set(item) == ITEM_KEYS
        assert set(item["box"]) == {"left", "top", "width", "height"}
        assert all(isinstance(v, int) for v in item["box"].values())
        assert 0 < item["score"] <= 1 and len(item["hits"]) == 2
        # attributes and hits are shaped as in /v1/search
        assert [set(a) for a in item["attributes"]] == [set(a) for a in single["attributes"]]
        assert set(item["hits"][0]) == set(single["hits"][0])
        assert set(item["hits"][0]["payload"]) == set(single["hits"][0]["payload"])
    assert_boxes([(i["group"], xyxy(i["box"])) for i in body["items"]], EXPECTED)
    grpc_reply = stack.stub.SearchOutfit(gateway_pb2.SearchOutfitRequest(image=OUTFIT, top_k=2), timeout=10)
    assert [[h["id"] for h in i["hits"]] for i in body["items"]] == [[h.id for h in i.hits] for i in grpc_reply.items]


def test_refine_words_apply_to_every_product(api):
    status, body = api.upload("/v1/search/outfit?refine=for%20women", {"image": OUTFIT})
    assert status == 200, body
    assert len(body["items"]) == 2
    status, body = api.upload("/v1/search/outfit", {"image": OUTFIT, "refine": "\x00"})
    assert "refine_text" in error_of(status, body, 400, "INVALID_ARGUMENT")


# ---- bad input (issue 28, item 6) ------------------------------------------------------------------------------


def test_a_photo_without_a_product_is_an_empty_list_not_an_error(api):
    status, body = api.upload("/v1/search/outfit", {"image": photo_of_squares(SIZE, [], image_format="JPEG")})
    assert (status, body) == (200, {"items": []})


def test_fifty_products(api):
    # Squares of one cell (32 pixels), four cells apart: 50 separate peaks, the detector's max_detections.
    squares = [(32 + 128 * (n % 8), 32 + 128 * (n // 8), 32, TOP_COLOUR) for n in range(50)]
    status, body = api.upload("/v1/search/outfit", {"image": photo_of_squares(SIZE, squares)})
    assert status == 200, body
    assert len(body["items"]) == 50
    found = np.array([xyxy(i["box"]) for i in body["items"]], dtype=float)
    truth = np.array([(x, y, x + s, y + s) for x, y, s, _ in squares], dtype=float)
    assert (box_iou(found, truth).max(axis=0) >= 0.9).all()
    assert all(i["hits"] for i in body["items"])


def test_a_1x1_photo_is_a_clear_400(api):
    one = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(one, format="PNG")
    status, body = api.upload("/v1/search/outfit", {"image": one.getvalue()})
    assert "both sides must be at least" in error_of(status, body, 400, "INVALID_ARGUMENT")


def test_a_12_megapixel_photo_gets_boxes_in_its_own_pixels(api):
    # 3072x3840 (11.8 MP) is 3x the other photos: cells of 96 pixels, the squares still on them.
    big = photo_of_squares((3072, 3840), [(x * 3, y * 3, s * 3, c) for x, y, s, c in SQUARES], image_format="JPEG")
    status, body = api.upload("/v1/search/outfit", {"image": big})
    assert status == 200, body
    assert_boxes(
        [(i["group"], xyxy(i["box"])) for i in body["items"]], [(g, tuple(3 * v for v in b)) for g, b in EXPECTED]
    )


def test_a_panorama(api):
    panorama = photo_of_squares((6000, 800), [(2000, 100, 600, TOP_COLOUR)], image_format="JPEG")
    status, body = api.upload("/v1/search/outfit", {"image": panorama})
    assert status == 200, body
    # The photo is 34 input pixels high: the tiny detector places the square only to within its cells (188 pixels).
    boxes = [xyxy(item["box"]) for item in body["items"]]
    assert any(2000 <= (left + right) / 2 <= 2600 for left, _, right, _ in boxes), boxes
    assert all(0 <= left < right <= 6000 and 0 <= top < bottom <= 800 for left, top, right, bottom in boxes)


# ---- crop=auto (issue 28, item 5) ------------------------------------------------------------------------------


#: A pale magenta wall: not the catalogue's white (so not a packshot), and nothing the tiny detector sees as a
#: product (it reads darkness in the red and blue channels only).
WALL = (255, 200, 255)


def test_crop_auto_reads_the_main_product_only(api, stack):
    photo = photo_of_squares(SIZE, [(128, 256, 96, TOP_COLOUR)], image_format="JPEG", background=WALL)
    [cut] = crops.cut_out(crops.decode_photo(photo, ImageLimits()), [Detection(128, 256, 96, 96, "top", 1.0)])
    auto = stack.stub.Search(gateway_pb2.SearchRequest(image=photo, crop=gateway_pb2.CROP_AUTO), timeout=10)
    alone = stack.stub.Search(gateway_pb2.SearchRequest(image=cut, crop=gateway_pb2.CROP_NONE), timeout=10)
    whole = stack.stub.Search(gateway_pb2.SearchRequest(image=photo, crop=gateway_pb2.CROP_NONE), timeout=10)
    assert [h.id for h in auto.hits] == [h.id for h in alone.hits]
    assert [a.labels[0].probability for a in auto.attributes] == pytest.approx(
        [a.labels[0].probability for a in alone.attributes], abs=1e-6
    )
    assert [a.labels[0].probability for a in whole.attributes] != pytest.approx(
        [a.labels[0].probability for a in alone.attributes], abs=1e-6
    )
    # auto is the default, over gRPC and HTTP alike
    default = stack.stub.Search(gateway_pb2.SearchRequest(image=photo), timeout=10)
    assert [a.labels[0].probability for a in default.attributes] == pytest.approx(
        [a.labels[0].probability for a in auto.attributes], abs=1e-6
    )
    for path in ("/v1/search?crop=auto", "/v1/search"):
        status, body = api.upload(path, {"image": photo})
        assert status == 200 and [h["id"] for h in body["hits"]] == [h.id for h in auto.hits]
    status, body = api.upload("/v1/search?crop=none", {"image": photo})
    assert status == 200 and [h["id"] for h in body["hits"]] == [h.id for h in whole.hits]
    status, body = api.upload("/v1/search", {"image": photo, "crop": "sideways"})
    assert "crop must be" in error_of(status, body, 400, "INVALID_ARGUMENT")


def test_crop_auto_without_a_product_reads_the_whole_photo(stack):
    # (A packshot read whole: tests/unit/test_gateway_outfit_service.py; the tiny detector's boxes stay small.)
    photo = photo_of_squares(SIZE, [], image_format="JPEG", background=WALL)
    auto = stack.stub.Search(gateway_pb2.SearchRequest(image=photo, crop=gateway_pb2.CROP_AUTO), timeout=10)
    whole = stack.stub.Search(gateway_pb2.SearchRequest(image=photo, crop=gateway_pb2.CROP_NONE), timeout=10)
    assert [h.id for h in auto.hits] == [h.id for h in whole.hits]
    assert [a.labels[0].probability for a in auto.attributes] == pytest.approx(
        [a.labels[0].probability for a in whole.attributes], abs=1e-6
    )


def test_openapi_documents_outfit_search_and_crop(api):
    _, document = api.json("GET", "/openapi.json")
    outfit = document["paths"]["/v1/search/outfit"]["post"]
    assert {p["name"] for p in outfit["parameters"]} >= {"top_k", "refine"}
    schemas = document["components"]["schemas"]
    assert set(schemas["SearchOutfitResponse"]["properties"]) == {"items"}
    assert set(schemas["OutfitItem"]["required"]) == ITEM_KEYS
    crop = [p for p in document["paths"]["/v1/search"]["post"]["parameters"] if p["name"] == "crop"]
    assert crop and crop[0]["schema"]["enum"] == ["none", "auto"] and crop[0]["schema"]["default"] == "auto"


def test_without_a_detector_outfit_search_is_a_failed_precondition_and_search_reads_the_whole_photo(tmp_path):
    running = start_stack(tmp_path)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.SearchOutfit(gateway_pb2.SearchOutfitRequest(image=OUTFIT), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "GATEWAY_DETECTOR_ADDR" in caught.value.details()
        answers = [
            running.stub.Search(gateway_pb2.SearchRequest(image=OUTFIT, crop=crop), timeout=10)
            for crop in (gateway_pb2.CROP_AUTO, gateway_pb2.CROP_UNSPECIFIED, gateway_pb2.CROP_NONE)
        ]
        assert len({tuple(a.labels[0].probability for a in answer.attributes) for answer in answers}) == 1
    finally:
        running.close()
