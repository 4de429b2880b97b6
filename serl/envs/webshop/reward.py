"""The WebShop reward (WEBSHOP_SPEC §5, the official ``goal.py`` ``get_reward``), as pure functions.

    reward = r_type × (n_att + n_opt + r_price) / (|G.attributes| + |G.goal_options| + 1)        (§5 "Total")

* ``n_att`` (§5 "Attribute part"): goal attributes g with some product attribute p, ``tsr(p, g) > 85``, else g
  (as is) a substring of the lowercased title, joined bullets or description;
* ``n_opt`` (§5 "Option part"): goal options matched by some purchased option value;
* ``r_price`` (§5 "Price part"): 1 if the hidden price ≤ ``price_upper``;
* ``r_type`` (§5 "Type factor"): 1 / 0.5 / 0.1 / 0 from the query match, the breadcrumb overlap and the noun
  overlap of the titles.

The reward is in [0, 1] and exactly 1.0 only for a perfect purchase: success = ``reward == 1.0``.

``tsr`` is thefuzz 0.19's ``token_set_ratio`` with full processing (§5 "Fuzzy score"), re-implemented: the
indel similarity ``round(100·2·LCS/(|u|+|v|))`` with a bit-parallel LCS (Hyyrö), so no fuzzy-matching
package is needed.

Title nouns (``title_score``): the official code tags NOUN/PROPN with spaCy ``en_core_web_sm``. The default
here (``tagger="heuristic"``) is the documented approximation of §5: alphabetic tokens of 2+ letters minus
stop words and common adjectives (basic colour words included). ``tagger="spacy"`` is the parity path and needs
``en_core_web_sm`` installed (it is not on PyPI).

Quirks (reproduced when ``faithful=True``, the default; see :mod:`serl.envs.webshop.engine` for the list):

* ``fuzzy_options`` — options match by ``tsr > 85`` (a token subset scores 100, so ``9`` matches ``9.5``),
  and a synthetic goal's ``(name, value)`` pair is compared as the text ``"name value"``; otherwise an
  option matches only when the normalised values are equal.
* ``colour_normalisation`` — every option is replaced by the *first* COLOR_SET word it contains as a
  substring (``navy blue`` -> ``blue``, ``standard`` -> ``tan``); a pair normalises only when a colour word
  equals its name or value. Off otherwise.
* ``title_score_list_denominator`` — ``title_score`` divides by the goal's noun *list* length (duplicates
  included), so the goal product itself can score < 1; otherwise by the number of distinct nouns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serl.envs.webshop.catalog import Goal, Product

MATCH_THRESHOLD = 85  # §5: a match means tsr > 85
TAGGERS = ("heuristic", "spacy")

# §5 "Option part": COLOR_SET, in the official order (the first substring hit wins).
COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue", "blush",
    "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne", "charcoal", "cheetah",
    "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral", "cranberry", "cream", "crystal",
    "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite", "grape", "graphite", "grass",
    "gray", "green", "grey", "heather", "indigo", "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light",
    "lilac", "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint", "mocha", "multicolor", "mushroom",
    "mustard", "natural", "navy", "nude", "olive", "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow",
    "red", "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull", "slate", "steel", "stone",
    "stonewash", "sunflower", "tan", "taupe", "teal", "tiger", "turquoise", "violet", "walnut", "wheat", "white",
    "wine", "yellow"
)

# Heuristic noun tagger (§5: "alphabetic tokens minus stop words and adjectives"): words that are never
# counted as title nouns.
STOP_WORDS = frozenset(
    (
        "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at",
        "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did",
        "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have",
        "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its",
        "itself", "just", "me", "more", "most", "my", "no", "nor", "not", "now", "of", "off", "on", "once", "only",
        "or", "other", "our", "ours", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than",
        "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too",
        "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
        "whom", "why", "will", "with", "would", "you", "your", "yours", "pack", "set", "pcs", "piece", "pieces",
        "count", "inch", "inches", "oz", "ml"
    )
)
ADJECTIVES = frozenset(
    (
        "new", "small", "large", "big", "little", "mini", "extra", "long", "short", "wide", "narrow", "soft",
        "hard", "heavy", "light", "lightweight", "thin", "thick", "high", "low", "premium", "classic", "modern",
        "vintage", "natural", "organic", "portable", "durable", "adjustable", "waterproof", "compact",
        "comfortable", "cute", "fashion", "stylish", "casual", "formal", "elegant", "simple", "fresh", "pure",
        "best", "great", "easy", "quick", "slim", "smart", "professional", "digital", "electric", "wireless",
        "rechargeable", "reusable", "multi", "multipurpose", "non", "free", "full", "super", "ultra", "deluxe",
        "original", "unisex", "womens", "mens", "women", "men", "kids", "girls", "boys", "baby", "adult", "black",
        "white", "red", "blue", "green", "yellow", "pink", "purple", "orange", "grey", "gray", "brown", "beige",
        "navy", "dark", "multicolor"
    )
)


# --------------------------------------------------------------------------------------- fuzzy score


def _process(s: Any) -> str:
    """thefuzz 0.19 ``full_process(force_ascii=True)`` (§5): drop chars 128–255, non-word -> space, lower."""
    s = "".join(ch for ch in str(s) if not 128 <= ord(ch) <= 255)
    return re.sub(r"(?ui)\W", " ", s).lower().strip()


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (bit-parallel, Hyyrö 2004)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, ch in enumerate(a):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for ch in b:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _ratio(u: str, v: str) -> int:
    """thefuzz ``ratio``: 100 for equal strings, 0 if either is empty, else round(100·2·LCS/(|u|+|v|))."""
    if u == v:
        return 100
    if not u or not v:
        return 0
    return round(100.0 * 2 * lcs_length(u, v) / (len(u) + len(v)))  # Python round, as thefuzz's intr


@functools.lru_cache(maxsize=1 << 16)
def token_set_ratio(a: str, b: str) -> int:
    """thefuzz 0.19 ``token_set_ratio`` with full processing (WEBSHOP_SPEC §5 "Fuzzy score").

    Examples (§5): ``essential oil``/``essential oils`` -> 96, ``pack of 12``/``pack of 6`` -> 88,
    ``medium``/``small`` -> 18, any non-empty token subset -> 100.
    """
    pa, pb = _process(a), _process(b)
    if not pa or not pb:
        return 0
    ta, tb = set(pa.split()), set(pb.split())
    inter = " ".join(sorted(ta & tb))
    x = (inter + " " + " ".join(sorted(ta - tb))).strip()
    y = (inter + " " + " ".join(sorted(tb - ta))).strip()
    return max(_ratio(inter, x), _ratio(inter, y), _ratio(x, y))


def normalize_color(option: Any) -> Any:
    """§5: the first COLOR_SET word that occurs in ``option``. For a string, as a substring; for a
    ``(name, value)`` pair, only a colour word *equal* to the name or the value (tuple membership)."""
    for c in COLOR_SET:
        if c in option:
            return c
    return option


def _plain(s: str) -> str:
    return " ".join(_process(s).split())


# ------------------------------------------------------------------------------------------- parts


def attribute_matches(goal_attrs: Sequence[str], product: Product) -> int:
    """``n_att`` (§5 "Attribute part"): fuzzy match against ``Attributes``, else a case-sensitive substring
    of the lowercased title, joined bullets or description."""
    title = product.title.lower()
    bullets = " ".join(product.bullet_points).lower()
    desc = product.description.lower()
    n = 0
    for g in goal_attrs:
        if any(token_set_ratio(p, g) > MATCH_THRESHOLD for p in product.attributes) or g in title or g in bullets or g in desc:
            n += 1
    return n


def goal_option_items(goal: Goal) -> list[Any]:
    """The goal options as the reward compares them: ``(name, value)`` pairs (synthetic) or values (human)."""
    if isinstance(goal.goal_options, dict):
        return list(goal.goal_options.items())
    return list(goal.goal_options)


def option_matches(goal: Goal, purchased: Mapping[str, str], faithful: bool = True) -> int:
    """``n_opt`` (§5 "Option part"): goal options matched by some purchased value (one value may satisfy
    several goal options)."""
    items = goal_option_items(goal)
    values = list(purchased.values())
    if faithful:
        goal_side = [str(normalize_color(o)) for o in items]  # a pair -> "('name', 'value')" -> 'name value'
        bought = [normalize_color(v) for v in values]
        return sum(any(token_set_ratio(p, g) > MATCH_THRESHOLD for p in bought) for g in goal_side)
    goal_vals = [_plain(o[1] if isinstance(o, tuple) else o) for o in items]
    bought_vals = {_plain(v) for v in values}
    return sum(g in bought_vals for g in goal_vals)


# --------------------------------------------------------------------------------------------- type


@functools.lru_cache(maxsize=1)
def _spacy_model() -> Any:
    try:
        import spacy

        return spacy.load("en_core_web_sm")
    except Exception as e:  # ImportError or OSError (model not installed)
        raise ValueError(
            "tagger='spacy' needs spaCy with the en_core_web_sm model (not on PyPI); use tagger='heuristic'"
        ) from e


@functools.lru_cache(maxsize=1 << 16)
def title_nouns(name: str, tagger: str = "heuristic") -> tuple[str, ...]:
    """Lowercased noun/proper-noun tokens of a title, in order, duplicates kept (§5 ``title_score``)."""
    if tagger == "spacy":
        return tuple(t.text.lower() for t in _spacy_model()(name) if t.pos_ in ("PROPN", "NOUN"))
    if tagger != "heuristic":
        raise ValueError(f"unknown tagger {tagger!r}; allowed: {', '.join(TAGGERS)}")
    words = re.findall(r"[a-z]+", name.lower())
    return tuple(w for w in words if len(w) >= 2 and w not in STOP_WORDS and w not in ADJECTIVES)


@dataclass(frozen=True)
class TypeMatch:
    """The inputs and the result of ``r_type`` (§5 "Type factor")."""

    query_match: bool
    category_match: bool
    title_score: float
    r_type: float


def type_reward(product: Product, goal: Goal, faithful: bool = True, tagger: str = "heuristic") -> TypeMatch:
    """``r_type`` (§5): 1.0; 0.5 without a query/category match and title_score ≤ 0.2; then 0.1 if
    title_score < 0.1; then 0.0 if title_score == 0 (later rules override)."""
    query_match = product.query == goal.query
    p_cat = {x.strip() for x in product.product_category.split("›")}
    g_cat = {x.strip() for x in goal.product_category.split("›")}
    category_match = len(p_cat & g_cat) >= 2
    goal_nouns = title_nouns(goal.name, tagger)
    prod_nouns = set(title_nouns(product.title, tagger))
    if not goal_nouns:
        title_score = 0.2
    else:
        denom = len(goal_nouns) if faithful else len(set(goal_nouns))  # quirk title_score_list_denominator
        title_score = len(prod_nouns & set(goal_nouns)) / denom
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0:
        r_type = 0.0
    return TypeMatch(query_match, category_match, title_score, r_type)


# ------------------------------------------------------------------------------------------- total


@dataclass(frozen=True)
class RewardBreakdown:
    """Every term of one purchase's reward (``verbose=True`` in the original)."""

    reward: float
    r_type: float
    n_att: int
    n_opt: int
    r_price: float
    n_goal_attrs: int
    n_goal_options: int
    query_match: bool
    category_match: bool
    title_score: float


def get_reward(
    product: Product,
    goal: Goal,
    price: float,
    options: Mapping[str, str],
    *,
    faithful: bool = True,
    tagger: str = "heuristic",
) -> RewardBreakdown:
    """The reward of buying ``product`` (hidden price ``price``) with ``options`` for ``goal`` (§5 "Total").

    ``reward = r_type × (n_att + n_opt + r_price) / (|G.attributes| + |G.goal_options| + 1)``.
    """
    n_att = attribute_matches(goal.attributes, product)
    n_goal_opts = len(goal_option_items(goal))
    n_opt = option_matches(goal, options, faithful) if n_goal_opts else 0
    r_price = 1.0 if price <= goal.price_upper else 0.0
    t = type_reward(product, goal, faithful, tagger)
    total = (n_att + n_opt + r_price) / (len(goal.attributes) + n_goal_opts + 1)
    return RewardBreakdown(
        reward=t.r_type * total,
        r_type=t.r_type,
        n_att=n_att,
        n_opt=n_opt,
        r_price=r_price,
        n_goal_attrs=len(goal.attributes),
        n_goal_options=n_goal_opts,
        query_match=t.query_match,
        category_match=t.category_match,
        title_score=t.title_score,
    )
