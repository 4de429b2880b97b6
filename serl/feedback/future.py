"""Future trajectory: what the agent did after the current step, in the same episode (docs/reference.md §3.4).

Content (``PC :: _build_future_trajectory_context``): the steps of the step's own trajectory with index
greater than the current one, rendered by :func:`serl.feedback.render.render_steps` (§3.3). The last step
of a trajectory has no future ⇒ no section (so the reference's ``future_trajectory`` mode gives no teacher
signal on last steps, §3.5). Section title exactly ``Observed future trajectory of the current step:``.

Knobs (§3.3, §7.1): ``format`` (``response`` | ``observation_action``, reference ``trajectory_format``),
``max_steps`` (0 = all; reference ``max_future_context_steps``), ``remove_thinking`` (reference
``remove_thinking_from_demonstration``).

Under anchor insertion (§4.3, "future trajectory included") the lines under one candidate action are,
instead of the generic best/worst lines, :meth:`FutureTrajectory.candidate_lines`::

      success future trajectory example:
        <future of the best member, each line indented by 4 spaces>
      failed future trajectory example:
        <future of the worst member, each line indented by 4 spaces>

The success block is written iff the best member's trajectory won, the failed block iff the worst
member's trajectory did not; a member that is a last step shows ``    (no future trajectory after this
action)``. Blank lines of the rendering (between steps) stay empty, without indentation.

Deviation from the reference: the reference picks the best *successful* and the worst *failed* member of
the action; serl uses the action's best and worst members (highest/lowest return, §4.3 tie rules) and
checks their outcome. They coincide whenever success implies the highest return (ALFWorld's 10/0; WebShop
success = full reward); otherwise the success block is omitted when a failed member out-returns every
successful one.

"""

from __future__ import annotations

from typing import Sequence

from serl.feedback.base import StepRef
from serl.feedback.render import TrajectorySource
from serl.types import Trajectory

NO_FUTURE = "(no future trajectory after this action)"


def _example(label: str, text: str | None) -> list[str]:
    body = (text or NO_FUTURE).splitlines()
    return [f"  {label}:"] + [f"    {line}" if line.strip() else "" for line in body]


class FutureTrajectory(TrajectorySource):
    """The rest of the step's own trajectory (the reference's mode ``future_trajectory``)."""

    name = "future"
    title = "Observed future trajectory of the current step:"
    candidate_rank = 1  # under an anchor's candidate action, after the feedback / next-observation lines (§4.3)

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        return self.render(group[traj_idx].steps[step_idx + 1:])

    def candidate_lines(self, group: Sequence[Trajectory], best: StepRef, worst: StepRef) -> list[str]:
        """Success example of the best member if it won, failed example of the worst if it lost (§4.3)."""
        lines: list[str] = []
        if group[best[0]].won:
            lines += _example("success future trajectory example", self(group, *best))
        if not group[worst[0]].won:
            lines += _example("failed future trajectory example", self(group, *worst))
        return lines
