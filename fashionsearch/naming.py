"""A suggested product name and search keywords from predicted attributes and the nearest catalogue products.

The name follows the catalogue's own pattern, gender, colour, usage, article type: "Men Navy Blue Casual Shirts".
Keywords are what a shop's text search matches: the attribute values lower-cased and common synonyms ("tee" for
Tshirts), which the classifier suggests (suggest_keywords), then the words that recur in the neighbours' product
names once their brands are removed, which the gateway adds (add_neighbour_words).  Myntra names put the brand first
and the gender word after it ("Puma Men Grey T-shirt", "Gini and Jony Girls Navy Top"), so the words before the gender
word are the brand; in a name without a gender word the first word is taken as the brand, and every brand word
seen among the neighbours is removed from all their names.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

#: Attribute values that mean "unknown" in the catalogue and are never shown.
_MISSING = {"", "na", "n/a", "none", "unknown"}

#: Synonyms by attribute value (lower-cased): words shoppers type for the catalogue's terms.
SYNONYMS: dict[str, tuple[str, ...]] = {
    # articleType
    "tshirts": ("t-shirt", "tshirt", "tee", "tees"),
    "shirts": ("shirt",),
    "tops": ("top",),
    "jeans": ("denim",),
    "trousers": ("pants", "trouser"),
    "track pants": ("joggers", "trackpants"),
    "shorts": ("short",),
    "casual shoes": ("sneakers", "shoes"),
    "sports shoes": ("sneakers", "trainers", "running shoes", "shoes"),
    "formal shoes": ("dress shoes", "shoes"),
    "flip flops": ("slippers", "chappals"),
    "sandals": ("sandal",),
    "heels": ("high heels", "pumps"),
    "flats": ("ballerinas",),
    "watches": ("watch",),
    "handbags": ("handbag", "bag", "purse"),
    "backpacks": ("backpack", "rucksack", "bag"),
    "clutches": ("clutch", "purse"),
    "wallets": ("wallet",),
    "belts": ("belt",),
    "sunglasses": ("shades", "sunglass"),
    "kurtas": ("kurta",),
    "kurtis": ("kurti",),
    "sarees": ("saree", "sari"),
    "dresses": ("dress", "frock"),
    "sweatshirts": ("sweatshirt", "hoodie"),
    "sweaters": ("sweater", "pullover", "jumper"),
    "jackets": ("jacket",),
    "caps": ("cap", "hat"),
    "socks": ("sock",),
    "briefs": ("brief", "underwear"),
    "trunk": ("trunks", "underwear"),
    "bra": ("lingerie",),
    "innerwear vests": ("vest", "undershirt"),
    "perfume and body mist": ("perfume", "fragrance", "body mist"),
    "deodorant": ("deo",),
    "earrings": ("earring",),
    "ties": ("tie", "necktie"),
    "scarves": ("scarf",),
    "nightdress": ("nightie", "nightwear"),
    "night suits": ("pyjamas", "nightwear"),
    # gender
    "men": ("mens", "man"),
    "women": ("womens", "ladies"),
    "boys": ("kids", "boy"),
    "girls": ("kids", "girl"),
    # baseColour
    "navy blue": ("navy",),
    "grey": ("gray",),
    "grey melange": ("grey", "gray"),
    "off white": ("cream", "ivory"),
    "multi": ("multicolour", "multicolor"),
    # usage
    "sports": ("sport", "sportswear"),
    "ethnic": ("traditional",),
}

_NAME_ORDER = ("gender", "baseColour", "usage", "articleType")
_KEYWORD_ORDER = ("articleType", "gender", "baseColour", "usage", "subCategory", "masterCategory", "season")

_GENDER_WORDS = {
    "men",
    "women",
    "boys",
    "girls",
    "unisex",
    "kids",
    "man",
    "woman",
    "boy",
    "girl",
    "men's",
    "women's",
    "boy's",
    "girl's",
    "mens",
    "womens",
}
_STOPWORDS = {"and", "with", "for", "the", "of", "a", "an", "in", "on", "by", "to", "&", "-", "set", "pack"}
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]")


def _present(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(str(value).split())
    return None if value.lower() in _MISSING else value


def suggest_name(attributes: Mapping[str, str]) -> str:
    """Gender, colour, usage and article type in catalogue order, e.g. "Men Navy Blue Casual Shirts".

    Missing or "NA" values are left out, and a usage word that the article type already says ("Sports" before
    "Sports Shoes") is not repeated.
    """
    parts: list[str] = []
    article = _present(attributes.get("articleType"))
    article_words = {w.lower() for w in article.split()} if article else set()
    for field in _NAME_ORDER:
        value = _present(attributes.get(field))
        if value is None:
            continue
        if field == "usage" and {w.lower() for w in value.split()} <= article_words:
            continue
        parts.append(value)
    return " ".join(parts)


def split_brand(name: str) -> tuple[list[str], list[str]]:
    """(brand words, remaining words) of a catalogue product name.

    The brand is every word before the first gender word ("Gini and Jony Girls Navy Top" -> Gini and Jony); a
    name without a gender word is taken to start with a one-word brand ("ADIDAS Black Backpack" -> ADIDAS).
    """
    words = name.split()
    for i, word in enumerate(words):
        if word.lower().strip(".,") in _GENDER_WORDS:
            return words[:i], words[i + 1 :]
    return words[:1], words[1:]


def _tokens(words: Iterable[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        for token in _TOKEN.findall(word):
            token = token.lower().strip("'-")
            if token.endswith("'s"):
                token = token[:-2]
            if len(token) < 2 or token in _STOPWORDS or token in _GENDER_WORDS:
                continue
            out.append(token)
    return out


@functools.lru_cache(maxsize=8192)
def _name_tokens(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tokens of a product name's brand words and of its other words. Cached: every search reads the names of
    its nearest products, and the same catalogue names come back search after search (splitting five names took
    about 30 us a search, bench/README.md); bounded, so a large catalogue costs at most a few MB."""
    brand, rest = split_brand(name)
    return tuple(_tokens(brand)), tuple(_tokens(rest))


def neighbour_words(names: Sequence[str], *, min_count: int = 2, limit: int = 8) -> list[str]:
    """Words (lower-case) used by at least min_count of the names, brands removed, most common first."""
    split = [_name_tokens(name) for name in names if name and name.strip()]
    brand_words = {token for brand, _ in split for token in brand}
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for _, rest in split:
        for token in dict.fromkeys(rest):
            if token in brand_words:
                continue
            counts[token] += 1
            first_seen.setdefault(token, len(first_seen))
    ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], first_seen[t]))
    return ranked[:limit]


def suggest_keywords(attributes: Mapping[str, str], *, limit: int = 20) -> list[str]:
    """Search keywords from the predicted attributes: their values lower-cased and their synonyms.

    Order is most specific first (article type and its synonyms before gender, colour, usage, categories, season),
    duplicates removed, at most `limit`. The classifier computes them; the gateway adds the neighbours' words
    (add_neighbour_words).
    """
    keywords: dict[str, None] = {}
    for field in _KEYWORD_ORDER:
        value = _present(attributes.get(field))
        if value is None:
            continue
        for word in (value, *SYNONYMS.get(value.lower(), ())):
            _add(keywords, word)
    return list(keywords)[:limit]


def add_neighbour_words(keywords: Sequence[str], neighbour_names: Sequence[str], *, limit: int = 20) -> list[str]:
    """`keywords`, then the words common in the neighbours' names (neighbour_words) that they do not already
    cover, at most `limit` in all."""
    out = dict.fromkeys(keywords)
    taken = {part for kw in out for part in kw.split()}
    for word in neighbour_words(neighbour_names):
        if word not in taken:
            _add(out, word)
    return list(out)[:limit]


def _add(keywords: dict[str, None], word: str) -> None:
    word = word.strip().lower()
    if word and word not in _MISSING:
        keywords.setdefault(word, None)
