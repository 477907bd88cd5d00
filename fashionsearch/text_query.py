"""Query understanding: which words of a text query name an attribute value (gender, colour, article type, usage,
season) and how sure that is, and which words the text model has never seen.

The vocabulary comes from the text model's model.json (`terms`, `known_words`), written by training from the
training split. Words are compared by a light stem (plural endings off), phrases longest first, and a word the
model never saw is corrected to the most frequent known word one edit away (insertion, deletion, substitution
or swap), so "jeens" reads as "jeans" and "t shirt", "tshirts" and "t-shirt" all name Tshirts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fashionsearch.text_contract import Term, words

#: The attributes a query's words may name.
QUERY_FIELDS: tuple[str, ...] = ("gender", "baseColour", "articleType", "usage", "season")
#: Words shorter than this are never corrected (too many neighbours one edit away).
MIN_CORRECTED_LEN = 4
#: A term read from a corrected word keeps this share of its confidence (a rule, not a measurement).
CORRECTED_FACTOR = 0.9
_MAX_PHRASE_WORDS = 3
_ENDINGS = (("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x"))


def stem(word: str) -> str:
    """A word without its plural ending: shoes -> shoe, dresses -> dress, watches -> watch, jeans -> jean."""
    if len(word) <= 3:
        return word
    for ending, replacement in _ENDINGS:
        if word.endswith(ending):
            return word[: -len(ending)] + replacement
    if word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def stems(text: str) -> list[str]:
    return [stem(w) for w in words(text)]


def phrase_of(text: str) -> str:
    """How a value or alias is written in the vocabulary: its stems, space separated."""
    return " ".join(stems(text))


@dataclass(frozen=True)
class QueryTerm:
    """Words of a query that name an attribute value: the value, the query's words that named it, how sure that
    reading is, and whether one of the words was corrected."""

    field: str
    value: str
    words: str
    confidence: float
    corrected: bool = False


@dataclass(frozen=True)
class Understanding:
    terms: tuple[QueryTerm, ...]
    unknown_words: tuple[str, ...]
    word_count: int

    @property
    def nothing_known(self) -> bool:
        """Every word of the query is unknown to the model (so its vector means nothing)."""
        return self.word_count > 0 and len(self.unknown_words) == self.word_count

    def filters(self, min_confidence: float) -> dict[str, tuple[str, ...]]:
        """field -> values (any matches) of the terms at least that confident, in query order."""
        out: dict[str, list[str]] = defaultdict(list)
        for term in self.terms:
            if term.confidence >= min_confidence and term.value not in out[term.field]:
                out[term.field].append(term.value)
        return {f: tuple(v) for f, v in out.items()}


class QueryVocabulary:
    """The terms and known words of one text model, indexed for matching and for correcting typos."""

    def __init__(self, terms: Sequence[Term], known_words: Mapping[str, int]) -> None:
        self._terms: dict[str, list[Term]] = defaultdict(list)
        for term in terms:
            self._terms[term.phrase].append(term)
        self._known: dict[str, int] = {stem(w): 0 for w in known_words}
        for word, count in known_words.items():
            self._known[stem(word)] += count
        for phrase in self._terms:
            for word in phrase.split():
                self._known.setdefault(word, 1)
        # Symmetric deletes: two words are one edit apart when they share a word with one letter deleted.
        self._deletes: dict[str, list[str]] = defaultdict(list)
        for word in self._known:
            if len(word) >= MIN_CORRECTED_LEN:
                for variant in _deletes(word) | {word}:
                    self._deletes[variant].append(word)

    def correct(self, word: str) -> str | None:
        """The stem itself when known, else the most frequent known stem one edit away, else None."""
        if word in self._known:
            return word
        if len(word) < MIN_CORRECTED_LEN:
            return None
        candidates = {c for variant in _deletes(word) | {word} for c in self._deletes.get(variant, ())}
        if not candidates:
            return None
        return max(candidates, key=lambda c: (self._known[c], c))

    def understand(self, query: str) -> Understanding:
        raw = words(query)
        original = [stem(w) for w in raw]
        corrected = [self.correct(s) for s in original]
        tokens = [c if c is not None else s for c, s in zip(corrected, original, strict=True)]
        terms: list[QueryTerm] = []
        matched: set[int] = set()
        for start, length, phrase in self.matches(tokens):
            span = range(start, start + length)
            matched.update(span)
            fixed = any(corrected[i] not in (None, original[i]) for i in span)
            for term in self._terms[phrase]:
                terms.append(
                    QueryTerm(
                        field=term.field,
                        value=term.value,
                        words=" ".join(raw[start : start + length]),
                        confidence=round(term.confidence * (CORRECTED_FACTOR if fixed else 1.0), 4),
                        corrected=fixed,
                    )
                )
        pairs = enumerate(zip(raw, corrected, strict=True))
        unknown = tuple(w for i, (w, c) in pairs if c is None and i not in matched)
        return Understanding(terms=tuple(terms), unknown_words=unknown, word_count=len(raw))

    def matches(self, tokens: Sequence[str]) -> Iterator[tuple[int, int, str]]:
        """(start, length, phrase) of the vocabulary phrases in stemmed tokens, longest first, not overlapping. Words
        may be written apart or together: "t shirt" and "tshirt" both find the phrase "tshirt"."""
        i = 0
        while i < len(tokens):
            for length in range(min(_MAX_PHRASE_WORDS, len(tokens) - i), 0, -1):
                window = tokens[i : i + length]
                found = next((p for p in (" ".join(window), stem("".join(window))) if p in self._terms), None)
                if found is not None:
                    yield i, length, found
                    i += length
                    break
            else:
                i += 1


def refine_vector(photo: np.ndarray, words_vector: np.ndarray, weight: float) -> np.ndarray:
    """A photo's vector moved `weight` of the way towards a text's vector (0: not at all, 1: the text alone), at the
    photo vector's length: how words refine a photo search ("but in red"), in serving and evaluation alike."""
    mixed = (1.0 - weight) * photo + weight * words_vector
    norm = float(np.linalg.norm(mixed))
    if norm == 0.0:
        return photo
    return (mixed * (float(np.linalg.norm(photo)) / norm)).astype(np.float32)


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}
