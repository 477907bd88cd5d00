"""Evaluation of an exported model (model.onnx + model.json) on the test split; writes a Markdown report + PNGs.

Inputs go through `fashionsearch.model_contract.preprocess` reading model.json, and the model runs in
onnxruntime, exactly as in serving. The numbers come from `training.metrics`; the running and plotting functions
are reusable on their own: `predict`, `plot_history`, `plot_confusion`, `plot_queries`, `fixed_queries`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fashionsearch import model_variants
from fashionsearch.model_contract import MODEL_FILE, ModelContractError, ModelSpec, file_sha256, preprocess
from training import data
from training.inference import onnx_session
from training.metrics import (
    FILTER_ATTRIBUTE,
    MATCH_ATTRIBUTES,
    RETRIEVAL_K,
    classification_metrics,
    expected_calibration_error,
    most_confused,
    retrieval_metrics,
)
from training.report import Report, Section, save

log = logging.getLogger(__name__)

PAPER_CNN_ACCURACY = 0.85


# --------------------------------------------------------------------------------------------------------------
# Running the ONNX model


def load_model(model_dir: str | Path, threads: int = 2) -> tuple[ModelSpec, Any]:
    """The validated spec and an onnxruntime session; the sha256 in model.json must match model.onnx.

    `model_dir` may name one of the folder's variant files instead (models/classifier/model.int8.onnx): then that
    file runs, and a one-pass classifier variant's spec carries the embedder's embedding section too."""
    path = Path(model_dir)
    model_dir, file = (path.parent, path.name) if path.suffix == ".onnx" else (path, MODEL_FILE)
    spec = ModelSpec.load(model_dir)
    variant = model_variants.find(spec, file)
    onnx_path = model_dir / file
    actual = file_sha256(onnx_path)
    if actual != variant.sha256:
        raise ModelContractError(f"{onnx_path} has sha256 {actual}, model.json says {variant.sha256}")
    if variant.embedding is not None:
        spec = dataclasses.replace(spec, embedding=variant.embedding)
    return spec, onnx_session(onnx_path, threads)


def predict(
    session: Any, spec: ModelSpec, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 512
) -> dict[str, np.ndarray]:
    """Every ONNX output for uint8 images (N, h, w, 3), or a list of them of any sizes, preprocessed by the
    contract."""
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


def _per_class_table(section: Section, metrics: Mapping[str, Any]) -> None:
    rows = [
        (c["label"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"])
        for c in metrics["per_class"]
        if c["support"] > 0
    ]
    section.table(("class", "precision", "recall", "F1", "support"), rows)


def _header(
    spec: ModelSpec, dataset: data.Dataset, counts: Mapping[str, int], catalogue: data.Dataset | None = None
) -> Report:
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
    out = Report(f"{spec.name} (version {spec.version})")
    out.add("").text(
        f"`model.onnx` sha256 `{spec.onnx_sha256}`; input {spec.input.height}x{spec.input.width} RGB, "
        f"resize `{spec.input.resize}`, scale {spec.input.scale:.6g}, mean {list(spec.input.mean)}, "
        f"std {list(spec.input.std)}."
    ).text(
        f"Data: {report.summary() if report else f'{len(dataset)} images'}. {where} with onnxruntime, inputs made "
        "by `fashionsearch.model_contract.preprocess` from model.json."
    )
    training = spec.extra.get("training", {})
    if training:
        # Only what the recipe recorded: a schedule-driven run has no "best epoch", a projection no epoch count.
        epochs = training.get("epochs_run", training.get("settings", {}).get("epochs"))
        run = f"{epochs} epochs" if epochs is not None else "trained"
        if training.get("best_epoch") is not None:
            run += f" (best epoch {training['best_epoch']})"
        out.add("Training").text(
            f"Recipe `{training.get('recipe', '?')}`, {training.get('parameters', '?')} parameters; {run} in "
            f"{training.get('seconds', 0) / 60:.1f} minutes on this machine's CPU; settings: "
            f"`{training.get('settings', {})}`."
        )
    parity = spec.extra.get("parity")
    if parity:
        out.sections[-1].text(
            f"Export parity gate (Keras vs onnxruntime, {parity['images']} validation images): max abs difference "
            f"{parity['max_abs_diff']:.2e} (limit {parity['atol']:g}), {parity['argmax_mismatches']} argmax "
            "mismatches."
        )
    return out


def evaluate_classifier(
    spec: ModelSpec, session: Any, dataset: data.Dataset, split: Mapping[int, str], report_dir: Path
) -> tuple[list[Section], dict[str, Any]]:
    """Report sections and test metrics for every head."""
    test = dataset.split(split, "test")
    outputs = predict(session, spec, test.images)
    sections: list[Section] = []
    test_metrics: dict[str, Any] = {"accuracy": {}, "macro_f1": {}, "ece": {}}
    summary_rows = []
    history = spec.extra.get("training", {}).get("history", {})
    if plot_history(history, report_dir / "curves.png", f"{spec.name}: training and validation"):
        sections.append(Section("Training curves").image("training curves", "curves.png"))
    paper_rows: list[tuple[str, ...]] = []
    for head in spec.outputs:
        truth = true_labels(test, head.attribute)
        index = {label: i for i, label in enumerate(head.labels)}
        keep = np.asarray([t in index for t in truth])
        y_true = np.asarray([index[t] for t in truth[keep]], dtype=np.int64)
        probs = outputs[head.name][keep]
        m = classification_metrics(y_true, probs.argmax(axis=1), head.labels)
        ece = expected_calibration_error(probs, y_true)
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
        section = Section(head.attribute).image("confusion matrix", picture)
        confused = most_confused(m["confusion"], head.labels)
        if confused:
            section.text(
                "Most confused (true -> predicted, count): " + "; ".join(f"{a} -> {b} ({n})" for a, b, n in confused)
            )
        _per_class_table(section, m)
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
            section.text("Balanced six-class test subset (the paper's sampling):")
            section.image("confusion matrix, balanced", "confusion-category-balanced.png")
            _per_class_table(section, bm)
        sections.append(section)
    heads = [
        Section("Test accuracy per head").table(
            ("head", "classes", "test images", "accuracy", "macro F1", "ECE", "skipped (label not a class)"),
            summary_rows,
        )
    ]
    if paper_rows:
        heads.append(Section("Side by side with the paper").table(("measure", "n", "ours", "paper"), paper_rows))
    return heads + sections, test_metrics


def evaluate_embedder(
    spec: ModelSpec,
    session: Any,
    model_dir: Path,
    dataset: data.Dataset,
    split: Mapping[int, str],
    report_dir: Path,
    threads: int = 2,
    catalogue: data.Dataset | None = None,
) -> tuple[list[Section], dict[str, Any]]:
    """Report sections and test metrics: reconstruction (autoencoders) and retrieval precision@5 against
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
    retrieval = Section("Retrieval").text(
        f"{r['queries']} test queries against the {r['catalogue']}-item train-split catalogue, Euclidean "
        f"top-{RETRIEVAL_K}. precision@{RETRIEVAL_K} = share of the {RETRIEVAL_K} results whose attribute equals "
        f"the query's. \"With filter\" restricts the catalogue to the query's true {FILTER_ATTRIBUTE} (an oracle "
        "filter, as if the classifier were always right)."
    )
    retrieval.table(
        ("match on", "without filter", f"with {FILTER_ATTRIBUTE} filter"),
        [(a, _pct(r["unfiltered"][a]), _pct(r["filtered"][a])) for a in MATCH_ATTRIBUTES],
    )
    sections = [retrieval]
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
        retrieval.image(f"8 queries and their top-{RETRIEVAL_K}, {mode}", f"queries-{mode}.png")

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
        reconstruction = Section("Reconstruction").text(
            f"Mean squared error per pixel on the {len(test)} test images (inputs in [0, 1]): **{mse:.5f}**."
        )
        sections.insert(0, reconstruction.image("reconstructions", "reconstructions.png"))
    history = spec.extra.get("training", {}).get("history", {})
    if plot_history(history, report_dir / "curves.png", f"{spec.name}: training and validation loss"):
        sections.append(Section("Training curves").image("training curves", "curves.png"))
    sections.append(
        Section("Side by side with the paper").text(
            "The paper shows its autoencoder's retrieval as pictures (its Figures 7 and 8) and gives no "
            "precision@5; the numbers above are the baseline that the production embedder is measured against."
        )
    )
    return sections, test_metrics


def evaluate_model(
    model_dir: str | Path,
    dataset: data.Dataset,
    split: Mapping[int, str],
    report_dir: str | Path,
    threads: int = 2,
    update_metrics: bool = True,
    catalogue: data.Dataset | None = None,
) -> Path:
    """Write report_dir/report.json and the README.md rendered from it (+ PNGs); with `update_metrics`,
    model.json's metrics gain a "test" entry.

    `catalogue`: what retrieval searches (default: the split's train images); a held-out evaluation (every
    image of `dataset` a test image) passes the training dataset's train split."""
    model_dir, report_dir = Path(model_dir), Path(report_dir)
    counts = {s: sum(1 for i in dataset.ids if split.get(int(i)) == s) for s in data.SPLITS}
    if not counts["test"]:
        raise data.DataError(f"no test images: the split assigns none of the {len(dataset)} images to test")
    spec, session = load_model(model_dir, threads)
    report_dir.mkdir(parents=True, exist_ok=True)
    report = _header(spec, dataset, counts, catalogue)
    if spec.kind == "classifier":
        body, test_metrics = evaluate_classifier(spec, session, dataset, split, report_dir)
    else:
        body, test_metrics = evaluate_embedder(spec, session, model_dir, dataset, split, report_dir, threads, catalogue)
    report.sections += body
    held_out = " --data HELD_OUT_DIR --held-out" if counts["test"] == len(dataset) else ""
    command = f"python -m training evaluate {_rel(model_dir)}{held_out} --report {_rel(report_dir)}"
    report.footer = f"Regenerate: `{command}`."
    path = save(report, report_dir)
    if update_metrics:
        metrics = dict(spec.metrics) | {"test": test_metrics}
        dataclasses.replace(spec, metrics=metrics).write(model_dir)
    log.info("test metrics of %s: %s", spec.identity, test_metrics)
    return path
