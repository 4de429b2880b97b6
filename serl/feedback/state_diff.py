"""State-diff feedback: what the action changed in the observed state (beyond the reference, docs/design.md §4).

Not a mode of the reference (docs/reference.md §3 has only raw feedback, next observation, trajectories and
the judge); docs/design.md §4 adds it as the "page changes" source. Where immediate feedback (§3.1) shows the
raw response, this source shows only its difference from the state the action was taken in, so the
teacher sees *what changed* (and, explicitly, when nothing did).

Definition. For step ``t`` of a trajectory:

* ``after`` = ``step.feedback`` (the raw env response, stripped). Blank ⇒ no section (``None``).
* If ``after`` is one of ``noop_messages`` (default ``("Nothing happens.",)``, ALFWorld's answer to an
  unknown or inadmissible command) the content is :data:`NO_CHANGE`.
* ``before`` = the observation the action was taken from: ``step.observation``, except when that
  observation is itself a no-op message (the step follows a failed command, so the text says nothing about
  the state) — then the most recent earlier observation of the same trajectory that is not a no-op message
  (falling back to ``step.observation`` if there is none); blank observations are skipped the same way.
  This walk-back is a refinement of "the observation before the action"; without it every step after a
  "Nothing happens." would show ``- Nothing happens.`` as if that were a state. It is
  :func:`serl.algo.anchors.effective_observations`, the same function that defines the
  ``state_change`` anchors of ``serl.insertion.anchor``.
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

Example: before "You arrive at countertop 1. On the countertop 1, you see a mug 1, and a plate 2.",
action "take mug 1 from countertop 1", after "You pick up the mug 1 from the countertop 1." gives::

    - You arrive at countertop 1.
    - On the countertop 1, you see a mug 1, and a plate 2.
    + You pick up the mug 1 from the countertop 1.
"""

from __future__ import annotations

import difflib
import re
from typing import Sequence

from serl.algo.anchors import DEFAULT_NOOP_MESSAGES, effective_observations
from serl.feedback.base import FeedbackSource, clean
from serl.types import Trajectory

NO_CHANGE = "The action changed nothing."

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
    """Unit diff between the state before the action and the env's response to it."""

    name = "state_diff"
    title = "State change caused by the current step:"

    def __init__(self, noop_messages: Sequence[str] = DEFAULT_NOOP_MESSAGES) -> None:
        self.noop_messages = tuple(str(m).strip() for m in noop_messages)

    def _is_noop(self, text: str) -> bool:
        return text.strip() in self.noop_messages

    def state_before(self, traj: Trajectory, step_idx: int) -> str:
        """Observation the action was taken from, skipping no-op messages (module docstring)."""
        observations = [s.observation for s in traj.steps[: step_idx + 1]]
        return effective_observations(observations, self.noop_messages)[step_idx]

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        traj = group[traj_idx]
        after = clean(traj.steps[step_idx].feedback)
        if after is None:
            return None
        if self._is_noop(after):
            return NO_CHANGE
        lines = unit_diff(self.state_before(traj, step_idx), after)
        return "\n".join(lines) if lines else NO_CHANGE

    def __repr__(self) -> str:
        return f"StateDiffFeedback(noop_messages={self.noop_messages!r})"
