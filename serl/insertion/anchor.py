"""Anchor-level insertion: the teacher sees every action tried from the same state (docs/reference.md §4.2–§4.3).

Anchor groups (§4.2, ``PC :: _build_anchor_groups``). All steps of all trajectories of one GRPO group,
repeats inside a trajectory included, are partitioned by their anchor value, chosen by ``key``:

* ``"observation"`` (reference) — the raw current observation ``Step.observation`` (the reference's
  ``anchor_obs``), as it is, blank or whitespace-only included: the reference falls back to the prompt only
  when ``anchor_obs`` is missing (None, ``PC :: _record_anchor_value``), which a ``Step`` never is. So, as
  in the reference, exact grouping pools every blank observation of the group (and every no-op message, like
  ALFWorld's answer to a failed command, whatever the true state, §10.14), and similarity grouping makes each
  blank one an anchor of its own (:func:`serl.algo.anchors.group_by_similarity`).
* ``"state_change"`` (beyond the reference, docs/design.md §4) — the state the action was taken from, as
  the environment describes it (``Step.state``: ALFWorld's symbolic facts, a WebShop page; an env without a
  description gives its observation, and after a no-op the state before it, :func:`serl.rollout.base.env_state`).
  A step that follows a no-op pools with the state it happened in, never with the no-op steps of other
  states, and two different texts of one state (``look`` and arriving) pool together. A blank state falls
  back to the step's student prompt.

Steps are visited in (step_id, trajectory index) order and grouped by exact equality
(:func:`serl.algo.anchors.group_by_observation`) or, with ``similarity`` set, by greedy difflib clustering
with that threshold (:func:`serl.algo.anchors.group_by_similarity`, the reference's
``anchor_enable_similarity`` / ``anchor_similarity_thresh``).

Members of a step r's anchor group G(r) (which contains r) are taken in (trajectory index, step index)
order; the candidate action of a member is the env's ``response_format.candidate_action`` of its response
(first ``<action>`` content, whitespace-collapsed, lower-cased; :class:`serl.envs.response.ThinkActionFormat`).

Contexts. The feedback source contributes through ``feedback.parts(group, i, t)``: the single sources that
apply to step r (``[source]`` for one source; every part for an *all of*; the first available part for a
*first available*, so parts may differ between the steps of one anchor; ``[]`` for no feedback). A part
with ``per_candidate`` (outcome of an action: immediate feedback, state diff …) is written per candidate
action; a part without it (successful trajectory, judge …) is appended after as its own section
``(part.title, part(group, *r))`` for r itself, when it has content (the reference appends the success
section the same way, §4.3).

``layout="table"`` (reference ``PC :: _build_anchor_candidate_context``, default): first section titled
``Candidate actions tried from this state:``; per distinct candidate action ``a`` in order of first
appearance::

    - action <a>, tried <n> times, success count: <k>/<n>, average return: <x.xxxx>
      best outcome: <success|failure>, reward <x.xxxx>
      worst outcome: <success|failure>, reward <x.xxxx>
      <lines of part.candidate_lines(group, best, worst), for each per_candidate part of r, by candidate_rank>

* return = ``Trajectory.episode_reward`` of the member's trajectory (10/0 in ALFWorld), success =
  ``Trajectory.won``; ``average return`` is the mean over the n members; numbers use 4 decimals.
* best = highest return, ties → smaller step_id, then smaller trajectory index; worst = lowest return, ties →
  LARGER step_id, then larger trajectory index (``PC :: _select_record``).
* ``candidate_lines`` (``serl.feedback.base``) writes ``  <label> (best outcome): <content>`` and, when it
  differs, the worst outcome's line; multi-line content in a block indented by four spaces.

The table is never empty, so every step gets a context (§4.3); without any part it is the plain table.

``layout="pairs"`` (reference ``PC :: _build_anchor_immediate_feedback_context``, the
``anchor_immediate_feedback`` mode): per per_candidate part of r, one section titled ``part.title`` with one
line per distinct (candidate action, content) pair over G(r), in member order, members without content
skipped::

    action <a>, <first line of content>
        <further lines of content, indented by four spaces>

then the non-per_candidate sections as above. No section at all ⇒ no context (``TeacherContext()``, no
teacher signal), e.g. when no member has feedback.

``sources`` = ``("anchor",)`` + the names of the parts that wrote at least one line or section, in part
order; ``anchor_size`` = |G(r)|; ``anchor_actions`` = number of distinct candidate actions in G(r) (the
reference's ``serl/anchor_group_size_mean`` / ``serl/anchor_action_count_mean``).

Deviations from the reference:

* The feedback is any source or combination, written per candidate action under the source's label; the
  reference hard-codes which parts each ``anchor_*`` mode includes (§4.3 table). The pairs layout accepts
  any per_candidate source and several of them (one section each), not only immediate feedback.
* ``key="state_change"`` is beyond the reference (docs/design.md §4, §10.14).
* Candidate order is (trajectory index, step index) — our stand-in for the reference's batch index, which
  after its balancing step is effectively arbitrary within a group (§10.13).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

from serl.algo.anchors import group_by_observation, group_by_similarity
from serl.envs.response import ThinkActionFormat
from serl.insertion.base import FeedbackLike, Insertion
from serl.types import TeacherContext, Trajectory

CANDIDATES_TITLE = "Candidate actions tried from this state:"
#: what defines an anchor (module docstring).
ANCHOR_KEYS = ("observation", "state_change")
#: how an anchor context is written (module docstring).
LAYOUTS = ("table", "pairs")

StepRef = tuple[int, int]  # (trajectory index, step index) inside the group


@dataclass
class _Candidate:
    """One distinct candidate action of an anchor: its members, best/worst member and statistic lines."""

    action: str
    members: list[StepRef]
    best: StepRef
    worst: StepRef
    head: list[str]


class _Anchor:
    """One anchor group: the candidate table is computed once, the per-step contexts assembled from it."""

    def __init__(
        self, group: Sequence[Trajectory], members: list[StepRef], remove_thinking: bool, fmt: ThinkActionFormat
    ):
        self.group = group
        self.members = members
        self.actions = [fmt.candidate_action(group[i].steps[t].response_text, remove_thinking) for i, t in members]
        by_action: dict[str, list[StepRef]] = {}
        for ref, action in zip(members, self.actions):
            by_action.setdefault(action, []).append(ref)
        self.candidates = [self._candidate(a, refs) for a, refs in by_action.items()]
        self._cache: dict[tuple[int, str], tuple[FeedbackLike, list[str]]] = {}

    def _ret(self, ref: StepRef) -> float:
        return self.group[ref[0]].episode_reward

    def _outcome(self, ref: StepRef) -> str:
        return f"{'success' if self.group[ref[0]].won else 'failure'}, reward {self._ret(ref):.4f}"

    def _candidate(self, action: str, refs: list[StepRef]) -> _Candidate:
        step_id = lambda r: self.group[r[0]].steps[r[1]].step_id  # noqa: E731
        n = len(refs)
        k = sum(1 for i, _ in refs if self.group[i].won)
        avg = sum(self._ret(r) for r in refs) / n
        best = min(refs, key=lambda r: (-self._ret(r), step_id(r), r[0], r[1]))
        worst = min(refs, key=lambda r: (self._ret(r), -step_id(r), -r[0], -r[1]))
        head = [
            f"- action {action}, tried {n} times, success count: {k}/{n}, average return: {avg:.4f}",
            f"  best outcome: {self._outcome(best)}",
            f"  worst outcome: {self._outcome(worst)}",
        ]
        return _Candidate(action, refs, best, worst, head)

    def _cached(self, part: FeedbackLike, tag: str, build: Callable[[], list[str]]) -> list[str]:
        """Lines of ``part`` for ``tag`` (a candidate, or the pairs), built once per anchor."""
        key = (id(part), tag)  # the part is kept in the value, so its id cannot be reused while the cache lives
        if key not in self._cache:
            self._cache[key] = (part, list(build()))
        return self._cache[key][1]

    def table(self, parts: Sequence[FeedbackLike], used: set[str]) -> tuple[str, str]:
        lines: list[str] = []
        for cand in self.candidates:
            lines.extend(cand.head)
            # §4.3 order under each action: the action's own outcome (feedback, next obs) before its future
            for part in sorted(parts, key=lambda q: q.candidate_rank):
                if part.per_candidate:
                    extra = self._cached(
                        part, "c:" + cand.action, partial(part.candidate_lines, self.group, cand.best, cand.worst)
                    )
                    if extra:
                        lines.extend(extra)
                        used.add(part.name)
        return CANDIDATES_TITLE, "\n".join(lines)

    def pairs(self, part: FeedbackLike) -> list[str]:
        def build() -> list[str]:
            seen: dict[tuple[str, str], None] = {}
            for ref, action in zip(self.members, self.actions):
                text = part(self.group, *ref)
                if text is not None:
                    seen.setdefault((action, text), None)
            lines: list[str] = []
            for action, text in seen:
                first, *rest = text.splitlines()
                lines.append(f"action {action}, {first}")
                lines.extend(f"    {line}" for line in rest)
            return lines

        return self._cached(part, "pairs", build)


class AnchorInsertion(Insertion):
    """Context of a step = what was tried from its state across the group (optionally with feedback).

    Args:
        key: what defines an anchor; one of :data:`ANCHOR_KEYS` (``"observation"``: reference).
        similarity: ``None`` for exact equality, else a difflib-ratio threshold in (0, 1) (reference 0.95).
        layout: one of :data:`LAYOUTS` (``"table"``: candidate table, reference default; ``"pairs"``: the
            reference's ``anchor_immediate_feedback`` lines).
        remove_thinking: strip ``<think>…</think>`` before extracting the candidate action (reference True).
        response_format: the env's response format, which reads the candidate action
            (``${env.response_format}``; default: the ``serl`` rules).
    """

    name = "anchor"

    def __init__(
        self,
        key: str = "observation",
        similarity: float | None = None,
        layout: str = "table",
        remove_thinking: bool = True,
        response_format: ThinkActionFormat | None = None,
    ):
        if key not in ANCHOR_KEYS:
            raise ValueError(f"unknown anchor key {key!r}; allowed: {', '.join(ANCHOR_KEYS)}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown anchor layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
        if similarity is not None:
            similarity = float(similarity)
            if not 0.0 < similarity < 1.0:
                raise ValueError(f"anchor similarity must be None or in (0, 1), got {similarity!r}")
        self.key = key
        self.similarity = similarity
        self.layout = layout
        self.remove_thinking = bool(remove_thinking)
        self.response_format = response_format if response_format is not None else ThinkActionFormat()

    def __repr__(self) -> str:
        return (
            f"AnchorInsertion(key={self.key!r}, similarity={self.similarity!r}, layout={self.layout!r}, "
            f"remove_thinking={self.remove_thinking!r}, response_format={self.response_format!r})"
        )

    def anchor_values(self, traj: Trajectory) -> list[str]:
        """Anchor value of each step of ``traj`` under ``key`` (module docstring)."""
        if self.key == "observation":
            # §4.2 PC :: _record_anchor_value: anchor_obs as it is (the prompt only if it is None, never here)
            return [s.observation for s in traj.steps]
        return [s.state if s.state.strip() else s.prompt for s in traj.steps]

    def anchor_ids(self, group: Sequence[Trajectory]) -> list[list[int]]:
        """``ids[i][t]`` = anchor id of step t of trajectory i (ids in first appearance over (step_id, i))."""
        values = [self.anchor_values(traj) for traj in group]
        order = sorted((step.step_id, i, t) for i, traj in enumerate(group) for t, step in enumerate(traj.steps))
        flat_values = [values[i][t] for _, i, t in order]
        if self.similarity is None:
            flat = group_by_observation(flat_values)
        else:
            flat = group_by_similarity(flat_values, self.similarity)
        ids = [[-1] * len(traj.steps) for traj in group]
        for (_, i, t), anchor in zip(order, flat):
            ids[i][t] = anchor
        return ids

    def contexts(self, group: Sequence[Trajectory], feedback: FeedbackLike) -> list[list[TeacherContext]]:
        ids = self.anchor_ids(group)
        members: dict[int, list[StepRef]] = {}
        for i, traj in enumerate(group):
            for t in range(len(traj.steps)):
                members.setdefault(ids[i][t], []).append((i, t))
        anchors = {a: _Anchor(group, refs, self.remove_thinking, self.response_format) for a, refs in members.items()}
        return [
            [self._context(group, anchors[ids[i][t]], i, t, feedback) for t in range(len(traj.steps))]
            for i, traj in enumerate(group)
        ]

    def _context(
        self, group: Sequence[Trajectory], anchor: _Anchor, i: int, t: int, feedback: FeedbackLike
    ) -> TeacherContext:
        parts = list(feedback.parts(group, i, t))
        used: set[str] = set()
        sections: list[tuple[str, str]] = []
        if self.layout == "table":
            sections.append(anchor.table(parts, used))
        else:
            for part in parts:
                if part.per_candidate and (lines := anchor.pairs(part)):
                    sections.append((part.title, "\n".join(lines)))
                    used.add(part.name)
        for part in parts:
            if not part.per_candidate and (text := part(group, i, t)) is not None:
                sections.append((part.title, text))
                used.add(part.name)
        if not sections:
            return TeacherContext()
        return TeacherContext(
            sections=tuple(sections),
            sources=("anchor", *dict.fromkeys(p.name for p in parts if p.name in used)),
            anchor_size=len(anchor.members),
            anchor_actions=len(anchor.candidates),
        )
