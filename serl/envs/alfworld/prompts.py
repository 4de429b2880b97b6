"""Student prompt templates for ALFWorld (docs/reference.md §8.1, format of §6.1).

Each step's prompt is one user message built fresh from the current state (docs/reference.md §1.3):

* step 0, or ``history_length == 0``: :data:`TEMPLATE_NO_HISTORY` — the expert-agent preamble, the raw
  current observation (at step 0 it contains "Your task is to: ..."), the admissible actions, the format
  instruction;
* later steps: :data:`TEMPLATE_WITH_HISTORY` — the task, "Prior to this step, you have already taken N
  step(s)...", the last H ``[Observation k: '<obs>', Action k: '<action>']`` lines (k = absolute 1-based
  step number, as the reference's ``SimpleMemory.fetch``), "You are now at step N+1 and your current
  observation is: ...", the admissible actions, the format instruction.

The admissible list is written like the reference: ``['a1'\\n 'a2'\\n 'a3']`` with ``help`` left out.
The wording is serl's own; the structure and the facts given follow the reference.
"""

from __future__ import annotations

from typing import Sequence

from serl.envs.prompting import format_history, history_window

PREAMBLE = "You are an expert agent acting in ALFRED, an embodied household environment."

INSTRUCTION = (
    "Now it is your turn to act.\n"
    "First reason step by step about the current situation; this reasoning MUST be enclosed within "
    "<think> </think> tags.\n"
    "Once you have finished reasoning, choose one admissible action for the current step and present it "
    "within <action> </action> tags."
)

TEMPLATE_NO_HISTORY = (
    PREAMBLE + "\n"
    "Your current observation is: {observation}\n"
    "The admissible actions in your current situation are: {admissible}.\n"
    "\n" + INSTRUCTION
)

TEMPLATE_WITH_HISTORY = (
    PREAMBLE + " Your task is to: {task}.\n"
    "Prior to this step, you have already taken {n_steps} step(s). Below are the most recent {n_shown} "
    "observations and the corresponding actions you took:\n"
    "{history}\n"
    "You are now at step {step_number} and your current observation is: {observation}\n"
    "The admissible actions in your current situation are: {admissible}.\n"
    "\n" + INSTRUCTION
)

EXCLUDED_ACTIONS = ("help",)


def format_admissible(admissible: Sequence[str]) -> str:
    """``['a1'\\n 'a2' ...]`` without ``help`` (docs/reference.md §8.1)."""
    return "[" + "\n ".join(f"'{a}'" for a in admissible if a not in EXCLUDED_ACTIONS) + "]"


def render_prompt(
    task: str,
    history: Sequence[tuple[str, str]],
    step_id: int,
    observation: str,
    admissible: Sequence[str],
    history_length: int,
) -> str:
    """The student prompt of step ``step_id`` (0-based = number of steps already taken).

    Args:
        task: task sentence (without "Your task is to: " and without the final period).
        history: the (observation, action) pairs of the previous steps, oldest first — the full history or
            at least its last ``history_length`` pairs; pair i is the observation the action was taken in.
        step_id: 0-based index of the current step (must be >= len(history)).
        observation: the raw current observation (the env's text).
        admissible: admissible commands of the current state.
        history_length: H, how many pairs to show (0 = never show history, as the reference).
    """
    shown = history_window(history, step_id, history_length)
    if not shown:
        return TEMPLATE_NO_HISTORY.format(observation=observation, admissible=format_admissible(admissible))
    return TEMPLATE_WITH_HISTORY.format(
        task=task,
        n_steps=step_id,
        n_shown=len(shown),
        history=format_history(shown, step_id),
        step_number=step_id + 1,
        observation=observation,
        admissible=format_admissible(admissible),
    )
