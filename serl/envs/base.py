"""The contract between environments and the rest of serl.

An environment family (ALFWorld, WebShop) is exposed through one :class:`EnvSuite` object that the rollout
worker, the trainer, feedback, insertion and the warm start use without knowing which family it is. Everything
environment-specific lives behind it (a new environment is a package under ``serl/envs/`` plus
``conf/env/<name>.yaml``):

* ``make_env(max_episode_steps=None)`` returns a fresh ``gymnasium.Env`` (episode cap ``max_turns`` unless
  given) whose observations and actions are text. ``reset(
  options={"game": game_id})`` loads that game; ``info`` always carries ``admissible_commands``
  (list[str]), ``won`` (bool), ``task`` (task sentence), ``task_type`` and ``game``, and may carry ``state``
  (str: what the env calls the state — ALFWorld's symbolic facts, a WebShop page; what ``feedback=state_diff``
  diffs and ``insertion.key=state_change`` pools by; default: the observation), ``noop`` (bool: the action
  changed nothing — the env's own no-op answer; default False) and ``score`` (the episode's task score in
  [0, 1]; default ``won``). Rewards are the reference's training rewards (docs/reference.md §1.4: 10 on the
  winning step, else 0).
* ``train_games(n, seed)`` returns training game ids sampled with ``seed``; ``pool(split)`` is a whole pool
  (``"train"`` or ``eval_split``, disjoint), which evaluation (:mod:`serl.evaluation`) plays in sorted order so
  that every evaluation sees the same games.
* ``render_prompt(...)`` is the student prompt template (docs/reference.md §8.1); ``response_format`` (a
  :class:`serl.envs.response.ThinkActionFormat`) the one definition of how a response is read: projection
  and validity (§8.3), action-token spans (§6), think removal (§3.2) and candidate actions (§4.3).
* ``success_metrics(trajectories)`` gives success overall and per task type (§8.1).
* ``expert_steps(game, max_detours, seed)`` is the environment's own expert play of a game as
  ``(thought, action)`` pairs that win it, the source of the warm-start demonstrations
  (:mod:`serl.warmstart.demos`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Sequence

import gymnasium as gym

from serl.envs.response import ThinkActionFormat

if TYPE_CHECKING:  # serl.types imports torch: env worker processes need not
    from serl.types import Trajectory


class EnvSuite(Protocol):
    name: str
    max_turns: int  # episode cap (the reference's env.max_steps)
    history_length: int  # H observation/action pairs shown in the prompt
    eval_split: str  # name of the held-out pool (never used for training)
    response_format: ThinkActionFormat  # how a policy response is read (module docstring)

    def make_env(self, max_episode_steps: int | None = None) -> gym.Env: ...

    def train_games(self, n: int, seed: int) -> list[str]: ...

    def pool(self, split: str) -> list[str]: ...

    def render_prompt(
        self,
        task: str,
        history: Sequence[tuple[str, str]],
        step_id: int,
        observation: str,
        admissible: Sequence[str],
    ) -> str: ...

    def success_metrics(self, trajectories: Sequence[Trajectory]) -> dict[str, float]: ...

    def expert_steps(self, game: str, max_detours: int = 0, seed: int = 0) -> list[tuple[str, str]]: ...


def per_task_type(trajectories: Sequence[Trajectory], metrics: Mapping[str, Callable[[Trajectory], float]]) -> dict[str, float]:
    """A suite's ``success_metrics``: ``{name: mean of fn}`` over all ``trajectories``, then
    ``{"<task_type>/<name>": mean}`` per task type present (sorted); ``{}`` for no trajectories.

    >>> from serl.types import Trajectory
    >>> ts = [Trajectory(0, 0, "g", "a", "t", won=True), Trajectory(0, 1, "g", "b", "t")]
    >>> per_task_type(ts, {"success_rate": lambda t: float(t.won)})
    {'success_rate': 0.5, 'a/success_rate': 1.0, 'b/success_rate': 0.0}
    """
    if not trajectories:
        return {}
    out = {name: sum(fn(t) for t in trajectories) / len(trajectories) for name, fn in metrics.items()}
    by_type: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        by_type.setdefault(t.task_type, []).append(t)
    for task_type in sorted(by_type):
        ts = by_type[task_type]
        out.update({f"{task_type}/{name}": sum(fn(t) for t in ts) / len(ts) for name, fn in metrics.items()})
    return out


def reset_game(options: Mapping[str, object] | None) -> object | None:
    """The ``game`` of a text env's ``reset(options=...)`` (None: draw one from the env's pool); any other
    option is a ``ValueError`` naming it and the allowed one."""
    options = dict(options or {})
    unknown = sorted(set(options) - {"game"})
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; allowed: ['game']")
    return options.get("game")
