"""What the gateway does with a text query's words: which become filters, how words refine a photo's vector, and
the reason given when words find nothing. The use cases (GatewayService.search_text, refine_text on search and
search_by_id) call these; the embedder's text model reads the words (EmbedText)."""

from __future__ import annotations

from collections.abc import Mapping

from fashionsearch.errors import InvalidArgument
from services.gateway.domain import FilterMode, QueryTerm, TextEmbedding, TextMatch

# The defaults below are the choices the text model's report made on the validation split
# (reports/text-embedder/README.md; model.json metrics.test holds them, and a test keeps the two in step).

#: How SearchText matches when the caller does not say.
DEFAULT_MATCH = TextMatch.BOTH
#: A word of a text query becomes a filter (in the filters and both modes) at this confidence or more.
MIN_FILTER_CONFIDENCE = 0.7
#: How far refine_text moves a photo's vector towards the words' vector: 0 not at all, 1 the words alone.
REFINE_WEIGHT = 0.3
#: A refinement word becomes a filter at this confidence or more; None: refinement words never filter.
REFINE_MIN_CONFIDENCE: float | None = 0.5

Filters = dict[str, tuple[str, ...]]


def word_filters(terms: tuple[QueryTerm, ...], min_confidence: float | None = MIN_FILTER_CONFIDENCE) -> Filters:
    """field -> values (any of them matches) of the confident terms, in query order (none when min_confidence is
    None)."""
    if min_confidence is None:
        return {}
    out: dict[str, list[str]] = {}
    for term in terms:
        if term.confidence >= min_confidence and term.value not in out.setdefault(term.field, []):
            out[term.field].append(term.value)
    return {f: tuple(v) for f, v in out.items() if v}


def nothing_known(text: TextEmbedding) -> str:
    """The reason a query cannot be answered when the model knows none of its words, else ""."""
    if text.word_count and len(text.unknown_words) >= text.word_count:
        quoted = ", ".join(repr(w) for w in text.unknown_words[:5])
        return f"none of the words ({quoted}) is known to the text model {text.model.name}:{text.model.version}"
    return ""


def combine(words: Filters, explicit: Mapping[str, tuple[str, ...]]) -> Filters:
    """The words' filters with the request's explicit ones; on the same field the explicit filter wins (SearchText,
    and refine_text on photo and by-id searches alike)."""
    return {**words, **explicit}


def set_aside(words: Filters, explicit: Mapping[str, tuple[str, ...]]) -> str:
    """The reason given when words name other values on a field an explicit filter sets (the filter is kept), or
    ""."""
    clashes = [name for name, values in words.items() if name in explicit and set(values) != set(explicit[name])]
    if not clashes:
        return ""
    named = describe({name: words[name] for name in clashes})
    kept = describe({name: explicit[name] for name in clashes})
    return f"the words name {named}, the request's filter {kept}: the filter is kept"


def nothing_matches(filters: Mapping[str, tuple[str, ...]]) -> str:
    return f"no product in the catalogue has {describe(filters)}"


def join_reasons(*reasons: str) -> str:
    return "; ".join(reason for reason in reasons if reason)


def describe(filters: Mapping[str, tuple[str, ...]]) -> str:
    """Filters as words for a reason: "baseColour Red and gender Men"."""
    return " and ".join(f"{name} {' or '.join(values)}" for name, values in filters.items())


def refine_filters(filters: Mapping[str, tuple[str, ...]], words: Filters, mode: FilterMode) -> Filters:
    """A photo search's filters refined by the words' filters. The caller's explicit filters win on their fields,
    as in SearchText (combine); otherwise a word's value replaces the mode's filter on its field, and an article type
    named in words replaces the photo's predicted subCategory (a jeans refinement of a shirt photo must not stay
    among tops)."""
    if mode is FilterMode.EXPLICIT:
        return combine(words, filters)
    out = dict(filters)
    if "articleType" in words:
        out.pop("subCategory", None)
    out.update(words)
    return out


def check_refinement(text: TextEmbedding) -> None:
    """InvalidArgument when refinement words are all unknown (they would move the vector somewhere arbitrary)."""
    reason = nothing_known(text)
    if reason:
        raise InvalidArgument(f"refine_text: {reason}")
