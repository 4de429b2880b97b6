"""ALFWorld's expert demonstrations: the planner's plan, search detours and a templated rationale per step.

:func:`expert_steps` is what :meth:`serl.envs.alfworld.suite.AlfworldSuite.expert_steps` returns to the
generic warm start (:mod:`serl.warmstart.demos`): ``(thought, action)`` pairs that win the game.

* The plan is the game's stored walkthrough (the PDDL planner's, docs/alfworld_games.md §2.2/§4.1).
* :func:`with_search_detours` inserts up to ``max_detours`` visits to receptacles that visibly lack the target
  object before the trip to it, so the demonstrations also show looking and moving on.
* :func:`rationale` is a **deterministic one-sentence template** filled from the task sentence, the action
  (parsed with ALFWorld's command grammar) and what the expert carries — not reasoning: its job is to teach
  the response format and a short ``<think>`` habit; the action carries the expert signal.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from serl.envs.alfworld.suite import AlfworldSuite

# ALFWorld command grammar (alfworld's PDDL grammar after the demangler): one template per verb.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(rx))
    for kind, rx in (
        ("go", r"^go to (?P<r>.+)$"),
        ("take", r"^take (?P<o>.+?) from (?P<r>.+)$"),
        ("move", r"^(?:move|put) (?P<o>.+?) (?:to|in|on|in/on) (?P<r>.+)$"),
        ("heat", r"^heat (?P<o>.+?) with (?P<r>.+)$"),
        ("cool", r"^cool (?P<o>.+?) with (?P<r>.+)$"),
        ("clean", r"^clean (?P<o>.+?) with (?P<r>.+)$"),
        ("slice", r"^slice (?P<o>.+?) with (?P<r>.+)$"),
        ("open", r"^open (?P<r>.+)$"),
        ("close", r"^close (?P<r>.+)$"),
        ("use", r"^use (?P<o>.+)$"),
        ("toggle", r"^toggle (?P<o>.+)$"),
        ("examine", r"^examine (?P<o>.+)$"),
        ("look", r"^look$"),
        ("inventory", r"^inventory$"),
    )
)


def _parse(action: str) -> tuple[str, dict[str, str]]:
    """``(verb kind, slots)`` of an ALFWorld command; ``("other", {})`` when no template matches."""
    for kind, rx in _PATTERNS:
        m = rx.match(action.strip())
        if m:
            return kind, m.groupdict()
    return "other", {}


def rationale(
    task: str, action: str, holding: str | None = None, target: str | None = None, searched: bool = False
) -> str:
    """The templated ``<think>`` text of one expert step (one short sentence, to fit small response caps).

    Args:
        task: the task sentence, e.g. ``"put a clean mug in coffeemachine"``.
        action: the expert command, e.g. ``"go to countertop 1"``.
        holding: the object the expert carries before this step (from its earlier ``take``), or None.
        target: the object type the task is about (``"mug"``), named in search and take rationales.
        searched: the previous step was a search that did not find ``target`` (a detour).

    A template, not reasoning (module docstring). Deterministic: same inputs, same text.
    """
    task = task.strip().rstrip(".") or "finish the task"
    kind, s = _parse(action)
    if kind == "go":
        if holding:
            return f"I have the {holding}, so I go to {s['r']}."
        if target and searched:
            return f"There is no {target} here, so I go to {s['r']} to look for one."
        if target:
            return f"I go to {s['r']} to look for a {target}."
        return f"I go to {s['r']} to look for what my task needs."
    if kind == "take":
        if target:
            return f"My task needs a {target}, and the {s['o']} is here, so I take it."
        return f"The {s['o']} I need is here, so I take it."
    if kind == "move":
        return f"I have the {s['o']}, and my task needs it in {s['r']}."
    if kind == "heat":
        return f"My task needs the {s['o']} hot, so I heat it with the {s['r']}."
    if kind == "cool":
        return f"My task needs the {s['o']} cool, so I cool it with the {s['r']}."
    if kind == "clean":
        return f"My task needs the {s['o']} clean, so I clean it with the {s['r']}."
    if kind == "slice":
        return f"My task needs the {s['o']} sliced, so I slice it with the {s['r']}."
    if kind == "open":
        return f"The {s['r']} is closed, so I open it to see what is inside."
    if kind == "close":
        return f"I am done with the {s['r']}, so I close it."
    if kind in ("use", "toggle"):
        return f"I turn on the {s['o']} so that I can look at things in its light."
    if kind == "examine":
        return f"I examine the {s['o']} to look at it closely."
    if kind == "look":
        return "I look around to see where I am and what is here."
    if kind == "inventory":
        return "I check what I am carrying."
    return f"My task is to {task}. My next step is to {action}."


def target_object(plan: Sequence[str]) -> str | None:
    """The object type the plan fetches: the first ``take``'s object without its number (``"mug"``)."""
    for action in plan:
        kind, s = _parse(action)
        if kind == "take":
            return re.sub(r"\s+\d+$", "", s["o"])
    return None


def with_search_detours(
    suite: AlfworldSuite, game: str, plan: Sequence[str], n_detours: int, seed: int
) -> tuple[list[str], set[int]]:
    """The expert plan with up to ``n_detours`` searches inserted before its first ``go to`` (the trip to the
    object): each detour goes to another receptacle (opening it when closed) where no ``target`` is visible,
    so the demonstrations also show looking for an object and moving on when it is not there. Detour
    receptacles never appear in the plan, so the rest of the plan stays valid (going and opening elsewhere
    changes nothing it depends on). Candidates are previewed in a scratch env; choice is seeded.

    Returns the new plan and the indices of its steps that directly follow an unsuccessful search.
    """
    target = target_object(plan)
    first_go = next((i for i, a in enumerate(plan) if _parse(a)[0] == "go"), None)
    if target is None or first_go is None or n_detours <= 0:
        return list(plan), set()
    rng = random.Random(seed)
    env = suite.make_env(max_episode_steps=len(plan) + 4 * n_detours + 2)
    try:
        _obs, info = env.reset(options={"game": game})
        for a in plan[:first_go]:
            _obs, _r, _t, _u, info = env.step(a)
        in_plan = " | ".join(plan)
        candidates = sorted(
            a for a in info["admissible_commands"] if a.startswith("go to ") and a[len("go to ") :] not in in_plan
        )
    finally:
        env.close()
    rng.shuffle(candidates)
    detours: list[list[str]] = []
    for go in candidates:
        if len(detours) == n_detours:
            break
        receptacle = go[len("go to ") :]
        steps = [go]
        scratch = suite.make_env(max_episode_steps=len(plan) + 4)
        try:
            _obs, info = scratch.reset(options={"game": game})
            for a in plan[:first_go]:
                scratch.step(a)
            obs, _r, _t, _u, info = scratch.step(go)
            if f"open {receptacle}" in info["admissible_commands"] and "is closed" in str(obs):
                steps.append(f"open {receptacle}")
                obs, _r, _t, _u, info = scratch.step(steps[-1])
        finally:
            scratch.close()
        if target not in str(obs):  # only receptacles that visibly lack the target
            detours.append(steps)
    new_plan = list(plan[:first_go])
    after_search: set[int] = set()
    for steps in detours:
        new_plan.extend(steps)
        after_search.add(len(new_plan))
    new_plan.extend(plan[first_go:])
    return new_plan, after_search


def _next_holding(holding: str | None, action: str) -> str | None:
    kind, s = _parse(action)
    if kind == "take":
        return s["o"]
    if kind == "move":
        return None
    return holding


def expert_steps(suite: AlfworldSuite, game: str, max_detours: int = 0, seed: int = 0) -> list[tuple[str, str]]:
    """``(thought, action)`` per expert step of ``game``: the stored plan with ``randint(0, max_detours)`` (drawn
    from ``seed``) search detours, each action with its :func:`rationale`."""
    plan = suite.expert_plan(game)
    target = target_object(plan)
    task = _task_of(suite, game)
    n_detours = random.Random(seed).randint(0, max_detours) if max_detours > 0 else 0
    plan, after_search = with_search_detours(suite, game, plan, n_detours, seed)
    steps: list[tuple[str, str]] = []
    holding: str | None = None
    for i, action in enumerate(plan):
        steps.append((rationale(task, action, holding, target, searched=i in after_search), action))
        holding = _next_holding(holding, action)
    return steps


def _task_of(suite: AlfworldSuite, game: str) -> str:
    """The task sentence of ``game`` (its intro text, read through a fresh env)."""
    env = suite.make_env(max_episode_steps=1)
    try:
        _obs, info = env.reset(options={"game": game})
        return str(info["task"])
    finally:
        env.close()
