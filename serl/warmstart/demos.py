"""Expert demonstrations for the supervised warm start (docs/design.md §5 "Warm start").

:func:`collect_demonstrations` plays each game's expert steps (``suite.expert_steps(game, max_detours,
seed)``: ``(thought, action)`` pairs the environment suite derives from its own expert — ALFWorld's PDDL
plan with search detours and templated rationales, :mod:`serl.envs.alfworld.demos`) through a real env and
records one :class:`serl.types.Demonstration` per step:

* ``prompt`` — the student's user message rendered by exactly the rollout code path,
  :func:`serl.rollout.base.render_student_prompt` with ``history`` = the (raw observation, action) pairs so
  far, as :class:`serl.rollout.base.RolloutWorker` builds it (docs/reference.md §1.3, §8.1). A demonstration
  prompt is therefore byte-identical to the prompt the policy sees at the same state during RL
  (tests/integration/test_demos.py checks it against a real rollout).
* ``response`` — ``suite.response_format.compose(thought, action)``: ``<think>{thought}</think><action>{expert
  action}</action>`` (docs/reference.md §6.1).

Every response is checked to project to exactly the expert action with a valid format
(``suite.response_format.project``, docs/reference.md §8.3), every expert action to be accepted by the env (not a
no-op), and every
plan to win the game on its last step; anything else raises.

Demonstrations are cached as JSONL, one JSON object per demonstration (:func:`save_demonstrations`,
:func:`load_demonstrations`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from serl.envs.base import EnvSuite
from serl.rollout.base import render_student_prompt
from serl.tracking import atomic_write_text
from serl.types import Demonstration

DEMO_FIELDS = tuple(f.name for f in dataclasses.fields(Demonstration))

def collect_demonstrations(
    suite: EnvSuite, games: Sequence[str], progress: bool = False, max_detours: int = 0, seed: int = 0
) -> list[Demonstration]:
    """One :class:`~serl.types.Demonstration` per expert step of every game, in game then step order.

    Each game runs in a fresh env capped at ``len(plan) + 1`` steps (the suite's ``max_turns`` is
    irrelevant: the whole plan is used). Raises ``ValueError`` when the env answers an expert action as a no-op,
    when a response does not project to ``(action, True)``, or when the episode ends before the plan
    does; ``RuntimeError`` when the plan does not win the game. ``max_detours`` and a per-game seed (from
    ``seed`` and the game's position in ``games``) go to ``suite.expert_steps`` (ALFWorld: 0..max_detours
    search detours).
    """
    from tqdm.auto import tqdm

    demos: list[Demonstration] = []
    for i, game in enumerate(tqdm(list(games), desc="expert demonstrations", unit="game", disable=not progress)):
        demos.extend(_play_expert(suite, str(game), max_detours, seed * 1_000_003 + i))
    return demos


def _play_expert(suite: EnvSuite, game: str, max_detours: int = 0, seed: int = 0) -> list[Demonstration]:
    steps = suite.expert_steps(game, max_detours, seed)
    plan = [action for _thought, action in steps]
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
        won = bool(info.get("won", False))
        for step_id, (thought, action) in enumerate(steps):
            if won:
                raise ValueError(f"game {game}: won after {step_id} of {len(plan)} expert actions (plan too long)")
            prompt = render_student_prompt(suite, task, history, step_id, observation, admissible)
            response = suite.response_format.compose(thought, action)
            projected = suite.response_format.project(response)
            if projected != (action, True):
                raise ValueError(
                    f"game {game}: demonstration response {response!r} projects to {projected}, "
                    f"expected ({action!r}, True)"
                )
            out.append(Demonstration(game_id, task_type, step_id, prompt, response))
            obs, _reward, terminated, truncated, info = env.step(action)
            # the env must accept it: not answered as a no-op (an env without the flag: listed as admissible; a
            # listed placeholder such as a search box's "search[<your query>]" matches no literal action)
            if info["noop"] if "noop" in info else action not in admissible:
                raise ValueError(
                    f"game {game}: expert action {action!r} at step {step_id} is not admissible (the env changed "
                    f"nothing); admissible: {list(admissible)}"
                )
            history.append((observation, action))
            observation = str(obs)
            admissible = tuple(info["admissible_commands"])
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
