"""The trunk two exported models share, and one ONNX model that runs it once for both.

The served embedder is the classifier's trunk plus a projection (training/recipes/pretrained.py), but the two are
exported as separate ONNX graphs whose tensor names differ. `shared_trunk` finds the common part by structure and
content: walking the embedder's graph in order from the input, a node belongs to the trunk when the classifier has
a node of the same operator and attributes on the same (already matched) tensors and on initializers with the same
bytes. The trunk's identity is a sha256 over those nodes and weights, so it names the trunk, not the files.

`combine` grafts the embedder's remaining nodes (the projection) onto the classifier's trunk: one graph with the
classifier's heads and the embedding output, run once per photo.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import onnx
from onnx import helper

#: The smallest share of the embedder's nodes a real trunk covers; below it the two models merely start alike.
MIN_SHARED_FRACTION = 0.5


class TrunkError(ValueError):
    """The two models do not share a trunk, or cannot be combined."""


@dataclass(frozen=True)
class SharedTrunk:
    """The embedder's tensors that the classifier computes too (embedder name -> classifier name)."""

    tensors: dict[str, str]
    nodes: int  # embedder nodes in the trunk
    sha256: str

    def fraction(self, embedder: onnx.ModelProto) -> float:
        return self.nodes / max(1, len(embedder.graph.node))


def _content(tensor: onnx.TensorProto) -> str:
    blob = onnx.numpy_helper.to_array(tensor)
    return hashlib.sha256(f"{blob.dtype}{blob.shape}".encode() + blob.tobytes()).hexdigest()


def _attributes(node: onnx.NodeProto) -> bytes:
    return b"".join(a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name))


def _key(node: onnx.NodeProto, inputs: list[str]) -> tuple[str, str, bytes, tuple[str, ...]]:
    return node.op_type, node.domain, _attributes(node), tuple(inputs)


def shared_trunk(classifier: onnx.ModelProto, embedder: onnx.ModelProto) -> SharedTrunk:
    """The part of `embedder` that `classifier` computes identically (see the module docstring)."""
    c_graph, e_graph = classifier.graph, embedder.graph
    if [i.name for i in c_graph.input] != [i.name for i in e_graph.input]:
        raise TrunkError("the two models have different inputs")
    c_weights = {t.name: "w:" + _content(t) for t in c_graph.initializer}
    e_weights = {t.name: "w:" + _content(t) for t in e_graph.initializer}
    # Every tensor is known by a structural key: the input by name, a weight by content, a node output by the key
    # of the node that makes it and its position.
    c_keys = dict(c_weights) | {i.name: "in:" + i.name for i in c_graph.input} | {"": ""}
    by_key: dict[str, str] = {}
    for node in c_graph.node:
        if not all(name in c_keys for name in node.input):
            continue  # consumes something made later (not topologically sorted): not a trunk node
        key = repr(_key(node, [c_keys[name] for name in node.input]))
        for position, output in enumerate(node.output):
            c_keys[output] = f"{hashlib.sha256(key.encode()).hexdigest()}:{position}"
            by_key.setdefault(c_keys[output], output)
    e_keys = dict(e_weights) | {i.name: "in:" + i.name for i in e_graph.input} | {"": ""}
    tensors = {i.name: i.name for i in e_graph.input}
    identity = hashlib.sha256()
    nodes = 0
    for node in e_graph.node:
        if not all(name in e_keys for name in node.input):
            continue
        key = repr(_key(node, [e_keys[name] for name in node.input]))
        outputs = [f"{hashlib.sha256(key.encode()).hexdigest()}:{p}" for p in range(len(node.output))]
        if not all(o in by_key for o in outputs):
            continue
        nodes += 1
        identity.update(key.encode())
        for name, structural in zip(node.output, outputs, strict=True):
            e_keys[name] = structural
            tensors[name] = by_key[structural]
    trunk = SharedTrunk(tensors=tensors, nodes=nodes, sha256=identity.hexdigest())
    if trunk.fraction(embedder) < MIN_SHARED_FRACTION:
        raise TrunkError(f"the models share {nodes} of the embedder's {len(e_graph.node)} nodes: not a common trunk")
    return trunk


def combine(classifier: onnx.ModelProto, embedder: onnx.ModelProto, prefix: str = "embedder/") -> onnx.ModelProto:
    """The classifier with the embedder's outputs added, computed from the classifier's copy of the trunk."""
    trunk = shared_trunk(classifier, embedder)
    c_graph, e_graph = classifier.graph, embedder.graph
    taken = {o.name for o in c_graph.output}
    clash = [o.name for o in e_graph.output if o.name in taken]
    if clash:
        raise TrunkError(f"both models have outputs named {clash}")

    def renamed(name: str) -> str:
        if name == "" or name in trunk.tensors:
            return trunk.tensors.get(name, name)
        return name if name in {o.name for o in e_graph.output} else prefix + name

    head_nodes = []
    for node in e_graph.node:
        if all(output in trunk.tensors for output in node.output):
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + node.name if node.name else ""
        del copy.input[:]
        copy.input.extend(renamed(n) for n in node.input)
        del copy.output[:]
        copy.output.extend(renamed(n) for n in node.output)
        head_nodes.append(copy)
    used = {name for node in head_nodes for name in node.input}
    weights = []
    for tensor in e_graph.initializer:
        if prefix + tensor.name in used:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            copy.name = prefix + tensor.name
            weights.append(copy)
    graph = helper.make_graph(
        list(c_graph.node) + head_nodes,
        c_graph.name,
        list(c_graph.input),
        list(c_graph.output) + list(e_graph.output),
        initializer=list(c_graph.initializer) + weights,
    )
    combined = helper.make_model(graph, opset_imports=list(classifier.opset_import), producer_name="fashionsearch")
    combined.ir_version = classifier.ir_version
    onnx.checker.check_model(combined)
    return combined


def trunk_end(classifier: onnx.ModelProto, embedder: onnx.ModelProto) -> set[str]:
    """The classifier's trunk tensors that anything beyond the trunk reads (in the classifier, or in the embedder's
    projection grafted by `combine`): where the heads begin."""
    trunk = shared_trunk(classifier, embedder)
    inside = set(trunk.tensors.values()) - {i.name for i in classifier.graph.input}
    mapped = {e: c for e, c in trunk.tensors.items()}
    heads = [n for n in classifier.graph.node if not set(n.output) <= inside]
    projection = [n for n in embedder.graph.node if not set(n.output) <= set(mapped)]
    read = {name for n in heads for name in n.input} | {mapped.get(name, "") for n in projection for name in n.input}
    return read & inside
