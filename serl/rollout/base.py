"""The multi-turn rollout loop over a generation backend (SERL_REFERENCE §1.3, DESIGN.md §1 step 1).

:class:`RolloutWorker` plays ``len(games) × group_size`` episodes; the ``group_size`` episodes of game i
form GRPO group i (§1.2). At every turn, for every still-active episode, the student prompt is rebuilt
fresh by the env suite's template (task, last H (observation, action) pairs, step index, current
observation, admissible actions; §1.3, §8.1), chat-templated as ONE user message with the generation
prompt, and all active episodes are generated in one batched call. The decoded response is projected to an
env action (§8.3) and each env step becomes one :class:`serl.types.Step` — the GRPO training sample.

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


def check_generate_args(prompts: Sequence[Sequence[int]], max_new_tokens: int, top_p: float) -> None:
    """The argument checks every :class:`Generator` backend makes before sampling."""
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
        seed: int | None,
    ) -> list[Generation]:
        """One response per prompt (prompt ids unpadded), in order."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the backend sample from ``model``'s current weights (after a learner update)."""
        ...


def render_student_prompt(
    suite: EnvSuite, task: str, history: Sequence[tuple[str, str]], step_id: int, observation: str, admissible
) -> str:
    """The student's user message at ``step_id``: the suite's template over the last ``history_length``
    (observation, action) pairs (SERL_REFERENCE §1.3). Rollouts and expert demonstrations both use this."""
    H = int(suite.history_length)
    recent = list(history[-H:]) if H > 0 else []
    return suite.render_prompt(task, recent, step_id, observation, list(admissible))


@dataclass
class _Episode:
    """Mutable state of one running episode."""

    env: Any
    traj: Trajectory
    history: list[tuple[str, str]]
    observation: str
    admissible: tuple[str, ...]
    prompt: str
    prompt_ids: list[int]
    active: bool = True


class RolloutWorker:
    """Collect GRPO groups of multi-turn trajectories with a :class:`Generator`.

    After each :meth:`collect`, ``last_stats`` holds ``tokens_generated`` (response tokens sampled),
    ``generate_s`` (seconds in the backend) and ``env_s`` (seconds in env reset/step).
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
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.generator = generator
        self.tokenizer = tokenizer
        self.suite = suite
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.last_stats: dict[str, float] = {"tokens_generated": 0, "generate_s": 0.0, "env_s": 0.0}

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
    ) -> list[Trajectory]:
        """Play ``len(games) × group_size`` episodes; return them ordered by (group_id, traj_id).

        Episode ``(i, j)`` plays ``games[i]`` with env seed ``seed + i * group_size + j``; the generator
        is seeded per turn from ``seed``. ``progress(finished_episodes, total_episodes)`` is called after
        every turn. ``max_turns`` overrides the suite's episode cap (evaluation uses a longer one);
        ``temperature`` overrides the worker's sampling temperature for this call only (0 = greedy;
        evaluation samples at 0.4, SERL_REFERENCE §8.4) — the worker itself is not changed.
        """
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        cap = int(self.suite.max_turns if max_turns is None else max_turns)
        if cap < 1:
            raise ValueError(f"max_turns must be >= 1, got {cap}")
        temp = self.temperature if temperature is None else float(temperature)
        if temp < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temp}")
        stats = {"tokens_generated": 0, "generate_s": 0.0, "env_s": 0.0}
        episodes: list[_Episode] = []
        try:
            for i, game in enumerate(games):
                for j in range(group_size):
                    env = self.suite.make_env(max_episode_steps=cap)
                    t0 = time.perf_counter()
                    obs, info = env.reset(seed=seed + i * group_size + j, options={"game": game})
                    stats["env_s"] += time.perf_counter() - t0
                    task = str(info["task"])
                    admissible = tuple(info["admissible_commands"])
                    prompt = self._render(task, [], 0, obs, admissible)
                    traj = Trajectory(
                        group_id=i,
                        traj_id=j,
                        game=str(info.get("game", game)),
                        task_type=str(info.get("task_type", "")),
                        task=task,
                        won=bool(info.get("won", False)),
                    )
                    episodes.append(
                        _Episode(env, traj, [], str(obs), admissible, prompt, self._encode(prompt))
                    )
            total = len(episodes)
            for turn in range(cap):
                active = [e for e in episodes if e.active]
                if not active:
                    break
                t0 = time.perf_counter()
                gens = self.generator.generate(
                    [e.prompt_ids for e in active],
                    max_new_tokens=self.max_new_tokens,
                    temperature=temp,
                    top_p=self.top_p,
                    seed=_turn_seed(seed, turn),
                )
                stats["generate_s"] += time.perf_counter() - t0
                if len(gens) != len(active):
                    raise RuntimeError(f"generator returned {len(gens)} generations for {len(active)} prompts")
                for e, g in zip(active, gens):
                    stats["tokens_generated"] += len(g.ids)
                    self._step(e, g, turn, stats, cap)
                if progress is not None:
                    progress(sum(not e.active for e in episodes), total)
        finally:
            for e in episodes:
                try:
                    e.env.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
        self.last_stats = stats
        return [e.traj for e in episodes]

    def _step(self, e: _Episode, g: Generation, turn: int, stats: dict, cap: int) -> None:
        action, valid = self.suite.project_action(g.text)
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, info = e.env.step(action)
        stats["env_s"] += time.perf_counter() - t0
        obs = str(obs)
        done = bool(terminated or truncated)
        history = e.history + [(e.observation, action)]
        next_admissible = tuple(info["admissible_commands"])
        next_prompt = self._render(e.traj.task, history, turn + 1, obs, next_admissible)
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
            )
        )
        e.traj.won = bool(info.get("won", False))
        e.history, e.observation, e.admissible, e.prompt = history, obs, next_admissible, next_prompt
        if done or turn + 1 >= cap:
            e.active = False
        else:
            e.prompt_ids = self._encode(next_prompt)


def _turn_seed(seed: int, turn: int) -> int:
    """Generator seed of one turn: distinct per (seed, turn), within torch's 64-bit seed range."""
    return (int(seed) * 100_003 + turn) % (2**63)
