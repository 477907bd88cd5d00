"""Query understanding: which words name attribute values, typos, plurals, unknown words."""

from __future__ import annotations

import pytest

from fashionsearch.text_query import QueryVocabulary, stem
from testkit.tiny_models import TINY_TERMS

VOCABULARY = QueryVocabulary(TINY_TERMS, {"shirt": 50, "t": 40, "kurti": 30, "puma": 20})


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("shoes", "shoe"),
        ("dresses", "dress"),
        ("watches", "watch"),
        ("jeans", "jean"),
        ("sarees", "saree"),
        ("dress", "dress"),
        ("red", "red"),
        ("kurtis", "kurti"),
    ],
)
def test_stem_drops_plural_endings(word, expected):
    assert stem(word) == expected


def read(query: str) -> dict[str, str]:
    return {t.field: t.value for t in VOCABULARY.understand(query).terms}


def test_words_name_attribute_values():
    assert read("Women Blue Kurtas") == {"gender": "Women", "baseColour": "Blue", "articleType": "Kurtas"}


@pytest.mark.parametrize("query", ["t shirt", "tshirts", "T-Shirt", "tshirt", "tees"])
def test_spellings_of_tshirts(query):
    assert read(query) == {"articleType": "Tshirts"}


def test_aliases_typos_and_longest_phrase_first():
    assert read("sari") == {"articleType": "Sarees"}
    assert read("navy blue jeans") == {"baseColour": "Navy Blue", "articleType": "Jeans"}
    found = VOCABULARY.understand("jeens")
    assert [(t.value, t.corrected) for t in found.terms] == [("Jeans", True)]
    assert found.terms[0].confidence == pytest.approx(0.98 * 0.9)


def test_unknown_words_are_listed_and_short_ones_not_corrected():
    found = VOCABULARY.understand("puma xqzt red zz")
    assert found.unknown_words == ("xqzt", "zz")
    assert not found.nothing_known
    assert VOCABULARY.understand("xqzt blorp").nothing_known


def test_filters_keep_confident_terms_and_list_several_values():
    found = VOCABULARY.understand("men red and white formal shirt")
    assert found.filters(0.7) == {"gender": ("Men",), "baseColour": ("Red",)}
    assert found.filters(0.4) == {"gender": ("Men",), "baseColour": ("Red", "White"), "usage": ("Formal",)}
