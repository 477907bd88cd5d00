"""The gateway's domain types: what the use cases take and return, free of protobuf and gRPC."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashionsearch.errors import FashionSearchError
from fashionsearch.store import EmbedderIdentity, Hit

#: Payload key of the content hash an ingestion job stores with each item (not a catalogue field).
CONTENT_HASH_KEY = "content_hash"


@dataclass(frozen=True)
class ModelId:
    """Which model answered: name, version and the sha256 of its ONNX file."""

    name: str
    version: str
    onnx_sha256: str = ""

    @property
    def identity(self) -> EmbedderIdentity:
        return EmbedderIdentity(model=self.name, version=self.version)


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


@dataclass(frozen=True)
class AttributePrediction:
    """The top labels of one classifier head, most probable first."""

    attribute: str
    labels: tuple[LabelScore, ...]

    @property
    def top(self) -> str | None:
        return self.labels[0].label if self.labels else None


@dataclass(frozen=True)
class Classification:
    attributes: tuple[AttributePrediction, ...]
    model: ModelId

    def top_labels(self) -> dict[str, str]:
        """attribute -> most probable label."""
        return {a.attribute: a.top for a in self.attributes if a.top is not None}


@dataclass(frozen=True)
class Embedding:
    vector: np.ndarray
    model: ModelId


class FilterMode(enum.Enum):
    """How a search is filtered (mirrors the proto enum)."""

    PREDICTED_SUBCATEGORY = "predicted_subcategory"
    NONE = "none"
    EXPLICIT = "explicit"


@dataclass(frozen=True)
class SearchOptions:
    """top_k None means the default; filters are only allowed with FilterMode.EXPLICIT."""

    top_k: int | None = None
    mode: FilterMode = FilterMode.PREDICTED_SUBCATEGORY
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class SearchResult:
    classification: Classification
    embedder_model: ModelId
    suggested_name: str
    keywords: tuple[str, ...]
    hits: tuple[Hit, ...]
    applied_filters: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class SimilarResult:
    hits: tuple[Hit, ...]
    applied_filters: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class CatalogueItem:
    id: int
    image: bytes
    payload: Mapping[str, Any] = field(default_factory=dict)
    #: The ingestion job's fingerprint of the item, stored under CONTENT_HASH_KEY; "" when not given.
    content_hash: str = ""


@dataclass(frozen=True)
class UpsertOutcome:
    """The result for one streamed item: error is None when it was stored."""

    id: int
    error: FashionSearchError | None = None


@dataclass(frozen=True)
class StoredItem:
    id: int
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Stats:
    item_count: int
    stored_embedder: EmbedderIdentity | None
    running_embedder: ModelId | None
    classifier: ModelId | None
    max_upsert_batch: int
    max_request_bytes: int
