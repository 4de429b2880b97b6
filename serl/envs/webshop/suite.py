"""``WebshopSuite``: WebShop behind serl's :class:`~serl.envs.base.EnvSuite` seam (docs/design.md §5).

Catalog (:mod:`.catalog`): the official files from ``data_root`` / ``$WEBSHOP_DATA`` (``catalog=official``),
the bundled catalog (``catalog=bundled``), or the official files when present, else the bundled ones
(``catalog=auto``). Loaded lazily on first use, once per process and configuration (the suite pickles
without it, so env worker processes load their own copy).

Games are goal ids ``"goal:<i>"`` into the seeded, shuffled goal list. Split (WEBSHOP_SPEC §2.5, SERL):
``test`` = indices ``[0, test_size)``, ``train`` = the rest; the permutation depends only on ``seed`` and the
goal list, so the same game id names the same goal in every process and no test goal is ever trained on.
``train_pool`` / ``eval_pool`` cap the pools (first N indices of each split; default: the whole split);
``task_types`` restricts both to goals whose product ``category`` is listed.

Per step: :meth:`render_prompt` (SERL_REFERENCE §8.2 templates, :mod:`.prompts`), ``response_format``
(WebShop: printable-ASCII commands, 20 fallback characters, ``search``/``click`` bracket verbs;
SERL_REFERENCE §8.3), :meth:`success_metrics` (``success_rate`` = reward 1.0, ``score`` = mean WebShop task
score, per task type too), :meth:`expert_plan` / :meth:`expert_steps` (search the goal's query, open its
product — paging with ``Next >`` when needed — click each goal option, buy: reward 1.0).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serl.envs.base import per_task_type
from serl.envs.response import ThinkActionFormat
from serl.envs.webshop.catalog import (
    SIZES,
    SOURCES,
    Catalog,
    load_catalog,
    official_dir,
    split_indices,
)
from serl.envs.webshop.engine import (
    BUY_NOW,
    NEXT,
    OBS_FORMATS,
    PRODUCT_WINDOW,
    WebshopTextEnv,
    game_id,
    parse_game,
)
from serl.envs.webshop.prompts import render_prompt as _render_prompt
from serl.envs.webshop.reward import MATCH_THRESHOLD, TAGGERS, token_set_ratio
from serl.envs.webshop.search import SearchIndex

if TYPE_CHECKING:  # serl.types imports torch; not needed at run time here
    from serl.types import Trajectory

log = logging.getLogger(__name__)

WEBSHOP_FALLBACK_CHARS = 20  # SERL_REFERENCE §8.3
EVAL_SPLITS = ("test",)
SERL_TEST_SIZE = 500  # WEBSHOP_SPEC §2.5: validation goals = indices 0..499
BUNDLED_CATEGORIES = ("beauty", "electronics", "fashion", "food", "furniture", "garden")  # data/, checked by a test
WHOLE_SPLIT = 2**31 - 1  # pool cap meaning "the whole split"
INDEX_CACHE_MIN_PRODUCTS = 20000  # larger catalogs keep their BM25 index on disk (§8: build once per file)

_CACHE: dict[tuple, tuple[Catalog, SearchIndex]] = {}
_CACHE_LOCK = threading.Lock()


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = f"None or an int >= {minimum}" if allow_none else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def _default_cache_root() -> Path:
    env = os.environ.get("SERL_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/serl").expanduser()


class WebshopSuite:
    """WebShop behind the :class:`~serl.envs.base.EnvSuite` protocol (see the module docstring).

    Args:
        data_root: folder of the official files (default ``$WEBSHOP_DATA``).
        catalog: ``auto`` | ``official`` | ``bundled``.
        size: ``small`` (the ``_1000`` files, SERL's ``use_small``) | ``all`` (full files).
        human_goals: human instructions (``items_human_ins.json``) instead of synthetic goals (SERL: False).
        faithful: reproduce the official quirks (:mod:`.engine` docstring list).
        max_turns: episode cap (SERL env.max_steps: 15).
        history_length: H observation/action pairs in the prompt (SERL: 2).
        test_size: goals in the held-out ``test`` split (SERL: 500).
        train_pool / eval_pool: cap on each pool, the first N goals of its split (default: the whole split).
        eval_split: ``test``.
        seed: WebShop's catalog seed (hidden prices, price bounds, goal shuffle; official default 42).
        task_types: restrict both pools to goals of these product categories (None: all).
        show_attrs: the ``Attributes`` sub-page.
        tagger: title-noun tagger of the reward: ``heuristic`` | ``spacy`` (needs ``en_core_web_sm``).
        observation_format: ``serl`` (the wrapper's formatted page, what the reference's prompts and feedback
            show) | ``raw`` (the WebShop page text).
        num_products: keep only the first N products of the file.
        response_format: how a response is read (default: ``serl`` rules, printable ASCII, 20 fallback
            characters, bracket verbs ``search``/``click``).
        use_train_pool: False when only the eval pool is played (scripts/eval.py); WebShop's pools come from one
            catalog, so this only skips the check that training goals remain.
    """

    name = "webshop"

    def __init__(
        self,
        data_root: str | None = None,
        catalog: str = "auto",
        size: str = "small",
        human_goals: bool = False,
        faithful: bool = True,
        max_turns: int = 15,
        history_length: int = 2,
        test_size: int = SERL_TEST_SIZE,
        train_pool: int = WHOLE_SPLIT,
        eval_pool: int = WHOLE_SPLIT,
        eval_split: str = "test",
        seed: int = 42,
        task_types: Sequence[str] | None = None,
        show_attrs: bool = False,
        tagger: str = "heuristic",
        observation_format: str = "serl",
        num_products: int | None = None,
        response_format: ThinkActionFormat | None = None,
        use_train_pool: bool = True,
    ) -> None:
        if catalog not in SOURCES:
            raise ValueError(f"unknown catalog {catalog!r}; allowed: {', '.join(SOURCES)}")
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; allowed: {', '.join(SIZES)}")
        if eval_split not in EVAL_SPLITS:
            raise ValueError(f"unknown eval_split {eval_split!r}; allowed: {', '.join(EVAL_SPLITS)}")
        if tagger not in TAGGERS:
            raise ValueError(f"unknown tagger {tagger!r}; allowed: {', '.join(TAGGERS)}")
        if observation_format not in OBS_FORMATS:
            raise ValueError(f"unknown observation_format {observation_format!r}; allowed: {', '.join(OBS_FORMATS)}")
        self.max_turns = _check_int("max_turns", max_turns, 1)
        self.history_length = _check_int("history_length", history_length, 0)
        self.test_size = _check_int("test_size", test_size, 1)
        self.train_pool = _check_int("train_pool", train_pool, 1)
        self.eval_pool = _check_int("eval_pool", eval_pool, 1)
        self.num_products = _check_int("num_products", num_products, 1, allow_none=True)
        self.seed = _check_int("seed", seed, 0)
        self.eval_split = eval_split
        self.size = size
        self.human_goals = bool(human_goals)
        self.faithful = bool(faithful)
        self.show_attrs = bool(show_attrs)
        self.tagger = tagger
        self.observation_format = observation_format
        self.use_train_pool = bool(use_train_pool)
        self.task_types = [str(t) for t in task_types] if task_types is not None else None
        if self.task_types is not None and not self.task_types:
            raise ValueError("task_types must be None or a non-empty list of product categories")
        self.response_format = (
            response_format
            if response_format is not None
            else ThinkActionFormat(fallback_chars=WEBSHOP_FALLBACK_CHARS, bracket_verbs=("search", "click"))
        )
        if not isinstance(self.response_format, ThinkActionFormat):
            raise TypeError(f"response_format must be a ThinkActionFormat, got {type(self.response_format).__name__}")
        root = data_root if data_root is not None else os.environ.get("WEBSHOP_DATA") or None
        self.data_root: Path | None = Path(root).expanduser().absolute() if root else None
        found = official_dir(self.data_root, size)
        if catalog == "official" and found is None:
            load_catalog("official", self.data_root, size=size)  # raises the FileNotFoundError naming the files
        self.source = "official" if catalog != "bundled" and found is not None else "bundled"
        if self.source == "bundled" and self.task_types is not None:  # known without loading: fail at config time
            bad = [t for t in self.task_types if t not in BUNDLED_CATEGORIES]
            if bad:
                raise ValueError(
                    f"unknown task_types {bad}; allowed (the bundled catalog's product categories): "
                    f"{', '.join(BUNDLED_CATEGORIES)}"
                )
        self._catalog_arg = catalog
        self._catalog: Catalog | None = None
        self._index: SearchIndex | None = None
        self._pools: dict[str, list[str]] = {}

    def __getstate__(self) -> dict[str, Any]:  # env workers reload the catalog (module docstring)
        state = dict(self.__dict__)
        state["_catalog"], state["_index"] = None, None
        return state

    # ---------------------------------------------------------------------------------------- catalog

    def _load(self) -> tuple[Catalog, SearchIndex]:
        if self._catalog is None or self._index is None:
            key = (self.source, str(self.data_root), self.size, self.human_goals, self.seed, self.num_products)
            with _CACHE_LOCK:
                if key not in _CACHE:
                    cat = load_catalog(
                        self.source,
                        self.data_root,
                        size=self.size,
                        human_goals=self.human_goals,
                        seed=self.seed,
                        num_products=self.num_products,
                    )
                    big = len(cat.products) >= INDEX_CACHE_MIN_PRODUCTS
                    cache = _default_cache_root() / "webshop_index" if big else None
                    index = SearchIndex(cat.products, cache, cat.fingerprint)
                    _CACHE[key] = (cat, index)
                self._catalog, self._index = _CACHE[key]
            if self.use_train_pool and self.test_size >= len(self._catalog.goals):
                raise ValueError(
                    f"test_size={self.test_size} leaves no training goal: the {self.source} catalog has "
                    f"{len(self._catalog.goals)} goals; use a smaller test_size"
                )
            if self.task_types is not None:
                known = sorted({g.category for g in self._catalog.goals})
                bad = [t for t in self.task_types if t not in known]
                if bad:
                    raise ValueError(f"unknown task_types {bad}; allowed (product categories): {known}")
        return self._catalog, self._index

    @property
    def catalog(self) -> Catalog:
        """The loaded catalog (loads it on first access)."""
        return self._load()[0]

    @property
    def index(self) -> SearchIndex:
        """The catalog's BM25 index (built on first access)."""
        return self._load()[1]

    # ------------------------------------------------------------------------------------------ pools

    def split_indices(self, split: str) -> list[int]:
        """Goal indices of ``split`` (``train`` or ``test``) after the task-type filter and the pool cap."""
        if split not in ("train", self.eval_split):
            raise ValueError(f"unknown pool {split!r}; allowed: train, {self.eval_split}")
        cat = self.catalog
        if split == "train" and not self.use_train_pool:
            raise ValueError("this suite was built with use_train_pool=False: it has no training pool")
        n = len(cat.goals)  # test_size >= n only without a train pool (checked on load): all goals are test goals
        idx = list(split_indices(n, self.test_size)[split]) if self.test_size < n else list(range(n))
        if self.task_types is not None:
            idx = [i for i in idx if cat.goals[i].category in self.task_types]
        return idx[: self.train_pool if split == "train" else self.eval_pool]

    def pool(self, split: str) -> list[str]:
        """The game ids of ``split`` (``train`` or ``test``), ``"goal:<i>"`` in index order."""
        if split not in self._pools:
            ids = [game_id(i) for i in self.split_indices(split)]
            if not ids:
                raise ValueError(f"the {split} pool is empty (task_types={self.task_types})")
            self._pools[split] = ids
        return self._pools[split]

    def train_games(self, n: int, seed: int) -> list[str]:
        """``n`` training game ids with ``random.Random(seed)``: without replacement while possible."""
        _check_int("n", n, 0)
        pool = self.pool("train")
        rng = random.Random(seed)
        out: list[str] = []
        while len(out) < n:
            out.extend(rng.sample(pool, min(len(pool), n - len(out))))
        return out

    def make_env(self, max_episode_steps: int | None = None) -> WebshopTextEnv:
        """A fresh env capped at ``max_episode_steps`` (default ``max_turns``); ``reset()`` without a game
        option draws from the training pool (without one, every reset must name its game)."""
        cap = self.max_turns if max_episode_steps is None else int(max_episode_steps)
        cat, index = self._load()
        return WebshopTextEnv(
            cat,
            [parse_game(g) for g in self.pool("train")] if self.use_train_pool else [],
            index=index,
            max_episode_steps=cap,
            faithful=self.faithful,
            show_attrs=self.show_attrs,
            tagger=self.tagger,
            observation_format=self.observation_format,
        )

    # ----------------------------------------------------------------------------------------- expert

    def expert_plan(self, game: str) -> list[str]:
        """The winning action sequence of ``game`` (reward 1.0): search the goal's query (else the instruction,
        else the product title — the first that finds the product), ``click[next >]`` to its results page,
        open it, click each goal option, buy."""
        cat, index = self._load()
        goal = cat.goal(parse_game(game))
        product = cat.by_asin[goal.asin]
        instruction = goal.instruction_text.split(", and price lower than")[0]
        plan: list[str] | None = None
        for query in (goal.query, instruction, product.title):
            q = " ".join(query.lower().split())
            if not q:
                continue
            hits = index.search(q.split(" "))
            if goal.asin in hits:
                rank = hits.index(goal.asin)
                plan = [f"search[{q}]"] + [f"click[{NEXT}]"] * (rank // PRODUCT_WINDOW)
                break
        if plan is None:
            raise ValueError(f"game {game}: the goal product {goal.asin} is not found by search")
        plan.append(f"click[{goal.asin.lower()}]")
        values = [v for vals in product.options.values() for v in vals]
        for want in goal.option_values():
            if want in values:
                plan.append(f"click[{want}]")
                continue
            best = max(values, key=lambda v: token_set_ratio(v, want), default=None)  # human goals (§1.4)
            if best is not None and token_set_ratio(best, want) > MATCH_THRESHOLD:
                plan.append(f"click[{best}]")
        plan.append(f"click[{BUY_NOW}]")
        return plan

    def expert_steps(self, game: str, max_detours: int = 0, seed: int = 0) -> list[tuple[str, str]]:
        """``(thought, action)`` per step of the expert's winning play: :meth:`expert_plan` with 0..max_detours
        look-and-return detours (a sub-page of the product, then ``< prev``) drawn from ``seed`` before the
        options are chosen; each action with a templated one-sentence rationale."""
        _check_int("max_detours", max_detours, 0)
        plan = self.expert_plan(game)
        goal = self.catalog.goal(parse_game(game))
        rng = random.Random(seed)
        open_at = next(i for i, a in enumerate(plan) if a == f"click[{goal.asin.lower()}]")
        detours: list[str] = []
        for _ in range(rng.randint(0, max_detours)):
            detours += [f"click[{rng.choice(['description', 'features', 'reviews'])}]", "click[< prev]"]
        plan = plan[: open_at + 1] + detours + plan[open_at + 1 :]
        steps: list[tuple[str, str]] = []
        for action in plan:
            arg = action[action.index("[") + 1 : -1]
            if action.startswith("search["):
                thought = f"I need to find the product; I will search for '{arg}'."
            elif arg == NEXT:
                thought = "The product I want is not on this page of results; I will look at the next page."
            elif arg == goal.asin.lower():
                thought = f"Product {goal.asin} matches the instruction; I will open it."
            elif arg in ("description", "features", "reviews"):
                thought = f"I will check the {arg} of this product before choosing its options."
            elif arg == "< prev":
                thought = "I have seen enough of this page; I will go back to the product."
            elif arg == BUY_NOW:
                thought = "The product and its options match every requirement and the price is within budget; I will buy it."
            else:
                thought = f"The instruction asks for '{arg}', so I will select this option."
            steps.append((thought, action))
        return steps

    # --------------------------------------------------------------------------------------- per step

    def render_prompt(
        self,
        task: str,
        history: Sequence[tuple[str, str]],
        step_id: int,
        observation: str,
        admissible: Sequence[str],
    ) -> str:
        """Student prompt (SERL_REFERENCE §8.2); see :func:`serl.envs.webshop.prompts.render_prompt`."""
        return _render_prompt(task, history, step_id, observation, admissible, self.history_length)

    def project_action(self, response: str) -> tuple[str, bool]:
        """SERL_REFERENCE §8.3 with WebShop's 20 fallback characters (``response_format.project``)."""
        return self.response_format.project(response)

    def success_metrics(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """``success_rate`` (bought with reward 1.0), ``score`` (mean WebShop task score in [0, 1], 0 for an
        episode that never bought) and both per task type (``<category>/success_rate``, ``<category>/score``).
        Empty input -> {}."""
        return per_task_type(trajectories, {"success_rate": lambda t: float(t.won), "score": lambda t: float(t.score)})

    def describe(self) -> dict[str, Any]:
        """Where the goals come from (for logs and run summaries)."""
        out: dict[str, Any] = {
            "source": self.source,
            "catalog": self._catalog_arg,
            "data_root": str(self.data_root) if self.data_root else None,
            "size": self.size,
            "human_goals": self.human_goals,
            "faithful": self.faithful,
            "seed": self.seed,
            "test_size": self.test_size,
            "eval_split": self.eval_split,
            "task_types": self.task_types,
            "tagger": self.tagger,
        }
        if self._catalog is not None:
            out.update(
                version=self._catalog.version,
                products=len(self._catalog.products),
                goals=len(self._catalog.goals),
            )
        return out
