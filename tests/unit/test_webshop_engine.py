"""The WebShop engine: loading (WEBSHOP_SPEC §1, §2, §7 items 1–7), pages, actions and search (§3, §4, §7 items 8–18).

A handful of products in the official JSON schema (:data:`FIXTURE_PRODUCTS`, written by :func:`write_fixture`)
goes through the same loader as the bundled catalog; the other tests reuse it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

from serl.envs.webshop.catalog import (
    DUMMY_ATTR,
    build_catalog,
    clean_option_value,
    load_catalog,
    parse_price,
    price_bound,
    synthetic_goals,
)
from serl.envs.webshop.engine import WebshopEngine, WebshopTextEnv, parse_action
from serl.envs.webshop.search import SearchIndex, analyze, porter_stem

SEP = " [SEP] "


def _product(asin, name, desc, bullets, pricing, options, query, category, pc):
    return {
        "asin": asin, "name": name, "full_description": desc, "small_description": bullets, "pricing": pricing,
        "customization_options": options, "images": [f"https://img/{asin}.jpg"], "category": category,
        "query": query, "product_category": pc, "brand": "X", "list_price": "$1",
    }


MUGS = "Home & Kitchen › Kitchen & Dining › Mugs"
FIXTURE_PRODUCTS = [
    _product("B0MUG00001", "Acme Ceramic Coffee Mug", "A sturdy mug for hot drinks.",
             ["Dishwasher safe", "Holds twelve ounces", ""], "$12.99",
             {"Color": [{"value": "Black", "image": "https://img/b.jpg"}, {"value": "Navy/White ", "image": None}],
              "Size": [{"value": "12 oz", "image": None}, {"value": "16 oz", "image": None}]},
             "Coffee Mug ", "kitchen", MUGS),
    _product("B0MUG00002", "Zeta Travel Coffee Mug", "Keeps drinks warm on the go.", ["Leak proof lid"], "$8.50",
             {"Color": [{"value": "Red", "image": None}, {"value": "Blue", "image": None}], "Style": None},
             "coffee mug", "kitchen", MUGS),
    _product("B0LAMP0003", "Lumen Desk Lamp", "Bright reading light.", ["Led light with usb charging port"],
             "$45.00 - $55.00", None, "desk lamp", "home", "Home & Kitchen › Lighting › Desk Lamps"),
    _product("B0MUG00004", "Royal Porcelain Coffee Mug", "A collector's mug.", ["Hand painted"], "$950.00",
             {"Color": [{"value": "Black", "image": None}]}, "coffee mug", "kitchen", MUGS),
    _product("B0BOOK0005", "Plain Notebook", "", "A single bullet", None, None, "notebook", "office",
             "Office Products › Paper › Notebooks"),
    _product("nan", "Broken", "", ["x"], "$1.00", None, "x", "x", "a › b"),
    _product("B0TOOLONG12", "Too long asin", "", ["x"], "$1.00", None, "x", "x", "a › b"),
    _product("B0MUG00001", "Duplicate of the first mug", "", ["x"], "$1.00", None, "x", "x", "a › b"),
]
FIXTURE_ATTRS = {
    "B0MUG00001": {"attributes": ["dishwasher safe", "ceramic material"],
                   "instruction": "i want a dishwasher safe coffee mug made of ceramic",
                   "instruction_attributes": ["dishwasher safe", "ceramic material"]},
    "B0MUG00002": {"attributes": ["leak proof", "dishwasher safe"], "instruction": "i need a leak proof travel mug",
                   "instruction_attributes": ["leak proof"]},
    "B0LAMP0003": {"attributes": ["led light", "usb charging"], "instruction": "i want an led desk lamp",
                   "instruction_attributes": ["led light", "usb charging"]},
    "B0MUG00004": {"attributes": ["dishwasher safe", "ceramic material"]},  # no instruction: no goal
}
FIXTURE_HUMAN = {
    "B0MUG00001": [
        {"instruction": "i need a black coffee mug that is dishwasher safe.", "instruction_attributes": ["dishwasher safe"],
         "instruction_options": ["black", "16 oz"], "options": ["color: black"], "worker_id": "W1"},
        {"instruction": "skipped: no attributes", "instruction_attributes": [], "instruction_options": []},
    ],
}


def write_fixture(root: Path, human: bool = True) -> Path:
    """The fixture as ``items_shuffle_1000.json`` + ``items_ins_v2_1000.json`` (+ ``items_human_ins.json``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "items_shuffle_1000.json").write_text(json.dumps(FIXTURE_PRODUCTS), encoding="utf-8")
    (root / "items_ins_v2_1000.json").write_text(json.dumps(FIXTURE_ATTRS), encoding="utf-8")
    if human:
        (root / "items_human_ins.json").write_text(json.dumps(FIXTURE_HUMAN), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def fixture_catalog(tmp_path_factory):
    return load_catalog("official", write_fixture(tmp_path_factory.mktemp("webshop")))


def goal_index(cat, asin: str, options: dict) -> int:
    return next(i for i, g in enumerate(cat.goals) if g.asin == asin and g.goal_options == options)


# ------------------------------------------------------------------------------------------ loading


def test_price_parsing():  # §7-2
    assert parse_price("$12.99") == ([12.99], "$12.99")
    assert parse_price("$12.99 - $19.99") == ([12.99, 19.99], "$12.99 to $19.99")
    assert parse_price("$1,299.00") == ([1299.0], "$1299.0")
    assert parse_price("$15") == ([15.0], "$15.0")
    assert parse_price(None) == ([100.0], "$100.0") and parse_price("") == ([100.0], "$100.0")
    assert parse_price("$1 - $2 - $3") == ([1.0, 2.0], "$1.0 to $2.0")


def test_loader_cleans_products(fixture_catalog):  # §7-1, 3, 4
    cat = fixture_catalog
    assert [p.asin for p in cat.products] == ["B0MUG00001", "B0MUG00002", "B0LAMP0003", "B0MUG00004", "B0BOOK0005"]
    mug = cat.by_asin["B0MUG00001"]
    assert mug.title == "Acme Ceramic Coffee Mug"  # the duplicate ASIN's record is dropped
    assert mug.options == {"color": ["black", "navy | white"], "size": ["12 oz", "16 oz"]}
    assert clean_option_value("Navy/White ") == "navy | white"
    assert cat.by_asin["B0MUG00002"].options == {"color": ["red", "blue"]}  # null group skipped
    assert mug.query == "coffee mug" and mug.rating == "N.A." and mug.main_image == "https://img/B0MUG00001.jpg"
    book = cat.by_asin["B0BOOK0005"]
    assert book.attributes == [DUMMY_ATTR] and book.bullet_points == ["A single bullet"] and book.price_text == "$100.0"
    assert cat.prices["B0MUG00001"] == 12.99 and 45.0 <= cat.prices["B0LAMP0003"] <= 55.0


def test_synthetic_goals(fixture_catalog):  # §2.1, §2.3, §7-5, 6
    cat = fixture_catalog
    assert len(cat.goals) == 4 + 2 + 1  # 2×2 mug combinations, 2 travel-mug colours, the lamp without options
    g = cat.goals[goal_index(cat, "B0MUG00001", {"color": "navy | white", "size": "16 oz"})]
    assert g.price_upper in (30.0, 40.0, 50.0)  # 2nd..4th multiple of 10 above 12.99
    assert g.instruction_text == (
        "i want a dishwasher safe coffee mug made of ceramic with color: navy | white, and size: 16 oz, "
        f"and price lower than {g.price_upper:.2f} dollars"
    )
    # weight: mean of 1/count(attr): 'dishwasher safe' and 'ceramic material' are in the 4 mug goals
    assert g.weight == pytest.approx(0.25)
    lamp = cat.goals[goal_index(cat, "B0LAMP0003", {})]
    assert lamp.instruction_text.startswith("i want an led desk lamp, and price lower than ")


def test_price_bound_rule():
    rng = random.Random(0)
    for price in (0.5, 12.99, 99.99, 970.0):
        for _ in range(50):
            upper, suffix = price_bound(price, rng)
            cands = [10.0 * i for i in range(1, 100) if 10.0 * i > price][:4]
            assert upper in cands[1:] and upper > price and suffix == f", and price lower than {upper:.2f} dollars"
    assert price_bound(980.0, rng) == (1000000.0, "") and price_bound(1299.0, rng) == (1000000.0, "")


def test_goal_order_is_a_function_of_seed_and_goals(fixture_catalog):  # §2.4, §7-7
    again = build_catalog(FIXTURE_PRODUCTS, FIXTURE_ATTRS, seed=42)
    assert [(g.instruction_text, g.price_upper) for g in again.goals] == [
        (g.instruction_text, g.price_upper) for g in fixture_catalog.goals
    ]
    # the exact RNG order: hidden prices (uniform draws, product order), price bounds, reseed + shuffle
    rng = random.Random(42)
    for p in again.products:
        if len(p.pricing) >= 2:
            rng.uniform(p.pricing[0], p.pricing[1])
    unshuffled = synthetic_goals(again.products, again.prices, rng)
    random.Random(42).shuffle(unshuffled)
    assert [g.instruction_text for g in unshuffled] == [g.instruction_text for g in again.goals]
    orders = {tuple(g.instruction_text for g in build_catalog(FIXTURE_PRODUCTS, FIXTURE_ATTRS, seed=s).goals)
              for s in range(6)}
    assert len(orders) > 1  # another seed gives another order


def test_human_goals(tmp_path):  # §2.2, §7-6
    cat = load_catalog("official", write_fixture(tmp_path), human_goals=True)
    assert len(cat.goals) == 1  # the record without attributes is skipped
    g = cat.goals[0]
    assert g.goal_options == ["black", "16 oz"] and g.weight == 1.0 and g.attributes == ["dishwasher safe"]
    assert g.instruction_text.startswith("i need a black coffee mug that is dishwasher safe, and price lower than ")
    with pytest.raises(ValueError, match="items_human_ins.json"):
        load_catalog("official", write_fixture(tmp_path / "nohuman", human=False), human_goals=True)


def test_bad_source_values(tmp_path, monkeypatch):
    monkeypatch.delenv("WEBSHOP_DATA", raising=False)
    with pytest.raises(ValueError, match="allowed: auto, official, bundled"):
        load_catalog("cloud")
    with pytest.raises(ValueError, match="allowed: small, all"):
        load_catalog("auto", size="huge")
    with pytest.raises(FileNotFoundError, match="items_shuffle_1000.json"):
        load_catalog("official", tmp_path)
    assert load_catalog("auto", tmp_path).source == "bundled"
    monkeypatch.setenv("WEBSHOP_DATA", str(write_fixture(tmp_path / "ws" / "data").parent))  # repo layout: data/
    assert load_catalog("auto").source == "official"


# ------------------------------------------------------------------------------------------- search


def test_analyzer_and_stemmer():  # §4
    assert analyze("Hair Extension <Clip-in> 3.5 oz, the Women's") == ["hair", "extens", "clip", "3.5", "oz", "women"]
    for word, stem in [("caresses", "caress"), ("ponies", "poni"), ("hopping", "hop"), ("relational", "relat"),
                       ("generalization", "gener"), ("electrical", "electr"), ("controll", "control"), ("rate", "rate")]:
        assert porter_stem(word) == stem
    assert analyze("the and of with") == []


def test_search_ranks_and_indexes_the_first_bullet_only(fixture_catalog):
    index = SearchIndex(fixture_catalog.products)
    assert index.search(["desk", "lamp"]) == ["B0LAMP0003"]
    assert set(index.search(["coffee", "mug"])) == {"B0MUG00001", "B0MUG00002", "B0MUG00004"}
    assert index.search(["twelve"]) == []  # second bullet: not indexed
    assert index.search(["dishwasher"]) == ["B0MUG00001"]  # first bullet: indexed
    assert index.search(["navy"]) == ["B0MUG00001"]  # option text is indexed
    assert index.search(["the", "of"]) == []


# -------------------------------------------------------------------------------------------- pages


@pytest.fixture
def engine(fixture_catalog):
    eng = WebshopEngine(fixture_catalog, seed=0)
    eng.reset(goal_index(fixture_catalog, "B0MUG00001", {"color": "black", "size": "16 oz"}))
    return eng


def test_parse_action():  # §3.2
    assert parse_action("click[Buy Now]") == ("click", "buy now")
    assert parse_action("search[a [b] c]") == ("search[a ", "b] c")
    assert parse_action("click") == ("click", None) and parse_action("click[]") == ("click[]", None)


def test_pages_text_and_clickables(engine):  # §3.4, §3.5, §7-8, 12, 13, 17
    ins = engine.goal.instruction_text
    assert engine.observation == f"WebShop [SEP] Instruction: [SEP] {ins} [SEP] Search"
    assert engine.available_actions() == {"has_search_bar": True, "clickables": ["search"]}
    assert engine.admissible_commands() == ["search[<your query>]", "click[search]"]
    step = engine.step("search[Desk Lamp]")
    assert not step.noop and engine.state.keywords == ["desk", "lamp"]
    assert step.observation == (
        f"Instruction: [SEP] {ins} [SEP] Back to Search [SEP] Page 1 (Total results: 1) [SEP] Next > "
        "[SEP] B0LAMP0003 [SEP] Lumen Desk Lamp [SEP] $45.0 to $55.0"
    )
    assert engine.available_actions() == {"has_search_bar": False, "clickables": ["back to search", "next >", "b0lamp0003"]}
    engine.step("search[acme]")
    step = engine.step("click[B0MUG00001]")  # product links are case-insensitive
    head = f"Instruction: [SEP] {ins} [SEP] Back to Search [SEP] < Prev"
    assert step.observation == (
        f"{head} [SEP] color [SEP] black [SEP] navy | white [SEP] size [SEP] 12 oz [SEP] 16 oz [SEP] "
        "Acme Ceramic Coffee Mug [SEP] Price: $12.99 [SEP] Rating: N.A. [SEP] Description [SEP] Features "
        "[SEP] Reviews [SEP] Buy Now"
    )
    assert engine.available_actions()["clickables"] == [
        "back to search", "< prev", "description", "features", "reviews", "buy now", "black", "navy | white", "12 oz", "16 oz",
    ]
    assert engine.step("click[description]").observation == f"{head} [SEP] A sturdy mug for hot drinks."
    assert engine.available_actions() == {"has_search_bar": False, "clickables": ["back to search", "< prev"]}
    engine.step("click[< prev]")
    # all bullets are displayed (only the first is searchable); an empty bullet gives an empty segment
    assert engine.step("click[features]").observation == f"{head} [SEP] Dishwasher safe [SEP] Holds twelve ounces [SEP] "
    engine.step("click[< prev]")
    assert engine.step("click[reviews]").observation == head


def test_options_survive_sub_pages_not_results(engine):  # §3.3, §7-14, 16
    engine.step("search[acme mug]")
    engine.step("click[b0mug00001]")
    item = engine.observation
    step = engine.step("click[navy | white]")
    assert step.observation == item and not step.noop  # the text does not change; the state does
    engine.step("click[black]")  # same group: overwritten
    engine.step("click[16 oz]")
    assert engine.state.options == {"color": "black", "size": "16 oz"}
    assert engine.step("click[16 oz]").noop  # choosing it again changes nothing
    engine.step("click[features]")
    engine.step("click[< prev]")
    assert engine.state.page == "item_page" and engine.state.options == {"color": "black", "size": "16 oz"}
    engine.step("click[< prev]")
    assert engine.state.page == "search_results" and engine.state.options == {} and engine.state.asin is None
    engine.step("click[back to search]")
    assert engine.state.page == "index" and engine.state.keywords is None


def test_invalid_actions_are_noops(engine):  # §3.2, §7-15
    for action in ["click[search]", "search[]", "click[nonexistent]", "buy", "Click[search]", " search[mug]",
                   "click[< prev]", "look[mug]", "click[black]"]:
        before = engine.observation
        step = engine.step(action)
        assert step.noop and step.reward == 0.0 and not step.done and step.observation == before, action
    engine.step("search[mug]")
    for action in ["click[< prev]", "click[buy now]", "click[black]", "click[description]"]:  # page 1 / not on an item
        before = engine.observation
        assert engine.step(action).noop and engine.observation == before, action


def test_search_from_any_page_is_a_quirk(fixture_catalog):  # §3.2 search_anywhere
    for faithful in (True, False):
        eng = WebshopEngine(fixture_catalog, faithful=faithful)
        eng.reset(0)
        eng.step("search[lamp]")
        eng.step("click[b0lamp0003]")
        step = eng.step("search[mug]")
        assert step.noop is (not faithful) and eng.state.page == ("search_results" if faithful else "item_page")
        assert ("click[search]" in eng.admissible_commands()) is False
        eng.step("click[back to search]")
        assert ("click[search]" in eng.admissible_commands()) is faithful  # click_search_listed


def test_pagination(monkeypatch):  # §3.4, §7-9, 10 (on the bundled catalog: > 10 hits)
    cat = load_catalog("bundled")
    eng = WebshopEngine(cat)
    eng.reset(0)
    obs = eng.step("search[black]").observation
    hits = eng.index.search(["black"])
    assert len(hits) == 50 and "Page 1 (Total results: 50) [SEP] Next > [SEP] " + hits[0] in obs and "< Prev" not in obs
    assert [c for c in eng.available_actions()["clickables"] if c.startswith("b0")] == [a.lower() for a in hits[:10]]
    obs = eng.step("click[next >]").observation
    assert "Page 2 (Total results: 50) [SEP] < Prev [SEP] Next > [SEP] " + hits[10] in obs
    for _ in range(4):
        eng.step("click[next >]")
    obs = eng.observation
    assert obs.endswith("Page 6 (Total results: 50) [SEP] < Prev [SEP] Next >")  # past the end: empty, no error
    eng.step("click[< prev]")
    assert eng.state.page_num == 5 and eng.observation.split(SEP)[-3] == hits[-1]
    strict = WebshopEngine(cat, eng.index, faithful=False)  # next_always_shown fixed: no Next > on the last page
    strict.reset(0)
    strict.step("search[black]")
    for _ in range(4):
        strict.step("click[next >]")
    assert strict.state.page_num == 5 and "Next >" not in strict.observation
    assert strict.step("click[next >]").noop


def test_buy_now_ends_and_auto_resets(engine):  # §3.3, §7-18
    engine.step("search[acme]")
    engine.step("click[b0mug00001]")
    engine.step("click[black]")
    step = engine.step("click[buy now]")
    assert step.done and 0 <= step.reward <= 1
    assert f"Your score (min 0.0, max 1.0) [SEP] {step.reward}" in step.observation
    assert '[SEP] options [SEP] {"color": "black"} [SEP]' in step.observation
    assert engine.available_actions() == {"has_search_bar": True, "clickables": ["search"]}  # a fresh search page
    strict = WebshopEngine(engine.catalog, engine.index, faithful=False)
    strict.reset(0)
    strict.step("search[lamp]")
    strict.step("click[b0lamp0003]")
    assert strict.step("click[buy now]").done
    assert strict.available_actions() == {"has_search_bar": False, "clickables": []}
    assert strict.step("search[mug]").noop


# ---------------------------------------------------------------------------------------------- env


def test_env_checker_and_semantics(fixture_catalog):
    env = WebshopTextEnv(fixture_catalog, goals=range(len(fixture_catalog.goals)), max_episode_steps=3)
    check_env(env, skip_render_check=True)
    lamp = goal_index(fixture_catalog, "B0LAMP0003", {})
    obs, info = env.reset(options={"game": f"goal:{lamp}"})
    assert obs.startswith("WebShop [SEP] Instruction: [SEP] i want an led desk lamp")
    assert info["game"] == f"goal:{lamp}" and info["task_type"] == "home" and info["score"] == 0.0
    assert info["state"] == obs and info["noop"] is False and info["won"] is False
    obs2, reward, term, trunc, info = env.step("click[nothing]")
    assert obs2 == obs and reward == 0.0 and info["noop"] and not term and not trunc
    env.step("search[lamp]")
    _, _, term, trunc, info = env.step("click[description]")
    assert trunc and not term  # 3 steps, no purchase
    assert env.step("search[lamp]")[3] and env.step("search[lamp]")[4]["noop"]  # finished: no-op
    with pytest.raises(ValueError, match="goal:<index>"):
        env.reset(options={"game": "lamp"})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"level": 1})
    with pytest.raises(ValueError, match="observation_format"):
        WebshopTextEnv(fixture_catalog, observation_format="html")


def test_serl_observation_format(fixture_catalog):  # WEBSHOP_SPEC §6 format_obs
    env = WebshopTextEnv(fixture_catalog, observation_format="serl")
    obs, info = env.reset(options={"game": "goal:0"})
    assert obs == "'Search'" and info["state"] == "'Search'"
    obs, *_ = env.step("search[lamp]")
    assert obs == "'Back to Search' [SEP] 'Page 1 (Total results: 1)' [SEP] 'Next >' [SEP] 'B0LAMP0003' [SEP] " \
                  "'Lumen Desk Lamp' [SEP] '$45.0 to $55.0'"
    assert env.page.startswith("Instruction: [SEP] ")


def test_search_index_disk_cache(fixture_catalog, tmp_path):
    built = SearchIndex(fixture_catalog.products, tmp_path, fixture_catalog.fingerprint)
    assert len(list(tmp_path.iterdir())) == 1
    loaded = SearchIndex(fixture_catalog.products, tmp_path, fixture_catalog.fingerprint)  # no re-analysis
    for q in (["coffee", "mug"], ["desk"], ["navy"], ["the"]):
        assert loaded.search(q) == built.search(q)
