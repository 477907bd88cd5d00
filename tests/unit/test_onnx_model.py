"""OnnxModel refuses a model.onnx that does not match its model.json, listing every difference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fashionsearch.detection import decode_detections
from fashionsearch.model_contract import ModelContractError, file_sha256, preprocess
from fashionsearch.onnx_model import OnnxModel
from services.classifier.model import OnnxClassifier
from testkit.tiny_detector import write_tiny_detector
from testkit.tiny_models import DEFAULT_HEADS, head_output_name, write_tiny_classifier, write_tiny_embedder


def edit_spec(model_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = model_dir / "model.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_tiny_classifier_loads_runs_and_warms_up(tmp_path: Path) -> None:
    model = OnnxModel(write_tiny_classifier(tmp_path), expected_kind="classifier")
    model.warm_up(batch_size=2)
    assert model.identity.name == "tiny-classifier" and model.identity.version == "tiny-1"
    assert model.identity.sha256 == file_sha256(tmp_path / "model.onnx")
    assert model.input_size == (60, 80)
    outputs = model.run(np.random.default_rng(0).random((3, 80, 60, 3), dtype=np.float32))
    assert set(outputs) == {head_output_name(a) for a in DEFAULT_HEADS}
    for attribute, labels in DEFAULT_HEADS.items():
        probabilities = outputs[head_output_name(attribute)]
        assert probabilities.shape == (3, len(labels))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_tiny_embedder_loads_and_runs(tmp_path: Path) -> None:
    model = OnnxModel(write_tiny_embedder(tmp_path, dim=24, version="v9"), expected_kind="embedder")
    model.warm_up()
    assert str(model.identity) == "tiny-embedder:v9"
    assert model.run(np.zeros((5, 80, 60, 3), dtype=np.float32))["embedding"].shape == (5, 24)


def test_sha256_mismatch_names_both_hashes(tmp_path: Path) -> None:
    write_tiny_classifier(tmp_path)
    edit_spec(tmp_path, lambda d: d.update(onnx_sha256="0" * 64))
    with pytest.raises(ModelContractError, match=r"onnx_sha256 expected 0{64}, the file has [0-9a-f]{64}"):
        OnnxModel(tmp_path)


def test_every_signature_difference_is_listed(tmp_path: Path) -> None:
    write_tiny_classifier(tmp_path)

    def break_spec(data: dict[str, Any]) -> None:
        data["input"]["name"] = "pixels"
        data["input"]["height"] = 64
        data["outputs"][0]["name"] = "no_such_output"
        data["outputs"][1]["labels"] = ["only", "two"]

    edit_spec(tmp_path, break_spec)
    with pytest.raises(ModelContractError) as caught:
        OnnxModel(tmp_path)
    message = str(caught.value)
    assert "input name: expected 'pixels', the model has 'image'" in message
    assert "shape: expected [batch, 64, 60, 3] (NHWC, dynamic batch), the model has ['batch', 80, 60, 3]" in message
    assert "output 'no_such_output' is missing; the model's outputs are" in message
    assert f"output '{head_output_name('subCategory')}' shape: expected [batch, 2], the model has ['batch', 5]" in (
        message
    )


def test_fixed_batch_size_is_refused(tmp_path: Path) -> None:
    write_tiny_classifier(tmp_path, batch=1)
    with pytest.raises(ModelContractError, match=r"dynamic batch\), the model has \[1, 80, 60, 3\]"):
        OnnxModel(tmp_path)


def test_wrong_kind_is_refused(tmp_path: Path) -> None:
    write_tiny_embedder(tmp_path)
    with pytest.raises(ModelContractError, match="holds a embedder .* but a classifier is needed"):
        OnnxModel(tmp_path, expected_kind="classifier")


def test_embedder_dim_mismatch(tmp_path: Path) -> None:
    write_tiny_embedder(tmp_path, dim=16)
    edit_spec(tmp_path, lambda d: d["embedding"].update(dim=32))
    with pytest.raises(ModelContractError, match=r"output 'embedding' shape: expected \[batch, 32\]"):
        OnnxModel(tmp_path)


def test_logits_instead_of_probabilities_fail_the_warm_up(tmp_path: Path) -> None:
    model = OnnxModel(write_tiny_classifier(tmp_path, softmax=False))
    with pytest.raises(ModelContractError, match="is not a softmax"):
        model.warm_up()


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="no model.json"):
        OnnxModel(tmp_path)
    write_tiny_embedder(tmp_path)
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(ModelContractError, match="no model.onnx"):
        OnnxModel(tmp_path)


def test_unloadable_onnx_file(tmp_path: Path) -> None:
    write_tiny_embedder(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    edit_spec(tmp_path, lambda d: d.update(onnx_sha256=file_sha256(tmp_path / "model.onnx")))
    with pytest.raises(ModelContractError, match="onnxruntime cannot load"):
        OnnxModel(tmp_path)


def test_run_checks_the_batch(tmp_path: Path) -> None:
    model = OnnxModel(write_tiny_embedder(tmp_path))
    with pytest.raises(ValueError, match=r"batch must be float32 \(N, 80, 60, 3\), got float32 \(1, 60, 80, 3\)"):
        model.run(np.zeros((1, 60, 80, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="got float64"):
        model.run(np.zeros((1, 80, 60, 3)))


def test_tiny_detector_loads_warms_up_and_finds_its_squares(tmp_path: Path) -> None:
    model = OnnxModel(write_tiny_detector(tmp_path), expected_kind="detector")
    model.warm_up(batch_size=2)
    # A 192x256 photo is the 96x128 input at twice the size: no padding. A blue square of 3x3 cells (48 photo
    # pixels) at cells 2..4 x 4..6 is a "top"; its centre cell is the one peak.
    photo = np.full((256, 192, 3), 255, np.uint8)
    photo[64:112, 32:80] = (0, 0, 255)
    [[found]] = decode_detections(model.run(preprocess([photo], model.spec.input)), model.spec, [(192, 256)])
    assert found.group == "top" and found.xyxy == pytest.approx((32, 64, 80, 112), abs=0.01)


def test_detector_outputs_must_match_its_groups(tmp_path: Path) -> None:
    write_tiny_detector(tmp_path)
    edit_spec(tmp_path, lambda d: d["detection"]["groups"].append({"name": "bag", "sub_categories": ["Bags"]}))
    with pytest.raises(ModelContractError, match=r"output 'heatmap' shape: expected \[batch, 16, 12, 3\]"):
        OnnxModel(tmp_path)
    edit_spec(tmp_path, lambda d: d["detection"].update(stride=16))
    with pytest.raises(ModelContractError, match=r"'box_size' shape: expected \[batch, 8, 6, 2\]"):
        OnnxModel(tmp_path)


def test_classifier_results_are_each_rows_top_labels_with_the_models_probabilities(tmp_path: Path) -> None:
    """Most probable first, equal probabilities in the model's label order, each row with its own top_k, and the
    probabilities exactly the model's float32 values."""
    classifier = OnnxClassifier.from_dir(write_tiny_classifier(tmp_path, heads={"colour": ("a", "b", "c", "d")}))
    probabilities = np.array([[0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]], dtype=np.float32)
    results = classifier._classifications({head_output_name("colour"): probabilities}, [3, 2])
    labels = [[(s.label, s.probability) for s in result.attributes[0].labels] for result in results]
    assert labels == [
        [("b", float(probabilities[0, 1])), ("a", float(probabilities[0, 0])), ("c", float(probabilities[0, 2]))],
        [("d", float(probabilities[1, 3])), ("a", float(probabilities[1, 0]))],
    ]
    assert all(type(p) is float for row in labels for _, p in row)
