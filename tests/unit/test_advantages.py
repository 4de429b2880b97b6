"""serl.algo.advantages: hand-derived values, the docs/reference.md §1.5 worked example, slow-loop references."""

from __future__ import annotations

import math

import pytest
import torch

from serl.algo.advantages import grpo_advantages, step_scores, trajectory_grpo_advantages

EPS = 1e-6


def _worked_example():
    """1 success (score 10) of 5 steps + 7 failures (score 0) of 50 steps, one group (§1.5)."""
    scores, trajs = [10.0] * 5, [0] * 5
    for t in range(1, 8):
        scores += [0.0] * 50
        trajs += [t] * 50
    n = len(scores)
    return torch.tensor(scores), torch.zeros(n, dtype=torch.long), torch.tensor(trajs)


# ---------------------------------------------------------------- step_scores (§1.4)


def test_step_scores_hand_values():
    rewards = torch.tensor([10.0, 10.0, 0.0, 0.0])
    valid = torch.tensor([True, False, True, False])
    out = step_scores(rewards, valid)
    torch.testing.assert_close(out, torch.tensor([10.0, 9.9, 0.0, -0.1]))
    torch.testing.assert_close(step_scores(rewards, valid, invalid_penalty=0.0), rewards)
    torch.testing.assert_close(step_scores(rewards, valid, invalid_penalty=1.0), torch.tensor([10.0, 9.0, 0.0, -1.0]))


def test_step_scores_integer_rewards_become_float():
    out = step_scores(torch.tensor([10, 0]), torch.tensor([False, True]))
    assert out.dtype.is_floating_point
    torch.testing.assert_close(out, torch.tensor([9.9, 0.0]))


@pytest.mark.parametrize("penalty", [-0.1, float("nan"), float("inf")])
def test_step_scores_bad_penalty(penalty):
    with pytest.raises(ValueError, match="invalid_penalty"):
        step_scores(torch.zeros(2), torch.ones(2, dtype=torch.bool), invalid_penalty=penalty)


def test_step_scores_bad_shapes():
    with pytest.raises(ValueError, match="valid"):
        step_scores(torch.zeros(3), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        step_scores(torch.zeros(2), torch.ones(2))


# ---------------------------------------------------------------- cross-step GRPO (§1.5)


def test_worked_example_cross_step():
    scores, groups, _ = _worked_example()
    adv = grpo_advantages(scores, groups)
    # hand: n = 355, mu = 50/355, var = (500 − 355 mu²)/354
    mu = 50 / 355
    sd = math.sqrt((500 - 355 * mu**2) / 354)
    assert mu == pytest.approx(0.1408, abs=1e-4) and sd == pytest.approx(1.180, abs=1e-3)
    assert adv[0].item() == pytest.approx((10 - mu) / (sd + EPS), rel=1e-5)
    assert adv[-1].item() == pytest.approx(-mu / (sd + EPS), rel=1e-5)
    assert adv[0].item() == pytest.approx(8.4, abs=0.05)
    assert adv[-1].item() == pytest.approx(-0.12, abs=0.005)
    assert torch.all(adv[:5] == adv[0]) and torch.all(adv[5:] == adv[-1])


def test_worked_example_trajectory_level():
    scores, groups, trajs = _worked_example()
    adv = trajectory_grpo_advantages(scores, groups, trajs)
    # hand: values [10, 0 × 7]: mu = 1.25, var = (100 − 8·1.5625)/7 = 12.5
    mu, sd = 1.25, math.sqrt(12.5)
    assert adv[0].item() == pytest.approx((10 - mu) / (sd + EPS), rel=1e-5)
    assert adv[-1].item() == pytest.approx(-mu / (sd + EPS), rel=1e-5)
    assert adv[0].item() == pytest.approx(2.47, abs=0.01)
    assert adv[-1].item() == pytest.approx(-0.35, abs=0.01)


def test_grpo_small_exact_groups():
    # group 7: [1, 2, 3] → mu 2, sd 1; group 3: single sample 5 → mu 0, sd 1;
    # group 9: [0, 0] → sd 0 → A 0; group 4: [0, −0.1] → mu −0.05, sd √0.005
    scores = torch.tensor([1.0, 5.0, 2.0, 0.0, 3.0, 0.0, 0.0, -0.1], dtype=torch.float64)
    groups = torch.tensor([7, 3, 7, 9, 7, 9, 4, 4])
    adv = grpo_advantages(scores, groups)
    sd4 = math.sqrt(0.005)
    expected = torch.tensor(
        [-1 / (1 + EPS), 5 / (1 + EPS), 0.0, 0.0, 1 / (1 + EPS), 0.0, 0.05 / (sd4 + EPS), -0.05 / (sd4 + EPS)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(adv, expected)
    assert adv[6].item() == pytest.approx(0.70710, abs=1e-4)  # all-fail group with one invalid: O(1) (§1.5)

    no_std = grpo_advantages(scores, groups, norm_by_std=False)
    torch.testing.assert_close(no_std, torch.tensor([-1.0, 5.0, 0.0, 0.0, 1.0, 0.0, 0.05, -0.05], dtype=torch.float64))


def test_grpo_eps_zero_and_dtype():
    adv = grpo_advantages(torch.tensor([1.0, 3.0]), torch.tensor([0, 0]), eps=0.0)
    # mu 2, sd √2
    torch.testing.assert_close(adv, torch.tensor([-1 / math.sqrt(2), 1 / math.sqrt(2)]))
    assert adv.dtype == torch.float32
    assert grpo_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def _slow_grpo(scores, groups, eps, norm_by_std):
    out = torch.empty_like(scores)
    for g in set(groups.tolist()):
        idx = [i for i in range(len(scores)) if groups[i].item() == g]
        vals = scores[idx]
        if len(idx) == 1:
            mu, sd = torch.tensor(0.0, dtype=scores.dtype), torch.tensor(1.0, dtype=scores.dtype)
        else:
            mu, sd = vals.mean(), vals.std()
        for i in idx:
            out[i] = (scores[i] - mu) / (sd + eps) if norm_by_std else scores[i] - mu
    return out


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_matches_slow_loop(norm_by_std):
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        n = 60
        scores = torch.randn(n, generator=gen, dtype=torch.float64) * 3
        groups = torch.randint(0, 9, (n,), generator=gen) * 5 - 10  # non-contiguous, negative labels too
        torch.testing.assert_close(
            grpo_advantages(scores, groups, norm_by_std=norm_by_std), _slow_grpo(scores, groups, EPS, norm_by_std)
        )


# ---------------------------------------------------------------- trajectory-level option


def test_trajectory_level_hand_values():
    # group 0: traj 0 = [0, 0] (mean 0), traj 1 = [2, 4] (mean 3), traj 2 = [6] (mean 6) → mu 3, sd 3
    # group 1: traj 0 = [5], traj 1 = [1, 1, 1] → values 5, 1 → mu 3, sd 2√2  (traj ids restart per group)
    # group 2: one trajectory [2, 3] → mu 0, sd 1
    scores = torch.tensor([0, 2, 0, 4, 6, 5, 1, 1, 1, 2, 3], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    trajs = torch.tensor([0, 1, 0, 1, 2, 0, 1, 1, 1, 0, 0])
    adv = trajectory_grpo_advantages(scores, groups, trajs)
    s1 = 2 * math.sqrt(2)
    expected = [
        -3 / (3 + EPS), -1 / (3 + EPS), -3 / (3 + EPS), 1 / (3 + EPS), 3 / (3 + EPS),
        2 / (s1 + EPS), -2 / (s1 + EPS), -2 / (s1 + EPS), -2 / (s1 + EPS),
        2 / (1 + EPS), 3 / (1 + EPS),
    ]  # fmt: skip
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64))
    no_std = trajectory_grpo_advantages(scores, groups, trajs, norm_by_std=False)
    torch.testing.assert_close(no_std, torch.tensor([-3, -1, -3, 1, 3, 2, -2, -2, -2, 2, 3], dtype=torch.float64))


def test_trajectory_level_centering_equals_step_level_for_equal_lengths():
    # equal-length trajectories: the trajectory-level and step-level means coincide (only the std differs)
    scores = torch.tensor([10.0, 10.0, 0.0, 0.0, 0.0, 0.0])
    groups = torch.zeros(6, dtype=torch.long)
    trajs = torch.tensor([0, 0, 1, 1, 2, 2])
    a_traj = trajectory_grpo_advantages(scores, groups, trajs, norm_by_std=False)
    a_step = grpo_advantages(scores, groups, norm_by_std=False)
    torch.testing.assert_close(a_traj, a_step)


def _slow_traj(scores, groups, trajs, eps, norm_by_std):
    out = torch.empty_like(scores)
    for g in set(groups.tolist()):
        idx = [i for i in range(len(scores)) if groups[i].item() == g]
        values = []
        for t in sorted({trajs[i].item() for i in idx}):
            values.append(torch.stack([scores[i] for i in idx if trajs[i].item() == t]).mean())
        values = torch.stack(values)
        if len(values) == 1:
            mu, sd = 0.0, 1.0
        else:
            mu, sd = values.mean(), values.std()
        for i in idx:
            out[i] = (scores[i] - mu) / (sd + eps) if norm_by_std else scores[i] - mu
    return out


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_trajectory_level_matches_slow_loop(norm_by_std):
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        n = 80
        scores = torch.randn(n, generator=gen, dtype=torch.float64)
        groups = torch.randint(0, 5, (n,), generator=gen)
        trajs = torch.randint(0, 4, (n,), generator=gen)
        torch.testing.assert_close(
            trajectory_grpo_advantages(scores, groups, trajs, norm_by_std=norm_by_std),
            _slow_traj(scores, groups, trajs, EPS, norm_by_std),
        )


# ---------------------------------------------------------------- validation


def test_grpo_validation():
    with pytest.raises(ValueError, match="group_ids"):
        grpo_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        grpo_advantages(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="eps"):
        grpo_advantages(torch.zeros(3), torch.zeros(3, dtype=torch.long), eps=-1.0)
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="traj_ids"):
        trajectory_grpo_advantages(torch.zeros(3), torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
