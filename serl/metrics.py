"""The training metrics: pure functions from a step's records to ``{name: float}`` (every name is listed in
docs/metrics.md), and the run summary over the logged history.

They hold no state and touch no model, so the training loop (:mod:`serl.trainer`) only calls them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from serl.types import Step, TeacherContext, Trajectory


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for an empty sequence."""
    return float(sum(xs) / len(xs)) if xs else 0.0


def groups_of(trajectories: Sequence[Trajectory]) -> list[list[Trajectory]]:
    """The GRPO groups of a step (by group id, ascending), each ordered by trajectory index."""
    by_group: dict[int, list[Trajectory]] = {}
    for t in trajectories:
        by_group.setdefault(t.group_id, []).append(t)
    return [sorted(g, key=lambda t: t.traj_id) for _, g in sorted(by_group.items())]


def mixed_group_fraction(groups: Sequence[Sequence[Trajectory]]) -> float:
    """Fraction of GRPO groups with mixed outcomes (some won, some lost): the only groups whose episode
    reward differs, i.e. that carry a win/loss signal for the advantage (paper §3.1, GRPO)."""
    return mean([float(0 < sum(t.won for t in g) < len(g)) for g in groups])


def episode_metrics(
    trajectories: Sequence[Trajectory], steps: Sequence[Step], success: dict[str, float]
) -> dict[str, float]:
    """``episode/*``: the suite's success metrics (``success``), rewards, lengths, valid actions, mixed groups."""
    rewards = [t.episode_reward for t in trajectories]
    lengths = [t.length for t in trajectories]
    m = {f"episode/{k}": float(v) for k, v in success.items()}
    m.update(
        {
            "episode/reward/mean": mean(rewards),
            "episode/reward/max": max(rewards),
            "episode/reward/min": min(rewards),
            "episode/length/mean": mean(lengths),
            "episode/length/max": float(max(lengths)),
            "episode/length/min": float(min(lengths)),
            "episode/valid_action_ratio": mean([float(s.valid) for s in steps]),
            "episode/mixed_group_fraction": mixed_group_fraction(groups_of(trajectories)),
            "episode/step_samples": float(len(steps)),
        }
    )
    return m


def serl_metrics(contexts: Sequence[TeacherContext], has: torch.Tensor, masks: Sequence[Sequence[bool]]) -> dict[str, float]:
    """``serl/*`` driver-side metrics of a teacher pass; ``has [N]`` marks the rows the teacher scored (a
    context and a non-zero advantage), ``masks`` the action tokens of every row."""
    n = len(masks)
    m = {
        "serl/context_available_fraction": mean([float(c.has_context) for c in contexts]),
        "serl/teacher_scored_fraction": float(has.float().mean()) if n else 0.0,
    }
    for src in sorted({src for c in contexts for src in c.sources}):
        m[f"serl/{src}_reference_fraction"] = mean([float(src in c.sources) for c in contexts])
    rows = [i for i in range(n) if bool(has[i])]
    tok = sum(len(masks[i]) for i in rows)
    m["serl/action_token_fraction"] = sum(sum(masks[i]) for i in rows) / tok if tok else 0.0
    m["serl/action_parse_failure_fraction"] = mean([float(not any(masks[i])) for i in rows])
    sizes = [c.anchor_size for c in contexts if c.anchor_size is not None]
    if sizes:
        m["serl/anchor_group_size_mean"] = mean(sizes)
        m["serl/anchor_action_count_mean"] = mean([c.anchor_actions for c in contexts if c.anchor_actions is not None])
    return m


def advantage_metrics(advantages: torch.Tensor) -> dict[str, float]:
    """``advantage/{mean,max,min}`` over the step samples ``[N]``."""
    return {
        "advantage/mean": float(advantages.mean()),
        "advantage/max": float(advantages.max()),
        "advantage/min": float(advantages.min()),
    }


def rollout_metrics(stats: dict[str, float], steps: Sequence[Step]) -> dict[str, float]:
    """``rollout/*`` and ``time/env_s`` from a rollout's stats (:class:`serl.rollout.base.Rollout`)."""
    tokens = float(stats.get("tokens_generated", sum(len(s.response_ids) for s in steps)))
    gen_s = float(stats.get("generate_s", 0.0))
    return {
        "rollout/tokens": tokens,
        "rollout/tokens_per_s": tokens / gen_s if gen_s > 0 else 0.0,
        "rollout/env_errors": float(stats.get("env_errors", 0)),
        "rollout/dropped_episodes": float(stats.get("dropped_episodes", 0)),
        "rollout/dropped_groups": float(stats.get("dropped_groups", 0)),
        "time/env_s": float(stats.get("env_s", 0.0)),
        # rounds of games played this step and the groups kept (algorithm.sampling; 1 and n_tasks without a filter)
        **{k: float(v) for k, v in stats.items() if k.startswith("sampling/")},
    }


def check_finite(metrics: dict[str, Any], step: int) -> None:
    """Raise ``FloatingPointError`` naming the first non-finite float metric (nothing is logged or saved
    after a step that produced one)."""
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise FloatingPointError(f"metric {k} is {v} at training step {step}")


TOTALS = ("time/rollout_s", "time/teacher_s", "time/update_s", "time/step_s", "time/eval_s")


def summarize(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """Run-level aggregates of the logged steps: ``last/<k>`` for every metric, ``mean/<k>`` of the episode
    success rates and mixed-group fraction, ``min/<k>`` / ``max/<k>`` of every ``*_min`` / ``*_max`` metric
    (e.g. the teacher's weight range), ``total/<k>`` of the times in :data:`TOTALS`."""
    out: dict[str, float] = {}
    if not history:
        return out
    last = history[-1]
    for key in sorted({k for h in history for k in h}):
        vals = [h[key] for h in history if key in h]
        out[f"last/{key}"] = last.get(key, vals[-1])
        if key.startswith("episode/") and ("success_rate" in key or "mixed_group" in key):
            out[f"mean/{key}"] = mean(vals)
        if key.endswith(("_min", "/min")):
            out[f"min/{key}"] = min(vals)
        elif key.endswith(("_max", "/max")):
            out[f"max/{key}"] = max(vals)
    for key in TOTALS:
        out[f"total/{key}"] = sum(h.get(key, 0.0) for h in history)
    return out
