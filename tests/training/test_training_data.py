"""The dataset loader, split, vocabularies and the tf.data input pipeline."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fashionsearch.model_contract import InputSpec, preprocess
from testkit.training_data import HEADER, write_image
from training import data

pytestmark = pytest.mark.training


def _styles(root: Path, body: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "styles.csv").write_text(HEADER + body, encoding="utf-8")
    return root


EDGE_ROWS = (
    "1,Men,Apparel,Topwear,Tshirts,White,Summer,2011,Casual,Plain White T-shirt\n"
    "2,Men,Apparel,Topwear,Tshirts,Black,Summer,2011,Casual,Myntra Men's Yes, its all about me Black T-shirt\n"
    '3,Women,Apparel,Bottomwear,Shorts,Pink,Summer,2011,Sports,"Nike Women\'s EM Tempo 3.5"" Pink Short"\n'
    "4,Men,Apparel,Topwear,Tshirts,Blue,Summer,2011,Casual,No image for this one\n"
    "5,Men,Apparel,Topwear,Tshirts,Red,Summer,2011,Casual,Corrupt image\n"
    "6,Men,Apparel,Topwear\n"
    "1,Men,Apparel,Topwear,Tshirts,White,Summer,2011,Casual,Repeated id\n"
    "x7,Men,Apparel,Topwear,Tshirts,White,Summer,2011,Casual,Bad id\n"
    "8,Unisex,Footwear,Flip Flops,Flip Flops,Green,,2012,NA,Converse Unisex Green Live, Life, Laugh Flip Flops\n"
    "\n"
)


def _edge_dataset(tmp_path: Path) -> Path:
    root = _styles(tmp_path / "data", EDGE_ROWS)
    for i in (1, 2, 3):
        write_image(root / "images" / f"{i}.jpg", seed=i)
    (root / "images" / "5.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    write_image(root / "images" / "8.jpg", seed=8, size=(120, 160))  # wrong size: resized to 80x60
    return root


def test_read_styles_handles_commas_quotes_and_malformed_lines(tmp_path):
    root = _edge_dataset(tmp_path)
    table = data.read_styles(root / "styles.csv")
    by_id = {r["id"]: r for r in table.rows}
    assert sorted(by_id) == [1, 2, 3, 4, 5, 8]
    assert by_id[2]["productDisplayName"] == "Myntra Men's Yes, its all about me Black T-shirt"
    assert by_id[2]["baseColour"] == "Black"
    assert by_id[3]["productDisplayName"] == "Nike Women's EM Tempo 3.5\" Pink Short"
    assert by_id[8]["productDisplayName"] == "Converse Unisex Green Live, Life, Laugh Flip Flops"
    assert by_id[8]["season"] == "" and by_id[8]["usage"] == "NA"
    assert table.commas_in_name == 2
    reasons = dict(table.malformed)
    assert [line for line, _ in table.malformed] == [7, 8, 9]
    assert "fields" in reasons[7] and "repeated" in reasons[8] and "integer" in reasons[9]


def test_read_styles_rejects_an_unexpected_header(tmp_path):
    (tmp_path / "styles.csv").write_text("id,name\n1,x\n")
    with pytest.raises(data.DataError, match="unexpected header"):
        data.read_styles(tmp_path / "styles.csv")


def test_load_dataset_skips_missing_and_corrupt_images_and_counts_them(tmp_path, caplog):
    root = _edge_dataset(tmp_path)
    ds = data.load_dataset(root, cache_dir=tmp_path / "cache")
    assert ds.ids.tolist() == [1, 2, 3, 8]
    assert ds.images.shape == (4, 80, 60, 3) and ds.images.dtype == np.uint8
    report = ds.report
    assert report.missing_image_ids == (4,)
    assert report.corrupt_image_ids == (5,)
    assert report.resized_image_ids == (8,)
    assert len(report.malformed_rows) == 3
    assert "1 without an image" in report.summary() and "1 with a corrupt image" in report.summary()
    assert "corrupt image" in caplog.text
    assert ds.labels["productDisplayName"][1].startswith("Myntra Men's Yes, its")


def test_the_image_cache_is_reused_and_follows_file_changes(tmp_path, caplog):
    root = _edge_dataset(tmp_path)
    cache = tmp_path / "cache"
    first = data.load_dataset(root, cache_dir=cache)
    caplog.clear()
    with caplog.at_level("INFO"):
        second = data.load_dataset(root, cache_dir=cache)
    assert "image cache hit" in caplog.text
    np.testing.assert_array_equal(first.images, second.images)
    assert second.report.corrupt_image_ids == (5,)
    write_image(root / "images" / "5.jpg", seed=55)  # the corrupt file is replaced by a good one
    third = data.load_dataset(root, cache_dir=cache)
    assert third.ids.tolist() == [1, 2, 3, 5, 8]
    assert data.load_dataset(root, cache_dir=False).ids.tolist() == [1, 2, 3, 5, 8]


def test_load_dataset_needs_styles_and_images(tmp_path):
    with pytest.raises(data.DataError, match="FASHIONSEARCH_DATA"):
        data.load_dataset(tmp_path, cache_dir=False)


def test_split_is_seeded_stratified_and_order_independent(tmp_path):
    ids = np.arange(1000)
    strata = np.asarray(["a"] * 500 + ["b"] * 300 + ["c"] * 197 + ["d"] * 2 + ["e"])
    split = data.make_split(ids, strata, seed=3)
    assert Counter(split.values()) == {"train": 800, "val": 100, "test": 100}
    for cls, n in (("a", 500), ("b", 300), ("c", 197)):
        members = [split[i] for i in ids[strata == cls]]
        assert abs(members.count("val") - round(n * 0.1)) == 0
        assert abs(members.count("test") - round(n * 0.1)) == 0
    assert {split[i] for i in ids[strata == "e"]} == {"train"}
    order = np.random.default_rng(0).permutation(1000)
    assert data.make_split(ids[order], strata[order], seed=3) == split
    assert data.make_split(ids, strata, seed=4) != split

    path = data.write_split(split, tmp_path / "split.csv")
    assert data.load_split(path) == split


def test_get_split_refuses_a_stale_file(synthetic_data, tmp_path):
    ds = data.load_dataset(synthetic_data, cache_dir=False)
    path = tmp_path / "split.csv"
    with pytest.raises(data.DataError, match="no split file"):
        data.get_split(ds, path)
    split = data.get_split(ds, path, create=True)
    assert data.get_split(ds, path) == split
    data.write_split({i: s for i, s in split.items() if i != int(ds.ids[0])}, path)
    with pytest.raises(data.DataError, match="does not cover 1 ids"):
        data.get_split(ds, path)


def test_committed_split_covers_every_image_of_the_real_dataset(data_dir):
    table = data.read_styles(data_dir / "styles.csv")
    with_image = {r["id"] for r in table.rows if (data_dir / "images" / f"{r['id']}.jpg").is_file()}
    split = data.load_split(data.DEFAULT_SPLIT_FILE)
    assert with_image <= set(split)
    counts = Counter(split.values())
    assert 0.09 < counts["test"] / len(split) < 0.11 and 0.09 < counts["val"] / len(split) < 0.11


def test_vocabulary_rare_class_rules():
    values = ["a"] * 5 + ["b"] * 3 + ["c"] + ["", "NA"]
    ignore = data.build_vocabulary("x", values, min_count=3, policy="ignore")
    assert ignore.labels == ("a", "b") and ignore.rare == ("c",)
    assert ignore.encode(["a", "b", "c", "", "NA", "zzz"]).tolist() == [0, 1, -1, -1, -1, -1]
    other = data.build_vocabulary("x", values, min_count=3, policy="other")
    assert other.labels == ("a", "b", "Other")
    assert other.encode(["a", "c", "NA", "zzz"]).tolist() == [0, 2, -1, -1]
    assert other.to_dict()["counts"] == {"a": 5, "b": 3, "c": 1}
    with pytest.raises(ValueError, match="policy"):
        data.build_vocabulary("x", values, policy="drop")


def test_paper_classes_and_balanced_subset(synthetic_data):
    assert data.paper_class("Topwear", "Kurtas") == "Kurtis"
    assert data.paper_class("Topwear", "Tshirts") == "Topwear"
    assert data.paper_class("Saree", "Sarees") == "Saree"
    assert data.paper_class("Shoes", "Casual Shoes") is None
    ds = data.load_dataset(synthetic_data, cache_dir=False)
    subset, targets = data.paper_subset(ds, per_class=3)
    assert Counter(targets.tolist()) == {k: 3 for k in range(6)}
    assert all(
        data.PAPER_CLASSES[t] == data.paper_class(s, a)
        for t, s, a in zip(targets, subset.labels["subCategory"], subset.labels["articleType"], strict=True)
    )


def test_tf_pipeline_matches_the_contract_preprocess_exactly(synthetic_data):
    ds = data.load_dataset(synthetic_data, cache_dir=False)
    spec = InputSpec(name="image", height=60, width=60, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))
    pixels = data.images_for_input(ds.images, spec)
    assert pixels.shape == (len(ds), 60, 60, 3)
    batches = list(data.make_tf_dataset(pixels, np.arange(len(ds)), spec, batch_size=7))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(x, preprocess(list(ds.images), spec))
    assert y.tolist() == list(range(len(ds)))
    with pytest.raises(ValueError, match="the model wants"):
        data.make_tf_dataset(ds.images, None, spec)


def test_augmentation_keeps_shape_and_labels_and_only_moves_pixels(synthetic_data):
    ds = data.load_dataset(synthetic_data, cache_dir=False)
    spec = InputSpec(name="image", height=80, width=60)
    plain = data.make_tf_dataset(ds.images, None, spec, batch_size=len(ds))
    x, target = next(iter(plain))
    np.testing.assert_array_equal(x.numpy(), target.numpy())  # autoencoder: the input is the target

    flip_only = data.Augmentation(shift=0.0, zoom=0.0, rotation_deg=0.0, hflip=True)
    flipped = flip_only.apply(x, seed=1).numpy()
    original = x.numpy()
    for a, b in zip(flipped, original, strict=True):
        assert np.allclose(a, b, atol=1e-5) or np.allclose(a, b[:, ::-1], atol=1e-5)

    augmented = data.Augmentation().apply(x * 255.0, seed=1).numpy()
    assert augmented.shape == original.shape
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert not np.allclose(augmented, original * 255.0)
