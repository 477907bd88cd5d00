"""What a search takes from its photo's classification: the subCategory filter (Search's default, each SearchOutfit
product), widened by the detector's group for an outfit's product, and the hit of the predicted articleType an
outfit product's hits always show.

Kept apart from the service so the settings can name its default without importing the service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fashionsearch.classification import AttributePrediction
from fashionsearch.detection import Detection
from fashionsearch.store import Hit

#: The field a predicted filter is on, and the catalogue's categories are counted on (the web page's filter).
CATEGORY_FIELD = "subCategory"
#: The field whose predicted top label an outfit product's hits show (missing_type).
TYPE_FIELD = "articleType"
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


def widened_by_group(filters: dict[str, tuple[str, ...]], detection: Detection) -> dict[str, tuple[str, ...]]:
    """An outfit product's predicted filter widened by the subCategories of the detector's group for it. The detector
    and the classifier are two opinions of what the product is: where they differ (a cut-out the classifier reads as
    Cufflinks in a box the detector calls eyewear), the search looks in both and ranks by distance; where they agree
    the group's other subCategories come too (footwear: Shoes, Sandal, Flip Flops). On 300 validation scenes it found
    2 more products of 878 and lost none (bench/README.md, Outfit search). No predicted filter stays none."""
    taken = filters.get(CATEGORY_FIELD)
    if not taken or not detection.sub_categories:
        return filters
    return {**filters, CATEGORY_FIELD: tuple(dict.fromkeys((*taken, *detection.sub_categories)))}


def missing_type(
    attributes: Sequence[AttributePrediction], hits: Sequence[Hit], top_k: int, filters: Mapping[str, Sequence[str]]
) -> str | None:
    """The predicted articleType when `hits`, a full page of at least two, hold no product of it; else None. The
    answer names that type (its suggested name), so its hits should show one: the service then puts the nearest
    product of that type (within `filters`) in place of the last hit. A search whose filters name articleTypes
    already (refine words) is left as the caller asked. On 300 validation scenes 3 more products of 878 were found
    and none lost (bench/README.md, Outfit search)."""
    predicted = next((a.top for a in attributes if a.attribute == TYPE_FIELD), None)
    if predicted is None or top_k < 2 or len(hits) < top_k or TYPE_FIELD in filters:
        return None
    return None if any(h.payload.get(TYPE_FIELD) == predicted for h in hits) else predicted
