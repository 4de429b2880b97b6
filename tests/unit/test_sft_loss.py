"""serl.algo.loss.sft_nll: token-mean NLL over response tokens only (docs/design.md §5 "Warm start"), by hand.

The end-to-end case uses a bigram "model" whose next-token log-probs are a fixed table, so every scored
log-prob is known exactly: the loss must count the response tokens (the first one conditioned on the last
prompt token) and nothing of the prompt or of the padding.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from serl.algo.loss import sft_nll
from serl.policy.logprobs import pad_prompt_response, response_logprobs

LN2 = math.log(2.0)


def test_hand_values_padding_and_gradient():
    # row 0: two response tokens, one padding; row 1: one response token, two padding
    lp = torch.tensor([[-0.5, -1.0, -7.0], [-2.0, -9.0, -9.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float32)
    loss = sft_nll(lp, mask)
    # (0.5 + 1.0 + 2.0) / 3 tokens; the padding values (-7, -9) never count
    assert loss.item() == pytest.approx(3.5 / 3, abs=1e-12)
    loss.backward()
    third = -1.0 / 3
    assert torch.allclose(lp.grad, torch.tensor([[third, third, 0.0], [third, 0.0, 0.0]], dtype=torch.float64))


def test_padding_may_hold_inf_and_nan():
    lp = torch.tensor([[-0.5, float("-inf")], [-1.5, float("nan")]], requires_grad=True)
    mask = torch.tensor([[True, False], [True, False]])
    loss = sft_nll(lp, mask)
    assert loss.item() == pytest.approx(1.0)  # (0.5 + 1.5) / 2
    loss.backward()
    assert torch.isfinite(lp.grad).all()
    assert lp.grad.tolist() == [[-0.5, 0.0], [-0.5, 0.0]]


def test_token_mean_weighs_tokens_not_rows():
    # row mean would be (1 + 4) / 2 = 2.5; token mean is (1+1+1+1 + 4) / 5 = 1.6
    lp = -torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert sft_nll(lp, mask).item() == pytest.approx(1.6)


def test_empty_mask_is_zero_and_bad_shapes_fail():
    assert sft_nll(torch.full((2, 3), -1.0), torch.zeros(2, 3)).item() == 0.0
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        sft_nll(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="response_mask"):
        sft_nll(torch.zeros(2, 3), torch.ones(2, 4))


# -- through the real padding + log-prob path -------------------------------------------------------

# P[x] = next-token distribution after token x (vocabulary {0, 1, 2})
P = torch.tensor(
    [
        [0.5, 0.25, 0.25],  # after 0
        [0.25, 0.25, 0.5],  # after 1
        [0.25, 0.5, 0.25],  # after 2
    ]
)


class _Bigram(torch.nn.Module):
    """logits[b, t] = log P[input_ids[b, t]]: the log-prob of token y after token x is log P[x, y]."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(P.log().clone())

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return SimpleNamespace(logits=self.table[input_ids])


def test_prompt_tokens_never_contribute():
    model = _Bigram()
    prompts = [[0, 1], [1]]
    responses = [[2, 0], [1]]
    ids, am, rm = pad_prompt_response(prompts, responses, pad_id=0)
    lp = response_logprobs(model, ids, am, n_response=rm.shape[1], grad=True)
    # row 0 scores 2 after 1 (P=0.5) and 0 after 2 (P=0.25); row 1 scores 1 after 1 (P=0.25), then padding.
    # The prompt transition 1-after-0 (P=0.25) is NOT scored.
    assert torch.allclose(lp, torch.tensor([[-LN2, -2 * LN2], [-2 * LN2, 0.0]]), atol=1e-6)
    loss = sft_nll(lp, rm)
    assert loss.item() == pytest.approx((LN2 + 2 * LN2 + 2 * LN2) / 3, abs=1e-6)  # 5/3 ln 2
    loss.backward()
    # gradient reaches only the table rows of tokens that precede a response token: 1 (rows 0, 1) and 2;
    # row 0 of the table (token 0 precedes only the prompt's token 1) gets none
    assert model.table.grad[0].abs().sum().item() == 0.0
    assert model.table.grad[1].abs().sum().item() > 0 and model.table.grad[2].abs().sum().item() > 0
