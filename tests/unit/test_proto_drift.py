"""The committed generated code in fashionsearch/v1 must equal a fresh generation from proto/."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
GENERATED_DIR = REPO_ROOT / "fashionsearch" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _generated_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    # The same command as `make proto`, run from a copy so relative paths in the output are identical.
    shutil.copytree(PROTO_DIR, tmp_path / "proto")
    protos = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "proto").rglob("*.proto"))
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-Iproto",
        "--python_out=.",
        "--pyi_out=.",
        "--grpc_python_out=.",
        *protos,
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"protoc failed: {result.stderr}"

    fresh_dir = tmp_path / "fashionsearch" / "v1"
    fresh, committed = _generated_files(fresh_dir), _generated_files(GENERATED_DIR)
    assert fresh == committed, (
        f"generated files differ: missing {sorted(fresh - committed)}, stale {sorted(committed - fresh)}; "
        "run `make proto`"
    )
    changed = [name for name in sorted(fresh) if not filecmp.cmp(fresh_dir / name, GENERATED_DIR / name, shallow=False)]
    assert not changed, f"committed generated code is out of date for {changed}; run `make proto`"
