"""The production report's comparison of the served classifier with the classifiers served before it."""

from __future__ import annotations

import json

from testkit.tiny_models import write_tiny_classifier
from testkit.training_data import make_dataset
from training import data, evaluate
from training.production_report import against_previous
from training.report import Report, render


def test_the_production_report_compares_the_served_classifier_with_those_served_before(tmp_path):
    make_dataset(tmp_path / "data")
    dataset = data.load_dataset(tmp_path / "data", cache_dir=False)
    split = {int(i): "test" for i in dataset.ids}
    models = tmp_path / "models"
    assert against_previous(models, dataset, split, threads=1) is None  # no classifier served before: no section
    for name, seed, accuracy in (("classifier", 7, 0.9), ("classifier-v7", 8, 0.8)):
        write_tiny_classifier(models / name, seed=seed, version=name)
        meta = json.loads((models / name / "model.json").read_text())
        meta["metrics"] = {"test": {"accuracy": {"articleType": accuracy}, "macro_f1": {"articleType": accuracy / 2}}}
        (models / name / "model.json").write_text(json.dumps(meta))

    section = against_previous(models, dataset, split, threads=1)
    assert section is not None and section.heading == "Against the classifiers served before (test split)"
    accuracy, pairs = (block["table"] for block in section.blocks if "table" in block)
    assert ["articleType", "90.0% / 0.450", "80.0% / 0.400"] in accuracy["rows"]
    assert ["gender", "n/a", "n/a"] in accuracy["rows"]
    text = render(Report("classifier", [section]))
    assert "| articleType | 90.0% / 0.450 | 80.0% / 0.400 |" in text
    # The confused pairs are counted from each model's own predictions on the test images.
    test = dataset.split(split, "test")
    assert pairs["header"] == ["true", "predicted", "classifier:classifier", "classifier-v7:classifier-v7"]
    assert pairs["rows"], text
    for name, column in (("classifier", 2), ("classifier-v7", 3)):
        spec, session = evaluate.load_model(models / name, 1)
        head = next(h for h in spec.outputs if h.attribute == "articleType")
        predicted = [head.labels[i] for i in evaluate.predict(session, spec, test.images)[head.name].argmax(axis=1)]
        for row in pairs["rows"]:
            true, wrong = row[0], row[1]
            count = sum(t == true and p == wrong for t, p in zip(test.labels["articleType"], predicted, strict=True))
            assert int(row[column]) == count
