"""DAPO (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"). Pure torch.

Two parts of ``algorithm=dapo``:

* :class:`DAPO` — the policy loss: PPO-clip with decoupled ranges ("clip-higher": ``1 − 0.2 .. 1 + 0.28``),
  token-level aggregation (every token of the batch weighs the same: serl's token mean, :func:`ppo_clip_loss`)
  and **overlong filtering**: a response cut by ``max_new_tokens`` (``truncated``) leaves the loss entirely,
  so a truncated sample is neither rewarded nor punished for being cut. No KL term (as serl's PPO loss).
  The dual clip of negative advantages stays (``clip_c``, veRL keeps it in its DAPO recipe).
* :class:`DynamicSampling` — the sampling part: drop every group whose outcome rewards are all equal (they
  carry no GRPO signal, docs/reference.md §1.8) and let the trainer play more games, in rounds of
  ``n_tasks``, until ``n_tasks`` groups with differing outcomes are collected or ``max_rounds`` are spent.

Deviations from the DAPO paper: its soft overlong punishment (a length-dependent reward) is not applied
(overlong *filtering* is); the resampling stops after ``max_rounds`` rounds (veRL's ``max_num_gen_batches``)
and, when no group passed, the step trains on the first round's groups (all-equal groups have zero advantage
under GRPO, so that update only moves the entropy bonus, 0 in this preset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from serl.algo.loss import PPOClip, masked_mean, ppo_clip_loss
from serl.algo.sampling import check_max_rounds
from serl.types import LossInputs, StepColumns

__all__ = ["DAPO", "DynamicSampling"]


@dataclass(frozen=True)
class DAPO(PPOClip):
    """DAPO's loss (module docstring): :class:`~serl.algo.loss.PPOClip`'s knobs with DAPO's defaults, plus
    ``overlong_filter`` (truncated rows are masked out of the loss and its token mean)."""

    clip_low: float = 0.2  # ε_low
    clip_high: float = 0.28  # ε_high, "clip-higher"
    clip_c: float = 3.0  # dual-clip bound for negative advantages
    entropy_coef: float = 0.0  # DAPO trains without an entropy bonus
    overlong_filter: bool = True  # drop truncated responses from the loss

    def __call__(self, x: LossInputs) -> tuple[Tensor, dict[str, float]]:
        mask = x.response_mask
        dropped = 0.0
        if self.overlong_filter and x.truncated is not None:
            keep = (~x.truncated.bool()).to(mask.dtype)[:, None]  # [N, 1]
            dropped = float(masked_mean(1.0 - keep.expand_as(mask), mask.bool()))  # share of tokens filtered
            mask = mask * keep
        loss, stats = ppo_clip_loss(
            x.logprobs, x.old_logprobs, x.advantages, mask, clip_low=self.clip_low, clip_high=self.clip_high,
            clip_c=self.clip_c, entropy=x.entropy, entropy_coef=self.entropy_coef,
        )
        stats["overlong_filtered"] = dropped
        return loss, stats


@dataclass(frozen=True)
class DynamicSampling:
    """Keep the groups whose trajectories' outcome rewards differ (DAPO's dynamic sampling,
    conf/algorithm/sampling/dynamic.yaml); the trainer plays up to ``max_rounds`` rounds of games per step."""

    max_rounds: int = 3  # rounds of n_tasks games per training step (the first included)

    def __post_init__(self) -> None:
        check_max_rounds(self.max_rounds)

    def __call__(self, cols: StepColumns) -> Tensor:
        """``[N]`` bool: the rows of groups with at least two different ``episode_rewards``."""
        if len(cols) == 0:
            return torch.zeros(0, dtype=torch.bool)
        _, group = torch.unique(cols.group_ids, return_inverse=True)
        r = cols.episode_rewards.to(torch.float64)
        n = int(group.max()) + 1
        high = torch.full((n,), -torch.inf, dtype=torch.float64).scatter_reduce(0, group, r, "amax")
        low = torch.full((n,), torch.inf, dtype=torch.float64).scatter_reduce(0, group, r, "amin")
        return (high > low)[group]
