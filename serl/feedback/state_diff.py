"""State-diff feedback: what the action changed in the observed state (beyond the reference, docs/design.md §4).

Not a mode of the reference (docs/reference.md §3 has only raw feedback, next observation, trajectories and
the judge); docs/design.md §4 adds it as the "page changes" source. Where immediate feedback (§3.1) shows the
raw response, this source shows only its difference from the state the action was taken in, so the
teacher sees *what changed* (and, explicitly, when nothing did).

Definition. For step ``t`` of a trajectory, with ``source`` (knob):

* ``source="state"`` (default): ``before`` = ``step.state``, ``after`` = ``step.next_state`` — the states the
  environment reports (``info["state"]``, serl/envs/base.py): for ALFWorld a few lines rendered from the
  engine's symbolic facts (location, what is held, what is seen there, open receptacles, object properties;
  :mod:`serl.envs.alfworld.state`), so a move shows the change of location and view, not every sentence of
  the room text; for WebShop the page. A blank env response (``step.feedback``) or a blank ``after`` ⇒ no
  section (``None``).
* ``source="observation"`` (the text diff): ``after`` = ``step.feedback`` (the raw env response, stripped;
  blank ⇒ ``None``); ``before`` = the observation the action was taken from: ``step.observation``, except
  when that observation is itself the answer to a no-op (the previous step has ``noop``) or blank — then the
  most recent earlier observation that is neither (falling back to ``step.observation``). Without this
  walk-back every step after a failed command would diff against the no-op message as if it were a state.
* A step the env marked ``noop`` (the command changed nothing; ALFWorld's answer to an unknown or
  inadmissible command) gives :data:`NO_CHANGE`, whatever ``source``.
* Both texts are split into *units* by :func:`split_units`:

  1. split into lines (``str.splitlines``);
  2. a line containing ``[SEP]`` (a WebShop page, ``'part' [SEP] 'part' …``) is split at every ``[SEP]``
     and each part is a unit;
  3. any other line is split into sentences at whitespace that follows ``.``, ``!`` or ``?`` and precedes
     an upper-case letter (ALFWorld paragraphs: "You arrive at countertop 1. On the countertop 1, you see
     a mug 1, a plate 2, and a knife 1." → two units; the object list stays whole inside its sentence,
     and "-= Welcome to TextWorld, ALFRED! =-" is not split);
  4. units are stripped; empty units are dropped.

* The unit lists are aligned with ``difflib.SequenceMatcher(None, before, after, autojunk=False)``;
  unchanged units are omitted; for each changed block, in order, the removed units are written
  ``- <unit>`` then the added units ``+ <unit>``, one per line.
* No changed unit (identical text, e.g. a WebShop action that left the page as it was) ⇒ :data:`NO_CHANGE`.

Example (``source="state"``, ALFWorld): "take mug 1 from countertop 1" gives::

    - You hold nothing
    - At countertop 1 you see: mug 1, plate 2
    + You hold mug 1
    + At countertop 1 you see: plate 2

Example (``source="observation"``): before "You arrive at countertop 1. On the countertop 1, you see a mug 1, and a plate 2.",
action "take mug 1 from countertop 1", after "You pick up the mug 1 from the countertop 1." gives::

    - You arrive at countertop 1.
    - On the countertop 1, you see a mug 1, and a plate 2.
    + You pick up the mug 1 from the countertop 1.
"""

from __future__ import annotations

import difflib
import re
from typing import Sequence

from serl.feedback.base import FeedbackSource, clean
from serl.types import Trajectory

NO_CHANGE = "The action changed nothing."
#: what is diffed (module docstring)
SOURCES = ("state", "observation")

_SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PAGE_SEPARATOR = "[SEP]"


def split_units(text: str) -> list[str]:
    """Diff units of an observation (lines → ``[SEP]`` parts or sentences), see the module docstring."""
    units: list[str] = []
    for line in text.splitlines():
        if _PAGE_SEPARATOR in line:
            parts = line.split(_PAGE_SEPARATOR)
        else:
            parts = _SENTENCE_BOUNDARY.split(line)
        units.extend(part.strip() for part in parts if part.strip())
    return units


def unit_diff(before: str, after: str) -> list[str]:
    """``- ``/``+ `` lines for the units removed/added between two texts (empty list: no change)."""
    old, new = split_units(before), split_units(after)
    lines: list[str] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        lines.extend(f"- {unit}" for unit in old[i1:i2])
        lines.extend(f"+ {unit}" for unit in new[j1:j2])
    return lines


class StateDiffFeedback(FeedbackSource):
    """Unit diff between the state before the action and the state after it (module docstring).

    Args:
        source: ``state`` (the env's state descriptions, default) or ``observation`` (the text diff of the
            observation before the action and the env's response).
    """

    name = "state_diff"
    title = "State change caused by the current step:"

    def __init__(self, source: str = "state") -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown state_diff source {source!r}; allowed: {', '.join(SOURCES)}")
        self.source = source

    @staticmethod
    def observation_before(traj: Trajectory, step_idx: int) -> str:
        """The observation step ``step_idx``'s action was taken from, walking back over no-op answers and
        blank observations (module docstring)."""
        steps = traj.steps
        for s in range(step_idx, -1, -1):
            answers_noop = s > 0 and steps[s - 1].noop
            if not answers_noop and steps[s].observation.strip():
                return steps[s].observation
        return steps[step_idx].observation

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        traj = group[traj_idx]
        step = traj.steps[step_idx]
        if clean(step.feedback) is None:  # the env answered nothing: no section, whatever the source
            return None
        after = clean(step.next_state if self.source == "state" else step.feedback)
        if after is None:
            return None
        if step.noop:
            return NO_CHANGE
        before = step.state if self.source == "state" else self.observation_before(traj, step_idx)
        lines = unit_diff(before, after)
        return "\n".join(lines) if lines else NO_CHANGE

    def __repr__(self) -> str:
        return f"StateDiffFeedback(source={self.source!r})"
