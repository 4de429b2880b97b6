"""GiGPO's two-level advantage (serl/algo/gigpo.py): hand-derived examples (both norms, an invalid step, rows
out of step order), the vectorised code against a slow per-row loop, the empty batch and the refused knobs."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from serl.algo.gigpo import GiGPO, discounted_returns
from serl.types import StepColumns
from tests.helpers import make_columns


def columns(episode_rewards, step_rewards, valid, groups, trajs, steps, anchors) -> StepColumns:
    return make_columns(groups, trajs, episode_rewards, valid=valid, steps=steps, step_rewards=step_rewards, anchors=anchors)


def slow_gigpo(cols: StepColumns, gamma, step_weight, norm, penalty, eps):
    """The definition, one row at a time, in Python floats."""
    rows = range(len(cols))
    g, t, s = cols.group_ids.tolist(), cols.traj_ids.tolist(), cols.step_ids.tolist()
    a, R = cols.anchor_ids.tolist(), cols.episode_rewards.tolist()
    r = [x - penalty * (not ok) for x, ok in zip(cols.step_rewards.tolist(), cols.valid.tolist())]

    def normalise(x, values, singleton_zero):
        if len(values) == 1:
            return 0.0 if singleton_zero else (x / (1 + eps) if norm == "mean_std" else x)
        mu = sum(values) / len(values)
        return (x - mu) / (statistics.stdev(values) + eps) if norm == "mean_std" else x - mu

    # episode level: one outcome per trajectory, stats over the group's trajectories (one trajectory: mu 0, sd 1)
    outcome = {(g[i], t[i]): R[i] for i in rows}
    adv_e = [normalise(R[i], [v for (gg, _), v in outcome.items() if gg == g[i]], False) for i in rows]
    # step level: G_t by backward recursion over the trajectory's rows in step order
    G = [0.0] * len(cols)
    for key in set(outcome):
        ordered = sorted((i for i in rows if (g[i], t[i]) == key), key=lambda i: s[i])
        acc = 0.0
        for i in reversed(ordered):
            acc = r[i] + gamma * acc
            G[i] = acc
    adv_s = [normalise(G[i], [G[j] for j in rows if (g[j], a[j]) == (g[i], a[i])], True) for i in rows]
    return [e + step_weight * x for e, x in zip(adv_e, adv_s)]


# trajectory 0 won: states a (anchor 0) then b (anchor 1), step rewards 0 then 10; trajectory 1 lost: states a then
# c (anchor 2), step rewards 0, 0. Episode rewards: 10 and 0.
WON_LOST = dict(
    episode_rewards=[10.0, 10.0, 0.0, 0.0], step_rewards=[0.0, 10.0, 0.0, 0.0], valid=[True] * 4,
    groups=[0, 0, 0, 0], trajs=[0, 0, 1, 1], steps=[0, 1, 0, 1], anchors=[0, 1, 0, 2],
)


def test_gigpo_hand_derived_mean_std():
    # A^E: R = 10, 0 -> mean 5, unbiased std sqrt(((10-5)^2 + (0-5)^2)/1) = sqrt(50); A^E = ±5/sqrt(50) = ±10/sqrt(200)
    #   = ±0.70711 (eps 1e-6 changes the 7th digit only)
    # A^S: returns G = [0 + 0.95·10, 10, 0, 0] = [9.5, 10, 0, 0]; anchor a holds 9.5 and 0: mean 4.75, std
    #   sqrt(2·4.75^2) = 6.7175 -> ±4.75/6.7175 = ±0.70711; anchors b and c have one step each -> 0
    # A = A^E + A^S = [1.41421, 0.70711, -1.41421, -0.70711]
    got = GiGPO()(columns(**WON_LOST))
    r = 10 / math.sqrt(200)
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([2 * r, r, -2 * r, -r], abs=1e-5)
    assert got.tolist() == pytest.approx([1.41421, 0.70711, -1.41421, -0.70711], abs=1e-5)
    # step_weight scales the step level only: 0 leaves A^E; 2 doubles A^S
    assert GiGPO(step_weight=0.0)(columns(**WON_LOST)).tolist() == pytest.approx([r, r, -r, -r], abs=1e-5)
    assert GiGPO(step_weight=2.0)(columns(**WON_LOST)).tolist() == pytest.approx([3 * r, r, -3 * r, -r], abs=1e-5)


def test_gigpo_hand_derived_mean():
    # A^E = R - 5 = ±5; A^S at anchor a: G - 4.75 = ±4.75; b, c: 0 -> [9.75, 5, -9.75, -5]
    got = GiGPO(norm="mean")(columns(**WON_LOST))
    assert got.tolist() == pytest.approx([9.75, 5.0, -9.75, -5.0], abs=1e-5)


def test_gigpo_invalid_step_and_rows_out_of_order():
    # trajectory 0 won in 2 steps: states a, b; step rewards 0, 10 (R = 10).
    # trajectory 1 lost in 3 steps: its invalid first action (r' = 0 - 0.1) leaves it in state a, then a valid
    #   step from a, then one from c (rewards 0, 0; R = 0). Its rows come in reverse step order in the batch.
    # gamma 0.5, norm mean:
    #   G: tau0 [0 + 0.5·10, 10] = [5, 10]; tau1 [-0.1 + 0.5·0 + 0.25·0, 0, 0] = [-0.1, 0, 0]
    #   anchor a = {5, -0.1, 0} (twice trajectory 1): mean 4.9/3 = 1.633333
    #     A^S = 5 - 1.633333 = 3.366667, -0.1 - 1.633333 = -1.733333, 0 - 1.633333 = -1.633333; b, c: 0
    #   A^E = ±5
    #   A (batch order: tau0 s0, tau0 s1, tau1 s2, tau1 s1, tau1 s0)
    #     = [5 + 3.366667, 5 + 0, -5 + 0, -5 - 1.633333, -5 - 1.733333]
    cols = columns(
        episode_rewards=[10.0, 10.0, 0.0, 0.0, 0.0], step_rewards=[0.0, 10.0, 0.0, 0.0, 0.0],
        valid=[True, True, True, True, False], groups=[3, 3, 3, 3, 3], trajs=[0, 0, 1, 1, 1],
        steps=[0, 1, 2, 1, 0], anchors=[5, 6, 7, 5, 5],
    )
    got = GiGPO(gamma=0.5, norm="mean")(cols)
    assert got.tolist() == pytest.approx([8.366667, 5.0, -5.0, -6.633333, -6.733333], abs=1e-5)
    # without the penalty anchor a is {5, 0, 0}: mean 5/3 -> A^S = 10/3, -5/3, -5/3
    got = GiGPO(gamma=0.5, norm="mean", invalid_penalty=0.0)(cols)
    assert got.tolist() == pytest.approx([5 + 10 / 3, 5.0, -5.0, -5 - 5 / 3, -5 - 5 / 3], abs=1e-5)


def test_discounted_returns():
    # one trajectory with rewards 1, 2, 3 listed as steps 2, 0, 1 (so in step order: 2, 3, 1):
    #   gamma 0.5: G(step 0) = 2 + 0.5·3 + 0.25·1 = 3.75, G(step 1) = 3 + 0.5·1 = 3.5, G(step 2) = 1
    #   gamma 0: G = r; gamma 1: suffix sums 6, 4, 1
    # a second trajectory (other group, same traj id) of one step is independent: G = its reward
    r = torch.tensor([1.0, 2.0, 3.0, 7.0])
    gid, tid, sid = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]), torch.tensor([2, 0, 1, 0])
    assert discounted_returns(r, gid, tid, sid, 0.5).tolist() == [1.0, 3.75, 3.5, 7.0]
    assert discounted_returns(r, gid, tid, sid, 0.0).tolist() == [1.0, 2.0, 3.0, 7.0]
    assert discounted_returns(r, gid, tid, sid, 1.0).tolist() == [1.0, 6.0, 4.0, 7.0]
    with pytest.raises(ValueError, match="step_ids must be unique within a trajectory: .* step_id 0"):
        discounted_returns(r, gid, tid, torch.tensor([0, 0, 1, 0]), 0.5)


def random_columns(seed: int) -> StepColumns:
    rng = random.Random(seed)
    rows = []
    for group in rng.sample(range(-5, 20), 4):  # non-contiguous labels
        for traj in range(rng.randint(1, 4)):  # groups with a single trajectory too
            length = rng.randint(1, 7)
            rewards = [rng.choice([0.0, 0.0, 1.0, 10.0]) for _ in range(length)]
            for step in range(length):
                state = rng.randint(0, 3)  # few states: anchors shared across and within trajectories
                rows.append((sum(rewards), rewards[step], rng.random() < 0.75, group, traj, step, 100 * group + state))
    rng.shuffle(rows)  # rows of a trajectory out of step order
    return columns(*map(list, zip(*rows)))


@pytest.mark.parametrize(
    "seed, gamma, step_weight, norm, penalty",
    [(0, 0.95, 1.0, "mean_std", 0.1), (1, 0.5, 0.5, "mean", 0.3), (2, 1.0, 2.0, "mean_std", 0.0), (3, 0.0, 1.0, "mean", 0.1)],
)
def test_gigpo_vectorised_matches_the_slow_loop(seed, gamma, step_weight, norm, penalty):
    cols = random_columns(seed)
    got = GiGPO(gamma=gamma, step_weight=step_weight, norm=norm, invalid_penalty=penalty)(cols)
    want = slow_gigpo(cols, gamma, step_weight, norm, penalty, 1e-6)
    assert got.tolist() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_gigpo_empty_batch():
    out = GiGPO()(columns([], [], [], [], [], [], []))
    assert out.shape == (0,) and out.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"gamma": 1.5}, "gamma must be a float in \\[0, 1\\], got 1.5"),
        ({"gamma": -0.1}, "gamma must be a float in \\[0, 1\\], got -0.1"),
        ({"step_weight": -1.0}, "step_weight must be a finite float >= 0, got -1.0"),
        ({"step_weight": float("inf")}, "step_weight must be a finite float >= 0, got inf"),
        ({"norm": "std"}, "norm='std' is not one of mean_std, mean"),
        ({"invalid_penalty": -0.1}, "invalid_penalty must be a finite float >= 0, got -0.1"),
        ({"eps": float("nan")}, "eps must be a finite float >= 0, got nan"),
    ],
)
def test_gigpo_refuses_bad_knobs(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GiGPO(**kwargs)
