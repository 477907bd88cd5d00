"""The shared readers of untrusted text (HTTP parameters and bodies, manifests): whole numbers, product ids, JSON."""

from __future__ import annotations

import pytest

from fashionsearch.catalogue import MAX_ID, parse_id
from fashionsearch.parsing import parse_int, parse_json


@pytest.mark.parametrize(
    ("value", "number"),
    [(1580, 1580), ("1580", 1580), ("0001580", 1580), ("-3", -3), (str(MAX_ID), MAX_ID), ("0" * 40 + "7", 7)],
)
def test_plain_integers_are_read(value, number):
    assert parse_int(value, "n") == number


@pytest.mark.parametrize(
    "value",
    [
        "1_580",  # int() takes digit-group underscores
        "\u0661\u0665\u0668\u0660",  # Arabic-Indic digits: int() reads them as 1580
        "\uff11\uff15\uff18\uff10",  # full-width digits
        "1580 ",
        " 1580",
        "\t1580\n",
        "+1580",
        "1580.0",
        "1e3",
        "0x10",
        "",
        "-",
        "--1",
    ],
)
def test_text_other_than_ascii_digits_is_refused(value):
    with pytest.raises(ValueError, match="digits 0-9"):
        parse_int(value, "top_k")


@pytest.mark.parametrize("value", [True, False, 1580.0, None, [1580], {"id": 1}])
def test_values_that_are_not_integers_are_refused(value):
    with pytest.raises(ValueError, match="top_k must be an integer"):
        parse_int(value, "top_k")


def test_huge_numbers_are_refused_cheaply_and_not_echoed_in_full():
    for value in ("9" * 10_000, 10**10_000, str(2**63)):
        with pytest.raises(ValueError, match="between") as refused:
            parse_int(value, "product id")
        assert len(str(refused.value)) < 150


def test_product_ids_are_positive_and_fit_a_qdrant_point_id():
    assert parse_id("1580") == parse_id(1580) == 1580
    for value in (0, "0", -1, MAX_ID + 1, "1580 "):
        with pytest.raises(ValueError, match="product id"):
            parse_id(value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"{nope", "not valid JSON (Expecting property name"),
        (b'{"a": "\xff"}', "not valid JSON (not UTF-8"),
        (b'{"id": ' + b"7" * 10_000 + b"}", "more than 4300 digits"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ('{"a": ' * 100_000, "nested too deeply"),
    ],
)
def test_json_that_breaks_the_json_module_is_a_value_error(text, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        parse_json(text)


def test_json_is_read():
    assert parse_json(b'{"id": 1580, "top_k": [1, 2]}') == {"id": 1580, "top_k": [1, 2]}
