"""RLOO's leave-one-out advantage (serl/algo/rloo.py): a hand-derived example, the vectorised code against a
slow per-row loop, the empty batch and the refused knobs."""

from __future__ import annotations

import pytest
import torch

from serl.algo.rloo import RLOO, rloo_advantages
from serl.types import StepColumns
from tests.helpers import make_columns


def columns(episode_rewards, valid, groups, trajs, steps=None) -> StepColumns:
    return make_columns(groups, trajs, episode_rewards, valid=valid, steps=steps)


def slow_rloo(rewards, valid, groups, trajs, penalty=0.1):
    """The definition, one row at a time: s_i = R - penalty·[invalid]; v_j = mean score of trajectory j;
    A_i = s_i - mean_{j != traj(i), same group} v_j (0 baseline without another trajectory)."""
    scores = [r - penalty * (not ok) for r, ok in zip(rewards, valid)]
    members: dict[tuple[int, int], list[float]] = {}
    for s, g, t in zip(scores, groups, trajs):
        members.setdefault((g, t), []).append(s)
    value = {key: sum(v) / len(v) for key, v in members.items()}
    out = []
    for s, g, t in zip(scores, groups, trajs):
        others = [v for (gg, tt), v in value.items() if gg == g and tt != t]
        out.append(s - (sum(others) / len(others) if others else 0.0))
    return out


def test_rloo_hand_derived():
    # group 0: trajectories of outcome rewards 10, 0, 0 and lengths 1, 2, 1; the second step of trajectory 1 invalid.
    #   scores: tau0 [10], tau1 [0, -0.1], tau2 [0]; values v = 10, (0 - 0.1)/2 = -0.05, 0
    #   tau0: baseline (-0.05 + 0)/2 = -0.025       -> A = 10 + 0.025 = 10.025
    #   tau1: baseline (10 + 0)/2 = 5               -> A = 0 - 5 = -5, -0.1 - 5 = -5.1
    #   tau2: baseline (10 - 0.05)/2 = 4.975        -> A = -4.975
    # group 7: a single trajectory (K = 1) of 2 steps, won (10), its first step invalid: baseline 0 -> A = s = 9.9, 10
    cols = columns(
        [10.0, 0.0, 0.0, 0.0, 10.0, 10.0],
        [True, True, False, True, False, True],
        [0, 0, 0, 0, 7, 7],
        [0, 1, 1, 2, 0, 0],
        [0, 0, 1, 0, 0, 1],
    )
    got = RLOO()(cols)
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([10.025, -5.0, -5.1, -4.975, 9.9, 10.0], abs=1e-5)
    # without the penalty: values 10, 0, 0 -> 10, -5, -5, -5 and the singleton keeps its rewards
    assert RLOO(invalid_penalty=0.0)(cols).tolist() == pytest.approx([10.0, -5.0, -5.0, -5.0, 10.0, 10.0], abs=1e-6)


def test_rloo_baseline_excludes_the_trajectory_itself():
    # two trajectories with equal values get 0, whatever the group's other rewards: K = 2, each one's baseline is
    # the other's value
    cols = columns([3.0, 3.0, 3.0], [True] * 3, [0, 0, 0], [0, 1, 1], [0, 0, 1])
    assert RLOO()(cols).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rloo_vectorised_matches_the_slow_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n = 60
    groups = torch.randint(0, 5, (n,), generator=g) * 3 - 4  # non-contiguous, negative labels too
    trajs = torch.randint(0, 4, (n,), generator=g)
    # one outcome reward per trajectory (every row of a trajectory carries it)
    outcome = {(int(a), int(b)): float(torch.rand(1, generator=g) * 10) for a, b in zip(groups, trajs)}
    rewards = [outcome[(int(a), int(b))] for a, b in zip(groups, trajs)]
    valid = (torch.rand(n, generator=g) < 0.7).tolist()
    cols = columns(rewards, valid, groups.tolist(), trajs.tolist())
    want = slow_rloo(rewards, valid, groups.tolist(), trajs.tolist(), penalty=0.3)
    got = RLOO(invalid_penalty=0.3)(cols)
    assert got.tolist() == pytest.approx(want, abs=1e-5)
    # float64 input stays float64 and matches tightly
    scores = torch.tensor(rewards, dtype=torch.float64) - 0.3 * (~torch.tensor(valid)).double()
    got64 = rloo_advantages(scores, groups, trajs)
    assert got64.dtype == torch.float64 and got64.tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_rloo_empty_batch():
    out = RLOO()(columns([], [], [], []))
    assert out.shape == (0,) and out.dtype == torch.float32


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_rloo_refuses_bad_penalty(bad):
    with pytest.raises(ValueError, match=f"invalid_penalty must be a finite float >= 0, got {bad!r}"):
        RLOO(invalid_penalty=bad)


def test_rloo_refuses_bad_columns():
    with pytest.raises(ValueError, match="traj_ids must be an integer tensor"):
        rloo_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="group_ids must have length N=2"):
        rloo_advantages(torch.zeros(2), torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long))
