"""The WebShop reward (WEBSHOP_SPEC §5, §7 items 19–24): fuzzy score, colours, type ladder, and partial
purchases whose rewards are derived by hand below.

    reward = r_type × (n_att + n_opt + r_price) / (|G.attributes| + |G.goal_options| + 1)
"""

from __future__ import annotations

import pytest

from serl.envs.webshop.catalog import build_catalog
from serl.envs.webshop.reward import (
    get_reward,
    lcs_length,
    normalize_color,
    option_matches,
    title_nouns,
    token_set_ratio,
    type_reward,
)
from tests.unit.test_webshop_engine import FIXTURE_ATTRS, FIXTURE_PRODUCTS, goal_index


@pytest.fixture(scope="module")
def cat():
    return build_catalog(FIXTURE_PRODUCTS, FIXTURE_ATTRS, seed=42)


@pytest.fixture(scope="module")
def goal(cat):
    # G1: the ceramic mug with color black, size 16 oz; attributes [dishwasher safe, ceramic material];
    # |G.attributes| + |G.goal_options| + 1 = 2 + 2 + 1 = 5
    return cat.goals[goal_index(cat, "B0MUG00001", {"color": "black", "size": "16 oz"})]


def _lcs_slow(a: str, b: str) -> int:
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def test_lcs_matches_the_dynamic_program():
    for a, b in [("", "x"), ("abc", "abc"), ("oz 12", "oz 16 size"), ("navy blue", "blue navy"), ("aaaa", "aa"),
                 ("essential oil", "essential oils"), ("kitten", "sitting")]:
        assert lcs_length(a, b) == _lcs_slow(a, b), (a, b)


def test_token_set_ratio_reference_values():  # §5 "Fuzzy score", §7-21
    assert token_set_ratio("essential oil", "essential oils") == 96
    assert token_set_ratio("pack of 12", "pack of 6") == 88
    assert token_set_ratio("natural looking", "natural look") == 89
    assert token_set_ratio("medium", "small") == 18
    assert token_set_ratio("9.5", "9") == 100  # '9.5' -> tokens {9, 5}: a superset of {9}
    assert token_set_ratio("black", "Color: BLACK!") == 100  # subset
    assert token_set_ratio("", "x") == 0 and token_set_ratio("ü", "x") == 0  # empty after processing


def test_colour_normalisation_quirks():  # §5, §7-22
    assert normalize_color("navy blue") == "blue"  # 'blue' precedes 'navy' in COLOR_SET
    assert normalize_color("standard") == "tan" and normalize_color("washed denim") == "ash"
    assert normalize_color("natural black") == "black" and normalize_color("16 oz") == "16 oz"
    assert normalize_color(("color", "black")) == "black"  # a pair: only an exact colour element counts
    assert normalize_color(("color", "navy blue")) == ("color", "navy blue")


def test_option_matching_faithful_and_fixed(goal):
    # faithful: goal ('size', '16 oz') is compared as "size 16 oz"; bought '16 oz' is a token subset -> 100
    assert option_matches(goal, {"color": "black", "size": "16 oz"}) == 2
    # tsr('12 oz', 'size 16 oz'): S='oz', X='oz 12', Y='oz 16 size' -> max(57, 33, 53) = 57 <= 85
    assert token_set_ratio("12 oz", "('size', '16 oz')") == 57
    assert option_matches(goal, {"color": "black", "size": "12 oz"}) == 1
    assert option_matches(goal, {}) == 0
    assert option_matches(goal, {"color": "black", "size": "16 oz"}, faithful=False) == 2
    assert option_matches(goal, {"color": "navy blue black", "size": "16"}, faithful=True) == 2  # loose
    assert option_matches(goal, {"color": "navy blue black", "size": "16"}, faithful=False) == 0  # exact


def test_type_ladder(cat, goal):  # §5 "Type factor", §7-23
    assert title_nouns("Acme Ceramic Coffee Mug") == ("acme", "ceramic", "coffee", "mug")
    assert title_nouns("Royal Porcelain Black Coffee Mug") == ("royal", "porcelain", "coffee", "mug")  # adjective out
    lamp, travel = cat.by_asin["B0LAMP0003"], cat.by_asin["B0MUG00002"]
    t = type_reward(travel, goal)  # query match; nouns {coffee, mug} of 4 -> 0.5
    assert (t.query_match, t.category_match, t.title_score, t.r_type) == (True, True, 0.5, 1.0)
    t = type_reward(lamp, goal)  # no shared noun -> 0 even though 'Home & Kitchen' is shared (1 part < 2)
    assert (t.query_match, t.category_match, t.title_score, t.r_type) == (False, False, 0.0, 0.0)
    # no query/category match and title_score <= 0.2 -> 0.5; < 0.1 -> 0.1 (a 1-of-10-nouns product)
    few = type(goal)(**{**goal.__dict__, "name": "Mug Cup Jug Pot Pan", "query": "q", "product_category": "x › y"})
    assert type_reward(travel, few).title_score == pytest.approx(0.2) and type_reward(travel, few).r_type == 0.5
    tiny = type(goal)(**{**goal.__dict__, "name": "Mug Cup Jug Pot Pan Bowl Dish Tray Vase Urn Box",
                         "query": "q", "product_category": "x › y"})
    assert type_reward(travel, tiny).title_score == pytest.approx(1 / 11) and type_reward(travel, tiny).r_type == 0.1
    nameless = type(goal)(**{**goal.__dict__, "name": "the new and"})  # no nouns -> title_score 0.2
    assert type_reward(travel, nameless).title_score == 0.2 and type_reward(travel, nameless).r_type == 1.0


def test_perfect_purchase_is_exactly_one(cat, goal):  # §7-19
    bd = get_reward(cat.by_asin["B0MUG00001"], goal, cat.prices["B0MUG00001"], {"color": "black", "size": "16 oz"})
    assert bd.reward == 1.0 and (bd.n_att, bd.n_opt, bd.r_price, bd.r_type) == (2, 2, 1.0, 1.0)


def test_hand_derived_partial_rewards(cat, goal):
    mug, travel, royal = cat.by_asin["B0MUG00001"], cat.by_asin["B0MUG00002"], cat.by_asin["B0MUG00004"]
    assert goal.price_upper in (30.0, 40.0, 50.0)

    # wrong option: the right mug with size 12 oz.
    #   n_att = 2 (both goal attributes are mug attributes, tsr 100); n_opt = 1 (black = black; '12 oz' vs
    #   "size 16 oz" scores 57); r_price = 1 (12.99 <= price_upper); r_type = 1 (same product)
    #   reward = 1 × (2 + 1 + 1) / 5 = 0.8
    assert get_reward(mug, goal, cat.prices[mug.asin], {"color": "black", "size": "12 oz"}).reward == pytest.approx(0.8)

    # no option at all (§7-19): (n_att + 0 + 1) / 5 = (2 + 1) / 5 = 0.6
    assert get_reward(mug, goal, cat.prices[mug.asin], {}).reward == pytest.approx(0.6)

    # wrong product: the travel mug in red.
    #   n_att = 1: 'dishwasher safe' is one of its attributes; 'ceramic material' matches none of its
    #   attributes (tsr < 85) and is in none of its texts; n_opt = 0 ('red' matches neither 'black' nor
    #   "size 16 oz"); r_price = 1 (8.50); r_type = 1 (query match, title_score 2/4 = 0.5)
    #   reward = 1 × (1 + 0 + 1) / 5 = 0.4
    bd = get_reward(travel, goal, cat.prices[travel.asin], {"color": "red"})
    assert (bd.n_att, bd.n_opt, bd.r_price, bd.r_type) == (1, 0, 1.0, 1.0) and bd.reward == pytest.approx(0.4)

    # over the price: the porcelain mug ($950) in black.
    #   n_att = 2 (same attributes); n_opt = 1 (black); r_price = 0 (950 > price_upper <= 50);
    #   r_type = 1 (query match, title_score |{coffee, mug}| / 4 = 0.5)
    #   reward = 1 × (2 + 1 + 0) / 5 = 0.6
    bd = get_reward(royal, goal, cat.prices[royal.asin], {"color": "black"})
    assert (bd.n_att, bd.n_opt, bd.r_price) == (2, 1, 0.0) and bd.reward == pytest.approx(0.6)

    # a lamp for a mug goal: no shared title noun -> r_type 0 -> reward 0
    assert get_reward(cat.by_asin["B0LAMP0003"], goal, 50.0, {}).reward == 0.0


def test_attribute_substring_fallback(cat):  # §5 "Attribute part", §7-24
    lamp_goal = cat.goals[goal_index(cat, "B0LAMP0003", {})]
    lamp = cat.by_asin["B0LAMP0003"]
    bare = type(lamp)(**{**lamp.__dict__, "attributes": ["DUMMY_ATTR"]})
    # 'led light' and 'usb charging' are in the lowercased bullet "Led light with usb charging port"
    assert get_reward(bare, lamp_goal, 50.0, {}).n_att == 2
    # the goal side is used as is (case-sensitive): an upper-case goal attribute is not a substring
    upper = type(lamp_goal)(**{**lamp_goal.__dict__, "attributes": ["LED LIGHT"]})
    assert get_reward(bare, upper, 50.0, {}).n_att == 0
