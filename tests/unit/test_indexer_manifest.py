"""Manifest readers (styles.csv, CSV, JSONL), sharding and content hashes of the indexer job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashionsearch.catalogue import missing_attributes
from jobs.indexer.digest import StoredDigests, content_hash
from jobs.indexer.manifest import BadRow, Manifest, Row, in_shard, parse_shard, shard_of

STYLES = (
    "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"
    "15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt\n"
    "3413,Men,Apparel,Topwear,Tshirts,White,Summer,2011,Casual,Myntra Men's Yes, its all about me White T-shirt\n"
    '12,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,"Top 3.5"" wide"\n'
    "13,Women,Apparel,Topwear,Tops,,,,Casual,Top without colour\n"
    "14,Women,Apparel\n"
    "abc,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Bad id\n"
    "15,Women,Apparel,Topwear,Tops,Red,Summer,20x2,Casual,Bad year\n"
    "\n"
)


def _rows(manifest: Manifest) -> tuple[list[Row], list[BadRow]]:
    items = list(manifest.rows())
    return [r for r in items if isinstance(r, Row)], [r for r in items if isinstance(r, BadRow)]


def test_styles_csv_names_with_commas_quotes_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "styles.csv").write_text(STYLES, encoding="utf-8")
    good, bad = _rows(Manifest.dataset(tmp_path))
    by_id = {r.id: r for r in good}
    assert sorted(by_id) == [12, 13, 3413, 15970]
    assert by_id[3413].name == "Myntra Men's Yes, its all about me White T-shirt"
    assert by_id[3413].image == "images/3413.jpg" and by_id[3413].line == 3
    assert by_id[12].name == 'Top 3.5" wide'
    assert by_id[15970].attributes["baseColour"] == "Navy Blue" and by_id[15970].year == 2011
    assert missing_attributes(by_id[13].payload_values()) == ("baseColour", "season") and by_id[13].year == 0
    reasons = {b.raw_id: b.reason for b in bad}
    assert set(reasons) == {"14", "abc", "15"}
    assert (
        "3 fields" in reasons["14"]
        and "integer written with the digits 0-9" in reasons["abc"]
        and "year" in reasons["15"]
    )
    assert all(r.startswith("bad row:") for r in reasons.values())


def test_real_styles_csv_parses_completely(data_dir: Path) -> None:
    good, bad = _rows(Manifest.dataset(data_dir))
    assert not bad
    assert len(good) > 40_000 and len({r.id for r in good}) == len(good)


def test_csv_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "id,image,name,gender,articleType,year,extra\n"
        "1,a.jpg,Shirt,Men,Shirts,2015,x\n"
        "2,http://h/b.jpg,,Women,,,\n"
        "3,,No image,Men,Shirts,2015,x\n"
        "4,d.jpg,Too many,Men,Shirts,2015,x,y\n"
        "5,e.jpg\n"
        "0,f.jpg,Zero,Men,Shirts,2015,x\n",
        encoding="utf-8",
    )
    good, bad = _rows(Manifest.file(path))
    assert [(r.id, r.image, r.name) for r in good] == [(1, "a.jpg", "Shirt"), (2, "http://h/b.jpg", "")]
    assert good[0].attributes == {"gender": "Men", "articleType": "Shirts"} and good[0].year == 2015
    assert {b.raw_id: b.reason for b in bad}.keys() == {"3", "4", "5", "0"}
    assert Manifest.file(path).image_root == tmp_path


def test_csv_manifest_without_required_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,name\n1,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="image"):
        list(Manifest.file(path).rows())


def test_jsonl_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    lines = [
        json.dumps({"id": 7, "image": "x.jpg", "name": "A", "attributes": {"gender": "Men", "usage": "Sports"}}),
        json.dumps({"id": "8", "image": "y.jpg", "baseColour": "Red", "year": 2020}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"id": 9}),
        json.dumps({"id": True, "image": "z.jpg"}),
        "",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    good, bad = _rows(Manifest.file(path, image_root=tmp_path / "imgs"))
    assert [(r.id, dict(r.attributes), r.year) for r in good] == [
        (7, {"gender": "Men", "usage": "Sports"}, 0),
        (8, {"baseColour": "Red"}, 2020),
    ]
    assert [b.line for b in bad] == [3, 4, 5, 6]
    assert "not valid JSON" in bad[0].reason and "image" in bad[2].reason
    assert Manifest.file(path, image_root=tmp_path / "imgs").image_root == tmp_path / "imgs"


def test_unknown_manifest_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="csv"):
        Manifest.file(tmp_path / "m.txt")


def test_shards_partition_the_ids_deterministically() -> None:
    rows = [Row(id=i, image=f"{i}.jpg") for i in range(1, 2001)]
    shards = [[r.id for r in in_shard(rows, k, 4)] for k in range(4)]
    assert sorted(sum(shards, [])) == list(range(1, 2001))
    assert all(350 < len(s) < 650 for s in shards)
    assert shards[2] == [r.id for r in in_shard(rows, 2, 4)]
    assert shard_of(12345, 4) == shard_of(12345, 4)
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "1", "a/b", "0/0", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_content_hash_covers_image_metadata_and_embedder() -> None:
    row = Row(id=1, image="images/1.jpg", name="Shirt", attributes={"gender": "Men"}, year=2011, line=2)
    base = content_hash(row, b"\xff\xd8\xffimage", "emb@1")
    assert base == content_hash(
        Row(1, "images/1.jpg", "Shirt", {"gender": "Men"}, 2011, line=99), b"\xff\xd8\xffimage", "emb@1"
    )
    assert len(base) == 32
    variants = [
        content_hash(row, b"\xff\xd8\xffimagf", "emb@1"),
        content_hash(row, b"\xff\xd8\xffimage", "emb@2"),
        content_hash(Row(1, "images/1.jpg", "Shirt!", {"gender": "Men"}, 2011), b"\xff\xd8\xffimage", "emb@1"),
        content_hash(Row(1, "images/1.jpg", "Shirt", {"gender": "Women"}, 2011), b"\xff\xd8\xffimage", "emb@1"),
        content_hash(Row(1, "images/1.jpg", "Shirt", {"gender": "Men"}, 2012), b"\xff\xd8\xffimage", "emb@1"),
        content_hash(Row(1, "img/1.jpg", "Shirt", {"gender": "Men"}, 2011), b"\xff\xd8\xffimage", "emb@1"),
    ]
    assert len({base, *variants}) == 7


def test_stored_digests_lookup_seen_and_unseen() -> None:
    digests = StoredDigests([(30, "a" * 32), (10, "b" * 32), (20, ""), (40, "not hex")])
    assert len(digests) == 4
    pos = digests.positions([10, 15, 20, 30, 99])
    assert [p >= 0 for p in pos] == [True, False, True, True, False]
    assert digests.matches(int(pos[0]), "b" * 32)
    assert not digests.matches(int(pos[0]), "a" * 32)
    assert not digests.matches(int(pos[2]), "0" * 32)  # no stored hash never matches
    assert not digests.matches(-1, "b" * 32)
    digests.mark_seen(int(pos[0]))
    assert digests.was_seen(int(pos[0])) and not digests.was_seen(int(pos[3]))
    assert digests.unseen_ids() == [20, 30, 40]
    assert StoredDigests([]).positions([1, 2]).tolist() == [-1, -1]


def test_jsonl_lines_that_break_the_json_module_are_bad_rows(tmp_path: Path) -> None:
    """A number of 5,000 digits raises a bare ValueError and deep nesting a RecursionError out of json.loads; both
    are bad rows like any other invalid line, and the rows after them are read."""
    path = tmp_path / "m.jsonl"
    lines = [
        '{"id": ' + "7" * 5000 + ', "image": "a.jpg"}',
        "[" * 100_000 + "]" * 100_000,
        '{"id": "1580 ", "image": "b.jpg"}',
    ]
    lines.append(json.dumps({"id": 5, "image": "c.jpg"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    good, bad = _rows(Manifest.file(path))
    assert [r.id for r in good] == [5]
    reasons = [b.reason for b in bad]
    assert "more than 4300 digits" in reasons[0] and "nested too deeply" in reasons[1], reasons
    assert "integer written with the digits 0-9" in reasons[2]
