"""The model contract: `model.json` beside `model.onnx`, and the one preprocessing function.

Training writes the file, serving and evaluation read it. Everything that turns a decoded RGB image into the
model's input tensor lives in `preprocess()`, so serving and training evaluation cannot drift apart; a detector's
boxes map back to the photo through `letterbox()`, the same geometry `preprocess()` used (fashionsearch/detection.py).
The JSON may carry more fields than listed here; unknown fields are kept in `extra` and written back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from fashionsearch.parsing import parse_json

MODEL_FILE = "model.onnx"
SPEC_FILE = "model.json"

KINDS = ("classifier", "embedder", "detector")
RESIZE_MODES = ("stretch", "pad")


class ModelContractError(ValueError):
    """model.json is missing, malformed, or does not describe its model.onnx."""


@dataclass(frozen=True)
class InputSpec:
    """How an RGB image becomes the model input: pixel x becomes (x*scale - mean)/std per channel."""

    name: str
    height: int
    width: int
    scale: float = 1.0 / 255.0
    # Three values each; model.json may say otherwise, which validation reports.
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize: Literal["stretch", "pad"] = "stretch"
    pad_value: float | None = None
    channels: int = 3
    layout: str = "NHWC"
    color: str = "RGB"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("input.name is empty")
        if not (isinstance(self.height, int) and isinstance(self.width, int) and self.height > 0 and self.width > 0):
            problems.append(f"input.height/width must be positive integers, got {self.height}x{self.width}")
        if self.channels != 3:
            problems.append(f"input.channels must be 3, got {self.channels}")
        if self.layout != "NHWC":
            problems.append(f"input.layout must be 'NHWC', got {self.layout!r}")
        if self.color != "RGB":
            problems.append(f"input.color must be 'RGB', got {self.color!r}")
        if self.dtype != "float32":
            problems.append(f"input.dtype must be 'float32', got {self.dtype!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append("input.mean and input.std need 3 values (one per channel)")
        elif any(not math.isfinite(s) or s == 0 for s in self.std):
            problems.append(f"input.std values must be finite and non-zero, got {list(self.std)}")
        if not math.isfinite(self.scale) or self.scale == 0:
            problems.append(f"input.scale must be finite and non-zero, got {self.scale}")
        if self.resize not in RESIZE_MODES:
            problems.append(f"input.resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.resize == "pad" and self.pad_value is None:
            problems.append("input.pad_value is required when input.resize is 'pad'")
        if problems:
            raise ModelContractError("; ".join(problems))


@dataclass(frozen=True)
class OutputHead:
    """One classifier head: an ONNX output holding softmax probabilities over `labels`."""

    name: str
    attribute: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class EmbeddingSpec:
    """The embedder's output vector."""

    output: str
    dim: int
    distance: str = "euclid"


@dataclass(frozen=True)
class DetectionGroup:
    """One heatmap channel of a detector: a coarse product group and the catalogue labels it covers."""

    name: str
    sub_categories: tuple[str, ...] = ()
    #: Only when a group needs a finer cut than subCategory (optional in model.json).
    article_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectionSpec:
    """A detector's outputs (CenterNet-style, one scale) and its post-processing (DETECTOR_CONTRACT.md)."""

    heatmap: str
    box_size: str
    offset: str
    groups: tuple[DetectionGroup, ...]
    stride: int = 8
    score_threshold: float = 0.3
    max_detections: int = 50
    nms_iou: float = 0.6
    #: Serve the flip test (fashionsearch/detection.py `run_detector`): the photo and its mirror image in one model
    #: run, their maps averaged. Off in files written before it existed.
    flip_test: bool = False
    #: The score threshold chosen for the flip test's averaged maps (tune-detector --flip-test on); None: the flip
    #: test uses score_threshold too.
    flip_test_score_threshold: float | None = None

    def served_threshold(self, flip_test: bool) -> float:
        """The score threshold a detection needs to be served, with or without the flip test."""
        if flip_test and self.flip_test_score_threshold is not None:
            return self.flip_test_score_threshold
        return self.score_threshold

    def problems(self, input_spec: InputSpec) -> list[str]:
        """What is wrong with this section for a model with `input_spec`; empty when it is valid."""
        problems = []
        names = [self.heatmap, self.box_size, self.offset]
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != 3:
            problems.append(f"detection.heatmap/box_size/offset must be 3 distinct output names, got {names}")
        if not isinstance(self.stride, int) or self.stride <= 0:
            problems.append(f"detection.stride must be a positive integer, got {self.stride!r}")
        elif input_spec.height % self.stride or input_spec.width % self.stride:
            problems.append(
                f"input {input_spec.height}x{input_spec.width} is not a multiple of detection.stride {self.stride}"
            )
        if not self.groups:
            problems.append("detection.groups needs at least one group")
        group_names = [g.name for g in self.groups]
        if len(set(group_names)) != len(group_names) or not all(group_names):
            problems.append(f"detection.groups need distinct non-empty names, got {group_names}")
        for group in self.groups:
            if not group.sub_categories and not group.article_types:
                problems.append(f"detection group {group.name!r} lists no sub_categories or article_types")
        if not (isinstance(self.score_threshold, int | float) and 0.0 <= self.score_threshold <= 1.0):
            problems.append(f"detection.score_threshold must be in [0, 1], got {self.score_threshold!r}")
        if not isinstance(self.max_detections, int) or self.max_detections < 1:
            problems.append(f"detection.max_detections must be a positive integer, got {self.max_detections!r}")
        if not (isinstance(self.nms_iou, int | float) and 0.0 < self.nms_iou <= 1.0):
            problems.append(f"detection.nms_iou must be in (0, 1], got {self.nms_iou!r}")
        flip_test: object = self.flip_test  # model.json may hold anything here
        if not isinstance(flip_test, bool):
            problems.append(f"detection.flip_test must be true or false, got {flip_test!r}")
        flip_threshold = self.flip_test_score_threshold
        if flip_threshold is not None and not (isinstance(flip_threshold, int | float) and 0 <= flip_threshold <= 1):
            problems.append(f"detection.flip_test_score_threshold must be in [0, 1] or absent, got {flip_threshold!r}")
        if input_spec.resize != "pad":
            problems.append(
                f"a detector needs input.resize 'pad' (letterbox), so boxes map back to the photo; got "
                f"{input_spec.resize!r}"
            )
        return problems

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectionSpec:
        try:
            groups = tuple(
                DetectionGroup(
                    name=g["name"],
                    sub_categories=tuple(g.get("sub_categories", ())),
                    article_types=tuple(g.get("article_types", ())),
                )
                for g in data["groups"]
            )
            names = data["heatmap"], data["box_size"], data["offset"]
        except KeyError as missing:
            raise ModelContractError(f"model.json's detection section lacks the required field {missing}") from None
        return cls(
            heatmap=names[0],
            box_size=names[1],
            offset=names[2],
            groups=groups,
            stride=data.get("stride", cls.stride),
            score_threshold=data.get("score_threshold", cls.score_threshold),
            max_detections=data.get("max_detections", cls.max_detections),
            nms_iou=data.get("nms_iou", cls.nms_iou),
            flip_test=data.get("flip_test", cls.flip_test),
            flip_test_score_threshold=data.get("flip_test_score_threshold"),
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["groups"] = [
            {"name": g.name, "sub_categories": list(g.sub_categories)}
            | ({"article_types": list(g.article_types)} if g.article_types else {})
            for g in self.groups
        ]
        if self.flip_test_score_threshold is None:  # files that never chose one stay as they were written
            del data["flip_test_score_threshold"]
        return data


@dataclass(frozen=True)
class ModelSpec:
    """The parsed, validated model.json."""

    name: str
    kind: Literal["classifier", "embedder", "detector"]
    version: str
    onnx_sha256: str
    input: InputSpec
    outputs: tuple[OutputHead, ...] = ()
    embedding: EmbeddingSpec | None = None
    detection: DetectionSpec | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not self.name or not self.version:
            problems.append("name and version must be non-empty")
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "classifier":
            if not self.outputs:
                problems.append("a classifier needs at least one entry in outputs")
            for head in self.outputs:
                if not head.labels:
                    problems.append(f"output {head.name!r} ({head.attribute}) has no labels")
            attributes = [h.attribute for h in self.outputs]
            if len(set(attributes)) != len(attributes):
                problems.append(f"outputs repeat an attribute: {attributes}")
        if self.kind == "embedder":
            if self.embedding is None:
                problems.append("an embedder needs an embedding section")
            elif self.embedding.dim <= 0 or self.embedding.distance != "euclid":
                problems.append(
                    f"embedding needs dim > 0 and distance 'euclid', got {self.embedding.dim}, "
                    f"{self.embedding.distance!r}"
                )
        if self.kind == "detector":
            if self.detection is None:
                problems.append("a detector needs a detection section")
            else:
                problems.extend(self.detection.problems(self.input))
        if problems:
            raise ModelContractError(f"model {self.name!r}: " + "; ".join(problems))

    @property
    def identity(self) -> str:
        """`name:version`, the string stored beside vectors and shown in logs."""
        return f"{self.name}:{self.version}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        try:
            known = {"name", "kind", "version", "onnx_sha256", "input", "outputs", "embedding", "detection", "metrics"}
            raw_input = dict(data["input"])
            input_spec = InputSpec(
                name=raw_input.pop("name"),
                height=raw_input.pop("height"),
                width=raw_input.pop("width"),
                scale=float(raw_input.pop("scale")),
                mean=tuple(float(v) for v in raw_input.pop("mean")),
                std=tuple(float(v) for v in raw_input.pop("std")),
                resize=raw_input.pop("resize"),
                pad_value=raw_input.pop("pad_value", None),
                channels=raw_input.pop("channels"),
                layout=raw_input.pop("layout"),
                color=raw_input.pop("color"),
                dtype=raw_input.pop("dtype"),
            )
            outputs = tuple(
                OutputHead(name=o["name"], attribute=o["attribute"], labels=tuple(o["labels"]))
                for o in data.get("outputs", ())
            )
            emb = data.get("embedding")
            embedding = (
                EmbeddingSpec(output=emb["output"], dim=int(emb["dim"]), distance=emb.get("distance", "euclid"))
                if emb
                else None
            )
            det = data.get("detection")
            detection = DetectionSpec.from_dict(det) if det else None
            return cls(
                name=data["name"],
                kind=data["kind"],
                version=str(data["version"]),
                onnx_sha256=data["onnx_sha256"],
                input=input_spec,
                outputs=outputs,
                embedding=embedding,
                detection=detection,
                metrics=dict(data.get("metrics", {})),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as missing:
            raise ModelContractError(f"model.json lacks the required field {missing}") from None
        except (TypeError, ValueError) as bad:
            if isinstance(bad, ModelContractError):
                raise
            raise ModelContractError(f"model.json has a malformed field: {bad}") from None

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str]) -> ModelSpec:
        """Read and validate `model_dir/model.json`."""
        return cls.from_dict(read_spec_file(model_dir))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "onnx_sha256": self.onnx_sha256,
            "input": dataclasses.asdict(self.input),
        }
        data["input"]["mean"] = list(self.input.mean)
        data["input"]["std"] = list(self.input.std)
        if self.input.pad_value is None:
            del data["input"]["pad_value"]
        if self.kind == "classifier":
            data["outputs"] = [
                {"name": h.name, "attribute": h.attribute, "labels": list(h.labels)} for h in self.outputs
            ]
        if self.embedding is not None:
            data["embedding"] = dataclasses.asdict(self.embedding)
        if self.detection is not None:
            data["detection"] = self.detection.to_dict()
        data["metrics"] = dict(self.metrics)
        data.update(self.extra)
        return data

    def write(self, model_dir: str | os.PathLike[str]) -> Path:
        """Write model.json atomically (a reader never sees half a file)."""
        return write_spec_file(model_dir, self.to_dict())


def read_spec_file(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object in `model_dir/model.json`, or ModelContractError saying why there is none."""
    path = Path(model_dir) / SPEC_FILE
    try:
        # parse_json: every way the text can break the json module (deep nesting, huge numbers, bytes that are not
        # UTF-8) is a ValueError, so each is this refusal rather than a RecursionError out of the service's start.
        data = parse_json(path.read_bytes())
    except FileNotFoundError:
        raise ModelContractError(f"no {SPEC_FILE} in {Path(model_dir)}") from None
    except ValueError as bad:
        raise ModelContractError(f"{path} is not valid JSON: {bad}") from None
    if not isinstance(data, dict):
        raise ModelContractError(f"{path} must hold a JSON object")
    return data


def write_spec_file(model_dir: str | os.PathLike[str], data: Mapping[str, Any], indent: int = 2) -> Path:
    """Write `data` as model_dir/model.json atomically (a reader never sees half a file)."""
    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SPEC_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=indent)
        out.write("\n")
    os.replace(tmp, target)
    return target


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 RGB array, got {array.dtype} {array.shape}")
    return array


@dataclass(frozen=True)
class Letterbox:
    """Where a photo lands inside the model input under `resize: pad`: at (left, top), resized to width x height."""

    left: int
    top: int
    width: int
    height: int


def letterbox(width: int, height: int, spec: InputSpec) -> Letterbox:
    """The placement `resize_to_input` gives a width x height photo ("pad": aspect kept, centred)."""
    if (height, width) == (spec.height, spec.width):
        return Letterbox(0, 0, width, height)
    ratio = min(spec.width / width, spec.height / height)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    return Letterbox((spec.width - new_w) // 2, (spec.height - new_h) // 2, new_w, new_h)


def resize_to_input(image: Image.Image | np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize one RGB image to the model's size as `spec.resize` says; returns uint8 HxWx3."""
    array = _to_rgb_array(image)
    h, w = array.shape[:2]
    if (h, w) == (spec.height, spec.width):
        return array
    pil = Image.fromarray(array)
    if spec.resize == "stretch":
        return np.asarray(pil.resize((spec.width, spec.height), Image.Resampling.BILINEAR), dtype=np.uint8)
    # "pad": keep the aspect ratio, centre the image, fill the rest with pad_value.
    box = letterbox(w, h, spec)
    resized = np.asarray(pil.resize((box.width, box.height), Image.Resampling.BILINEAR), dtype=np.uint8)
    assert spec.pad_value is not None  # guaranteed by InputSpec validation
    canvas = np.full((spec.height, spec.width, 3), np.uint8(round(spec.pad_value)), dtype=np.uint8)
    canvas[box.top : box.top + box.height, box.left : box.left + box.width] = resized
    return canvas


def normalize(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 (N, H, W, 3) at the model's size -> float32 model input."""
    scale = np.float32(spec.scale)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    # In place: the same three operations in the same order, without three temporary arrays. Broadcasting a
    # 3-vector makes NumPy loop 3 elements at a time (about 14x slower), so the operands are scalars: one when
    # the channels agree (the usual case), else one strided pass per channel. Both give the same bits.
    out = pixels.astype(np.float32)
    out *= scale
    if (mean == mean[0]).all() and (std == std[0]).all():
        out -= mean[0]
        out /= std[0]
        return out
    for c in range(out.shape[-1]):
        channel = out[..., c]
        channel -= mean[c]
        channel /= std[c]
    return out


def preprocess(images: Sequence[Image.Image | np.ndarray], spec: InputSpec) -> np.ndarray:
    """RGB images (PIL or uint8 HxWx3) -> float32 (N, H, W, 3), exactly as the model was trained to see them."""
    if len(images) == 0:
        return np.zeros((0, spec.height, spec.width, 3), dtype=np.float32)
    batch = np.stack([resize_to_input(img, spec) for img in images])
    return normalize(batch, spec)
