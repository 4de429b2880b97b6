"""The multi-turn rollout loop over a generation backend (docs/reference.md §1.3, docs/design.md §1 step 1).

:class:`RolloutWorker` plays ``len(games) × group_size`` episodes; the ``group_size`` episodes of game i
form GRPO group ``first_group + i`` (§1.2; ``first_group`` is 0 unless the games are a shard). At every
turn, for every still-active episode, the student prompt is rebuilt fresh by the env suite's template
(task, last H (observation, action) pairs, step index, current observation, admissible actions; §1.3,
§8.1), chat-templated as ONE user message with the generation prompt, and all active episodes are
generated in one batched call. The decoded response is projected to an
env action (§8.3) and each env step becomes one :class:`serl.types.Step` — the GRPO training sample.

Seeding is per episode, never per batch: game i of a call is global GRPO group ``g = first_group + i``; its
episode j (global episode ``e = g · group_size + j``) resets its env with ``seed + e`` and samples turn t
with :func:`episode_seed` ``(seed, e, t)``, and every :class:`Generator` makes a prompt's sample depend only
on its prompt, its seed and the weights. So playing the games in shards (``first_group`` = the shard's
first game, e.g. one shard per data-parallel rank) gives the trajectories of one call over all the games.

Differences from the reference, on purpose: finished envs are not stepped again (the reference keeps
stepping them and drops the records via ``active_masks``); prompts longer than ``max_prompt_tokens`` are
refused with an error instead of being truncated.

Backends implement :class:`Generator`: :class:`serl.rollout.hf.HFGenerator` (HF ``generate``) and the
vLLM backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from serl.envs.base import EnvSuite
from serl.envs.hosting import EpisodeEnvs, InlineHost, ProcessHost
from serl.policy.models import chat_prompt_ids
from serl.types import Step, Trajectory


@dataclass
class Generation:
    """One sampled response: token ids (ending with eos if the model stopped), their behaviour
    log-probs (same length), the decoded text (special tokens skipped) and ``"stop"`` / ``"length"``."""

    ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str


def check_generate_args(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, top_p: float, seeds: Sequence[int | None] | None = None
) -> None:
    """The argument checks every :class:`Generator` backend makes before sampling."""
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(
            f"generate got {len(seeds)} seeds for {len(prompts)} prompts: pass one seed per prompt (or seeds=None)"
        )
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate got an empty prompt")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


class Generator(Protocol):
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int | None] | None,
    ) -> list[Generation]:
        """One response per prompt (prompt ids unpadded), in order, prompt i sampled with ``seeds[i]``.

        ``seeds``: one seed per prompt (``len(seeds) == len(prompts)``); ``None`` (the list or an entry):
        unseeded. Contract: a prompt's sample depends only on its prompt ids, its seed and the weights (and
        ``max_new_tokens``, ``temperature``, ``top_p``), never on the other prompts of the call — their
        number, order, lengths or seeds — up to the float rounding of a padded batch's forward pass. The
        same prompt twice with the same seed gives the same sample; distinct seeds give independent ones.
        ``temperature <= 0`` is greedy (seeds unused).
        """
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the backend sample from ``model``'s current weights (after a learner update)."""
        ...


def render_student_prompt(
    suite: EnvSuite, task: str, history: Sequence[tuple[str, str]], step_id: int, observation: str, admissible
) -> str:
    """The student's user message at ``step_id``: the suite's template over the last ``history_length``
    (observation, action) pairs (docs/reference.md §1.3). Rollouts and expert demonstrations both use this."""
    H = int(suite.history_length)
    recent = list(history[-H:]) if H > 0 else []
    return suite.render_prompt(task, recent, step_id, observation, list(admissible))


@dataclass
class Rollout:
    """What :meth:`RolloutWorker.collect` returns: the kept trajectories, ordered by (group_id, traj_id), and
    the call's stats: ``tokens_generated`` (response tokens sampled), ``generate_s`` (seconds in the backend),
    ``env_s`` (seconds waiting for env resets and steps), ``env_errors`` (env calls that raised, timed out or
    lost their env), ``dropped_episodes`` (episodes left out: failed ones and the rest of their dropped
    groups) and ``dropped_groups``."""

    trajectories: list[Trajectory]
    stats: dict[str, float]


@dataclass
class _Episode:
    """Mutable state of one running episode."""

    traj: Trajectory
    history: list[tuple[str, str]]
    observation: str
    admissible: tuple[str, ...]
    prompt: str
    prompt_ids: list[int]
    state: str  # the env's state description (Step.state)
    active: bool = True


def env_state(info: dict, observation: str, previous: str | None) -> str:
    """The state an env reports with an observation (serl/envs/base.py): ``info["state"]`` when it describes
    one; otherwise the observation itself — or the ``previous`` state after a no-op (``info["noop"]``) or a blank
    observation, since neither says anything about where the agent is."""
    if "state" in info:
        return str(info["state"])
    if previous is not None and (bool(info.get("noop", False)) or not str(observation).strip()):
        return previous
    return str(observation)


class RolloutWorker:
    """Collect GRPO groups of multi-turn trajectories with a :class:`Generator`.

    Environments run in ``env_processes`` worker processes (0: in this process), with ``env_retries``
    recoveries per episode and, in worker processes, ``env_timeout_s`` per env call
    (:mod:`serl.envs.hosting`). An episode that still fails is dropped with a warning naming its game; a
    GRPO group left with fewer than two episodes (one, when ``group_size`` is 1) is dropped whole.
    """

    def __init__(
        self,
        generator: Generator,
        tokenizer: Any,
        suite: EnvSuite,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_prompt_tokens: int = 2048,
        env_processes: int = 0,
        env_timeout_s: float = 60.0,
        env_retries: int = 1,
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if env_processes < 0:
            raise ValueError(f"env_processes must be >= 0 (0: envs in this process), got {env_processes}")
        self.generator = generator
        self.tokenizer = tokenizer
        self.suite = suite
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.env_retries = int(env_retries)
        self.host = (
            ProcessHost(suite, processes=int(env_processes), timeout_s=float(env_timeout_s))
            if env_processes > 0
            else InlineHost(suite)
        )

    def sync_weights(self, model: Any) -> None:
        """Make the backend sample from ``model``'s current weights (after a learner update)."""
        self.generator.sync_weights(model)

    def sleep(self) -> None:
        """Let the backend release its accelerator memory until the next :meth:`sync_weights` (a vLLM engine
        with ``rollout.sleep``; a no-op for backends without a sleep mode)."""
        sleep = getattr(self.generator, "sleep", None)
        if sleep is not None:
            sleep()

    def close(self) -> None:
        """Stop the env worker processes (if any)."""
        self.host.close()

    # -- prompts -----------------------------------------------------------------------------------
    def _render(self, task: str, history: Sequence[tuple[str, str]], step_id: int, obs: str, adm) -> str:
        return render_student_prompt(self.suite, task, history, step_id, obs, adm)

    def _encode(self, prompt: str) -> list[int]:
        ids = chat_prompt_ids(self.tokenizer, prompt)
        if len(ids) > self.max_prompt_tokens:
            raise ValueError(
                f"student prompt has {len(ids)} tokens, more than max_prompt_tokens={self.max_prompt_tokens}; "
                "raise max_prompt_tokens (or shorten the prompt, e.g. a smaller history_length)"
            )
        return ids

    # -- the loop ----------------------------------------------------------------------------------
    def collect(
        self,
        games: list[str],
        group_size: int,
        seed: int,
        progress: Callable[[int, int], None] | None = None,
        max_turns: int | None = None,
        temperature: float | None = None,
        first_group: int = 0,
    ) -> Rollout:
        """Play ``len(games) × group_size`` episodes; return the kept ones and the call's stats.

        ``games[i]`` is global group ``g = first_group + i`` (``Trajectory.group_id = g``); its episode j is
        global episode ``e = g * group_size + j``, with env seed ``seed + e`` and sampling seed
        :func:`episode_seed` ``(seed, e, turn)`` at each turn. Episodes therefore depend on ``(seed, g, j)``
        only, not on which other games share the call: ``collect(games[:k], ...)`` followed by
        ``collect(games[k:], ..., first_group=k)`` plays the episodes of ``collect(games, ...)`` (up to the
        float rounding of batched forward passes). ``progress(finished_episodes, total_episodes)`` is
        called after every turn. ``max_turns`` overrides the suite's episode cap (evaluation uses a longer one);
        ``temperature`` overrides the worker's sampling temperature for this call only (0 = greedy;
        evaluation samples at 0.4, docs/reference.md §8.4) — the worker itself is not changed.
        """
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if first_group < 0:
            raise ValueError(f"first_group must be >= 0, got {first_group}")
        first_group = int(first_group)
        cap = int(self.suite.max_turns if max_turns is None else max_turns)
        if cap < 1:
            raise ValueError(f"max_turns must be >= 1, got {cap}")
        temp = self.temperature if temperature is None else float(temperature)
        if temp < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temp}")
        stats = {"tokens_generated": 0, "generate_s": 0.0, "env_s": 0.0}
        envs = EpisodeEnvs(self.host, max_steps=cap, retries=self.env_retries)
        episodes: dict[tuple[int, int], _Episode] = {}
        try:
            # episode key (g, j): global group g = first_group + i of games[i], episode j of the group
            ids = [(first_group + i, j) for i in range(len(games)) for j in range(group_size)]
            t0 = time.perf_counter()
            opened = envs.reset([((g, j), games[g - first_group], seed + g * group_size + j) for g, j in ids])
            stats["env_s"] += time.perf_counter() - t0
            for (g, j), (obs, info) in opened.items():
                task = str(info["task"])
                admissible = tuple(info["admissible_commands"])
                prompt = self._render(task, [], 0, obs, admissible)
                traj = Trajectory(
                    group_id=g,
                    traj_id=j,
                    game=str(info.get("game", games[g - first_group])),
                    task_type=str(info.get("task_type", "")),
                    task=task,
                    won=bool(info.get("won", False)),
                )
                state = env_state(info, obs, None)
                episodes[(g, j)] = _Episode(traj, [], str(obs), admissible, prompt, self._encode(prompt), state)
            for turn in range(cap):
                active = {k: e for k, e in episodes.items() if e.active and k not in envs.dropped}
                if not active:
                    break
                t0 = time.perf_counter()
                gens = self.generator.generate(
                    [e.prompt_ids for e in active.values()],
                    max_new_tokens=self.max_new_tokens,
                    temperature=temp,
                    top_p=self.top_p,
                    seeds=[episode_seed(seed, g * group_size + j, turn) for g, j in active],
                )
                stats["generate_s"] += time.perf_counter() - t0
                if len(gens) != len(active):
                    raise RuntimeError(f"generator returned {len(gens)} generations for {len(active)} prompts")
                gens_by = dict(zip(active, gens))
                actions = {}
                for k, g in gens_by.items():
                    stats["tokens_generated"] += len(g.ids)
                    actions[k] = self.suite.response_format.project(g.text)
                t0 = time.perf_counter()
                results = envs.step({k: a for k, (a, _) in actions.items()})
                stats["env_s"] += time.perf_counter() - t0
                for k, result in results.items():
                    self._record(active[k], gens_by[k], actions[k], result, turn, cap)
                if progress is not None:
                    progress(sum(not e.active or k in envs.dropped for k, e in episodes.items()), len(ids))
        finally:
            envs.close()
        kept = [e.traj for k, e in sorted(episodes.items()) if k not in envs.dropped]  # (group_id, traj_id)
        kept = _complete_groups(kept, min_size=min(2, group_size))
        stats["env_errors"] = envs.errors
        stats["dropped_episodes"] = len(ids) - len(kept)
        # this call's groups are first_group .. first_group + len(games) - 1, whatever the offset
        stats["dropped_groups"] = len(games) - len({t.group_id for t in kept})
        return Rollout(kept, stats)

    def _record(
        self, e: _Episode, g: Generation, projected: tuple[str, bool], result: tuple, turn: int, cap: int
    ) -> None:
        """Append the step of generation ``g`` and its env ``result`` to episode ``e`` and advance it."""
        action, valid = projected
        obs, reward, terminated, truncated, info = result
        done = bool(terminated or truncated)
        history = e.history + [(e.observation, action)]
        next_admissible = tuple(info["admissible_commands"])
        next_prompt = self._render(e.traj.task, history, turn + 1, obs, next_admissible)
        next_state = env_state(info, obs, e.state)
        e.traj.steps.append(
            Step(
                step_id=turn,
                observation=e.observation,
                prompt=e.prompt,
                admissible=e.admissible,
                prompt_ids=list(e.prompt_ids),
                response_ids=list(g.ids),
                response_logprobs=[float(x) for x in g.logprobs],
                response_text=g.text,
                action=action,
                valid=bool(valid),
                feedback=obs,
                next_prompt=next_prompt,
                reward=float(reward),
                done=done,
                state=e.state,
                next_state=next_state,
                noop=bool(info.get("noop", False)),
                truncated=g.finish_reason == "length",
            )
        )
        e.traj.won = bool(info.get("won", False))
        e.traj.score = float(info.get("score", 1.0 if e.traj.won else 0.0))
        e.history, e.observation, e.admissible, e.prompt = history, obs, next_admissible, next_prompt
        e.state = next_state
        if done or turn + 1 >= cap:
            e.active = False
        else:
            e.prompt_ids = self._encode(next_prompt)


def _complete_groups(trajectories: list[Trajectory], min_size: int) -> list[Trajectory]:
    """``trajectories`` without the groups that kept fewer than ``min_size`` episodes (a GRPO group needs two
    rollouts to compare). Groups are told apart by their (global) ``group_id``, so any ``first_group``
    offset works; the order is kept."""
    sizes: dict[int, int] = {}
    for t in trajectories:
        sizes[t.group_id] = sizes.get(t.group_id, 0) + 1
    return [t for t in trajectories if sizes[t.group_id] >= min_size]


_MASK64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """SplitMix64: a bijection of 64-bit integers whose outputs look independent for nearby inputs."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def episode_seed(seed: int, episode: int, turn: int) -> int:
    """Sampling seed of global episode ``episode`` at ``turn`` of a rollout seeded ``seed`` (see
    :meth:`RolloutWorker.collect`): a SplitMix64 hash of the three, in ``0 .. 2^63 - 1``. Nearby arguments
    give unrelated seeds, so no two (episode, turn) pairs of a run share a random stream by construction
    (only by a ~2^-63 chance)."""
    h = _mix64(int(seed) & _MASK64)
    h = _mix64(h ^ (int(episode) & _MASK64))
    h = _mix64(h ^ (int(turn) & _MASK64))
    return h >> 1
