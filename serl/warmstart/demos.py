"""Expert demonstrations for the supervised warm start (docs/design.md §5 "Warm start").

:func:`collect_demonstrations` plays each game's expert plan (``suite.expert_plan(game)``: the PDDL
planner's walkthrough stored in generated games, or the official game's) through a real env and records
one :class:`serl.types.Demonstration` per step:

* ``prompt`` — the student's user message rendered by exactly the rollout code path,
  :func:`serl.rollout.base.render_student_prompt` with ``history`` = the (raw observation, action) pairs so
  far, as :class:`serl.rollout.base.RolloutWorker` builds it (docs/reference.md §1.3, §8.1). A demonstration
  prompt is therefore byte-identical to the prompt the policy sees at the same state during RL
  (tests/integration/test_demos.py checks it against a real rollout).
* ``response`` — ``<think>{rationale}</think><action>{expert action}</action>`` (docs/reference.md §6.1).

The rationale is a **deterministic one-sentence template** filled from the task sentence, the action and
what the expert carries at that point (:func:`rationale`) — not reasoning. Its only job is to teach the
response format and a plausible, short ``<think>`` habit; the action is what carries the expert signal.
Every response is checked to project to exactly the expert action with a valid format
(``suite.project_action``, docs/reference.md §8.3), every expert action to be admissible, and every plan to
win the game on its last step; anything else raises.

Demonstrations are cached as JSONL, one JSON object per demonstration (:func:`save_demonstrations`,
:func:`load_demonstrations`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Sequence

from serl.algo.masks import ACTION_CLOSE, ACTION_OPEN, THINK_CLOSE, THINK_OPEN  # the one response format
from serl.envs.base import EnvSuite
from serl.rollout.base import render_student_prompt
from serl.tracking import atomic_write_text
from serl.types import Demonstration

DEMO_FIELDS = tuple(f.name for f in dataclasses.fields(Demonstration))

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
    suite: EnvSuite, game: str, plan: Sequence[str], n_detours: int, seed: int
) -> tuple[list[str], set[int]]:
    """The expert plan with up to ``n_detours`` searches inserted before its first ``go to`` (the trip to the
    object): each detour goes to another receptacle (opening it when closed) where no ``target`` is visible,
    so the demonstrations also show looking for an object and moving on when it is not there. Detour
    receptacles never appear in the plan, so the rest of the plan stays valid (going and opening elsewhere
    changes nothing it depends on). Candidates are previewed in a scratch env; choice is seeded.

    Returns the new plan and the indices of its steps that directly follow an unsuccessful search.
    """
    import random

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


def expert_response(
    task: str, action: str, holding: str | None = None, target: str | None = None, searched: bool = False
) -> str:
    """``<think>{rationale}</think><action>{action}</action>`` (docs/reference.md §6.1)."""
    why = rationale(task, action, holding, target, searched)
    return f"{THINK_OPEN}{why}{THINK_CLOSE}{ACTION_OPEN}{action}{ACTION_CLOSE}"


def _next_holding(holding: str | None, action: str) -> str | None:
    kind, s = _parse(action)
    if kind == "take":
        return s["o"]
    if kind == "move":
        return None
    return holding


def collect_demonstrations(
    suite: EnvSuite, games: Sequence[str], progress: bool = False, max_detours: int = 0, seed: int = 0
) -> list[Demonstration]:
    """One :class:`~serl.types.Demonstration` per expert step of every game, in game then step order.

    Each game runs in a fresh env capped at ``len(plan) + 1`` steps (the suite's ``max_turns`` is
    irrelevant: the whole plan is used). Raises ``ValueError`` when an expert action is not admissible,
    when a response does not project to ``(action, True)``, or when the episode ends before the plan
    does; ``RuntimeError`` when the plan does not win the game. With ``max_detours > 0`` each game's plan
    gets 0..max_detours search detours (:func:`with_search_detours`; the count and receptacles are drawn
    from ``seed`` and the game's position in ``games``).
    """
    from tqdm.auto import tqdm

    demos: list[Demonstration] = []
    for i, game in enumerate(tqdm(list(games), desc="expert demonstrations", unit="game", disable=not progress)):
        demos.extend(_play_expert(suite, str(game), max_detours, seed * 1_000_003 + i))
    return demos


def _play_expert(suite: EnvSuite, game: str, max_detours: int = 0, seed: int = 0) -> list[Demonstration]:
    import random

    plan = suite.expert_plan(game)
    target = target_object(plan)
    n_detours = random.Random(seed).randint(0, max_detours) if max_detours > 0 else 0
    plan, after_search = with_search_detours(suite, game, plan, n_detours, seed)
    env = suite.make_env(max_episode_steps=len(plan) + 1)
    out: list[Demonstration] = []
    try:
        obs, info = env.reset(options={"game": game})
        task = str(info["task"])
        task_type = str(info.get("task_type", ""))
        game_id = str(info.get("game", game))
        observation = str(obs)
        admissible = tuple(info["admissible_commands"])
        history: list[tuple[str, str]] = []  # (raw observation, action), as RolloutWorker keeps it
        holding: str | None = None
        won = bool(info.get("won", False))
        for step_id, action in enumerate(plan):
            if won:
                raise ValueError(f"game {game}: won after {step_id} of {len(plan)} expert actions (plan too long)")
            if action not in admissible:
                raise ValueError(
                    f"game {game}: expert action {action!r} at step {step_id} is not admissible; "
                    f"admissible: {list(admissible)}"
                )
            prompt = render_student_prompt(suite, task, history, step_id, observation, admissible)
            response = expert_response(task, action, holding, target, searched=step_id in after_search)
            projected = suite.project_action(response)
            if projected != (action, True):
                raise ValueError(
                    f"game {game}: demonstration response {response!r} projects to {projected}, "
                    f"expected ({action!r}, True)"
                )
            out.append(Demonstration(game_id, task_type, step_id, prompt, response))
            obs, _reward, terminated, truncated, info = env.step(action)
            history.append((observation, action))
            observation = str(obs)
            admissible = tuple(info["admissible_commands"])
            holding = _next_holding(holding, action)
            won = bool(info.get("won", False))
            if (terminated or truncated) and not won:
                raise ValueError(f"game {game}: episode ended without a win at expert step {step_id}")
        if not won:
            raise RuntimeError(f"game {game}: the expert plan ({len(plan)} actions) does not win the game")
    finally:
        env.close()
    return out


def save_demonstrations(path: str | Path, demos: Sequence[Demonstration]) -> Path:
    """Write ``demos`` as JSONL (one object per line, fields of :class:`~serl.types.Demonstration`),
    atomically (temp file + rename). Creates the parent folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(dataclasses.asdict(d), ensure_ascii=False) for d in demos]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def load_demonstrations(path: str | Path) -> list[Demonstration]:
    """Read a JSONL file written by :func:`save_demonstrations`; blank lines are skipped.

    Raises ``ValueError`` naming the line for invalid JSON or a record whose keys differ from
    ``game, task_type, step_id, prompt, response``.
    """
    path = Path(path)
    demos: list[Demonstration] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if not isinstance(obj, dict) or set(obj) != set(DEMO_FIELDS):
                keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                raise ValueError(f"{path}:{lineno}: a demonstration needs exactly the keys {DEMO_FIELDS}, got {keys}")
            demos.append(Demonstration(**{k: obj[k] for k in DEMO_FIELDS}))
    return demos
