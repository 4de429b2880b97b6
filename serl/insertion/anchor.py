"""Anchor-level insertion: the teacher sees every action tried from the same state (SERL_REFERENCE §4.2–§4.3).

Anchor groups (§4.2, ``PC :: _build_anchor_groups``). All steps of all trajectories of one GRPO group,
repeats inside a trajectory included, are partitioned by their anchor value: ``key="observation"`` = the
raw current observation ``Step.observation`` (the reference's ``anchor_obs``; the student prompt when the
observation is blank, the reference's fallback). Steps are visited in (step_id, trajectory index) order and
grouped by exact equality (:func:`serl.algo.anchors.group_by_observation`) or, with ``similarity`` set, by
greedy difflib clustering with that threshold (:func:`serl.algo.anchors.group_by_similarity`, the
reference's ``anchor_enable_similarity`` / ``anchor_similarity_thresh``). As in the reference, every
ALFWorld "Nothing happens." step of the group lands in one anchor (§10.14).

Context of step r (§4.3, ``PC :: _build_anchor_candidate_context``): one section titled
``Candidate actions tried from this state:``. Its members are r's anchor group G(r) (which contains r),
taken in (trajectory index, step index) order; the candidate action of a member is
:func:`serl.algo.anchors.candidate_action` of its response (first ``<action>`` content of the
think-stripped response, whitespace-collapsed, lower-cased). Per distinct candidate action ``a``, in order
of first appearance::

    - action <a>, tried <n> times, success count: <k>/<n>, average return: <x.xxxx>
      best outcome: <success|failure>, reward <x.xxxx>
      worst outcome: <success|failure>, reward <x.xxxx>
      <feedback label> (best outcome): <content>
      <feedback label> (worst outcome): <content>

* return = ``Trajectory.episode_reward`` of the member's trajectory (10/0 in ALFWorld), success =
  ``Trajectory.won``; ``average return`` is the mean over the n members; numbers use 4 decimals.
* best = highest return, ties → smaller step_id, then smaller trajectory index; worst = lowest return, ties →
  LARGER step_id, then larger trajectory index (``PC :: _select_record``).
* Feedback lines (the reference's "feedback included" anchor modes): ``<feedback label>`` is the feedback
  source's title without its trailing colon. The best member's line is written when the source has content
  for it; the worst member's line when the source has content for it and that content differs from the
  best's (so one line only when best and worst are the same step or say the same thing). One-line content
  goes after ``": "``; multi-line content (e.g. a state diff) goes on the following lines, each indented by
  four spaces, after a line ending in ``":"``.

``anchor_size`` = |G(r)|; ``sources = ("anchor", feedback.name)`` when at least one feedback line is in the
section, else ``("anchor",)``. Every step gets a context (the section is never empty, §4.3). Steps of one
anchor share one context object.

Deviations from the reference:

* The feedback is any feedback source, written per candidate action under the source's title; the
  reference's separate ``anchor_immediate_feedback`` layout (one line per distinct (action, feedback) pair)
  and the success-section / next-observation / future-trajectory parts are not options here (yet).
* Candidate order is (trajectory index, step index) — our stand-in for the reference's batch index, which
  after its balancing step is effectively arbitrary within a group (§10.13).
"""

from __future__ import annotations

from typing import Callable, Sequence

from serl.algo.anchors import candidate_action, group_by_observation, group_by_similarity
from serl.insertion.base import FeedbackLike, Insertion
from serl.types import Step, TeacherContext, Trajectory

CANDIDATES_TITLE = "Candidate actions tried from this state:"


def _observation_anchor(step: Step) -> str:
    return step.observation if step.observation.strip() else step.prompt


#: anchor key → anchor value of a step. A later issue adds "state_change" (DESIGN.md §4).
ANCHOR_KEYS: dict[str, Callable[[Step], str]] = {"observation": _observation_anchor}


def _format_feedback(label: str, which: str, content: str) -> list[str]:
    lines = content.splitlines()
    if len(lines) == 1:
        return [f"  {label} ({which}): {lines[0]}"]
    return [f"  {label} ({which}):"] + [f"    {line}" for line in lines]


class AnchorInsertion(Insertion):
    """Candidate-action table over the step's anchor group (optionally with feedback of best/worst).

    Args:
        key: what defines an anchor; one of :data:`ANCHOR_KEYS` (``"observation"``).
        similarity: ``None`` for exact equality, else a difflib-ratio threshold in (0, 1) (reference 0.95).
        remove_thinking: strip ``<think>…</think>`` before extracting the candidate action (reference True).
    """

    name = "anchor"

    def __init__(self, key: str = "observation", similarity: float | None = None, remove_thinking: bool = True):
        if key not in ANCHOR_KEYS:
            raise ValueError(f"unknown anchor key {key!r}; allowed: {', '.join(sorted(ANCHOR_KEYS))}")
        if similarity is not None:
            similarity = float(similarity)
            if not 0.0 < similarity < 1.0:
                raise ValueError(f"anchor similarity must be None or in (0, 1), got {similarity!r}")
        self.key = key
        self.similarity = similarity
        self.remove_thinking = bool(remove_thinking)

    def __repr__(self) -> str:
        return (
            f"AnchorInsertion(key={self.key!r}, similarity={self.similarity!r}, "
            f"remove_thinking={self.remove_thinking!r})"
        )

    def anchor_ids(self, group: Sequence[Trajectory]) -> list[list[int]]:
        """``ids[i][t]`` = anchor id of step t of trajectory i (ids in first appearance over (step_id, i))."""
        value_of = ANCHOR_KEYS[self.key]
        order = sorted(
            ((step.step_id, i, t) for i, traj in enumerate(group) for t, step in enumerate(traj.steps)),
        )
        values = [value_of(group[i].steps[t]) for _, i, t in order]
        if self.similarity is None:
            flat = group_by_observation(values)
        else:
            flat = group_by_similarity(values, self.similarity)
        ids = [[-1] * len(traj.steps) for traj in group]
        for (_, i, t), anchor in zip(order, flat):
            ids[i][t] = anchor
        return ids

    def contexts(self, group: Sequence[Trajectory], feedback: FeedbackLike) -> list[list[TeacherContext]]:
        ids = self.anchor_ids(group)
        members: dict[int, list[tuple[int, int]]] = {}
        for i, traj in enumerate(group):
            for t in range(len(traj.steps)):
                members.setdefault(ids[i][t], []).append((i, t))
        built = {anchor: self._anchor_context(group, recs, feedback) for anchor, recs in members.items()}
        return [[built[ids[i][t]] for t in range(len(traj.steps))] for i, traj in enumerate(group)]

    def _anchor_context(
        self, group: Sequence[Trajectory], records: list[tuple[int, int]], feedback: FeedbackLike
    ) -> TeacherContext:
        by_action: dict[str, list[tuple[int, int]]] = {}
        for i, t in records:
            action = candidate_action(group[i].steps[t].response_text, self.remove_thinking)
            by_action.setdefault(action, []).append((i, t))

        def ret(rec: tuple[int, int]) -> float:
            return group[rec[0]].episode_reward

        def step_id(rec: tuple[int, int]) -> int:
            return group[rec[0]].steps[rec[1]].step_id

        def outcome(rec: tuple[int, int]) -> str:
            return f"{'success' if group[rec[0]].won else 'failure'}, reward {ret(rec):.4f}"

        label = feedback.title.strip().rstrip(":").strip() or feedback.name
        lines: list[str] = []
        used_feedback = False
        for action, recs in by_action.items():
            n = len(recs)
            k = sum(1 for i, _ in recs if group[i].won)
            avg = sum(ret(r) for r in recs) / n
            best = min(recs, key=lambda r: (-ret(r), step_id(r), r[0], r[1]))
            worst = min(recs, key=lambda r: (ret(r), -step_id(r), -r[0], -r[1]))
            lines.append(f"- action {action}, tried {n} times, success count: {k}/{n}, average return: {avg:.4f}")
            lines.append(f"  best outcome: {outcome(best)}")
            lines.append(f"  worst outcome: {outcome(worst)}")
            best_fb = feedback(group, *best)
            worst_fb = feedback(group, *worst) if worst != best else None
            if worst_fb == best_fb:
                worst_fb = None  # same step or same text: written once, as the best outcome's
            for which, content in (("best outcome", best_fb), ("worst outcome", worst_fb)):
                if content is not None:
                    lines.extend(_format_feedback(label, which, content))
                    used_feedback = True
        sources = ("anchor", feedback.name) if used_feedback else ("anchor",)
        return TeacherContext(sections=((CANDIDATES_TITLE, "\n".join(lines)),), sources=sources, anchor_size=len(records))
