"""reports/int8/README.md: the int8 variants side by side with float (`python -m training quantize` writes it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.quantize import GATE, MIN_SPEED_SHARE


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _comparison(comparison: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    kinds = list(comparison)
    first = comparison[kinds[0]]
    if "accuracy" in first:
        heads = list(first["accuracy"]["float"])
        rows = []
        for head in heads:
            row: list[Any] = [head]
            for kind in kinds:
                acc = comparison[kind]["accuracy"]
                row += [_pct(acc["float"][head]), _pct(acc["int8"][head]), _pct(comparison[kind]["agreement"][head])]
            rows.append(row)
        header = ["head"]
        for kind in kinds:
            header += [f"{kind} float %", f"{kind} int8 %", f"{kind} top-1 agreement %"]
        lines += _table(header, rows) + [""]
    if "cosine" in first:
        rows = []
        for kind in kinds:
            found = comparison[kind]
            p5 = found.get("precision_at_5", {})
            rows.append(
                [
                    kind,
                    f"{found['cosine']['mean']:.4f}",
                    f"{found['cosine']['min']:.4f}",
                    *(
                        f"{p5['float'][m]:.4f} -> {p5['int8'][m]:.4f}" if p5 else "-"
                        for m in ("unfiltered", "filtered")
                    ),
                ]
            )
        header = ["photos", "cosine to float, mean", "min", "articleType precision@5", "with subCategory filter"]
        lines += _table(header, rows) + [""]
    return lines


def markdown(results: Mapping[str, Any], command: str) -> list[str]:
    lines = [
        "# Eight-bit models beside float",
        "",
        f"`{command}`",
        "",
        "Static quantization with onnxruntime (quant_pre_process, then quantize_static: QDQ, per-channel int8 "
        f"weights, uint8 activations, MinMax ranges) calibrated on {results['calibration']['images']} training "
        f"photos, {results['calibration']['packshots']} packshots and as many shopper views (training/shopper.py). "
        "Which operators stay in float was chosen on validation photos (packshots and a shopper view of each), by "
        "the largest accuracy loss over the heads:",
        "",
        *(
            _table(
                ("plan", "largest loss against float (points)", "images/s at batch 64"),
                [
                    (name, f"{t['worst_drop_points']:.2f}", t["images_per_s_batch64"])
                    for name, t in results["plans"].items()
                ],
            )
            if results["plans"]
            else ["(one plan asked for: not compared in this run)"]
        ),
        "",
        f"Chosen: **{results['plan']}** (the most accurate of the plans within {MIN_SPEED_SHARE:.0%} of the "
        "fastest; speeds from one run on the shared machine). The gate (validation split): no head more than "
        f"{GATE['accuracy_points']['packshot']} points below float on packshots, "
        f"{GATE['accuracy_points']['shopper_view']} on shopper views, precision@5 no more than "
        f"{GATE['precision_at_5']} below; "
        "precision@5 is of articleType, each photo against the training packshots embedded by the same file.",
        "",
    ]
    for file, entry in results["files"].items():
        mb, speed = entry["megabytes"], entry["images_per_s_batch64"]
        lines += [
            f"## {file}",
            "",
            f"{mb['float']} MB -> {mb['int8']} MB; images/s at batch 64 on 2 threads: {speed['float']} float, "
            f"{speed['int8']} int8 (one run on the shared machine, load average {entry['load_average']}).",
            "",
            *(
                [
                    f"Outputs within {entry['max_abs_diff']:.1e} of {entry['same_as']} on the validation photos: its "
                    "numbers below.",
                    "",
                ]
                if "same_as" in entry
                else []
            ),
            "Validation split:",
            "",
            *_comparison(entry["val"]),
            "Gate: "
            + ("passed" if not entry["gate"] else "FAILED (not listed in model.json): " + "; ".join(entry["gate"])),
            "",
        ]
        if "test" in entry:
            lines += ["Test split, the served one-pass file:", "", *_comparison(entry["test"])]
    return lines


def write(results: Mapping[str, Any], report: Path, command: str) -> None:
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    report.write_text("\n".join(markdown(results, command)) + "\n")
