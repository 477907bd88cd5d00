"""The subCategory filter a search takes from its photo's classification (Search's default, each SearchOutfit product).

Kept apart from the service so the settings can name its default without importing the service.
"""

from __future__ import annotations

from collections.abc import Sequence

from fashionsearch.classification import AttributePrediction

#: The field a predicted filter is on, and the catalogue's categories are counted on (the web page's filter).
CATEGORY_FIELD = "subCategory"
#: predicted_filter's default mass (GATEWAY_PREDICTED_SUBCATEGORY_MASS): chosen on 300 validation scenes, where 0,
#: 0.6, 0.8, 0.9 and 0.95 found 76.3, 76.9, 77.4, 77.8 and 77.8% of the products (bench/README.md).
PREDICTED_SUBCATEGORY_MASS = 0.9


def predicted_filter(attributes: Sequence[AttributePrediction], mass: float) -> dict[str, tuple[str, ...]]:
    """The subCategory filter a search takes from its photo's predicted attributes: the most probable subCategory, then
    the next most probable ones (of those the classifier sent) while the probabilities taken sum to less than
    `mass`. A product the classifier is unsure of (a cut-out read 0.55 Topwear, 0.40 Innerwear) is then searched in
    both, its neighbours ranked by distance alone; 0 takes the most probable alone."""
    labels = next((a.labels for a in attributes if a.attribute == CATEGORY_FIELD), ())
    taken: list[str] = []
    total = 0.0
    for label in labels:
        if taken and total >= mass:
            break
        taken.append(label.label)
        total += label.probability
    return {CATEGORY_FIELD: tuple(taken)} if taken else {}
