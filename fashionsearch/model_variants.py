"""The files a model folder serves from: model.onnx, and the variants model.json lists beside it.

A variant is another ONNX file of the same model (same name, version, input and heads): eight-bit weights and
activations (`precision: int8`), or the classifier with the embedder's projection on its trunk (`embedding`), so
one inference gives both the attributes and the search vector. model.json gains only the `variants` list:

    "variants": [{"file": "model.int8.onnx", "sha256": "...", "precision": "int8",
                  "cpu_features": ["avx512_vnni", "avx_vnni"]},
                 {"file": "with-embedder.onnx", "sha256": "...", "precision": "float",
                  "embedding": {"output": "embedding", "dim": 32, "distance": "euclid",
                                "model": {"name": "embedder", "version": "8", "onnx_sha256": "..."},
                                "trunk_sha256": "..."}}]

`cpu_features`: the variant is fast only on a CPU with one of these (/proc/cpuinfo flags); int8 without 8-bit dot
products can be slower than float. `choose()` picks the file a service loads from its *_PRECISION setting
(auto, int8 or float) and whether it wants the embedding output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fashionsearch.model_contract import MODEL_FILE, EmbeddingSpec, ModelContractError, ModelSpec

PRECISIONS = ("auto", "int8", "float")
#: 8-bit dot-product instructions (AVX-512 VNNI since 2019's Cascade Lake, AVX-VNNI since Alder Lake).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class EmbedderRef:
    """The embedder whose projection a combined variant carries: its vectors are that model's vectors."""

    name: str
    version: str
    onnx_sha256: str

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Variant:
    file: str
    sha256: str
    precision: str = "float"
    cpu_features: tuple[str, ...] = ()
    embedding: EmbeddingSpec | None = None
    embedder: EmbedderRef | None = None
    trunk_sha256: str = ""
    #: How the variant compares with float (training/quantize.py writes it; serving does not read it).
    parity: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Variant:
        try:
            precision = raw.get("precision", "float")
            if precision not in ("int8", "float"):
                raise ModelContractError(f"variant {raw.get('file')!r}: precision must be int8 or float")
            emb = raw.get("embedding")
            embedding = embedder = None
            if emb:
                embedding = EmbeddingSpec(emb["output"], int(emb["dim"]), emb.get("distance", "euclid"))
                model = emb["model"]
                embedder = EmbedderRef(model["name"], str(model["version"]), model["onnx_sha256"])
            return cls(
                file=raw["file"],
                sha256=raw["sha256"],
                precision=precision,
                cpu_features=tuple(raw.get("cpu_features", ())),
                embedding=embedding,
                embedder=embedder,
                trunk_sha256=(emb or {}).get("trunk_sha256", ""),
                parity=dict(raw.get("parity", {})),
            )
        except (KeyError, TypeError) as bad:
            raise ModelContractError(f"model.json has a malformed variant {dict(raw)!r}: {bad!r}") from None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"file": self.file, "sha256": self.sha256, "precision": self.precision}
        if self.cpu_features:
            data["cpu_features"] = list(self.cpu_features)
        if self.embedding is not None and self.embedder is not None:
            data["embedding"] = {
                "output": self.embedding.output,
                "dim": self.embedding.dim,
                "distance": self.embedding.distance,
                "model": {
                    "name": self.embedder.name,
                    "version": self.embedder.version,
                    "onnx_sha256": self.embedder.onnx_sha256,
                },
                "trunk_sha256": self.trunk_sha256,
            }
        if self.parity:
            data["parity"] = dict(self.parity)
        return data

    def describe(self) -> str:
        one_pass = f", with the vectors of {self.embedder.identity}" if self.embedder else ""
        return f"{self.file} ({self.precision}{one_pass})"


def variants(spec: ModelSpec) -> list[Variant]:
    """model.onnx (float, as model.json's onnx_sha256 says) first, then the listed variants."""
    raw = spec.extra.get("variants", [])
    if not isinstance(raw, list):
        raise ModelContractError("model.json's variants must be a list")
    listed = [Variant.from_dict(item) for item in raw]
    files = [MODEL_FILE] + [v.file for v in listed]
    if len(set(files)) != len(files) or any("/" in f or f.startswith(".") for f in files):
        raise ModelContractError(f"model.json's variants must name distinct files in the model folder, got {files}")
    return [Variant(MODEL_FILE, spec.onnx_sha256), *listed]


def find(spec: ModelSpec, file: str) -> Variant:
    """The variant of `file` (model.onnx included); ModelContractError when model.json does not list it."""
    for variant in variants(spec):
        if variant.file == file:
            return variant
    raise ModelContractError(f"{spec.identity}'s model.json lists no file {file!r}")


def cpu_flags(path: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags (empty when /proc/cpuinfo cannot be read, as on macOS: then nothing needs them)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def choose(
    spec: ModelSpec, precision: str, *, embedding: bool = False, flags: frozenset[str] | None = None
) -> tuple[Variant, str]:
    """The variant to serve and why (for the start-up log).

    `embedding`: prefer a variant that also gives the embedder's vectors (one pass); without one, the plain model.
    `precision`: "float" and "int8" force it (int8 without an int8 variant is an error); "auto" takes int8 when the
    CPU has one of the variant's cpu_features, float otherwise.
    """
    if precision not in PRECISIONS:
        raise ModelContractError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    every = variants(spec)
    combined = [v for v in every if v.embedding is not None]
    pool = combined if embedding and combined else [v for v in every if v.embedding is None]
    floats = [v for v in pool if v.precision == "float"]
    int8s = [v for v in pool if v.precision == "int8"]
    if precision == "int8":
        if not int8s:
            raise ModelContractError(f"{spec.identity} has no int8 variant in model.json (PRECISION=int8)")
        return int8s[0], "int8 forced by the PRECISION setting"
    if precision == "float" or not int8s:
        if not floats:  # only an int8 combined variant: the plain float model
            return every[0], "float: no float variant with the embedding"
        why = "float forced by the PRECISION setting" if precision == "float" else "float: no int8 variant"
        return floats[0], why
    flags = cpu_flags() if flags is None else flags
    fast = [v for v in int8s if not v.cpu_features or flags & set(v.cpu_features)]
    if fast:
        found = sorted(flags & set(fast[0].cpu_features))
        return fast[0], f"int8: the CPU has {', '.join(found) or 'what it needs'}"
    needed = " or ".join(int8s[0].cpu_features)
    return (floats or every)[0], f"float: the CPU lacks {needed}, where int8 can be slower than float"
