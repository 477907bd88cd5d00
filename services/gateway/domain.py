"""The gateway's domain types: what the use cases take and return, free of protobuf and gRPC."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashionsearch import classification
from fashionsearch.detection import BoxVerification, Detection
from fashionsearch.errors import FashionSearchError
from fashionsearch.store import EmbedderIdentity, Hit
from fashionsearch.text_query import QueryTerm as QueryTerm  # part of the gateway's domain vocabulary


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
class Classification(classification.Classification):
    """The classifier's answer as the gateway receives it: the prediction, with its name and keywords, and which
    model made it; with the photo's vector when the classifier computed it in the same pass (one pass)."""

    model: ModelId
    embedding: Embedding | None = None


@dataclass(frozen=True)
class Embedding:
    vector: np.ndarray
    model: ModelId


@dataclass(frozen=True)
class Analysis:
    """A photo's attributes and its vector (GatewayService.analyse): `classification` is None only where it was not
    asked for and the vector came from the embedder alone."""

    classification: Classification | None
    embedding: Embedding


@dataclass(frozen=True)
class TextEmbedding:
    """A text query's vector (in the image embedder's space) and what its words were read as."""

    vector: np.ndarray
    terms: tuple[QueryTerm, ...]
    unknown_words: tuple[str, ...]
    word_count: int
    model: ModelId
    #: The image embedder whose space the vector is in.
    image_model: ModelId


class TextMatch(enum.Enum):
    """How a text query finds products (mirrors the proto enum)."""

    VECTOR = "vector"
    FILTERS = "filters"
    BOTH = "both"


@dataclass(frozen=True)
class TextSearchOptions:
    """top_k None means the default; match None the measured default (services/gateway/words.py); filters must
    match as well as what the words name."""

    top_k: int | None = None
    match: TextMatch | None = None
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class TextSearchResult:
    hits: tuple[Hit, ...]
    terms: tuple[QueryTerm, ...]
    unknown_words: tuple[str, ...]
    applied_filters: Mapping[str, tuple[str, ...]]
    #: Why there are no hits, when there are none and it is not just an empty catalogue, or why words were set
    #: aside for an explicit filter on their field.
    reason: str
    text_model: ModelId | None
    embedder_model: ModelId | None


class FilterMode(enum.Enum):
    """How a search is filtered (mirrors the proto enum)."""

    PREDICTED_SUBCATEGORY = "predicted_subcategory"
    NONE = "none"
    EXPLICIT = "explicit"


class Crop(enum.Enum):
    """What of the photo a search reads (mirrors the proto enum)."""

    NONE = "none"
    AUTO = "auto"


#: crop=auto reads a product in a scene far better and a packshot as crop=none does (bench/outfit_search.py,
#: bench/README.md); best effort: without a detector, or with one down, the whole photo is read.
DEFAULT_CROP = Crop.AUTO


@dataclass(frozen=True)
class SearchOptions:
    """top_k None means the default; filters are only allowed with FilterMode.EXPLICIT; refine_text: words that
    refine a photo or item search ("" for none); crop: what of a photo is read (photo searches only)."""

    top_k: int | None = None
    mode: FilterMode = FilterMode.PREDICTED_SUBCATEGORY
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    refine_text: str = ""
    crop: Crop = DEFAULT_CROP


@dataclass(frozen=True)
class SearchResult:
    classification: Classification
    embedder_model: ModelId
    suggested_name: str
    keywords: tuple[str, ...]
    hits: tuple[Hit, ...]
    applied_filters: Mapping[str, tuple[str, ...]]
    refine_terms: tuple[QueryTerm, ...] = ()
    #: Why refine_text's words were set aside for an explicit filter, or left no product with the filters; "".
    reason: str = ""


@dataclass(frozen=True)
class FoundProducts:
    """The detector's answer: the products in a photo, boxes in pixels of the photo as sent (`size`), and the score
    a detection needs to be served (`score_threshold`). Asked for candidates, with the rule to verify them by
    (`verification`; the detections are then down to its candidate threshold)."""

    detections: tuple[Detection, ...]
    size: tuple[int, int]
    model: ModelId
    verification: BoxVerification | None = None
    score_threshold: float = 0.0


@dataclass(frozen=True)
class OutfitItem:
    """One product found in an outfit photo and the catalogue products most like it."""

    detection: Detection
    classification: Classification
    keywords: tuple[str, ...]
    hits: tuple[Hit, ...]
    applied_filters: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class OutfitResult:
    items: tuple[OutfitItem, ...]
    #: The photo's (width, height) as shown, the frame of the boxes.
    size: tuple[int, int]
    detector_model: ModelId
    embedder_model: ModelId | None
    refine_terms: tuple[QueryTerm, ...] = ()


@dataclass(frozen=True)
class SimilarResult:
    hits: tuple[Hit, ...]
    applied_filters: Mapping[str, tuple[str, ...]]
    refine_terms: tuple[QueryTerm, ...] = ()
    #: Why refine_text's words were set aside for an explicit filter, or left no product with the filters; "".
    reason: str = ""


@dataclass(frozen=True)
class CatalogueItem:
    id: int
    image: bytes
    payload: Mapping[str, Any] = field(default_factory=dict)
    #: The ingestion job's fingerprint of the item, stored under catalogue.CONTENT_HASH_KEY; "" when not given.
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
