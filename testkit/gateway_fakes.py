"""Fakes for the gateway's ports, shared by the gateway unit tests."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np

from fashionsearch.classification import AttributePrediction, LabelScore
from fashionsearch.detection import BoxVerification, Detection
from fashionsearch.errors import FashionSearchError, InvalidArgument
from fashionsearch.text_query import QueryVocabulary
from services.gateway.domain import Classification, Embedding, FoundProducts, ModelId, TextEmbedding
from testkit.tiny_models import TINY_TERMS

CLASSIFIER_MODEL = ModelId("fake-classifier", "c1", "aa")
EMBEDDER_MODEL = ModelId("fake-embedder", "e1", "bb")
TEXT_MODEL = ModelId("fake-text", "t1", "cc")
#: The fake text model's reading of words: the tiny text model's terms, and a few more known words.
TEXT_VOCABULARY = QueryVocabulary(TINY_TERMS, {"shirt": 50, "t": 40, "puma": 20, "like": 5, "this": 5})
DIM = 4


def image(name: str) -> bytes:
    """Bytes the fakes treat as an image; anything starting with b"bad" is refused like an undecodable image."""
    return f"img:{name}".encode()


def vector_for(data: bytes) -> np.ndarray:
    digest = hashlib.sha256(data).digest()
    return np.frombuffer(digest[: 4 * DIM], dtype=np.uint32).astype(np.float32)[:DIM] / 2**32


class FakeClassifier:
    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.labels = labels or {
            "gender": "Men",
            "baseColour": "Navy Blue",
            "usage": "Casual",
            "articleType": "Shirts",
            "subCategory": "Topwear",
            "masterCategory": "Apparel",
        }
        self.error: FashionSearchError | None = None
        self.delay_s = 0.0
        self.calls = 0
        self.batches: list[int] = []
        self.cancelled = False
        #: One pass: answers carry this embedder's vectors (those FakeEmbedder gives), None = no vectors.
        self.vectors_of: ModelId | None = None

    async def classify(self, data: bytes) -> Classification:
        self.calls += 1
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        if data.startswith(b"bad"):
            raise InvalidArgument("image bytes are not a JPEG, PNG or WebP image")
        return self._answer(data)

    async def classify_batch(self, images: list[bytes]) -> list[Classification | FashionSearchError]:
        self.batches.append(len(images))
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        bad = InvalidArgument("image bytes are not a JPEG, PNG or WebP image")
        return [bad if data.startswith(b"bad") else self._answer(data) for data in images]

    def _answer(self, data: bytes) -> Classification:
        embedding = Embedding(vector_for(data), self.vectors_of) if self.vectors_of is not None else None
        return Classification.of(
            [
                AttributePrediction(attribute=k, labels=(LabelScore(v, 0.9), LabelScore("Other", 0.1)))
                for k, v in self.labels.items()
            ],
            model=CLASSIFIER_MODEL,
            embedding=embedding,
        )

    async def model(self) -> ModelId | None:
        return None if self.error else CLASSIFIER_MODEL


class FakeEmbedder:
    def __init__(self, model: ModelId = EMBEDDER_MODEL) -> None:
        self.model_id = model
        self.error: FashionSearchError | None = None
        self.vectors: dict[bytes, np.ndarray] = {}
        self.calls = 0
        self.batches: list[int] = []
        self.text_vectors: dict[str, np.ndarray] = {}
        self.text_queries: list[str] = []

    async def embed(self, data: bytes) -> Embedding:
        self.calls += 1
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        if data.startswith(b"bad"):
            raise InvalidArgument("image bytes are not a JPEG, PNG or WebP image")
        return Embedding(vector=self.vectors.get(data, vector_for(data)), model=self.model_id)

    async def embed_batch(self, images: list[bytes]) -> list[Embedding | FashionSearchError]:
        self.batches.append(len(images))
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        return [
            InvalidArgument("image bytes are not a JPEG, PNG or WebP image")
            if data.startswith(b"bad")
            else Embedding(vector=self.vectors.get(data, vector_for(data)), model=self.model_id)
            for data in images
        ]

    async def model(self) -> ModelId | None:
        return None if self.error else self.model_id

    async def embed_text(self, query: str) -> TextEmbedding:
        """The real query understanding over TINY_TERMS; the vector is set in text_vectors or derived from the query."""
        self.text_queries.append(query)
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        found = TEXT_VOCABULARY.understand(query)
        return TextEmbedding(
            vector=self.text_vectors.get(query, vector_for(query.encode())),
            terms=found.terms,
            unknown_words=found.unknown_words,
            word_count=found.word_count,
            model=TEXT_MODEL,
            image_model=self.model_id,
        )


def run_async(fn):
    """Run an async test function in a fresh event loop (the project has no asyncio pytest plugin)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


DETECTOR_MODEL = ModelId("fake-detector", "d1", "dd")


class FakeDetector:
    """Answers the detections it is given, for a photo of `size`, or raises `failure` (a detector down or slow);
    records the photos it was asked about and the flip test each call asked for."""

    def __init__(
        self,
        detections: tuple[Detection, ...] = (),
        size: tuple[int, int] = (300, 400),
        failure: FashionSearchError | None = None,
        verification: BoxVerification | None = None,
        score_threshold: float = 0.0,
    ) -> None:
        self.detections = detections
        self.size = size
        self.failure = failure
        #: Asked for candidates, all `detections` come with this rule; else those at or above `score_threshold`.
        self.verification = verification
        self.score_threshold = score_threshold
        self.photos: list[bytes] = []
        self.flip_tests: list[bool | None] = []

    async def detect(self, data: bytes, flip_test: bool | None = None, with_candidates: bool = False) -> FoundProducts:
        self.photos.append(data)
        self.flip_tests.append(flip_test)
        await asyncio.sleep(0)
        if self.failure is not None:
            raise self.failure
        if with_candidates and self.verification is not None:
            return FoundProducts(self.detections, self.size, DETECTOR_MODEL, self.verification, self.score_threshold)
        found = tuple(d for d in self.detections if d.score >= self.score_threshold)
        return FoundProducts(found, self.size, DETECTOR_MODEL, score_threshold=self.score_threshold)
