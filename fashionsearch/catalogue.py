"""The catalogue's fields, shared by the indexer, the gateway, the store and training: the dataset's styles.csv
columns, the attribute (filter) fields, the payload keys stored beside each vector, the one styles.csv line
parser, and the one product id parser.
"""

from __future__ import annotations

import csv
from typing import Any

from fashionsearch.parsing import parse_int

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
