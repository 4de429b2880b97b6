"""Trajectory renderings shared by the trajectory-valued feedback sources (docs/reference.md §3.3).

Used by ``future`` (the rest of the step's trajectory), ``success`` (a successful trajectory of the group),
``current`` (the step's trajectory so far) and the judge's request text.

Formats (``PC :: _build_response_trajectory_text`` / ``_build_trajectory_text``):

* ``response`` (reference default): per step ``"Step {step_id}\\nResponse:\\n{response}"``;
* ``observation_action``: per step ``"Step {step_id}\\nObservation:\\n{prompt}\\nAction:\\n{response}"``, where
  ``prompt`` is that step's full student prompt (as in the reference);

steps separated by a blank line; ``response`` is the response text with ``<think>…</think>`` removed when
``remove_thinking`` (reference ``remove_thinking_from_demonstration=true``), stripped. The reference's
aliases are accepted (``action``, ``action_series``, ``actions`` → ``response``; ``obs_action``,
``observation-action`` → ``observation_action``). ``max_steps > 0`` keeps the first ``max_steps`` steps and
appends ``"... M more steps omitted."`` (the reference's ``max_*_context_steps``); 0 keeps all.

:class:`TrajectorySource` is the base of the sources whose content is a rendering (``future``, ``success``,
``current``): it holds and validates the three rendering knobs.

Deviations from the reference: none.
"""

from __future__ import annotations

from typing import Sequence

from serl.envs.response import ThinkActionFormat
from serl.feedback.base import FeedbackSource
from serl.types import Step

TRAJECTORY_FORMATS = ("response", "observation_action")
_ALIASES = {
    "response": "response",
    "action": "response",
    "action_series": "response",
    "actions": "response",
    "observation_action": "observation_action",
    "obs_action": "observation_action",
    "observation-action": "observation_action",
}


def normalize_format(fmt: str) -> str:
    """Canonical format name; a clear error naming the allowed values otherwise."""
    key = str(fmt).strip().lower()
    if key not in _ALIASES:
        raise ValueError(
            f"unknown trajectory format {fmt!r}; allowed: {', '.join(TRAJECTORY_FORMATS)} "
            f"(aliases: {', '.join(sorted(k for k in _ALIASES if k not in TRAJECTORY_FORMATS))})"
        )
    return _ALIASES[key]


def check_max_steps(max_steps: int) -> int:
    max_steps = int(max_steps)
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0 (0 = all steps), got {max_steps}")
    return max_steps


def render_response(step: Step, remove_thinking: bool = True, response_format: ThinkActionFormat | None = None) -> str:
    """The step's response as shown to the teacher: think-stripped (when asked, by the env's response format;
    default: the ``serl`` rules) and stripped."""
    fmt = response_format if response_format is not None else ThinkActionFormat()
    text = fmt.strip_thinking(step.response_text) if remove_thinking else step.response_text
    return text.strip()


def render_steps(
    steps: Sequence[Step], fmt: str = "response", max_steps: int = 0, remove_thinking: bool = True,
    response_format: ThinkActionFormat | None = None,
) -> str:
    """Render ``steps`` in ``fmt`` (module docstring); ``""`` for no steps."""
    fmt = normalize_format(fmt)
    shown = list(steps) if max_steps <= 0 else list(steps)[:max_steps]
    blocks = []
    for s in shown:
        response = render_response(s, remove_thinking, response_format)
        if fmt == "response":
            blocks.append(f"Step {s.step_id}\nResponse:\n{response}")
        else:
            blocks.append(f"Step {s.step_id}\nObservation:\n{s.prompt}\nAction:\n{response}")
    omitted = len(steps) - len(shown)
    if omitted > 0:
        blocks.append(f"... {omitted} more steps omitted.")
    return "\n\n".join(blocks)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool; a clear error naming the allowed values otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


class TrajectorySource(FeedbackSource):
    """A source whose content is a rendered list of steps (§3.3): holds and validates the rendering knobs."""

    def __init__(
        self,
        format: str = "response",
        max_steps: int = 0,
        remove_thinking: bool = True,
        response_format: ThinkActionFormat | None = None,
    ) -> None:
        self.format = normalize_format(format)
        if isinstance(max_steps, bool) or not isinstance(max_steps, int):
            raise ValueError(f"max_steps must be an integer >= 0 (0 = all steps), got {max_steps!r}")
        self.max_steps = check_max_steps(max_steps)
        self.remove_thinking = check_bool("remove_thinking", remove_thinking)
        self.response_format = response_format if response_format is not None else ThinkActionFormat()  # think removal

    def render(self, steps: Sequence[Step]) -> str:
        return render_steps(steps, self.format, self.max_steps, self.remove_thinking, self.response_format)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(format={self.format!r}, max_steps={self.max_steps!r}, "
            f"remove_thinking={self.remove_thinking!r})"
        )
