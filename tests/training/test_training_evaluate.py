"""Metrics, retrieval and report generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionsearch.model_contract import ModelContractError, ModelSpec, file_sha256
from testkit.training_data import make_dataset
from training import data, evaluate, export, metrics
from training.__main__ import main
from training.recipe import Head, TrainedModel
from training.recipes import paper

pytestmark = pytest.mark.training


def test_classification_metrics_on_a_known_confusion():
    y_true = np.asarray([0, 0, 0, 1, 1, 2])
    y_pred = np.asarray([0, 0, 1, 1, 1, 1])
    m = metrics.classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"].tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    a, b, c = m["per_class"]
    assert (a["precision"], a["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (b["precision"], b["recall"]) == (0.5, 1.0)
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    assert metrics.most_confused(m["confusion"], ["a", "b", "c"], 5) == [("a", "b", 1), ("c", "b", 1)]
    assert metrics.most_confused(m["confusion"], ["a", "b", "c"], 1) == [("a", "b", 1)]


def test_calibration_error():
    probs = np.asarray([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    assert metrics.expected_calibration_error(probs, np.asarray([0, 0, 0, 0])) == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)
    assert metrics.expected_calibration_error(np.asarray([[1.0, 0.0]]), np.asarray([0])) == 0.0


def test_knn_is_euclidean_nearest_first_and_respects_groups():
    catalogue = np.asarray([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [0.2, 0.1], [9.0, 9.0]])
    queries = np.asarray([[0.1, 0.0], [8.0, 8.0]])
    assert metrics.knn(queries, catalogue, k=3).tolist() == [[0, 3, 1], [4, 2, 1]]
    groups_c = np.asarray(["x", "y", "x", "y", "y"])
    groups_q = np.asarray(["x", "z"])
    assert metrics.knn(queries, catalogue, 3, groups_q, groups_c).tolist() == [[0, 2, -1], [-1, -1, -1]]
    many = np.random.default_rng(0).random((50, 4))
    brute = np.argsort(((many[:7, None] - many[None]) ** 2).sum(-1), axis=1)[:, :5]
    assert metrics.knn(many[:7], many, 5, chunk=3).tolist() == brute.tolist()


def test_precision_at_k_counts_missing_neighbours_as_misses():
    neighbours = np.asarray([[0, 1, -1], [2, 2, 2]])
    labels = np.asarray(["a", "b", "a"], dtype=object)
    assert metrics.precision_at_k(neighbours, np.asarray(["a", "a"]), labels) == pytest.approx((1 + 3) / 6)


def test_retrieval_metrics_with_and_without_the_filter():
    rng = np.random.default_rng(0)
    catalogue = rng.random((40, 3))
    queries = catalogue[:6] + 1e-3
    c_labels = {
        "articleType": np.asarray([f"t{i % 4}" for i in range(40)], dtype=object),
        "subCategory": np.asarray([f"s{i % 2}" for i in range(40)], dtype=object),
    }
    q_labels = {k: v[:6] for k, v in c_labels.items()}
    r = metrics.retrieval_metrics(
        queries, catalogue, q_labels, c_labels, k=5, match_attributes=("articleType", "subCategory")
    )
    assert r["filtered"]["subCategory"] == 1.0
    assert r["k"] == 5 and r["queries"] == 6 and r["catalogue"] == 40
    assert r["neighbours"]["unfiltered"][:, 0].tolist() == list(range(6))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    make_dataset(root / "data", per_kind=6)
    ds = data.load_dataset(root / "data", cache_dir=False)
    split = data.make_split(ds.ids, ds.labels["articleType"], fractions=(0.5, 0.2, 0.3), seed=1)
    return root, ds, split


def _export_cnn(ds: data.Dataset, out: Path) -> ModelSpec:
    data.configure_tensorflow(1, 0)
    trained = TrainedModel(
        name="paper-cnn",
        kind="classifier",
        model=paper.build_cnn(),
        input_spec=paper.PAPER_INPUT,
        heads=(Head("category", data.PAPER_CLASSES),),
        training={
            "recipe": "paper-cnn",
            "parameters": 146566,
            "epochs_run": 2,
            "best_epoch": 2,
            "seconds": 3,
            "history": {"loss": [1.5, 1.2], "val_loss": [1.6, 1.4], "accuracy": [0.3, 0.4], "val_accuracy": [0.2, 0.3]},
        },
        parity_pixels=ds.images[:16],
    )
    return export.export_model(trained, out, min_parity_images=16)


def test_classifier_report(synthetic):
    root, ds, split = synthetic
    _export_cnn(ds, root / "cnn")
    report = evaluate.evaluate_model(root / "cnn", ds, split, root / "report-cnn", threads=1)
    text = report.read_text()
    assert "## Test accuracy per head" in text and "| category | 6 |" in text
    assert "Side by side with the paper" in text and "85.0%" in text
    for picture in ("curves.png", "confusion-category.png", "confusion-category-balanced.png"):
        assert (root / "report-cnn" / picture).stat().st_size > 1000
        assert f"({picture})" in text
    metrics = ModelSpec.load(root / "cnn").metrics["test"]
    assert 0.0 <= metrics["accuracy"]["category"] <= 1.0 and "category_balanced" in metrics["accuracy"]


def _export_autoencoder(ds: data.Dataset, out: Path) -> ModelSpec:
    data.configure_tensorflow(1, 0)
    autoencoder, encoder = paper.build_autoencoder(16)
    trained = TrainedModel(
        name="paper-autoencoder",
        kind="embedder",
        model=encoder,
        input_spec=paper.PAPER_INPUT,
        embedding_dim=16,
        extra_models={"autoencoder.onnx": autoencoder},
        parity_pixels=ds.images[:16],
        training={"recipe": "paper-autoencoder", "history": {"loss": [0.1, 0.05], "val_loss": [0.1, 0.07]}},
    )
    return export.export_model(trained, out, min_parity_images=16)


def test_embedder_report(synthetic):
    root, ds, split = synthetic
    spec = _export_autoencoder(ds, root / "ae")
    assert spec.embedding is not None and spec.embedding.dim == 16
    assert spec.extra["files"]["autoencoder.onnx"]["sha256"] == file_sha256(root / "ae" / "autoencoder.onnx")
    report = evaluate.evaluate_model(root / "ae", ds, split, root / "report-ae", threads=1)
    text = report.read_text()
    assert "## Reconstruction" in text and "## Retrieval" in text
    assert "| articleType |" in text and "with subCategory filter" in text
    for picture in ("queries-unfiltered.png", "queries-filtered.png", "reconstructions.png", "curves.png"):
        assert (root / "report-ae" / picture).stat().st_size > 1000
    test = ModelSpec.load(root / "ae").metrics["test"]
    assert set(test["precision_at_5"]) == {"unfiltered", "filtered"}
    assert test["reconstruction_mse"] > 0


def test_evaluation_refuses_a_model_whose_sha256_does_not_match(synthetic, tmp_path):
    root, ds, split = synthetic
    if not (root / "cnn" / "model.onnx").exists():
        pytest.skip("needs the classifier exported by test_classifier_report")
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes((root / "cnn" / "model.onnx").read_bytes() + b"x")
    (model_dir / "model.json").write_text((root / "cnn" / "model.json").read_text())
    with pytest.raises(ModelContractError, match="sha256"):
        evaluate.evaluate_model(model_dir, ds, split, tmp_path / "r")


def test_held_out_set_is_evaluated_against_the_training_catalogue_and_leaves_model_json_alone(synthetic, tmp_path):
    root, ds, split = synthetic
    model_dir = tmp_path / "ae"
    _export_autoencoder(ds, model_dir)
    before = (model_dir / "model.json").read_text()
    held_out = tmp_path / "held-out"
    make_dataset(held_out, per_kind=3, first_id=5000)  # ids the split file has never seen
    split_file = tmp_path / "split.csv"
    data.write_split(split, split_file)
    common = ["--split", str(split_file), "--cache", str(tmp_path / "cache"), "--threads", "1"]

    # Without --held-out the split file must cover every id; the error says what to do instead.
    assert main(["-q", "evaluate", str(model_dir), "--data", str(held_out), *common]) == 2

    report = tmp_path / "report"
    args = ["--data", str(held_out), "--held-out", "--catalogue-data", str(root / "data"), "--report", str(report)]
    assert main(["-q", "evaluate", str(model_dir), *args, *common]) == 0
    text = (report / "README.md").read_text()
    n_train = sum(1 for s in split.values() if s == "train")
    assert "A held-out set: every one of its 24 images is a test image" in text
    assert f"the retrieval catalogue is the {n_train}-image train split" in text
    assert f"24 test queries against the {n_train}-item train-split catalogue" in text
    assert "--held-out" in text  # the regenerate line
    assert (model_dir / "model.json").read_text() == before  # held-out numbers never overwrite the test metrics

    # A classifier needs no catalogue: the training dataset is not read at all.
    _export_cnn(ds, tmp_path / "cnn")
    args = ["--data", str(held_out), "--held-out", "--catalogue-data", str(tmp_path / "nowhere")]
    assert main(["-q", "evaluate", str(tmp_path / "cnn"), *args, "--report", str(tmp_path / "r-cnn"), *common]) == 0
    text = (tmp_path / "r-cnn" / "README.md").read_text()
    assert "A held-out set: every one of its 24 images" in text and "| category | 6 |" in text


def test_evaluation_explains_a_split_without_test_images_or_catalogue(synthetic, tmp_path):
    root, ds, split = synthetic
    model_dir = tmp_path / "ae"
    _export_autoencoder(ds, model_dir)
    with pytest.raises(data.DataError, match="no test images"):
        evaluate.evaluate_model(model_dir, ds, {int(i): "train" for i in ds.ids}, tmp_path / "r1")
    with pytest.raises(data.DataError, match="catalogue is empty"):
        evaluate.evaluate_model(model_dir, ds, {int(i): "test" for i in ds.ids}, tmp_path / "r2")


def test_fixed_queries_are_stable_and_cover_different_subcategories(synthetic):
    _, ds, split = synthetic
    test = ds.split(split, "test")
    picks = evaluate.fixed_queries(test)
    assert picks.tolist() == evaluate.fixed_queries(test).tolist()
    assert len(set(test.labels["subCategory"][picks])) == len(picks)


def test_report_paths_are_relative_to_the_repo():
    assert evaluate._rel(data.REPO_ROOT / "reports" / "x") == str(Path("reports") / "x")
