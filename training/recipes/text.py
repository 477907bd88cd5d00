"""The text encoder: queries into the served image embedder's vector space (`python -m training train-text`).

The image embedder stays frozen: every dataset image is embedded once with the served ONNX embedder (cached per
embedder sha256), and a small Keras model learns to put a text where the images it describes are. Text goes
through the shared `tokenize()` (hashed character n-grams), then an n-gram embedding table, its masked mean, a
hidden layer and a projection to the image dimension, L2-normalised like the image vectors. The loss is a
contrastive softmax over the batch's images plus a bank of random catalogue images; every image whose labels
agree with what the text names counts as a positive (a product name names its articleType, baseColour and gender;
an attribute phrase the attributes it was built from). Texts are the training split's product names (with and
without the brand) and attribute phrases built from its labels, a third of them with one typo. Minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fashionsearch.model_contract import MODEL_FILE, EmbeddingSpec, ModelSpec, file_sha256
from fashionsearch.text_contract import (
    Target,
    Term,
    TextModelSpec,
    TokenizerSpec,
    sorted_counts,
    text_ids,
    tokenize,
    words,
)
from fashionsearch.text_query import QUERY_FIELDS, QueryVocabulary, phrase_of, stems
from training import data
from training.evaluate import load_model, predict
from training.export import OPSET, PARITY_MIN_IMAGES, ExportError, compare_outputs, keras_to_onnx
from training.inference import onnx_session
from training.layers import MaskedMean, UnitNorm
from training.metrics import RETRIEVAL_K, precision_at_k

log = logging.getLogger(__name__)

NAME = "text-embedder"
INPUT_NAME = "tokens"
#: The labels a product-name query is judged on, and whose agreement makes an image a positive for a name.
NAME_FIELDS = ("articleType", "baseColour", "gender")
#: Words that name a gender in product names; what comes before the first of them is the brand.
GENDER_WORDS = frozenset({"men", "women", "boys", "girls", "unisex", "kids", "man", "woman", "boy", "girl"})
#: Other ways to say a label value (besides the value itself, its singular, and its words written together).
ALIASES: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("articleType", "Tshirts"): ("t shirt", "tee"),
    ("articleType", "Sarees"): ("sari",),
    ("articleType", "Casual Shoes"): ("sneakers",),
    ("articleType", "Sports Shoes"): ("running shoes", "trainers"),
    ("articleType", "Flip Flops"): ("flipflops",),
    ("articleType", "Sunglasses"): ("shades",),
    ("articleType", "Handbags"): ("purse",),
    ("gender", "Men"): ("man", "male", "gents"),
    ("gender", "Women"): ("woman", "female", "ladies", "lady"),
    ("gender", "Boys"): ("boy",),
    ("gender", "Girls"): ("girl",),
    ("baseColour", "Grey"): ("gray",),
    ("baseColour", "Navy Blue"): ("navy",),
    ("baseColour", "Multi"): ("multicolour", "multicolor"),
    ("usage", "Sports"): ("sport",),
}
#: Fewer names than this holding a phrase: its confidence is the prior below, not a measured share.
MIN_TERM_SUPPORT = 10
PRIOR_CONFIDENCE = 0.9
MISSING = data.MISSING_VALUES


@dataclass(frozen=True)
class TextSettings:
    width: int = 64  # n-gram embedding width
    hidden: int = 512
    epochs: int = 6
    batch_size: int = 512
    bank: int = 2048  # random catalogue images added to every batch as negatives
    scale: float = 20.0  # cosine logits are multiplied by this (temperature 0.05)
    learning_rate: float = 3e-3
    typo_rate: float = 0.33
    min_filter_confidence: float = 0.7
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "tokenizer"}


# ----------------------------------------------------------------------------------------------------------------
# Frozen image vectors


def image_vectors(embedder_dir: Path, dataset: data.Dataset, threads: int = 2, cache: Path | None = None) -> np.ndarray:
    """Every dataset image embedded by the served ONNX embedder, (N, dim) float32 in dataset order; cached by the
    embedder's sha256 and the dataset's ids."""
    spec, session = load_model(embedder_dir, threads)
    assert spec.embedding is not None
    key = hashlib.sha256(spec.onnx_sha256.encode() + dataset.ids.tobytes()).hexdigest()[:16]
    path = (cache or data.default_cache_dir()) / f"image-vectors-{spec.name}-{spec.version}-{key}.npy"
    if path.is_file():
        log.info("image vectors from cache %s", path)
        return np.load(path)
    started = time.monotonic()
    vectors = predict(session, spec, dataset.images)[spec.embedding.output].astype(np.float32)
    log.info("embedded %d images with %s in %.0f s", len(vectors), spec.identity, time.monotonic() - started)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


# ----------------------------------------------------------------------------------------------------------------
# Texts


def brand_words(name: str) -> int:
    """How many leading words of a product name are its brand: the words before the first gender word ("Puma Men
    Grey T-shirt" -> 1), 0 when no gender word comes within the first five words."""
    found = name.split()
    for index, word in enumerate(found[:5]):
        if index and "".join(words(word)) in GENDER_WORDS:
            return index
    return 0


def without_brand(name: str, brands: Mapping[str, int] | None = None) -> str:
    """The name without its brand: the words before a gender word, else a leading brand seen in training."""
    found = name.split()
    cut = brand_words(name)
    if not cut and brands:
        cut = next((n for n in (3, 2, 1) if " ".join(found[:n]).lower() in brands and n < len(found)), 0)
    return " ".join(found[cut:])


def training_brands(names: Sequence[str], min_count: int = 3) -> dict[str, int]:
    counts = Counter(" ".join(n.split()[: brand_words(n)]).lower() for n in names if brand_words(n))
    return {b: c for b, c in counts.items() if c >= min_count}


def surface_forms(attribute: str, value: str) -> list[str]:
    """Ways a query may name a label value: the value, its singular, its words together, the aliases."""
    lower = value.lower()
    forms = [lower, " ".join(stems(lower)), *ALIASES.get((attribute, value), ())]
    if " " in lower:
        forms.append(lower.replace(" ", ""))
    return list(dict.fromkeys(forms))


def add_typo(text: str, rng: random.Random) -> str:
    """One edit (delete, insert, substitute or swap a letter) in one word of 4+ letters; the text as it is when
    it has no such word."""
    found = text.split(" ")
    candidates = [i for i, w in enumerate(found) if len(w) >= 4 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = found[i]
    p = rng.randrange(1, len(w))  # keep the first letter, as people mostly do
    letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
    edit = rng.randrange(4)
    if edit == 0:
        w = w[:p] + w[p + 1 :]
    elif edit == 1:
        w = w[:p] + letter + w[p:]
    elif edit == 2:
        w = w[:p] + letter + w[p + 1 :]
    elif p + 1 < len(w):
        w = w[:p] + w[p + 1] + w[p] + w[p + 2 :]
    else:
        w = w[:p] + letter
    found[i] = w
    return " ".join(found)


def attribute_phrase(labels: Mapping[str, str], rng: random.Random) -> tuple[str, tuple[str, ...]]:
    """A random query naming some of a product's labels, e.g. "women blue kurtas", and the fields it names."""
    chance = {"gender": 0.6, "baseColour": 0.6, "usage": 0.2, "season": 0.15, "articleType": 0.85}
    named = [f for f in QUERY_FIELDS if labels.get(f) not in MISSING and rng.random() < chance[f]]
    if not named:
        named = ["articleType"]
    order = ["gender", "baseColour", "usage", "season", "articleType"]
    named.sort(key=order.index)
    if rng.random() < 0.25:
        rng.shuffle(named)
    text = " ".join(rng.choice(surface_forms(f, labels[f])) for f in named)
    return text, tuple(named)


# ----------------------------------------------------------------------------------------------------------------
# Query vocabulary: terms with their confidence, known words


def build_vocabulary(train: data.Dataset) -> tuple[list[Term], dict[str, int]]:
    """Terms for every label value of the query fields (with its surface forms), each with the share of training
    names holding it whose product has that value; and the training names' words with their counts."""
    names = [str(n) for n in train.labels["productDisplayName"]]
    candidates: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for attribute in QUERY_FIELDS:
        for value in sorted(set(train.labels[attribute]) - MISSING):
            for form in surface_forms(attribute, str(value)):
                candidates[phrase_of(form)].add((attribute, str(value)))
    matcher = QueryVocabulary([Term(p, f, v, 1.0) for p, pairs in candidates.items() for f, v in pairs], {})
    support: Counter[str] = Counter()
    agree: Counter[tuple[str, str, str]] = Counter()
    for index, name in enumerate(names):
        for phrase in {p for _, _, p in matcher.matches(stems(name))}:
            support[phrase] += 1
            for attribute, value in candidates[phrase]:
                agree[(phrase, attribute, value)] += train.labels[attribute][index] == value
    terms = []
    for phrase, pairs in sorted(candidates.items()):
        for attribute, value in sorted(pairs):
            n = support[phrase]
            confidence = agree[(phrase, attribute, value)] / n if n >= MIN_TERM_SUPPORT else PRIOR_CONFIDENCE
            terms.append(Term(phrase, attribute, value, round(confidence, 4), n))
    counts: Counter[str] = Counter(w for n in names for w in words(n))
    for pairs in candidates.values():
        for attribute, value in pairs:
            for form in surface_forms(attribute, value):
                counts.update(words(form))
    return terms, sorted_counts(counts.items())


# ----------------------------------------------------------------------------------------------------------------
# The model


def build_text_model(tokenizer: TokenizerSpec, dim: int, width: int, hidden: int) -> Any:
    tokens = keras.Input((None,), dtype="int32", name=INPUT_NAME)
    x = keras.layers.Embedding(tokenizer.buckets + 1, width, name="ngrams")(tokens)
    x = MaskedMean(name="mean")([x, tokens])
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    x = keras.layers.Dense(dim, name="projection")(x)
    x = UnitNorm(name="embedding")(x)
    return keras.Model(tokens, x, name=NAME)


@dataclass
class TextBatchSource:
    """Training texts drawn fresh each epoch: names with and without brand, attribute phrases, some typos."""

    names: list[str]
    brands: Mapping[str, int]
    labels: list[dict[str, str]]
    label_ids: np.ndarray  # (N, len(QUERY_FIELDS)) int32, -1 where missing
    typo_rate: float

    def epoch(self, rng: random.Random) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(texts, image row of each text, the label ids each text names with -1 for what it does not name)."""
        texts: list[str] = []
        rows: list[int] = []
        named_ids = []
        name_columns = [QUERY_FIELDS.index(f) for f in NAME_FIELDS]
        for index, name in enumerate(self.names):
            text = name if rng.random() < 0.5 else without_brand(name, self.brands)
            named = np.full(len(QUERY_FIELDS), -1, dtype=np.int32)
            named[name_columns] = self.label_ids[index, name_columns]
            texts.append(text)
            rows.append(index)
            named_ids.append(named)
            phrase, fields = attribute_phrase(self.labels[index], rng)
            named = np.full(len(QUERY_FIELDS), -1, dtype=np.int32)
            columns = [QUERY_FIELDS.index(f) for f in fields]
            named[columns] = self.label_ids[index, columns]
            texts.append(phrase)
            rows.append(index)
            named_ids.append(named)
        texts = [add_typo(t, rng) if rng.random() < self.typo_rate else t for t in texts]
        return texts, np.asarray(rows), np.stack(named_ids)


def label_ids(dataset: data.Dataset) -> tuple[np.ndarray, list[dict[str, str]]]:
    """(N, fields) ids of each product's query-field labels (-1 when missing) and the labels as dicts."""
    columns = []
    for attribute in QUERY_FIELDS:
        values = dataset.labels[attribute]
        vocabulary = {v: i for i, v in enumerate(sorted(set(values) - MISSING))}
        columns.append(np.asarray([vocabulary.get(v, -1) for v in values], dtype=np.int32))
    labels = [{f: str(dataset.labels[f][i]) for f in QUERY_FIELDS} for i in range(len(dataset))]
    return np.stack(columns, axis=1), labels


def fit_text_model(
    model: Any,
    source: TextBatchSource,
    vectors: np.ndarray,
    settings: TextSettings,
    seed: int = 0,
    validate: Any = None,
) -> dict[str, list[float]]:
    """The contrastive loop (see the module docstring); returns the loss (and validation) history per epoch."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    image_vectors_ = tf.constant(vectors)
    image_labels = tf.constant(source.label_ids)
    steps_per_epoch = max(1, (2 * len(source.names)) // settings.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, settings.epochs * steps_per_epoch)
    optimizer = keras.optimizers.Adam(schedule)

    @tf.function(reduce_retracing=True)
    def step(tokens: tf.Tensor, rows: tf.Tensor, named: tf.Tensor, bank: tf.Tensor) -> tf.Tensor:
        candidates = tf.concat([rows, bank], axis=0)
        images = tf.gather(image_vectors_, candidates)
        labels = tf.gather(image_labels, candidates)  # (C, F)
        agree = tf.reduce_all((named[:, None, :] < 0) | (named[:, None, :] == labels[None, :, :]), axis=-1)
        same = tf.equal(rows[:, None], candidates[None, :])
        positive = tf.cast(agree | same, tf.float32)
        target = positive / tf.reduce_sum(positive, axis=1, keepdims=True)
        with tf.GradientTape() as tape:
            texts = model(tokens, training=True)
            logits = settings.scale * tf.matmul(texts, images, transpose_b=True)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(target, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    history: dict[str, list[float]] = defaultdict(list)
    started = time.monotonic()
    for epoch in range(settings.epochs):
        texts, rows, named = source.epoch(rng)
        ids = [text_ids(t, settings.tokenizer) for t in texts]
        losses = []
        for batch in length_batches(np.asarray([len(i) for i in ids]), settings.batch_size, np_rng):
            tokens = np.zeros((len(batch), -(-max(len(ids[i]) for i in batch) // 32) * 32), dtype=np.int32)
            for row, i in enumerate(batch):
                tokens[row, : len(ids[i])] = ids[i]
            bank = np_rng.integers(0, len(vectors), settings.bank)
            losses.append(float(step(tokens, rows[batch].astype(np.int32), named[batch], bank.astype(np.int32))))
        history["loss"].append(float(np.mean(losses)))
        history["seconds"].append(time.monotonic() - started)
        line = f"epoch {epoch + 1}/{settings.epochs}: loss {history['loss'][-1]:.4f}"
        if validate is not None:
            for key, value in validate(model).items():
                history[key].append(value)
                line += f", {key} {value:.4f}"
        log.info("%s (%.0f s)", line, history["seconds"][-1])
    return dict(history)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 32) -> list[np.ndarray]:
    """Full batches in random order, each of texts of similar length (sorted within pools of `pool` batches), so
    little of a batch is padding; the texts that do not fill a last batch wait for the next epoch."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = order[start : start + pool * batch_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def name_queries(ds: data.Dataset, brands: Mapping[str, int], with_brand: bool) -> list[str]:
    names = [str(n) for n in ds.labels["productDisplayName"]]
    return names if with_brand else [without_brand(n, brands) for n in names]


def nearest(queries: np.ndarray, catalogue: np.ndarray, k: int = RETRIEVAL_K, chunk: int = 256) -> np.ndarray:
    """The same ranking as training.metrics.knn (Euclidean, nearest first, -1 past the catalogue's end) in float32:
    |c|^2 - 2 q.c orders the catalogue as the distance does (|q|^2 is the same for the whole row)."""
    queries, catalogue = np.asarray(queries, np.float32), np.asarray(catalogue, np.float32)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    take = min(k, len(catalogue))
    if take == 0:
        return out
    squares = np.einsum("ij,ij->i", catalogue, catalogue)
    for start in range(0, len(queries), chunk):
        scores = squares[None, :] - 2.0 * queries[start : start + chunk] @ catalogue.T
        if take < len(catalogue):
            part = np.argpartition(scores, take - 1, axis=1)[:, :take]
        else:
            part = np.tile(np.arange(len(catalogue)), (len(scores), 1))
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1, kind="stable")
        out[start : start + chunk, :take] = np.take_along_axis(part, order, axis=1)
    return out


def vector_precision(
    queries: np.ndarray, catalogue: np.ndarray, query_ds: data.Dataset, catalogue_ds: data.Dataset
) -> dict[str, float]:
    """precision@5 of articleType, baseColour and gender for text vectors against catalogue vectors."""
    found = nearest(queries, catalogue, RETRIEVAL_K)
    return {a: precision_at_k(found, query_ds.labels[a], catalogue_ds.labels[a]) for a in NAME_FIELDS}


def embed_texts(model: Any, texts: Sequence[str], tokenizer: TokenizerSpec, batch: int = 1024) -> np.ndarray:
    """Keras model vectors of texts (for validation during training)."""
    out = [
        model(tokenize(texts[i : i + batch], tokenizer), training=False).numpy() for i in range(0, len(texts), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def parity_texts(val: data.Dataset, seed: int = 0, n: int = 1024) -> list[str]:
    """Texts for the parity gate: validation names, then attribute phrases of validation products (with typos
    for some) until there are n."""
    rng = random.Random(seed)
    texts = [str(name) for name in val.labels["productDisplayName"]][:n]
    _, labels = label_ids(val)
    while labels and len(texts) < max(n, PARITY_MIN_IMAGES):
        phrase = attribute_phrase(rng.choice(labels), rng)[0]
        texts.append(add_typo(phrase, rng) if rng.random() < 0.3 else phrase)
    return texts[:n]


# ----------------------------------------------------------------------------------------------------------------
# Export, through the parity gate


def export_text_model(
    model: Any,
    out_dir: Path,
    spec_fields: Mapping[str, Any],
    parity_texts: Sequence[str],
    tokenizer: TokenizerSpec,
    version: str,
) -> TextModelSpec:
    """model.onnx + model.json in out_dir, written only when ONNX and Keras agree within PARITY_ATOL on the
    parity texts (validation names, at least PARITY_MIN_IMAGES of them)."""
    if len(parity_texts) < PARITY_MIN_IMAGES:
        raise ExportError(f"the parity gate needs at least {PARITY_MIN_IMAGES} texts, got {len(parity_texts)}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        keras_to_onnx(model, None, staging / MODEL_FILE, [tf.TensorSpec((None, None), tf.int32, name=INPUT_NAME)])
        session = onnx_session(staging / MODEL_FILE)
        output = session.get_outputs()[0].name
        tokens = tokenize(list(parity_texts), tokenizer)
        parity = compare_outputs(
            [model(tokens, training=False).numpy()], session.run(None, {INPUT_NAME: tokens}), classifier=False
        )
        log.info("parity gate passed: %s", parity)
        spec = TextModelSpec(
            name=NAME,
            version=version,
            onnx_sha256=file_sha256(staging / MODEL_FILE),
            input=INPUT_NAME,
            tokenizer=tokenizer,
            embedding=EmbeddingSpec(output=output, dim=int(model.output_shape[-1])),
            target=spec_fields["target"],
            terms=tuple(spec_fields["terms"]),
            known_words=spec_fields["known_words"],
            metrics=dict(spec_fields.get("metrics", {})),
            extra={
                "training": spec_fields.get("training", {}),
                "parity": parity.to_dict() | {"texts": parity.images},
                "exporter": {"tool": "tf2onnx", "opset": OPSET},
            },
        )
        spec.write(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s (target %s) to %s", spec.identity, spec.target, out_dir)
    return spec


# ----------------------------------------------------------------------------------------------------------------
# The recipe


def train_text(
    dataset: data.Dataset,
    split: Mapping[int, str],
    embedder_dir: Path,
    out_dir: Path,
    settings: TextSettings = TextSettings(),  # noqa: B008 - frozen
    version: str = "1",
    seed: int = 0,
    threads: int = 2,
    limit: int | None = None,
) -> TextModelSpec:
    """Train on the split's train part (validation for the reported choices) and export to out_dir."""
    data.configure_tensorflow(threads, seed)
    image_spec = ModelSpec.load(embedder_dir)
    assert image_spec.embedding is not None
    vectors = image_vectors(embedder_dir, dataset, threads)
    index = {int(i): n for n, i in enumerate(dataset.ids)}
    train, val = dataset.split(split, "train"), dataset.split(split, "val")
    if limit:
        train, val = train.subset(np.arange(min(limit, len(train)))), val.subset(np.arange(min(limit, len(val))))
    train_vectors = vectors[[index[int(i)] for i in train.ids]]

    started = time.monotonic()
    terms, known = build_vocabulary(train)
    brands = training_brands([str(n) for n in train.labels["productDisplayName"]])
    ids, labels = label_ids(train)
    source = TextBatchSource(
        names=[str(n) for n in train.labels["productDisplayName"]],
        brands=brands,
        labels=labels,
        label_ids=ids,
        typo_rate=settings.typo_rate,
    )
    model = build_text_model(settings.tokenizer, image_spec.embedding.dim, settings.width, settings.hidden)

    def validate(m: Any) -> dict[str, float]:
        queries = name_queries(val, brands, with_brand=False)
        found = vector_precision(embed_texts(m, queries, settings.tokenizer), train_vectors, val, train)
        return {f"val_p5_{a}": v for a, v in found.items()}

    history = fit_text_model(model, source, train_vectors, settings, seed, validate)
    seconds = time.monotonic() - started
    log.info("text model trained in %.0f s", seconds)
    return export_text_model(
        model,
        out_dir,
        {
            "target": Target(image_spec.name, image_spec.version, image_spec.onnx_sha256),
            "terms": terms,
            "known_words": known,
            "metrics": {"validation": {k: round(v[-1], 4) for k, v in history.items() if k.startswith("val_")}},
            "training": {
                "seconds": round(seconds, 1),
                "settings": settings.to_dict(),
                "train_products": len(train),
                "texts_per_epoch": 2 * len(train),
                "brands": len(brands),
                "history": {k: [round(x, 4) for x in v] for k, v in history.items()},
            },
        },
        parity_texts(val, seed),
        settings.tokenizer,
        version,
    )
