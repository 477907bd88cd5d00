"""The production report's comparison of the served classifier with the classifiers served before it."""

from __future__ import annotations

import json

from testkit.tiny_models import write_tiny_classifier
from testkit.training_data import make_dataset
from training import data, evaluate
from training.production_report import against_previous


def test_the_production_report_compares_the_served_classifier_with_those_served_before(tmp_path):
    make_dataset(tmp_path / "data")
    dataset = data.load_dataset(tmp_path / "data", cache_dir=False)
    split = {int(i): "test" for i in dataset.ids}
    models = tmp_path / "models"
    assert against_previous(models, dataset, split, threads=1) == []  # no classifier served before: no section
    for name, seed, accuracy in (("classifier", 7, 0.9), ("classifier-v7", 8, 0.8)):
        write_tiny_classifier(models / name, seed=seed, version=name)
        meta = json.loads((models / name / "model.json").read_text())
        meta["metrics"] = {"test": {"accuracy": {"articleType": accuracy}, "macro_f1": {"articleType": accuracy / 2}}}
        (models / name / "model.json").write_text(json.dumps(meta))

    lines = against_previous(models, dataset, split, threads=1)
    text = "\n".join(lines)
    assert lines[0] == "## Against the classifiers served before (test split)"
    assert "| articleType | 90.0% / 0.450 | 80.0% / 0.400 |" in text
    assert "| gender | n/a | n/a |" in text
    # The confused pairs are counted from each model's own predictions on the test images.
    test = dataset.split(split, "test")
    pair_rows = [line.split(" | ") for line in lines if line.count("|") == 5 and not line.startswith("| head")]
    assert len(pair_rows) > 2, text  # header, separator and at least one pair
    for name, column in (("classifier", 2), ("classifier-v7", 3)):
        spec, session = evaluate.load_model(models / name, 1)
        head = next(h for h in spec.outputs if h.attribute == "articleType")
        predicted = [head.labels[i] for i in evaluate.predict(session, spec, test.images)[head.name].argmax(axis=1)]
        for row in pair_rows[2:]:
            true, wrong = row[0].lstrip("| "), row[1]
            count = sum(t == true and p == wrong for t, p in zip(test.labels["articleType"], predicted, strict=True))
            assert int(row[column].rstrip(" |")) == count
