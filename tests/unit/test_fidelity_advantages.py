"""Differential tests: serl's GRPO advantages against the reference's formula (docs/reference.md §1.5, §10.1).

The reference (``CA :: compute_grpo_outcome_advantage``) is re-implemented below as a slow, literal loop from
§1.5: per group, collect the scores in a list, ``torch.tensor(list)`` (float32), ``torch.mean`` and unbiased
``torch.std``; ``A_i = (s_i − mu) / (sd + 1e-6)``; ``mu = 0, sd = 1`` for a group of one. Its trajectory-level
branch (``compute_mean_std_cross_steps=False``, not used by the SERL recipe) adds to a group's list only the
first-found sample of each ``(uid, traj_uid)`` pair, in batch order.

Pinned cases (issue 10 item 7):

* (a) equal scores: serl gives exactly 0 (float64 statistics); the reference's float32 mean misses the
  common value by one ulp and divides it by a std of the same size (docs/differences.md).
* (b) ``advantage=trajectory``: serl's default value per trajectory is its mean step score,
  ``traj_value="first"`` is the reference's first-found score.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from serl.algo.advantages import TRAJ_VALUES, grpo_advantages, trajectory_grpo_advantages


def reference_grpo(scores, index, traj_index, cross_steps=True, eps=1e-6, norm_by_std=True):
    """Literal §1.5 loop in float32 (the reference's dtype); returns a list of Python floats."""
    scores = [torch.tensor(float(s), dtype=torch.float32) for s in scores]
    id2score: dict = {}
    seen = set()
    for i in range(len(scores)):
        if (index[i], traj_index[i]) in seen:
            continue
        id2score.setdefault(index[i], []).append(scores[i])
        if not cross_steps:
            seen.add((index[i], traj_index[i]))
    id2mean, id2std = {}, {}
    for idx, group in id2score.items():
        if len(group) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            id2mean[idx] = torch.mean(torch.tensor(group))
            id2std[idx] = torch.std(torch.tensor([group]))
    out = []
    for i in range(len(scores)):
        if norm_by_std:
            out.append(float((scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)))
        else:
            out.append(float(scores[i] - id2mean[index[i]]))
    return out


# --------------------------------------------------------------------------- (a) equal scores

X32 = float(np.float32(9.9))  # 9.899999618530273 = 10380902 · 2^-20
ULP = 2.0**-20  # spacing of float32 in [8, 16)


def test_hand_derivation_of_the_float32_mean():
    # Sequential float32 sum of six 9.9f: 2x, 3x, 4x are exact; 5x = 49.49999809 is halfway between two
    # float32 (spacing 2^-18 in [32, 64)) and rounds to even: 49.5; 49.5 + x = 59.39999962 is again halfway,
    # rounds to even: 59.40000153; / 6 = 9.90000025 rounds to x + 1 ulp = 9.90000057.
    total = np.float32(0.0)
    partial = []
    for _ in range(6):
        total = np.float32(total + np.float32(9.9))
        partial.append(float(total))
    assert partial[4] == 49.5 and partial[5] == 59.400001525878906
    mean = np.float32(total / np.float32(6))
    assert float(mean) == X32 + ULP
    # torch's float32 mean, which the reference calls, lands on the same value here
    assert torch.mean(torch.full((6,), 9.9)).item() == X32 + ULP


def test_equal_scores_reference_gives_minus_0466_serl_gives_zero():
    scores = [9.9] * 6
    ids = [0] * 6
    ref = reference_grpo(scores, ids, list(range(6)))
    # hand: d = x − mu = −2^-20 for every sample, sd = |d|·sqrt(6/5) (six equal deviations, N−1 = 5),
    # A = −2^-20 / (2^-20·sqrt(1.2) + 1e-6) = −1 / (1.0954451 + 1.048576) = −0.466413
    hand = -ULP / (ULP * math.sqrt(6 / 5) + 1e-6)
    assert hand == pytest.approx(-0.466413, abs=1e-6)
    assert ref == pytest.approx([hand] * 6, abs=1e-5)
    adv = grpo_advantages(torch.tensor(scores, dtype=torch.float32), torch.tensor(ids))
    assert adv.tolist() == [0.0] * 6  # serl: exact zero (docs/differences.md)


def test_all_invalid_failures_reference_gives_small_positive_serl_gives_zero():
    # a group where every step of every rollout is an invalid action: all scores −0.1 (§1.4)
    scores = [-0.1] * 8
    ref = reference_grpo(scores, [0] * 8, list(range(8)))
    assert ref[0] == pytest.approx(0.0074, abs=1e-4) and len(set(ref)) == 1
    adv = grpo_advantages(torch.tensor(scores, dtype=torch.float32), torch.zeros(8, dtype=torch.long))
    assert adv.tolist() == [0.0] * 8


def test_exactly_representable_equal_scores_agree():
    # 10.0 and 0.0 are exact in float32: both give 0 (all-success / all-failure groups without penalties)
    for value in (10.0, 0.0):
        scores = [value] * 8
        assert reference_grpo(scores, [0] * 8, list(range(8))) == [0.0] * 8
        assert grpo_advantages(torch.tensor(scores), torch.zeros(8, dtype=torch.long)).tolist() == [0.0] * 8


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_cross_step_matches_reference_on_non_degenerate_groups(norm_by_std):
    rng = random.Random(0)
    for _ in range(20):
        scores, index, traj = [], [], []
        for g in range(rng.randint(1, 4)):
            for t in range(rng.randint(2, 4)):
                reward = rng.choice([0.0, 10.0])
                for _ in range(rng.randint(1, 5)):
                    scores.append(reward - 0.1 * (rng.random() < 0.3))
                    index.append(g)
                    traj.append(t)
        # skip groups whose scores are all equal: there serl deliberately differs (tests above)
        by_group: dict = {}
        for s, g in zip(scores, index):
            by_group.setdefault(g, set()).add(s)
        keep = [i for i, g in enumerate(index) if len(by_group[g]) > 1 or sum(x == g for x in index) == 1]
        scores, index, traj = [scores[i] for i in keep], [index[i] for i in keep], [traj[i] for i in keep]
        if not scores:
            continue
        ref = reference_grpo(scores, index, traj, norm_by_std=norm_by_std)
        adv = grpo_advantages(torch.tensor(scores), torch.tensor(index), norm_by_std=norm_by_std)
        assert adv.tolist() == pytest.approx(ref, rel=1e-5, abs=1e-5)


# --------------------------------------------------------------------------- (b) trajectory level

# One group, two trajectories of two steps. Traj 0 won (reward 10) with an invalid first step: scores
# [9.9, 10.0]; traj 1 failed with an invalid second step: [0.0, -0.1].
SCORES = [9.9, 10.0, 0.0, -0.1]
GROUP = [0, 0, 0, 0]
TRAJ = [0, 0, 1, 1]


def test_trajectory_first_hand_values():
    # reference (first-found score per trajectory): values [9.9, 0.0], mu = 4.95, sd = 9.9/sqrt(2) = 7.000357
    sd = 9.9 / math.sqrt(2)
    hand = [(s - 4.95) / (sd + 1e-6) for s in SCORES]
    assert hand == pytest.approx([0.707107, 0.721392, -0.707107, -0.721392], abs=1e-6)
    assert reference_grpo(SCORES, GROUP, TRAJ, cross_steps=False) == pytest.approx(hand, abs=1e-5)
    adv = trajectory_grpo_advantages(torch.tensor(SCORES), torch.tensor(GROUP), torch.tensor(TRAJ), traj_value="first")
    assert adv.tolist() == pytest.approx(hand, abs=1e-6)


def test_trajectory_mean_hand_values_differ_from_reference():
    # serl's default (mean step score per trajectory): values [9.95, -0.05], mu = 4.95, sd = 10/sqrt(2)
    sd = 10.0 / math.sqrt(2)
    hand = [(s - 4.95) / (sd + 1e-6) for s in SCORES]
    assert hand == pytest.approx([0.700036, 0.714178, -0.700036, -0.714178], abs=1e-6)
    adv = trajectory_grpo_advantages(torch.tensor(SCORES), torch.tensor(GROUP), torch.tensor(TRAJ))
    assert adv.tolist() == pytest.approx(hand, abs=1e-6)
    assert adv.tolist() != pytest.approx(reference_grpo(SCORES, GROUP, TRAJ, cross_steps=False), abs=1e-3)


def test_trajectory_first_is_first_in_input_order():
    # the reference keeps the first-FOUND sample (batch order), not the smallest step id: listing traj 0's
    # second step first makes its value 10.0 -> values [10.0, 0.0], mu = 5, sd = 10/sqrt(2)
    order = [1, 0, 2, 3]
    scores = [SCORES[i] for i in order]
    traj = [TRAJ[i] for i in order]
    sd = 10.0 / math.sqrt(2)
    hand = [(s - 5.0) / (sd + 1e-6) for s in scores]
    assert reference_grpo(scores, GROUP, traj, cross_steps=False) == pytest.approx(hand, abs=1e-5)
    adv = trajectory_grpo_advantages(torch.tensor(scores), torch.tensor(GROUP), torch.tensor(traj), traj_value="first")
    assert adv.tolist() == pytest.approx(hand, abs=1e-6)


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_trajectory_first_matches_reference_randomised(norm_by_std):
    rng = random.Random(1)
    for _ in range(30):
        rows = []
        for g in range(rng.randint(1, 3)):
            for t in range(rng.randint(1, 4)):
                reward = rng.choice([0.0, 10.0])
                rows += [(reward - 0.1 * (rng.random() < 0.4), g, t) for _ in range(rng.randint(1, 5))]
        rng.shuffle(rows)  # batch order is arbitrary in the reference (balancing, §1.5)
        scores, index, traj = (list(x) for x in zip(*rows))
        # first-found values of a group all equal: the float32 artefact of (a); skip those groups
        first: dict = {}
        for s, g, t in rows:
            first.setdefault((g, t), s)
        values: dict = {}
        for (g, _), s in first.items():
            values.setdefault(g, []).append(s)
        if any(len(v) > 1 and len(set(v)) == 1 for v in values.values()):
            continue
        ref = reference_grpo(scores, index, traj, cross_steps=False, norm_by_std=norm_by_std)
        adv = trajectory_grpo_advantages(
            torch.tensor(scores), torch.tensor(index), torch.tensor(traj), norm_by_std=norm_by_std, traj_value="first"
        )
        assert adv.tolist() == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_traj_value_validation():
    assert TRAJ_VALUES == ("mean", "first")
    with pytest.raises(ValueError, match="traj_value must be one of mean, first"):
        trajectory_grpo_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                                   traj_value="last")
