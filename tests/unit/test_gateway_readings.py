"""Outfit search's flip test: a cut-out's reading and its mirror image's, averaged into one."""

from __future__ import annotations

import numpy as np
import pytest

from fashionsearch.classification import AttributePrediction, LabelScore
from services.gateway import readings
from services.gateway.domain import Classification, Embedding, ModelId
from testkit.gateway_fakes import CLASSIFIER_MODEL, EMBEDDER_MODEL


def reading(
    labels: dict[str, list[tuple[str, float]]], vector: list[float], *, one_pass: bool = False
) -> readings.Reading:
    embedding = Embedding(vector=np.asarray(vector, np.float32), model=EMBEDDER_MODEL)
    classification = Classification.of(
        [AttributePrediction(a, tuple(LabelScore(k, p) for k, p in ls)) for a, ls in labels.items()],
        model=CLASSIFIER_MODEL,
        embedding=embedding if one_pass else None,
    )
    return classification, embedding


def test_probabilities_are_averaged_over_both_top_lists_and_the_name_follows_the_new_top():
    plain = reading(
        {"articleType": [("Tshirts", 0.5), ("Shirts", 0.4), ("Tops", 0.1)], "baseColour": [("Blue", 0.9)]}, [1, 0]
    )
    mirror = reading(
        {"articleType": [("Shirts", 0.7), ("Tshirts", 0.2), ("Kurtas", 0.1)], "baseColour": [("Blue", 0.8)]}, [0, 1]
    )
    classification, embedding = readings.average(plain, mirror)
    article = classification.attributes[0]
    assert [(s.label, s.probability) for s in article.labels] == [
        ("Shirts", pytest.approx(0.55)),
        ("Tshirts", pytest.approx(0.35)),
        ("Tops", pytest.approx(0.05)),  # as many labels as the plain reading; Kurtas (0.05) ties and comes later
    ]
    assert classification.attributes[1].labels[0].probability == pytest.approx(0.85)
    # The name and keywords are those of the new top labels.
    again = Classification.of(classification.attributes, model=CLASSIFIER_MODEL)
    assert (classification.suggested_name, classification.keywords) == (again.suggested_name, again.keywords)
    assert "Shirts" in classification.suggested_name and classification.model == CLASSIFIER_MODEL
    # The vector: the mean of the two at their (unit) length.
    np.testing.assert_allclose(embedding.vector, [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    assert embedding.model == EMBEDDER_MODEL and classification.embedding is None


def test_a_one_pass_reading_carries_the_averaged_vector():
    plain = reading({"subCategory": [("Topwear", 1.0)]}, [0.6, 0.8], one_pass=True)
    mirror = reading({"subCategory": [("Topwear", 1.0)]}, [0.8, 0.6], one_pass=True)
    classification, embedding = readings.average(plain, mirror)
    assert classification.embedding == embedding
    assert np.linalg.norm(embedding.vector) == pytest.approx(1.0)


def test_readings_of_two_models_are_not_mixed():
    plain = reading({"subCategory": [("Topwear", 0.9)]}, [1, 0])
    other = Classification.of(plain[0].attributes, model=ModelId("classifier", "other"))
    assert readings.average(plain, (other, plain[1])) == plain


def test_merged_pairs_each_cut_out_with_its_mirror_and_refuses_an_odd_count():
    a, b = reading({"subCategory": [("Topwear", 1.0)]}, [1, 0]), reading({"subCategory": [("Shoes", 1.0)]}, [0, 1])
    out = readings.merged([a, b, a, b])
    assert [c.top_labels()["subCategory"] for c, _ in out] == ["Topwear", "Shoes"]
    with pytest.raises(ValueError, match="two readings"):
        readings.merged([a, b, a])
