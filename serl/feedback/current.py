"""Current trajectory so far: the step's own episode up to (not including) the current step.

Beyond the reference (docs/reference.md §3.6, §10.15): the reference computes this raw text
(``traj_context`` in ``PC :: build_sampling_messages``) but never uses it; its only current-trajectory
source is the judged one (``judge``). docs/design.md §4 keeps both, raw and judged.

Content: steps ``0 .. t-1`` of the step's own trajectory, rendered by
:func:`serl.feedback.render.render_steps` (§3.3). The current step's own response is excluded: the teacher
scores exactly those tokens, so showing them would hand it the answer. Step 0 has no past ⇒ no section.
Section title ``Current trajectory so far:``.

Knobs: ``format``, ``max_steps`` (0 = all), ``remove_thinking`` — the same renderings as the reference's
trajectory sources (§3.3).

``per_candidate = False``: under anchor insertion it describes the step's own history, not an action's
outcome, so it is appended after the candidate table as its own section.
"""

from __future__ import annotations

from typing import Sequence

from serl.feedback.render import TrajectorySource
from serl.types import Trajectory


class CurrentTrajectory(TrajectorySource):
    """The steps of the step's own trajectory before it (beyond the reference)."""

    name = "current"
    title = "Current trajectory so far:"
    per_candidate = False

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        return self.render(group[traj_idx].steps[:step_idx])
