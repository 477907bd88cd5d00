"""Catalogue manifests, read as a stream of rows: the dataset's styles.csv + image folder, or a generic CSV/JSONL.

Nothing here holds the whole manifest in memory: every reader is a generator, so a catalogue of millions of rows
costs the same memory as one of ten.  A row that cannot be understood becomes a ``BadRow`` in the stream (with
its line number and the reason) instead of stopping the run; so does a row whose text UTF-8 cannot carry (the
files are decoded with ``surrogateescape``, so a byte that is not UTF-8 costs its row, not the run).

Generic manifests
-----------------
CSV with a header row, or JSON Lines (one object per line).  Columns / keys:

- ``id`` (required): the product id, a positive integer; it is also the vector store's point id.
- ``image`` (required): an http(s) URL, or a file path (relative paths are relative to the image root, by default
  the manifest's folder).
- ``name`` (or ``productDisplayName``): the product name.
- ``gender``, ``masterCategory``, ``subCategory``, ``articleType``, ``baseColour``, ``season``, ``usage``, ``year``:
  attributes; empty or missing attributes are predicted by the classifier.  In JSONL they may also sit in a nested
  ``attributes`` object.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fashionsearch.catalogue import FILTER_FIELDS, STYLES_COLUMNS, parse_id, split_styles_line, unquote_name
from fashionsearch.parsing import check_text, parse_json

#: Attribute fields of a catalogue item (each also a filter field of the store).
ATTRIBUTES: tuple[str, ...] = FILTER_FIELDS

_STYLES_ATTRIBUTES: tuple[str, ...] = tuple(c for c in STYLES_COLUMNS if c in FILTER_FIELDS)
_STYLES_ATTRIBUTE_FIELDS: tuple[int, ...] = tuple(STYLES_COLUMNS.index(c) for c in _STYLES_ATTRIBUTES)


@dataclass(frozen=True)
class Row:
    """One catalogue item as the manifest describes it."""

    id: int
    image: str
    name: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    year: int = 0
    line: int = 0

    def payload_values(self) -> dict[str, Any]:
        """What the manifest says about the item, under the payload's keys (fashionsearch.catalogue)."""
        return {"name": self.name, **self.attributes, "year": self.year, "image_ref": self.image}

    def metadata_key(self) -> str:
        """Everything the manifest says about the item except the image bytes, as one unambiguous string (the
        repr of a fixed-order tuple: cheap, and every string is quoted and escaped)."""
        values = (self.name, *(self.attributes.get(a, "") for a in ATTRIBUTES), self.year, self.image)
        return repr(values)


@dataclass(frozen=True)
class BadRow:
    """A manifest line that could not be turned into a Row."""

    line: int
    raw_id: str
    image: str
    reason: str


def parse_year(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        year = int(float(value)) if not isinstance(value, int) else value
    except ValueError as exc:
        raise ValueError(f"year {value!r} is not a number") from exc
    if not 0 <= year <= 9999:
        raise ValueError(f"year {year} is out of range")
    return year


def _text(value: str, what: str) -> str:
    """`value` when UTF-8 can carry it; a byte that is not UTF-8 (read as a lone surrogate by ``surrogateescape``) or
    a JSON lone surrogate escape is a ValueError naming `what`."""
    try:
        return check_text(value, what)
    except ValueError:
        raise ValueError(
            f"{what} is not UTF-8 text (a byte that is not UTF-8, or a lone surrogate escape such as \\ud800)"
        ) from None


def _row_from_mapping(record: Mapping[str, Any], line: int, image_key: str = "image") -> Row:
    nested = record.get("attributes")
    if nested is not None and not isinstance(nested, Mapping):
        raise ValueError("'attributes' must be an object")
    merged: dict[str, Any] = dict(nested or {})
    merged.update({k: v for k, v in record.items() if k in ATTRIBUTES and v not in (None, "")})
    attributes = {}
    for key in ATTRIBUTES:
        value = merged.get(key)
        if value is None:
            continue
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"attribute {key} must be a string")
        text = _text(str(value), key).strip()
        if text:
            attributes[key] = text
    image = record.get(image_key)
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f"'{image_key}' is missing or empty")
    name = record.get("name", record.get("productDisplayName", "")) or ""
    if not isinstance(name, str):
        raise ValueError("'name' must be a string")
    year = merged.get("year", record.get("year"))
    return Row(
        id=parse_id(record.get("id")),
        image=_text(image, image_key).strip(),
        name=_text(name, "name").strip(),
        attributes=attributes,
        year=parse_year(year),
        line=line,
    )


def _bad(line: int, record: Any, reason: str, image_key: str = "image") -> BadRow:
    raw_id = record.get("id", "") if isinstance(record, Mapping) else ""
    image = record.get(image_key, "") if isinstance(record, Mapping) else ""
    return BadRow(line=line, raw_id=str(raw_id or ""), image=str(image or ""), reason=f"bad row: {reason}")


def read_styles(styles_csv: str | Path) -> Iterator[Row | BadRow]:
    """Rows of the dataset's styles.csv; the image of product <id> is ``images/<id>.jpg`` beside it.

    Some product names contain unquoted commas, so a line splits into at most 10 fields and the name takes the
    rest (`fashionsearch.catalogue.split_styles_line`); a CSV-quoted name is unquoted.  Fewer than 10 fields is a
    bad row.
    """
    with open(styles_csv, encoding="utf-8", errors="surrogateescape", newline="") as f:
        first = f.readline()
        if not first:
            return
        header = next(csv.reader([first]))
        if [h.strip() for h in header[: len(STYLES_COLUMNS)]] != list(STYLES_COLUMNS):
            raise ValueError(f"{styles_csv}: header is not the styles.csv format ({','.join(STYLES_COLUMNS)})")
        for line, raw in enumerate(f, start=2):
            if not raw.strip():
                continue
            fields = split_styles_line(raw)
            raw_id = fields[0].strip()
            image = f"images/{raw_id}.jpg"
            try:
                _text(raw, "the line")
            except ValueError as exc:
                yield BadRow(line, raw_id, image, f"bad row: {exc}")
                continue
            if len(fields) < len(STYLES_COLUMNS):
                yield BadRow(line, raw_id, image, f"bad row: {len(fields)} fields, expected {len(STYLES_COLUMNS)}")
                continue
            # A direct path (no intermediate mapping): this runs for every row of every run.
            try:
                product_id = parse_id(raw_id)
                year = parse_year(fields[7].strip())
            except ValueError as exc:
                yield BadRow(line, raw_id, image, f"bad row: {exc}")
                continue
            attributes = {}
            for column, value in zip(_STYLES_ATTRIBUTES, _STYLES_ATTRIBUTE_FIELDS, strict=True):
                text = fields[value].strip()
                if text:
                    attributes[column] = text
            name = unquote_name(fields[-1]).strip()
            yield Row(id=product_id, image=image, name=name, attributes=attributes, year=year, line=line)


def read_csv(path: str | Path) -> Iterator[Row | BadRow]:
    """Rows of a generic CSV manifest (header row required, see the module docs)."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return
        missing = {"id", "image"} - {h.strip() for h in reader.fieldnames}
        if missing:
            raise ValueError(f"{path}: manifest header lacks column(s) {', '.join(sorted(missing))}")
        for record in reader:
            line = reader.line_num
            clean = {(k or "").strip(): v for k, v in record.items()}
            if None in record:  # more values than header columns
                yield _bad(line, clean, "more values than header columns")
                continue
            if any(v is None for v in clean.values()):
                yield _bad(line, clean, "fewer values than header columns")
                continue
            try:
                yield _row_from_mapping(clean, line)
            except ValueError as exc:
                yield _bad(line, clean, str(exc))


def read_jsonl(path: str | Path) -> Iterator[Row | BadRow]:
    """Rows of a JSON Lines manifest (one object per line, see the module docs)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = parse_json(text)
            except ValueError as exc:
                yield BadRow(line_no, "", "", f"bad row: {exc}")
                continue
            if not isinstance(record, dict):
                yield BadRow(line_no, "", "", "bad row: not a JSON object")
                continue
            try:
                yield _row_from_mapping(record, line_no)
            except ValueError as exc:
                yield _bad(line_no, record, str(exc))


@dataclass(frozen=True)
class Manifest:
    """Where a catalogue comes from: the rows' file and the folder that relative image paths are taken from."""

    path: Path
    kind: str  # "styles" | "csv" | "jsonl"
    image_root: Path

    @classmethod
    def dataset(cls, dataset_dir: str | Path) -> Manifest:
        root = Path(dataset_dir)
        return cls(path=root / "styles.csv", kind="styles", image_root=root)

    @classmethod
    def file(cls, path: str | Path, image_root: str | Path | None = None) -> Manifest:
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            kind = "jsonl"
        elif suffix == ".csv":
            kind = "csv"
        else:
            raise ValueError(f"{p}: manifest must be a .csv, .jsonl or .ndjson file")
        return cls(path=p, kind=kind, image_root=Path(image_root) if image_root else p.parent)

    def rows(self) -> Iterator[Row | BadRow]:
        if not self.path.is_file():
            raise FileNotFoundError(f"manifest {self.path} does not exist")
        readers = {"styles": read_styles, "csv": read_csv, "jsonl": read_jsonl}
        return readers[self.kind](self.path)

    def approximate_rows(self) -> int:
        """Line count (for the progress bar), read in blocks without parsing."""
        count = 0
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                count += block.count(b"\n")
        return max(0, count - (1 if self.kind in ("styles", "csv") else 0))


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as exc:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from exc
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def shard_of(product_id: int, count: int) -> int:
    """The shard (0..count-1) a product id belongs to: a stable hash, so ids spread evenly whatever their pattern."""
    if count == 1:
        return 0
    digest = hashlib.blake2b(product_id.to_bytes(8, "big"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def in_shard(rows: Iterable[Row | BadRow], index: int, count: int) -> Iterator[Row | BadRow]:
    """The rows of shard index/count.  Bad rows without a usable id go to shard 0, so exactly one worker reports
    them."""
    for row in rows:
        if isinstance(row, Row):
            if shard_of(row.id, count) == index:
                yield row
        else:
            try:
                owner = shard_of(parse_id(row.raw_id), count)
            except ValueError:
                owner = 0
            if owner == index:
                yield row
