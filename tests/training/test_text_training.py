"""The text encoder recipe: its texts, brand removal, typos, vocabulary, evaluation helpers, and a tiny end-to-end
run (train on a synthetic dataset against a tiny image embedder, export through the parity gate, serve, report)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fashionsearch.model_contract import ModelSpec
from fashionsearch.onnx_model import ModelIdentity
from fashionsearch.text_contract import TextModelSpec, TokenizerSpec
from services.embedder.text_model import OnnxTextEmbedder
from testkit.tiny_models import write_tiny_embedder
from testkit.training_data import make_dataset
from training import data, text_report
from training.recipes import text

pytestmark = pytest.mark.training


def test_the_brand_is_what_comes_before_the_gender_word():
    assert text.without_brand("Puma Men Grey T-shirt") == "Men Grey T-shirt"
    assert text.without_brand("Manchester United Men Solid Black Track Pants") == "Men Solid Black Track Pants"
    assert text.without_brand("Fastrack Black Watch", {"fastrack": 40}) == "Black Watch"
    assert text.without_brand("Black Watch", {"fastrack": 40}) == "Black Watch"
    assert text.training_brands(["Puma Men A", "Puma Women B", "Puma Men C", "Nike Men D"]) == {"puma": 3}


def test_a_typo_is_one_edit_in_a_long_word():
    rng = random.Random(3)
    for _ in range(50):
        words = text.add_typo("men blue jeans", rng).split()
        assert words[0] == "men"  # too short to get a typo
        changed = [w for w, o in zip(words, ["men", "blue", "jeans"], strict=True) if w != o]
        assert len(changed) <= 1 and all(abs(len(w) - 4.5) <= 1.5 for w in changed)
    assert text.add_typo("a b", rng) == "a b"


def test_attribute_phrases_name_what_they_say():
    rng = random.Random(0)
    labels = {"gender": "Women", "baseColour": "Navy Blue", "articleType": "Tshirts", "usage": "NA", "season": ""}
    for _ in range(30):
        phrase, fields = text.attribute_phrase(labels, rng)
        assert fields and set(fields) <= {"gender", "baseColour", "articleType"}
        assert phrase
    assert "t shirt" in text.surface_forms("articleType", "Tshirts")
    assert text.surface_forms("baseColour", "Navy Blue")[:1] == ["navy blue"]


def test_answer_modes_and_all_match():
    catalogue = np.eye(4, dtype=np.float32)
    labels = {"baseColour": np.array(["Red", "Red", "Blue", "Blue"], dtype=object)}
    queries = np.array([[0.1, 0, 0.9, 0.05], [0, 0.2, 0.9, 0]], dtype=np.float32)
    assert text_report.answer("vector", queries, [{}, {}], catalogue, labels, k=2).tolist() == [[2, 0], [2, 1]]
    both = text_report.answer("both", queries, [{"baseColour": ("Red",)}, {}], catalogue, labels, k=2)
    assert both.tolist() == [[0, 1], [2, 1]]
    filters = text_report.answer("filters", queries, [{"baseColour": ("Blue",)}, {}], catalogue, labels, k=3)
    assert sorted(filters[0][:2].tolist()) == [2, 3] and filters[0][2] == -1 and (filters[1] == -1).all()
    assert text_report.all_match(filters, [{"baseColour": "Blue"}, {"baseColour": "Blue"}], labels) == pytest.approx(
        2 / 6
    )


def test_train_export_serve_and_report_on_a_tiny_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHIONSEARCH_CACHE", str(tmp_path / "cache"))
    make_dataset(tmp_path / "data", per_kind=12)
    dataset = data.load_dataset(tmp_path / "data")
    split = data.get_split(dataset, tmp_path / "split.csv", create=True)
    embedder = write_tiny_embedder(tmp_path / "models" / "embedder", dim=8)
    settings = text.TextSettings(
        width=16, hidden=16, epochs=2, batch_size=16, bank=8, tokenizer=TokenizerSpec(buckets=512)
    )
    out = tmp_path / "models" / "text-embedder"
    spec = text.train_text(dataset, split, embedder, out, settings, version="t1", threads=1)

    assert (spec.target.name, spec.target.version) == ("tiny-embedder", "tiny-1") and spec.embedding.dim == 8
    assert spec.extra["parity"]["texts"] >= 256 and spec.extra["parity"]["max_abs_diff"] <= 1e-4
    assert ("tshirt", "articleType", "Tshirts") in {(t.phrase, t.field, t.value) for t in spec.terms}
    assert TextModelSpec.load(out) == spec
    assert len(spec.extra["training"]["history"]["loss"]) == 2

    image = ModelSpec.load(embedder)
    served = OnnxTextEmbedder(out, ModelIdentity(image.name, image.version, image.onnx_sha256))
    served.warm_up()
    [result] = served.embed(["Women Blue Kurtas"])
    assert np.linalg.norm(result.vector) == pytest.approx(1.0, abs=1e-5)
    assert {(t.field, t.value) for t in result.understanding.terms} >= {("articleType", "Kurtas")}

    report = text_report.write_report(out, embedder, tmp_path / "report", dataset, split, threads=1)
    readme = report.read_text()
    assert "Product-name queries, brand removed" in readme and "(queries.png)" in readme
    assert (tmp_path / "report" / "queries.png").is_file()
    assert "test" in TextModelSpec.load(out).metrics


class _ScriptedEvaluator:
    """Scores by threshold: names read best with few filters, phrases need them."""

    names = {0.5: 0.80, 0.7: 0.82, 0.9: 0.83}
    phrases = {0.5: 0.95, 0.7: 0.97, 0.9: 0.87}

    def name_table(self, texts, queries, min_confidence):
        score = self.names[min_confidence]
        return {m: dict.fromkeys(text_report.NAME_FIELDS, score - (m != "both") * 0.1) for m in text_report.MODES}

    def phrase_table(self, texts, wanted, min_confidence):
        assert texts, "the validation phrases are built from the validation products"
        return {m: self.phrases[min_confidence] - (m != "both") * 0.1 for m in text_report.MODES}


def test_the_filter_threshold_is_chosen_on_validation_names_and_phrases_together(tmp_path):
    make_dataset(tmp_path / "data", per_kind=40)  # enough validation products to share a combination
    dataset = data.load_dataset(tmp_path / "data")
    val = dataset.split(data.get_split(dataset, tmp_path / "split.csv", create=True), "val")

    threshold, mode, rows = text_report.choose(_ScriptedEvaluator(), val, {})

    # 0.9 reads the names best (0.83) but loses the phrases (0.87): the mean of the four prefers 0.7.
    assert (threshold, mode) == (0.7, "both")
    assert len(rows) == len(text_report.THRESHOLDS) * len(text_report.MODES)
    assert rows[3][:2] == ["0.7", "vector"] and rows[5][-2:] == ["97.0%", "85.8%"]
