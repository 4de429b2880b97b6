"""Group-in-Group Policy Optimization (GiGPO) advantages over step samples. Pure torch.

Feng, Xue, Liu, An (2025), "Group-in-Group Policy Optimization for LLM Agent Training". Two nested levels of
relative advantage, summed: ``A_i = A^E_i + step_weight * A^S_i``.

* **Episode level** ``A^E`` (the paper's macro advantage): one value per trajectory, its outcome reward
  ``R(tau)`` (``StepColumns.episode_rewards``), normalised within its group over the group's trajectories
  (mean and unbiased std; a group with one trajectory gets ``mean=0, std=1``, the rule of
  :func:`serl.algo.advantages._group_normalise`). ``norm="mean_std"``: ``(R - mean) / (std + eps)``;
  ``norm="mean"``: ``R - mean``. Every step of ``tau`` gets the ``A^E`` of ``tau``.
* **Step level** ``A^S`` (the paper's micro advantage): each step's discounted return within its trajectory,
  ``G_t = sum_{k>=0} gamma^k r'_{t+k}`` with ``r'_t = step_reward_t - invalid_penalty * [step t invalid]``
  (:func:`discounted_returns`), normalised within its **anchor-state group**: the steps of one group taken
  from the same env state (``StepColumns.anchor_ids``, across and within trajectories). ``mean_std``:
  ``(G - mean) / (std + eps)``; ``mean``: ``G - mean``. A state met by a single step has nothing to be
  compared with: ``A^S = 0``.

The GiGPO authors normalise by the std (``mean_std``) on ALFWorld and only centre (``mean``) on WebShop.

Worked example (tests/unit/test_gigpo.py): one group, trajectory 0 wins (states a then b, step rewards 0
then 10), trajectory 1 loses (states a then c, rewards 0, 0), ``gamma=0.95``. ``A^E = +-10/sqrt(200) =
+-0.70711``; at anchor a the returns are 9.5 and 0, so ``A^S = +-0.70711``; b and c are singletons (0).
Totals ``[1.41421, 0.70711, -1.41421, -0.70711]``; with ``norm="mean"``: ``[9.75, 5, -9.75, -5]``.

Notes
-----
* Statistics are accumulated in float64 and the result cast to the floating dtype of ``episode_rewards``
  (as in :mod:`serl.algo.advantages`).
* A trajectory's rows are ordered by ``step_ids`` (whatever their order in the batch); ``G_t`` discounts by
  the rank of a row within its trajectory, so a gap in ``step_ids`` (a dropped step) does not add discount.
  Two rows of one trajectory with the same ``step_id`` are refused (the order would be ambiguous).
* Anchor groups are the pairs ``(group_id, anchor_id)``; :class:`~serl.types.StepColumns` already makes
  anchor ids of different groups differ, so this only guards against a caller who does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from serl.algo.advantages import (
    _check_1d, _check_eps, _check_ids, _check_nonneg, _check_unit, _float_dtype, _group_normalise, check_invalid_penalty, step_scores,
)
from serl.types import StepColumns

__all__ = ["discounted_returns", "GiGPO", "NORMS"]

#: GiGPO's normalisations of both levels: centre and divide by the std, or only centre.
NORMS = ("mean_std", "mean")


def _trajectories(group_ids: Tensor, traj_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(group [N], traj [N], traj_group [M])``: contiguous group index of each row, trajectory index of each
    row (a trajectory is the pair ``(group, traj_id)``) and group index of each of the ``M`` trajectories."""
    _, group = torch.unique(group_ids.cpu(), return_inverse=True)
    pairs = torch.stack([group, traj_ids.cpu().to(torch.long)], dim=1)
    uniq_pairs, traj = torch.unique(pairs, dim=0, return_inverse=True)
    return group, traj, uniq_pairs[:, 0]


def _returns64(rewards: Tensor, traj: Tensor, step_ids: Tensor, gamma: float) -> Tensor:
    """``[N]`` float64 discounted returns of ``rewards`` (float64 ``[N]``) within the trajectories ``traj``
    (``[N]`` long in ``[0, M)``), rows ordered by ``step_ids`` within a trajectory."""
    n = rewards.shape[0]
    step_ids = step_ids.cpu().to(torch.long)
    order = torch.argsort(step_ids, stable=True)
    order = order[torch.argsort(traj[order], stable=True)]  # by trajectory, then step id
    sorted_traj, sorted_step = traj[order], step_ids[order]
    dup = (sorted_traj[1:] == sorted_traj[:-1]) & (sorted_step[1:] == sorted_step[:-1])
    if bool(dup.any()):
        i = int(torch.nonzero(dup)[0, 0])
        raise ValueError(f"step_ids must be unique within a trajectory: two rows of one trajectory have step_id {int(sorted_step[i])}")
    n_traj = int(traj.max().item()) + 1
    counts = torch.bincount(traj, minlength=n_traj)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty(n, dtype=torch.long)
    pos[order] = torch.arange(n) - starts[sorted_traj]  # rank of each row within its trajectory
    t_max = int(counts.max().item())
    dense = torch.zeros(n_traj, t_max, dtype=torch.float64)
    dense[traj, pos] = rewards  # [M, T], zero-padded after each trajectory's last step
    lag = torch.arange(t_max).unsqueeze(0) - torch.arange(t_max).unsqueeze(1)  # [t, k] = k - t
    powers = torch.tensor(float(gamma), dtype=torch.float64).pow(lag.clamp(min=0).to(torch.float64))  # 0^0 = 1
    discount = torch.where(lag >= 0, powers, torch.zeros_like(powers))  # [t, k] = gamma^(k-t) for k >= t
    returns = dense @ discount.T  # G[:, t] = sum_{k >= t} gamma^(k-t) r'[:, k]
    return returns[traj, pos]


def discounted_returns(rewards: Tensor, group_ids: Tensor, traj_ids: Tensor, step_ids: Tensor, gamma: float) -> Tensor:
    """Discounted return of every step within its trajectory, ``G_t = sum_{k>=0} gamma^k r_{t+k}``.

    Args:
        rewards: ``[N]`` per-step rewards (GiGPO: the env reward minus the invalid penalty).
        group_ids: ``[N]`` long group labels.
        traj_ids: ``[N]`` long trajectory labels, unique within a group (a trajectory is ``(group, traj)``).
        step_ids: ``[N]`` long turn index; orders the rows of a trajectory (unique within it).
        gamma: discount in ``[0, 1]``.

    Returns:
        ``[N]`` returns, accumulated in float64, dtype of ``rewards`` (if floating, else the default float).
    """
    _check_1d("rewards", rewards)
    n = rewards.shape[0]
    _check_ids("group_ids", group_ids, n)
    _check_ids("traj_ids", traj_ids, n)
    _check_ids("step_ids", step_ids, n)
    _check_unit("gamma", gamma)
    out_dtype = _float_dtype(rewards)
    if n == 0:
        return rewards.to(out_dtype).clone()
    _, traj, _ = _trajectories(group_ids, traj_ids)
    g = _returns64(rewards.detach().cpu().to(torch.float64), traj, step_ids, gamma)
    return g.to(device=rewards.device, dtype=out_dtype)


@dataclass(frozen=True)
class GiGPO:
    """GiGPO's advantage (Feng et al. 2025; module docstring): ``A_i = A^E_i + step_weight * A^S_i``, the
    episode-level relative advantage of the step's trajectory plus the step-level relative advantage of its
    discounted return among the steps taken from the same state. Called on a step batch's
    :class:`~serl.types.StepColumns`, returns ``[N]`` advantages, one per step sample."""

    gamma: float = 0.95
    step_weight: float = 1.0
    norm: Literal["mean_std", "mean"] = "mean_std"
    invalid_penalty: float = 0.1
    eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_unit("gamma", self.gamma)
        _check_nonneg("step_weight", self.step_weight)
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not one of {', '.join(NORMS)}")
        check_invalid_penalty(self.invalid_penalty)
        _check_eps(self.eps)

    def __call__(self, cols: StepColumns) -> Tensor:
        _check_1d("episode_rewards", cols.episode_rewards)
        n = cols.episode_rewards.shape[0]
        _check_1d("step_rewards", cols.step_rewards, n)
        for name in ("group_ids", "traj_ids", "step_ids", "anchor_ids"):
            _check_ids(name, getattr(cols, name), n)
        # r'_t = step_reward_t − penalty·[invalid_t]: the §1.4 score formula applied to the step rewards
        rewards = step_scores(cols.step_rewards, cols.valid, invalid_penalty=self.invalid_penalty)
        out_dtype = _float_dtype(cols.episode_rewards)
        if n == 0:
            return torch.zeros(0, dtype=out_dtype, device=cols.episode_rewards.device)
        by_std = self.norm == "mean_std"
        group, traj, traj_group = _trajectories(cols.group_ids, cols.traj_ids)
        n_traj = traj_group.shape[0]

        # episode level: one value per trajectory, R(tau) (all its rows carry it; their mean is that value)
        r64 = cols.episode_rewards.detach().cpu().to(torch.float64)
        steps_per_traj = torch.zeros(n_traj, dtype=torch.float64).index_add_(0, traj, torch.ones_like(r64))
        outcome = torch.zeros(n_traj, dtype=torch.float64).index_add_(0, traj, r64) / steps_per_traj
        adv_episode = _group_normalise(outcome, traj_group, outcome[traj], group, self.eps, by_std)

        # step level: discounted returns, normalised within anchor-state groups; a singleton anchor gets 0
        returns = _returns64(rewards.detach().cpu().to(torch.float64), traj, cols.step_ids, self.gamma)
        pairs = torch.stack([group, cols.anchor_ids.cpu().to(torch.long)], dim=1)
        _, anchor = torch.unique(pairs, dim=0, return_inverse=True)
        adv_step = _group_normalise(returns, anchor, returns, anchor, self.eps, by_std)
        alone = torch.bincount(anchor)[anchor] == 1
        adv_step = torch.where(alone, torch.zeros_like(adv_step), adv_step)

        adv = adv_episode + float(self.step_weight) * adv_step
        return adv.to(device=cols.episode_rewards.device, dtype=out_dtype)
