"""Shopper views and the robustness suite: what they change and what they must leave alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import robustness, shopper
from training.report import render

pytestmark = pytest.mark.training


def packshot(colour: tuple[int, int, int] = (200, 30, 30), inner_white: bool = False) -> np.ndarray:
    """80x60 white photo with a coloured product in a margin; optionally a white panel inside the product."""
    img = np.full((80, 60, 3), 255, dtype=np.uint8)
    img[15:65, 12:48] = colour
    if inner_white:
        img[30:50, 22:38] = 255
    return img


def test_background_mask_finds_the_white_around_the_product_only() -> None:
    img = packshot(inner_white=True)[None]
    connected = shopper.background_mask(img, connected=True)[0]
    naive = shopper.background_mask(img, connected=False)[0]
    assert connected[0, 0] == 1.0 and connected[40, 30] == 0.0  # the white panel inside stays the product's
    assert naive[40, 30] == 1.0  # a naive replacement takes it too
    assert connected[40, 14] == 0.0


def test_new_background_keeps_the_product_pixels() -> None:
    img = packshot()
    bg = np.full(img.shape, 90.0, dtype=np.float32)
    out = shopper.composite(img[None].astype(np.float32), bg[None], shopper.background_mask(img[None]))[0]
    assert (out[2, 2] == 90).all()
    assert (out[40, 30] == img[40, 30]).all()


def test_colour_casts_are_mild_enough_to_keep_the_colour_label() -> None:
    red = packshot((200, 30, 30))
    for shift in (-0.12, 0.12):
        cast = shopper.light(red, gains=shopper.temperature(shift))[40, 30].astype(int)
        assert cast.argmax() == 0 and cast[0] > 2 * max(cast[1], cast[2])  # still clearly red


def test_augment_views_are_seeded_and_shaped_like_the_input() -> None:
    images = np.stack([packshot((c, 60, 200 - c)) for c in range(0, 200, 20)])
    a = shopper.augment_views(images, np.random.default_rng(1), donors=images)
    b = shopper.augment_views(images, np.random.default_rng(1), donors=images)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, images)


def test_every_shift_of_the_suite_is_deterministic_and_the_clean_one_is_the_photo() -> None:
    images = np.stack([packshot(), packshot((20, 20, 160), inner_white=True)])
    donors = np.stack([packshot((0, 150, 0))] * 3)
    families = {s.family for s in robustness.SUITE}
    assert len(families) >= 12 and all(sum(s.family == f for s in robustness.SUITE) == 3 for f in families - {"clean"})
    for s in robustness.SUITE:
        out = robustness.shifted(images, s, donors)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert np.array_equal(out, robustness.shifted(images, s, donors))
        assert np.array_equal(out, images) == (s.family == "clean"), s


def test_robustness_table_reports_every_shift_and_the_worst_loss(synthetic_data, tmp_path) -> None:
    from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder
    from training import data

    dataset = data.load_dataset(synthetic_data, tmp_path / "cache")
    split = data.make_split(dataset.ids, dataset.labels["articleType"], fractions=(0.5, 0.25, 0.25), seed=1)
    labels = {a: sorted(set(dataset.labels[a]) - {""}) for a in ("articleType", "masterCategory", "gender")}
    classifier = write_tiny_classifier(tmp_path / "c", labels)
    embedder = write_tiny_embedder(tmp_path / "e")
    shifts = robustness.SUITE[:4]
    results = robustness.measure({"tiny": (classifier, embedder)}, dataset, split, n=50, shifts=shifts)
    rows = results["models"]["tiny"]["rows"]
    assert set(rows) == {f"{s.family}/{s.severity}" for s in shifts}
    assert all(0.0 <= r["articleType"] <= 1.0 and 0.0 <= r["p@5"] <= 1.0 for r in rows.values())
    table = render(robustness.report(results, shifts))
    clean_row = next(line for line in table.split("\n") if line.startswith("| clean |"))
    assert "| tiny |" in table and "(+0.0)" not in clean_row  # the clean row shows no change column


def test_a_model_report_gets_its_own_rows_of_the_robustness_table():
    rows = {
        f"{s.family}/{s.severity}": {"articleType": 0.8, "masterCategory": 0.99, "p@5": 0.7, "p@5 filtered": 0.75}
        for s in robustness.SUITE
    }
    rows["blur/3"] = {"articleType": 0.5, "masterCategory": 0.98, "p@5": 0.4, "p@5 filtered": 0.6}
    results = {
        "split": "test",
        "images": 10,
        "catalogue": 20,
        "models": {"lite": {"classifier": "classifier:8", "embedder": "embedder:8", "rows": rows}},
    }
    classifier = robustness.model_section(results, "classifier:8", "classifier")
    assert classifier is not None and classifier.id == "robustness-to-shoppers-photos-test-split"
    table = classifier.blocks[1]["table"]
    assert table["header"] == ["family", "shift", "articleType", "masterCategory"]
    assert ["blur", "Gaussian, radius 2.0", "50.0 (-30.0)", "98.0 (-1.0)"] in table["rows"]
    assert classifier.blocks[2]["text"].startswith(
        "Largest loss against the clean photo over every shift: articleType -30.0 (goal >= -6)"
    )
    embedder = robustness.model_section(results, "embedder:8", "embedder")
    assert embedder is not None and embedder.blocks[1]["table"]["header"][2:] == ["P@5", "P@5, subCategory filter"]
    assert robustness.model_section(results, "classifier:5", "classifier") is None


def test_the_committed_robustness_tables_are_what_their_results_render_to():
    from training.data import REPO_ROOT

    for results_file in sorted((REPO_ROOT / "reports" / "robustness").glob("*.json")):
        results = json.loads(results_file.read_text())
        assert render(robustness.report(results)) == results_file.with_suffix(".md").read_text(), results_file.name
