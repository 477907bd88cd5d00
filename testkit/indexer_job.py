"""The indexer job as ops run it (`python -m jobs.indexer` in a subprocess) and what its tests read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fashionsearch.v1 import gateway_pb2
from testkit.gateway_stack import HOST, Stack
from testkit.process_stack import REPO_ROOT


def addr(server: Any) -> str:
    return f"{HOST}:{server.port}"


def job_command(tmp_path: Path, *args: str, progress: bool = False) -> list[str]:
    quiet = ["--progress-every-s", "0.05"] if progress else ["--no-progress"]
    return [
        sys.executable,
        "-m",
        "jobs.indexer",
        *args,
        "--rejects",
        str(tmp_path / "rejects.csv"),
        "--summary-json",
        str(tmp_path / "summary.json"),
        *quiet,
    ]


def run_job(
    tmp_path: Path, *args: str, timeout_s: float = 120, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        job_command(tmp_path, *args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )
    summary_path = tmp_path / "summary.json"
    assert summary_path.exists(), f"no summary; stdout={result.stdout}\nstderr={result.stderr}"
    summary = json.loads(summary_path.read_text())
    summary_path.unlink()
    return result.returncode, summary


def counts(summary: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return summary["added"], summary["updated"], summary["unchanged"], summary["deleted"], summary["rejected"]


def digests(stack: Stack) -> dict[int, str]:
    return {
        d.id: d.content_hash
        for page in stack.stub.ListItems(gateway_pb2.ListItemsRequest(), timeout=10)
        for d in page.items
    }
