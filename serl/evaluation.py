"""Evaluation of a policy on held-out games (docs/reference.md §8.4 "Validation").

The reference validates every 15 training steps and after the last one: one episode per env (group size
1), sampled at temperature 0.4, success overall and per task type. :func:`evaluate` does the same with
serl's own rollout worker, so a game is played exactly as in training (same prompt template, action
projection, validity rule and batched generation), with three differences of setting only:

* the games are the first ``n_games`` of the suite's **sorted eval pool** (``suite.pool(suite.eval_split)``:
  ALFWorld's ``valid_seen``/``valid_unseen``, never used for training), each played **once**; the
  selection does not depend on any seed, so every evaluation of a run — and every run — sees the same games;
* the sampling temperature is the evaluation's (0.4 = reference validation, 0 = greedy), passed to
  :meth:`~serl.rollout.base.RolloutWorker.collect` for this call only; the worker is left unchanged;
* the episode cap is the evaluation's ``max_turns``.

Every episode samples from its own seeded stream (per episode and turn, :func:`serl.rollout.base.episode_seed`),
and the global python/numpy/torch RNG state is restored afterwards, so switching periodic evaluation on does
not change what a training run samples after it.

Used by ``scripts/eval.py`` (any model or training checkpoint) and by the trainer (``eval_every``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch

from serl.checkpoint import rng_state, set_rng_state
from serl.distributed import SINGLE, Dist
from serl.envs.base import EnvSuite
from serl.rollout.base import RolloutWorker
from serl.rollout.sharded import collect_sharded
from serl.types import Trajectory

REFERENCE_TEMPERATURE = 0.4  # docs/reference.md §8.4: validation samples at T = 0.4


@dataclass(frozen=True)
class EvalSettings:
    """What one evaluation plays: ``n_games`` held-out games once each, at ``temperature`` (0 = greedy),
    at most ``max_turns`` env steps per episode; ``seed`` seeds the env resets and generation."""

    n_games: int
    temperature: float = REFERENCE_TEMPERATURE
    max_turns: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_games, int) or self.n_games < 1:
            raise ValueError(f"n_games must be an int >= 1, got {self.n_games!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not isinstance(self.max_turns, int) or self.max_turns < 1:
            raise ValueError(f"max_turns must be an int >= 1, got {self.max_turns!r}")


@dataclass(frozen=True)
class GameResult:
    """One evaluation episode (a row of ``eval.json``)."""

    game: str  # game id (ALFWorld: path of game.tw-pddl)
    task_type: str
    task: str  # the task sentence
    won: bool
    length: int  # env steps taken
    valid_ratio: float  # fraction of its steps whose response had the valid <think>/<action> format


@dataclass
class EvalResult:
    """``metrics``: flat ``{"eval/...": float, "time/eval_s": float}`` (docs/metrics.md);
    ``games``: one :class:`GameResult` per game, in play order (the sorted eval pool's order)."""

    metrics: dict[str, float]
    games: list[GameResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "games": [asdict(g) for g in self.games]}


def eval_game_list(suite: EnvSuite, n_games: int) -> list[str]:
    """The first ``n_games`` of the sorted eval pool (``suite.pool(suite.eval_split)``), each once.

    Raises ValueError when the pool is smaller than ``n_games`` (a clear message naming ``env.eval_pool``:
    generated pools hold exactly ``env.eval_pool`` games; official pools are the whole split).
    Calling it builds the pool (generated games are written on first use), so callers use it to fail
    before loading a model.
    """
    if not isinstance(n_games, int) or n_games < 1:
        raise ValueError(f"n_games must be an int >= 1, got {n_games!r}")
    pool = sorted(suite.pool(suite.eval_split))
    if n_games > len(pool):
        raise ValueError(
            f"n_games={n_games} exceeds the {len(pool)} games of the eval pool ({suite.eval_split}); "
            f"raise env.eval_pool to at least {n_games} (generated games) or lower n_games"
        )
    return pool[:n_games]


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the python/numpy/torch (and CUDA, when initialised) RNG states on exit."""
    state = rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def game_result(game: str, traj: Trajectory) -> GameResult:
    return GameResult(
        game=game,
        task_type=traj.task_type,
        task=traj.task,
        won=bool(traj.won),
        length=traj.length,
        valid_ratio=_mean([float(s.valid) for s in traj.steps]),
    )


def evaluate(
    worker: RolloutWorker,
    suite: EnvSuite,
    n_games: int,
    seed: int,
    temperature: float,
    max_turns: int,
    progress: Callable[[int, int], None] | None = None,
    dist: Dist = SINGLE,
) -> EvalResult:
    """Play the first ``n_games`` of the sorted eval pool once each (group size 1) and score them.

    Args:
        worker: the rollout worker (its generator samples from the policy's current weights).
        suite: the env suite; its ``eval_split`` pool is disjoint from the training pool.
        n_games: games to play (<= the eval pool's size).
        seed: env reset seed ``seed + i`` for game ``i``; generation is seeded per episode and turn from ``seed``.
        temperature: sampling temperature for this call (0.4 = reference validation, 0 = greedy).
        max_turns: episode cap in env steps.
        progress: ``progress(finished_games, n_games)`` after every turn.
        dist: under torchrun, each rank plays its block of the games and every rank gets the whole result.

    Returns:
        :class:`EvalResult` with metrics ``eval/success_rate``, ``eval/<task_type>/success_rate`` (task
        types present), ``eval/valid_action_ratio`` (over all steps of all games),
        ``eval/episode_length_mean``, ``eval/n_games`` (games played), ``eval/dropped_games`` (games whose env
        kept failing, left out), ``eval/tokens_per_s`` and ``time/eval_s``, and one :class:`GameResult` per
        game played. The worker's settings and the global RNG state are as before the call.
    """
    settings = EvalSettings(n_games=n_games, temperature=float(temperature), max_turns=max_turns, seed=seed)
    games = eval_game_list(suite, settings.n_games)
    t0 = time.time()
    with preserved_rng():
        rollout = collect_sharded(
            worker,
            dist,
            games,
            group_size=1,
            seed=settings.seed,
            progress=progress,
            max_turns=settings.max_turns,
            temperature=settings.temperature,
        )
    trajectories, stats = rollout.trajectories, rollout.stats  # group size 1: one per game, in game order
    played = [games[t.group_id] for t in trajectories]  # a game whose env kept failing is left out (counted)

    steps = [s for t in trajectories for s in t.steps]
    metrics = {f"eval/{k}": float(v) for k, v in suite.success_metrics(trajectories).items()}
    metrics["eval/valid_action_ratio"] = _mean([float(s.valid) for s in steps])
    metrics["eval/episode_length_mean"] = _mean([float(t.length) for t in trajectories])
    metrics["eval/n_games"] = float(len(trajectories))
    metrics["eval/dropped_games"] = float(stats["dropped_episodes"])
    gen_s = float(stats.get("generate_s", 0.0))
    metrics["eval/tokens_per_s"] = float(stats.get("tokens_generated", 0)) / gen_s if gen_s > 0 else 0.0
    metrics["time/eval_s"] = time.time() - t0
    return EvalResult(metrics=metrics, games=[game_result(g, t) for g, t in zip(played, trajectories)])
