"""Outfit search and crop=auto in GatewayService over fakes: what is cut out of the photo, what is searched where."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator

import numpy as np
import pytest
from PIL import Image

from fashionsearch import main_product
from fashionsearch.classification import AttributePrediction, LabelScore
from fashionsearch.detection import BoxVerification, Detection
from fashionsearch.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from fashionsearch.store import Hit
from fashionsearch.store.brute import BruteForceIndex
from services.gateway import crops
from services.gateway.domain import DEFAULT_CROP, CatalogueItem, Classification, Crop, SearchOptions
from services.gateway.limits import Limits
from services.gateway.predicted import missing_types, put_in, wanted_types
from services.gateway.service import GatewayService
from testkit.gateway_fakes import CLASSIFIER_MODEL, FakeClassifier, FakeDetector, FakeEmbedder, run_async

RED, BLUE = (200, 20, 20), (20, 20, 200)
#: A 300x400 photo: a red product (left, top 40, 60, 100 x 120) and a blue one (180, 250, 80 x 60) on grey.
RED_BOX = Detection(40, 60, 100, 120, "top", 0.9)
BLUE_BOX = Detection(180, 250, 80, 60, "shoes", 0.7)


def photo(size: tuple[int, int] = (300, 400)) -> bytes:
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste(RED, (40, 60, 140, 180))
    image.paste(BLUE, (180, 250, 260, 310))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class RecordingClassifier(FakeClassifier):
    """Predicts subCategory Topwear for a red photo and Shoes otherwise; keeps the photos it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    async def classify(self, data: bytes) -> Classification:
        if data.startswith(b"img:"):  # a catalogue item of the fakes, classified at upsert
            return await super().classify(data)
        self.seen.append(data)
        centre = Image.open(io.BytesIO(data)).convert("RGB")
        r, _, b = centre.getpixel((centre.width // 2, centre.height // 2))
        labels = {**self.labels, "subCategory": "Topwear" if r > 150 else "Shoes"}
        p = 0.9 if max(r, b) > 150 else 0.3  # the grey background: not a product it knows
        return Classification.of(
            [AttributePrediction(k, (LabelScore(v, p), LabelScore("Other", 0.05))) for k, v in labels.items()],
            model=CLASSIFIER_MODEL,
        )


#: The catalogue of these tests: (subCategory, articleType) of products 1, 2, ...
CATALOGUE = (
    ("Topwear", "Tshirts"),
    ("Topwear", "Tshirts"),
    ("Shoes", "Heels"),
    ("Shoes", "Heels"),
    ("Bags", "Handbags"),
)


async def _items(catalogue: tuple[tuple[str, str], ...]) -> AsyncIterator[CatalogueItem]:
    for pid, (sub, article) in enumerate(catalogue, start=1):
        payload = {"name": f"Item {pid}", "subCategory": sub, "articleType": article}
        yield CatalogueItem(id=pid, image=f"img:{pid}".encode(), payload=payload)


async def _service(
    detector: FakeDetector | None, outfit_flip_test: bool = True, catalogue: tuple[tuple[str, str], ...] = CATALOGUE
) -> tuple[GatewayService, RecordingClassifier, FakeEmbedder]:
    classifier, embedder = RecordingClassifier(), FakeEmbedder()
    limits = Limits(max_image_bytes=10**6)
    service = GatewayService(
        classifier, embedder, BruteForceIndex(), limits, detector=detector, outfit_flip_test=outfit_flip_test
    )
    assert all([o.error is None async for o in service.upsert(_items(catalogue))])
    classifier.seen.clear()
    return service, classifier, embedder


@run_async
async def test_each_product_is_cut_out_and_searched_within_its_predicted_subcategory():
    service, classifier, _ = await _service(FakeDetector((RED_BOX, BLUE_BOX)))
    result = await service.search_outfit(photo(), SearchOptions(top_k=5))
    assert [item.detection for item in result.items] == [RED_BOX, BLUE_BOX]
    assert [item.applied_filters for item in result.items] == [
        {"subCategory": ("Topwear",)},
        {"subCategory": ("Shoes",)},
    ]
    assert [{h.id for h in item.hits} for item in result.items] == [{1, 2}, {3, 4}]
    assert result.size == (300, 400) and result.detector_model.name == "fake-detector"
    # What the classifier saw: each product on white at the catalogue's 3:4, a little room around it, then (the
    # flip test, on by default) each cut-out's mirror image.
    assert len(classifier.seen) == 4
    for data, colour in zip(classifier.seen[:2], (RED, BLUE), strict=True):
        cut = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)
        assert cut.shape[1] / cut.shape[0] == pytest.approx(3 / 4, abs=0.02)
        assert np.abs(cut[cut.shape[0] // 2, cut.shape[1] // 2] - colour).max() < 40
        assert (cut[0, 0] > 240).all() or (cut[0, 0] == 128).all()  # a corner is padding or the margin
    for plain, mirror in zip(classifier.seen[:2], classifier.seen[2:], strict=True):
        seen = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB"), dtype=int) for d in (plain, mirror)]
        assert np.abs(seen[0][:, ::-1] - seen[1]).mean() < 2  # the same pixels, mirrored (JPEG's noise apart)


@run_async
async def test_the_detectors_group_widens_a_products_filter_to_the_subcategories_it_covers():
    # The blue product reads Shoes; its box's group covers Shoes and Bags, so both are searched. The red one reads
    # Topwear in a box whose group covers Topwear alone: its filter stays as the classifier put it.
    red = dataclasses.replace(RED_BOX, sub_categories=("Topwear",))
    blue = dataclasses.replace(BLUE_BOX, sub_categories=("Shoes", "Bags"))
    service, _, _ = await _service(FakeDetector((red, blue)))
    result = await service.search_outfit(photo(), SearchOptions(top_k=5))
    assert [item.applied_filters for item in result.items] == [
        {"subCategory": ("Topwear",)},
        {"subCategory": ("Shoes", "Bags")},
    ]
    assert [{h.id for h in item.hits} for item in result.items] == [{1, 2}, {3, 4, 5}]


@run_async
async def test_a_full_page_of_hits_shows_the_nearest_product_of_the_predicted_article_type():
    # The classifier names every product Shirts (FakeClassifier's articleType). Four T-shirts, nearest first:
    tshirts = (("Topwear", "Tshirts"),) * 4
    service, _, _ = await _service(FakeDetector((RED_BOX,)), catalogue=tshirts)
    order = [h.id for h in (await service.search_outfit(photo(), SearchOptions(top_k=4))).items[0].hits]
    assert sorted(order) == [1, 2, 3, 4]  # no shirt in the catalogue: the nearest products as they are
    # The same catalogue with the farthest of them a shirt: a page of two ends with it instead of the second nearest,
    # a page that shows it anyway and a page of one are the nearest products as they are.
    catalogue = tuple(("Topwear", "Shirts" if pid == order[-1] else "Tshirts") for pid in range(1, 5))
    service, _, _ = await _service(FakeDetector((RED_BOX,)), catalogue=catalogue)

    async def page(top_k: int) -> list[int]:
        return [h.id for h in (await service.search_outfit(photo(), SearchOptions(top_k=top_k))).items[0].hits]

    assert await page(2) == [order[0], order[-1]]
    assert await page(4) == order
    assert await page(1) == [order[0]]
    # Filters that name articleTypes (refine words) are the caller's: no product of another type is put in.
    tshirt = [Hit(1, 0.1, {"articleType": "Tshirts"}), Hit(2, 0.2, {"articleType": "Tshirts"})]
    shirts = [AttributePrediction("articleType", (LabelScore("Shirts", 0.8),))]
    assert missing_types(wanted_types(shirts, 2), tshirt, 2, {"subCategory": ("Topwear",)}) == ["Shirts"]
    assert missing_types(wanted_types(shirts, 2), tshirt, 2, {"articleType": ("Tshirts",)}) == []


def test_an_outfit_page_shows_the_runner_up_type_when_the_classifier_gives_it_enough():
    def read(*labels: tuple[str, float]) -> list[AttributePrediction]:
        return [AttributePrediction("articleType", tuple(LabelScore(label, p) for label, p in labels))]

    unsure, sure = read(("Tshirts", 0.6), ("Tops", 0.3)), read(("Tshirts", 0.95), ("Tops", 0.04))
    assert wanted_types(unsure, 5) == ["Tshirts", "Tops"] and wanted_types(sure, 5) == ["Tshirts"]
    assert wanted_types(unsure, 2) == ["Tshirts"] and wanted_types(unsure, 1) == []  # a page with room only
    page = [Hit(k, k / 10, {"articleType": kind}) for k, kind in enumerate(["Shirts", "Tshirts", "Shirts"], 1)]
    assert missing_types(["Tshirts", "Tops"], page, 3, {}) == ["Tops"]
    assert missing_types(["Tshirts", "Tops"], page[:2], 3, {}) == []  # not a full page: the filter holds no more
    # The runner-up's nearest product replaces the last hit no wanted type needs: the only T-shirt stays.
    top = Hit(9, 0.9, {"articleType": "Tops"})
    assert [h.id for h in put_in(page, top, ["Tshirts", "Tops"])] == [1, 2, 9]
    shirts_only = [Hit(1, 0.1, {"articleType": "Tshirts"}), Hit(2, 0.2, {"articleType": "Shirts"})]
    assert [h.id for h in put_in(shirts_only, top, ["Tshirts", "Shirts"])] == [1, 2]  # every hit needed


@run_async
async def test_outfit_flip_test_asks_the_detector_for_it_and_can_be_turned_off():
    detector = FakeDetector((RED_BOX, BLUE_BOX))
    service, classifier, _ = await _service(detector)
    flipped = await service.search_outfit(photo(), SearchOptions(top_k=5))
    assert detector.flip_tests == [True] and len(classifier.seen) == 4
    # Search's crop=auto leaves the flip test to the detector's own setting.
    await service.search(photo(), SearchOptions(top_k=5))
    assert detector.flip_tests == [True, None]

    detector = FakeDetector((RED_BOX, BLUE_BOX))
    service, classifier, _ = await _service(detector, outfit_flip_test=False)
    plain = await service.search_outfit(photo(), SearchOptions(top_k=5))
    assert detector.flip_tests == [None] and len(classifier.seen) == 2
    # The fakes read a product and its mirror image alike, so the averaged answer is the plain one.
    for a, b in zip(flipped.items, plain.items, strict=True):
        assert a.applied_filters == b.applied_filters and [h.id for h in a.hits] == [h.id for h in b.hits]
        assert a.classification.top_labels() == b.classification.top_labels()


@run_async
async def test_no_product_is_an_empty_result_and_asks_no_model():
    service, classifier, embedder = await _service(FakeDetector(()))
    calls = embedder.calls
    result = await service.search_outfit(photo(), SearchOptions())
    assert result.items == () and result.embedder_model is None
    assert classifier.seen == [] and embedder.calls == calls


@run_async
async def test_refine_words_are_read_once_for_every_product():
    service, _, embedder = await _service(FakeDetector((RED_BOX, BLUE_BOX)))
    result = await service.search_outfit(photo(), SearchOptions(refine_text="for women"))
    assert embedder.text_queries == ["for women"] and result.refine_terms
    assert all(item.applied_filters.get("gender") == ("Women",) for item in result.items)


@run_async
async def test_without_a_detector_outfit_search_is_a_failed_precondition_and_search_reads_the_whole_photo():
    service, classifier, _ = await _service(None)
    with pytest.raises(FailedPrecondition, match="GATEWAY_DETECTOR_ADDR"):
        await service.search_outfit(photo(), SearchOptions())
    await service.search(photo(), SearchOptions(crop=Crop.AUTO))
    await service.search(photo(), SearchOptions())
    assert classifier.seen == [photo(), photo()]


@pytest.mark.parametrize(
    "failure", [Unavailable("the detector is unavailable"), DeadlineExceeded("slow"), ResourceExhausted("busy")]
)
@run_async
async def test_crop_auto_reads_the_whole_photo_when_the_detector_fails(failure):
    # crop=auto is the default: a detector down must not take photo search down with it.
    service, classifier, _ = await _service(FakeDetector((RED_BOX,), failure=failure))
    result = await service.search(photo(), SearchOptions(crop=Crop.AUTO, top_k=5))
    assert classifier.seen == [photo()] and result.hits
    with pytest.raises(type(failure)):
        await service.search_outfit(photo(), SearchOptions())


@run_async
async def test_bad_photos_and_options_are_invalid_arguments():
    service, _, _ = await _service(FakeDetector((RED_BOX,)))
    with pytest.raises(InvalidArgument, match="not a JPEG, PNG or WebP"):
        await service.search_outfit(b"%PDF-1.7 not a photo", SearchOptions())
    with pytest.raises(InvalidArgument, match="top_k"):
        await service.search_outfit(photo(), SearchOptions(top_k=0))
    with pytest.raises(InvalidArgument, match="empty"):
        await service.search_outfit(b"", SearchOptions())


@run_async
async def test_a_detector_that_saw_another_photo_is_an_internal_error():
    service, _, _ = await _service(FakeDetector((RED_BOX,), size=(400, 300)))
    with pytest.raises(Internal):
        await service.search_outfit(photo(), SearchOptions())


@run_async
async def test_crop_auto_reads_the_best_product_or_the_whole_photo():
    faint_blue = dataclasses.replace(BLUE_BOX, score=0.4)  # under RIVAL_SCORE_SHARE of the red one's 0.9
    service, classifier, _ = await _service(FakeDetector((RED_BOX, faint_blue)))
    result = await service.search(photo(), SearchOptions(crop=Crop.AUTO, top_k=5))
    assert result.applied_filters == {"subCategory": ("Topwear",)}  # the red one, the detector's best
    [seen] = classifier.seen  # its box covers 10% of the photo: read cut out alone
    assert seen == crops.cut_out(crops.decode_photo(photo(), crops.ImageLimits()), [RED_BOX])[0]
    service, classifier, _ = await _service(FakeDetector(()))
    await service.search(photo(), SearchOptions(crop=Crop.AUTO))
    assert classifier.seen == [photo()]


@run_async
async def test_crop_auto_reads_the_best_product_beside_the_whole_photo_when_another_scores_close_to_it():
    # The blue product scores 0.7 against the red one's 0.9: which one the shopper means is uncertain, so the red
    # one's cut-out (10% of the photo, read alone otherwise) is read with the whole photo.
    assert BLUE_BOX.score >= main_product.RIVAL_SCORE_SHARE * RED_BOX.score
    service, classifier, _ = await _service(FakeDetector((RED_BOX, BLUE_BOX)))
    await service.search(photo(), SearchOptions(crop=Crop.AUTO, top_k=5))
    cut = crops.cut_out(crops.decode_photo(photo(), crops.ImageLimits()), [RED_BOX])[0]
    assert classifier.seen == [cut, photo()]


@run_async
async def test_crop_auto_reads_a_larger_product_beside_the_whole_photo_and_averages_the_readings():
    # The red product's box widened to 18% of the photo (BESIDE_WHOLE_SHARE 15%): cut out, and the photo with it.
    larger = dataclasses.replace(RED_BOX, width=150, height=144)
    assert larger.width * larger.height / (300 * 400) >= main_product.BESIDE_WHOLE_SHARE
    service, classifier, _ = await _service(FakeDetector((larger,)))
    result = await service.search(photo(), SearchOptions(crop=Crop.AUTO, top_k=5))
    cut = crops.cut_out(crops.decode_photo(photo(), crops.ImageLimits()), [larger])[0]
    assert classifier.seen == [cut, photo()]
    # The two readings averaged: the cut-out's Topwear (0.9) halved, the grey photo's Shoes (0.3) halved.
    [sub] = [a for a in result.classification.attributes if a.attribute == "subCategory"]
    assert [(label.label, label.probability) for label in sub.labels] == [
        ("Topwear", pytest.approx(0.45)),
        ("Shoes", pytest.approx(0.15)),
    ]
    assert result.applied_filters == {"subCategory": ("Topwear", "Shoes")}  # unsure: both, the mass at work


def test_cut_outs_of_a_photo_decoded_at_a_reduced_scale():
    # A 4000x3000 JPEG is decoded at 1/2 (at least DECODE_SIDE a side); the boxes are in full-size pixels.
    image = Image.new("RGB", (4000, 3000), (128, 128, 128))
    image.paste(RED, (400, 600, 1400, 1800))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    decoded = crops.decode_photo(buffer.getvalue(), crops.ImageLimits())
    assert decoded.size == (4000, 3000) and decoded.image.size == (2000, 1500)
    [data] = crops.cut_out(decoded, [Detection(400, 600, 1000, 1200, "top", 0.9)])
    cut = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)
    # 1000x1200 plus an 8% margin each side, at half scale: 580x696, padded with white to 3:4 (580x773)
    assert cut.shape[:2] == pytest.approx((773, 580), abs=4)
    assert np.abs(cut[386, 290] - RED).max() < 30 and (cut[5, 290] > 240).all()


def test_a_tiny_cut_out_is_enlarged_so_the_services_accept_it():
    decoded = crops.decode_photo(photo(), crops.ImageLimits())
    [data] = crops.cut_out(decoded, [Detection(50, 70, 2, 3, "top", 0.9)])
    assert min(Image.open(io.BytesIO(data)).size) >= main_product.MIN_SIDE


@run_async
async def test_crop_auto_reads_the_whole_photo_when_the_product_fills_most_of_it():
    # A packshot: the photo is framed around the product already; cutting it out only loses context.
    filling = Detection(10, 10, 280, 380, "top", 0.9)
    service, classifier, _ = await _service(FakeDetector((filling,)))
    await service.search(photo(), SearchOptions(crop=Crop.AUTO))
    assert classifier.seen == [photo()]


@run_async
async def test_crop_auto_reads_a_packshot_whole_and_cuts_the_product_out_of_a_scene():
    # The same product and box (42% of the photo, spanning 70% of its height): on the catalogue's white the photo
    # is read as it is, told from its pixels without asking the detector; on grey the product is cut out.
    box = Detection(60, 60, 180, 280, "top", 0.9)
    detector = FakeDetector((box,))
    service, classifier, _ = await _service(detector)
    shots = []
    for background in ((255, 255, 255), (128, 128, 128)):
        image = Image.new("RGB", (300, 400), background)
        image.paste(RED, (60, 60, 240, 340))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        shots.append(buffer.getvalue())
        await service.search(shots[-1], SearchOptions(crop=Crop.AUTO))
    cut = crops.cut_out(crops.decode_photo(shots[1], crops.ImageLimits()), [box])[0]
    assert classifier.seen == [shots[0], cut, shots[1]]  # the box covers 42%: the scene is read beside it
    assert detector.photos == [shots[1]]


@run_async
async def test_a_search_crops_automatically_by_default():
    assert DEFAULT_CROP is Crop.AUTO and SearchOptions().crop is Crop.AUTO
    service, classifier, _ = await _service(FakeDetector((RED_BOX,)))
    await service.search(photo(), SearchOptions())
    await service.search(photo(), SearchOptions(crop=Crop.NONE))
    assert classifier.seen == [crops.cut_out(crops.decode_photo(photo(), crops.ImageLimits()), [RED_BOX])[0], photo()]


#: Kept when 10 x score + 10 x the classifier's confidence >= 14 (CLASSIFIER_MODEL's rule).
RULE = BoxVerification(0.2, -14.0, 10.0, 10.0, 0.5, f"{CLASSIFIER_MODEL.name}:{CLASSIFIER_MODEL.version}")
GREY_BOX = Detection(150, 20, 100, 100, "bag", 0.8)  # background only


@run_async
async def test_the_detectors_box_verification_decides_which_boxes_are_products():
    weak_blue = dataclasses.replace(BLUE_BOX, score=0.55)  # under the detector's own threshold, read with confidence
    detector = FakeDetector((RED_BOX, GREY_BOX, weak_blue), verification=RULE, score_threshold=0.6)
    service, classifier, _ = await _service(detector)
    result = await service.search_outfit(photo(), SearchOptions(top_k=5))
    # Every candidate was read (and mirrored); the grey one, strong as its score is, is dropped.
    assert len(classifier.seen) == 6
    assert [item.detection for item in result.items] == [RED_BOX, weak_blue]

    # Without the outfit flip test (the rule was fitted with it) no candidates are asked for.
    service, classifier, _ = await _service(detector, outfit_flip_test=False)
    result = await service.search_outfit(photo(), SearchOptions(top_k=5))
    assert [item.detection for item in result.items] == [RED_BOX, GREY_BOX]


@run_async
async def test_a_rule_fitted_on_another_classifier_leaves_the_choice_to_the_detectors_threshold():
    other = dataclasses.replace(RULE, classifier="classifier:other")
    weak_blue = dataclasses.replace(BLUE_BOX, score=0.55)
    detector = FakeDetector((RED_BOX, GREY_BOX, weak_blue), verification=other, score_threshold=0.6)
    service, _, _ = await _service(detector)
    result = await service.search_outfit(photo(), SearchOptions(top_k=5))
    assert [item.detection for item in result.items] == [RED_BOX, GREY_BOX]
