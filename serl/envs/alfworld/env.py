"""``AlfworldTextEnv``: one ALFWorld game at a time as a text ``gymnasium.Env`` (docs/design.md §5).

Engine (docs/alfworld_games.md §5.1 "single game, no gym"): TextWorld's ``PddlEnv`` wrapped in
``AlfredDemangler(shuffle=False)`` (display names such as ``sinkbasin 1``, stable numbering, §3.1) and
``AlfredInfos``. The wrappers are constructed per env instance, so no wrapper object is shared between
envs (pitfall §5.4-2); no expert is attached (the planner expert hangs on big kitchens, §5.4-8).

Semantics:

* ``reset(seed=None, options=None)``: ``options={"game": path}`` loads that game; otherwise a game of the
  pool is drawn with the env's seeded ``np_random``. Returns ``(intro text, info)``.
* ``step(action)`` -> ``(feedback, reward, terminated, truncated, info)``. The engine's score is cumulative
  (0, then 1 once won, §5.4-3); reward = 10 × its increase, i.e. 10.0 exactly once, on the winning step
  (docs/reference.md §1.4). ``terminated`` = won. ``truncated`` once ``max_episode_steps`` steps were taken
  without a win; every step counts, "Nothing happens." ones included (§5.2).
* Commands must match an admissible command exactly after ``strip()``; anything else is answered
  "Nothing happens." and changes nothing (§5.2).
* Stepping a finished episode is a no-op that returns the last feedback, reward 0.0 and the same flags (the
  reference keeps stepping finished envs until the whole batch is done, docs/reference.md §1.3).
* ``info`` always has ``admissible_commands`` (list[str], sorted), ``won`` (bool), ``task`` (the sentence
  after "Your task is to: ", without the final period), ``task_type``, ``game`` (path str), ``state`` (the
  engine's symbolic facts as a few lines, :func:`serl.envs.alfworld.state.render_state`) and ``noop``
  (the engine answered :data:`NOOP_MESSAGE`: the command was unknown or inadmissible and changed nothing).

``alfworld``/``textworld`` are imported on first use, after ``ALFWORLD_DATA`` is set (§5.4-4).

Engine quirks: the PDDL->SAS translation behind ``load``/``reset`` swaps ``sys.stdout`` and uses
module-global options while it runs, so do not reset two envs of one process from different threads at
the same time. Translations are memoised per process (``serl.envs.alfworld._install_translation_cache``,
which also keeps ``sys.argv`` intact): a new game costs one translation (0.2–2 s on big kitchens),
resetting a game again costs none.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
from gymnasium import spaces

from serl.envs.base import reset_game
from serl.envs.alfworld import import_alfworld
from serl.envs.alfworld.generator import TASK_TYPES
from serl.envs.alfworld.state import fact_tuples, render_state

WIN_REWARD = 10.0  # docs/reference.md §1.4: 10·won on the winning step
#: ALFWorld's answer to an unknown or inadmissible command (docs/reference.md §3.1): it changes nothing.
NOOP_MESSAGE = "Nothing happens."
TASK_PREFIX = "Your task is to: "
CHARSET = frozenset(string.printable)  # letters, digits, punctuation, space, \t \n \r \x0b \x0c
OBS_MAX_LENGTH = 1 << 16
ACTION_MAX_LENGTH = 4096


def parse_task(intro: str) -> str:
    """Task sentence of an intro text: what follows "Your task is to: ", stripped, final period removed."""
    pos = intro.find(TASK_PREFIX)
    if pos == -1:
        return ""
    task = intro[pos + len(TASK_PREFIX) :].strip()
    return task[:-1].rstrip() if task.endswith(".") else task


def read_task_type(game: str | os.PathLike[str]) -> str:
    """Task type of a game: ``traj_data.json`` next to it (§2.3), else the task directory name (§2.1)."""
    path = Path(game)
    traj = path.parent / "traj_data.json"
    if traj.is_file():
        try:
            task_type = json.loads(traj.read_text(encoding="utf-8")).get("task_type")
            if isinstance(task_type, str) and task_type:
                return task_type
        except (OSError, ValueError):
            pass
    head = path.parent.parent.name.split("-", 1)[0]
    return head if head in TASK_TYPES else "unknown"


class AlfworldTextEnv(gym.Env):
    """Text env over the real ALFWorld engine; see the module docstring.

    Args:
        games: pool of ``game.tw-pddl`` paths for ``reset()`` without a game option. May be empty (then
            every reset must name its game) or a lazy sequence (only indexed on such a reset).
        max_episode_steps: truncation limit (the reference's ``env.max_steps`` = 50, docs/reference.md §7.2).
    """

    metadata = {"render_modes": []}

    def __init__(self, games: Sequence[str | os.PathLike[str]], max_episode_steps: int = 50) -> None:
        if isinstance(games, (str, os.PathLike)):
            raise TypeError("games must be a sequence of game paths, not a single path")
        if not isinstance(max_episode_steps, int) or isinstance(max_episode_steps, bool) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
        self.games = games
        self.max_episode_steps = max_episode_steps
        self.observation_space = spaces.Text(max_length=OBS_MAX_LENGTH, min_length=1, charset=CHARSET)
        self.action_space = spaces.Text(max_length=ACTION_MAX_LENGTH, min_length=0, charset=CHARSET)
        self.render_mode = None
        self._tw: Any = None  # the wrapped textworld env, built on first reset
        self._loaded: str | None = None  # game currently loaded in the engine
        self._task_types: dict[str, str] = {}
        self._game: str | None = None
        self._task = ""
        self._task_type = ""
        self._obs = ""
        self._admissible: list[str] = []
        self._state = ""
        self._noop = False
        self._score = 0
        self._won = False
        self._steps = 0
        self._terminated = False
        self._truncated = False

    # ----------------------------------------------------------------------------------------------

    def _engine(self) -> Any:
        if self._tw is None:
            import_alfworld()
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
            from textworld.envs.pddl import PddlEnv

            infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True, extras=["gamefile"])
            self._tw = AlfredInfos(AlfredDemangler(PddlEnv(infos), shuffle=False))
        return self._tw

    def _info(self) -> dict[str, Any]:
        return {
            "admissible_commands": list(self._admissible),
            "won": self._won,
            "task": self._task,
            "task_type": self._task_type,
            "game": self._game,
            "state": self._state,
            "noop": self._noop,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        game = reset_game(options)
        if game is None:
            n = len(self.games)
            if n == 0:
                raise ValueError("this env has no game pool: pass options={'game': <path to game.tw-pddl>}")
            game = self.games[int(self.np_random.integers(n))]
        path = os.fspath(game)
        if not Path(path).is_file():
            raise FileNotFoundError(f"game file not found: {path}")

        engine = self._engine()
        if self._loaded != path:
            self._loaded = None  # stays None if load() raises
            engine.load(path)
            self._loaded = path
        state = engine.reset()
        if path not in self._task_types:
            self._task_types[path] = read_task_type(path)

        self._game = path
        self._task_type = self._task_types[path]
        self._obs = str(state.feedback)
        self._task = parse_task(self._obs)
        self._admissible = [str(c) for c in state["admissible_commands"]]
        self._state = render_state(fact_tuples(state["facts"]))
        self._noop = False
        self._won = bool(state["won"])
        self._score = 1 if self._won else 0
        self._steps = 0
        self._terminated = self._won
        self._truncated = False
        return self._obs, self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._game is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"action must be str, got {type(action).__name__}")
        if self._terminated or self._truncated:  # finished episode: no-op (module docstring)
            return self._obs, 0.0, self._terminated, self._truncated, self._info()

        state, score, _done = self._engine().step(action)
        self._steps += 1
        score = int(score or 0)
        reward = WIN_REWARD * max(0, score - self._score)  # cumulative score -> reward (§5.4-3)
        self._score = max(self._score, score)
        self._obs = str(state.feedback)
        self._admissible = [str(c) for c in state["admissible_commands"]]
        self._state = render_state(fact_tuples(state["facts"]))
        self._noop = self._obs.strip() == NOOP_MESSAGE
        self._won = bool(state["won"])
        self._terminated = self._won
        self._truncated = not self._terminated and self._steps >= self.max_episode_steps
        return self._obs, reward, self._terminated, self._truncated, self._info()

    def close(self) -> None:
        if self._tw is not None:
            self._tw.close()
            self._tw = None
            self._loaded = None
        super().close()
