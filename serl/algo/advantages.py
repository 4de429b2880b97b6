"""Per-step scores and group-relative (GRPO) advantages. Pure torch.

Every environment step is one training sample (docs/reference.md §1.3). Its scalar score is the outcome
reward of its trajectory minus the invalid-action penalty (§1.4); the advantage is that score normalised
within its GRPO group (the ``group_size`` rollouts of one task, §1.5). The learner broadcasts the per-step
advantage over the step's response tokens.

Functions
---------
* :func:`step_scores` — ``s_i = R(traj(i)) - penalty * [step i invalid]`` (§1.4).
* :func:`grpo_advantages` — the reference's *cross-step* normalisation (§1.5, the default, docs/design.md §4):
  mean and unbiased std over **all step samples** of the group, so long (usually failed) trajectories
  weigh more. A group with one sample gets ``mu=0, sd=1``.
* :class:`GRPO` — the estimator the ``algorithm.advantage`` node builds (conf/algorithm/advantage/grpo.yaml):
  step scores, then one of the two normalisations below, over a :class:`~serl.types.StepColumns` batch.
* :func:`trajectory_grpo_advantages` — the trajectory-level option (§10.1, docs/design.md §4): the group statistics
  are computed over **one value per trajectory**, so every trajectory counts once regardless of its length;
  each step still keeps its own score, ``A_i = (s_i - mu)/(sd+eps)``. The value is the trajectory's mean step
  score (``traj_value="mean"``, serl) or the score of its first sample in input order (``traj_value="first"``,
  the reference's ``compute_mean_std_cross_steps=False`` branch of ``CA :: compute_grpo_outcome_advantage``,
  which keeps the first-found sample of each ``(uid, traj_uid)``; serl's trainer lists a trajectory's steps
  in step order, so that is step 0). Since all steps of a trajectory share the outcome reward, both values
  differ from the outcome reward only by invalid-step penalties (all of them averaged, or the first step's).
  A group holding a single trajectory gets ``mu=0, sd=1`` (the same rule as the step level).

Worked example (§1.5): one success (score 10) of 5 steps and seven failures (score 0) of 50 steps give
``mu≈0.14, sd≈1.18, A_success≈+8.4, A_fail≈−0.12`` at step level and ``mu=1.25, sd≈3.54, +2.47 / −0.35``
at trajectory level.

Deviations from the reference
-----------------------------
* Group statistics are accumulated in float64 (two-pass: mean, then squared deviations) and the result is
  cast back to the scores' floating dtype; the reference works in the input dtype (float32, ``torch.mean`` /
  ``torch.std``). This changes rounding only, except in one case: a group whose scores are all equal gets
  exactly 0 here, while the reference's float32 mean can miss the common value by an ulp and divide that
  ulp by a std of the same size, e.g. six scores of 9.9 give ``(9.9f - (9.9f + 2^-20)) / (2^-20·sqrt(6/5)
  + 1e-6) = -0.466`` on every sample, and all-``-0.1`` groups (every step of every rollout invalid) give
  about +0.007 to +0.015. That is a rounding artefact (§1.8: equal scores carry no signal), so serl does not
  reproduce it in any preset (docs/differences.md).
* :func:`trajectory_grpo_advantages` defaults to the mean step score per trajectory (``traj_value="mean"``);
  the reference's trajectory-level branch (not used by its SERL recipe, §1.5) takes the first-found sample's
  score (``traj_value="first"``).
* The reference's ``adjust_batch`` duplicates (§1.5) are not produced here; if a caller passes duplicated
  samples they enter the statistics exactly like in the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from serl.types import StepColumns

__all__ = ["step_scores", "grpo_advantages", "trajectory_grpo_advantages", "GRPO", "TRAJ_VALUES", "LEVELS"]

#: value of a trajectory in :func:`trajectory_grpo_advantages` (module docstring).
TRAJ_VALUES = ("mean", "first")
#: where :class:`GRPO` takes its group statistics: over every step sample, or one value per trajectory.
LEVELS = ("cross_step", "trajectory")


def _check_1d(name: str, x: Tensor, n: int | None = None) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(x.shape)}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} must have length N={n} (like scores), got {x.shape[0]}")


def _check_ids(name: str, ids: Tensor, n: int) -> None:
    _check_1d(name, ids, n)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (torch.long), got dtype {ids.dtype}")


def _check_nonneg(name: str, x: float) -> None:
    if not (isinstance(x, (int, float)) and math.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be a finite float >= 0, got {x!r}")


def _check_unit(name: str, x: float) -> None:
    if not (isinstance(x, (int, float)) and math.isfinite(x) and 0 <= x <= 1):
        raise ValueError(f"{name} must be a float in [0, 1], got {x!r}")


def _check_eps(eps: float) -> None:
    _check_nonneg("eps", eps)


def _float_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()


def check_invalid_penalty(invalid_penalty: float) -> None:
    """ValueError unless ``invalid_penalty`` is a finite float >= 0 (every estimator's knob, §1.4)."""
    _check_nonneg("invalid_penalty", invalid_penalty)


def step_scores(episode_rewards: Tensor, valid: Tensor, invalid_penalty: float = 0.1) -> Tensor:
    """Per-step score ``s_i = R(traj(i)) - invalid_penalty * [step i invalid]`` (docs/reference.md §1.4).

    Args:
        episode_rewards: ``[N]`` outcome reward of the trajectory each step belongs to (10·won in ALFWorld).
        valid: ``[N]`` bool, the step's action validity flag (§8.3).
        invalid_penalty: penalty coefficient, ``>= 0`` (reference: 0.1; 0 disables the penalty).

    Returns:
        ``[N]`` float scores (dtype of ``episode_rewards`` if floating, else the default float dtype).
    """
    _check_1d("episode_rewards", episode_rewards)
    _check_1d("valid", valid, episode_rewards.shape[0])
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}")
    check_invalid_penalty(invalid_penalty)
    rewards = episode_rewards.to(_float_dtype(episode_rewards))
    # §1.4: s_i = R(traj(i)) − 0.1·[step i invalid]
    return rewards - float(invalid_penalty) * (~valid).to(rewards.dtype)


def _group_normalise(
    values: Tensor, value_group: Tensor, scores: Tensor, score_group: Tensor, eps: float, norm_by_std: bool
) -> Tensor:
    """Statistics of ``values`` per group (index ``value_group`` in ``[0, G)``), applied to ``scores``.

    ``values``: ``[M]`` float64, ``value_group``: ``[M]`` long; ``scores``: ``[N]`` float64,
    ``score_group``: ``[N]`` long. Returns ``[N]`` float64.
    """
    n_groups = int(value_group.max().item()) + 1 if value_group.numel() else 0
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, value_group, torch.ones_like(values))
    total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, value_group, values)
    mean = total / count  # §1.5: mu = mean(S_g)
    sq_dev = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, value_group, (values - mean[value_group]) ** 2)
    single = count <= 1
    # §1.5: sd = unbiased std(S_g) (torch.std, N−1); guarded against 0/0 for single-sample groups
    std = torch.sqrt(sq_dev / torch.where(single, torch.ones_like(count), count - 1))
    mean = torch.where(single, torch.zeros_like(mean), mean)  # §1.5: |S_g| == 1 → mu = 0
    std = torch.where(single, torch.ones_like(std), std)  # §1.5: |S_g| == 1 → sd = 1
    centred = scores - mean[score_group]  # §1.5: s_i − mu_g
    if not norm_by_std:
        return centred
    return centred / (std[score_group] + eps)  # §1.5: A_i = (s_i − mu_g) / (sd_g + 1e-6)


def grpo_advantages(scores: Tensor, group_ids: Tensor, eps: float = 1e-6, norm_by_std: bool = True) -> Tensor:
    """Reference GRPO advantage with cross-step statistics (docs/reference.md §1.5).

    For each group ``g`` (equal ``group_ids``): ``mu_g, sd_g`` = mean and unbiased (N−1) std of the scores of
    **all step samples** of the group (``mu=0, sd=1`` if the group has one sample);
    ``A_i = (s_i − mu_g) / (sd_g + eps)``, or ``s_i − mu_g`` when ``norm_by_std`` is False.

    Args:
        scores: ``[N]`` per-step scores (:func:`step_scores`).
        group_ids: ``[N]`` long, any integer labels (need not be contiguous).
        eps: ``>= 0`` added to the std (reference 1e-6).
        norm_by_std: divide by ``sd + eps`` (reference ``norm_adv_by_std_in_grpo=True``).

    Returns:
        ``[N]`` advantages, dtype of ``scores`` (if floating).
    """
    _check_1d("scores", scores)
    _check_ids("group_ids", group_ids, scores.shape[0])
    _check_eps(eps)
    out_dtype = _float_dtype(scores)
    if scores.numel() == 0:
        return scores.to(out_dtype).clone()
    _, group = torch.unique(group_ids.cpu(), return_inverse=True)
    s64 = scores.detach().cpu().to(torch.float64)
    adv = _group_normalise(s64, group, s64, group, eps, norm_by_std)
    return adv.to(device=scores.device, dtype=out_dtype)


def trajectory_grpo_advantages(
    scores: Tensor,
    group_ids: Tensor,
    traj_ids: Tensor,
    eps: float = 1e-6,
    norm_by_std: bool = True,
    traj_value: str = "mean",
) -> Tensor:
    """GRPO advantage with trajectory-level statistics (option, docs/reference.md §10.1, docs/design.md §4).

    A trajectory is identified by the pair ``(group_id, traj_id)`` (so ``traj_ids`` may restart at 0 in
    every group). Its value is the mean score of its steps (``traj_value="mean"``) or the score of its first
    sample in input order (``"first"``, the reference's ``compute_mean_std_cross_steps=False``). For each
    group ``g``: ``mu_g, sd_g`` = mean and unbiased std of the **trajectory values** of the group (``mu=0,
    sd=1`` if the group has one trajectory); every step keeps its own score:
    ``A_i = (s_i − mu_g) / (sd_g + eps)`` (``s_i − mu_g`` without std).

    Args:
        scores: ``[N]`` per-step scores.
        group_ids: ``[N]`` long GRPO group labels.
        traj_ids: ``[N]`` long trajectory labels (unique within a group).
        eps: ``>= 0`` added to the std.
        norm_by_std: divide by ``sd + eps``.
        traj_value: one of :data:`TRAJ_VALUES` (``"mean"``: serl; ``"first"``: the reference).

    Returns:
        ``[N]`` advantages, dtype of ``scores`` (if floating).
    """
    _check_1d("scores", scores)
    _check_ids("group_ids", group_ids, scores.shape[0])
    _check_ids("traj_ids", traj_ids, scores.shape[0])
    _check_eps(eps)
    if traj_value not in TRAJ_VALUES:
        raise ValueError(f"traj_value must be one of {', '.join(TRAJ_VALUES)}, got {traj_value!r}")
    out_dtype = _float_dtype(scores)
    if scores.numel() == 0:
        return scores.to(out_dtype).clone()
    _, group = torch.unique(group_ids.cpu(), return_inverse=True)
    pairs = torch.stack([group, traj_ids.cpu().to(torch.long)], dim=1)
    uniq_pairs, traj = torch.unique(pairs, dim=0, return_inverse=True)  # one row per trajectory
    s64 = scores.detach().cpu().to(torch.float64)
    n_traj = uniq_pairs.shape[0]
    if traj_value == "first":
        # CA :: compute_grpo_outcome_advantage with compute_mean_std_cross_steps=False (§1.5, §10.1): only the
        # first-found sample of each (uid, traj_uid) enters S_g
        position = torch.arange(s64.shape[0])
        first = torch.full((n_traj,), s64.shape[0], dtype=torch.long).scatter_reduce_(0, traj, position, "amin")
        values = s64[first]
    else:
        # §10.1 option (serl): one value per trajectory = its mean step score
        steps_per_traj = torch.zeros(n_traj, dtype=torch.float64).index_add_(0, traj, torch.ones_like(s64))
        values = torch.zeros(n_traj, dtype=torch.float64).index_add_(0, traj, s64) / steps_per_traj
    traj_group = uniq_pairs[:, 0]
    adv = _group_normalise(values, traj_group, s64, group, eps, norm_by_std)
    return adv.to(device=scores.device, dtype=out_dtype)


@dataclass(frozen=True)
class GRPO:
    """Multi-turn GRPO's advantage (docs/reference.md §1.4–1.5): ``s_i = R(traj(i)) − penalty·[invalid]``,
    normalised within each group at ``level`` (``cross_step``: :func:`grpo_advantages`; ``trajectory``:
    :func:`trajectory_grpo_advantages` with ``trajectory_value``). Called on a step batch's
    :class:`~serl.types.StepColumns`, returns ``[N]`` advantages, one per step sample."""

    level: Literal["cross_step", "trajectory"] = "cross_step"
    trajectory_value: Literal["mean", "first"] = "mean"
    norm_by_std: bool = True
    invalid_penalty: float = 0.1
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level={self.level!r} is not one of {', '.join(LEVELS)}")
        if self.trajectory_value not in TRAJ_VALUES:
            raise ValueError(f"trajectory_value={self.trajectory_value!r} is not one of {', '.join(TRAJ_VALUES)}")
        check_invalid_penalty(self.invalid_penalty)
        _check_eps(self.eps)

    def __call__(self, cols: StepColumns) -> Tensor:
        scores = step_scores(cols.episode_rewards, cols.valid, invalid_penalty=self.invalid_penalty)  # §1.4
        if self.level == "cross_step":  # §1.5
            return grpo_advantages(scores, cols.group_ids, eps=self.eps, norm_by_std=self.norm_by_std)
        return trajectory_grpo_advantages(
            scores, cols.group_ids, cols.traj_ids, eps=self.eps, norm_by_std=self.norm_by_std, traj_value=self.trajectory_value
        )
