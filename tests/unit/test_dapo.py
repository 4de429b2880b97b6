"""DAPO's parts (serl/algo/dapo.py): the clip-higher loss with overlong filtering and dynamic sampling."""

from __future__ import annotations

import math

import pytest
import torch

from serl.algo.dapo import DAPO, DynamicSampling
from serl.algo.loss import PPOClip
from serl.algo.sampling import KeepAll
from serl.types import LossInputs, StepColumns
from tests.helpers import make_columns


def inputs(log_ratio, advantages, truncated) -> LossInputs:
    """Rows of 2 response tokens; old log-prob −1, current −1 + log_ratio."""
    n = len(advantages)
    old = torch.full((n, 2), -1.0)
    return LossInputs(
        logprobs=(old + torch.tensor(log_ratio)).requires_grad_(True), old_logprobs=old,
        advantages=torch.tensor(advantages)[:, None].expand(n, 2).clone(), response_mask=torch.ones(n, 2),
        action_mask=torch.ones(n, 2), teacher_logprobs=torch.zeros(n, 2), has_context=torch.zeros(n, dtype=torch.bool),
        truncated=torch.tensor(truncated),
    )


def test_overlong_filter_drops_truncated_rows_from_loss_and_token_mean():
    # row 0: ratio 1, A = +1 -> token loss −1 (twice); row 1 (truncated): ratio 1, A = −2 -> max(2, 2) = 2,
    # dual clip min(2, 6) = 2 (twice). Filtered: mean over row 0's tokens = −1. Unfiltered: (−1 −1 +2 +2)/4 = 0.5.
    x = inputs([[0.0, 0.0], [0.0, 0.0]], [1.0, -2.0], [False, True])
    loss, stats = DAPO()(x)
    assert float(loss.detach()) == pytest.approx(-1.0) and stats["overlong_filtered"] == 0.5
    loss.backward()
    assert x.logprobs.grad[1].abs().sum() == 0 and x.logprobs.grad[0].abs().sum() > 0  # no gradient from row 1
    assert float(DAPO(overlong_filter=False)(x)[0].detach()) == pytest.approx(0.5)
    no_flags = inputs([[0.0, 0.0], [0.0, 0.0]], [1.0, -2.0], [False, True])
    no_flags.truncated = None  # a batch built without the flags: nothing is filtered
    assert float(DAPO()(no_flags)[0].detach()) == pytest.approx(0.5)


def test_clip_higher_lets_a_positive_token_grow_to_1_28():
    # ratio e^{log 1.25} = 1.25, A = +1: PPO-clip (0.2) caps the surrogate at 1.2, DAPO (0.28) not yet
    r = math.log(1.25)
    x = inputs([[r, r]], [1.0], [False])
    assert float(PPOClip()(x)[0].detach()) == pytest.approx(-1.2)
    assert float(DAPO()(x)[0].detach()) == pytest.approx(-1.25)
    assert not DAPO().uses_entropy  # entropy_coef 0 by default
    with pytest.raises(ValueError, match="clip_high must be a finite float >= 0, got -0.1"):
        DAPO(clip_high=-0.1)


def cols(groups, rewards) -> StepColumns:
    return make_columns(groups, [0] * len(groups), rewards)


def test_dynamic_sampling_keeps_groups_whose_outcomes_differ():
    # group 3: rewards 10 and 0 (kept); group 5: all 0; group 7: all 10; group 9: one row (nothing to compare)
    c = cols([3, 3, 3, 5, 5, 7, 7, 9], [10.0, 10.0, 0.0, 0.0, 0.0, 10.0, 10.0, 10.0])
    assert DynamicSampling()(c).tolist() == [True, True, True, False, False, False, False, False]
    assert DynamicSampling()(cols([], [])).tolist() == []
    assert KeepAll()(c).all() and KeepAll.max_rounds == 1 and DynamicSampling().max_rounds == 3
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="max_rounds must be an integer >= 1"):
            DynamicSampling(max_rounds=bad)
