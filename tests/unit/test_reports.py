"""Reports are data (report.json) and one renderer makes their Markdown: the committed reports are what their data
renders to, sections are put by id, and every model report shows its robustness table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.report import REPORT_FILE, Report, Section, load, render, save, section_id

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(p.parent for p in (REPO_ROOT / "reports").glob(f"*/{REPORT_FILE}"))


@pytest.mark.parametrize("folder", COMMITTED, ids=[f.name for f in COMMITTED])
def test_a_committed_report_is_what_its_data_renders_to(folder):
    assert render(load(folder)) == (folder / "README.md").read_text(encoding="utf-8")


def test_every_served_and_kept_model_report_has_its_robustness_table():
    robustness = json.loads((REPO_ROOT / "reports" / "robustness" / "README.json").read_text())
    identities = {pair[role] for pair in robustness["models"].values() for role in ("classifier", "embedder")}
    for folder in COMMITTED:
        model = REPO_ROOT / "models" / folder.name / "model.json"
        if not model.is_file():
            continue
        spec = json.loads(model.read_text())
        if f"{spec['name']}:{spec['version']}" in identities or folder.name in ("classifier", "embedder"):
            assert load(folder).get("robustness-to-shoppers-photos-test-split") is not None, folder.name


def test_sections_are_put_by_id_and_rendered_with_tables_and_pictures(tmp_path):
    report = Report("classifier (version 1)")
    report.add("").text("Under the title.")
    report.add("Calibration").table(("head", "ECE"), [("gender", 0.01)])
    report.put(Section("Summary against the targets (test split)").text("first"), before=("", "calibration"))
    report.put(Section("Calibration").text("replaced"), before=("",))
    report.add("gender").image("confusion matrix", "confusion-gender.png")
    report.footer = "Regenerate: `python -m training evaluate models/classifier`."
    assert [s.id for s in report.sections] == ["summary-against-the-targets-test-split", "", "calibration", "gender"]
    text = render(report)
    assert text == (
        "# classifier (version 1)\n\n## Summary against the targets (test split)\n\nfirst\n\nUnder the title.\n\n"
        "## Calibration\n\nreplaced\n\n## gender\n\n![confusion matrix](confusion-gender.png)\n\n"
        "Regenerate: `python -m training evaluate models/classifier`.\n"
    )
    save(report, tmp_path)
    assert load(tmp_path) == report and (tmp_path / "README.md").read_text() == text
    assert section_id("Side by side with the paper's CNN") == "side-by-side-with-the-paper-s-cnn"


def test_a_table_renders_every_cell_as_text():
    report = Report("t", [Section("x").table(("a", "b"), [(1, ""), ("c", 2.5)])])
    assert "| a | b |\n| --- | --- |\n| 1 |  |\n| c | 2.5 |\n" in render(report)


def test_number_columns_are_right_aligned():
    report = Report("t", [Section("x").table(("mode", "clean", "typo"), [("both", "97.9%", "93.3%")], numbers_from=1)])
    assert "| mode | clean | typo |\n| --- | ---: | ---: |\n| both | 97.9% | 93.3% |\n" in render(report)
