"""The contract between environments and the rest of serl.

An environment family (ALFWorld, later WebShop) is exposed through one :class:`EnvSuite` object that the
rollout worker and the trainer use without knowing which family it is:

* ``make_env(max_episode_steps=None)`` returns a fresh ``gymnasium.Env`` (episode cap ``max_turns`` unless
  given) whose observations and actions are text. ``reset(
  options={"game": game_id})`` loads that game; ``info`` always carries ``admissible_commands``
  (list[str]), ``won`` (bool), ``task`` (task sentence), ``task_type`` and ``game``. Rewards are the
  reference's training rewards (docs/reference.md §1.4: 10 on the winning step, else 0).
* ``train_games(n, seed)`` returns training game ids sampled with ``seed``; ``pool(split)`` is a whole pool
  (``"train"`` or ``eval_split``, disjoint), which evaluation (:mod:`serl.evaluation`) plays in sorted order so
  that every evaluation sees the same games.
* ``render_prompt(...)`` is the student prompt template (docs/reference.md §8.1); ``project_action(text)``
  the action projection and validity rule (§8.3).
* ``success_metrics(trajectories)`` gives success overall and per task type (§8.1).
* ``expert_plan(game)`` is the environment's own expert solution of a game (a list of actions), the source
  of the warm-start demonstrations.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import gymnasium as gym

from serl.types import Trajectory


class EnvSuite(Protocol):
    name: str
    max_turns: int  # episode cap (the reference's env.max_steps)
    history_length: int  # H observation/action pairs shown in the prompt
    eval_split: str  # name of the held-out pool (never used for training)

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

    def project_action(self, response: str) -> tuple[str, bool]: ...

    def success_metrics(self, trajectories: Sequence[Trajectory]) -> dict[str, float]: ...

    def expert_plan(self, game: str) -> list[str]: ...
