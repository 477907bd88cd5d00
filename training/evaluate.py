"""Evaluation of an exported model (model.onnx + model.json) on the test split; writes a Markdown report + PNGs.

Inputs go through `fashionsearch.model_contract.preprocess` reading model.json, and the model runs in
onnxruntime, exactly as in serving. The metric, retrieval and plotting functions are reusable on their own:
`predict`, `classification_metrics`, `most_confused`, `knn`, `precision_at_k`, `retrieval_metrics`,
`plot_history`, `plot_confusion`, `plot_queries`, `fixed_queries`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fashionsearch.model_contract import MODEL_FILE, ModelContractError, ModelSpec, file_sha256, preprocess
from training import data
from training.export import onnx_session

log = logging.getLogger(__name__)

PAPER_CNN_ACCURACY = 0.85
RETRIEVAL_K = 5
MATCH_ATTRIBUTES = ("articleType", "subCategory", "baseColour", "gender")
FILTER_ATTRIBUTE = "subCategory"


# --------------------------------------------------------------------------------------------------------------
# Running the ONNX model


def load_model(model_dir: str | Path, threads: int = 2) -> tuple[ModelSpec, Any]:
    """The validated spec and an onnxruntime session; the sha256 in model.json must match model.onnx."""
    spec = ModelSpec.load(model_dir)
    onnx_path = Path(model_dir) / MODEL_FILE
    actual = file_sha256(onnx_path)
    if actual != spec.onnx_sha256:
        raise ModelContractError(f"{onnx_path} has sha256 {actual}, model.json says {spec.onnx_sha256}")
    return spec, onnx_session(onnx_path, threads)


def predict(session: Any, spec: ModelSpec, images: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Every ONNX output for uint8 images (N, h, w, 3), preprocessed by the contract."""
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(images), batch_size):
        x = preprocess(list(images[start : start + batch_size]), spec.input)
        for name, out in zip(names, session.run(names, {input_name: x}), strict=True):
            chunks[name].append(out)
    return {n: np.concatenate(c) if c else np.zeros((0,)) for n, c in chunks.items()}


def true_labels(dataset: data.Dataset, attribute: str) -> np.ndarray:
    """The ground truth for a head's attribute; "category" is the paper's six-class label (None elsewhere)."""
    if attribute == "category":
        return np.asarray(
            [
                data.paper_class(s, a)
                for s, a in zip(dataset.labels["subCategory"], dataset.labels["articleType"], strict=True)
            ],
            dtype=object,
        )
    return dataset.labels[attribute]


# --------------------------------------------------------------------------------------------------------------
# Classification metrics


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
    """ECE with equal-width confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


# --------------------------------------------------------------------------------------------------------------
# Retrieval metrics


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


def fixed_queries(test: data.Dataset, n: int = 8, seed: int = 8) -> np.ndarray:
    """n test rows from the n most common subCategories (one each), the same for every model's report."""
    values, counts = np.unique(test.labels["subCategory"].astype(str), return_counts=True)
    common = values[np.argsort(-counts, kind="stable")][:n]
    rng = np.random.default_rng(seed)
    picks = []
    for value in common:
        members = np.flatnonzero(test.labels["subCategory"] == value)
        picks.append(int(rng.choice(members)))
    return np.asarray(picks, dtype=np.int64)


# --------------------------------------------------------------------------------------------------------------
# Pictures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: Mapping[str, Sequence[float]], path: Path, title: str = "") -> Path | None:
    """Training vs validation accuracy and loss per epoch (one line per metric key); None without history."""
    if not history or "loss" not in history:
        return None
    plt = _pyplot()
    acc_keys = [k for k in history if k.endswith("accuracy") and not k.startswith("val_")]
    panels = [("loss", [k for k in history if k.endswith("loss") and not k.startswith("val_")])]
    if acc_keys:
        panels.insert(0, ("accuracy", acc_keys))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (metric, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            epochs = np.arange(1, len(history[key]) + 1)
            ax.plot(epochs, history[key], label=f"train {key}")
            if f"val_{key}" in history:
                ax.plot(epochs, history[f"val_{key}"], "--", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(confusion: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: truth); counts written in the cells for small matrices."""
    plt = _pyplot()
    k = len(labels)
    size = max(5.0, 0.28 * k + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=90, fontsize=8 if k <= 30 else 5)
    ax.set_yticks(range(k), labels, fontsize=8 if k <= 30 else 5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(
                        j,
                        i,
                        str(confusion[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_queries(
    query_images: np.ndarray,
    catalogue_images: np.ndarray,
    neighbours: np.ndarray,
    path: Path,
    query_captions: Sequence[str] = (),
    neighbour_captions: Sequence[Sequence[str]] = (),
    title: str = "",
) -> Path:
    """One row per query: the query, then its neighbours (nearest first)."""
    plt = _pyplot()
    rows, k = neighbours.shape
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.6 * (k + 1), 2.2 * rows), squeeze=False)
    for r in range(rows):
        cells = [query_images[r]] + [catalogue_images[i] if i >= 0 else None for i in neighbours[r]]
        for c, img in enumerate(cells):
            ax = axes[r][c]
            ax.axis("off")
            if img is not None:
                ax.imshow(img)
            caption = (
                (query_captions[r] if r < len(query_captions) else "")
                if c == 0
                else (neighbour_captions[r][c - 1] if r < len(neighbour_captions) else "")
            )
            if caption:
                ax.set_title(caption, fontsize=6, color="darkred" if c == 0 else "black")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / rows))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------------------
# The report


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(data.REPO_ROOT))
    except ValueError:
        return str(path)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _per_class_table(metrics: Mapping[str, Any]) -> list[str]:
    rows = [
        (c["label"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"])
        for c in metrics["per_class"]
        if c["support"] > 0
    ]
    return _table(("class", "precision", "recall", "F1", "support"), rows)


def _header(
    spec: ModelSpec, dataset: data.Dataset, counts: Mapping[str, int], catalogue: data.Dataset | None = None
) -> list[str]:
    """`counts`: images per split; a held-out set has test images only."""
    report = dataset.report
    if counts["test"] < len(dataset):
        where = (
            f"Split `training/splits/split-v1.csv` (seeded, stratified by articleType): {counts['train']} train, "
            f"{counts['val']} validation, {counts['test']} test. Everything below is measured on the test split"
        )
    else:
        where = f"A held-out set: every one of its {counts['test']} images is a test image (no split file)"
        if catalogue is not None:
            where += f"; the retrieval catalogue is the {len(catalogue)}-image train split of the training dataset"
        where += ". Everything below is measured on the held-out set"
    lines = [
        f"# {spec.name} (version {spec.version})",
        "",
        f"`model.onnx` sha256 `{spec.onnx_sha256}`; input {spec.input.height}x{spec.input.width} RGB, "
        f"resize `{spec.input.resize}`, scale {spec.input.scale:.6g}, mean {list(spec.input.mean)}, "
        f"std {list(spec.input.std)}.",
        "",
        f"Data: {report.summary() if report else f'{len(dataset)} images'}. {where} with onnxruntime, inputs made "
        "by `fashionsearch.model_contract.preprocess` from model.json.",
        "",
    ]
    training = spec.extra.get("training", {})
    if training:
        # Only what the recipe recorded: a schedule-driven run has no "best epoch", a projection no epoch count.
        epochs = training.get("epochs_run", training.get("settings", {}).get("epochs"))
        run = f"{epochs} epochs" if epochs is not None else "trained"
        if training.get("best_epoch") is not None:
            run += f" (best epoch {training['best_epoch']})"
        lines += [
            "## Training",
            "",
            f"Recipe `{training.get('recipe', '?')}`, {training.get('parameters', '?')} parameters; {run} in "
            f"{training.get('seconds', 0) / 60:.1f} minutes on this machine's CPU; settings: "
            f"`{training.get('settings', {})}`.",
            "",
        ]
    parity = spec.extra.get("parity")
    if parity:
        lines += [
            f"Export parity gate (Keras vs onnxruntime, {parity['images']} validation images): max abs difference "
            f"{parity['max_abs_diff']:.2e} (limit {parity['atol']:g}), {parity['argmax_mismatches']} argmax "
            "mismatches.",
            "",
        ]
    return lines


def evaluate_classifier(
    spec: ModelSpec, session: Any, dataset: data.Dataset, split: Mapping[int, str], report_dir: Path
) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines and test metrics for every head."""
    test = dataset.split(split, "test")
    outputs = predict(session, spec, test.images)
    lines: list[str] = []
    test_metrics: dict[str, Any] = {"accuracy": {}, "macro_f1": {}, "ece": {}}
    summary_rows = []
    history = spec.extra.get("training", {}).get("history", {})
    if plot_history(history, report_dir / "curves.png", f"{spec.name}: training and validation"):
        lines += ["## Training curves", "", "![training curves](curves.png)", ""]
    paper_rows: list[tuple[str, ...]] = []
    for head in spec.outputs:
        truth = true_labels(test, head.attribute)
        index = {label: i for i, label in enumerate(head.labels)}
        keep = np.asarray([t in index for t in truth])
        y_true = np.asarray([index[t] for t in truth[keep]], dtype=np.int64)
        probs = outputs[head.name][keep]
        m = classification_metrics(y_true, probs.argmax(axis=1), head.labels)
        ece = expected_calibration_error(probs, y_true) if len(y_true) else 0.0
        test_metrics["accuracy"][head.attribute] = round(m["accuracy"], 4)
        test_metrics["macro_f1"][head.attribute] = round(m["macro_f1"], 4)
        test_metrics["ece"][head.attribute] = round(ece, 4)
        summary_rows.append(
            (
                head.attribute,
                len(head.labels),
                m["n"],
                _pct(m["accuracy"]),
                f"{m['macro_f1']:.3f}",
                f"{ece:.3f}",
                int((~keep).sum()),
            )
        )
        picture = f"confusion-{head.attribute}.png"
        plot_confusion(
            m["confusion"], head.labels, report_dir / picture, f"{spec.name}: {head.attribute} (test, {m['n']} images)"
        )
        section = [f"## {head.attribute}", "", f"![confusion matrix]({picture})", ""]
        confused = most_confused(m["confusion"], head.labels)
        if confused:
            section += [
                "Most confused (true -> predicted, count): " + "; ".join(f"{a} -> {b} ({n})" for a, b, n in confused),
                "",
            ]
        section += _per_class_table(m)
        if head.attribute == "category":
            # The paper measured on a balanced held-out subset: same six-class sampling, our test split.
            subset, _ = data.paper_subset(dataset, per_class=400, seed=20240601)
            balanced = subset.split(split, "test")
            b_out = predict(session, spec, balanced.images)[head.name]
            b_true = np.asarray([index[t] for t in true_labels(balanced, "category")], dtype=np.int64)
            bm = classification_metrics(b_true, b_out.argmax(axis=1), head.labels)
            test_metrics["accuracy"]["category_balanced"] = round(bm["accuracy"], 4)
            paper_rows = [
                (
                    "accuracy, balanced six-class test subset",
                    f"{bm['n']} images",
                    _pct(bm["accuracy"]),
                    _pct(PAPER_CNN_ACCURACY),
                ),
                (
                    "accuracy, every test image of the six classes",
                    f"{m['n']} images",
                    _pct(m["accuracy"]),
                    _pct(PAPER_CNN_ACCURACY),
                ),
            ]
            plot_confusion(
                bm["confusion"],
                head.labels,
                report_dir / "confusion-category-balanced.png",
                f"{spec.name}: balanced six-class test subset ({bm['n']} images)",
            )
            section += [
                "Balanced six-class test subset (the paper's sampling):",
                "",
                "![confusion matrix, balanced](confusion-category-balanced.png)",
                "",
            ]
            section += _per_class_table(bm)
        lines += section
    head_lines = ["## Test accuracy per head", ""]
    head_lines += _table(
        ("head", "classes", "test images", "accuracy", "macro F1", "ECE", "skipped (label not a class)"), summary_rows
    )
    if paper_rows:
        head_lines += ["## Side by side with the paper", ""]
        head_lines += _table(("measure", "n", "ours", "paper"), paper_rows)
    return head_lines + lines, test_metrics


def evaluate_embedder(
    spec: ModelSpec,
    session: Any,
    model_dir: Path,
    dataset: data.Dataset,
    split: Mapping[int, str],
    report_dir: Path,
    threads: int = 2,
    catalogue: data.Dataset | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines and test metrics: reconstruction (autoencoders) and retrieval precision@5 against
    `catalogue` (default: the split's train images)."""
    assert spec.embedding is not None
    test = dataset.split(split, "test")
    train = dataset.split(split, "train") if catalogue is None else catalogue
    if not len(train):
        raise data.DataError("the retrieval catalogue is empty (no train images); a held-out set needs a catalogue")
    shared = np.intersect1d(test.ids, train.ids)
    if len(shared):
        # Same ids on both sides means the same products: those queries find themselves and flatter the numbers.
        log.warning("%d query ids are also in the catalogue (e.g. %s)", len(shared), shared[:5].tolist())
    q = predict(session, spec, test.images)[spec.embedding.output]
    c = predict(session, spec, train.images)[spec.embedding.output]
    r = retrieval_metrics(q, c, test.labels, train.labels)
    test_metrics: dict[str, Any] = {
        f"precision_at_{RETRIEVAL_K}": {
            k: {a: round(v, 4) for a, v in r[k].items()} for k in ("unfiltered", "filtered")
        }
    }
    lines = [
        "## Retrieval",
        "",
        f"{r['queries']} test queries against the {r['catalogue']}-item train-split catalogue, Euclidean "
        f"top-{RETRIEVAL_K}. precision@{RETRIEVAL_K} = share of the {RETRIEVAL_K} results whose attribute equals "
        f"the query's. \"With filter\" restricts the catalogue to the query's true {FILTER_ATTRIBUTE} (an oracle "
        "filter, as if the classifier were always right).",
        "",
    ]
    lines += _table(
        ("match on", "without filter", f"with {FILTER_ATTRIBUTE} filter"),
        [(a, _pct(r["unfiltered"][a]), _pct(r["filtered"][a])) for a in MATCH_ATTRIBUTES],
    )
    picks = fixed_queries(test)
    for mode in ("unfiltered", "filtered"):
        neighbours = r["neighbours"][mode][picks]
        captions = [
            [f"{train.labels['articleType'][i]}\n{train.labels['baseColour'][i]}" if i >= 0 else "" for i in row]
            for row in neighbours
        ]
        plot_queries(
            test.images[picks],
            train.images,
            neighbours,
            report_dir / f"queries-{mode}.png",
            [f"query: {test.labels['articleType'][i]}\n{test.labels['baseColour'][i]}" for i in picks],
            captions,
            f"{spec.name}: 8 fixed test queries, top-{RETRIEVAL_K} ({mode})",
        )
        lines += [f"![8 queries and their top-{RETRIEVAL_K}, {mode}](queries-{mode}.png)", ""]

    autoencoder_file = "autoencoder.onnx"
    if autoencoder_file in spec.extra.get("files", {}):
        ae = onnx_session(model_dir / autoencoder_file, threads)
        name = ae.get_inputs()[0].name
        errors = []
        for start in range(0, len(test), 512):
            x = preprocess(list(test.images[start : start + 512]), spec.input)
            y = ae.run(None, {name: x})[0]
            errors.append(((y - x) ** 2).mean(axis=(1, 2, 3)))
        mse = float(np.concatenate(errors).mean())
        test_metrics["reconstruction_mse"] = round(mse, 6)
        x = preprocess(list(test.images[picks]), spec.input)
        y = ae.run(None, {name: x})[0]
        plot_queries(
            (x * 255).clip(0, 255).astype(np.uint8),
            (y * 255).clip(0, 255).astype(np.uint8),
            np.arange(len(picks))[:, None],
            report_dir / "reconstructions.png",
            ["input"] * len(picks),
            [["reconstruction"]] * len(picks),
            "autoencoder reconstructions (test)",
        )
        lines = [
            "## Reconstruction",
            "",
            f"Mean squared error per pixel on the {len(test)} test images (inputs in [0, 1]): **{mse:.5f}**.",
            "",
            "![reconstructions](reconstructions.png)",
            "",
        ] + lines
    history = spec.extra.get("training", {}).get("history", {})
    if plot_history(history, report_dir / "curves.png", f"{spec.name}: training and validation loss"):
        lines += ["## Training curves", "", "![training curves](curves.png)", ""]
    lines += [
        "## Side by side with the paper",
        "",
        "The paper shows its autoencoder's retrieval as pictures (its Figures 7 and 8) and gives no "
        "precision@5; the numbers above are the baseline that the production embedder is measured against.",
        "",
    ]
    return lines, test_metrics


def evaluate_model(
    model_dir: str | Path,
    dataset: data.Dataset,
    split: Mapping[int, str],
    report_dir: str | Path,
    threads: int = 2,
    update_metrics: bool = True,
    catalogue: data.Dataset | None = None,
) -> Path:
    """Write report_dir/README.md (+ PNGs); with `update_metrics`, model.json's metrics gain a "test" entry.

    `catalogue`: what retrieval searches (default: the split's train images); a held-out evaluation (every
    image of `dataset` a test image) passes the training dataset's train split."""
    model_dir, report_dir = Path(model_dir), Path(report_dir)
    counts = {s: sum(1 for i in dataset.ids if split.get(int(i)) == s) for s in data.SPLITS}
    if not counts["test"]:
        raise data.DataError(f"no test images: the split assigns none of the {len(dataset)} images to test")
    spec, session = load_model(model_dir, threads)
    report_dir.mkdir(parents=True, exist_ok=True)
    lines = _header(spec, dataset, counts, catalogue)
    if spec.kind == "classifier":
        body, test_metrics = evaluate_classifier(spec, session, dataset, split, report_dir)
    else:
        body, test_metrics = evaluate_embedder(spec, session, model_dir, dataset, split, report_dir, threads, catalogue)
    lines += body
    held_out = " --data HELD_OUT_DIR --held-out" if counts["test"] == len(dataset) else ""
    command = f"python -m training evaluate {_rel(model_dir)}{held_out} --report {_rel(report_dir)}"
    lines += ["", f"Regenerate: `{command}`.", ""]
    path = report_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    if update_metrics:
        metrics = dict(spec.metrics) | {"test": test_metrics}
        dataclasses.replace(spec, metrics=metrics).write(model_dir)
    log.info("test metrics of %s: %s", spec.identity, test_metrics)
    return path
