"""What the embedder recipes share: the attributes the proxies learn and the pull towards them, the projection's
hidden width, the served (pulled) projection, the validation summary and the rule that chooses the dimension."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from training.layers import ProxyPull
from training.metrics import retrieval_metrics

EMBEDDING_HIDDEN = 1024
EMBEDDING_ATTRIBUTES = {"articleType": 1.0, "baseColour": 0.5, "gender": 0.3}
# The served embedding is pulled towards the proxies it most likely belongs to, each attribute with its loss weight
# above as its strength (ProxyPull). Validation, v4 trunk, 32-d: articleType precision@5 82.5% / 86.0% (unfiltered /
# filtered) against 81.3% / 85.3% without the pull, baseColour 62.5% against 60.4%, gender 89.9% against 88.5%;
# strength 2 gave the same, 4 lost colour; appending the probabilities as extra dimensions (178-d) instead was no
# better. The pull helps the larger dimensions more, so the choice rule moved from 32-d to 64-d (embedder 5: 83.0% /
# 86.3%).


def pulled_projection(training: keras.Model, projection: keras.Model, strengths: Mapping[str, float]) -> keras.Model:
    """features -> the served embedding: the projection's unit vector through ProxyPull, with the proxies that
    `training` learned for each attribute of `strengths`."""
    proxies = [training.get_layer(f"{a}_proxies") for a in strengths]
    pull = ProxyPull([p.classes for p in proxies], list(strengths.values()), scale=proxies[0].scale, name="proxy_pull")
    embedding = pull(projection.output)
    pull.set_weights([np.concatenate([p.get_weights()[0] for p in proxies], axis=1)])
    return keras.Model(projection.input, embedding, name="pulled_projection")


def retrieval_summary(
    queries: np.ndarray, catalogue: np.ndarray, q_labels: Mapping[str, np.ndarray], c_labels: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    r = retrieval_metrics(queries, catalogue, q_labels, c_labels)
    return {m: {a: round(v, 4) for a, v in r[m].items()} for m in ("unfiltered", "filtered")}


def choose_dimension(table: Mapping[int, Mapping[str, Any]], tolerance: float = 0.005) -> int:
    """The smallest dimension whose validation articleType precision@5 (unfiltered) is within `tolerance` of
    the best one's: memory and search time grow linearly with the dimension."""
    score = {d: row["precision_at_5"]["unfiltered"]["articleType"] for d, row in table.items()}
    best = max(score.values())
    return min(d for d, s in score.items() if s >= best - tolerance)
