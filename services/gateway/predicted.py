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
#: The field whose predicted top labels an outfit product's hits show (missing_types).
TYPE_FIELD = "articleType"
#: The probability from which an outfit product's second most probable articleType is shown too (wanted_types):
#: chosen on 300 validation scenes, where 0.2 / 0.1 / 0.05 found 8 / 17 / 20 more products of 878 than the predicted
#: type alone (84.9 -> 85.8 / 86.8 / 87.2%), for about 0.3 / 0.9 / 1.1 points of precision@5 over the products
#: whose box was found (bench/README.md, Outfit search).
SECOND_TYPE_MIN = 0.1
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


def wanted_types(attributes: Sequence[AttributePrediction], top_k: int) -> list[str]:
    """The articleTypes an outfit product's page of `top_k` hits should show: the predicted one (the answer names it,
    its suggested name), and on a page of three or more the second most probable one when the classifier gives it
    at least SECOND_TYPE_MIN: a cut-out out of a scene is often read between two types (Tshirts or Tops, Heels or
    Sandals). None on a page of one."""
    labels = next((a.labels for a in attributes if a.attribute == TYPE_FIELD), ())
    if not labels or top_k < 2:
        return []
    wanted = [labels[0].label]
    if top_k >= 3 and len(labels) > 1 and labels[1].probability >= SECOND_TYPE_MIN:
        wanted.append(labels[1].label)
    return wanted


def missing_types(
    wanted: Sequence[str], hits: Sequence[Hit], top_k: int, filters: Mapping[str, Sequence[str]]
) -> list[str]:
    """The `wanted` articleTypes that `hits`, a full page, hold no product of. The service puts the nearest product
    of each (within `filters`) in place of the last hits (`put_in`). A search whose filters name articleTypes already
    (refine words) is left as the caller asked. On 300 validation scenes the predicted type found 3 more products of
    878 and lost none; the runner-up 17 more (bench/README.md, Outfit search)."""
    if len(hits) < top_k or TYPE_FIELD in filters:
        return []
    shown = {h.payload.get(TYPE_FIELD) for h in hits}
    return [kind for kind in wanted if kind not in shown]


def put_in(hits: Sequence[Hit], nearest: Hit, keep: Sequence[str]) -> tuple[Hit, ...]:
    """`hits` with `nearest` (of a missing articleType) at the end, in place of the last hit that no type in `keep`
    needs: one of another type, or one of several of its type; `hits` as they are when every one is needed."""
    kinds = [h.payload.get(TYPE_FIELD) for h in hits]
    for j in range(len(hits) - 1, -1, -1):
        if kinds[j] not in keep or kinds.count(kinds[j]) > 1:
            return (*hits[:j], *hits[j + 1 :], nearest)
    return tuple(hits)
