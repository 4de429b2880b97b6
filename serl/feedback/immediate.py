"""Immediate feedback: the raw environment response to the step's action (docs/reference.md §3.1, §3.2, §3.5).

Content = ``step.feedback``, the raw text the env returned for the action, without prompt template or
history (the reference's ``immediate_feedback``, which is the env manager's ``anchor`` text): in ALFWorld the
TextWorld response ("You arrive at countertop 1. On the countertop 1, you see …", or its no-op answer), in
WebShop the whole next page. Section title exactly ``Immediate feedback from the current step:``. The step
gets a section iff the response is non-blank (≈ always).

Deviations from the reference: none. (The reference takes the first non-empty of several fallbacks
— anchor text, ``info["observation_text"]``, ``info["feedback"]``, the next prompt; the rollout worker
already stores the raw env response in ``Step.feedback``, which is the first of them.)
"""

from __future__ import annotations

from typing import Sequence

from serl.feedback.base import FeedbackSource
from serl.types import Trajectory


class ImmediateFeedback(FeedbackSource):
    """The env's response to the action (the reference's default mode ``immediate_feedback``)."""

    name = "immediate"
    title = "Immediate feedback from the current step:"

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        return group[traj_idx].steps[step_idx].feedback
