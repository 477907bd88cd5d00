"""Gateway use cases with fake classifier/embedder and the in-memory reference store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace

import numpy as np
import pytest

from fashionsearch.classification import LabelScore
from fashionsearch.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FashionSearchError,
    InvalidArgument,
    NotFound,
    StoreError,
    StoreFullError,
    Unavailable,
)
from fashionsearch.store import StoreUnavailableError
from fashionsearch.store.base import EmbedderIdentity
from fashionsearch.store.brute import BruteForceIndex
from services.gateway.domain import CatalogueItem, Classification, FilterMode, ModelId, SearchOptions
from services.gateway.limits import Limits
from services.gateway.service import GatewayService
from testkit.gateway_fakes import DIM, EMBEDDER_MODEL, FakeClassifier, image, run_async, vector_for
from testkit.waiting import DEADLINE_S

CATALOGUE = [
    (1, "Topwear", "Shirts", "Puma Men Navy Blue Casual Shirt"),
    (2, "Topwear", "Tshirts", "Nike Men Navy Blue Polo T-shirt"),
    (3, "Bottomwear", "Jeans", "Levis Men Blue Jeans"),
    (4, "Topwear", "Shirts", "Wrangler Men Navy Blue Checked Casual Shirt"),
    (5, "Shoes", "Casual Shoes", "Puma Men Black Casual Shoes"),
]


async def _stream(items: Iterable[CatalogueItem]) -> AsyncIterator[CatalogueItem]:
    for item in items:
        yield item


def _item(pid: int, sub: str = "Topwear", article: str = "Shirts", name: str = "") -> CatalogueItem:
    return CatalogueItem(
        id=pid,
        image=image(str(pid)),
        payload={"name": name or f"Brand Men Item {pid}", "subCategory": sub, "articleType": article, "year": 2012},
    )


@pytest.fixture
def limits() -> Limits:
    return Limits(max_top_k=10, max_image_bytes=1000)


async def _load(service: GatewayService, items=None) -> list:
    items = items if items is not None else [_item(p, s, a, n) for p, s, a, n in CATALOGUE]
    return [o async for o in service.upsert(_stream(items))]


@run_async
async def test_search_filters_by_predicted_subcategory_and_names_the_item(service, fakes):
    await _load(service)
    fakes[1].vectors[image("query")] = vector_for(image("4")) + 0.001
    result = await service.search(image("query"), SearchOptions())
    assert result.applied_filters == {"subCategory": ("Topwear",)}
    assert [h.id for h in result.hits][0] == 4
    assert {h.id for h in result.hits} == {1, 2, 4}
    assert result.hits[0].distance == pytest.approx(0.002, rel=1e-3)
    assert result.suggested_name == "Men Navy Blue Casual Shirts"
    assert result.keywords[:2] == ("shirts", "shirt")
    assert "casual" in result.keywords and "puma" not in result.keywords and "wrangler" not in result.keywords
    assert result.embedder_model == EMBEDDER_MODEL


@run_async
async def test_an_unsure_subcategory_is_searched_with_the_next_ones_up_to_the_predicted_mass(fakes, limits):
    # GATEWAY_PREDICTED_SUBCATEGORY_MASS: the classifier's next subCategories join the filter while the
    # probabilities taken sum to less than the mass; 0 (the default) keeps the most probable alone.
    class UnsureClassifier(FakeClassifier):
        def _answer(self, data: bytes) -> Classification:
            answer = super()._answer(data)
            unsure = (LabelScore("Topwear", 0.55), LabelScore("Shoes", 0.40), LabelScore("Bottomwear", 0.05))
            attributes = tuple(
                replace(a, labels=unsure) if a.attribute == "subCategory" else a for a in answer.attributes
            )
            return replace(answer, attributes=attributes)

    _, embedder, index = fakes
    await _load(GatewayService(UnsureClassifier(), embedder, index, limits))
    embedder.vectors[image("query")] = vector_for(image("5")) + 0.001  # the shoe, read as a top at 0.55
    expected = {
        0.0: ("Topwear",),
        0.55: ("Topwear",),
        0.9: ("Topwear", "Shoes"),
        1.0: ("Topwear", "Shoes", "Bottomwear"),
    }
    for mass, sub_categories in expected.items():
        service = GatewayService(UnsureClassifier(), embedder, index, limits, predicted_subcategory_mass=mass)
        result = await service.search(image("query"), SearchOptions())
        assert result.applied_filters == {"subCategory": sub_categories}, mass
        assert (result.hits[0].id == 5) is ("Shoes" in sub_categories), mass
        assert {h.payload["subCategory"] for h in result.hits} <= set(sub_categories)


@run_async
async def test_search_takes_the_name_and_keywords_from_the_classifier_and_adds_the_neighbours_words(fakes):
    class NamingClassifier(FakeClassifier):
        async def classify(self, data: bytes) -> Classification:
            answer = await super().classify(data)
            return replace(answer, suggested_name="Named By The Classifier", keywords=("from-classifier",))

    _, embedder, index = fakes
    service = GatewayService(NamingClassifier(), embedder, index, Limits(max_top_k=10, max_image_bytes=1000))
    await _load(service)
    embedder.vectors[image("query")] = vector_for(image("4")) + 0.001
    result = await service.search(image("query"), SearchOptions())
    assert result.suggested_name == "Named By The Classifier"  # not computed again from the labels
    assert result.keywords[0] == "from-classifier"
    assert "casual" in result.keywords and "shirts" not in result.keywords  # neighbours' words, not the labels'


@run_async
async def test_search_modes_and_top_k(service):
    await _load(service)
    unfiltered = await service.search(image("q"), SearchOptions(mode=FilterMode.NONE, top_k=3))
    assert len(unfiltered.hits) == 3 and unfiltered.applied_filters == {}
    explicit = await service.search(
        image("q"),
        SearchOptions(mode=FilterMode.EXPLICIT, filters=(("articleType", ("Jeans", "Casual Shoes")),)),
    )
    assert {h.id for h in explicit.hits} == {3, 5}
    assert explicit.applied_filters == {"articleType": ("Jeans", "Casual Shoes")}
    assert len((await service.search(image("q"), SearchOptions(mode=FilterMode.NONE))).hits) == 5  # default


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        (b"", SearchOptions(), "empty"),
        (b"x" * 1001, SearchOptions(), "more than the limit of 1000 bytes"),
        (image("q"), SearchOptions(top_k=0), "between 1 and 10, got 0"),
        (image("q"), SearchOptions(top_k=-1), "got -1"),
        (image("q"), SearchOptions(top_k=11), "got 11"),
        (image("q"), SearchOptions(mode=FilterMode.EXPLICIT, filters=(("colour", ("Red",)),)), "unknown filter"),
        (image("q"), SearchOptions(mode=FilterMode.EXPLICIT), "at least one filter"),
        (image("q"), SearchOptions(filters=(("gender", ("Men",)),)), "only allowed with the explicit"),
        (image("q"), SearchOptions(mode=FilterMode.EXPLICIT, filters=(("gender", ("",)),)), "no values"),
        (
            image("q"),
            SearchOptions(mode=FilterMode.EXPLICIT, filters=(("gender", ("Men",)), ("gender", ("Women",)))),
            "given twice",
        ),
        (b"bad image", SearchOptions(), "not a JPEG"),
    ],
)
@run_async
async def test_search_rejects_bad_input(service, fakes, data, options, message):
    with pytest.raises(InvalidArgument, match=message):
        await service.search(data, options)


@run_async
async def test_bad_requests_do_not_reach_the_models(service, fakes):
    with pytest.raises(InvalidArgument):
        await service.search(image("q"), SearchOptions(top_k=0))
    assert fakes[0].calls == 0 and fakes[1].calls == 0


@run_async
async def test_a_failing_dependency_cancels_the_other_call(service, fakes):
    classifier, embedder, _ = fakes
    classifier.delay_s = 10
    embedder.error = Unavailable("the embedder is unavailable")
    with pytest.raises(Unavailable, match="embedder"):
        await asyncio.wait_for(service.search(image("q"), SearchOptions()), 2)
    assert classifier.cancelled


@run_async
async def test_search_on_an_empty_catalogue_returns_predictions_only(service):
    result = await service.search(image("q"), SearchOptions())
    assert result.hits == () and result.suggested_name == "Men Navy Blue Casual Shirts"


@run_async
async def test_search_with_another_embedder_version_is_a_failed_precondition(fakes):
    classifier, embedder, index = fakes
    service = GatewayService(classifier, embedder, index)
    await _load(service)
    embedder.model_id = ModelId("fake-embedder", "e2")
    with pytest.raises(FailedPrecondition, match="fake-embedder@e1.*fake-embedder@e2"):
        await service.search(image("q"), SearchOptions())
    outcomes = await _load(service, [_item(9)])
    assert outcomes[0].error is not None and isinstance(outcomes[0].error, FailedPrecondition)


@run_async
async def test_search_by_id_excludes_the_item_and_uses_its_subcategory(service):
    await _load(service)
    result = await service.search_by_id(1, SearchOptions())
    assert 1 not in [h.id for h in result.hits]
    assert {h.id for h in result.hits} == {2, 4}
    assert result.applied_filters == {"subCategory": ("Topwear",)}
    everything = await service.search_by_id(1, SearchOptions(mode=FilterMode.NONE, top_k=10))
    assert sorted(h.id for h in everything.hits) == [2, 3, 4, 5]
    with pytest.raises(NotFound, match="404"):
        await service.search_by_id(404, SearchOptions())
    with pytest.raises(InvalidArgument, match="product id"):
        await service.search_by_id(0, SearchOptions())


@run_async
async def test_upsert_reports_each_item_and_goes_on_after_a_bad_one(service, fakes):
    items = [_item(1), CatalogueItem(id=2, image=b"bad bytes"), CatalogueItem(id=3, image=b""), _item(4)]
    items.append(CatalogueItem(id=0, image=image("0")))
    outcomes = await _load(service, items)
    assert [o.id for o in outcomes] == [1, 2, 3, 4, 0]
    assert [o.error is None for o in outcomes] == [True, False, False, True, False]
    assert "not a JPEG" in outcomes[1].error.message and "empty" in outcomes[2].error.message
    assert fakes[2].count() == 2
    stored = await service.get(1)
    assert stored.payload["subCategory"] == "Topwear" and stored.payload["year"] == 2012


@run_async
async def test_upsert_batches_what_arrives_together_and_keeps_order(fakes):
    classifier, embedder, index = fakes
    service = GatewayService(classifier, embedder, index, Limits(upsert_batch=3))
    outcomes = await _load(service, [_item(i) for i in range(1, 21)])
    assert [o.id for o in outcomes] == list(range(1, 21)) and all(o.error is None for o in outcomes)
    assert max(embedder.batches) <= 3 and sum(embedder.batches) == 20
    again = await _load(service, [_item(i) for i in range(1, 21)])  # idempotent
    assert all(o.error is None for o in again) and index.count() == 20


@run_async
async def test_upsert_batch_stores_a_batch_at_once_within_the_limit(fakes):
    classifier, embedder, index = fakes
    service = GatewayService(classifier, embedder, index, Limits(upsert_batch=4))
    outcomes = await service.upsert_batch([_item(3), CatalogueItem(id=5, image=b""), _item(1)])
    assert [(o.id, o.error is None) for o in outcomes] == [(3, True), (5, False), (1, True)]
    assert embedder.batches == [2] and index.count() == 2  # the empty image never reaches the embedder
    with pytest.raises(InvalidArgument, match="at most 4 items, got 5"):
        await service.upsert_batch([_item(i) for i in range(10, 15)])
    with pytest.raises(InvalidArgument, match="product id 2 appears more than once"):
        await service.upsert_batch([_item(2), _item(2)])
    assert index.count() == 2 and (await service.stats()).max_upsert_batch == 4


@run_async
async def test_a_repeated_id_in_one_upsert_stream_is_refused_as_in_a_batch(service, fakes):
    """UpsertBatch refuses a batch that names an id twice; a stream cannot take back what it stored, so the
    repeat is refused alone, in any of the batches the stream is cut into, and the first one stays."""
    items = [_item(1, name="Brand Men First"), _item(2), _item(1, name="Brand Men Second")]
    outcomes = await _load(service, items)
    assert [(o.id, o.error is None) for o in outcomes] == [(1, True), (2, True), (1, False)]
    assert isinstance(outcomes[2].error, InvalidArgument)
    assert "product id 1 appears more than once" in outcomes[2].error.message
    assert fakes[2].retrieve([1])[0].payload["name"] == "Brand Men First"


@run_async
async def test_upsert_answers_a_slow_stream_item_by_item(service):
    async def slow() -> AsyncIterator[CatalogueItem]:
        for i in (1, 2, 3):
            yield _item(i)
            await asyncio.sleep(0.01)

    seen = [o.id async for o in service.upsert(slow())]
    assert seen == [1, 2, 3]


@run_async
async def test_a_broken_request_stream_ends_the_upsert_with_its_error(service, fakes):
    async def broken() -> AsyncIterator[CatalogueItem]:
        yield _item(1)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        async for _ in service.upsert(broken()):
            pass


@run_async
async def test_upsert_with_the_embedder_down_fails_items_not_the_stream(service, fakes):
    fakes[1].error = Unavailable("the embedder is unavailable")
    outcomes = await _load(service, [_item(1), _item(2)])
    assert all(isinstance(o.error, Unavailable) for o in outcomes)


@run_async
async def test_delete_get_and_stats(service):
    await _load(service)
    stats = await service.stats()
    assert stats.item_count == 5 and stats.stored_embedder == EMBEDDER_MODEL.identity
    assert stats.running_embedder == EMBEDDER_MODEL and stats.classifier.name == "fake-classifier"
    assert await service.delete([1, 2, 999]) == 3
    with pytest.raises(NotFound):
        await service.get(1)
    assert (await service.get(3)).payload["articleType"] == "Jeans"


@run_async
async def test_stats_answer_with_dependencies_down(service, fakes):
    fakes[0].error = Unavailable("down")
    fakes[1].error = Unavailable("down")
    stats = await service.stats()
    assert stats.item_count == 0 and stats.running_embedder is None and stats.classifier is None


@run_async
async def test_a_slow_store_is_a_deadline(fakes):
    classifier, embedder, index = fakes

    release = threading.Event()

    class SlowIndex(BruteForceIndex):
        def count(self) -> int:
            release.wait(DEADLINE_S)  # answers only after the test has seen the deadline
            return 0

    service = GatewayService(classifier, embedder, SlowIndex(), Limits(store_timeout_s=0.05))
    with pytest.raises(DeadlineExceeded, match="vector store"):
        await service.stats()
    release.set()


@run_async
async def test_a_broken_store_is_unavailable(fakes):
    classifier, embedder, _ = fakes

    class BrokenIndex(BruteForceIndex):
        def retrieve(self, ids):
            raise StoreUnavailableError("Qdrant did not answer: connection refused")

    service = GatewayService(classifier, embedder, BrokenIndex())
    with pytest.raises(Unavailable, match="connection refused"):
        await service.get(1)


def test_vector_for_is_deterministic():
    assert vector_for(b"a").shape == (DIM,) and np.array_equal(vector_for(b"a"), vector_for(b"a"))


@run_async
async def test_categories_are_counted_kept_and_recounted_after_any_write(service, fakes):
    _, _, index = fakes
    assert await service.categories() == []  # no collection yet
    await _load(service)
    assert await service.categories() == [("Topwear", 3), ("Bottomwear", 1), ("Shoes", 1)]
    scans = []
    original = index.scroll
    index.scroll = lambda *args: (scans.append(args), original(*args))[1]
    assert await service.categories() == [("Topwear", 3), ("Bottomwear", 1), ("Shoes", 1)]
    assert scans == []  # kept, not counted again
    await service.delete([3])  # a write through any API (gRPC or HTTP) drops the count
    assert await service.categories() == [("Topwear", 3), ("Shoes", 1)]
    await _load(service, [_item(9, "Shoes", "Casual Shoes")])
    assert await service.categories() == [("Topwear", 3), ("Shoes", 2)]
    assert len(scans) == 2


@run_async
async def test_a_full_store_fails_the_writes_with_507_and_a_warning_reads_go_on(fakes, caplog):
    from fashionsearch.store import StoreFullError

    classifier, embedder, _ = fakes

    class FullIndex(BruteForceIndex):
        full = False

        def upsert(self, points):
            if self.full:
                raise StoreFullError("storing items refused: the disk holding data has 1.0 MiB free")
            super().upsert(points)

    index = FullIndex()
    service = GatewayService(classifier, embedder, index)
    await _load(service, [_item(1)])
    index.full = True
    outcomes = await _load(service, [_item(2), _item(3)])
    assert [o.error.http_status for o in outcomes] == [507, 507]
    assert all(o.error.code.name == "RESOURCE_EXHAUSTED" and "MiB free" in o.error.message for o in outcomes)
    refusals = [r for r in caplog.records if "refused upsert" in r.getMessage()]
    assert refusals and all(r.levelname == "WARNING" and not r.exc_info for r in refusals)
    assert (await service.get(1)).id == 1 and (await service.stats()).item_count == 1


@run_async
async def test_a_lone_surrogate_in_a_payload_fails_that_item_naming_the_field(service, fakes):
    bad_name = replace(_item(2), payload={**_item(2).payload, "name": "Shirt \ud800"})
    bad_hash = replace(_item(3), content_hash="abc\udfff")
    outcomes = await _load(service, [_item(1), bad_name, bad_hash, _item(4)])
    assert [o.error is None for o in outcomes] == [True, False, False, True]
    assert isinstance(outcomes[1].error, InvalidArgument) and "payload field 'name'" in outcomes[1].error.message
    assert isinstance(outcomes[2].error, InvalidArgument) and "content_hash" in outcomes[2].error.message
    assert fakes[2].count() == 2


@run_async
async def test_a_compaction_or_backup_that_meets_a_full_disk_answers_as_a_full_disk(fakes, tmp_path):
    """RESOURCE_EXHAUSTED / 507 as every write refused for room, not FailedPrecondition; a plain store failure (a
    lock held elsewhere) stays FailedPrecondition, naming what failed."""
    classifier, embedder, _ = fakes

    def full() -> None:
        raise StoreFullError("switching alias catalogue to c2 refused: the disk holding data is full (0.0 MiB free)")

    def locked() -> None:
        raise StoreError("the collection c2 is open elsewhere")

    for failure, expected in ((full, StoreFullError), (locked, FailedPrecondition)):
        service = GatewayService(classifier, embedder, BruteForceIndex(), compaction=failure)  # type: ignore[arg-type]
        with pytest.raises(FashionSearchError) as raised:
            await service.compact()
        assert isinstance(raised.value, expected) and raised.value.message.startswith("compaction failed: ")

    class FullIndex(BruteForceIndex):
        def scroll(self, fields=(), page_size=1000):
            raise StoreFullError("the disk holding the backups is full")

    index = FullIndex()
    index.ensure_collection(DIM, EmbedderIdentity("embedder", "1"))
    service = GatewayService(classifier, embedder, index, backups=tmp_path)
    with pytest.raises(StoreFullError, match="^backup .* failed: "):
        await service.backup()
