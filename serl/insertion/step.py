"""Step-level insertion (docs/reference.md §4.1, §3.5).

Each step's context is built from that step alone (or, for later sources, its own trajectory / a success
of its group): the feedback source's own :meth:`context` — for a single source, one section
``(feedback.title, feedback(group, i, t))`` with ``sources=(feedback.name,)``, and no section (no teacher
signal for that step) when the source returns ``None``. ``anchor_size`` is ``None``.

Deviations from the reference: none.
"""

from __future__ import annotations

from typing import Sequence

from serl.insertion.base import FeedbackLike, Insertion
from serl.types import TeacherContext, Trajectory


class StepInsertion(Insertion):
    """One context per step, from the feedback source for that step only."""

    name = "step"

    def contexts(self, group: Sequence[Trajectory], feedback: FeedbackLike) -> list[list[TeacherContext]]:
        return [[feedback.context(group, i, t) for t in range(len(traj.steps))] for i, traj in enumerate(group)]
