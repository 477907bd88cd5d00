"""Loading an ONNX model together with its model.json, and refusing it when the two disagree.

`OnnxModel` owns the onnxruntime session. At load it checks the file's sha256, the input name, type and shape
and the output names and shapes against the spec, and raises one ModelContractError that lists every
difference, so a service refuses to start instead of serving wrong answers. `warm_up()` runs one inference and
checks the outputs (finite, softmax rows summing to 1 for a classifier, a detector's heatmap in [0, 1]) before
health says SERVING.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import onnxruntime as ort

from fashionsearch import metrics
from fashionsearch.model_contract import MODEL_FILE, ModelContractError, ModelSpec, file_sha256, preprocess
from fashionsearch.model_variants import EmbedderRef, Variant, choose

logger = logging.getLogger(__name__)

_DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


@dataclass(frozen=True)
class ModelIdentity:
    """Which model answered: logged at start and returned with every prediction."""

    name: str
    version: str
    sha256: str
    #: "float" or "int8": which of the model's files answered (model_variants.py).
    precision: str = "float"

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


def checked_onnx_file(model_dir: Path, expected_sha256: str, file: str = MODEL_FILE) -> tuple[Path, str]:
    """model_dir/file and its sha256; ModelContractError when it is missing or not the file model.json names."""
    onnx_path = model_dir / file
    if not onnx_path.is_file():
        raise ModelContractError(f"no {file} in {model_dir}")
    sha256 = file_sha256(onnx_path)
    if sha256 != expected_sha256:
        raise ModelContractError(
            f"{onnx_path} does not match {model_dir / 'model.json'}: onnx_sha256 expected {expected_sha256}, the file "
            f"has {sha256}"
        )
    return onnx_path, sha256


def open_session(
    onnx_path: Path, intra_op_threads: int, inter_op_threads: int, providers: Sequence[str] = _DEFAULT_PROVIDERS
) -> ort.InferenceSession:
    """An onnxruntime session with the services' settings; ModelContractError when onnxruntime cannot load it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; onnxruntime's warnings are noise in our logs
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=options, providers=list(providers))
    except Exception as bad:  # onnxruntime raises its own untyped errors
        raise ModelContractError(f"onnxruntime cannot load {onnx_path}: {bad}") from None


class OnnxModel:
    """An onnxruntime session whose input and outputs were checked against model.json."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        expected_kind: str | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        providers: Sequence[str] = _DEFAULT_PROVIDERS,
        precision: str = "float",
        embedding: bool = False,
    ) -> None:
        """`precision` (auto, int8, float) and `embedding` (prefer the variant that gives the embedder's vectors
        too) choose which of the folder's files is loaded (fashionsearch/model_variants.py)."""
        self.model_dir = Path(model_dir)
        self.spec = ModelSpec.load(self.model_dir)
        if expected_kind is not None and self.spec.kind != expected_kind:
            raise ModelContractError(
                f"{self.model_dir} holds a {self.spec.kind} ({self.spec.identity}), but a {expected_kind} is needed"
            )
        self.variant, self.variant_reason = choose(self.spec, precision, embedding=embedding)
        onnx_path, self.sha256 = checked_onnx_file(self.model_dir, self.variant.sha256, self.variant.file)

        self.session = open_session(onnx_path, intra_op_threads, inter_op_threads, providers)
        self.output_names = self._expected_outputs()
        problems = self._check_signature()
        if problems:
            raise ModelContractError(
                f"{onnx_path} does not match its model.json ({self.spec.identity}):\n  - " + "\n  - ".join(problems)
            )

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.spec.name, self.spec.version, self.sha256, self.variant.precision)

    @property
    def embedder(self) -> EmbedderRef | None:
        """The embedder whose vectors this file also computes (one pass), else None."""
        return self.variant.embedder

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input, as Pillow orders sizes."""
        return self.spec.input.width, self.spec.input.height

    def _expected_outputs(self) -> dict[str, tuple[int, ...]]:
        """ONNX output name -> its expected shape after the batch dimension."""
        outputs: dict[str, tuple[int, ...]]
        if self.spec.kind == "classifier":
            outputs = {head.name: (len(head.labels),) for head in self.spec.outputs}
        elif self.spec.kind == "detector":
            det = self.spec.detection
            assert det is not None  # guaranteed by ModelSpec validation
            grid = (self.spec.input.height // det.stride, self.spec.input.width // det.stride)
            outputs = {det.heatmap: (*grid, len(det.groups)), det.box_size: (*grid, 2), det.offset: (*grid, 2)}
        else:
            assert self.spec.embedding is not None  # guaranteed by ModelSpec validation
            outputs = {self.spec.embedding.output: (self.spec.embedding.dim,)}
        if self.variant.embedding is not None:
            outputs[self.variant.embedding.output] = (self.variant.embedding.dim,)
        return outputs

    def _check_signature(self) -> list[str]:
        problems: list[str] = []
        want = self.spec.input
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            problems.append(f"expected exactly 1 input {want.name!r}, the model has {[i.name for i in inputs]}")
        else:
            got = inputs[0]
            if got.name != want.name:
                problems.append(f"input name: expected {want.name!r}, the model has {got.name!r}")
            if got.type != "tensor(float)":
                problems.append(f"input {got.name!r} type: expected tensor(float), the model has {got.type}")
            expected_shape = ["batch", want.height, want.width, want.channels]
            if not shape_matches(got.shape, expected_shape):
                problems.append(
                    f"input {got.name!r} shape: expected [batch, {want.height}, {want.width}, {want.channels}] "
                    f"(NHWC, dynamic batch), the model has {list(got.shape)}"
                )

        available = {o.name: o for o in self.session.get_outputs()}
        for name, dims in self.output_names.items():
            output = available.get(name)
            if output is None:
                problems.append(f"output {name!r} is missing; the model's outputs are {sorted(available)}")
                continue
            if output.type != "tensor(float)":
                problems.append(f"output {name!r} type: expected tensor(float), the model has {output.type}")
            if not shape_matches(output.shape, ["batch", *dims]):
                expected = ", ".join(["batch", *map(str, dims)])
                problems.append(f"output {name!r} shape: expected [{expected}], the model has {list(output.shape)}")
        return problems

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One onnxruntime call for a preprocessed float32 (N, H, W, 3) batch; returns output name -> array."""
        want = self.spec.input
        expected = (want.height, want.width, want.channels)
        if batch.ndim != 4 or batch.shape[1:] != expected or batch.dtype != np.float32:
            raise ValueError(
                f"batch must be float32 (N, {want.height}, {want.width}, {want.channels}), "
                f"got {batch.dtype} {batch.shape}"
            )
        names = list(self.output_names)
        metrics.INFERENCE_BATCH_SIZE.labels(self.spec.kind).observe(len(batch))
        with metrics.timed(metrics.INFERENCE_SECONDS.labels(self.spec.kind)):
            results = self.session.run(names, {want.name: batch})
        return dict(zip(names, results, strict=True))

    def warm_up(self, batch_size: int = 1) -> None:
        """Run one inference on a grey batch and check what comes out; raises ModelContractError when wrong."""
        want = self.spec.input
        grey: np.ndarray = np.full((batch_size, want.height, want.width, want.channels), 128, dtype=np.float32)
        grey = (grey * np.float32(want.scale) - np.asarray(want.mean, np.float32)) / np.asarray(want.std, np.float32)
        outputs = self.run(grey.astype(np.float32))
        for name, array in outputs.items():
            expected = (batch_size, *self.output_names[name])
            if array.shape != expected:
                raise ModelContractError(f"warm-up: output {name!r} has shape {array.shape}, expected {expected}")
            if not np.all(np.isfinite(array)):
                raise ModelContractError(f"warm-up: output {name!r} holds NaN or infinite values")
            vectors = self.variant.embedding.output if self.variant.embedding is not None else None
            if self.spec.kind == "classifier" and name != vectors:
                sums = array.sum(axis=1)
                if np.any(array < -1e-6) or not np.allclose(sums, 1.0, atol=1e-3):
                    raise ModelContractError(
                        f"warm-up: output {name!r} is not a softmax (row sums {sums.tolist()}); "
                        "the contract needs probabilities"
                    )
            if self.spec.detection is not None and name == self.spec.detection.heatmap:
                if array.min() < 0 or array.max() > 1:
                    raise ModelContractError(
                        f"warm-up: heatmap {name!r} holds values outside [0, 1]; the contract needs the sigmoid "
                        "inside the graph"
                    )
        logger.info("warm-up passed for %s (%s)", self.spec.identity, self.variant.describe())


class OnnxAdapter:
    """The part every service's model adapter shares: the checked OnnxModel it owns, loading by kind, the model's
    identity and input size, and the warm-up. Subclasses set `kind` and add their own prediction method."""

    kind: ClassVar[str]

    def __init__(self, model: OnnxModel) -> None:
        self._model = model

    @classmethod
    def from_dir(
        cls,
        model_dir: str | os.PathLike[str],
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        precision: str = "float",
        embedding: bool = False,
    ) -> Self:
        model = OnnxModel(
            model_dir,
            expected_kind=cls.kind,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            precision=precision,
            embedding=embedding,
        )
        return cls(model)

    @property
    def variant(self) -> Variant:
        """The file this adapter serves from, and (variant_reason) why it was chosen."""
        return self._model.variant

    @property
    def variant_reason(self) -> str:
        return self._model.variant_reason

    @property
    def identity(self) -> ModelIdentity:
        return self._model.identity

    @property
    def input_size(self) -> tuple[int, int]:
        return self._model.input_size

    def warm_up(self, batch_size: int = 1) -> None:
        self._model.warm_up(batch_size)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One decoded RGB image (uint8 HxWx3) -> its float32 (H, W, 3) model input; rows of a batch stack these.

        The same bits as that image's row of `preprocess()` on a whole batch (every step is per pixel).
        """
        row: np.ndarray = preprocess([image], self._model.spec.input)[0]
        return row


def shape_matches(actual: Sequence[object], expected: Sequence[object]) -> bool:
    """Compare an onnxruntime shape (ints, names or None for dynamic dims) with the expected one.

    "batch" in `expected` must be dynamic in the model, so batches of any size can run; other dims must be
    equal when the model fixes them (a dynamic dim there is accepted and checked at warm-up).
    """
    if len(actual) != len(expected):
        return False
    for got, want in zip(actual, expected, strict=True):
        if want == "batch":
            if isinstance(got, int):
                return False
        elif isinstance(got, int) and got != want:
            return False
    return True
