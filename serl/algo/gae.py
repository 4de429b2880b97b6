"""PPO's critic side over multi-turn step samples: GAE advantages from a state-value critic, and the clipped value
loss that trains it. Pure torch.

Schulman et al. (2016), "High-Dimensional Continuous Control Using Generalized Advantage Estimation";
Schulman et al. (2017), "Proximal Policy Optimization Algorithms".

Every environment step is one sample (docs/reference.md §1.3); the critic (``algorithm.critic``,
:mod:`serl.critic`) gives each the value ``V_t = V(s_t)`` of the state it was taken from (the step's prompt).
Within a trajectory, with ``r'_t = step_reward_t - invalid_penalty * [step t invalid]`` (the §1.4 penalty, as in
GiGPO) and the value after the trajectory's last step taken as 0:

    delta_t = r'_t + gamma * V_{t+1} - V_t
    A_t     = sum_{k>=0} (gamma * lam)^k delta_{t+k}        (GAE over turns)
    R_t     = A_t + V_t                                      (the critic's regression target, the lambda-return)

With ``whiten`` the advantages are then normalised over the whole batch, ``(A - mean(A)) / (std(A) + eps)``
(unbiased std; a batch of one row is only centred), as veRL's PPO does before the policy loss.

The critic is trained on ``R`` with the clipped value loss (veRL's ``compute_value_loss``)::

    V_clip = V_old + clip(V - V_old, -value_clip, value_clip)
    L_V    = 0.5 * mean_i max((V_i - R_i)^2, (V_clip_i - R_i)^2)

Worked example (tests/unit/test_gae.py): one trajectory of 3 steps with rewards r' = 0, -0.1 (invalid), 10 and
values 1, 2, 4, gamma = lam = 0.5: deltas 0 + 0.5*2 - 1 = 0, -0.1 + 0.5*4 - 2 = -0.1, 10 - 4 = 6; advantages
A_2 = 6, A_1 = -0.1 + 0.25*6 = 1.4, A_0 = 0 + 0.25*1.4 = 0.35; returns 1.35, 3.4, 10.

Deviations from the reference (docs/differences.md): veRL's PPO (the authors' ``examples/ppo_trainer``) runs a
token-level critic and GAE over the tokens of each response; serl's critic is turn-level (one value per
step sample, GAE over the turns of an episode), the granularity of every other estimator here. The step after a
trajectory's last one is terminal (value 0) also when the episode was cut at ``max_turns``; the rollout does
not keep the state it would bootstrap from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from serl.algo.advantages import _check_1d, _check_eps, _check_ids, _check_unit, _float_dtype, check_invalid_penalty, step_scores
from serl.algo.gigpo import _returns64, _trajectories
from serl.types import StepColumns

__all__ = ["gae_advantages", "whiten", "clipped_value_loss", "GAE"]


def gae_advantages(
    rewards: Tensor, values: Tensor, group_ids: Tensor, traj_ids: Tensor, step_ids: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """GAE over the turns of every trajectory (module docstring).

    Args:
        rewards: ``[N]`` per-step rewards ``r'_t``.
        values: ``[N]`` the critic's ``V(s_t)`` of each row.
        group_ids: ``[N]`` long group labels.
        traj_ids: ``[N]`` long trajectory labels, unique within a group (a trajectory is ``(group, traj)``).
        step_ids: ``[N]`` long turn index; orders the rows of a trajectory (unique and consecutive within it).
        gamma: discount in ``[0, 1]``.
        lam: GAE's lambda in ``[0, 1]`` (0: one-step TD error; 1: Monte-Carlo return minus the value).

    Returns:
        ``(advantages [N], returns [N])`` with ``returns = advantages + values``, accumulated in float64 and cast
        to the dtype of ``rewards`` (if floating, else the default float dtype).
    """
    _check_1d("rewards", rewards)
    n = rewards.shape[0]
    _check_1d("values", values, n)
    for name, ids in (("group_ids", group_ids), ("traj_ids", traj_ids), ("step_ids", step_ids)):
        _check_ids(name, ids, n)
    _check_unit("gamma", gamma)
    _check_unit("lam", lam)
    out_dtype = _float_dtype(rewards)
    if n == 0:
        empty = rewards.to(out_dtype).clone()
        return empty, empty.clone()
    r64 = rewards.detach().cpu().to(torch.float64)
    v64 = values.detach().cpu().to(torch.float64)
    if not bool(torch.isfinite(v64).all()):
        raise ValueError("values must be finite (the critic produced inf or NaN)")
    _, traj, _ = _trajectories(group_ids, traj_ids)
    # V_{t+1}: the value of the next row of the same trajectory in step order, 0 after its last step
    order = torch.argsort(step_ids.cpu().to(torch.long), stable=True)
    order = order[torch.argsort(traj[order], stable=True)]
    same = traj[order][1:] == traj[order][:-1]
    next_sorted = torch.zeros(n, dtype=torch.float64)
    next_sorted[:-1] = torch.where(same, v64[order][1:], torch.zeros_like(v64[order][1:]))
    next_value = torch.empty(n, dtype=torch.float64)
    next_value[order] = next_sorted
    delta = r64 + float(gamma) * next_value - v64  # delta_t = r'_t + gamma V_{t+1} − V_t
    adv = _returns64(delta, traj, step_ids, float(gamma) * float(lam))  # A_t = sum_k (gamma lam)^k delta_{t+k}
    returns = adv + v64  # R_t = A_t + V_t
    device = rewards.device
    return adv.to(device=device, dtype=out_dtype), returns.to(device=device, dtype=out_dtype)


def whiten(x: Tensor, eps: float = 1e-6) -> Tensor:
    """``(x - mean(x)) / (std(x) + eps)`` over ``[N]`` (unbiased std); ``x - mean(x)`` when ``N == 1``, ``x``
    when empty. Accumulated in float64, returned in the dtype of ``x``."""
    _check_1d("x", x)
    _check_eps(eps)
    if x.numel() == 0:
        return x.clone()
    x64 = x.detach().to(torch.float64)
    centred = x64 - x64.mean()
    if x.numel() == 1:
        return centred.to(x.dtype)
    return (centred / (x64.std() + eps)).to(x.dtype)


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, value_clip: float | None
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped value loss (module docstring), mean over the ``[N]`` rows.

    Args:
        values: ``[N]`` the critic's current values (carry the gradient).
        old_values: ``[N]`` the values at rollout time (the clip's centre; detached).
        returns: ``[N]`` the regression targets ``R`` (detached).
        value_clip: the clip range > 0, or None for the plain squared error ``0.5 * (V - R)^2``.

    Returns:
        ``(loss, stats)``; ``stats``: ``value_loss``, ``value_clipfrac`` (share of rows where the clipped error is
        the larger one), ``value_error`` (mean ``|V - R|``).
    """
    _check_1d("values", values)
    n = values.shape[0]
    _check_1d("old_values", old_values, n)
    _check_1d("returns", returns, n)
    if value_clip is not None and not (isinstance(value_clip, (int, float)) and math.isfinite(value_clip) and value_clip > 0):
        raise ValueError(f"value_clip must be a finite float > 0 or None, got {value_clip!r}")
    if n == 0:
        zero = values.sum() * 0.0
        return zero, {"value_loss": 0.0, "value_clipfrac": 0.0, "value_error": 0.0}
    old = old_values.detach().to(values.dtype)
    target = returns.detach().to(values.dtype)
    err = (values - target) ** 2
    if value_clip is None:
        per_row, clipped = err, torch.zeros_like(err, dtype=torch.bool)
    else:
        v_clip = old + torch.clamp(values - old, -value_clip, value_clip)  # V_old + clip(V − V_old, ±ε)
        err_clip = (v_clip - target) ** 2
        per_row, clipped = torch.maximum(err, err_clip), err_clip > err
    loss = 0.5 * per_row.mean()  # 0.5 · mean max((V − R)², (V_clip − R)²)
    with torch.no_grad():
        stats = {
            "value_loss": float(loss.detach()),
            "value_clipfrac": float(clipped.to(torch.float64).mean()),
            "value_error": float((values.detach() - target).abs().to(torch.float64).mean()),
        }
    return loss, stats


@dataclass(frozen=True)
class GAE:
    """PPO's advantage (``algorithm/advantage=gae``): GAE over turns from the critic's values
    (``StepColumns.values``, filled by ``algorithm.critic``), whitened over the batch. ``uses_critic``: the
    config check demands a critic; :meth:`value_targets` are what the critic regresses on."""

    gamma: float = 0.95
    lam: float = 0.95
    whiten: bool = True
    invalid_penalty: float = 0.1
    eps: float = 1e-6
    uses_critic = True

    def __post_init__(self) -> None:
        _check_unit("gamma", self.gamma)
        _check_unit("lam", self.lam)
        if not isinstance(self.whiten, bool):
            raise ValueError(f"whiten must be true or false, got {self.whiten!r}")
        check_invalid_penalty(self.invalid_penalty)
        _check_eps(self.eps)

    def _gae(self, cols: StepColumns) -> tuple[Tensor, Tensor]:
        if cols.values is None:
            raise ValueError("algorithm/advantage=gae needs the critic's values (StepColumns.values is None): "
                             "set algorithm/critic=head or algorithm/critic=model")
        rewards = step_scores(cols.step_rewards, cols.valid, invalid_penalty=self.invalid_penalty)  # r'_t (§1.4)
        return gae_advantages(rewards, cols.values, cols.group_ids, cols.traj_ids, cols.step_ids, self.gamma, self.lam)

    def __call__(self, cols: StepColumns) -> Tensor:
        adv, _ = self._gae(cols)
        return whiten(adv, self.eps) if self.whiten else adv

    def value_targets(self, cols: StepColumns) -> Tensor:
        """``[N]`` the lambda-returns ``R_t = A_t + V_t`` (before whitening): the critic's targets."""
        return self._gae(cols)[1]
