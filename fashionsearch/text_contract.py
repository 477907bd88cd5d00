"""The text model contract: how a query becomes token ids (`tokenize()`), and the model.json of a text embedder.

`tokenize()` is to text what `model_contract.preprocess()` is to images: training, evaluation and serving call it,
so they cannot drift apart. A word becomes hashed character n-grams (fastText style): "jeens" shares most of its
n-grams with "jeans", "tshirts" with "t shirt", so typos, plurals and spacing cost little. A text embedder's
model.json records its tokenizer, the image embedder (name@version) whose vector space it was trained to meet,
and the query vocabulary of `fashionsearch.text_query`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fashionsearch.errors import InvalidArgument
from fashionsearch.model_contract import EmbeddingSpec, ModelContractError, read_spec_file, write_spec_file

TEXT_KIND = "text_embedder"
#: The longest query a service accepts, in characters.
MAX_QUERY_CHARS = 256
_WORD = re.compile(r"[a-z0-9]+")
#: Words this short also form a word with the next one: the t of "t shirt" meets "tshirt".
_JOIN_BELOW = 3


@dataclass(frozen=True)
class TokenizerSpec:
    """How text becomes ids: NFKD ascii folding, lower case, words of [a-z0-9], each word padded as "<word>" and cut
    into character n-grams of ngram_min..ngram_max characters (plus the whole padded word), every piece hashed
    with crc32 into 1..buckets (0 pads a batch). At most max_ids ids per text, in order."""

    kind: str = "hashed_char_ngrams"
    ngram_min: int = 2
    ngram_max: int = 4
    buckets: int = 16384
    max_ids: int = 512
    hash: str = "crc32"

    def __post_init__(self) -> None:
        problems = []
        if self.kind != "hashed_char_ngrams":
            problems.append(f"tokenizer.kind must be 'hashed_char_ngrams', got {self.kind!r}")
        if self.hash != "crc32":
            problems.append(f"tokenizer.hash must be 'crc32', got {self.hash!r}")
        if not 1 <= self.ngram_min <= self.ngram_max <= 8:
            problems.append(f"tokenizer n-gram sizes must satisfy 1 <= min <= max <= 8, got {self.ngram_min}..")
        if not 1 <= self.buckets <= 2**24 or self.max_ids < 1:
            problems.append(
                f"tokenizer.buckets must be in 1..2^24 and max_ids >= 1, got {self.buckets}, {self.max_ids}"
            )
        if problems:
            raise ModelContractError("; ".join(problems))


def fold(text: str) -> str:
    """Lower case ASCII: accents dropped (NFKD), other non-ASCII characters removed."""
    decomposed = unicodedata.normalize("NFKD", text)
    return decomposed.encode("ascii", "ignore").decode("ascii").lower()


def words(text: str) -> list[str]:
    """The words of a text as the tokenizer sees them: folded, runs of [a-z0-9]."""
    return _WORD.findall(fold(text))


def unread_scripts(text: str) -> list[str]:
    """The scripts of the text's letters and digits that folding drops (Arabic, Hebrew, Cyrillic, CJK, ...): the
    tokenizer reads Latin letters (accents folded) and ASCII digits only."""
    scripts = set()
    for char in text:
        if char.isalnum() and not fold(char).strip():
            script = unicodedata.name(char, "UNKNOWN").split(" ")[0]
            scripts.add(script if script == "CJK" else script.title())
    return sorted(scripts)


def no_words_reason(text: str) -> str:
    """Why a query gives the tokenizer no word: a script it does not read, or no letter or digit at all."""
    scripts = unread_scripts(text)
    if scripts:
        return (
            f"the text query is written in {' and '.join(scripts)} script, which the text model does not read: it"
            " reads Latin letters (accents are folded: é is e) and digits"
        )
    return "the text query holds no letter or digit"


def _pieces(word: str, low: int, high: int) -> list[str]:
    padded = f"<{word}>"
    grams = [padded[i : i + n] for n in range(low, high + 1) for i in range(len(padded) - n + 1)]
    if len(padded) > high:
        grams.append(padded)
    return grams


@lru_cache(maxsize=1 << 16)
def _word_ids(word: str, next_word: str, spec: TokenizerSpec) -> tuple[int, ...]:
    """Ids of one word (and of its join with the next word when it is short); cached, words repeat a lot."""
    pieces = _pieces(word, spec.ngram_min, spec.ngram_max)
    if next_word and len(word) < _JOIN_BELOW:
        pieces += _pieces(word + next_word, spec.ngram_min, spec.ngram_max)
    return tuple(1 + zlib.crc32(p.encode("ascii")) % spec.buckets for p in pieces)


def text_ids(text: str, spec: TokenizerSpec) -> list[int]:
    """The ids of one text, at most spec.max_ids; empty when the text has no word."""
    found = words(text)
    ids: list[int] = []
    for index, word in enumerate(found):
        ids += _word_ids(word, found[index + 1] if index + 1 < len(found) else "", spec)
        if len(ids) >= spec.max_ids:
            return ids[: spec.max_ids]
    return ids


def tokenize(texts: Sequence[str], spec: TokenizerSpec) -> np.ndarray:
    """Texts -> int32 (N, L) ids, 0-padded to the longest (L >= 1): the text model's input."""
    rows = [text_ids(t, spec) for t in texts]
    width = max([len(r) for r in rows] + [1])
    out = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def check_query(query: str) -> str:
    """The query stripped, or InvalidArgument saying what is wrong with it (empty, too long, control characters)."""
    stripped = query.strip()
    if not stripped:
        raise InvalidArgument("the text query is empty; type a few words, e.g. 'blue denim jacket women'")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidArgument(
            f"the text query is {len(query)} characters long, more than the limit of {MAX_QUERY_CHARS}"
        )
    bad = sorted({f"U+{ord(c):04X}" for c in stripped if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")})
    if bad:
        raise InvalidArgument(f"the text query holds control or unassigned characters ({', '.join(bad[:5])})")
    return stripped


@dataclass(frozen=True)
class Target:
    """The image embedder whose vector space a text embedder was trained to meet."""

    name: str
    version: str
    onnx_sha256: str = ""

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Term:
    """A word or phrase (stemmed words, space separated) that names an attribute value, e.g. "tshirt" ->
    articleType Tshirts; `confidence` is the share of training products whose name holds the phrase that have the
    value (1.0 for the label itself where names never use it), `support` how many names hold it."""

    phrase: str
    field: str
    value: str
    confidence: float
    support: int = 0


@dataclass(frozen=True)
class TextModelSpec:
    """The parsed, validated model.json of a text embedder (kind text_embedder)."""

    name: str
    version: str
    onnx_sha256: str
    input: str
    tokenizer: TokenizerSpec
    embedding: EmbeddingSpec
    target: Target
    terms: tuple[Term, ...] = ()
    known_words: Mapping[str, int] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    kind = TEXT_KIND

    def __post_init__(self) -> None:
        problems = []
        if not self.name or not self.version or not self.input:
            problems.append("name, version and input must be non-empty")
        if self.embedding.dim <= 0 or self.embedding.distance != "euclid":
            problems.append(f"embedding needs dim > 0 and distance 'euclid', got {self.embedding.dim}")
        if not self.target.name or not self.target.version:
            problems.append("target needs the image embedder's name and version")
        if problems:
            raise ModelContractError(f"text model {self.name!r}: " + "; ".join(problems))

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.version}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextModelSpec:
        if data.get("kind") != TEXT_KIND:
            raise ModelContractError(f"model.json says kind {data.get('kind')!r}; a text model is {TEXT_KIND!r}")
        known = {"name", "kind", "version", "onnx_sha256", "input", "tokenizer", "embedding", "target", "terms"}
        known |= {"known_words", "metrics"}
        try:
            emb, target = data["embedding"], data["target"]
            return cls(
                name=data["name"],
                version=str(data["version"]),
                onnx_sha256=data["onnx_sha256"],
                input=data["input"],
                tokenizer=TokenizerSpec(**data["tokenizer"]),
                embedding=EmbeddingSpec(
                    output=emb["output"], dim=int(emb["dim"]), distance=emb.get("distance", "euclid")
                ),
                target=Target(str(target["name"]), str(target["version"]), str(target.get("onnx_sha256", ""))),
                terms=tuple(Term(**t) for t in data.get("terms", ())),
                known_words={str(w): int(n) for w, n in data.get("known_words", {}).items()},
                metrics=dict(data.get("metrics", {})),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as missing:
            raise ModelContractError(f"text model.json lacks the required field {missing}") from None
        except (TypeError, ValueError) as bad:
            if isinstance(bad, ModelContractError):
                raise
            raise ModelContractError(f"text model.json has a malformed field: {bad}") from None

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str]) -> TextModelSpec:
        return cls.from_dict(read_spec_file(model_dir))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": TEXT_KIND,
            "version": self.version,
            "onnx_sha256": self.onnx_sha256,
            "input": self.input,
            "tokenizer": dataclasses.asdict(self.tokenizer),
            "embedding": dataclasses.asdict(self.embedding),
            "target": dataclasses.asdict(self.target),
            "metrics": dict(self.metrics),
        }
        data.update(self.extra)
        data["terms"] = [dataclasses.asdict(t) for t in self.terms]
        data["known_words"] = dict(self.known_words)
        return data

    def write(self, model_dir: str | os.PathLike[str]) -> Path:
        """Write model.json atomically."""
        return write_spec_file(model_dir, self.to_dict(), indent=1)


def check_target(spec: TextModelSpec, name: str, version: str) -> None:
    """ModelContractError unless the text model was trained for the image embedder name@version."""
    if (spec.target.name, spec.target.version) != (name, version):
        raise ModelContractError(
            f"the text model {spec.identity} was trained for the image embedder {spec.target}, but the image "
            f"embedder is {name}@{version}; retrain it (python -m training train-text) or use a matching model"
        )


def sorted_counts(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Word counts most frequent first (ties by word), as model.json stores known_words."""
    return dict(sorted(counts, key=lambda wc: (-wc[1], wc[0])))
