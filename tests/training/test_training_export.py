"""The paper models' shapes, the ONNX export and its parity gate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from fashionsearch.model_contract import ModelSpec, file_sha256
from training import data, export
from training.recipe import Head, TrainedModel
from training.recipes import paper

pytestmark = pytest.mark.training


def _pixels(n: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 80, 60, 3), dtype=np.uint8)


def test_paper_cnn_has_the_papers_parameter_count():
    model = paper.build_cnn()
    assert model.count_params() == paper.CNN_PARAMETERS == 146_566
    assert model.output_shape == (None, 6)


def test_paper_autoencoder_shapes():
    autoencoder, encoder = paper.build_autoencoder(16)
    assert autoencoder.output_shape == (None, 60, 60, 3)
    assert encoder.output_shape == (None, 16)


def _trained_cnn() -> TrainedModel:
    data.configure_tensorflow(1, 0)
    return TrainedModel(
        name="paper-cnn",
        kind="classifier",
        model=paper.build_cnn(),
        input_spec=paper.PAPER_INPUT,
        heads=(Head("category", data.PAPER_CLASSES),),
        metrics={"validation": {"accuracy": {"category": 0.5}}},
        training={"recipe": "paper-cnn", "history": {"loss": [1.0, 0.5]}},
        parity_pixels=_pixels(),
    )


def test_export_classifier_writes_a_valid_contract(tmp_path):
    out = tmp_path / "models" / "paper-cnn"
    spec = export.export_model(_trained_cnn(), out, version="7")
    loaded = ModelSpec.load(out)
    assert loaded == spec
    assert loaded.version == "7" and loaded.kind == "classifier"
    assert loaded.onnx_sha256 == file_sha256(out / "model.onnx")
    assert loaded.outputs[0].attribute == "category" and loaded.outputs[0].labels == data.PAPER_CLASSES
    assert loaded.extra["parity"]["images"] == 256 and loaded.extra["parity"]["max_abs_diff"] <= 1e-4
    assert loaded.extra["training"]["history"] == {"loss": [1.0, 0.5]}

    graph = onnx.load(str(out / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["image"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert loaded.outputs[0].name == graph.output[0].name
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_compare_outputs_fails_on_a_difference_or_an_argmax_change():
    ref = np.asarray([[0.6, 0.4], [0.2, 0.8]], dtype=np.float32)
    assert export.compare_outputs([ref], [ref + 5e-5], classifier=True).max_abs_diff <= 1e-4
    with pytest.raises(export.ExportError, match="max abs difference"):
        export.compare_outputs([ref], [ref + 2e-4], classifier=True)
    swapped = np.asarray([[0.49999, 0.50001], [0.2, 0.8]], dtype=np.float32)
    near = np.asarray([[0.50001, 0.49999], [0.2, 0.8]], dtype=np.float32)
    with pytest.raises(export.ExportError, match="1 argmax mismatches"):
        export.compare_outputs([near], [swapped], classifier=True)
    with pytest.raises(export.ExportError, match="shapes differ"):
        export.compare_outputs([ref], [ref[:1]], classifier=True)
    with pytest.raises(export.ExportError, match="max abs difference nan"):
        export.compare_outputs([ref], [ref * np.nan], classifier=False)


def test_export_fails_and_writes_nothing_when_the_onnx_model_differs(tmp_path, monkeypatch):
    trained = _trained_cnn()
    other = paper.build_cnn()  # different random weights
    real_convert = export.keras_to_onnx
    monkeypatch.setattr(export, "keras_to_onnx", lambda model, spec, path: real_convert(other, spec, path))
    out = tmp_path / "models" / "paper-cnn"
    with pytest.raises(export.ExportError, match="parity gate failed"):
        export.export_model(trained, out)
    assert not out.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_the_gate_needs_enough_images(tmp_path):
    trained = _trained_cnn()
    trained.parity_pixels = _pixels(10)
    with pytest.raises(export.ExportError, match="at least 256 images"):
        export.export_model(trained, tmp_path / "m")


def test_a_trained_run_can_be_saved_and_exported_later(tmp_path):
    trained = _trained_cnn()
    export.save_trained(trained, tmp_path / "run")
    again = export.load_trained(tmp_path / "run")
    assert again.heads == trained.heads and again.input_spec == trained.input_spec
    x = np.random.default_rng(1).random((4, 60, 60, 3), dtype=np.float32)
    np.testing.assert_allclose(again.model.predict(x, verbose=0), trained.model.predict(x, verbose=0), atol=1e-6)
    export.export_model(again, tmp_path / "out")
    assert ModelSpec.load(tmp_path / "out").name == "paper-cnn"
