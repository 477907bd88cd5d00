"""Which of a model folder's files a service serves: model.onnx, an int8 variant, a one-pass variant."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionsearch.model_contract import ModelContractError, ModelSpec, read_spec_file, write_spec_file
from fashionsearch.model_variants import VNNI_FLAGS, choose, cpu_flags, variants
from testkit.tiny_models import write_tiny_classifier

EMBEDDING = {
    "output": "embedding",
    "dim": 16,
    "model": {"name": "tiny-embedder", "version": "tiny-1", "onnx_sha256": "e" * 64},
    "trunk_sha256": "t" * 64,
}
INT8 = {"file": "model.int8.onnx", "sha256": "1" * 64, "precision": "int8", "cpu_features": list(VNNI_FLAGS)}
ONE_PASS = {"file": "with-embedder.onnx", "sha256": "2" * 64, "precision": "float", "embedding": EMBEDDING}
ONE_PASS_INT8 = {
    **ONE_PASS,
    "file": "with-embedder.int8.onnx",
    "sha256": "3" * 64,
    **{"precision": "int8", "cpu_features": list(VNNI_FLAGS)},
}
VNNI = frozenset({"sse4_2", "avx512_vnni"})
OLD_CPU = frozenset({"sse4_2", "avx2"})


def _spec(tmp_path: Path, listed: list[dict]) -> ModelSpec:
    folder = write_tiny_classifier(tmp_path / "classifier")
    raw = read_spec_file(folder)
    raw["variants"] = listed
    write_spec_file(folder, raw)
    return ModelSpec.load(folder)


def test_auto_takes_int8_only_on_a_cpu_with_vnni(tmp_path: Path) -> None:
    spec = _spec(tmp_path, [INT8])
    chosen, why = choose(spec, "auto", flags=VNNI)
    assert chosen.file == "model.int8.onnx" and "avx512_vnni" in why
    chosen, why = choose(spec, "auto", flags=OLD_CPU)
    assert chosen.file == "model.onnx" and "lacks" in why
    assert choose(spec, "float", flags=VNNI)[0].file == "model.onnx"
    assert choose(spec, "int8", flags=OLD_CPU)[0].file == "model.int8.onnx"  # forced: the setting wins


def test_a_folder_without_variants_serves_model_onnx_and_refuses_forced_int8(tmp_path: Path) -> None:
    spec = _spec(tmp_path, [])
    assert choose(spec, "auto", flags=VNNI)[0].file == "model.onnx"
    with pytest.raises(ModelContractError, match="no int8 variant"):
        choose(spec, "int8")
    with pytest.raises(ModelContractError, match="precision must be one of"):
        choose(spec, "fp16")


def test_one_pass_is_preferred_when_asked_and_its_precision_chosen_alike(tmp_path: Path) -> None:
    spec = _spec(tmp_path, [ONE_PASS, INT8, ONE_PASS_INT8])
    assert choose(spec, "auto", embedding=True, flags=VNNI)[0].file == "with-embedder.int8.onnx"
    assert choose(spec, "auto", embedding=True, flags=OLD_CPU)[0].file == "with-embedder.onnx"
    assert choose(spec, "auto", embedding=False, flags=VNNI)[0].file == "model.int8.onnx"
    chosen = choose(spec, "float", embedding=True)[0]
    assert chosen.embedder is not None and chosen.embedder.identity == "tiny-embedder:tiny-1"
    assert chosen.embedding is not None and chosen.embedding.dim == 16


def test_variants_must_name_distinct_files_in_the_folder(tmp_path: Path) -> None:
    for bad in ([INT8, INT8], [{**INT8, "file": "../elsewhere.onnx"}], [{**INT8, "file": "model.onnx"}]):
        with pytest.raises(ModelContractError, match="distinct files"):
            variants(_spec(tmp_path, bad))
    with pytest.raises(ModelContractError, match="malformed variant"):
        variants(_spec(tmp_path, [{"file": "x.onnx"}]))


def test_cpu_flags_come_from_proc_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_vnni avx2\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == frozenset({"fpu", "sse", "avx512_vnni", "avx2"})
    assert cpu_flags(tmp_path / "absent") == frozenset()
