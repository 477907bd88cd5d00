"""Request sizing of the indexer's targets: batches split by item count and by bytes, order kept."""

from __future__ import annotations

from fashionsearch.batching import bounded_chunks


def test_chunks_respect_the_item_count_and_keep_order() -> None:
    items = list(range(10))
    assert list(bounded_chunks(items, [1] * 10, max_items=4, max_bytes=100)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_chunks_respect_the_byte_budget() -> None:
    sizes = [40, 40, 40, 10, 10, 90, 5]
    chunks = list(bounded_chunks(list("abcdefg"), sizes, max_items=64, max_bytes=100))
    assert chunks == [["a", "b"], ["c", "d", "e"], ["f", "g"]]


def test_an_item_over_the_budget_goes_alone() -> None:
    assert list(bounded_chunks(["x", "big", "y"], [10, 500, 10], max_items=64, max_bytes=100)) == [
        ["x"],
        ["big"],
        ["y"],
    ]


def test_no_items_no_chunks() -> None:
    assert list(bounded_chunks([], [], max_items=4, max_bytes=100)) == []
