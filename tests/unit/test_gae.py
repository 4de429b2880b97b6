"""PPO's critic side (serl/algo/gae.py): GAE over turns and the clipped value loss on hand-derived examples, the
vectorised GAE against a slow per-trajectory loop, whitening, the estimator part and its refused inputs."""

from __future__ import annotations

import random

import pytest
import torch

from serl.algo.gae import GAE, clipped_value_loss, gae_advantages, whiten
from tests.helpers import make_columns

LONG = torch.long


def ids(xs):
    return torch.tensor(xs, dtype=LONG)


def test_gae_hand_derived():
    # one trajectory, r' = 0, -0.1, 10; V = 1, 2, 4; gamma = lam = 0.5 (gamma*lam = 0.25)
    #   delta = 0 + 0.5*2 - 1 = 0 | -0.1 + 0.5*4 - 2 = -0.1 | 10 + 0 - 4 = 6   (the value after the last step is 0)
    #   A_2 = 6, A_1 = -0.1 + 0.25*6 = 1.4, A_0 = 0 + 0.25*1.4 = 0.35; R = A + V = 1.35, 3.4, 10
    adv, ret = gae_advantages(torch.tensor([0.0, -0.1, 10.0]), torch.tensor([1.0, 2.0, 4.0]),
                              ids([0, 0, 0]), ids([0, 0, 0]), ids([0, 1, 2]), gamma=0.5, lam=0.5)
    assert adv.tolist() == pytest.approx([0.35, 1.4, 6.0], abs=1e-6)
    assert ret.tolist() == pytest.approx([1.35, 3.4, 10.0], abs=1e-6)


def test_gae_limits_lam_zero_is_td_error_and_lam_one_is_the_return_minus_the_value():
    r, v = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 1.5])
    g, t, s = ids([0] * 3), ids([0] * 3), ids([0, 1, 2])
    td, _ = gae_advantages(r, v, g, t, s, gamma=0.9, lam=0.0)
    assert td.tolist() == pytest.approx([1 + 0.9 * 1.0 - 0.5, 2 + 0.9 * 1.5 - 1.0, 3 - 1.5], abs=1e-6)
    mc, ret = gae_advantages(r, v, g, t, s, gamma=0.9, lam=1.0)
    returns = [1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3.0]
    assert ret.tolist() == pytest.approx(returns, abs=1e-6)
    assert mc.tolist() == pytest.approx([x - y for x, y in zip(returns, v.tolist())], abs=1e-6)


def slow_gae(rewards, values, groups, trajs, steps, gamma, lam):
    """The definition, one trajectory at a time, backwards over its steps."""
    adv = [0.0] * len(rewards)
    for key in {(g, t) for g, t in zip(groups, trajs)}:
        rows = sorted((i for i in range(len(rewards)) if (groups[i], trajs[i]) == key), key=lambda i: steps[i])
        running, next_value = 0.0, 0.0
        for i in reversed(rows):
            delta = rewards[i] + gamma * next_value - values[i]
            running = delta + gamma * lam * running
            adv[i], next_value = running, values[i]
    return adv


def test_gae_matches_the_slow_loop_on_shuffled_rows():
    rng = random.Random(3)
    rows = [(g, t, s) for g in (4, 9) for t in range(3) for s in range(rng.randint(1, 5))]
    rng.shuffle(rows)  # rows of a trajectory need not be adjacent or in order
    groups, trajs, steps = map(list, zip(*rows))
    rewards = [rng.choice([0.0, -0.1, 10.0]) for _ in rows]
    values = [rng.uniform(-2, 8) for _ in rows]
    adv, ret = gae_advantages(torch.tensor(rewards), torch.tensor(values), ids(groups), ids(trajs), ids(steps), 0.95, 0.9)
    expected = slow_gae(rewards, values, groups, trajs, steps, 0.95, 0.9)
    assert adv.tolist() == pytest.approx(expected, abs=1e-4)
    assert ret.tolist() == pytest.approx([a + v for a, v in zip(expected, values)], abs=1e-4)


def test_whiten_hand_derived():
    assert whiten(torch.tensor([1.0, 2.0, 3.0]), eps=0.0).tolist() == pytest.approx([-1.0, 0.0, 1.0])  # std 1
    assert whiten(torch.tensor([5.0])).tolist() == [0.0]  # one row: only centred
    assert whiten(torch.zeros(0)).numel() == 0


def test_clipped_value_loss_hand_derived():
    # V = 1, 3; V_old = 0, 0; R = 2, 0; clip 0.5 -> V_clip = 0.5, 0.5
    #   row 0: (1-2)^2 = 1, (0.5-2)^2 = 2.25 -> 2.25 (the clipped error is larger)
    #   row 1: (3-0)^2 = 9, (0.5-0)^2 = 0.25 -> 9
    #   loss = 0.5 * (2.25 + 9) / 2 = 2.8125; clipfrac 1/2; mean |V - R| = (1 + 3) / 2 = 2
    v = torch.tensor([1.0, 3.0], requires_grad=True)
    loss, stats = clipped_value_loss(v, torch.zeros(2), torch.tensor([2.0, 0.0]), value_clip=0.5)
    assert float(loss.detach()) == pytest.approx(2.8125)
    assert stats == pytest.approx({"value_loss": 2.8125, "value_clipfrac": 0.5, "value_error": 2.0})
    loss.backward()
    assert v.grad.tolist() == pytest.approx([0.0, 1.5])  # row 0 is clipped: no gradient; row 1: 0.5*2*3/2
    plain, _ = clipped_value_loss(torch.tensor([1.0, 3.0]), torch.zeros(2), torch.tensor([2.0, 0.0]), value_clip=None)
    assert float(plain) == pytest.approx(0.5 * (1 + 9) / 2)


def test_gae_estimator_reads_the_critic_values_and_whitens():
    # two one-step trajectories (rewards 10 and 0, values 4 and 1): A = 6, -1; R = 10, 0; whitened: +-1/sqrt(2)
    cols = make_columns([0, 0], [0, 1], [10.0, 0.0], step_rewards=[10.0, 0.0], values=[4.0, 1.0])
    assert GAE(whiten=False)(cols).tolist() == pytest.approx([6.0, -1.0])
    assert GAE(eps=0.0)(cols).tolist() == pytest.approx([2 ** -0.5, -(2 ** -0.5)], abs=1e-6)
    assert GAE().value_targets(cols).tolist() == pytest.approx([10.0, 0.0])
    # the invalid penalty enters the step reward: an invalid losing step has r' = -0.1
    invalid = make_columns([0], [0], [0.0], valid=[False], values=[0.0])
    assert GAE(whiten=False)(invalid).tolist() == pytest.approx([-0.1])


def test_gae_refuses_missing_values_and_bad_knobs():
    with pytest.raises(ValueError, match="algorithm/critic=head"):
        GAE()(make_columns([0], [0], [0.0]))
    with pytest.raises(ValueError, match="gamma must be a float in"):
        GAE(gamma=1.5)
    with pytest.raises(ValueError, match="lam must be a float in"):
        GAE(lam=-0.1)
    with pytest.raises(ValueError, match="values must be finite"):
        gae_advantages(torch.zeros(1), torch.tensor([float("nan")]), ids([0]), ids([0]), ids([0]), 0.9, 0.9)
    with pytest.raises(ValueError, match="value_clip must be"):
        clipped_value_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), value_clip=0.0)
