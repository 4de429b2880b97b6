"""``AlfworldSuite``: the ALFWorld :class:`~serl.envs.base.EnvSuite` (docs/design.md §5, docs/reference.md §8.1).

Game source (docs/alfworld_games.md §6.2):

1. data root = the ``data_root`` argument, else ``$ALFWORLD_DATA``, else none (§6.2-1);
2. a split is *official* when ``<data_root>/json_2.1.1/<split>`` holds at least one game that passes the
   ``AlfredTWEnv`` filter (``traj_data.json`` present, path free of ``movable``/``Sliced``, one of the six
   task types, ``game.tw-pddl`` present with a truthy ``solvable``; §5.1, §6.2-2);
3. ``source = "official"`` when both the train split and ``eval_split`` are official; otherwise
   ``"generated"`` for both — sources are never mixed (§6.2-4) — or, with ``require_official=True``, a
   ``FileNotFoundError`` naming the missing split(s);
4. generated pools are built lazily on first use with :func:`generate_games` under ``cache_dir``
   (``train_pool`` games of ``train``, ``eval_pool`` games of ``eval_split``; the split is part of every
   game's RNG key and directory, so the pools never overlap, and ``valid_unseen`` uses held-out floor
   plans, §6.2-3). Official pools are the whole split, sorted (§6.2-5), and a warning is logged when its
   size differs from the full release (train 3553, valid_seen 140, valid_unseen 134: partial download).

Per-step interface: :meth:`render_prompt` (docs/reference.md §8.1 templates, :mod:`.prompts`),
``response_format`` (docs/reference.md §8.3: printable-ASCII commands, 30 fallback characters),
:meth:`success_metrics` (success = ``won`` per trajectory, overall and per task type with the full task-type
names), :meth:`expert_steps` (the warm start's demonstrations, :mod:`.demos`). The env reports the
engine's symbolic facts as its state (:mod:`.state`) and ``"Nothing happens."`` as a no-op (:mod:`.env`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from serl.envs.alfworld import default_cache_root, ensure_alfworld_data
from serl.envs.alfworld.env import AlfworldTextEnv, read_task_type
from serl.envs.alfworld.generator import FORBIDDEN_PATH_PARTS, SPLITS, TASK_TYPES, check_task_types, generate_games
from serl.envs.alfworld.prompts import render_prompt as _render_prompt
from serl.envs.base import per_task_type
from serl.envs.response import ThinkActionFormat

if TYPE_CHECKING:  # serl.types imports torch; not needed at run time here
    from serl.types import Trajectory

log = logging.getLogger(__name__)

EVAL_SPLITS = ("valid_seen", "valid_unseen")
OFFICIAL_SIZES = {"train": 3553, "valid_seen": 140, "valid_unseen": 134}  # §6.1 [reported]
SOURCES = ("official", "generated")


def _qualifies(trial_dir: Path) -> bool:
    """The ``AlfredTWEnv.collect_game_files`` filter for one directory holding ``traj_data.json`` (§5.1)."""
    if any(part in str(trial_dir) for part in FORBIDDEN_PATH_PARTS):
        return False
    game = trial_dir / "game.tw-pddl"
    if not game.is_file():
        return False
    try:
        traj = json.loads((trial_dir / "traj_data.json").read_text(encoding="utf-8"))
        if traj.get("task_type") not in TASK_TYPES:
            return False
        return bool(json.loads(game.read_text(encoding="utf-8")).get("solvable"))
    except (OSError, ValueError, AttributeError):
        return False


def _walk_official(split_dir: Path) -> Iterator[Path]:
    """Qualifying ``game.tw-pddl`` paths under ``split_dir``, in sorted walk order."""
    if not split_dir.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(split_dir):
        dirnames.sort()
        if "traj_data.json" in filenames and _qualifies(Path(dirpath)):
            yield Path(dirpath) / "game.tw-pddl"


def official_games(data_root: str | os.PathLike[str], split: str) -> list[Path]:
    """All qualifying official games of ``split`` under ``data_root``, sorted."""
    return sorted(_walk_official(Path(data_root) / "json_2.1.1" / split))


def has_official_games(data_root: str | os.PathLike[str] | None, split: str) -> bool:
    """True if at least one qualifying official game of ``split`` exists (stops at the first one)."""
    if data_root is None:
        return False
    return next(_walk_official(Path(data_root) / "json_2.1.1" / split), None) is not None


class _LazyPool(Sequence[str]):
    """A read-only sequence whose items are computed on first access (lets ``make_env`` stay cheap)."""

    def __init__(self, load: Callable[[], list[str]]) -> None:
        self._load = load

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, i: Any) -> Any:
        return self._load()[i]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class AlfworldSuite:
    """ALFWorld behind the :class:`~serl.envs.base.EnvSuite` protocol (see the module docstring).

    Args:
        data_root: official ALFWorld data root (holds ``json_2.1.1/``); default ``$ALFWORLD_DATA``.
        cache_dir: where generated games go; default ``$SERL_CACHE/alfworld_synth`` if ``SERL_CACHE`` is
            set, else ``~/.cache/serl/alfworld_synth``.
        max_turns: episode cap (the reference's ``env.max_steps`` = 50).
        history_length: H observation/action pairs shown in the prompt (reference: 2).
        train_pool: number of distinct generated training games.
        eval_pool: number of distinct generated evaluation games.
        eval_split: ``valid_seen`` (in-distribution, the reference's default) or ``valid_unseen``.
        require_official: error instead of falling back to generated games.
        seed: generation seed of the generated pools (int >= 0).
        task_types: restrict both pools to these task types (None: all six). Generated pools then hold
            ``train_pool`` / ``eval_pool`` games of those types; official pools keep the split's games of
            those types.
        use_train_pool: False when only the eval pool is played (scripts/eval.py): then official games of the
            eval split suffice, the train split is not needed.
        response_format: how a response is read (:class:`serl.envs.response.ThinkActionFormat`; default:
            ``serl`` rules, printable-ASCII commands, the reference's 30 fallback characters, §8.3).
    """

    name = "alfworld"

    def __init__(
        self,
        data_root: str | None = None,
        cache_dir: str | None = None,
        max_turns: int = 50,
        history_length: int = 2,
        train_pool: int = 32,
        eval_pool: int = 16,
        eval_split: str = "valid_seen",
        require_official: bool = False,
        seed: int = 0,
        task_types: Sequence[str] | None = None,
        response_format: ThinkActionFormat | None = None,
        use_train_pool: bool = True,
    ) -> None:
        self.max_turns = _check_int("max_turns", max_turns, 1)
        self.history_length = _check_int("history_length", history_length, 0)
        self.train_pool = _check_int("train_pool", train_pool, 1)
        self.eval_pool = _check_int("eval_pool", eval_pool, 1)
        self.seed = _check_int("seed", seed, 0)
        if eval_split not in EVAL_SPLITS:
            raise ValueError(f"unknown eval_split {eval_split!r}; allowed: {', '.join(EVAL_SPLITS)}")
        self.eval_split = eval_split
        self.require_official = bool(require_official)
        self.response_format = response_format if response_format is not None else ThinkActionFormat(fallback_chars=30)
        if not isinstance(self.response_format, ThinkActionFormat):
            raise TypeError(f"response_format must be a ThinkActionFormat, got {type(self.response_format).__name__}")
        if task_types is not None:
            task_types = [str(t) for t in task_types]
            check_task_types(task_types)
        self.task_types: list[str] | None = task_types

        # §6.2-1: explicit argument, then $ALFWORLD_DATA (read before anything sets it), then none.
        root = data_root if data_root is not None else os.environ.get("ALFWORLD_DATA") or None
        self.data_root: Path | None = Path(root).expanduser().absolute() if root else None
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root() / "alfworld_synth"
        self.cache_dir = cache.absolute()
        ensure_alfworld_data(self.data_root)  # before any alfworld import (§5.4-4)

        # §6.2-2..4
        splits = ("train", self.eval_split) if use_train_pool else (self.eval_split,)
        official = {s: has_official_games(self.data_root, s) for s in splits}
        if all(official.values()):
            self.source = "official"
        else:
            missing = [s for s in splits if not official[s]]
            where = (
                f"{self.data_root}/json_2.1.1/<split>" if self.data_root else "no data root ($ALFWORLD_DATA unset)"
            )
            if self.require_official:
                raise FileNotFoundError(
                    f"require_official=True but no official ALFWorld games for split(s) {missing} in {where}; "
                    "run alfworld-download or set require_official=False to use generated games"
                )
            if any(official.values()):
                log.warning(
                    "official ALFWorld games found for %s but not for %s in %s: using generated games for both",
                    [s for s in splits if official[s]],
                    missing,
                    where,
                )
            self.source = "generated"
        self._pools: dict[str, list[str]] = {}
        log.info("ALFWorld suite: source=%s data_root=%s cache_dir=%s", self.source, self.data_root, self.cache_dir)

    # ------------------------------------------------------------------------------------------ pools

    def pool(self, split: str) -> list[str]:
        """The (lazily built) game pool of ``split`` (``train`` or the eval split), as path strings."""
        if split not in ("train", self.eval_split):
            raise ValueError(f"unknown pool {split!r}; allowed: train, {self.eval_split}")
        if split not in self._pools:
            if self.source == "official":
                assert self.data_root is not None
                games = official_games(self.data_root, split)
                if self.task_types is not None:
                    games = [g for g in games if read_task_type(g) in self.task_types]
                elif len(games) != OFFICIAL_SIZES[split]:
                    log.warning(
                        "official ALFWorld split %s has %d games, the full release has %d (partial download?)",
                        split,
                        len(games),
                        OFFICIAL_SIZES[split],
                    )
            else:
                n = self.train_pool if split == "train" else self.eval_pool
                games = generate_games(self.cache_dir, split, n, self.seed, self.task_types)
            self._pools[split] = [str(p) for p in games]
        return self._pools[split]

    @staticmethod
    def _sample(pool: Sequence[str], n: int, seed: int) -> list[str]:
        """``n`` games with ``random.Random(seed)``: without replacement while possible, then whole rounds."""
        _check_int("n", n, 0)
        rng = random.Random(seed)
        out: list[str] = []
        while len(out) < n:
            out.extend(rng.sample(list(pool), min(len(pool), n - len(out))))
        return out

    def train_games(self, n: int, seed: int) -> list[str]:
        """``n`` training game paths (repeats only when ``n`` exceeds the pool)."""
        return self._sample(self.pool("train"), n, seed)

    def make_env(self, max_episode_steps: int | None = None) -> AlfworldTextEnv:
        """A fresh env capped at ``max_episode_steps`` (default ``max_turns``); ``reset()`` without a game
        option draws from the training pool (built lazily)."""
        cap = self.max_turns if max_episode_steps is None else int(max_episode_steps)
        return AlfworldTextEnv(games=_LazyPool(lambda: self.pool("train")), max_episode_steps=cap)

    def expert_plan(self, game: str) -> list[str]:
        """The game's stored winning command sequence (``walkthrough`` of ``game.tw-pddl``: the PDDL
        planner's plan for generated games, docs/alfworld_games.md §2.2/§4.1)."""
        data = json.loads(Path(game).read_text(encoding="utf-8"))
        plan = data.get("walkthrough")
        if not plan:
            raise ValueError(f"game {game} has no walkthrough (an expert plan is needed for demonstrations)")
        return [str(a) for a in plan]

    def expert_steps(self, game: str, max_detours: int = 0, seed: int = 0) -> list[tuple[str, str]]:
        """``(thought, action)`` per step of the expert's winning play of ``game``: its plan with 0..max_detours
        search detours drawn from ``seed``, each action with a templated rationale
        (:func:`serl.envs.alfworld.demos.expert_steps`)."""
        from serl.envs.alfworld.demos import expert_steps

        return expert_steps(self, game, max_detours, seed)

    # ------------------------------------------------------------------------------------ per step

    def render_prompt(
        self,
        task: str,
        history: Sequence[tuple[str, str]],
        step_id: int,
        observation: str,
        admissible: Sequence[str],
    ) -> str:
        """Student prompt (docs/reference.md §8.1); see :func:`serl.envs.alfworld.prompts.render_prompt`."""
        return _render_prompt(task, history, step_id, observation, admissible, self.history_length)

    def success_metrics(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """``{"success_rate": ..., "<task_type>/success_rate": ...}`` over the given trajectories.

        Success = ``traj.won`` (docs/reference.md §8.1); one key per task type present. Empty input -> {}.
        """
        return per_task_type(trajectories, {"success_rate": lambda t: float(t.won)})

    def describe(self) -> dict[str, Any]:
        """Where the games come from (for logs and run summaries, §6.2-4)."""
        return {
            "source": self.source,
            "data_root": str(self.data_root) if self.data_root else None,
            "cache_dir": str(self.cache_dir),
            "eval_split": self.eval_split,
            "seed": self.seed,
            "task_types": self.task_types,
        }
