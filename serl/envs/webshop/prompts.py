"""Student prompt templates for WebShop (SERL_REFERENCE §8.2; WEBSHOP_SPEC §6 "Prompt templates").

* :func:`format_observation` — the wrapper's ``format_obs``: the page segments after the instruction, each
  in single quotes, joined by `` [SEP] ``; a page without the instruction (the done page) passes through raw.
  Idempotent: an already formatted text no longer holds the instruction segment, so it is returned as is.
* :func:`format_admissible` — the wrapper's ``format_avail_actions`` output, one ``'<action>',`` per line.
* :func:`render_prompt` — step 0 (or ``history_length == 0``): :data:`TEMPLATE_NO_HISTORY` (role line, task,
  current observation, admissible actions in square brackets, format instruction); later steps:
  :data:`TEMPLATE_WITH_HISTORY` (adds the number of steps taken, the last H
  ``[Observation k: '<formatted obs>', Action k: '<action>']`` records numbered from 1 over the episode, and
  the current step number). A history prompt longer than :data:`MAX_HISTORY_PROMPT_CHARS` (13,000)
  characters falls back to the no-history form (§6).

The wording is serl's own; the structure and the facts given follow the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from serl.envs.prompting import format_history, history_window

SEP = " [SEP] "
MAX_HISTORY_PROMPT_CHARS = 13000  # WEBSHOP_SPEC §6: above this the no-history template is used

PREAMBLE = "You are an expert autonomous agent operating in the WebShop e-commerce platform."

INSTRUCTION = (
    "Now it is your turn to take one action for the current step.\n"
    "First reason step by step about the current situation; this reasoning MUST be enclosed within "
    "<think> </think> tags.\n"
    "Once you have finished reasoning, choose exactly one admissible action for the current step and present "
    "it within <action> </action> tags."
)

TEMPLATE_NO_HISTORY = (
    PREAMBLE + "\n"
    "Your task is the following: {task}.\n"
    "Your current observation is: {observation}.\n"
    "Your admissible actions of the current situation are: [\n{available_actions}\n].\n"
    "\n" + INSTRUCTION
)

TEMPLATE_WITH_HISTORY = (
    PREAMBLE + "\n"
    "Your task is the following: {task}.\n"
    "Prior to this step, you have already taken {n_steps} step(s). Below are the most recent {n_shown} "
    "observations and the corresponding actions you took:\n"
    "{history}\n"
    "You are now at step {step_number} and your current observation is: {observation}.\n"
    "Your admissible actions of the current situation are: [\n{available_actions}\n].\n"
    "\n" + INSTRUCTION
)


def format_observation(text: str, task: str) -> str:
    """``format_obs`` (WEBSHOP_SPEC §6): segments after the first one equal to ``task``, each quoted.

    >>> format_observation("WebShop [SEP] Instruction: [SEP] buy a mug [SEP] Search", "buy a mug")
    "'Search'"
    """
    parts = text.split(SEP)
    if task not in parts:
        return text  # the done page (and already formatted texts) pass through raw
    rest = parts[parts.index(task) + 1 :]
    return SEP.join(f"'{p}'" for p in rest)


def format_admissible(admissible: Sequence[str]) -> str:
    """``'<action>',`` one per line (WEBSHOP_SPEC §6 ``format_avail_actions``)."""
    return "\n".join(f"'{a}'," for a in admissible)


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
        task: the instruction text.
        history: (observation, action) pairs of the previous steps, oldest first (at least the last
            ``history_length``); observations raw or already formatted.
        step_id: 0-based index of the current step (>= len(history)).
        observation: the current page (raw or formatted).
        admissible: the available actions (``search[<your query>]``, ``click[...]``).
        history_length: H, pairs shown (0 = never show history).
    """
    shown = history_window(history, step_id, history_length)
    obs = format_observation(observation, task)
    actions = format_admissible(admissible)
    no_history = TEMPLATE_NO_HISTORY.format(task=task, observation=obs, available_actions=actions)
    if not shown:
        return no_history
    prompt = TEMPLATE_WITH_HISTORY.format(
        task=task,
        n_steps=step_id,
        n_shown=len(shown),
        history=format_history(shown, step_id, lambda o: format_observation(o, task)),
        step_number=step_id + 1,
        observation=obs,
        available_actions=actions,
    )
    return no_history if len(prompt) > MAX_HISTORY_PROMPT_CHARS else prompt
