"""The robustness suite: served models on test photos changed the way shoppers' photos differ, one change at a time.

Every family of training/shopper.py at three fixed severities (and the clean photo), applied to a fixed sample of
the test split, and the two scenes a single-product photo meets most (issue 28): the product on a patch of a real
photograph (training/scenes.py's: the held-out one for the test split, the training ones for validation) and the
product small in the frame on a texture. The classifier answers on the changed photo; for the embedder the
changed photo is the query and the catalogue is the clean training split (a shopper's photo against packshots, as
the gateway searches). With a detector, each photo is first read as the gateway's Search reads it with crop=auto
(`as_searched`: fashionsearch.main_product's rule, the detector's main product cut out, and read beside the whole
photo when it covers enough of it (`read_both`), or the photo itself).
`python -m training robustness` writes the table for any number of (classifier, embedder) pairs side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fashionsearch import main_product
from training import data, detector_eval, scenes, shopper
from training import report as reports
from training.evaluate import load_model, predict, retrieval_metrics, true_labels
from training.report import Report, Section

log = logging.getLogger("training.robustness")

HEADS = ("articleType", "masterCategory", "subCategory", "gender", "baseColour")
# Goals of the issue: the most a shift may cost against the clean photo (points, or precision@5 x 100).
MAX_DROP = {"articleType": 6.0, "masterCategory": 1.0, "p@5": 8.0}


@dataclass(frozen=True)
class Backdrops:
    """What the background shifts put behind a product: other packshots (clutter) and real photographs."""

    donors: np.ndarray
    photos: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class Shift:
    family: str
    severity: int  # 0 = the clean photo, 1..3 mild to strong
    describe: str
    apply: Callable[[np.ndarray, np.random.Generator, Backdrops], np.ndarray]  # (image, rng, backdrops) -> image


def _background(kind: str, connected: bool, texture_scale: float = 1.0, size: float = 1.0) -> Callable[..., np.ndarray]:
    """The white background replaced by `kind`, the product first zoomed out to `size` (on white)."""

    def apply(img: np.ndarray, rng: np.random.Generator, backdrops: Backdrops) -> np.ndarray:
        if size != 1.0:
            img = shopper.affine(img, scale=size)
        h, w = img.shape[:2]
        if kind == "beige":  # a textured beige-grey surface, as in the measurement
            base = np.array([196.0, 186.0, 170.0])
            n = shopper.smooth_noise(rng, h, w, cell=4.0)[..., None]
            bg = base + (n - 0.5) * 70.0 * texture_scale + rng.normal(0, 6 * texture_scale, size=(h, w, 1))
        elif kind == "dark":
            bg = np.broadcast_to(np.array([70.0, 66.0, 62.0]), (h, w, 3)) + rng.normal(0, 4, size=(h, w, 1))
        elif kind == "photograph":
            bg = scenes.photo_background(rng, h, w, backdrops.photos)
        else:
            bg = shopper.texture(rng, h, w, kind, backdrops.donors)
        alpha = shopper.background_mask(img[None], connected=connected)[0]
        return shopper.composite(img.astype(np.float32), bg, alpha)

    return apply


def _suite() -> list[Shift]:
    s: list[Shift] = [Shift("clean", 0, "the test photo as it is", lambda img, rng, d: img)]

    def family(name: str, items: Sequence[tuple[str, Callable[..., np.ndarray]]]) -> None:
        s.extend(Shift(name, k + 1, describe, fn) for k, (describe, fn) in enumerate(items))

    family(
        "background: textured",
        [
            ("every white pixel replaced by a faint beige-grey texture", _background("beige", False, 0.5)),
            ("... a beige-grey texture", _background("beige", False, 1.0)),
            ("... a strong beige-grey texture", _background("beige", False, 1.8)),
        ],
    )
    family(
        "background: surfaces",
        [
            ("dark grey surface", _background("dark", True)),
            ("striped or checked cloth", _background("stripes", True)),
            ("clutter (other products, blurred)", _background("clutter", True)),
        ],
    )
    family(
        "background: photograph",
        [
            ("a patch of a real photograph", _background("photograph", True)),
            ("... the product at 80% size", _background("photograph", True, size=0.8)),
            ("... the product at 65% size", _background("photograph", True, size=0.65)),
        ],
    )
    family("dim light", [(f"brightness x{b}", _light(brightness=b)) for b in (0.8, 0.6, 0.4)])
    family("low contrast", [(f"contrast x{c}", _light(contrast=c)) for c in (0.7, 0.5, 0.35)])
    family(
        "colour cast",
        [
            ("warm light (R +6%, B -6%)", _light(gains=shopper.temperature(0.06))),
            ("warm light (R +12%, B -12%)", _light(gains=shopper.temperature(0.12))),
            ("cool light (R -12%, B +12%)", _light(gains=shopper.temperature(-0.12))),
        ],
    )
    family("sensor noise", [(f"Gaussian, sigma {n}", _noise(n)) for n in (6, 12, 20)])
    family("blur", [(f"Gaussian, radius {r}", _blur(r)) for r in (0.8, 1.2, 2.0)])
    family("JPEG", [(f"quality {q}", _jpeg(q)) for q in (30, 15, 8)])
    family("tilt", [(f"rotated {a} degrees", _affine(angle=a)) for a in (8, 15, 25)])
    family("crop", [(f"central {round(f * 100)}%", _crop(f)) for f in (0.9, 0.8, 0.65)])
    family("zoomed out", [(f"product at {round(z * 100)}% size", _affine(scale=z)) for z in (0.85, 0.7, 0.55)])
    family(
        "small on a texture",
        [
            (f"product at {round(z * 100)}% size on a beige-grey texture", _background("beige", True, size=z))
            for z in (0.8, 0.65, 0.5)
        ],
    )
    family("occlusion", [(f"{round(a * 100)}% of the photo covered", _occlude(a)) for a in (0.1, 0.2, 0.3)])
    return s


def _light(**kwargs: Any) -> Callable[..., np.ndarray]:
    return lambda img, rng, d: shopper.light(img, **kwargs)


def _noise(sigma: float) -> Callable[..., np.ndarray]:
    return lambda img, rng, d: shopper.noise(img, sigma, rng)


def _blur(radius: float) -> Callable[..., np.ndarray]:
    return lambda img, rng, d: shopper.blur(img, radius)


def _jpeg(quality: int) -> Callable[..., np.ndarray]:
    return lambda img, rng, d: shopper.jpeg(img, quality)


def _affine(**kwargs: Any) -> Callable[..., np.ndarray]:
    return lambda img, rng, d: shopper.affine(img, **kwargs)


def _crop(fraction: float) -> Callable[..., np.ndarray]:
    return lambda img, rng, d: shopper.crop(img, fraction)


def _occlude(area: float) -> Callable[..., np.ndarray]:
    return lambda img, rng, d: shopper.occlude(img, area, rng)


SUITE = _suite()
FAMILIES = tuple(dict.fromkeys(s.family for s in SUITE))


def shifted(images: np.ndarray, shift: Shift, backdrops: Backdrops) -> np.ndarray:
    """The shift applied to every image, with randomness seeded by the shift's name (the same photos every run)."""
    seed = int(hashlib.sha256(f"{shift.family}/{shift.severity}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    return np.stack([shift.apply(np.ascontiguousarray(img), rng, backdrops) for img in images])


#: When crop=auto reads the main product's cut-out beside the whole photo (main_product.read_beside_whole), as a
#: report says it; results measured before the rival rule say nothing and had the first.
BESIDE_WHOLE_BEFORE = "its box covers 15% of it or more"
BESIDE_WHOLE = "its box covers 15% of it or more, or another product scores at least half its score"


def of_families(families: Sequence[str]) -> list[Shift]:
    """The suite's shifts of these families, and the clean photo."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown shift families {sorted(unknown)}; the suite has {', '.join(FAMILIES)}")
    return [s for s in SUITE if s.severity == 0 or s.family in families]


def as_searched(images: np.ndarray, session: Any, spec: Any) -> tuple[list[np.ndarray], np.ndarray, float]:
    """Each photo's main product as the gateway's Search cuts it with crop=auto (fashionsearch.main_product): the
    detector's main product (model.json's threshold) cut out, JPEG-encoded as the gateway sends it, or the photo
    itself when none is cut out; which cut-outs Search reads beside the whole photo, averaging the two readings
    (main_product.read_beside_whole, `read_both`); and the share of photos cut out."""
    found = detector_eval.detect(session, spec, list(images), score_threshold=None, max_detections=None)
    out, beside, cut = [], [], 0
    for image, detections in zip(images, found, strict=True):
        size = (image.shape[1], image.shape[0])
        # A packshot by its pixels is read whole before the detector is asked (the gateway does not call it then).
        best = None if main_product.is_packshot(image) else main_product.main_product(image, detections, size)
        if best is None:
            out.append(image)
            beside.append(False)
        else:
            piece = np.asarray(main_product.cut_out(Image.fromarray(image), best, size))
            out.append(shopper.jpeg(piece, main_product.JPEG_QUALITY))
            beside.append(main_product.read_beside_whole(detections, size))
            cut += 1
    return out, np.asarray(beside, dtype=bool), cut / max(len(out), 1)


def outputs_of(
    c_session: Any, c_spec: Any, e_session: Any, e_spec: Any, images: Any, one_file: bool
) -> dict[str, np.ndarray]:
    """The classifier's outputs for the photos, with the embedder's vector; a one-pass file named for both
    (`one_file`: models/classifier/with-embedder.int8.onnx) gives both in one run."""
    outputs = predict(c_session, c_spec, images)
    if one_file:
        return outputs
    vector = e_spec.embedding.output
    return outputs | {vector: predict(e_session, e_spec, images)[vector]}


def read_both(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray], vector: str) -> dict[str, np.ndarray]:
    """Two readings of the same photos (model outputs by name) averaged as the gateway averages them
    (services/gateway/readings.py): each head's probabilities, and the `vector` output at the two vectors' mean
    length. The gateway averages the top labels the classifier sends (of its hierarchical decoding); here every
    label's probability, each head decoded alone."""
    averaged = {name: (first[name] + second[name]) / 2 for name in first}
    a, b = first[vector], second[vector]
    length = (np.linalg.norm(a, axis=1, keepdims=True) + np.linalg.norm(b, axis=1, keepdims=True)) / 2
    norm = np.maximum(np.linalg.norm(averaged[vector], axis=1, keepdims=True), 1e-12)
    averaged[vector] = averaged[vector] * (length / norm)
    return averaged


def sample(test: data.Dataset, n: int, seed: int = 20261130) -> data.Dataset:
    if n >= len(test):
        return test
    return test.subset(np.sort(np.random.default_rng(seed).permutation(len(test))[:n]))


def measure(
    pairs: Mapping[str, tuple[Path, Path]],
    dataset: data.Dataset,
    split: dict[int, str],
    n: int,
    threads: int = 2,
    shifts: Sequence[Shift] = SUITE,
    on: str = "test",
    detector: Path | None = None,
) -> dict[str, Any]:
    """{model: {shift key: {head accuracies, p@5 unfiltered/filtered}}} for every (classifier, embedder) pair, on
    a fixed sample of the `on` split ("val" to choose between models, "test" to report). With a `detector`, each
    pair is measured twice, on the photos as they are (crop=none) and as crop=auto reads them (`as_searched`; the
    model "NAME crop=auto"), and "cut" says the share of photos cut out per shift."""
    test = sample(dataset.split(split, on), n)
    if not len(test):
        raise data.DataError(f"the split has no {on} images to measure robustness on")
    train = dataset.split(split, "train")
    donors = train.images[np.random.default_rng(7).permutation(len(train))[:500]]
    needs_photos = any(s.family == "background: photograph" for s in shifts)
    names = scenes.TEST_PHOTOS if on == "test" else scenes.TRAIN_PHOTOS  # the held-out photograph is the test's
    backdrops = Backdrops(donors, scenes.load_photos(names) if needs_photos else ())
    photos = {f"{s.family}/{s.severity}": shifted(test.images, s, backdrops) for s in shifts}
    views: dict[str, Mapping[str, np.ndarray | Sequence[np.ndarray]]] = {"": photos}
    beside_whole: dict[str, np.ndarray] = {}  # crop=auto: the photos whose cut-out is read beside the whole photo
    truth = {a: true_labels(test, a) for a in HEADS}
    results: dict[str, Any] = {"split": on, "images": len(test), "catalogue": len(train), "models": {}}
    if needs_photos:
        results["photographs"] = list(names)
    if detector is not None:
        d_spec, d_session = load_model(detector, threads)
        searched = {key: as_searched(images, d_session, d_spec) for key, images in photos.items()}
        views[" crop=auto"] = {key: cut_photos for key, (cut_photos, _, _) in searched.items()}
        beside_whole = {key: beside for key, (_, beside, _) in searched.items()}
        results["detector"], results["cut"] = d_spec.identity, {key: share for key, (_, _, share) in searched.items()}
        results["beside_whole"] = BESIDE_WHOLE
    for name, (classifier_dir, embedder_dir) in pairs.items():
        c_spec, c_session = load_model(classifier_dir, threads)
        e_spec, e_session = load_model(embedder_dir, threads)
        catalogue = predict(e_session, e_spec, train.images)[e_spec.embedding.output]  # type: ignore[union-attr]
        vector = e_spec.embedding.output  # type: ignore[union-attr]
        read = partial(outputs_of, c_session, c_spec, e_session, e_spec, one_file=classifier_dir == embedder_dir)
        whole: dict[str, dict[str, np.ndarray]] = {}  # the photos' own readings (crop=none), reused by crop=auto
        for suffix, view in views.items():
            rows = {}
            for key, images in view.items():
                outputs = read(images)
                if not suffix:
                    whole[key] = outputs
                elif beside_whole[key].any():  # crop=auto: the larger cut-outs read beside their photos
                    both = read_both(outputs, whole[key], vector)
                    outputs = {out: np.where(beside_whole[key][:, None], both[out], o) for out, o in outputs.items()}
                row = {}
                for head in c_spec.outputs:
                    if head.attribute in HEADS:
                        labels = np.asarray(head.labels)
                        predicted = labels[outputs[head.name].argmax(axis=1)]
                        keep = truth[head.attribute] != ""
                        row[head.attribute] = float((predicted[keep] == truth[head.attribute][keep]).mean())
                r = retrieval_metrics(outputs[vector], catalogue, test.labels, train.labels)
                row["p@5"] = r["unfiltered"]["articleType"]
                row["p@5 filtered"] = r["filtered"]["articleType"]
                rows[key] = row
            model = {"classifier": c_spec.identity, "embedder": e_spec.identity, "rows": rows}
            results["models"][name + suffix] = model
    return results


def report(results: Mapping[str, Any], shifts: Sequence[Shift] = SUITE) -> Report:
    """The robustness report of `results` (what `measure` wrote, with the "command" that ran it, and optionally a
    "title", a "note" before the description and "remarks" after it, for a table made to choose between models):
    the table (accuracy in %, precision@5 x 100), each shift's change against clean in brackets, and which goals
    every model meets."""
    names = list(results["models"])
    section = Section("").text(f"`{results.get('command', 'python -m training robustness')}`")
    section.text(
        (f"{results['note']} " if results.get("note") else "")
        + f"{'Test' if results['split'] == 'test' else 'Validation'} split, "
        f"{results['images']} photos (a fixed sample), each changed one way at a time; accuracy in %, "
        f"precision@5 of articleType x 100 against the clean training split ({results['catalogue']} packshots), "
        "unfiltered and filtered by the true subCategory. In brackets: the change against the clean photo."
    )
    section.text(
        "Models: " + "; ".join(f"{m} = {r['classifier']} + {r['embedder']}" for m, r in results["models"].items())
    )
    if results.get("photographs"):
        section.text(f"Real photographs behind the product: {', '.join(results['photographs'])} (training/scenes.py).")
    cut = results.get("cut")
    if cut is not None:
        section.text(
            f"{', '.join(m for m in names if m.endswith(' crop=auto'))}: each photo read as the gateway's Search "
            f"reads it with crop=auto, detector {results['detector']}: the photo itself when it is a packshot (its "
            "border the catalogue's white), the detector finds nothing or its best box covers half the photo, else "
            "that product cut out (fashionsearch/main_product.py), and read beside the whole photo when "
            f"{results.get('beside_whole', BESIDE_WHOLE_BEFORE)}, the two readings averaged "
            "(services/gateway/readings.py); "
            'the column "cut out" says how many of the photos were cut out. The others read every photo whole '
            "(crop=none)."
        )
    for remark in results.get("remarks", ()):
        section.text(remark)
    columns = [("articleType", "articleType"), ("masterCategory", "master"), ("p@5", "P@5"), ("p@5 filtered", "P@5 f")]
    header = ["family", "shift", *(["cut out"] if cut is not None else [])]
    header += [f"{m}: {label}" for m in names for _, label in columns]
    rows = []
    worst: dict[str, dict[str, float]] = {m: {} for m in names}
    measured_keys = set(results["models"][names[0]]["rows"]) if names else set()
    for s in shifts:
        key = f"{s.family}/{s.severity}"
        if key not in measured_keys:  # a run of some families only
            continue
        cells = [s.family, s.describe, *([f"{100 * cut[key]:.0f}%"] if cut is not None else [])]
        for m in names:
            measured = results["models"][m]["rows"]
            for metric, _ in columns:
                value, clean = 100 * measured[key][metric], 100 * measured["clean/0"][metric]
                cells.append(f"{value:.1f}" if s.severity == 0 else f"{value:.1f} ({value - clean:+.1f})")
                if s.severity:
                    worst[m][metric] = min(worst[m].get(metric, 0.0), value - clean)
        rows.append(cells)
    section.table(header, rows)
    section.text("Largest loss against the clean photo over every shift (goal in brackets):")
    section.table(
        ("model", "articleType (>= -6)", "masterCategory (>= -1)", "P@5 (>= -8)", "P@5 filtered"),
        [
            [m, *(f"{worst[m][metric]:+.1f}" for metric in ("articleType", "masterCategory", "p@5", "p@5 filtered"))]
            for m in names
        ],
    )
    return Report(results.get("title", "Robustness of the served models to shoppers' photos"), [section])


def model_section(
    results: Mapping[str, Any], identity: str, kind: str, source: str = "reports/robustness/README.md"
) -> Section | None:
    """The robustness table of one model (`identity` "name:version", a classifier or an embedder) for its own
    report: its pair's rows of `results` (what `measure` wrote, reports/robustness/README.json), the classifier's
    articleType and masterCategory accuracy or the embedder's precision@5; None when no pair has the model."""
    role = "classifier" if kind == "classifier" else "embedder"
    found = [(name, pair) for name, pair in results["models"].items() if pair[role] == identity]
    if not found:
        return None
    name, pair = found[0]
    columns = (
        [("articleType", "articleType"), ("masterCategory", "masterCategory")]
        if role == "classifier"
        else [("p@5", "P@5"), ("p@5 filtered", "P@5, subCategory filter")]
    )
    rows, worst = [], {metric: 0.0 for metric, _ in columns}
    for s in SUITE:
        key = f"{s.family}/{s.severity}"
        if key not in pair["rows"]:
            continue
        cells = [s.family, s.describe]
        for metric, _ in columns:
            value, clean = 100 * pair["rows"][key][metric], 100 * pair["rows"]["clean/0"][metric]
            cells.append(f"{value:.1f}" if s.severity == 0 else f"{value:.1f} ({value - clean:+.1f})")
            if s.severity:
                worst[metric] = min(worst[metric], value - clean)
        rows.append(cells)
    measured = "accuracy in %" if role == "classifier" else "precision@5 of articleType x 100"
    section = Section(f"Robustness to shoppers' photos ({results['split']} split)").text(
        f"{results['images']} {results['split']} photos (a fixed sample), each changed one way at a time, {measured}"
        + (f" against the clean training split ({results['catalogue']} packshots)" if role == "embedder" else "")
        + f'; in brackets the change against the clean photo. Measured as the pair "{name}" ({pair["classifier"]} '
        f"+ {pair['embedder']}); every pair side by side: {source}."
    )
    section.table(["family", "shift", *(label for _, label in columns)], rows)
    goals = {metric: MAX_DROP.get(metric) for metric, _ in columns}
    return section.text(
        "Largest loss against the clean photo over every shift: "
        + ", ".join(
            f"{label} {worst[metric]:+.1f}" + (f" (goal >= -{goals[metric]:g})" if goals[metric] else "")
            for metric, label in columns
        )
        + "."
    )


#: The 1,500-photo table of every pair (`python -m training robustness` on the test split, no detector).
DEFAULT_RESULTS = data.REPO_ROOT / "reports" / "robustness" / "README.json"


def render_model_reports(folders: Sequence[Path], models: Path, results_files: Sequence[Path]) -> None:
    """Each report folder's report.json rendered again into its README.md, a classifier's or embedder's report with
    its robustness section (`model_section`) from the first of `results_files` that has a pair holding the model
    (its version as models/<folder>/model.json says). No model is run; a results file that is not there is a
    DataError (a mistyped path would otherwise leave the reports without their rows, silently)."""
    if missing := [str(f) for f in results_files if not f.is_file()]:
        raise data.DataError(f"robustness results not found: {', '.join(missing)}")
    results = [(f, json.loads(f.read_text())) for f in results_files]
    for folder in folders:
        document = reports.load(folder)
        model_json = models / folder.name / "model.json"
        # Only the name, version and kind: a text model's model.json is another contract (text_contract).
        spec = json.loads(model_json.read_text()) if model_json.is_file() else {}
        if spec.get("kind") in ("classifier", "embedder"):
            identity = f"{spec['name']}:{spec['version']}"
            for results_file, measured in results:
                source = results_file.with_suffix(".md")
                shown = source.relative_to(data.REPO_ROOT) if source.is_relative_to(data.REPO_ROOT) else source
                section = model_section(measured, identity, spec["kind"], source=str(shown))
                if section is None:
                    continue
                summary = "summary-against-the-targets-test-split"
                if document.get(summary) is not None:
                    document.put(section, after=(summary,))
                else:
                    document.put(section, before=("training", "test-accuracy-per-head", "retrieval"))
                break
        log.info("wrote %s", reports.save(document, folder))
