"""Where a rollout's environments run, and what happens when one fails.

Every episode of a rollout owns one env, addressed by a key. A *host* runs env calls:

* :class:`InlineHost` runs them in this process: no overhead, but a call that hangs cannot be interrupted
  (a TextWorld call cannot be stopped from another thread).
* :class:`ProcessHost` runs them in ``processes`` worker processes, spawned once and reused. The calls of one
  turn run in parallel across the workers; a call that takes longer than ``timeout_s``, or a worker that dies,
  costs that worker: it is killed and replaced by a fresh one, and the envs it hosted are lost.

:class:`EpisodeEnvs` puts the failure policy on top of a host. An episode whose reset or step raises, times out
or loses its env is *recovered*: a fresh env is reset with the episode's game and seed and the episode's
actions so far are replayed (envs are deterministic given game, seed and actions; the replayed observation
must equal the recorded one), then the failed call is tried again. After ``retries`` recoveries the next
failure *drops* the episode, with a warning naming its game and the error. Every failure counts in
``errors``; dropped episodes are listed in ``dropped``. What a dropped episode means for its GRPO group is
the rollout worker's decision (:mod:`serl.rollout.base`).
"""

from __future__ import annotations

import itertools
import multiprocessing.connection
import os
import subprocess
import sys
import time
import traceback
import warnings
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

# A host call: (key, op, args). ops: "open" (args: game, seed, max_steps) -> (obs, info);
# "step" (args: action) -> (obs, reward, terminated, truncated, info); "close" (no args) -> None.
Call = tuple[int, str, tuple]


@dataclass(frozen=True)
class Failure:
    """A host call that did not return: ``kind`` is ``error`` (the env raised), ``timeout`` (no answer
    within the host's limit), ``crash`` (the worker process died) or ``lost`` (the env's worker was
    replaced earlier); ``detail`` says what happened."""

    kind: str
    detail: str


def _run_call(envs: dict[int, Any], suite: Any, key: int, op: str, args: tuple) -> Any:
    """Execute one call against ``envs`` (a key -> env table); the same code in both hosts."""
    if op == "open":
        game, seed, max_steps = args
        old = envs.pop(key, None)
        if old is not None:
            old.close()
        env = suite.make_env(max_episode_steps=max_steps)
        envs[key] = env
        obs, info = env.reset(seed=seed, options={"game": game})
        return str(obs), dict(info)
    if op == "step":
        (action,) = args
        obs, reward, terminated, truncated, info = envs[key].step(action)
        return str(obs), float(reward), bool(terminated), bool(truncated), dict(info)
    if op == "close":
        env = envs.pop(key, None)
        if env is not None:
            env.close()
        return None
    raise ValueError(f"unknown env call {op!r}; allowed: open, step, close")


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class InlineHost:
    """Envs in this process. A raising call becomes a :class:`Failure`; a hanging call hangs the caller."""

    def __init__(self, suite: Any):
        self.suite = suite
        self.envs: dict[int, Any] = {}

    def run(self, calls: Sequence[Call]) -> list[Any]:
        out: list[Any] = []
        for key, op, args in calls:
            try:
                out.append(_run_call(self.envs, self.suite, key, op, args))
            except Exception as e:  # noqa: BLE001 - an env failure becomes data, the policy decides
                out.append(Failure("error", _describe(e)))
        return out

    def close(self) -> None:
        for key in list(self.envs):
            self.run([(key, "close", ())])


def _worker_main(recv: multiprocessing.connection.Connection, send: multiprocessing.connection.Connection) -> None:  # pragma: no cover - child
    """A worker process: receive the suite, then answer ``(key, op, args)`` messages with ``("ok", value)`` /
    ``("error", text)`` until ``None`` or the parent goes away."""
    suite = recv.recv()
    envs: dict[int, Any] = {}
    while True:
        try:
            msg = recv.recv()
        except (EOFError, OSError):
            return
        if msg is None:  # shutdown
            for env in envs.values():
                try:
                    env.close()
                except Exception:  # noqa: BLE001
                    pass
            return
        key, op, args = msg
        try:
            reply = ("ok", _run_call(envs, suite, key, op, args))
        except Exception as e:  # noqa: BLE001
            reply = ("error", _describe(e) + "\n" + traceback.format_exc(limit=3))
        send.send(reply)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: multiprocessing.connection.Connection  # answers from the worker
    send: multiprocessing.connection.Connection  # calls to the worker
    keys: set[int] = field(default_factory=set)
    started: bool = False  # has answered a call (its first call also pays the interpreter's start and imports)


class ProcessHost:
    """Envs in ``processes`` spawned worker processes; a call is abandoned after ``timeout_s`` seconds (a fresh
    worker's first call after ``startup_timeout_s``: it also starts Python and imports the env engine).

    ``suite`` must pickle (it is sent to each worker once). Workers are started lazily, on the first call,
    and replaced when one is killed for a timeout or dies.
    """

    def __init__(self, suite: Any, processes: int = 2, timeout_s: float = 60.0, startup_timeout_s: float = 300.0):
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
            raise ValueError(f"processes must be an int >= 1, got {processes!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.suite = suite
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = max(float(startup_timeout_s), self.timeout_s)
        self._workers: list[_Worker | None] = [None] * processes
        self._home: dict[int, int] = {}  # env key -> worker index
        self.restarts = 0  # workers replaced after a timeout or a crash

    def _start(self, w: int) -> _Worker:
        """A fresh worker: ``python -m serl.envs.hosting`` (a clean interpreter: no fork of a process running
        torch threads, no re-import of the caller's ``__main__``) on two pipes, then the pickled suite."""
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the suite's classes import
        proc = subprocess.Popen(
            [sys.executable, "-m", "serl.envs.hosting", str(to_child), str(from_child)],
            pass_fds=(to_child, from_child),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        worker = _Worker(
            proc,
            multiprocessing.connection.Connection(to_parent, writable=False),
            multiprocessing.connection.Connection(from_parent, readable=False),
        )
        self._workers[w] = worker
        weakref.finalize(self, _stop, proc)  # a host dropped without close() leaves no process behind
        worker.send.send(self.suite)
        return worker

    def _worker(self, w: int) -> _Worker:
        worker = self._workers[w]
        return worker if worker is not None else self._start(w)

    def _kill(self, w: int) -> None:
        worker = self._workers[w]
        if worker is None:
            return
        worker.process.kill()
        worker.process.wait(5)
        worker.conn.close()
        worker.send.close()
        for key in worker.keys:
            self._home.pop(key, None)
        self._workers[w] = None
        self.restarts += 1

    def _place(self, key: int) -> int:
        """The worker of ``key``: where it lives, else (a new env) the worker with the fewest envs."""
        if key not in self._home:
            w = min(range(len(self._workers)), key=lambda i: len(self._workers[i].keys) if self._workers[i] else 0)
            self._home[key] = w
            self._worker(w).keys.add(key)
        return self._home[key]

    def run(self, calls: Sequence[Call]) -> list[Any]:
        out: list[Any] = [None] * len(calls)
        queues: dict[int, deque[int]] = {}
        for i, (key, op, args) in enumerate(calls):
            if op != "open" and key not in self._home:
                out[i] = Failure("lost", "its worker process was replaced after an earlier failure")
                continue
            w = self._place(key)
            try:
                self._workers[w].send.send((key, op, args))  # type: ignore[union-attr]
            except (OSError, ValueError) as e:  # the worker died since its last answer
                self._fail_worker(w, deque([i, *queues.pop(w, ())]), out,
                                  Failure("crash", f"env worker process died ({_describe(e)})"))
                continue
            queues.setdefault(w, deque()).append(i)
        deadline = {w: time.monotonic() + self._limit(w) for w in queues}
        while queues:
            conns = {self._workers[w].conn: w for w in queues}  # type: ignore[union-attr]
            wait_s = max(0.0, min(deadline[w] for w in queues) - time.monotonic())
            for conn in multiprocessing.connection.wait(list(conns), timeout=wait_s):
                w = conns[conn]
                i = queues[w].popleft()
                try:
                    status, value = conn.recv()
                except (EOFError, OSError) as e:
                    self._fail_worker(w, deque([i, *queues.pop(w)]), out,
                                      Failure("crash", f"env worker process died ({_describe(e)})"))
                    continue
                out[i] = value if status == "ok" else Failure("error", value)
                self._workers[w].started = True  # type: ignore[union-attr]
                if calls[i][1] == "close":
                    self._home.pop(calls[i][0], None)
                    self._workers[w].keys.discard(calls[i][0])  # type: ignore[union-attr]
                if queues[w]:
                    deadline[w] = time.monotonic() + self._limit(w)
                else:
                    del queues[w]
            now = time.monotonic()
            for w in [w for w in queues if now >= deadline[w]]:
                limit = self._limit(w)
                self._fail_worker(w, queues.pop(w), out, Failure("timeout", f"no answer within {limit:g} s"))
        return out

    def _limit(self, w: int) -> float:
        worker = self._workers[w]
        return self.timeout_s if worker is not None and worker.started else self.startup_timeout_s

    def _fail_worker(self, w: int, pending: deque[int], out: list[Any], failure: Failure) -> None:
        """Kill worker ``w``: its first pending call gets ``failure``, the rest are ``lost`` with it."""
        first = True
        for i in pending:
            out[i] = failure if first else Failure("lost", f"its worker was killed ({failure.kind}: {failure.detail})")
            first = False
        self._kill(w)

    def close(self) -> None:
        for w, worker in enumerate(self._workers):
            if worker is None:
                continue
            try:
                worker.send.send(None)
                worker.process.wait(5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(5)
            worker.conn.close()
            worker.send.close()
            self._workers[w] = None
        self._home.clear()


@dataclass
class _Episode:
    game: str
    seed: int
    key: int
    actions: list[str] = field(default_factory=list)
    observation: str = ""  # the latest observation (checked after a replay)
    errors: int = 0
    dropped: bool = False


class EpisodeEnvs:
    """The envs of one rollout, with recovery by replay and dropping (see the module docstring).

    Args:
        host: an :class:`InlineHost` or :class:`ProcessHost`.
        max_steps: the episode cap every env is made with.
        retries: recoveries allowed per episode (0: the first failure drops it).
    """

    _keys = itertools.count()

    def __init__(self, host: Any, max_steps: int, retries: int = 1):
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        self.host = host
        self.max_steps = int(max_steps)
        self.retries = retries
        self.episodes: dict[Any, _Episode] = {}
        self.errors = 0  # failed env calls (each raise, timeout or lost env), recovered or not
        self.dropped: list[Any] = []  # episode ids given up on, in order

    def reset(self, episodes: Sequence[tuple[Any, str, int]]) -> dict[Any, tuple[str, dict]]:
        """Open and reset one env per ``(episode_id, game, seed)``; ``{episode_id: (obs, info)}`` of those
        not dropped."""
        for eid, game, seed in episodes:
            self.episodes[eid] = _Episode(str(game), int(seed), next(self._keys))
        calls = [(self.episodes[eid].key, "open", (game, int(seed), self.max_steps)) for eid, game, seed in episodes]
        results = self.host.run(calls)
        out = {}
        for (eid, _, _), result in zip(episodes, results):
            result = self._settle(eid, ("open", ()), result)
            if result is not None:
                self.episodes[eid].observation = result[0]
                out[eid] = result
        return out

    def step(self, actions: dict[Any, str]) -> dict[Any, tuple[str, float, bool, bool, dict]]:
        """Step every ``{episode_id: action}`` (in parallel where the host can); the results of those not
        dropped."""
        eids = list(actions)
        results = self.host.run([(self.episodes[e].key, "step", (actions[e],)) for e in eids])
        out = {}
        for eid, result in zip(eids, results):
            result = self._settle(eid, ("step", (actions[eid],)), result)
            if result is not None:
                ep = self.episodes[eid]
                ep.actions.append(actions[eid])
                ep.observation = result[0]
                out[eid] = result
        return out

    def _settle(self, eid: Any, call: tuple[str, tuple], result: Any) -> Any:
        """``result``, or after a failure the recovered episode's retried result, or None when dropped."""
        ep = self.episodes[eid]
        while isinstance(result, Failure):
            self.errors += 1
            if ep.errors >= self.retries:
                ep.dropped = True
                self.dropped.append(eid)
                self.host.run([(ep.key, "close", ())])
                warnings.warn(
                    f"env {call[0]} failed for game {ep.game} (seed {ep.seed}, after {len(ep.actions)} actions): "
                    f"{result.kind}: {result.detail.splitlines()[0] if result.detail else ''}; "
                    f"episode dropped after {ep.errors} recoveries",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
            ep.errors += 1
            result = self._recover(ep)
            if not isinstance(result, Failure):
                op, args = call
                result = self.host.run([(ep.key, op, args)])[0] if op == "step" else result
        return result

    def _recover(self, ep: _Episode) -> Any:
        """A fresh env for ``ep``: reset with its game and seed, its actions replayed; the reset's
        ``(obs, info)``, or a :class:`Failure` (a failing call, or a replay that does not reproduce the
        recorded observation)."""
        self.host.run([(ep.key, "close", ())])
        ep.key = next(self._keys)
        opened = self.host.run([(ep.key, "open", (ep.game, ep.seed, self.max_steps))])[0]
        if isinstance(opened, Failure) or not ep.actions:
            return opened
        obs = opened[0]
        for action in ep.actions:
            result = self.host.run([(ep.key, "step", (action,))])[0]
            if isinstance(result, Failure):
                return result
            obs = result[0]
        if obs != ep.observation:
            return Failure("error", "replaying the episode's actions did not reproduce its observation")
        return opened

    def close(self) -> None:
        """Close every env of this rollout (best effort)."""
        self.host.run([(ep.key, "close", ()) for ep in self.episodes.values() if not ep.dropped])


if __name__ == "__main__":  # pragma: no cover - the worker process of ProcessHost
    _worker_main(
        multiprocessing.connection.Connection(int(sys.argv[1]), writable=False),
        multiprocessing.connection.Connection(int(sys.argv[2]), readable=False),
    )
