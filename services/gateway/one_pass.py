"""When a photo's attributes and vector can come from one classifier call (one trunk pass).

A classifier that serves the embedder's projection on its own trunk answers with the photo's vector and names the
embedder that vector belongs to (services/classifier, fashionsearch/model_variants.py). The gateway uses those
vectors instead of calling the embedder only while they are the running embedder's: the same name and version as
the embedder service last answered with, seen at most RECHECK_S ago. Past that, one analysis calls both services
again, which also notices an embedder upgraded without its classifier (then two calls, until they match again).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.gateway.domain import Classification, Embedding, ModelId

#: How long the embedder service's model, once seen, is trusted without asking it again.
RECHECK_S = 30.0


class OnePass:
    """What the gateway knows about the classifier's vectors; `usable()` says whether to skip the embedder."""

    def __init__(
        self, enabled: bool = True, recheck_s: float = RECHECK_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.enabled = enabled
        self._recheck_s = recheck_s
        self._clock = clock
        self._embedder: ModelId | None = None
        self._seen_at = float("-inf")
        #: Whether the classifier's last answer carried the running embedder's vectors (None: not seen yet).
        self._vectors: bool | None = None

    def usable(self) -> bool:
        fresh = self._clock() - self._seen_at < self._recheck_s
        return self.enabled and bool(self._vectors) and fresh

    def wants_probe(self) -> bool:
        """True when a two-call analysis should classify one photo anyway, to learn whether one pass is possible."""
        return self.enabled and not self.usable()

    def accepts(self, embedding: Embedding | None) -> bool:
        """Whether a classifier's vector can stand for the embedder's."""
        return (
            embedding is not None and self._embedder is not None and embedding.model.identity == self._embedder.identity
        )

    def saw_embedder(self, model: ModelId) -> None:
        self._embedder, self._seen_at = model, self._clock()

    def saw_classifier(self, classification: Classification) -> None:
        self._vectors = self.accepts(classification.embedding)
