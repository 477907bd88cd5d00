"""Suggested product names and keywords, with catalogue-style examples."""

from __future__ import annotations

import pytest

from fashionsearch.naming import add_neighbour_words, neighbour_words, split_brand, suggest_keywords, suggest_name


@pytest.mark.parametrize(
    ("attributes", "name"),
    [
        (
            {"gender": "Men", "baseColour": "Navy Blue", "usage": "Casual", "articleType": "Shirts"},
            "Men Navy Blue Casual Shirts",
        ),
        (
            {
                "articleType": "Tshirts",
                "usage": "Sports",
                "gender": "Women",
                "baseColour": "Black",
                "subCategory": "Topwear",
            },
            "Women Black Sports Tshirts",
        ),
        (
            {"gender": "Men", "baseColour": "White", "usage": "Sports", "articleType": "Sports Shoes"},
            "Men White Sports Shoes",
        ),
        (
            {"gender": "Unisex", "baseColour": "NA", "usage": "Casual", "articleType": "Backpacks"},
            "Unisex Casual Backpacks",
        ),
        ({"articleType": "Watches"}, "Watches"),
        ({}, ""),
    ],
)
def test_suggest_name(attributes, name):
    assert suggest_name(attributes) == name


@pytest.mark.parametrize(
    ("name", "brand", "rest"),
    [
        ("Puma Men Grey T-shirt", "Puma", "Grey T-shirt"),
        ("Gini and Jony Girls Navy Blue Top", "Gini and Jony", "Navy Blue Top"),
        ("Nike Women's Running Shoes", "Nike", "Running Shoes"),
        ("ADIDAS Black Backpack", "ADIDAS", "Black Backpack"),
        ("Men Blue Jeans", "", "Blue Jeans"),
    ],
)
def test_split_brand(name, brand, rest):
    words_brand, words_rest = split_brand(name)
    assert (" ".join(words_brand), " ".join(words_rest)) == (brand, rest)


def test_neighbour_words_drop_brands_numbers_and_rare_words():
    names = [
        "Puma Men Grey Round Neck T-shirt",
        "Nike Men Grey Printed Round Neck T-shirt 04",
        "Puma Men Navy Polo T-shirt",
        "Wrangler Men Printed Grey T-shirt BCLH01",
        "Puma Black Sports T-shirt",  # no gender word: the first word is the brand
    ]
    words = neighbour_words(names)
    assert words[:2] == ["t-shirt", "grey"]
    assert {"round", "neck", "printed"} <= set(words)
    assert not {"puma", "nike", "wrangler", "men", "bclh01", "04", "polo", "navy"} & set(words)


def test_which_words_are_brands_is_decided_per_call_not_cached_per_name():
    """Each name's tokens are cached; whether a token is a brand word depends on the other names of the call."""
    with_brand = ["Puma Men Grey T-shirt", "Nike Men Puma Grey T-shirt", "Nike Men Puma Grey T-shirt"]
    assert "puma" not in neighbour_words(with_brand)  # the brand of the first name
    without = ["Nike Men Puma Grey T-shirt", "Adidas Men Puma Grey T-shirt"]
    assert neighbour_words(without) == neighbour_words(list(without)) == ["puma", "grey", "t-shirt"]


def test_suggest_keywords_example():
    attributes = {
        "gender": "Men",
        "baseColour": "Navy Blue",
        "usage": "Casual",
        "articleType": "Tshirts",
        "subCategory": "Topwear",
        "masterCategory": "Apparel",
        "season": "Summer",
    }
    neighbours = [
        "Puma Men Navy Blue Polo T-shirt",
        "Nike Men Navy Blue Polo T-shirt",
        "Puma Men Blue Striped Polo T-shirt",
        "United Colors of Benetton Men Striped Navy T-shirt",
    ]
    keywords = add_neighbour_words(suggest_keywords(attributes), neighbours)
    assert keywords[:6] == ["tshirts", "t-shirt", "tshirt", "tee", "tees", "men"]
    for expected in ("navy blue", "navy", "casual", "topwear", "apparel", "summer", "polo", "striped"):
        assert expected in keywords
    for brand_word in ("puma", "nike", "united", "colors", "benetton"):
        assert brand_word not in keywords
    assert len(keywords) == len(set(keywords))
    # "navy" and "blue" are already covered by the colour, so neighbour words add only new ones.
    assert keywords.count("navy") == 1 and "blue" not in keywords


def test_keywords_skip_missing_values_and_respect_limit():
    keywords = suggest_keywords({"gender": "Women", "baseColour": "NA", "usage": "", "articleType": "Heels"})
    assert keywords == ["heels", "high heels", "pumps", "women", "womens", "ladies"]
    assert suggest_keywords({"articleType": "Tshirts"}, limit=2) == ["tshirts", "t-shirt"]
    assert suggest_keywords({}) == []
