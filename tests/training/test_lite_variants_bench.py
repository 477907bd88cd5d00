"""bench/lite_variants.py: each trunk timed as exported, and with --int8 statically quantized beside it."""

from __future__ import annotations

import importlib.util
import re

import pytest

from training import data

pytestmark = pytest.mark.training


def _bench():
    spec = importlib.util.spec_from_file_location("lite_variants", data.REPO_ROOT / "bench" / "lite_variants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_int8_rows_stand_beside_the_float_ones_and_are_smaller(capsys):
    args = ["--variants", "lite0", "--sizes", "64x48", "--seconds", "0.3", "--batch", "2", "--int8"]
    assert _bench().main(args) == 0
    rows = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r"^\| (lite0(?: int8)?) \| 64x48 \| 16 \| ([\d.]+) \| [\d,]+ \|", capsys.readouterr().out, re.M
        )
    }
    assert set(rows) == {"lite0", "lite0 int8"}
    assert rows["lite0 int8"] < rows["lite0"] / 2  # 8-bit weights: about a quarter of the float file


def test_an_unknown_trunk_is_refused_by_name():
    with pytest.raises(SystemExit, match="unknown variants"):
        _bench().main(["--variants", "lite9"])
