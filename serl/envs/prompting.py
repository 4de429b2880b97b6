"""What every environment's student prompt shares (docs/reference.md §8.1, §8.2): the step/history rules and
the ``[Observation k: '<obs>', Action k: '<action>']`` history lines. The templates themselves are each
environment's own (``serl/envs/<env>/prompts.py``)."""

from __future__ import annotations

from typing import Callable, Sequence


def history_window(history: Sequence[tuple[str, str]], step_id: int, history_length: int) -> list[tuple[str, str]]:
    """The last ``history_length`` (observation, action) pairs shown at step ``step_id`` (0-based = steps already
    taken); ``[]`` at step 0 or with ``history_length`` 0 (the no-history template). Raises ``ValueError`` on a
    negative step or H, or a history longer than the steps taken."""
    if step_id < 0:
        raise ValueError(f"step_id must be >= 0, got {step_id}")
    if history_length < 0:
        raise ValueError(f"history_length must be >= 0, got {history_length}")
    if len(history) > step_id:
        raise ValueError(f"history has {len(history)} pairs but only {step_id} step(s) were taken")
    if step_id == 0 or history_length == 0:
        return []
    return list(history)[-history_length:]


def format_history(
    history: Sequence[tuple[str, str]], step_id: int, show: Callable[[str], str] = lambda obs: obs
) -> str:
    """``[Observation k: '<obs>', Action k: '<action>']`` lines; the last pair is step ``step_id`` (1-based k);
    ``show`` renders an observation (the env's page formatting; default: as it is)."""
    first = step_id - len(history) + 1
    return "\n".join(
        f"[Observation {first + j}: '{show(obs)}', Action {first + j}: '{action}']" for j, (obs, action) in enumerate(history)
    )
