"""Reports are data; this module is the one renderer that makes their Markdown.

A report is a title, sections of blocks (a paragraph of text, a table as header and rows, a picture) and a footer
(the command that regenerates it). The writers (training.evaluate, training.production_report, ...) build sections
and `save` writes both `report.json` and the `README.md` rendered from it. A writer that adds to a report another
one wrote (the production report adds its summary to the evaluation's) loads it and puts its sections by id, never
by editing Markdown.

    python -m training render-reports [REPORT_DIR ...]   # again from report.json: no model, dataset or training

Rendering again also puts each model's robustness section (its pair's rows of reports/robustness/README.json,
`training.robustness.model_section`) into its report, so every model report shows how it holds up on shoppers'
photos beside its clean accuracy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_FILE = "report.json"
MARKDOWN_FILE = "README.md"


def section_id(heading: str) -> str:
    """A section's id from its heading: lower case, words joined by '-' ("## Calibration" -> "calibration")."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


@dataclass
class Section:
    """One `## heading` of a report and its blocks; heading "" is the text under the title."""

    heading: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or section_id(self.heading)

    def text(self, text: str) -> Section:
        self.blocks.append({"text": text})
        return self

    def table(self, header: Sequence[Any], rows: Iterable[Sequence[Any]], numbers_from: int | None = None) -> Section:
        """A table; with `numbers_from`, the columns from that index on are numbers (right-aligned)."""
        table: dict[str, Any] = {"header": [str(h) for h in header], "rows": [[str(c) for c in r] for r in rows]}
        if numbers_from is not None:
            table["numbers_from"] = numbers_from
        self.blocks.append({"table": table})
        return self

    def image(self, alt: str, path: str) -> Section:
        self.blocks.append({"image": {"alt": alt, "path": path}})
        return self

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "heading": self.heading, "blocks": self.blocks}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Section:
        return cls(heading=value["heading"], blocks=list(value["blocks"]), id=value["id"])


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)
    footer: str = ""

    def add(self, heading: str, id: str = "") -> Section:
        """A new section at the end."""
        section = Section(heading, id=id)
        self.sections.append(section)
        return section

    def get(self, id: str) -> Section | None:
        return next((s for s in self.sections if s.id == id), None)

    def put(self, section: Section, before: Sequence[str] = (), after: Sequence[str] = ()) -> None:
        """`section` in place of the section with its id; else before the first section whose id is in `before`,
        else after the last whose id is in `after`, else at the end."""
        ids = [s.id for s in self.sections]
        if section.id in ids:
            self.sections[ids.index(section.id)] = section
            return
        for i, existing in enumerate(ids):
            if existing in before:
                self.sections.insert(i, section)
                return
        for i in reversed(range(len(ids))):
            if ids[i] in after:
                self.sections.insert(i + 1, section)
                return
        self.sections.append(section)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "sections": [s.to_json() for s in self.sections], "footer": self.footer}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Report:
        return cls(value["title"], [Section.from_json(s) for s in value["sections"]], value.get("footer", ""))


def _table_lines(table: dict[str, Any]) -> list[str]:
    header, rows, numbers = table["header"], table["rows"], table.get("numbers_from", len(table["header"]))
    rule = [" ---: " if i >= numbers else " --- " for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def block_lines(block: dict[str, Any]) -> list[str]:
    if "text" in block:
        return str(block["text"]).split("\n")
    if "table" in block:
        return _table_lines(block["table"])
    if "image" in block:
        return [f"![{block['image']['alt']}]({block['image']['path']})"]
    raise ValueError(f"unknown report block {sorted(block)}")


def render(report: Report) -> str:
    """The report's Markdown: the title, each section's heading and blocks separated by blank lines, the footer."""
    lines = [f"# {report.title}", ""]
    for section in report.sections:
        if section.heading:
            lines += [f"## {section.heading}", ""]
        for block in section.blocks:
            lines += [*block_lines(block), ""]
    if report.footer:
        lines += [report.footer, ""]
    return "\n".join(lines)


def save(report: Report, report_dir: Path) -> Path:
    """report_dir/report.json and the README.md rendered from it; the README's path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n")
    path = report_dir / MARKDOWN_FILE
    path.write_text(render(report), encoding="utf-8")
    return path


def load(report_dir: Path) -> Report:
    return Report.from_json(json.loads((report_dir / REPORT_FILE).read_text(encoding="utf-8")))
