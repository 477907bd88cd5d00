"""Tiny ONNX models for tests, built with onnx.helper (no TensorFlow), with a valid model.json beside them.

Both models average-pool the NHWC image to a coarse grid of colours (about 4x4x3 features) and apply fixed
pseudo-random weights: deterministic, a few kilobytes, milliseconds to load, different images give different
predictions, and similar images give near vectors (the projection is linear).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fashionsearch.model_contract import (
    MODEL_FILE,
    EmbeddingSpec,
    InputSpec,
    ModelSpec,
    OutputHead,
    file_sha256,
)
from fashionsearch.text_contract import Target, Term, TextModelSpec, TokenizerSpec
from training import quantize

INPUT_NAME = "image"
OPSET = 17
GRID = 4

DEFAULT_HEADS: dict[str, tuple[str, ...]] = {
    "masterCategory": ("Apparel", "Accessories", "Footwear", "Personal Care"),
    "subCategory": ("Topwear", "Bottomwear", "Shoes", "Watches", "Bags"),
    "articleType": ("Tshirts", "Shirts", "Jeans", "Casual Shoes", "Watches", "Handbags"),
    "gender": ("Men", "Women", "Boys", "Girls", "Unisex"),
    "baseColour": ("Black", "White", "Blue", "Navy Blue", "Red", "Grey"),
    "season": ("Summer", "Fall", "Winter", "Spring"),
    "usage": ("Casual", "Formal", "Sports", "Ethnic"),
}


def head_output_name(attribute: str) -> str:
    """The ONNX output name of a tiny classifier head (deliberately not the attribute itself)."""
    return f"probs_{attribute}"


def _pooled_features(height: int, width: int, nodes: list[onnx.NodeProto]) -> tuple[str, int]:
    """Add nodes NHWC image -> (N, F) pooled colours; returns the output name and F."""
    kh, kw = max(1, height // GRID), max(1, width // GRID)
    out_h, out_w = (height - kh) // kh + 1, (width - kw) // kw + 1
    nodes.append(helper.make_node("Transpose", [INPUT_NAME], ["nchw"], perm=[0, 3, 1, 2]))
    nodes.append(helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[kh, kw], strides=[kh, kw]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
    # Centre the colours (inputs are in [0, 1]) so the weights see differences between images, not their mean.
    nodes.append(helper.make_node("Sub", ["flat", "half"], ["features"]))
    return "features", 3 * out_h * out_w


def _input_info(height: int, width: int, batch: int | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch or "batch", height, width, 3])


def _save(graph: onnx.GraphProto, model_dir: Path) -> str:
    graph.initializer.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tiny_models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(model_dir / MODEL_FILE))
    return file_sha256(model_dir / MODEL_FILE)


def _input_spec(height: int, width: int) -> InputSpec:
    return InputSpec(name=INPUT_NAME, height=height, width=width, scale=1.0 / 255.0, resize="stretch")


def write_tiny_classifier(
    model_dir: str | os.PathLike[str],
    heads: Mapping[str, Sequence[str]] | None = None,
    height: int = 80,
    width: int = 60,
    *,
    name: str = "tiny-classifier",
    version: str = "tiny-1",
    softmax: bool = True,
    batch: int | None = None,
    seed: int = 7,
) -> Path:
    """Write a multi-head classifier (one softmax output per attribute) and its model.json; returns model_dir.

    `softmax=False` exports raw logits and `batch` fixes the batch size: both break the contract on purpose.
    """
    model_dir = Path(model_dir)
    heads = {attr: tuple(labels) for attr, labels in (heads or DEFAULT_HEADS).items()}
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    features, size = _pooled_features(height, width, nodes)
    initializers, outputs = [], []
    for attribute, labels in heads.items():
        weights = rng.normal(0.0, 1.0, size=(size, len(labels))).astype(np.float32)
        bias = rng.normal(0.0, 0.5, size=(len(labels),)).astype(np.float32)
        w_name, b_name, out = f"w_{attribute}", f"b_{attribute}", head_output_name(attribute)
        initializers += [numpy_helper.from_array(weights, w_name), numpy_helper.from_array(bias, b_name)]
        logits = f"logits_{attribute}" if softmax else out
        nodes.append(helper.make_node("Gemm", [features, w_name, b_name], [logits]))
        if softmax:
            nodes.append(helper.make_node("Softmax", [logits], [out], axis=-1))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch or "batch", len(labels)]))
    graph = helper.make_graph(nodes, name, [_input_info(height, width, batch)], outputs, initializers)
    sha = _save(graph, model_dir)
    ModelSpec(
        name=name,
        kind="classifier",
        version=version,
        onnx_sha256=sha,
        input=_input_spec(height, width),
        outputs=tuple(
            OutputHead(name=head_output_name(attr), attribute=attr, labels=tuple(labels))
            for attr, labels in heads.items()
        ),
        metrics={"note": "tiny test model, untrained"},
    ).write(model_dir)
    return model_dir


def write_tiny_embedder(
    model_dir: str | os.PathLike[str],
    dim: int = 16,
    version: str = "tiny-1",
    *,
    height: int = 80,
    width: int = 60,
    name: str = "tiny-embedder",
    seed: int = 11,
) -> Path:
    """Write an embedder (a fixed linear projection of pooled colours to `dim`) and its model.json."""
    model_dir = Path(model_dir)
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    features, size = _pooled_features(height, width, nodes)
    weights = rng.normal(0.0, 1.0, size=(size, dim)).astype(np.float32)
    nodes.append(helper.make_node("MatMul", [features, "projection"], ["embedding"]))
    graph = helper.make_graph(
        nodes,
        name,
        [_input_info(height, width, None)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(weights, "projection")],
    )
    sha = _save(graph, model_dir)
    ModelSpec(
        name=name,
        kind="embedder",
        version=version,
        onnx_sha256=sha,
        input=_input_spec(height, width),
        embedding=EmbeddingSpec(output="embedding", dim=dim),
        metrics={"note": "tiny test model, untrained"},
    ).write(model_dir)
    return model_dir


#: The query vocabulary of the tiny text model: a few terms as training would write them.
TINY_TERMS = (
    Term("tshirt", "articleType", "Tshirts", 0.97, 700),
    Term("tee", "articleType", "Tshirts", 0.9, 0),
    Term("jean", "articleType", "Jeans", 0.98, 600),
    Term("saree", "articleType", "Sarees", 0.99, 400),
    Term("sari", "articleType", "Sarees", 0.9, 0),
    Term("kurta", "articleType", "Kurtas", 0.99, 1500),
    Term("red", "baseColour", "Red", 0.92, 2800),
    Term("blue", "baseColour", "Blue", 0.6, 6000),
    Term("navy blue", "baseColour", "Navy Blue", 0.93, 1600),
    Term("white", "baseColour", "White", 0.45, 5000),
    Term("men", "gender", "Men", 0.98, 19000),
    Term("women", "gender", "Women", 0.99, 13000),
    Term("formal", "usage", "Formal", 0.6, 700),
)


def write_tiny_text_embedder(
    model_dir: str | os.PathLike[str],
    target: ModelSpec | tuple[str, str] = ("tiny-embedder", "tiny-1"),
    dim: int = 16,
    *,
    version: str = "tiny-text-1",
    buckets: int = 512,
    seed: int = 13,
) -> Path:
    """Write a text embedder (the L2-normalised mean of fixed random n-gram vectors) for the image embedder `target`
    (a ModelSpec, or (name, version)), with TINY_TERMS as its vocabulary."""
    model_dir = Path(model_dir)
    name, target_version = (target.name, target.version) if isinstance(target, ModelSpec) else target
    rng = np.random.default_rng(seed)
    table = rng.normal(0.0, 1.0, size=(buckets + 1, dim)).astype(np.float32)
    table[0] = 0.0
    nodes = [
        helper.make_node("Gather", ["table", "tokens"], ["vectors"]),
        helper.make_node("Greater", ["tokens", "zero_i"], ["is_token"]),
        helper.make_node("Cast", ["is_token"], ["mask2"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask2", "axis2"], ["mask"]),
        helper.make_node("Mul", ["vectors", "mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask2", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["safe_count"]),
        helper.make_node("Div", ["total", "safe_count"], ["mean"]),
        helper.make_node("Mul", ["mean", "mean"], ["squares"]),
        helper.make_node("ReduceSum", ["squares", "axis1"], ["sum_squares"], keepdims=1),
        helper.make_node("Add", ["sum_squares", "epsilon"], ["safe_squares"]),
        helper.make_node("Sqrt", ["safe_squares"], ["norm"]),
        helper.make_node("Div", ["mean", "norm"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-text-embedder",
        [helper.make_tensor_value_info("tokens", TensorProto.INT32, ["batch", "length"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array(0, dtype=np.int32), "zero_i"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
            numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "epsilon"),
        ],
    )
    sha = _save(graph, model_dir)
    known = {w: 10 for t in TINY_TERMS for w in t.phrase.split()} | {"shirt": 50, "puma": 40, "kurti": 30}
    TextModelSpec(
        name="tiny-text-embedder",
        version=version,
        onnx_sha256=sha,
        input="tokens",
        tokenizer=TokenizerSpec(buckets=buckets),
        embedding=EmbeddingSpec(output="embedding", dim=dim),
        target=Target(name, target_version),
        terms=TINY_TERMS,
        known_words=known,
        metrics={"note": "tiny test model, untrained"},
    ).write(model_dir)
    return model_dir


def write_tiny_one_pass(
    root: str | os.PathLike[str], *, int8: bool = False, embedder_version: str = "tiny-1"
) -> tuple[Path, Path]:
    """A tiny classifier and embedder sharing their trunk (the pooled colours), and the classifier's one-pass
    variant (its heads and the embedder's vector from one run) listed in its model.json, as
    `python -m training quantize` writes it; `int8` adds int8 variants of both files, calibrated on random photos.
    Returns (classifier_dir, embedder_dir)."""
    root = Path(root)
    classifier = write_tiny_classifier(root / "classifier")
    embedder = write_tiny_embedder(root / "embedder", version=embedder_version)
    one_pass = quantize.add_one_pass(classifier, embedder)
    listed = [one_pass]
    if int8:
        photos = np.random.default_rng(3).integers(0, 256, size=(32, 80, 60, 3), dtype=np.uint8)
        made = quantize.int8_files(classifier, embedder, one_pass, photos, quantize.PLANS[0])
        for float_file, (variant, _) in made.items():
            if float_file.parent == classifier:
                listed.append(quantize.int8_variant(classifier, variant, {}))
    quantize.write_variants(classifier, listed)
    return classifier, embedder
