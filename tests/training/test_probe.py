"""`python -m training probe-lite`: trunk plans trained on an equal budget, their table, and reuse of a result."""

from __future__ import annotations

import json

import pytest

from training import data, probe
from training.__main__ import main


def test_a_plan_is_read_from_height_width_frozen_blocks_and_minutes():
    plan, minutes = probe.parse_plan("160x120:5", views=3, minutes=8)
    assert (plan.input_spec.height, plan.input_spec.width, plan.split_at, plan.views, minutes) == (160, 120, 5, 3, 8)
    assert plan.name == "160x120-frozen5-views3"
    assert probe.parse_plan("128x96:8@16", views=2, minutes=8)[1] == 16.0
    assert plan.variant == "lite0"


def test_a_plan_may_name_a_larger_trunk_whose_blocks_it_counts():
    plan, minutes = probe.parse_plan("lite2:144x108:11@12", views=2, minutes=8)
    assert (plan.variant, plan.split_at, minutes) == ("lite2", 11, 12.0)
    assert plan.name == "lite2-144x108-frozen11-views2"  # Lite0's names stay as they were: their results are reused
    assert probe.parse_plan("lite1:144x108:20", views=2, minutes=8)[0].split_at == 20  # 21 blocks in Lite1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("128x96", "HEIGHTxWIDTH:FROZEN_BLOCKS"),
        ("128x96:8@x", "HEIGHTxWIDTH:FROZEN_BLOCKS"),
        ("128x96:8@0", "some minutes"),
        ("128x96:16", "frozen blocks of lite0 must be 0 to 15"),
        ("16x16:8", "32x32"),
        ("lite1:144x108:21", "frozen blocks of lite1 must be 0 to 20"),
        ("lite7:144x108:8", "unknown trunk 'lite7'"),
    ],
)
def test_a_bad_plan_is_refused_with_what_is_wanted(text, message):
    with pytest.raises(data.DataError, match=message):
        probe.parse_plan(text, views=2, minutes=8)


@pytest.mark.training
@pytest.mark.slow
def test_probes_train_each_plan_for_the_same_minutes_and_reuse_their_results(tmp_path, lite_data_args):
    common = lite_data_args
    report = tmp_path / "probes.md"
    probe_args = [
        "--train-images",
        "10",
        "--minutes",
        "0.02",
        "--runs",
        str(tmp_path / "runs"),
        "--report",
        str(report),
    ]
    plans = ["--plan", "64x48:8", "--plan", "64x48:11@0.03"]
    assert main(["-q", "probe-lite", *plans, *common, *probe_args]) == 0

    results = json.loads(report.with_suffix(".json").read_text())
    assert [(r["frozen_blocks"], r["input"], r["train_images"], r["minutes"]) for r in results] == [
        (8, [64, 48], 10, 0.02),
        (11, [64, 48], 10, 0.03),
    ]
    assert results[0]["trained_parameters"] > results[1]["trained_parameters"]  # fewer blocks frozen, more trained
    assert all(r["steps"] > 0 and 0 <= r["accuracy"]["shopper_view"]["articleType"] <= 1 for r in results)
    table = report.read_text()
    assert "| 64x48-frozen8-views2 |" in table and "| 64x48-frozen11-views2 |" in table

    # A result on disk is reused: the table is rebuilt without training again.
    result_file = next((tmp_path / "runs").glob("64x48-frozen8-*")) / "result.json"
    kept = json.loads(result_file.read_text()) | {"steps": 12345}
    result_file.write_text(json.dumps(kept))
    assert main(["-q", "probe-lite", *plans, *common, *probe_args]) == 0
    assert json.loads(report.with_suffix(".json").read_text())[0]["steps"] == 12345


def test_the_production_report_shows_the_probes_before_calibration(tmp_path):
    from training.production_report import insert_probes
    from training.report import Report, Section, save

    accuracy = {"articleType": 0.8406, "masterCategory": 0.9922}
    result = {"input": [128, 96], "frozen_blocks": 8, "minutes": 8, "steps": 1303, "ms_per_step": 369.0}
    result |= {"train_images": 12000, "accuracy": {"packshot": accuracy, "shopper_view": accuracy}}
    sections = [Section("Summary against the targets (test split)").text("s"), Section("Calibration").text("c")]
    readme = save(Report("classifier", sections), tmp_path)
    insert_probes(tmp_path)  # no probes.json: left as it is
    assert "probes" not in readme.read_text()

    (tmp_path / "probes.json").write_text(json.dumps([result]))
    insert_probes(tmp_path)
    text = readme.read_text()
    assert text.index("## Summary") < text.index("## Resolution, frozen blocks") < text.index("## Calibration")
    assert "| 128x96 | 8 | 8 | 1303 | 369 | 84.1 | 84.1 | 99.2 |" in text
    insert_probes(tmp_path)  # again: one copy
    assert readme.read_text() == text
