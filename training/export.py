"""Keras -> model.onnx + model.json, guarded by the parity gate.

The gate runs the Keras model and the ONNX model on real validation images, both fed by the contract's
`preprocess()`; the export fails (nothing is written to the model folder) when any output differs by more than
`PARITY_ATOL` or any classifier head's argmax differs. A detector's box sizes (pixels of the input) are compared
as fractions of the input's longer side, so the limit means the same for every output.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

import training.layers  # noqa: F401 - registers the custom layers (ProxyPull...) that saved models use
from fashionsearch.model_contract import (
    MODEL_FILE,
    DetectionSpec,
    EmbeddingSpec,
    InputSpec,
    ModelSpec,
    OutputHead,
    file_sha256,
    preprocess,
)
from training.inference import onnx_session
from training.recipe import Head, TrainedModel

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
PARITY_MIN_IMAGES = 256
PARITY_BATCH_PIXELS = 256 * 144 * 108  # how many input pixels the gate's Keras run predicts at a time
OPSET = 17
BATCH_DIM = "batch"
TRAINED_FILE = "trained.json"
KERAS_FILE = "model.keras"


class ExportError(RuntimeError):
    """The ONNX model does not behave like the Keras model, or cannot be written."""


@dataclass(frozen=True)
class ParityResult:
    images: int
    max_abs_diff: float
    argmax_mismatches: int  # summed over classifier heads; 0 for embedders

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "max_abs_diff": float(self.max_abs_diff),
            "argmax_mismatches": self.argmax_mismatches,
            "atol": PARITY_ATOL,
        }


def keras_to_onnx(
    model: Any, input_spec: InputSpec | None, path: Path, signature: Sequence[Any] | None = None
) -> list[str]:
    """Convert with tf2onnx (a Sequential is wrapped as a functional model first), name the dynamic batch
    dimension "batch" on every input and output, and return the ONNX output names in the model's order. The input
    is the image `input_spec` describes, unless a `signature` (tf.TensorSpec list, e.g. a text model's ids) is given."""
    functional = keras.Model(model.inputs, model.outputs)
    if signature is None:
        assert input_spec is not None
        signature = [tf.TensorSpec((None, input_spec.height, input_spec.width, 3), tf.float32, name=input_spec.name)]
    proto, _ = tf2onnx.convert.from_keras(functional, input_signature=signature, opset=OPSET)
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return [o.name for o in proto.graph.output]


def compare_outputs(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    classifier: bool,
    atol: float = PARITY_ATOL,
    scales: Sequence[float] | None = None,
) -> ParityResult:
    """Max abs difference over all outputs (each divided by its `scales` entry, if given) and the number of argmax
    disagreements (classifier heads only); raises ExportError when the gate fails."""
    if len(reference) != len(candidate):
        raise ExportError(f"the ONNX model has {len(candidate)} outputs, Keras {len(reference)}")
    worst, mismatches, n = 0.0, 0, 0
    for k, (ref, got) in enumerate(zip(reference, candidate, strict=True)):
        scale = 1.0 if scales is None else float(scales[k])
        ref, got = np.asarray(ref) / scale, np.asarray(got) / scale
        if np.isnan(worst):
            break
        if ref.shape != got.shape:
            raise ExportError(f"output shapes differ: Keras {ref.shape}, ONNX {got.shape}")
        n = len(ref)
        diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
        if np.isnan(diff) or diff > worst:  # a NaN stays the worst value
            worst = diff
        if classifier:
            mismatches += int(np.sum(np.argmax(ref, axis=-1) != np.argmax(got, axis=-1)))
    result = ParityResult(images=n, max_abs_diff=worst, argmax_mismatches=mismatches)
    if not np.isfinite(worst) or worst > atol or mismatches:
        raise ExportError(
            f"parity gate failed on {n} images: max abs difference {worst:.3g} (limit {atol:g}), "
            f"{mismatches} argmax mismatches"
        )
    return result


def parity_check(
    model: Any,
    onnx_path: Path,
    input_spec: InputSpec,
    images: np.ndarray,
    classifier: bool,
    min_images: int = PARITY_MIN_IMAGES,
    atol: float = PARITY_ATOL,
    scales: Sequence[float] | None = None,
) -> ParityResult:
    """Keras vs onnxruntime on `images` (uint8 HxWx3, any size), both fed by the contract's preprocess()."""
    if len(images) < min_images:
        raise ExportError(f"the parity gate needs at least {min_images} images, got {len(images)}")
    x = preprocess(list(images), input_spec)
    # Batches sized by input area: 256 photos at the classifiers' 144x108 as before (a near-tied head of a barely
    # trained model flipped its argmax when Keras ran it in smaller batches than onnxruntime), and fewer of the
    # detector's 320x256 scenes, where 256 at a time took 13 GB.
    batch = max(1, PARITY_BATCH_PIXELS // (input_spec.height * input_spec.width))
    keras_out = model.predict(x, batch_size=batch, verbose=0)
    if not isinstance(keras_out, list | tuple):
        keras_out = [keras_out]
    session = onnx_session(onnx_path)
    onnx_out = session.run(None, {session.get_inputs()[0].name: x})
    return compare_outputs(keras_out, onnx_out, classifier, atol, scales)


def export_model(
    trained: TrainedModel,
    out_dir: str | Path,
    version: str = "1",
    min_parity_images: int = PARITY_MIN_IMAGES,
) -> ModelSpec:
    """Write out_dir/model.onnx and model.json (and any extra models) after the parity gate passed.

    Everything is built in a temporary folder first; out_dir is replaced only when every check passed.
    """
    out = Path(out_dir)
    if trained.parity_pixels is None:
        raise ExportError("no validation images for the parity gate")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        onnx_path = staging / MODEL_FILE
        output_names = keras_to_onnx(trained.model, trained.input_spec, onnx_path)
        session = onnx_session(onnx_path)
        session_outputs = [o.name for o in session.get_outputs()]
        if session_outputs != output_names:
            raise ExportError(f"onnxruntime reports outputs {session_outputs}, the graph {output_names}")
        classifier = trained.kind == "classifier"
        # A detector's outputs: heatmap, box_size (input pixels), offset.
        scales = (1.0, float(max(trained.input_spec.height, trained.input_spec.width)), 1.0)
        parity = parity_check(
            trained.model,
            onnx_path,
            trained.input_spec,
            trained.parity_pixels,
            classifier,
            min_parity_images,
            scales=scales if trained.kind == "detector" else None,
        )
        log.info("parity gate passed: %s", parity)
        extra_files = {}
        for filename, extra_model in trained.extra_models.items():
            keras_to_onnx(extra_model, trained.input_spec, staging / filename)
            extra_parity = parity_check(
                extra_model, staging / filename, trained.input_spec, trained.parity_pixels, False, min_parity_images
            )
            extra_files[filename] = {"sha256": file_sha256(staging / filename), "parity": extra_parity.to_dict()}

        if classifier:
            if len(trained.heads) != len(session_outputs):
                raise ExportError(f"{len(trained.heads)} heads declared, the model has {len(session_outputs)} outputs")
            outputs = tuple(
                OutputHead(name=name, attribute=head.attribute, labels=tuple(head.labels))
                for name, head in zip(session_outputs, trained.heads, strict=True)
            )
            embedding, detection = None, None
        elif trained.kind == "detector":
            if trained.detection is None or len(session_outputs) != 3:
                raise ExportError(f"a detector needs a detection section and 3 outputs, got {session_outputs}")
            names = dict(zip(("heatmap", "box_size", "offset"), session_outputs, strict=True))
            detection = DetectionSpec.from_dict(dict(trained.detection) | names)
            outputs, embedding = (), None
        else:
            if len(session_outputs) != 1 or trained.embedding_dim is None:
                raise ExportError(f"an embedder needs one output and a dimension, got {session_outputs}")
            width = session.get_outputs()[0].shape[-1]
            if width != trained.embedding_dim:
                raise ExportError(f"embedding output has width {width}, declared {trained.embedding_dim}")
            outputs = ()
            embedding = EmbeddingSpec(output=session_outputs[0], dim=trained.embedding_dim)
            detection = None
        spec = ModelSpec(
            name=trained.name,
            kind=trained.kind,
            version=version,
            onnx_sha256=file_sha256(onnx_path),
            input=trained.input_spec,
            outputs=outputs,
            embedding=embedding,
            detection=detection,
            metrics=dict(trained.metrics),
            extra={
                "training": trained.training,
                "parity": parity.to_dict(),
                "files": extra_files,
                "exporter": {"tool": "tf2onnx", "opset": OPSET},
            },
        )
        spec.write(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s to %s (sha256 %s)", spec.identity, out, spec.onnx_sha256[:12])
    return spec


# --------------------------------------------------------------------------------------------------------------
# Saving a trained model so that export can run again later without training


def save_trained(trained: TrainedModel, run_dir: Path) -> None:
    """run_dir/model.keras, extra models as .keras, parity images and trained.json with everything else."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trained.model.save(run_dir / KERAS_FILE)
    extra = {}
    for filename, model in trained.extra_models.items():
        keras_name = Path(filename).stem + ".keras"
        model.save(run_dir / keras_name)
        extra[filename] = keras_name
    if trained.parity_pixels is not None:
        np.save(run_dir / "parity_pixels.npy", trained.parity_pixels)
    meta = {
        "name": trained.name,
        "kind": trained.kind,
        "input": trained.input_spec.__dict__
        | {"mean": list(trained.input_spec.mean), "std": list(trained.input_spec.std)},
        "heads": [{"attribute": h.attribute, "labels": list(h.labels)} for h in trained.heads],
        "embedding_dim": trained.embedding_dim,
        "detection": trained.detection,
        "metrics": trained.metrics,
        "training": trained.training,
        "extra_models": extra,
    }
    (run_dir / TRAINED_FILE).write_text(json.dumps(meta, indent=1))


def load_trained(run_dir: Path) -> TrainedModel:
    meta = json.loads((run_dir / TRAINED_FILE).read_text())
    raw_input: Mapping[str, Any] = meta["input"]
    input_spec = InputSpec(**(dict(raw_input) | {"mean": tuple(raw_input["mean"]), "std": tuple(raw_input["std"])}))
    parity = run_dir / "parity_pixels.npy"
    return TrainedModel(
        name=meta["name"],
        kind=meta["kind"],
        model=keras.models.load_model(run_dir / KERAS_FILE),
        input_spec=input_spec,
        heads=tuple(Head(h["attribute"], tuple(h["labels"])) for h in meta["heads"]),
        embedding_dim=meta["embedding_dim"],
        detection=meta.get("detection"),
        metrics=meta["metrics"],
        training=meta["training"],
        extra_models={f: keras.models.load_model(run_dir / k) for f, k in meta["extra_models"].items()},
        parity_pixels=np.load(parity) if parity.is_file() else None,
        run_dir=run_dir,
    )
