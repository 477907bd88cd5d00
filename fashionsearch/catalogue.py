"""The catalogue's fields, shared by the indexer, the gateway, the store and training: the dataset's styles.csv
columns, the attribute (filter) fields, the one styles.csv line parser, the one product id parser, and the stored
item: the payload kept beside each vector (what every writer stores, `stored_payload`, and how every reader shows it,
`payload_record`, and by ItemPayload's field names, `payload_by_field_name`), with the content hash.

Adding an item follows one set of rules, the gateway's writes and the indexer's alike: `check_item` (an id in range,
payload fields only, text a store can write), `missing_attributes` (what the classifier is asked for), then
`predicted_attributes` and `stored_payload` (what is stored).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from typing import Any

from fashionsearch.parsing import check_text, parse_int
from fashionsearch.v1 import gateway_pb2

#: Largest product id: Qdrant point ids are unsigned 64-bit, the gRPC API carries them as int64.
MAX_ID = 2**63 - 1

#: Column order of the dataset's styles.csv.
STYLES_COLUMNS: tuple[str, ...] = (
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
)

#: The attributes of a product: what a classifier predicts and what a search may filter on (exact match); the
#: styles.csv columns between the id and the name, except the year.
FILTER_FIELDS: tuple[str, ...] = tuple(c for c in STYLES_COLUMNS[1:-1] if c != "year")

#: Payload keys as stored beside each vector: the name, the styles.csv columns between the id and the name (the
#: attributes and the year), and the image reference.
PAYLOAD_FIELDS: tuple[str, ...] = ("name", *STYLES_COLUMNS[1:-1], "image_ref")

#: Payload key of the content hash an ingestion job stores with each item (its fingerprint; not a catalogue field).
CONTENT_HASH_KEY = "content_hash"

#: Protobuf ItemPayload field -> payload key, for every payload field.
PROTO_PAYLOAD_FIELDS: dict[str, str] = {
    "name": "name",
    "gender": "gender",
    "master_category": "masterCategory",
    "sub_category": "subCategory",
    "article_type": "articleType",
    "base_colour": "baseColour",
    "season": "season",
    "year": "year",
    "usage": "usage",
    "image_ref": "image_ref",
}


def unknown_fields(values: Mapping[str, Any]) -> list[str]:
    """The keys of `values` that are not payload fields, sorted."""
    return sorted(set(values) - set(PAYLOAD_FIELDS))


def check_id(item_id: int) -> None:
    """ValueError unless `item_id` is a product id (1 .. MAX_ID)."""
    if not 1 <= item_id <= MAX_ID:
        raise ValueError(f"product id must be between 1 and {MAX_ID}, got {item_id}")


def check_item(item_id: int, values: Mapping[str, Any], content_hash: str = "") -> None:
    """The rules an item meets before any writer embeds and stores it: a product id in range, payload fields only,
    and text (each string value, the content hash) that UTF-8 can carry. ValueError says what is wrong."""
    check_id(item_id)
    unknown = unknown_fields(values)
    if unknown:
        raise ValueError(f"unknown payload field(s) {', '.join(unknown)}")
    for key, value in values.items():
        if isinstance(value, str):
            check_text(value, f"payload field {key!r}")
    check_text(content_hash, "content_hash")


def missing_attributes(values: Mapping[str, Any]) -> tuple[str, ...]:
    """The attributes (FILTER_FIELDS) that `values` leaves empty: a writer stores the classifier's answer for them,
    so that filtered searches find the item."""
    return tuple(f for f in FILTER_FIELDS if not values.get(f))


def predicted_attributes(top_labels: Mapping[str, str], missing: Sequence[str]) -> dict[str, str]:
    """The classifier's top label (attribute -> label) for each `missing` attribute it has one for."""
    return {f: top_labels[f] for f in missing if top_labels.get(f)}


def stored_payload(
    values: Mapping[str, Any], predicted: Mapping[str, str] | None = None, content_hash: str = ""
) -> dict[str, Any]:
    """The payload every writer stores beside a vector: the payload fields of `values` that have a value (an empty
    string, None or a 0 year is left out), the `predicted` attributes where `values` has none, and the content hash
    when there is one. Raises ValueError for a key that is not a payload field (writers check their input first)."""
    unknown = unknown_fields(values)
    if unknown:
        raise ValueError(f"unknown payload field(s) {', '.join(unknown)}")
    payload = {k: v for k, v in values.items() if v not in ("", None, 0)}
    for attribute, label in (predicted or {}).items():
        if label:
            payload.setdefault(attribute, label)
    if content_hash:
        payload[CONTENT_HASH_KEY] = content_hash
    return payload


def payload_record(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A stored payload as readers show it: every payload field, strings ("" when missing) and the year as an
    integer (0 when missing or not a number)."""
    record: dict[str, Any] = {}
    for key in PAYLOAD_FIELDS:
        value = payload.get(key)
        if key == "year":
            try:
                record[key] = int(value or 0)
            except (TypeError, ValueError):
                record[key] = 0
        else:
            record[key] = "" if value is None else str(value)
    return record


def payload_by_field_name(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A stored payload as `payload_record` shows it, keyed by ItemPayload's field names (snake_case): the
    protobuf message's fields, and the payload of the gateway's HTTP JSON."""
    record = payload_record(payload)
    return {field: record[key] for field, key in PROTO_PAYLOAD_FIELDS.items()}


def payload_to_proto(payload: Mapping[str, Any]) -> gateway_pb2.ItemPayload:
    """A stored payload (or a writer's values) as the protobuf ItemPayload."""
    return gateway_pb2.ItemPayload(**payload_by_field_name(payload))


def payload_from_proto(message: gateway_pb2.ItemPayload) -> dict[str, Any]:
    """The payload values a protobuf ItemPayload carries (unset fields as "" and 0)."""
    return {key: getattr(message, field) for field, key in PROTO_PAYLOAD_FIELDS.items()}


def split_styles_line(line: str) -> list[str]:
    """The fields of one styles.csv data line, unstripped: at most 10, the product name takes the rest of the line
    (some names hold unquoted commas).  Fewer than 10 fields means a bad line; the name may still be CSV-quoted
    (see `unquote_name`)."""
    return line.rstrip("\r\n").split(",", len(STYLES_COLUMNS) - 1)


def unquote_name(raw: str) -> str:
    """A CSV-quoted product name unquoted (two names in the dataset are); any other name as it is."""
    if raw.startswith('"'):
        parsed = next(csv.reader([raw]))
        if len(parsed) == 1:
            return parsed[0]
    return raw


def parse_id(value: Any) -> int:
    """A product id (1 .. MAX_ID), read by `fashionsearch.parsing.parse_int`'s strict rules."""
    return parse_int(value, "product id", 1, MAX_ID)
