"""The stored item has one definition: what every writer stores (stored_payload) and how readers show it."""

from __future__ import annotations

import re

import pytest

from fashionsearch.catalogue import (
    CONTENT_HASH_KEY,
    FILTER_FIELDS,
    MAX_ID,
    PAYLOAD_FIELDS,
    check_item,
    missing_attributes,
    payload_from_proto,
    payload_record,
    payload_to_proto,
    predicted_attributes,
    stored_payload,
)
from jobs.indexer.manifest import Row
from jobs.indexer.targets import WriteItem, catalogue_item
from services.gateway.servicer import item_from_proto


def test_stored_payload_keeps_values_fills_predictions_where_missing_and_adds_the_hash():
    values = {"name": "Puma Men Tee", "gender": "Men", "subCategory": "", "year": 0, "usage": None}
    predicted = {"subCategory": "Topwear", "gender": "Women", "usage": ""}
    assert stored_payload(values, predicted, "abc") == {
        "name": "Puma Men Tee",
        "gender": "Men",  # the writer's value wins over a prediction
        "subCategory": "Topwear",
        CONTENT_HASH_KEY: "abc",
    }
    assert stored_payload({"name": "x"}) == {"name": "x"}
    with pytest.raises(ValueError, match="colour"):
        stored_payload({"colour": "Red"})


def test_readers_see_every_field_and_the_proto_round_trips():
    record = payload_record({"name": "Tee", "year": "2012", CONTENT_HASH_KEY: "abc"})
    assert list(record) == list(PAYLOAD_FIELDS) and record["year"] == 2012 and record["gender"] == ""
    assert payload_record({"year": "n/a"})["year"] == 0
    message = payload_to_proto({"name": "Tee", "subCategory": "Topwear", "year": 2012})
    assert (message.name, message.sub_category, message.year) == ("Tee", "Topwear", 2012)
    assert payload_to_proto(payload_from_proto(message)) == message


def test_the_indexer_and_the_gateway_store_the_same_payload_for_an_item():
    row = Row(
        id=7,
        image="images/7.jpg",
        name="Puma Men Navy Tee",
        attributes={"gender": "Men", "articleType": "Tshirts", "baseColour": "Navy Blue"},
        year=2012,
    )
    predicted = {"subCategory": "Topwear", "masterCategory": "Apparel", "gender": "Women"}
    direct = stored_payload(row.payload_values(), predicted, "hash-7")  # DirectTarget writes this
    through_gateway = item_from_proto(catalogue_item(WriteItem(row, b"jpeg", "hash-7")))  # GatewayTarget sends this
    assert stored_payload(through_gateway.payload, predicted, through_gateway.content_hash) == direct
    assert direct["gender"] == "Men" and direct["subCategory"] == "Topwear" and direct["image_ref"] == "images/7.jpg"


@pytest.mark.parametrize(
    ("item_id", "values", "content_hash", "message"),
    [
        (0, {}, "", "product id must be between 1 and"),
        (MAX_ID + 1, {}, "", "product id must be between 1 and"),
        (7, {"colour": "Red"}, "", "unknown payload field(s) colour"),
        (7, {"name": "Tee \ud800"}, "", "payload field 'name' is not valid Unicode"),
        (7, {"name": "Tee"}, "\udfff", "content_hash is not valid Unicode"),
    ],
)
def test_an_item_that_breaks_a_rule_is_refused_with_the_reason(item_id, values, content_hash, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_item(item_id, values, content_hash)


def test_the_classifier_fills_only_the_attributes_an_item_leaves_empty():
    values = {"name": "Puma Men Tee", "gender": "Men", "subCategory": "", "year": 2012}
    missing = missing_attributes(values)
    assert missing == tuple(f for f in FILTER_FIELDS if f != "gender")
    check_item(5, values, "abc")  # a good item passes
    labels = {"gender": "Women", "subCategory": "Topwear", "articleType": "", "baseColour": "Blue"}
    assert predicted_attributes(labels, missing) == {"subCategory": "Topwear", "baseColour": "Blue"}
