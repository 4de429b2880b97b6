"""Fault injection for env tests: a suite wrapper whose envs raise or hang on chosen steps.

Everything here pickles (module-level classes, plain fields), so the faulty suite also works inside the env
worker processes of :class:`serl.envs.hosting.ProcessHost`. A fault with ``times=n`` fires n times in all,
counted with marker files in ``marker_dir``, so "fails once, then works" holds across processes (a retried
episode runs in a fresh worker).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from serl.envs.response import ThinkActionFormat


@dataclass(frozen=True)
class Fault:
    kind: str  # "raise" | "hang" | "raise_on_reset"
    at_step: int = 1  # the env's n-th step call (1-based); ignored for raise_on_reset
    game: str | None = None  # only envs playing this game (None: any)
    seed: int | None = None  # only envs reset with this seed (None: any)
    times: int = 1  # how many times it fires in all (across processes); 0 = every time
    marker_dir: str = ""  # where fired faults are counted (required when times > 0)
    hang_s: float = 3600.0

    def fire(self) -> bool:
        """Claim one firing; False once ``times`` firings happened."""
        if self.times == 0:
            return True
        for n in range(self.times):
            try:
                fd = os.open(Path(self.marker_dir) / f"{self.kind}-{self.at_step}-{self.game}-{self.seed}-{n}", os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                continue
            os.close(fd)
            return True
        return False

    def act(self, where: str) -> None:
        if self.kind == "hang":
            time.sleep(self.hang_s)
        raise RuntimeError(f"injected env fault at {where}")


class FaultyEnv(gym.Env):
    def __init__(self, inner: gym.Env, faults: tuple[Fault, ...]):
        self.inner = inner
        self.faults = faults
        self.game: str | None = None
        self.seed: int | None = None
        self.steps = 0

    def _due(self, kinds: tuple[str, ...], step: int | None) -> Fault | None:
        for f in self.faults:
            if f.kind in kinds and (step is None or f.at_step == step) and f.game in (None, self.game) \
                    and f.seed in (None, self.seed) and f.fire():
                return f
        return None

    def reset(self, *, seed=None, options=None):
        self.game, self.seed, self.steps = (options or {}).get("game"), seed, 0
        fault = self._due(("raise_on_reset",), None)
        if fault is not None:
            fault.act(f"reset of {self.game}")
        return self.inner.reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        fault = self._due(("raise", "hang"), self.steps)
        if fault is not None:
            fault.act(f"step {self.steps} of {self.game}")
        return self.inner.step(action)

    def close(self):
        self.inner.close()


class FaultySuite:
    """``suite`` with envs that fail as ``faults`` say; every other attribute is the wrapped suite's."""

    def __init__(self, suite: Any, faults: tuple[Fault, ...]):
        self.suite = suite
        self.faults = tuple(faults)

    def make_env(self, max_episode_steps=None):
        return FaultyEnv(self.suite.make_env(max_episode_steps=max_episode_steps), self.faults)

    def __getattr__(self, name: str) -> Any:
        if name in ("suite", "faults") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.suite, name)


class CountdownEnv(gym.Env):
    """Text env: game 'g<k>' is won after k steps whatever the actions; observations count the steps and
    repeat the last action, so a replay must reproduce them exactly."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.t = int(options["game"][1:]), 0
        return "obs 0", self._info(False)

    def _info(self, won: bool) -> dict:
        return {"admissible_commands": ["look"], "won": won, "task": f"count to {self.k}", "task_type": "count",
                "game": f"g{self.k}"}

    def step(self, action):
        self.t += 1
        won = self.t >= self.k
        return f"obs {self.t} after {action}", 10.0 * won, won, False, self._info(won)


class CountdownSuite:
    name = "countdown"
    history_length = 2
    eval_split = "valid_seen"
    response_format = ThinkActionFormat()  # untagged test responses reach the env as their last 30 characters

    def __init__(self, max_turns: int = 4):
        self.max_turns = max_turns

    def make_env(self, max_episode_steps=None):
        return CountdownEnv()

    def render_prompt(self, task, history, step_id, observation, admissible):
        return f"{task} | {observation} | step {step_id}"

    def success_metrics(self, trajectories):
        return {"success_rate": sum(t.won for t in trajectories) / max(len(trajectories), 1)}
