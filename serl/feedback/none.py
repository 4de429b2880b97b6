"""No feedback: no privileged section for any step, and ``enabled = False``.

With this source the trainer skips the teacher entirely, so training is plain multi-turn GRPO — the
reference's behaviour once λ has decayed to 0 (docs/reference.md §1.8, §5.1), from step one. Not a mode of
the reference; it is the GRPO baseline of the ablation axis (docs/design.md §3).
"""

from __future__ import annotations

from typing import Sequence

from serl.feedback.base import FeedbackSource
from serl.types import Trajectory


class NoFeedback(FeedbackSource):
    """Returns ``None`` for every step."""

    name = "none"
    title = ""
    enabled = False

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        return None
