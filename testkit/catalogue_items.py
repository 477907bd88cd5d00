"""Catalogue items for UpsertItems from a dataset-shaped folder (styles.csv + images/<id>.jpg), e.g. sample_catalogue/.

Used by the end-to-end tests and the gateway benchmarks; rows without an image file are left out.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fashionsearch.catalogue import FILTER_FIELDS, payload_to_proto
from fashionsearch.v1 import gateway_pb2


def styles_rows(catalogue: Path) -> list[dict[str, str]]:
    """The rows of catalogue/styles.csv that have an image."""
    with (catalogue / "styles.csv").open(newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if (catalogue / "images" / f"{r['id']}.jpg").is_file()]


def catalogue_item(catalogue: Path, row: dict[str, str]) -> gateway_pb2.CatalogueItem:
    return gateway_pb2.CatalogueItem(
        id=int(row["id"]),
        image=(catalogue / "images" / f"{row['id']}.jpg").read_bytes(),
        payload=payload_to_proto(
            {a: row[a] for a in FILTER_FIELDS}
            | {
                "name": row["productDisplayName"],
                "year": int(float(row["year"])) if row["year"] else 0,
                "image_ref": f"images/{row['id']}.jpg",
            }
        ),
    )


def catalogue_items(catalogue: Path, limit: int) -> list[gateway_pb2.CatalogueItem]:
    """The first `limit` items that have an image."""
    return [catalogue_item(catalogue, row) for row in styles_rows(catalogue)[:limit]]
