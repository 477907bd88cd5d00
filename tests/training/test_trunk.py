"""The shared trunk of two exported models, the one-pass model made from them, and their int8 variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from fashionsearch.model_contract import MODEL_FILE, ModelSpec
from fashionsearch.model_variants import variants
from services.classifier.model import OnnxClassifier
from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder, write_tiny_one_pass
from training.inference import images_per_second_alternating, onnx_session
from training.trunk import TrunkError, combine, shared_trunk, trunk_end


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    if isinstance(model, onnx.ModelProto):
        session = onnx_session_from(model)
    else:
        session = onnx_session(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": x}), strict=True))


def onnx_session_from(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_combined_model_gives_both_models_outputs_exactly(tmp_path: Path) -> None:
    c_dir, e_dir = write_tiny_classifier(tmp_path / "c"), write_tiny_embedder(tmp_path / "e")
    c, e = onnx.load(str(c_dir / MODEL_FILE)), onnx.load(str(e_dir / MODEL_FILE))
    x = np.random.default_rng(0).random((5, 80, 60, 3), dtype=np.float32)
    combined = _run(combine(c, e), x)
    expected = _run(c_dir / MODEL_FILE, x) | _run(e_dir / MODEL_FILE, x)
    assert set(combined) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(combined[name], value)
    trunk = shared_trunk(c, e)
    assert trunk_end(c, e) == {"features"}  # where the heads and the projection begin
    assert trunk.nodes == 4 and len(trunk.sha256) == 64  # Transpose, AveragePool, Flatten, Sub
    # The identity names the trunk, not the files: another embedder head on it has the same trunk.
    other = onnx.load(str(write_tiny_embedder(tmp_path / "e2", dim=8, seed=3) / MODEL_FILE))
    assert shared_trunk(c, other).sha256 == trunk.sha256


def test_models_on_different_trunks_are_refused(tmp_path: Path) -> None:
    c = onnx.load(str(write_tiny_classifier(tmp_path / "c") / MODEL_FILE))
    other_size = onnx.load(str(write_tiny_embedder(tmp_path / "e", height=96, width=72) / MODEL_FILE))
    with pytest.raises(TrunkError):
        combine(c, other_size)


def test_one_pass_and_int8_variants_load_and_agree_with_float(tmp_path: Path) -> None:
    classifier_dir, embedder_dir = write_tiny_one_pass(tmp_path, int8=True)
    spec = ModelSpec.load(classifier_dir)
    files = {"model.onnx", "with-embedder.onnx", "model.int8.onnx", "with-embedder.int8.onnx"}
    assert {v.file for v in variants(spec)} == files
    assert spec.extra["trunk"] == ModelSpec.load(embedder_dir).extra["trunk"]
    photos = list(np.random.default_rng(1).integers(0, 256, size=(6, 80, 60, 3), dtype=np.uint8))
    served = {p: OnnxClassifier.from_dir(classifier_dir, precision=p, embedding=True) for p in ("float", "int8")}
    for model in served.values():
        model.warm_up(4)  # the heads stay float: their probabilities still sum to 1
    assert served["int8"].identity.precision == "int8" and served["float"].identity.precision == "float"
    batch = np.stack([served["float"].prepare(p) for p in photos])
    (floats, f_vec), (int8s, i_vec) = (served[p].analyse_prepared(batch, [1] * 6) for p in ("float", "int8"))
    cosine = (f_vec * i_vec).sum(1) / np.linalg.norm(f_vec, axis=1) / np.linalg.norm(i_vec, axis=1)
    assert cosine.min() > 0.99
    assert [c.top_labels()["masterCategory"] for c in floats] == [c.top_labels()["masterCategory"] for c in int8s]


def test_quantization_plans_are_timed_in_alternating_rounds(tmp_path: Path) -> None:
    # training/quantize.py chooses its plan and reports int8 against float by these speeds.
    classifier_dir, _ = write_tiny_one_pass(tmp_path, int8=True)
    spec = ModelSpec.load(classifier_dir)
    files = {"float": classifier_dir / "with-embedder.onnx", "int8": classifier_dir / "with-embedder.int8.onnx"}
    speeds = images_per_second_alternating(
        files, spec.input.height, spec.input.width, threads=1, batch=4, rounds=2, calls=2
    )
    assert list(speeds) == ["float", "int8"] and all(speed > 0 for speed in speeds.values())
