"""REINFORCE leave-one-out (RLOO) advantages over step samples. Pure torch.

Kool, van Hoof, Welling (2019), "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et al. (2024),
"Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs".

Every environment step is one sample (docs/reference.md §1.3) with the step score of GRPO,
``s_i = R(traj(i)) - invalid_penalty * [step i invalid]`` (§1.4, :func:`serl.algo.advantages.step_scores`).
A trajectory's value is its mean step score, ``v_j = mean_{i in j} s_i``. The baseline of a step of
trajectory ``tau`` in a group of ``K`` trajectories is the mean value of the **other** ``K - 1`` trajectories
of the group, so a trajectory never baselines itself:

    A_i = s_i - (sum_{j != tau} v_j) / (K - 1)        (K >= 2)
    A_i = s_i                                         (K = 1: no other trajectory, baseline 0)

No std normalisation (RLOO is an unbiased baseline, not a whitening). A trajectory counts once in its
group's baseline regardless of its length, like GRPO's ``level=trajectory`` (docs/design.md §4).

Worked example (tests/unit/test_rloo.py): one group of 3 trajectories with outcome rewards 10, 0, 0 and
lengths 1, 2, 1, the second step of the second one invalid: scores [10], [0, -0.1], [0]; values 10, -0.05,
0; advantages [10.025], [-5, -5.1], [-4.975].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from serl.algo.advantages import _check_1d, _check_ids, _float_dtype, check_invalid_penalty, step_scores
from serl.types import StepColumns

__all__ = ["rloo_advantages", "RLOO"]


def rloo_advantages(scores: Tensor, group_ids: Tensor, traj_ids: Tensor) -> Tensor:
    """Leave-one-out advantage of every step sample (module docstring).

    Args:
        scores: ``[N]`` per-step scores (:func:`serl.algo.advantages.step_scores`).
        group_ids: ``[N]`` long group labels (any integers).
        traj_ids: ``[N]`` long trajectory labels, unique within a group (a trajectory is ``(group, traj)``).

    Returns:
        ``[N]`` advantages ``s_i - mean_{j != traj(i)} v_j`` (``s_i`` for a group of one trajectory), accumulated
        in float64 and cast to the dtype of ``scores`` (if floating, else the default float dtype).
    """
    _check_1d("scores", scores)
    n = scores.shape[0]
    _check_ids("group_ids", group_ids, n)
    _check_ids("traj_ids", traj_ids, n)
    out_dtype = _float_dtype(scores)
    if n == 0:
        return scores.to(out_dtype).clone()
    _, group = torch.unique(group_ids.cpu(), return_inverse=True)
    pairs = torch.stack([group, traj_ids.cpu().to(torch.long)], dim=1)
    uniq_pairs, traj = torch.unique(pairs, dim=0, return_inverse=True)  # one row per trajectory
    n_traj = uniq_pairs.shape[0]
    s64 = scores.detach().cpu().to(torch.float64)
    steps_per_traj = torch.zeros(n_traj, dtype=torch.float64).index_add_(0, traj, torch.ones_like(s64))
    values = torch.zeros(n_traj, dtype=torch.float64).index_add_(0, traj, s64) / steps_per_traj  # v_j
    traj_group = uniq_pairs[:, 0]
    n_groups = int(traj_group.max().item()) + 1
    k = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, traj_group, torch.ones_like(values))  # K_g
    total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, traj_group, values)  # sum_j v_j
    k_of_row, others = k[group], total[group] - values[traj]  # sum_{j != tau} v_j
    single = k_of_row <= 1
    # K = 1: no other trajectory, baseline 0 (the 0/0 is guarded, not used)
    baseline = torch.where(single, torch.zeros_like(others), others / torch.where(single, torch.ones_like(k_of_row), k_of_row - 1))
    return (s64 - baseline).to(device=scores.device, dtype=out_dtype)


@dataclass(frozen=True)
class RLOO:
    """RLOO's advantage (Kool et al. 2019; Ahmadian et al. 2024): the step score minus the mean value of the
    group's other trajectories (:func:`rloo_advantages`; a trajectory's value is its mean step score).
    Called on a step batch's :class:`~serl.types.StepColumns`, returns ``[N]`` advantages, one per step sample."""

    invalid_penalty: float = 0.1

    def __post_init__(self) -> None:
        check_invalid_penalty(self.invalid_penalty)

    def __call__(self, cols: StepColumns) -> Tensor:
        scores = step_scores(cols.episode_rewards, cols.valid, invalid_penalty=self.invalid_penalty)  # §1.4
        return rloo_advantages(scores, cols.group_ids, cols.traj_ids)
