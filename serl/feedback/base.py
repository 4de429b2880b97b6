"""Feedback sources: what privileged hindsight text the teacher sees for one step (docs/reference.md §3).

A :class:`FeedbackSource` is a pure text function over one GRPO group: given the group's trajectories and
the index of one step, it returns the *content* of one privileged section, or ``None`` when it has nothing
to say for that step. The section is ``"<title>\\n<content>"`` (docs/reference.md §3.2): ``title`` is a class
attribute, and a section exists only when the content is non-empty after stripping, which
:meth:`FeedbackSource.__call__` guarantees by returning ``None`` for empty or whitespace-only content.

The interface insertion code uses (so insertion never changes when sources are added):

* :meth:`~FeedbackSource.context` — the step's context under **step-level** insertion: one section, or none.
  Combinations (``serl.feedback.combine``: *all of* / *first available*, the reference's "and"/"or" modes,
  §3.5) override it to emit several sections with their rule.
* :meth:`~FeedbackSource.parts` — the single sources that contribute to one step under **anchor-level**
  insertion (§4.3): ``[self]`` for a single source; a combination returns its parts (all of them, or the
  first available one).
* ``per_candidate`` and :meth:`~FeedbackSource.candidate_lines` — under anchor-level insertion, a source
  that describes *the outcome of an action* (immediate feedback, state diff, next observation, future
  trajectory) is written inside the candidate-action table, under each candidate action, for that action's
  best and worst member (§4.3); a source about the step's *task or trajectory* (successful trajectory,
  current trajectory, judge) has ``per_candidate = False`` and is appended after the table as its own
  section for the step itself (the reference appends the success section the same way).
* :meth:`~FeedbackSource.prepare` — called once per training step, before any context is built, with
  every group of the step (only while the teacher is active, so never after λ has decayed to 0, §5.1).
  Sources that need batched I/O (the judge's HTTP requests) do it here and return metrics; pure sources
  do nothing.

``enabled`` is ``False`` only for :class:`~serl.feedback.none.NoFeedback`: the trainer then skips the
teacher entirely, which is plain GRPO.

Sources take keyword arguments only (Hydra instantiates them) and hold no configuration objects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

from serl.algo.anchors import indent_block
from serl.types import TeacherContext, Trajectory

#: (trajectory index, step index) of one step inside its group.
StepRef = tuple[int, int]


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
    per_candidate: ClassVar[bool] = True  # anchor insertion: inside the candidate table (True) or appended
    candidate_rank: ClassVar[int] = 0  # order under a candidate action: 0 its outcome, 1 its future (§4.3)

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

    def parts(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> list["FeedbackSource"]:
        """Single sources contributing to this step under anchor insertion: ``[self]`` for a single source."""
        return [self] if self.enabled else []

    @property
    def label(self) -> str:
        """The title without its trailing colon (how anchor tables name this source's lines)."""
        return self.title.strip().rstrip(":").strip() or self.name

    def candidate_lines(self, group: Sequence[Trajectory], best: StepRef, worst: StepRef) -> list[str]:
        """Lines under one candidate action of an anchor table (docs/reference.md §4.3, "feedback included").

        ``best``/``worst`` are the action's members with the highest/lowest return (§4.3 tie rules). The best
        member's content is written when there is one; the worst member's when there is one and it differs
        from the best's (so a single line when both are the same step or say the same thing)::

              <label> (best outcome): <content>
              <label> (worst outcome): <content>

        Multi-line content goes on the following lines, indented by four spaces (:func:`indent_block`).
        """
        best_text = self(group, *best)
        worst_text = self(group, *worst) if worst != best else None
        if worst_text == best_text:
            worst_text = None
        lines: list[str] = []
        for which, text in (("best outcome", best_text), ("worst outcome", worst_text)):
            if text is not None:
                lines.extend(indent_block(f"{self.label} ({which})", text))
        return lines

    def prepare(self, groups: Sequence[Sequence[Trajectory]]) -> dict[str, float]:
        """Per-training-step hook before contexts are built (batched I/O); returns metrics. Default: none."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
