"""Insertion granularity: which teacher context each step of a GRPO group gets (docs/reference.md §4).

An :class:`Insertion` turns one GRPO group (the trajectories that played the same game in one training
step) and a feedback source into one :class:`~serl.types.TeacherContext` per step. A step whose context
has no section gets no teacher signal (``has_context`` is False: the reference's ``serl_mask = 0``).

Insertion modules import only ``serl.types``, ``serl.algo`` and the standard library; the feedback source
is used through the structural :class:`FeedbackLike` protocol (which
:class:`serl.feedback.base.FeedbackSource` satisfies), so ``serl.insertion`` does not import
``serl.feedback``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol, Sequence

from serl.types import TeacherContext, Trajectory


class FeedbackLike(Protocol):
    """What insertion needs from a feedback source (see ``serl.feedback.base.FeedbackSource``).

    Step-level insertion uses :meth:`context`; anchor-level insertion uses :meth:`parts` and, on each part
    (a single source), ``per_candidate``, :meth:`candidate_lines` / ``__call__``, ``title`` and ``name``.
    """

    name: str
    title: str
    enabled: bool
    per_candidate: bool  # anchor insertion: lines inside the candidate table (True) or a section after it
    candidate_rank: int  # order of per_candidate parts under an action (0: its outcome, 1: its future)

    @property
    def label(self) -> str:
        """The title without its trailing colon."""
        ...

    def __call__(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        """Stripped, non-empty section content for one step, or ``None``."""
        ...

    def context(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> TeacherContext:
        """The step's context under step-level insertion."""
        ...

    def parts(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> Sequence["FeedbackLike"]:
        """The single sources contributing to this step under anchor insertion (``[]``: none)."""
        ...

    def candidate_lines(
        self, group: Sequence[Trajectory], best: tuple[int, int], worst: tuple[int, int]
    ) -> list[str]:
        """Lines under one candidate action of an anchor table, for its best and worst member."""
        ...


class Insertion(ABC):
    """Maps a GRPO group to teacher contexts."""

    name: ClassVar[str]  # option name, e.g. "step"

    @abstractmethod
    def contexts(self, group: Sequence[Trajectory], feedback: FeedbackLike) -> list[list[TeacherContext]]:
        """``result[i][t]`` is the context of step ``t`` of trajectory ``group[i]``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
