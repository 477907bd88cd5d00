"""The Fashion Product Images (Small) dataset: labels, images, the fixed split, label vocabularies, tf.data input.

Everything a training, export or evaluation step needs from the data goes through this module:

- `read_styles()` parses styles.csv robustly (22 names hold unquoted commas; two are CSV-quoted);
- `load_dataset()` keeps the rows that have a decodable image, says how many it skipped and why, and decodes every
  image once into a uint8 cache (native 80x60, HxW) so later runs start in seconds;
- `make_split()` / `load_split()` / `write_split()`: the seeded split stratified by articleType, kept in a file so
  every experiment and report uses the same one (`training/splits/split-v1.csv`);
- `build_vocabularies()`: one label vocabulary per attribute with a documented rare-class rule;
- `images_for_input()` + `make_tf_dataset()`: model input exactly as `fashionsearch.model_contract.preprocess`
  makes it (the contract's own resize, then the same float32 normalisation), with the paper's augmentation.

TensorFlow is imported lazily, so the loader, split and vocabulary code also work without it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import random
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from fashionsearch.catalogue import FILTER_FIELDS, STYLES_COLUMNS, split_styles_line, unquote_name
from fashionsearch.model_contract import InputSpec, resize_to_input

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

COLUMNS = STYLES_COLUMNS
# The attributes a classifier can predict (one head each).
ATTRIBUTES = FILTER_FIELDS
# Values that mean "not labelled": such an example gets no target for that attribute.
MISSING_VALUES = frozenset({"", "NA"})

NATIVE_HEIGHT, NATIVE_WIDTH = 80, 60
SPLITS = ("train", "val", "test")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPLIT_FILE = REPO_ROOT / "training" / "splits" / "split-v1.csv"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images-small"
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "training"


def default_data_dir() -> Path:
    """FASHIONSEARCH_DATA, else ../shared/data/fashion-product-images-small beside the repo."""
    return Path(os.environ.get("FASHIONSEARCH_DATA", DEFAULT_DATA_DIR))


def default_cache_dir() -> Path:
    """FASHIONSEARCH_CACHE, else the git-ignored .cache/training in the repo."""
    return Path(os.environ.get("FASHIONSEARCH_CACHE", DEFAULT_CACHE_DIR))


class DataError(ValueError):
    """The dataset folder is missing or unusable."""


# --------------------------------------------------------------------------------------------------------------
# styles.csv


@dataclass(frozen=True)
class StylesTable:
    """Parsed styles.csv: one dict per usable row (all values str, id as int), plus the lines that were not."""

    rows: tuple[dict[str, Any], ...]
    malformed: tuple[tuple[int, str], ...]  # (line number, reason)
    commas_in_name: int  # rows whose unquoted name held commas (the name took the rest of the line)


def read_styles(path: str | os.PathLike[str]) -> StylesTable:
    """Read styles.csv: each line splits into at most 10 fields, the product name takes the rest.

    A CSV-quoted name is unquoted; a name with unquoted commas is kept whole. Lines with fewer than 10 fields,
    a non-integer or repeated id are skipped and listed in `malformed`.
    """
    rows: list[dict[str, Any]] = []
    malformed: list[tuple[int, str]] = []
    commas = 0
    seen: set[int] = set()
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n").split(",")
        if tuple(header) != COLUMNS:
            raise DataError(f"{path}: unexpected header {header}, expected {list(COLUMNS)}")
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            parts = split_styles_line(line)
            if len(parts) < len(COLUMNS):
                malformed.append((lineno, f"{len(parts)} fields, expected {len(COLUMNS)}"))
                continue
            try:
                style_id = int(parts[0])
            except ValueError:
                malformed.append((lineno, f"id {parts[0]!r} is not an integer"))
                continue
            if style_id in seen:
                malformed.append((lineno, f"id {style_id} repeated"))
                continue
            seen.add(style_id)
            raw_name = parts[-1]
            name = unquote_name(raw_name)
            if name == raw_name and "," in raw_name:
                commas += 1
            row: dict[str, Any] = dict(zip(COLUMNS[1:-1], (p.strip() for p in parts[1:-1]), strict=True))
            row["id"] = style_id
            row["productDisplayName"] = name.strip()
            rows.append(row)
    return StylesTable(rows=tuple(rows), malformed=tuple(malformed), commas_in_name=commas)


# --------------------------------------------------------------------------------------------------------------
# Images and the dataset


@dataclass(frozen=True)
class LoadReport:
    """What `load_dataset` kept and skipped, and why."""

    rows: int
    kept: int
    malformed_rows: tuple[tuple[int, str], ...]
    missing_image_ids: tuple[int, ...]
    corrupt_image_ids: tuple[int, ...]
    resized_image_ids: tuple[int, ...]  # images not 80x60 that were resized to it
    commas_in_name: int

    def summary(self) -> str:
        return (
            f"{self.rows} rows in styles.csv, {self.kept} kept; skipped {len(self.missing_image_ids)} without an "
            f"image, {len(self.corrupt_image_ids)} with a corrupt image, {len(self.malformed_rows)} malformed rows; "
            f"{self.commas_in_name} names with unquoted commas; {len(self.resized_image_ids)} images resized"
        )


@dataclass(frozen=True)
class Dataset:
    """Rows that have a decodable image, ordered by id, with their images (uint8, N x 80 x 60 x 3, RGB)."""

    ids: np.ndarray  # int64 (N,)
    labels: Mapping[str, np.ndarray]  # attribute (and "year", "productDisplayName") -> str array (N,)
    images: np.ndarray  # uint8 (N, 80, 60, 3)
    report: LoadReport | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | Sequence[int]) -> Dataset:
        """Rows selected by an integer index or a boolean mask, in that order."""
        index = np.asarray(index)
        return Dataset(
            ids=self.ids[index],
            labels={k: v[index] for k, v in self.labels.items()},
            images=self.images[index],
            report=self.report,
        )

    def at_most(self, limit: int | None, seed: int) -> Dataset:
        """At most `limit` rows, drawn at random with `seed`, in their order (all rows when limit is None): the
        recipes' smoke-test option."""
        if limit is None or limit >= len(self):
            return self
        return self.subset(np.sort(np.random.default_rng(seed).choice(len(self), size=limit, replace=False)))

    def split(self, assignment: Mapping[int, str], name: str) -> Dataset:
        """The rows the split assigns to `name` ("train", "val" or "test"); rows it does not know are dropped."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        mask = np.fromiter((assignment.get(int(i)) == name for i in self.ids), dtype=bool, count=len(self.ids))
        return self.subset(np.flatnonzero(mask))


def _decode(path: Path) -> tuple[np.ndarray | None, bool]:
    """(uint8 80x60x3 RGB or None when corrupt, whether it had to be resized)."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as bad:
        log.warning("corrupt image %s: %s", path, bad)
        return None, False
    resized = rgb.size != (NATIVE_WIDTH, NATIVE_HEIGHT)
    if resized:
        rgb = rgb.resize((NATIVE_WIDTH, NATIVE_HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8), resized


def _atomic_save(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npy")
    with os.fdopen(fd, "wb") as out:
        np.save(out, array)
    os.replace(tmp, path)


def _decode_all(
    image_dir: Path, ids: Sequence[int], cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Decode every image once; the result is cached under cache_dir keyed by the files' ids, sizes and mtimes.

    Returns (ok ids, images of the ok ids, corrupt ids, resized ids).
    """
    stats = []
    for i in ids:
        st = (image_dir / f"{i}.jpg").stat()
        stats.append(f"{i}:{st.st_size}:{st.st_mtime_ns}")
    key = hashlib.sha256("\n".join(stats).encode()).hexdigest()[:16]
    entry = cache_dir / f"images-{NATIVE_HEIGHT}x{NATIVE_WIDTH}-{key}" if cache_dir is not None else None
    if entry is not None and (entry / "meta.json").is_file():
        meta = json.loads((entry / "meta.json").read_text())
        log.info("image cache hit: %s", entry)
        return (
            np.load(entry / "ids.npy"),
            np.load(entry / "images.npy"),
            list(meta["corrupt"]),
            list(meta["resized"]),
        )
    log.info("decoding %d images from %s (cached afterwards)", len(ids), image_dir)
    images = np.empty((len(ids), NATIVE_HEIGHT, NATIVE_WIDTH, 3), dtype=np.uint8)
    ok: list[int] = []
    corrupt: list[int] = []
    resized: list[int] = []
    for i in ids:
        pixels, was_resized = _decode(image_dir / f"{i}.jpg")
        if pixels is None:
            corrupt.append(int(i))
            continue
        if was_resized:
            resized.append(int(i))
        images[len(ok)] = pixels
        ok.append(int(i))
    ok_ids = np.asarray(ok, dtype=np.int64)
    images = images[: len(ok)]
    if entry is not None:
        entry.mkdir(parents=True, exist_ok=True)
        _atomic_save(entry / "ids.npy", ok_ids)
        _atomic_save(entry / "images.npy", images)
        (entry / "meta.json").write_text(json.dumps({"corrupt": corrupt, "resized": resized, "n": len(ok)}))
    return ok_ids, images, corrupt, resized


def load_dataset(
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None | Literal[False] = None,
) -> Dataset:
    """Load styles.csv and the images of `data_dir`; rows without a (decodable) image are skipped and counted.

    `cache_dir=None` uses `default_cache_dir()`, `False` disables the cache.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    styles, image_dir = root / "styles.csv", root / "images"
    if not styles.is_file() or not image_dir.is_dir():
        raise DataError(f"{root} is not the dataset: it needs styles.csv and images/ (set FASHIONSEARCH_DATA)")
    table = read_styles(styles)
    present = {int(p.name[:-4]) for p in os.scandir(image_dir) if p.name.endswith(".jpg") and p.name[:-4].isdigit()}
    rows = sorted((r for r in table.rows if r["id"] in present), key=lambda r: r["id"])
    missing = tuple(sorted(r["id"] for r in table.rows if r["id"] not in present))
    cache = None if cache_dir is False else Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ok_ids, images, corrupt, resized = _decode_all(image_dir, [r["id"] for r in rows], cache)
    ok_set = set(ok_ids.tolist())
    rows = [r for r in rows if r["id"] in ok_set]
    labels = {name: np.asarray([r[name] for r in rows], dtype=object) for name in COLUMNS[1:]}
    report = LoadReport(
        rows=len(table.rows) + len(table.malformed),
        kept=len(rows),
        malformed_rows=table.malformed,
        missing_image_ids=missing,
        corrupt_image_ids=tuple(corrupt),
        resized_image_ids=tuple(resized),
        commas_in_name=table.commas_in_name,
    )
    log.info("%s", report.summary())
    if corrupt:
        log.warning("corrupt images (skipped): %s", corrupt[:20])
    return Dataset(ids=ok_ids, labels=labels, images=images, report=report)


# --------------------------------------------------------------------------------------------------------------
# The split


def make_split(
    ids: Sequence[int] | np.ndarray,
    strata: Sequence[str] | np.ndarray,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 20240601,
) -> dict[int, str]:
    """A seeded split stratified by `strata` (articleType): each class is shuffled and cut by `fractions`.

    Per class, val and test get round(n * fraction) items and train the rest, so a class with one or two items
    lives in train only. The result depends only on the ids, their classes and the seed, not on row order.
    """
    if len(ids) != len(strata):
        raise ValueError("ids and strata differ in length")
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    by_class: dict[str, list[int]] = {}
    for i, s in zip(ids, strata, strict=True):
        by_class.setdefault(str(s), []).append(int(i))
    rng = np.random.default_rng(seed)
    assignment: dict[int, str] = {}
    for cls in sorted(by_class):
        members = np.asarray(sorted(by_class[cls]), dtype=np.int64)
        rng.shuffle(members)
        n = len(members)
        n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
        for k, i in enumerate(members):
            assignment[int(i)] = "val" if k < n_val else "test" if k < n_val + n_test else "train"
    return assignment


def write_split(assignment: Mapping[int, str], path: str | os.PathLike[str]) -> Path:
    """Write `id,split` lines, sorted by id."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8", newline="") as f:
        f.write("id,split\n")
        for i in sorted(assignment):
            f.write(f"{i},{assignment[i]}\n")
    return target


def load_split(path: str | os.PathLike[str]) -> dict[int, str]:
    assignment: dict[int, str] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        if next(reader, None) != ["id", "split"]:
            raise DataError(f"{path}: expected the header 'id,split'")
        for row in reader:
            if row[1] not in SPLITS:
                raise DataError(f"{path}: unknown split {row[1]!r} for id {row[0]}")
            assignment[int(row[0])] = row[1]
    return assignment


def get_split(
    dataset: Dataset, path: str | os.PathLike[str] | None = None, create: bool = False, seed: int = 20240601
) -> dict[int, str]:
    """The split in `path` (default training/splits/split-v1.csv); made from `dataset` and written when absent
    and `create` is true. Ids of the dataset that the file does not know are an error: the split is stale."""
    target = Path(path) if path is not None else DEFAULT_SPLIT_FILE
    if target.is_file():
        assignment = load_split(target)
        unknown = [int(i) for i in dataset.ids if int(i) not in assignment]
        if unknown:
            raise DataError(
                f"{target} does not cover {len(unknown)} ids of the dataset (e.g. {unknown[:5]}); to evaluate a "
                "labelled set of your own, pass --held-out to `python -m training evaluate`"
            )
        return assignment
    if not create:
        raise DataError(f"no split file {target}; run `python -m training split` to make one")
    assignment = make_split(dataset.ids, dataset.labels["articleType"], seed=seed)
    write_split(assignment, target)
    log.info("wrote split %s: %s", target, dict(Counter(assignment.values())))
    return assignment


# --------------------------------------------------------------------------------------------------------------
# Label vocabularies


@dataclass(frozen=True)
class Vocabulary:
    """The classes of one attribute, as a model head sees them.

    Rare-class rule: a class with fewer than `min_count` training examples is either ignored (`policy="ignore"`:
    those examples get no target for this attribute, label -1, and the head never predicts the class) or merged
    into one `other_label` class (`policy="other"`). Missing values ("" and "NA") are always label -1.
    """

    attribute: str
    labels: tuple[str, ...]
    min_count: int
    policy: Literal["ignore", "other"]
    rare: tuple[str, ...] = ()
    other_label: str = "Other"
    counts: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, values: Iterable[str]) -> np.ndarray:
        """str values -> int32 class indices, -1 for missing, ignored-rare or unknown values."""
        index = {label: k for k, label in enumerate(self.labels)}
        rare = set(self.rare)
        other = index.get(self.other_label, -1) if self.policy == "other" else -1
        out = [index.get(v, other if v in rare else -1) if v not in MISSING_VALUES else -1 for v in values]
        return np.asarray(out, dtype=np.int32)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"counts": dict(self.counts)}


def build_vocabulary(
    attribute: str,
    train_values: Iterable[str],
    min_count: int = 10,
    policy: Literal["ignore", "other"] = "ignore",
    other_label: str = "Other",
) -> Vocabulary:
    """Classes sorted by name; see `Vocabulary` for the rare-class rule."""
    if policy not in ("ignore", "other"):
        raise ValueError(f"policy must be 'ignore' or 'other', got {policy!r}")
    counts = Counter(v for v in train_values if v not in MISSING_VALUES)
    kept = sorted(c for c, n in counts.items() if n >= min_count)
    rare = tuple(sorted(c for c, n in counts.items() if n < min_count))
    if policy == "other" and rare:
        if other_label in counts:
            raise ValueError(f"{attribute}: other_label {other_label!r} is already a class")
        kept.append(other_label)
    return Vocabulary(
        attribute=attribute,
        labels=tuple(kept),
        min_count=min_count,
        policy=policy,
        rare=rare,
        other_label=other_label,
        counts=dict(sorted(counts.items())),
    )


def build_vocabularies(
    train: Dataset,
    attributes: Sequence[str] = ATTRIBUTES,
    min_count: int = 10,
    policy: Literal["ignore", "other"] = "ignore",
) -> dict[str, Vocabulary]:
    """One vocabulary per attribute from the TRAINING split only."""
    return {a: build_vocabulary(a, train.labels[a], min_count=min_count, policy=policy) for a in attributes}


# --------------------------------------------------------------------------------------------------------------
# The paper's six-class subset


PAPER_CLASSES = ("Bottomwear", "Dress", "Kurtis", "Loungewear and Nightwear", "Saree", "Topwear")


def paper_class(sub_category: str, article_type: str) -> str | None:
    """The paper's six classes: Kurtis (articleType Kurtas or Kurtis; this copy has too few "Kurtis" alone for
    the paper's ~400 per class), Saree, Dress, Loungewear and Nightwear (subCategories), and Topwear and
    Bottomwear (subCategories, Topwear without the kurtas). None for everything else."""
    if article_type in ("Kurtas", "Kurtis"):
        return "Kurtis"
    if sub_category in PAPER_CLASSES:
        return sub_category
    return None


def paper_subset(dataset: Dataset, per_class: int = 400, seed: int = 20240601) -> tuple[Dataset, np.ndarray]:
    """The balanced six-class subset: at most `per_class` items of each class sampled from the whole dataset
    (so about 2,300 in all, as in the paper), returned with int32 targets indexing PAPER_CLASSES. Intersect it
    with the split afterwards, so the test split stays untouched by training."""
    classes = [
        paper_class(s, a) for s, a in zip(dataset.labels["subCategory"], dataset.labels["articleType"], strict=True)
    ]
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for cls in PAPER_CLASSES:
        members = np.asarray([k for k, c in enumerate(classes) if c == cls], dtype=np.int64)
        if len(members) > per_class:
            members = np.sort(rng.choice(members, size=per_class, replace=False))
        chosen.extend(members.tolist())
    index = np.asarray(sorted(chosen), dtype=np.int64)
    targets = np.asarray([PAPER_CLASSES.index(classes[k]) for k in index], dtype=np.int32)
    return dataset.subset(index), targets


# --------------------------------------------------------------------------------------------------------------
# Model input and tf.data


def images_for_input(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 (N, h, w, 3) -> uint8 (N, spec.height, spec.width, 3), resized by the contract's own function."""
    if images.shape[1:3] == (spec.height, spec.width):
        return np.asarray(images, dtype=np.uint8)
    out = np.empty((len(images), spec.height, spec.width, 3), dtype=np.uint8)
    for k, img in enumerate(images):
        out[k] = resize_to_input(img, spec)
    return out


def normalize_tf(pixels: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    """The contract's `normalize` in TensorFlow: (x * scale - mean) / std in float32, bit for bit the same."""
    import tensorflow as tf

    scale = tf.constant(np.float32(spec.scale))
    mean = tf.constant(np.asarray(spec.mean, dtype=np.float32))
    std = tf.constant(np.asarray(spec.std, dtype=np.float32))
    return (tf.cast(pixels, tf.float32) * scale - mean) / std


@dataclass(frozen=True)
class Augmentation:
    """The paper's augmentation: random shifts, zoom, rotation and horizontal flip, one affine warp per image.

    No colour or hue changes: colour is a label. Empty borders repeat the nearest edge pixel (the product photos
    sit on a plain background).
    """

    shift: float = 0.1  # fraction of width/height
    zoom: float = 0.1  # scale in [1 - zoom, 1 + zoom]
    rotation_deg: float = 10.0
    hflip: bool = True

    def apply(self, pixels: tf.Tensor, seed: int | None = None) -> tf.Tensor:
        """Augment a float32 batch (N, H, W, C) of pixel values (before normalisation)."""
        import tensorflow as tf

        shape = tf.shape(pixels)
        n = shape[0]
        h = tf.cast(shape[1], tf.float32)
        w = tf.cast(shape[2], tf.float32)

        def uniform(lo: float, hi: float, k: int) -> tf.Tensor:
            return tf.random.uniform([n], lo, hi, seed=None if seed is None else seed + k)

        theta = uniform(-self.rotation_deg, self.rotation_deg, 1) * (np.pi / 180.0)
        zoom = uniform(1.0 - self.zoom, 1.0 + self.zoom, 2)
        tx = uniform(-self.shift, self.shift, 3) * w
        ty = uniform(-self.shift, self.shift, 4) * h
        flip = tf.where(uniform(0.0, 1.0, 5) < 0.5, -1.0, 1.0) if self.hflip else tf.ones([n])
        # Output pixel p maps to input A (p - c) + c + t, with A = zoom * R(theta) * diag(flip, 1).
        cos, sin = tf.cos(theta) * zoom, tf.sin(theta) * zoom
        a0, a1 = cos * flip, -sin
        b0, b1 = sin * flip, cos
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        a2 = cx - a0 * cx - a1 * cy + tx
        b2 = cy - b0 * cx - b1 * cy + ty
        zeros = tf.zeros([n])
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        moved = tf.raw_ops.ImageProjectiveTransformV3(
            images=pixels,
            transforms=transforms,
            output_shape=shape[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="NEAREST",
        )
        # Bilinear weights can overshoot by a float rounding step (255.00002): keep pixel values in range.
        return tf.clip_by_value(moved, 0.0, 255.0)


def make_tf_dataset(
    pixels: np.ndarray,
    targets: Any,
    spec: InputSpec,
    batch_size: int = 32,
    shuffle: bool = False,
    augment: Augmentation | None = None,
    seed: int = 0,
    sample_weight: Any = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of (normalised float32 images, targets[, sample_weight]).

    `pixels` must already be at the model's size (`images_for_input`); `targets` is an array, a dict of arrays
    (multi-head), or None (the input itself: autoencoders). Augmentation runs on pixel values, normalisation
    after it, exactly as `model_contract.normalize`.
    """
    import tensorflow as tf

    if pixels.shape[1:3] != (spec.height, spec.width):
        raise ValueError(f"pixels are {pixels.shape[1:3]}, the model wants {(spec.height, spec.width)}")
    parts: list[Any] = [pixels]
    if targets is not None:
        parts.append(targets)
    if sample_weight is not None:
        parts.append(sample_weight)
    ds = tf.data.Dataset.from_tensor_slices(tuple(parts))
    if shuffle:
        ds = ds.shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)

    def prepare(*batch: Any) -> Any:
        x = tf.cast(batch[0], tf.float32)
        if augment is not None:
            x = augment.apply(x, seed=seed)
        x = normalize_tf(x, spec)
        if targets is None:
            return (x, x) if sample_weight is None else (x, x, batch[1])
        return (x, *batch[1:])

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def configure_tensorflow(threads: int = 2, seed: int = 0) -> None:
    """Thread counts (the CPU is shared) and seeds for numpy, Python and TensorFlow; call before building models."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this process; keep what it has
        pass
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
