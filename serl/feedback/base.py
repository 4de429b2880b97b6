"""Feedback sources: what privileged hindsight text the teacher sees for one step (SERL_REFERENCE §3).

A :class:`FeedbackSource` is a pure text function over one GRPO group: given the group's trajectories and
the index of one step, it returns the *content* of one privileged section, or ``None`` when it has nothing
to say for that step. The section is ``"<title>\\n<content>"`` (SERL_REFERENCE §3.2): ``title`` is a class
attribute, and a section exists only when the content is non-empty after stripping, which
:meth:`FeedbackSource.__call__` guarantees by returning ``None`` for empty or whitespace-only content.

Subclasses implement :meth:`FeedbackSource.content`; callers use ``source(group, traj_idx, step_idx)``
(the content) or :meth:`FeedbackSource.context` (a ready :class:`~serl.types.TeacherContext` with the one
section and ``sources=(name,)``). Step-level insertion uses ``context``; combinations of several sources
(a later issue: ``success_or_immediate`` …, SERL_REFERENCE §3.5) override ``context`` to emit several
sections with their and/or rule, so insertion code does not change when sources are added.

``enabled`` is ``False`` only for :class:`~serl.feedback.none.NoFeedback`: the trainer then skips the
teacher entirely, which is plain GRPO.

Sources take keyword arguments only (Hydra instantiates them) and hold no configuration objects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

from serl.types import TeacherContext, Trajectory


def clean(text: str | None) -> str | None:
    """``text`` stripped, or ``None`` when it is ``None``, empty or whitespace only."""
    if text is None:
        return None
    text = text.strip()
    return text or None


class FeedbackSource(ABC):
    """One feedback source (one privileged section per step)."""

    name: ClassVar[str]  # option name, e.g. "immediate" (also the per-source metric key)
    title: ClassVar[str]  # section title, e.g. "Immediate feedback from the current step:"
    enabled: ClassVar[bool] = True  # False => the trainer runs no teacher at all (plain GRPO)

    @abstractmethod
    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        """Raw section content for step ``step_idx`` of trajectory ``group[traj_idx]`` (may be empty)."""

    def __call__(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        """Section content for that step, stripped; ``None`` when there is none or it is blank."""
        return clean(self.content(group, traj_idx, step_idx))

    def context(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> TeacherContext:
        """The step's teacher context under step-level insertion: this source's section, if any."""
        text = self(group, traj_idx, step_idx)
        if text is None:
            return TeacherContext()
        return TeacherContext(sections=((self.title, text),), sources=(self.name,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
