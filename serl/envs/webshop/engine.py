"""The WebShop page state machine and its text ``gymnasium.Env`` (WEBSHOP_SPEC §3).

:class:`WebshopEngine` is the protocol: pages ``index`` (search), ``search_results``, ``item_page``,
``item_sub_page`` (description / features / reviews / attributes) and ``done``, tracked explicitly (§3.3);
the text observation with `` [SEP] `` separators (§3.4); the available actions
``{"has_search_bar": bool, "clickables": [...]}`` (§3.5); the action grammar ``name[argument]`` with the
argument lowercased (§3.2); BM25 search (:mod:`.search`, §4); the reward on Buy Now (:mod:`.reward`, §5).
Invalid or unavailable actions are no-ops: reward 0, not done, page unchanged (§3.2, §7-15).

:class:`WebshopTextEnv` wraps it as a text ``gymnasium.Env`` with serl's semantics (like
``serl.envs.alfworld.env.AlfworldTextEnv``):

* ``reset(seed=None, options={"game": "goal:<i>"})`` serves goal ``i`` of the catalog's shuffled goal list
  (§2.4 ``reset(session=i)``); without a game option a goal of the env's pool is drawn with ``np_random``.
* ``step(action)`` -> ``(observation, reward, terminated, truncated, info)``. reward = 10.0 on the step that
  buys with a WebShop reward of exactly 1.0, else 0.0 (SERL_REFERENCE §8.2, WEBSHOP_SPEC §6 "Worker step");
  ``terminated`` = bought (the episode ends on Buy Now, won or not); ``truncated`` after
  ``max_episode_steps`` steps without a purchase (every step counts, no-ops included).
* Stepping a finished episode is a no-op returning the last observation, reward 0.0 and the same flags.
* ``info``: ``admissible_commands`` (``search[<your query>]`` when the page has a search bar, then
  ``click[<x>]`` per clickable, §6 ``format_avail_actions``), ``available_actions`` (the raw dict), ``won``
  (bought with reward 1.0), ``task`` (the instruction text), ``task_type`` (the goal product's
  ``category``), ``game``, ``score`` (the WebShop reward of the episode so far: 0 until Buy Now),
  ``state`` (the page text, plus the selected options when any: clicking an option changes no page text,
  §3.4), ``noop`` (the action changed nothing: invalid or unavailable, or a valid action that left page and
  selection exactly as they were).
* ``observation_format="raw"`` returns the WebShop page text (§3.4); ``"serl"`` the wrapper's formatted
  page (:func:`serl.envs.webshop.prompts.format_observation`: segments after the instruction, quoted), which
  is what the reference's prompts, history, anchors and immediate feedback show (§6).

Quirks of the official environment, all reproduced when ``faithful=True`` (default) and fixed otherwise
(the one compatibility switch, WEBSHOP_SPEC §8):

1. ``click_search_listed`` — the search page lists the clickable ``search`` (so the admissible actions hold
   ``click[search]``), but clicking it is a no-op (§3.2, §6). Fixed: not listed.
2. ``search_anywhere`` — ``search[q]`` works on every page, not only where a search bar is (§3.2). Fixed:
   only on the search page.
3. ``auto_reset_after_buy`` — Buy Now returns the done page, then the session restarts with a goal drawn by
   weight, so the available actions after a purchase describe a fresh search page (§3.3). Fixed: the done
   page stays, with no actions.
4. ``next_always_shown`` — ``Next >`` is on every results page; past the last hit it shows an empty list
   (§3.4, §7-10). Fixed: only while more hits follow.
5. ``fuzzy_options`` — options match by token-set ratio > 85, a synthetic ``(name, value)`` goal pair as the
   text "name value" (§5). Fixed: equal normalised values (:mod:`.reward`).
6. ``colour_normalisation`` — options are reduced to the first COLOR_SET word they contain (``navy blue``
   -> ``blue``, ``standard`` -> ``tan``, §5). Fixed: off.
7. ``title_score_list_denominator`` — ``title_score`` divides by the goal's noun list length, duplicates
   included (§5). Fixed: distinct nouns.

Not reproduced in either mode: the reference's per-worker goal shuffles (the split leak, §2.5; here the goal
order depends only on the catalog seed and goals), the off-by-one of the random-session goal draw (§2.4),
the ``<r>/<c>/<q>/<a>`` debug searches (§4) and the mis-spelt but inert details of the done page beyond its
segment list (§3.4).
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
from gymnasium import spaces

from serl.envs.base import reset_game
from serl.envs.webshop.catalog import Catalog, Goal
from serl.envs.webshop.prompts import SEP, format_observation
from serl.envs.webshop.reward import TAGGERS, RewardBreakdown, get_reward
from serl.envs.webshop.search import SearchIndex

WIN_REWARD = 10.0  # SERL_REFERENCE §8.2: 10 iff bought with WebShop reward 1.0
PRODUCT_WINDOW = 10  # §3.4: ten products per results page
PAGES = ("index", "search_results", "item_page", "item_sub_page", "done")
SEARCH_PLACEHOLDER = "search[<your query>]"  # §6 format_avail_actions
OBS_FORMATS = ("raw", "serl")
GAME_PREFIX = "goal:"
OBS_MAX_LENGTH = 1 << 20
ACTION_MAX_LENGTH = 4096
_ACTION = re.compile(r"(.+)\[(.+)\]")  # §3.2: greedy name, argument up to the last ']', anchored at the start
# Buttons (§3.5, lowercased labels)
BACK_TO_SEARCH, PREV, NEXT, BUY_NOW = "back to search", "< prev", "next >", "buy now"
SUB_PAGES = ("description", "features", "reviews", "attributes")


def parse_action(action: str) -> tuple[str, str | None]:
    """``(name, argument)`` of an action (§3.2): the argument lowercased, None without a ``[...]``."""
    m = _ACTION.match(action)
    if m is None:
        return action, None
    return m.group(1), m.group(2).lower()


def game_id(index: int) -> str:
    """The game id of goal ``index``: ``"goal:<index>"``."""
    return f"{GAME_PREFIX}{index}"


def parse_game(game: Any) -> int:
    """The goal index of a game id ``"goal:<i>"`` (an int is accepted as is)."""
    if isinstance(game, int) and not isinstance(game, bool):
        return game
    if isinstance(game, str) and game.startswith(GAME_PREFIX) and game[len(GAME_PREFIX) :].isdigit():
        return int(game[len(GAME_PREFIX) :])
    raise ValueError(f"bad WebShop game id {game!r}; expected 'goal:<index>' (e.g. 'goal:0')")


@dataclass
class PageState:
    """Where the session is (§3.1 ``user_sessions``): page type and what it shows."""

    page: str = "index"
    keywords: list[str] | None = None
    page_num: int = 1
    asin: str | None = None
    sub_page: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    visited: set[str] = field(default_factory=set)

    def key(self) -> tuple:
        """Everything an action can change (used for ``noop``)."""
        kw = tuple(self.keywords) if self.keywords is not None else None
        return (self.page, kw, self.page_num, self.asin, self.sub_page, tuple(sorted(self.options.items())))


@dataclass(frozen=True)
class EngineStep:
    """The result of :meth:`WebshopEngine.step`."""

    observation: str
    reward: float  # the WebShop reward in [0, 1] on Buy Now, else 0.0
    done: bool
    noop: bool
    breakdown: RewardBreakdown | None = None


class WebshopEngine:
    """One WebShop session over a catalog (see the module docstring).

    Args:
        catalog: the loaded catalog (:func:`serl.envs.webshop.catalog.load_catalog`).
        index: its search index (built here when None).
        faithful: reproduce the official quirks (module docstring list).
        show_attrs: show the ``Attributes`` button/sub-page (§3.4).
        tagger: title-noun tagger of the reward (``heuristic`` | ``spacy``, :mod:`.reward`).
        seed: seed of the weight-sampled goal of the faithful auto-reset after Buy Now.
    """

    def __init__(
        self,
        catalog: Catalog,
        index: SearchIndex | None = None,
        *,
        faithful: bool = True,
        show_attrs: bool = False,
        tagger: str = "heuristic",
        seed: int | None = None,
    ) -> None:
        if tagger not in TAGGERS:
            raise ValueError(f"unknown tagger {tagger!r}; allowed: {', '.join(TAGGERS)}")
        self.catalog = catalog
        self.index = index if index is not None else SearchIndex(catalog.products)
        self.faithful = bool(faithful)
        self.show_attrs = bool(show_attrs)
        self.tagger = tagger
        self._rng = random.Random(seed)
        self._search_cache: dict[tuple[str, ...], list[str]] = {}
        self.goal: Goal | None = None
        self.state = PageState()
        self.last_breakdown: RewardBreakdown | None = None
        self._done_page = ""

    # ---------------------------------------------------------------------------------------- session

    def reset(self, goal_index: int) -> str:
        """Start a session on ``catalog.goals[goal_index]`` at the search page; returns its observation."""
        self.goal = self.catalog.goal(goal_index)
        self.state = PageState()
        self.last_breakdown = None
        return self.observation

    def _search(self, keywords: Sequence[str]) -> list[str]:
        key = tuple(keywords)
        if key not in self._search_cache:
            if len(self._search_cache) > 4096:
                self._search_cache.clear()
            self._search_cache[key] = self.index.search(keywords)
        return self._search_cache[key]

    # ----------------------------------------------------------------------------------------- render

    def _head(self) -> list[str]:
        assert self.goal is not None
        return ["Instruction:", self.goal.instruction_text.strip(), "Back to Search"]

    def _results_page(self) -> tuple[list[str], list[str]]:
        hits = self._search(self.state.keywords or [])
        p = self.state.page_num
        shown = hits[(p - 1) * PRODUCT_WINDOW : p * PRODUCT_WINDOW]
        segs = self._head() + [f"Page {p} (Total results: {len(hits)})"]
        buttons = [BACK_TO_SEARCH]
        if p > 1:
            segs.append("< Prev")
            buttons.append(PREV)
        if self.faithful or p * PRODUCT_WINDOW < len(hits):  # quirk 4: next_always_shown
            segs.append("Next >")
            buttons.append(NEXT)
        for asin in shown:
            prod = self.catalog.by_asin[asin]
            segs += [asin, prod.title.strip(), prod.price_text]
        return segs, buttons + [a.lower() for a in shown]

    def _item_buttons(self) -> list[str]:
        subs = ["description", "features", "reviews"] + (["attributes"] if self.show_attrs else [])
        return [BACK_TO_SEARCH, PREV] + subs + [BUY_NOW]

    def _segments(self) -> list[str]:
        """The visible text nodes of the current page, stripped (§3.4); empty values omitted."""
        st, goal = self.state, self.goal
        assert goal is not None
        if st.page == "index":
            segs = ["WebShop", "Instruction:", goal.instruction_text.strip(), "Search"]
        elif st.page == "search_results":
            segs = self._results_page()[0]
        elif st.page == "item_page":
            prod = self.catalog.by_asin[st.asin or ""]
            segs = self._head() + ["< Prev"]
            for name, values in prod.options.items():
                segs += [name] + list(values)
            segs += [prod.title.strip(), f"Price: {prod.price_text}", f"Rating: {prod.rating}"]
            segs += ["Description", "Features", "Reviews"] + (["Attributes"] if self.show_attrs else []) + ["Buy Now"]
        elif st.page == "item_sub_page":
            prod = self.catalog.by_asin[st.asin or ""]
            segs = self._head() + ["< Prev"]
            if st.sub_page == "description":
                segs.append(prod.description.strip())
            elif st.sub_page == "features":
                return [s for s in segs if s] + [b.strip() for b in prod.bullet_points]  # empty bullet kept
            elif st.sub_page == "attributes":
                segs += list(prod.attributes) + [prod.category, prod.query, prod.product_category]
            # reviews: none are loaded (§1.5-2), only the head shows
        else:
            return self._done_page.split(SEP)
        return [s for s in segs if s]

    @property
    def observation(self) -> str:
        """The current page as text (§3.4)."""
        if self.goal is None:
            raise RuntimeError("call reset() first")
        if self.state.page == "done":
            return self._done_page
        return SEP.join(self._segments())

    def _clickables(self) -> dict[str, tuple[str, str]]:
        """Key -> (kind, target), in page order (§3.5): buttons, then product links, then option values.

        A later product link / option value equal to an earlier key keeps that key's position; an option
        value equal to a button routes as the button, a value shared by two groups as the later group.
        """
        st = self.state
        out: dict[str, tuple[str, str]] = {}
        if st.page == "index":
            if self.faithful:  # quirk 1: click_search_listed (and ignored)
                out["search"] = ("button", "search")
        elif st.page == "search_results":
            buttons_and_links = self._results_page()[1]
            for key in buttons_and_links:
                kind = "button" if key in (BACK_TO_SEARCH, PREV, NEXT) else "asin"
                out.setdefault(key, (kind, key))
        elif st.page == "item_page":
            for key in self._item_buttons():
                out[key] = ("button", key)
            prod = self.catalog.by_asin[st.asin or ""]
            for name, values in prod.options.items():
                for v in values:
                    if out.get(v, ("", ""))[0] != "button":
                        out[v] = ("option", name)
        elif st.page == "item_sub_page":
            out[BACK_TO_SEARCH] = ("button", BACK_TO_SEARCH)
            out[PREV] = ("button", PREV)
        return out

    def available_actions(self) -> dict[str, Any]:
        """``{"has_search_bar": bool, "clickables": [str, ...]}`` (§3.5)."""
        return {"has_search_bar": self.state.page == "index", "clickables": list(self._clickables())}

    def admissible_commands(self) -> list[str]:
        """The available actions as commands (§6 ``format_avail_actions``, without the quotes)."""
        avail = self.available_actions()
        cmds = [SEARCH_PLACEHOLDER] if avail["has_search_bar"] else []
        return cmds + [f"click[{c}]" for c in avail["clickables"]]

    # ------------------------------------------------------------------------------------------- step

    def step(self, action: str) -> EngineStep:
        """Apply one action (§3.2–§3.3); an invalid or unavailable action is a no-op."""
        if self.goal is None:
            raise RuntimeError("call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"action must be str, got {type(action).__name__}")
        before = self.state.key()
        name, arg = parse_action(action)
        st = self.state
        if name == "search" and arg and st.page != "done" and (self.faithful or st.page == "index"):  # quirk 2
            self.state = PageState(page="search_results", keywords=arg.split(" "), page_num=1, visited=st.visited)
        elif name == "click" and arg and arg != "search" and arg in (clicks := self._clickables()):
            kind, target = clicks[arg]
            if kind == "option":
                st.options[target] = arg  # §3.3: overwrites the group's previous choice
            elif kind == "asin":
                st.asin = arg.upper()
                st.visited.add(st.asin)
                st.page = "item_page"
            elif target == BUY_NOW:
                return self._buy()
            else:
                self._click_button(target)
        # anything else: no-op (§3.2)
        return EngineStep(self.observation, 0.0, False, self.state.key() == before)

    def _click_button(self, target: str) -> None:
        st = self.state
        if target == BACK_TO_SEARCH:
            self.state = PageState()  # clears keywords, page, asin, visited, options (goal kept)
        elif target == NEXT:
            st.page_num += 1
        elif target == PREV:
            if st.page == "search_results":
                st.page_num -= 1
            elif st.page == "item_page":  # back to the same results page; options cleared
                st.page, st.asin, st.options = "search_results", None, {}
            else:  # sub-page -> item, options kept
                st.page, st.sub_page = "item_page", None
        elif target in SUB_PAGES:
            st.page, st.sub_page = "item_sub_page", target

    def _buy(self) -> EngineStep:
        st, goal = self.state, self.goal
        assert goal is not None and st.asin is not None
        prod = self.catalog.by_asin[st.asin]
        bd = get_reward(
            prod, goal, self.catalog.prices[st.asin], st.options, faithful=self.faithful, tagger=self.tagger
        )
        self.last_breakdown = bd
        self._done_page = SEP.join(  # §3.4 done page (text env, SERL)
            [
                "Thank you for shopping with us!", "Your code:", "None", "(Paste it in your MTurk interface.)",
                "Purchased", "asin", prod.asin, "options", json.dumps(st.options, sort_keys=True),
                "attrs", "None", "category", "None", "query", "None", "product category", "None",
                "Target", "asin", "options", "attrs", "price upper", "instuction text", "category",
                "product category", "query", "Goal", "None", "Reward", "Your score (min 0.0, max 1.0)",
                str(bd.reward), "Reward Details", "None",
            ]
        )
        obs = self._done_page
        if self.faithful:  # quirk 3: auto_reset_after_buy, a weight-sampled goal (§2.4)
            goals = self.catalog.goals
            self.goal = self._rng.choices(goals, weights=[g.weight for g in goals], k=1)[0]
            self.state = PageState()
        else:
            self.state = PageState(page="done")
        return EngineStep(obs, bd.reward, True, False, bd)


class AnyText(spaces.Text):
    """A ``Text`` space holding any string of ``min_length..max_length`` characters (samples printable ASCII).

    WebShop pages carry arbitrary Unicode from the catalog, which no fixed charset can list.
    """

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length


class WebshopTextEnv(gym.Env):
    """WebShop as a text ``gymnasium.Env`` (see the module docstring).

    Args:
        catalog: the loaded catalog.
        goals: goal indices for ``reset()`` without a game option (e.g. the training split); may be empty
            (then every reset must name its game).
        index: a shared search index (built from the catalog when None).
        max_episode_steps: truncation limit (SERL env.max_steps: 15).
        faithful: reproduce the official quirks (module docstring).
        show_attrs: the ``Attributes`` sub-page (§3.4).
        tagger: ``heuristic`` | ``spacy`` title-noun tagger of the reward.
        observation_format: ``raw`` (the WebShop page text) | ``serl`` (the wrapper's formatted page).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        catalog: Catalog,
        goals: Sequence[int] = (),
        *,
        index: SearchIndex | None = None,
        max_episode_steps: int = 15,
        faithful: bool = True,
        show_attrs: bool = False,
        tagger: str = "heuristic",
        observation_format: str = "raw",
    ) -> None:
        if not isinstance(max_episode_steps, int) or isinstance(max_episode_steps, bool) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
        if observation_format not in OBS_FORMATS:
            raise ValueError(f"unknown observation_format {observation_format!r}; allowed: {', '.join(OBS_FORMATS)}")
        self.catalog = catalog
        self.goals = goals
        self.max_episode_steps = max_episode_steps
        self.observation_format = observation_format
        self.engine = WebshopEngine(catalog, index, faithful=faithful, show_attrs=show_attrs, tagger=tagger)
        self.observation_space = AnyText(max_length=OBS_MAX_LENGTH, min_length=1, charset=string.printable)
        self.action_space = spaces.Text(max_length=ACTION_MAX_LENGTH, min_length=0, charset=string.printable)
        self.render_mode = None
        self._game: str | None = None
        self._goal: Goal | None = None
        self._obs = ""
        self._page = ""
        self._admissible: list[str] = []
        self._available: dict[str, Any] = {}
        self._score = 0.0
        self._won = False
        self._noop = False
        self._steps = 0
        self._terminated = False
        self._truncated = False

    def _format(self, page: str) -> str:
        if self.observation_format == "serl" and self._goal is not None:
            return format_observation(page, self._goal.instruction_text.strip())
        return page

    def _state_text(self) -> str:
        opts = self.engine.state.options
        if opts and not self._terminated:
            chosen = ", ".join(f"{k}: {v}" for k, v in sorted(opts.items()))
            return f"{self._obs}\nSelected options: {chosen}"
        return self._obs

    def _info(self) -> dict[str, Any]:
        assert self._goal is not None
        return {
            "admissible_commands": list(self._admissible),
            "available_actions": {k: list(v) if isinstance(v, list) else v for k, v in self._available.items()},
            "won": self._won,
            "task": self._goal.instruction_text.strip(),
            "task_type": self._goal.category or "unknown",
            "game": self._game,
            "score": self._score,
            "state": self._state_text(),
            "noop": self._noop,
        }

    def _snapshot(self) -> None:
        self._admissible = self.engine.admissible_commands()
        self._available = self.engine.available_actions()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        game = reset_game(options)
        if game is None:
            if len(self.goals) == 0:
                raise ValueError("this env has no goal pool: pass options={'game': 'goal:<index>'}")
            index = int(self.goals[int(self.np_random.integers(len(self.goals)))])
        else:
            index = parse_game(game)
        self._page = self.engine.reset(index)
        self._goal = self.engine.goal
        self._game = game_id(index)
        self._obs = self._format(self._page)
        self._snapshot()
        self._score, self._won, self._noop = 0.0, False, False
        self._steps, self._terminated, self._truncated = 0, False, False
        return self._obs, self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._goal is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"action must be str, got {type(action).__name__}")
        if self._terminated or self._truncated:  # finished episode: no-op
            self._noop = True
            return self._obs, 0.0, self._terminated, self._truncated, self._info()
        res = self.engine.step(action)
        self._steps += 1
        self._noop = res.noop
        reward = 0.0
        if res.done:
            self._score = res.reward
            self._won = res.reward == 1.0  # §5: exactly 1.0 only for a perfect purchase
            reward = WIN_REWARD if self._won else 0.0
            self._terminated = True
        self._page = res.observation
        self._obs = self._format(res.observation)
        self._snapshot()
        self._truncated = not self._terminated and self._steps >= self.max_episode_steps
        return self._obs, reward, self._terminated, self._truncated, self._info()

    @property
    def page(self) -> str:
        """The current raw WebShop page text (whatever ``observation_format`` is)."""
        return self._page

    @property
    def goal(self) -> Goal | None:
        """The current episode's goal."""
        return self._goal
