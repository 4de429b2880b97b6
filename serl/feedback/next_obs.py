"""Next observation: the full student prompt of the state the action led to (docs/reference.md §3.1, §3.2, §3.5).

Content = ``step.next_prompt``, the student prompt the policy would see next (task, recent history, the new
observation, admissible actions and the format instruction) — the reference's ``next_observation``
(``RL :: _collect_next_observation_text``, first choice ``next_obs["text"]``), not the raw env text
(that is ``immediate``). Section title exactly ``next observation after the current step:`` (lower-case
``n``, as in the reference). The step gets a section iff the next prompt is non-blank; the rollout worker
renders one after every step, the last one included, so ≈ always (reference mode ``next_observation``).

Under anchor insertion (§4.3, "next observation included") it is written per candidate action for the
best and worst member (the inherited :meth:`~serl.feedback.base.FeedbackSource.candidate_lines`).

Deviations from the reference: none. (The reference's further fallbacks — ``info["observation_text"]``,
the anchor text — are never reached: the rollout worker always stores the rendered next prompt.)
"""

from __future__ import annotations

from typing import Sequence

from serl.feedback.base import FeedbackSource
from serl.types import Trajectory


class NextObservation(FeedbackSource):
    """The next student prompt after the step (the reference's mode ``next_observation``)."""

    name = "next_obs"
    title = "next observation after the current step:"

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        return group[traj_idx].steps[step_idx].next_prompt
