"""Combinations of feedback sources: *all of* and *first available* (docs/reference.md §3.5, §4.3).

The reference flattens combinations into ``sampling_mode`` strings (``successful_sample_immediate_feedback``,
``successful_sample_or_immediate_feedback`` …). serl composes them instead: a combination holds parts
(each a feedback source, possibly itself a combination) in the order their sections appear.

Step-level insertion (:meth:`context`):

* :class:`AllOf` — the reference's "and" modes: the step gets the sections of **every** part, in order,
  and only when **every** part has one; otherwise no context at all (so ``success`` + ``immediate`` gives no
  teacher signal in a group without another success, §3.5, §10.13).
* :class:`FirstAvailable` — the reference's "or" mode: the sections of the **first** part that has a
  context for the step; no context when none has.

Anchor-level insertion (:meth:`parts`, docs/reference.md §4.3): the candidate table always exists, so no part
is required. :class:`AllOf` contributes all its parts (the reference's ``anchor_successful_sample_*``
modes append the success section "if exists"); :class:`FirstAvailable` contributes the parts of the
first part available for the step itself (``anchor_successful_sample_or_immediate_feedback``: the
feedback lines only when there is no success section).

Config files (``conf/feedback/<a>_and_<b>.yaml``, ``<a>_or_<b>.yaml``) list the parts through Hydra's
defaults list, so each part keeps the knobs documented in its own file and can be overridden as
``feedback.parts.<part>.<knob>=…``.

Deviations from the reference: none in the sections produced; the combination is a tree, not a string.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from serl.feedback.base import FeedbackSource
from serl.types import TeacherContext, Trajectory


def _as_list(parts: Mapping[str, FeedbackSource] | Sequence[FeedbackSource]) -> list[FeedbackSource]:
    values = list(parts.values()) if isinstance(parts, Mapping) else list(parts)
    if len(values) < 2:
        raise ValueError(f"a feedback combination needs at least 2 parts, got {len(values)}")
    for p in values:
        if not isinstance(p, FeedbackSource):
            raise TypeError(f"a combination part must be a FeedbackSource, got {type(p).__name__}: {p!r}")
        if not p.enabled:
            raise ValueError(f"{p!r} gives no feedback and cannot be part of a combination")
    return values


class Combination(FeedbackSource):
    """Common part of :class:`AllOf` and :class:`FirstAvailable`: holds the parts, fans out ``prepare``."""

    title = ""

    def __init__(self, parts: Mapping[str, FeedbackSource] | Sequence[FeedbackSource]):
        self.members = _as_list(parts)

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        """All sections of the step-level context as one text (what the teacher would read)."""
        ctx = self.context(group, traj_idx, step_idx)
        return ctx.text if ctx.has_context else None

    def prepare(self, groups: Sequence[Sequence[Trajectory]]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for p in self.members:
            metrics.update(p.prepare(groups))
        return metrics

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.members))})"


class AllOf(Combination):
    """Every part's sections, in order, only when every part has one (the reference's "and" modes)."""

    name = "all_of"

    def context(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> TeacherContext:
        contexts = [p.context(group, traj_idx, step_idx) for p in self.members]
        if not all(c.has_context for c in contexts):
            return TeacherContext()
        return TeacherContext(
            sections=tuple(s for c in contexts for s in c.sections),
            sources=tuple(s for c in contexts for s in c.sources),
        )

    def parts(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> list[FeedbackSource]:
        return [q for p in self.members for q in p.parts(group, traj_idx, step_idx)]


class FirstAvailable(Combination):
    """The first part that has a context for the step (the reference's "or" mode)."""

    name = "first_available"

    def context(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> TeacherContext:
        for p in self.members:
            ctx = p.context(group, traj_idx, step_idx)
            if ctx.has_context:
                return ctx
        return TeacherContext()

    def parts(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> list[FeedbackSource]:
        for p in self.members:
            if p.context(group, traj_idx, step_idx).has_context:
                return p.parts(group, traj_idx, step_idx)
        return []
