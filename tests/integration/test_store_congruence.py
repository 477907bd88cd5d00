"""The same writes and searches against Qdrant Edge, qdrant-client (:memory:) and the NumPy reference agree."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient

from fashionsearch.store import EmbedderIdentity, StoredPoint, VectorIndex
from fashionsearch.store.brute import BruteForceIndex
from fashionsearch.store.edge import EdgeIndex
from fashionsearch.store.qdrant_server import QdrantServerIndex

pytestmark = [
    pytest.mark.integration,
    # qdrant-client's local mode warns that payload indexes and search params do nothing there; the adapter sets
    # them for the server it mirrors.
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

DIM = 16
EMBEDDER = EmbedderIdentity(model="tiny-embedder", version="1")
VALUES = {
    "gender": ["Men", "Women", "Boys", "Girls", "Unisex"],
    "masterCategory": ["Apparel", "Accessories", "Footwear"],
    "subCategory": ["Topwear", "Bottomwear", "Shoes", "Watches", "Bags"],
    "articleType": ["Tshirts", "Shirts", "Jeans", "Casual Shoes", "Watches", "Handbags"],
    "baseColour": ["Black", "White", "Blue", "Navy Blue", "Red"],
    "season": ["Summer", "Winter", "Fall", "Spring"],
    "usage": ["Casual", "Formal", "Sports"],
}


def _payload(rng: random.Random, pid: int) -> dict:
    payload = {field: rng.choice(values) for field, values in VALUES.items()}
    payload.update(
        name=f"Brand {payload['gender']} {payload['articleType']} {pid}",
        year=2010 + pid % 10,
        image=f"images/{pid}.jpg",
    )
    return payload


def _points(rng: random.Random, nprng: np.random.Generator, ids: list[int]) -> list[StoredPoint]:
    return [StoredPoint(id=i, vector=nprng.normal(size=DIM).astype(np.float32), payload=_payload(rng, i)) for i in ids]


@pytest.fixture
def indexes(tmp_path):
    made: dict[str, VectorIndex] = {
        "edge": EdgeIndex(tmp_path / "edge", "catalogue", search_threads=1),
        "qdrant-client": QdrantServerIndex(QdrantClient(":memory:"), "catalogue"),
        "brute": BruteForceIndex(),
    }
    yield made
    for index in made.values():
        index.close()


def _apply(indexes: dict[str, VectorIndex], op: str, *args) -> list:
    return [getattr(index, op)(*args) for index in indexes.values()]


def _assert_same(results: dict[str, list], label: str) -> None:
    reference = results["brute"]
    for name, hits in results.items():
        assert [h.id for h in hits] == [h.id for h in reference], f"{label}: {name} ids differ"
        np.testing.assert_allclose(
            [h.distance for h in hits],
            [h.distance for h in reference],
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{label}: {name} distances differ",
        )
        assert [dict(h.payload) for h in hits] == [dict(h.payload) for h in reference], f"{label}: {name} payloads"


def test_adapters_agree_after_upserts_deletes_and_reupserts(indexes):
    rng, nprng = random.Random(7), np.random.default_rng(7)
    _apply(indexes, "ensure_collection", DIM, EMBEDDER)
    first = _points(rng, nprng, list(range(1, 401)))
    for start in range(0, len(first), 100):
        _apply(indexes, "upsert", first[start : start + 100])
    deleted = _apply(indexes, "delete", list(range(1, 401, 7)) + [99999])
    assert all(d == deleted[0] for d in deleted) and 99999 not in deleted[0]
    # Re-upsert: some deleted ids come back with new vectors, some live ids get new vectors and payloads.
    _apply(indexes, "upsert", _points(rng, nprng, list(range(1, 120, 7)) + list(range(200, 260))))
    counts = _apply(indexes, "count")
    assert len(set(counts)) == 1, counts

    queries = nprng.normal(size=(12, DIM)).astype(np.float32)
    cases: list[tuple[str, dict | None, tuple[int, ...]]] = [
        ("unfiltered", None, ()),
        ("subCategory", {"subCategory": "Topwear"}, ()),
        ("two fields", {"gender": "Men", "masterCategory": "Apparel"}, ()),
        ("every field", {f: v[0] for f, v in VALUES.items()}, ()),
        ("exclude", None, (3, 5, 250)),
        ("filter+exclude", {"articleType": "Shirts"}, (10, 11)),
        ("no match", {"baseColour": "Chartreuse"}, ()),
        ("any of", {"articleType": ["Shirts", "Jeans"], "season": ("Summer", "Fall", "Summer")}, ()),
        ("any of+exclude", {"gender": ["Men", "Boys"]}, (1, 2, 8)),
    ]
    compared = 0
    for qi, query in enumerate(queries):
        for label, filters, exclude in cases:
            results = {name: index.search(query, 5, filters, exclude) for name, index in indexes.items()}
            _assert_same(results, f"query {qi} {label}")
            compared += 1
    # SearchById-style: query with a stored vector, excluding that item.
    stored = indexes["brute"].retrieve([42])[0]
    results = {name: index.search(stored.vector, 5, None, (42,)) for name, index in indexes.items()}
    _assert_same(results, "by id")
    assert 42 not in [h.id for h in results["edge"]]
    assert compared == 12 * len(cases)


def test_distance_is_euclidean_not_squared(indexes):
    _apply(indexes, "ensure_collection", 2, EMBEDDER)
    _apply(
        indexes,
        "upsert",
        [
            StoredPoint(id=1, vector=np.array([3.0, 4.0]), payload={"gender": "Men"}),
            StoredPoint(id=2, vector=np.array([1.0, 1.0]), payload={"gender": "Women"}),
        ],
    )
    for name, index in indexes.items():
        hits = index.search(np.zeros(2, np.float32), 5)
        assert [h.id for h in hits] == [2, 1], name
        assert hits[0].distance == pytest.approx(2**0.5, rel=1e-6), name
        assert hits[1].distance == pytest.approx(5.0, rel=1e-6), name


def test_retrieve_returns_vectors_and_payloads_alike(indexes):
    rng, nprng = random.Random(1), np.random.default_rng(1)
    _apply(indexes, "ensure_collection", DIM, EMBEDDER)
    _apply(indexes, "upsert", _points(rng, nprng, [5, 6, 7]))
    got = {name: index.retrieve([7, 404, 5]) for name, index in indexes.items()}
    for name, points in got.items():
        assert [p.id for p in points] == [7, 5], name
        for p, ref in zip(points, got["brute"], strict=True):
            np.testing.assert_allclose(p.vector, ref.vector, rtol=1e-6)
            assert dict(p.payload) == dict(ref.payload)


# Random sequences of upserts (new and existing ids), deletes and filtered searches: every adapter answers alike.
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.lists(st.integers(1, 40), min_size=1, max_size=12)),
        st.tuples(st.just("delete"), st.lists(st.integers(1, 45), min_size=1, max_size=6)),
        st.tuples(
            st.just("search"),
            st.integers(1, 8),
            st.dictionaries(st.sampled_from(["gender", "season", "usage"]), st.just(None), max_size=2),
            st.lists(st.integers(1, 40), max_size=3),
        ),
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def small_indexes(tmp_path_factory):
    """One set of 8-dim collections for all the random sequences (creating an Edge shard takes ~1 s)."""
    made: dict[str, VectorIndex] = {
        "edge": EdgeIndex(tmp_path_factory.mktemp("edge"), "catalogue", search_threads=1),
        "qdrant-client": QdrantServerIndex(QdrantClient(":memory:"), "catalogue"),
        "brute": BruteForceIndex(),
    }
    _apply(made, "ensure_collection", 8, EMBEDDER)
    yield made
    for index in made.values():
        index.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, seed=st.integers(0, 2**32 - 1))
def test_random_operation_sequences_agree(small_indexes, ops, seed):
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    made = small_indexes
    _apply(made, "delete", list(range(1, 46)))
    for op in ops:
        if op[0] == "upsert":
            points = [
                StoredPoint(id=i, vector=nprng.normal(size=8).astype(np.float32), payload=_payload(rng, i))
                for i in dict.fromkeys(op[1])
            ]
            _apply(made, "upsert", points)
        elif op[0] == "delete":
            deleted = _apply(made, "delete", op[1])
            assert all(d == deleted[0] for d in deleted)
        else:
            _, top_k, fields, exclude = op
            filters = {f: rng.sample(VALUES[f], 2) for f in fields}
            query = nprng.normal(size=8).astype(np.float32)
            results = {name: index.search(query, top_k, filters, exclude) for name, index in made.items()}
            _assert_same(results, f"ops {ops}")
        counts = _apply(made, "count")
        assert len(set(counts)) == 1, counts
