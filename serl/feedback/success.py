"""Successful trajectory: a won episode of the same task from the same group (docs/reference.md §3.4).

Content (``PC :: _select_success_trajectory_context``): the first trajectory of the step's GRPO group, in
group order, whose episode was won (``Trajectory.won``, the reference's ``rollout_success``); with
``exclude_self`` (reference ``dont_reprompt_on_self_success``, default true) the step's own trajectory is
skipped, so a successful trajectory is shown *another* success of its group when there is one. The whole
trajectory, from step 0, rendered by :func:`serl.feedback.render.render_steps` (§3.3), without any outcome
summary. No such trajectory ⇒ no section. No buffer, no memory across training steps. Section title
exactly ``Successful trajectory in the same task, if any:``.

Knobs: ``format`` (reference ``trajectory_format``), ``max_steps`` (reference
``max_traj_context_steps``, 0 = all), ``remove_thinking`` (reference
``remove_thinking_from_demonstration``), ``exclude_self``.

``per_candidate = False``: under anchor insertion the section is appended after the candidate table, for
the step itself, as the reference's ``anchor_successful_sample_*`` modes do (§4.3).

Deviations from the reference: "group order" (trajectory index) stands in for the reference's batch order
after balancing (§10.13); success is ``won`` only (the reference's fallback, return ≥
``success_reward_threshold``, is for envs without a ``won`` flag, which serl's envs always set).
"""

from __future__ import annotations

from typing import Sequence

from serl.envs.response import ThinkActionFormat
from serl.feedback.render import TrajectorySource, check_bool
from serl.types import Trajectory


class SuccessfulTrajectory(TrajectorySource):
    """The first (other) won trajectory of the group (the reference's ``successful_sample`` part)."""

    name = "success"
    title = "Successful trajectory in the same task, if any:"
    per_candidate = False

    def __init__(
        self,
        format: str = "response",
        max_steps: int = 0,
        remove_thinking: bool = True,
        exclude_self: bool = True,
        response_format: ThinkActionFormat | None = None,
    ) -> None:
        super().__init__(format, max_steps, remove_thinking, response_format)
        self.exclude_self = check_bool("exclude_self", exclude_self)

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        for i, traj in enumerate(group):
            if traj.won and not (self.exclude_self and i == traj_idx):
                return self.render(traj.steps)
        return None

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, exclude_self={self.exclude_self!r})"
