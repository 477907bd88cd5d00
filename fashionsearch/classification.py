"""What a classifier predicts for one image, as the classifier service computes it and the gateway receives it:
the top labels of every attribute head, and the product name and search keywords they suggest."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

from fashionsearch.naming import suggest_keywords, suggest_name


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


@dataclass(frozen=True)
class AttributePrediction:
    """The top labels of one attribute head, most probable first."""

    attribute: str
    labels: tuple[LabelScore, ...]

    @property
    def top(self) -> str | None:
        return self.labels[0].label if self.labels else None


@dataclass(frozen=True)
class Classification:
    """Everything predicted for one image."""

    attributes: tuple[AttributePrediction, ...]
    suggested_name: str
    keywords: tuple[str, ...]

    def top_labels(self) -> dict[str, str]:
        """attribute -> most probable label."""
        return {a.attribute: a.top for a in self.attributes if a.top is not None}

    @classmethod
    def of(cls, attributes: Sequence[AttributePrediction], **extra: Any) -> Self:
        """The classification of these predictions, with the name and keywords their top labels suggest (the one
        place they are computed); `extra` fills a subclass's own fields."""
        name, keywords = _suggestions(tuple((a.attribute, top) for a in attributes if (top := a.top) is not None))
        return cls(tuple(attributes), name, keywords, **extra)


@functools.lru_cache(maxsize=4096)
def _suggestions(top: tuple[tuple[str, str], ...]) -> tuple[str, tuple[str, ...]]:
    """The name and keywords that (attribute, top label) pairs suggest. Cached: the classifier computes them for
    every photo (about 25 us), and photos share a few hundred label combinations; bounded, a few MB at most."""
    labels = dict(top)
    return suggest_name(labels), tuple(suggest_keywords(labels))
