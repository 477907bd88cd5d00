"""Numbers computed from predictions, with NumPy only: classification and calibration (accuracy, per-class
precision/recall/F1, expected calibration error, the temperature that minimises NLL), class weights, and retrieval
(exact k nearest neighbours, precision@k, without and with a filter, search latency).

The recipes choose with them on the validation split; `training.evaluate` reports them on the test split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RETRIEVAL_K = 5
MATCH_ATTRIBUTES = ("articleType", "subCategory", "baseColour", "gender")
FILTER_ATTRIBUTE = "subCategory"


# --------------------------------------------------------------------------------------------------------------
# Classification and calibration


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix (rows: truth)."""
    k = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float(tp.sum() / max(1, len(y_true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": [
            {
                "label": labels[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        ],
        "confusion": confusion,
    }


def most_confused(confusion: np.ndarray, labels: Sequence[str], n: int = 10) -> list[tuple[str, str, int]]:
    """The n largest off-diagonal cells: (true label, predicted label, count)."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    cells = [(-int(off[i, j]), i, j) for i, j in zip(*np.nonzero(off), strict=True)]
    return [(labels[i], labels[j], -neg) for neg, i, j in sorted(cells)[:n]]


def expected_calibration_error(probabilities: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins; 0 for no examples."""
    if len(y_true) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def top1_accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """Share of the labelled rows (y >= 0) whose highest score is the label, rounded to 4 places."""
    keep = y >= 0
    return round(float((scores[keep].argmax(axis=1) == y[keep]).mean()), 4) if keep.any() else 0.0


def class_weights(labels: np.ndarray, n: int, power: float) -> np.ndarray:
    """(count / median count) ** -power, normalised to a mean of 1 over the training examples."""
    counts = np.bincount(labels[labels >= 0], minlength=n).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    w = (counts / np.median(counts)) ** -power
    mean = float((w * counts).sum() / counts.sum())
    return (w / mean).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, t: float = 1.0) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (log-spaced grid, then a finer one around the best)."""
    if len(y) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.3), np.log(5.0), 61))
    best = min(grid, key=lambda t: nll(logits, y, t))
    fine = np.linspace(best * 0.95, best * 1.05, 21)
    return float(min(fine, key=lambda t: nll(logits, y, t)))


# --------------------------------------------------------------------------------------------------------------
# Retrieval


def knn(
    queries: np.ndarray,
    catalogue: np.ndarray,
    k: int = RETRIEVAL_K,
    query_groups: np.ndarray | None = None,
    catalogue_groups: np.ndarray | None = None,
    chunk: int = 512,
) -> np.ndarray:
    """Indices (Q, k) of each query's k nearest catalogue vectors by Euclidean distance, nearest first.

    With groups, a query only sees catalogue items of its own group (e.g. the same subCategory); missing
    neighbours (a group with fewer than k items) are -1.
    """
    queries = np.asarray(queries, dtype=np.float64)
    catalogue = np.asarray(catalogue, dtype=np.float64)
    result = np.full((len(queries), k), -1, dtype=np.int64)
    if query_groups is None or catalogue_groups is None:
        groups = [(np.arange(len(queries)), np.arange(len(catalogue)))]
    else:
        query_groups, catalogue_groups = np.asarray(query_groups), np.asarray(catalogue_groups)
        groups = [
            (np.flatnonzero(query_groups == g), np.flatnonzero(catalogue_groups == g)) for g in np.unique(query_groups)
        ]
    for q_index, c_index in groups:
        if len(c_index) == 0:
            continue
        cat = catalogue[c_index]
        cat_sq = np.einsum("ij,ij->i", cat, cat)
        take = min(k, len(c_index))
        for start in range(0, len(q_index), chunk):
            rows = q_index[start : start + chunk]
            q = queries[rows]
            dist = np.einsum("ij,ij->i", q, q)[:, None] + cat_sq[None, :] - 2.0 * q @ cat.T
            part = (
                np.argpartition(dist, take - 1, axis=1)[:, :take]
                if take < len(c_index)
                else np.tile(np.arange(len(c_index)), (len(rows), 1))
            )
            order = np.take_along_axis(dist, part, axis=1).argsort(axis=1, kind="stable")
            result[rows, :take] = c_index[np.take_along_axis(part, order, axis=1)]
    return result


def precision_at_k(neighbours: np.ndarray, query_labels: np.ndarray, catalogue_labels: np.ndarray) -> float:
    """Mean share of each query's k neighbours whose label equals the query's (a missing neighbour is a miss)."""
    if len(neighbours) == 0:
        return 0.0
    catalogue_labels = np.asarray(catalogue_labels, dtype=object)
    found = np.where(neighbours >= 0, catalogue_labels[np.maximum(neighbours, 0)], None)
    hits = (found == np.asarray(query_labels, dtype=object)[:, None]) & (neighbours >= 0)
    return float(hits.mean())


def retrieval_metrics(
    query_vectors: np.ndarray,
    catalogue_vectors: np.ndarray,
    query_labels: Mapping[str, np.ndarray],
    catalogue_labels: Mapping[str, np.ndarray],
    k: int = RETRIEVAL_K,
    match_attributes: Sequence[str] = MATCH_ATTRIBUTES,
    filter_attribute: str = FILTER_ATTRIBUTE,
    query_filter_values: np.ndarray | None = None,
) -> dict[str, Any]:
    """precision@k per attribute, without and with the filter (catalogue restricted to the query's
    `filter_attribute` value: the true one unless `query_filter_values`, e.g. a classifier's predictions, is
    given). Returns {"unfiltered": {attr: p}, "filtered": {attr: p}, "neighbours": {...}}."""
    plain = knn(query_vectors, catalogue_vectors, k)
    groups = query_labels[filter_attribute] if query_filter_values is None else query_filter_values
    filtered = knn(query_vectors, catalogue_vectors, k, groups, catalogue_labels[filter_attribute])
    return {
        "k": k,
        "queries": int(len(query_vectors)),
        "catalogue": int(len(catalogue_vectors)),
        "filter": filter_attribute,
        "unfiltered": {a: precision_at_k(plain, query_labels[a], catalogue_labels[a]) for a in match_attributes},
        "filtered": {a: precision_at_k(filtered, query_labels[a], catalogue_labels[a]) for a in match_attributes},
        "neighbours": {"unfiltered": plain, "filtered": filtered},
    }


def search_latency_ms(catalogue: np.ndarray, queries: np.ndarray, k: int = RETRIEVAL_K, repeats: int = 3) -> float:
    """Brute-force exact Euclidean top-k, one query at a time (what a flat index does), ms per query."""
    cat = np.ascontiguousarray(catalogue, dtype=np.float32)
    cat_sq = np.einsum("ij,ij->i", cat, cat)
    times = []
    for _ in range(repeats + 1):  # the first pass warms the caches and is dropped
        started = time.perf_counter()
        for q in queries:
            d = cat_sq - 2.0 * (cat @ q)
            np.argpartition(d, k)[:k]
        times.append((time.perf_counter() - started) / len(queries) * 1000.0)
    return float(min(times[1:]))  # the least disturbed pass: the CPU is shared
