"""Shopper views and the robustness suite: what they change and what they must leave alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import data, robustness, shopper
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


def test_views_on_photographs_are_seeded_and_differ_from_views_without() -> None:
    images = np.stack([packshot((c, 60, 200 - c)) for c in range(0, 200, 20)])
    photograph = np.random.default_rng(3).integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    with_photos = [shopper.augment_views(images, np.random.default_rng(1), images, (photograph,)) for _ in range(2)]
    assert np.array_equal(*with_photos) and with_photos[0].shape == images.shape
    without = shopper.augment_views(images, np.random.default_rng(1), images)
    assert not np.array_equal(with_photos[0], without)


def test_a_view_mix_sets_how_much_of_the_product_the_views_hide() -> None:
    images = np.stack([packshot((c, 60, 200 - c)) for c in range(200)])
    photograph = np.random.default_rng(3).integers(0, 255, size=(240, 320, 3), dtype=np.uint8)

    def product_left(mix: shopper.ViewMix) -> float:
        """The share of pixels still in the products' colours (green near 60, red + blue near 200)."""
        v = shopper.augment_views(images, np.random.default_rng(1), images, (photograph,), mix).astype(int)
        return float(((np.abs(v[..., 1] - 60) < 25) & (np.abs(v[..., 0] + v[..., 2] - 200) < 40)).mean())

    never = shopper.ViewMix(occlusion_share=0.0)
    always = shopper.ViewMix(occlusion_share=1.0, occlusion_area=(0.4, 0.4))
    assert product_left(always) < 0.75 * product_left(never)


def test_the_scene_mix_is_harder_than_models_9s_in_every_way() -> None:
    default, scene = shopper.DEFAULT_MIX, shopper.SCENE_MIX
    assert scene.min_scale < default.min_scale
    assert scene.occlusion_share > default.occlusion_share and scene.occlusion_area[1] > default.occlusion_area[1]
    assert scene.photo_share > default.photo_share


def test_a_cut_out_view_frames_the_product_on_white_at_the_catalogue_aspect() -> None:
    # A wide product (a shoe) on a dark scene: the cut-out fills the view's width, white above and below it.
    img = np.full((80, 60, 3), 40, dtype=np.uint8)
    img[50:62, 10:40] = (200, 30, 30)
    product = np.zeros((80, 60), dtype=bool)
    product[50:62, 10:40] = True
    out = shopper.as_cut_out(img, product, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    red = (out[..., 0] > 150) & (out[..., 1] < 80)
    assert red[:, 5:55].any(axis=0).mean() > 0.8  # enlarged to the view's width (it spanned half of it)
    assert (out[:10].min(axis=-1) >= 250).all() and (out[-10:].min(axis=-1) >= 250).all()  # white bars
    nothing = np.zeros((80, 60), dtype=bool)
    assert np.array_equal(shopper.as_cut_out(img, nothing, np.random.default_rng(0)), img)


def test_every_shift_of_the_suite_is_deterministic_and_the_clean_one_is_the_photo() -> None:
    images = np.stack([packshot(), packshot((20, 20, 160), inner_white=True)])
    photograph = np.random.default_rng(3).integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    backdrops = robustness.Backdrops(np.stack([packshot((0, 150, 0))] * 3), (photograph,))
    families = {s.family for s in robustness.SUITE}
    assert len(families) >= 12 and all(sum(s.family == f for s in robustness.SUITE) == 3 for f in families - {"clean"})
    assert {"background: photograph", "small on a texture"} <= families  # issue 28's two scenes
    for s in robustness.SUITE:
        out = robustness.shifted(images, s, backdrops)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert np.array_equal(out, robustness.shifted(images, s, backdrops))
        assert np.array_equal(out, images) == (s.family == "clean"), s


def test_small_on_a_texture_leaves_no_white_and_keeps_the_product_smaller() -> None:
    [small] = [s for s in robustness.SUITE if s.family == "small on a texture" and s.severity == 2]  # 65%
    out = robustness.shifted(packshot()[None], small, robustness.Backdrops(np.stack([packshot()])))[0]
    red = (out[..., 0] > 150) & (out[..., 1] < 80)
    ys, xs = np.nonzero(red)
    assert abs((ys.max() - ys.min() + 1) / 50 - 0.65) < 0.06 and abs((xs.max() - xs.min() + 1) / 36 - 0.65) < 0.08
    assert not (out.min(axis=-1) >= 228).any()  # every white pixel around it replaced


def test_crop_auto_in_the_suite_reads_a_packshot_whole_and_cuts_a_scene(tmp_path) -> None:
    from testkit.tiny_detector import TOP_COLOUR, write_tiny_detector
    from training.evaluate import load_model

    # Cells of 16 pixels: the product (36x50 of 60x80) comes back whole, spanning half the photo's height.
    spec, session = load_model(write_tiny_detector(tmp_path / "detector", stride=16))
    on_white = packshot(TOP_COLOUR)
    scene = on_white.copy()
    scene[on_white.min(axis=-1) == 255] = (255, 200, 255)  # the same on a pale magenta wall
    photos = np.stack([on_white, scene])
    [whole, cut], beside_whole, share = robustness.as_searched(photos, session, spec)
    assert np.array_equal(whole, photos[0]) and share == 0.5
    assert list(beside_whole) == [False, True]  # the product cut out covers more than 15% of the photo
    assert cut.shape[1] / cut.shape[0] == pytest.approx(0.75, abs=0.02) and min(cut.shape[:2]) >= 64
    assert np.abs(cut[cut.shape[0] // 2, cut.shape[1] // 2].astype(int) - TOP_COLOUR).max() < 40


def test_a_cut_out_read_beside_its_whole_photo_averages_the_two_readings_as_the_gateway_does() -> None:
    cut = {"head": np.array([[0.9, 0.1]]), "vec": np.array([[1.0, 0.0]])}
    whole = {"head": np.array([[0.3, 0.7]]), "vec": np.array([[0.0, 1.0]])}
    both = robustness.read_both(cut, whole, "vec")
    assert both["head"] == pytest.approx(np.array([[0.6, 0.4]]))
    assert both["vec"] == pytest.approx(np.array([[2**-0.5, 2**-0.5]]))  # their mean direction, at their length
    same = robustness.read_both(cut, cut, "vec")  # a photo not cut out: read twice, unchanged
    assert all(np.allclose(same[k], cut[k]) for k in cut)


def test_robustness_table_reports_every_shift_and_the_worst_loss(synthetic_data, tmp_path) -> None:
    from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder

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
    # Some families only, read through crop=auto: the rows measured, how many photos were cut out.
    from testkit.tiny_detector import write_tiny_detector

    shifts = robustness.of_families(["dim light"])
    detector = write_tiny_detector(tmp_path / "detector")
    results = robustness.measure(
        {"tiny": (classifier, embedder)}, dataset, split, n=50, shifts=shifts, detector=detector
    )
    assert list(results["models"]) == ["tiny", "tiny crop=auto"]  # crop=none and crop=auto side by side
    assert (
        set(results["cut"])
        == set(results["models"]["tiny crop=auto"]["rows"])
        == {"clean/0", "dim light/1", "dim light/2", "dim light/3"}
    )
    table = render(robustness.report(results))
    assert "crop=auto" in table and "| cut out |" in table and "| blur |" not in table
    with pytest.raises(ValueError, match="unknown shift families"):
        robustness.of_families(["sideways"])


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


def test_a_rewritten_model_report_gets_its_rows_from_the_first_results_holding_the_model(tmp_path):
    from training.report import Report, load, save

    def results(version: str, articletype: float) -> dict:
        rows = {
            f"{s.family}/{s.severity}": {"articleType": articletype, "masterCategory": 0.99, "p@5": 0.7}
            for s in robustness.SUITE
        }
        pair = {"classifier": f"classifier:{version}", "embedder": f"embedder:{version}", "rows": rows}
        return {"split": "test", "images": 10, "catalogue": 20, "models": {f"v{version}": pair}}

    older, newer = tmp_path / "README.json", tmp_path / "crop-auto-v10.json"
    older.write_text(json.dumps(results("9", 0.8)))
    newer.write_text(json.dumps(results("10", 0.9)))
    (tmp_path / "models" / "classifier").mkdir(parents=True)
    (tmp_path / "models" / "classifier" / "model.json").write_text(
        json.dumps({"name": "classifier", "version": "10", "kind": "classifier"})
    )
    folder = tmp_path / "reports" / "classifier"
    folder.mkdir(parents=True)
    written = Report("classifier (version 10)")
    written.add("Training").text("as the evaluation writes it, with no robustness section")
    save(written, folder)

    with pytest.raises(data.DataError, match="robustness results not found: .*missing.json"):
        robustness.render_model_reports([folder], tmp_path / "models", [tmp_path / "missing.json", older])
    robustness.render_model_reports([folder], tmp_path / "models", [older, newer])

    section = load(folder).get("robustness-to-shoppers-photos-test-split")
    assert section is not None and '"v10" (classifier:10 + embedder:10)' in section.blocks[0]["text"]
    assert "crop-auto-v10.md" in section.blocks[0]["text"] and "| 90.0 |" in (folder / "README.md").read_text()
    assert [s.id for s in load(folder).sections] == ["robustness-to-shoppers-photos-test-split", "training"]


def test_the_committed_robustness_tables_are_what_their_results_render_to():
    from training.data import REPO_ROOT

    for results_file in sorted((REPO_ROOT / "reports" / "robustness").glob("*.json")):
        results = json.loads(results_file.read_text())
        assert render(robustness.report(results)) == results_file.with_suffix(".md").read_text(), results_file.name
