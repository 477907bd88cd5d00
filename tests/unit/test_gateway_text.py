"""Searching by words and refining a photo with words: the gateway use cases over fakes and the in-memory store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionsearch.errors import FailedPrecondition, InvalidArgument
from fashionsearch.text_contract import TextModelSpec
from fashionsearch.text_query import refine_vector
from services.gateway import words
from services.gateway.domain import (
    CatalogueItem,
    FilterMode,
    ModelId,
    SearchOptions,
    TextMatch,
    TextSearchOptions,
)
from services.gateway.service import GatewayService
from testkit.gateway_fakes import FakeEmbedder, image, run_async, vector_for

# id, gender, subCategory, articleType, baseColour
CATALOGUE = [
    (1, "Women", "Topwear", "Kurtas", "Red"),
    (2, "Women", "Topwear", "Kurtas", "Blue"),
    (3, "Women", "Topwear", "Kurtas", "Red"),
    (4, "Men", "Topwear", "Tshirts", "Red"),
    (5, "Men", "Bottomwear", "Jeans", "Blue"),
    (6, "Men", "Topwear", "Shirts", "Navy Blue"),
]


async def load(service: GatewayService) -> None:
    items = [
        CatalogueItem(
            id=pid,
            image=image(str(pid)),
            payload={
                "name": f"Brand {gender} {colour} {article}",
                "gender": gender,
                "masterCategory": "Apparel",
                "subCategory": sub,
                "articleType": article,
                "baseColour": colour,
                "season": "Summer",
                "usage": "Casual",
            },
        )
        for pid, gender, sub, article, colour in CATALOGUE
    ]
    outcomes = await service.upsert_batch(items)
    assert all(o.error is None for o in outcomes)


@run_async
async def test_words_become_filters_and_the_vector_ranks(service, fakes):
    await load(service)
    fakes[1].text_vectors["women red kurtas"] = vector_for(image("3")) + 0.001
    result = await service.search_text("women red kurtas", TextSearchOptions(match=TextMatch.BOTH))
    assert result.applied_filters == {"gender": ("Women",), "baseColour": ("Red",), "articleType": ("Kurtas",)}
    assert [h.id for h in result.hits] == [3, 1]
    assert {(t.field, t.value) for t in result.terms} >= {("gender", "Women"), ("articleType", "Kurtas")}
    assert result.reason == "" and result.text_model.name == "fake-text"
    assert result.embedder_model == fakes[1].model_id


@run_async
async def test_vector_only_ignores_what_the_words_name(service, fakes):
    await load(service)
    fakes[1].text_vectors["women red kurtas"] = vector_for(image("5"))
    result = await service.search_text("women red kurtas", TextSearchOptions(match=TextMatch.VECTOR, top_k=2))
    assert result.applied_filters == {}
    assert result.hits[0].id == 5 and len(result.hits) == 2


@run_async
async def test_filters_only_returns_the_named_products_and_says_when_no_word_names_one(service):
    await load(service)
    result = await service.search_text("red kurta", TextSearchOptions(match=TextMatch.FILTERS))
    assert sorted(h.id for h in result.hits) == [1, 3]
    nothing = await service.search_text("puma shirt", TextSearchOptions(match=TextMatch.FILTERS))
    assert nothing.hits == () and "no word names" in nothing.reason


@run_async
async def test_explicit_filters_apply_too_and_win_on_their_field(service):
    await load(service)
    result = await service.search_text(
        "red kurta",
        TextSearchOptions(match=TextMatch.BOTH, filters=(("baseColour", ("Blue",)), ("gender", ("Women",)))),
    )
    assert result.applied_filters == {"baseColour": ("Blue",), "articleType": ("Kurtas",), "gender": ("Women",)}
    assert [h.id for h in result.hits] == [2]


@run_async
async def test_unknown_words_give_no_hits_and_a_reason(service, fakes):
    await load(service)
    result = await service.search_text("xqzt blorp", TextSearchOptions())
    assert result.hits == () and "none of the words ('xqzt', 'blorp') is known" in result.reason
    assert result.unknown_words == ("xqzt", "blorp")
    empty = await service.search_text("men jeans", TextSearchOptions(filters=(("season", ("Winter",)),)))
    assert empty.hits == () and "no product in the catalogue has" in empty.reason


@run_async
async def test_typos_and_spellings_are_read_and_the_default_match_is_the_measured_one(service, fakes):
    await load(service)
    for query, value in (("jeens", "Jeans"), ("t shirt", "Tshirts"), ("tshirts", "Tshirts")):
        result = await service.search_text(query, TextSearchOptions())
        assert [t.value for t in result.terms] == [value], query
    assert (await service.search_text("jeens", TextSearchOptions())).terms[0].corrected
    default = await service.search_text("women red kurtas", TextSearchOptions())
    explicit = await service.search_text("women red kurtas", TextSearchOptions(match=words.DEFAULT_MATCH))
    assert default.applied_filters == explicit.applied_filters
    assert [h.id for h in default.hits] == [h.id for h in explicit.hits]


@pytest.mark.parametrize("query", ["", "   ", "x" * 257, "red\x07kurta"])
@run_async
async def test_bad_queries_are_invalid_arguments(service, fakes, query):
    with pytest.raises(InvalidArgument):
        await service.search_text(query, TextSearchOptions())
    assert fakes[1].text_queries == []


@run_async
async def test_bad_top_k_and_filters_are_invalid_arguments(service):
    with pytest.raises(InvalidArgument, match="top_k"):
        await service.search_text("red", TextSearchOptions(top_k=0))
    with pytest.raises(InvalidArgument, match="unknown filter field"):
        await service.search_text("red", TextSearchOptions(filters=(("colour", ("Red",)),)))


@run_async
async def test_a_catalogue_from_another_embedder_is_refused(fakes):
    classifier, embedder, index = fakes
    service = GatewayService(classifier, embedder, index)
    await load(service)
    other = GatewayService(classifier, FakeEmbedder(ModelId("fake-embedder", "e2")), index)
    with pytest.raises(FailedPrecondition, match="re-index"):
        await other.search_text("red kurta", TextSearchOptions(match=TextMatch.BOTH))


@run_async
async def test_refined_photo_search_moves_the_vector_and_adds_the_named_filters(service, fakes):
    await load(service)
    photo = image("photo")
    plain = await service.search(photo, SearchOptions())
    refined = await service.search(photo, SearchOptions(refine_text="in red"))
    assert plain.refine_terms == ()
    assert refined.applied_filters == {"subCategory": ("Topwear",), "baseColour": ("Red",)}
    assert {h.payload["baseColour"] for h in refined.hits} == {"Red"}
    assert [(t.field, t.value) for t in refined.refine_terms] == [("baseColour", "Red")]
    assert fakes[1].text_queries == ["in red"]


@run_async
async def test_an_article_type_in_the_words_replaces_the_predicted_subcategory(service):
    await load(service)
    result = await service.search(image("photo"), SearchOptions(refine_text="jeans"))
    assert result.applied_filters == {"articleType": ("Jeans",)}
    assert [h.id for h in result.hits] == [5]
    explicit = await service.search(
        image("photo"),
        SearchOptions(mode=FilterMode.EXPLICIT, filters=(("subCategory", ("Topwear",)),), refine_text="jeans"),
    )
    assert explicit.hits == ()  # the caller's explicit filter stays


@run_async
async def test_refine_words_and_explicit_filters_follow_search_texts_rule_and_say_why(service):
    """One rule for photo, by-id and text searches: on the same field the caller's explicit filter wins over what
    the words name, and the answer says so; words that leave no product with the filters give a reason too."""
    await load(service)
    blue = SearchOptions(mode=FilterMode.EXPLICIT, filters=(("baseColour", ("Blue",)),), refine_text="in red")
    for result in (await service.search(image("photo"), blue), await service.search_by_id(1, blue)):
        assert result.applied_filters == {"baseColour": ("Blue",)}
        assert {h.payload["baseColour"] for h in result.hits} == {"Blue"}
        assert "baseColour Red" in result.reason and "baseColour Blue" in result.reason
    text = await service.search_text("red", TextSearchOptions(filters=(("baseColour", ("Blue",)),)))
    assert text.applied_filters == {"baseColour": ("Blue",)} and text.reason == result.reason
    topwear = SearchOptions(mode=FilterMode.EXPLICIT, filters=(("subCategory", ("Topwear",)),), refine_text="jeans")
    nothing = await service.search_by_id(1, topwear)
    assert nothing.hits == ()
    assert nothing.reason == "no product in the catalogue has articleType Jeans and subCategory Topwear"
    plain = await service.search_by_id(2, SearchOptions(refine_text="red"))
    assert plain.hits and plain.reason == ""


@run_async
async def test_refined_more_like_this(service):
    await load(service)
    result = await service.search_by_id(2, SearchOptions(refine_text="red"))
    assert {h.id for h in result.hits} == {1, 3, 4}
    assert result.applied_filters == {"subCategory": ("Topwear",), "baseColour": ("Red",)}


@pytest.mark.parametrize(("words", "message"), [("xqzt", "none of the words"), ("x" * 300, "characters long")])
@run_async
async def test_bad_refinement_words_are_invalid_arguments_named_as_such(service, words, message):
    await load(service)
    with pytest.raises(InvalidArgument, match=f"^refine_text: .*{message}"):
        await service.search(image("photo"), SearchOptions(refine_text=words))
    with pytest.raises(InvalidArgument, match="^refine_text: "):
        await service.search_by_id(1, SearchOptions(refine_text=words))


def test_refine_vector_moves_halfway_and_keeps_the_length():
    photo, words = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    mixed = refine_vector(photo, words, 0.5)
    assert np.linalg.norm(mixed) == pytest.approx(1.0)
    assert mixed[0] == pytest.approx(mixed[1])
    assert np.array_equal(refine_vector(photo, -photo, 0.5), photo)


def test_the_gateway_defaults_are_the_choices_of_the_committed_text_model():
    chosen = TextModelSpec.load(Path(__file__).resolve().parents[2] / "models" / "text-embedder").metrics["choices"]
    assert words.DEFAULT_MATCH.value == chosen["default_mode"]
    assert words.MIN_FILTER_CONFIDENCE == chosen["min_filter_confidence"]
    assert words.REFINE_WEIGHT == chosen["refine_weight"]
    assert words.REFINE_MIN_CONFIDENCE == chosen["refine_min_filter_confidence"]
