"""serl.algo.loss: dual-clip PPO by hand (docs/reference.md §1.6), gradients, entropy, masked mean."""

from __future__ import annotations

import math

import pytest
import torch

from serl.algo.loss import masked_mean, ppo_clip_loss, token_entropy

# one token per case; clip 0.2, dual clip c = 3
#            A     r     L1 = −A r  L2 = −A clip(r)  max      dual (A<0)   L      d L / d logprob
CASES = [
    (1.0, 1.1),  # −1.1  −1.1  −1.1                        −1.1   −A r = −1.1   (inside the clip)
    (1.0, 1.5),  # −1.5  −1.2  −1.2 (clipped)              −1.2    0
    (1.0, 0.5),  # −0.5  −0.8  −0.5 (pessimistic side)     −0.5   −0.5
    (-1.0, 0.5),  #  0.5   0.8   0.8 (clipped)  min(0.8,3)   0.8    0
    (-1.0, 1.1),  #  1.1   1.1   1.1                         1.1    1.1
    (-1.0, 5.0),  #  5.0   1.2   5.0            min(5,3)     3.0    0   (dual clip)
    (-1.0, 2.0),  #  2.0   1.2   2.0            min(2,3)     2.0    2.0
]
TOKEN_LOSS = [-1.1, -1.2, -0.5, 0.8, 1.1, 3.0, 2.0]
TOKEN_GRAD = [-1.1, 0.0, -0.5, 0.0, 1.1, 0.0, 2.0]


def _batch(pad_value=0.0):
    """One row of the 7 cases plus one padding token (A = 2, r = e^3, masked out)."""
    adv = torch.tensor([[a for a, _ in CASES] + [2.0]], dtype=torch.float64)
    old = torch.full((1, 8), -1.0, dtype=torch.float64)
    new = old + torch.tensor([[math.log(r) for _, r in CASES] + [3.0]], dtype=torch.float64)
    new[0, 7] = pad_value
    mask = torch.tensor([[True] * 7 + [False]])
    return new.requires_grad_(True), old, adv, mask


def test_hand_values_and_stats():
    new, old, adv, mask = _batch()
    loss, stats = ppo_clip_loss(new, old, adv, mask)
    n = len(CASES)
    assert loss.item() == pytest.approx(sum(TOKEN_LOSS) / n)  # 4.1 / 7
    assert stats["pg_loss"] == pytest.approx(4.1 / 7)
    assert stats["pg_clipfrac"] == pytest.approx(2 / 7)  # cases 2 and 4: the clipped surrogate is larger
    assert stats["pg_clipfrac_lower"] == pytest.approx(1 / 7)  # case 6: dual clip
    assert stats["ppo_kl"] == pytest.approx(-sum(math.log(r) for _, r in CASES) / n)
    assert stats["entropy"] == 0.0


def test_gradient_zero_for_clipped_tokens():
    new, old, adv, mask = _batch()
    loss, _ = ppo_clip_loss(new, old, adv, mask)
    loss.backward()
    expected = torch.tensor([[g / len(CASES) for g in TOKEN_GRAD] + [0.0]], dtype=torch.float64)
    torch.testing.assert_close(new.grad, expected)


@pytest.mark.parametrize("pad_value", [float("inf"), float("nan"), -float("inf")])
def test_padding_garbage_is_ignored(pad_value):
    new, old, adv, mask = _batch(pad_value=pad_value)
    old[0, 7] = -float("inf")
    adv[0, 7] = float("nan")
    loss, stats = ppo_clip_loss(new, old, adv, mask)
    loss.backward()
    assert loss.item() == pytest.approx(4.1 / 7)
    assert torch.isfinite(new.grad).all() and new.grad[0, 7] == 0.0
    assert all(math.isfinite(v) for v in stats.values())


def test_asymmetric_clip_and_custom_dual_clip():
    # clip_high 0.28: r = 1.25 for A>0 is inside the clip now; c = 2 caps r = 2.5 with A<0 at 2
    adv = torch.tensor([[1.0, -1.0]])
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.25, 2.5]]))
    loss, stats = ppo_clip_loss(new, old, adv, torch.ones(1, 2), clip_low=0.1, clip_high=0.28, clip_c=2.0)
    assert loss.item() == pytest.approx((-1.25 + 2.0) / 2)
    assert stats["pg_clipfrac"] == 0.0 and stats["pg_clipfrac_lower"] == pytest.approx(0.5)


def test_entropy_term():
    new, old, adv, mask = _batch()
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0]], dtype=torch.float64)
    loss, stats = ppo_clip_loss(new, old, adv, mask, entropy=entropy, entropy_coef=0.01)
    assert stats["entropy"] == pytest.approx(4.0)  # padding (100) excluded
    assert stats["pg_loss"] == pytest.approx(4.1 / 7)
    assert loss.item() == pytest.approx(4.1 / 7 - 0.01 * 4.0)
    loss0, _ = ppo_clip_loss(new, old, adv, mask, entropy=entropy, entropy_coef=0.0)
    assert loss0.item() == pytest.approx(4.1 / 7)


def test_entropy_gradient_flows_from_logits():
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    ent = token_entropy(logits)
    lp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = ppo_clip_loss(lp, torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), entropy=ent, entropy_coef=1.0)
    assert loss.item() == pytest.approx(-math.log(3))
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_token_entropy_hand_values():
    inf = float("inf")
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -inf, -inf], [5.0, -inf, -inf, -inf]]], requires_grad=True
    )
    ent = token_entropy(logits)
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(ent, torch.tensor([[math.log(4.0), h2, 0.0]]))
    ent.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert token_entropy(torch.zeros(2, 3, 5, dtype=torch.bfloat16)).dtype == torch.float32


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), float("inf")]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, False, False]])
    out = masked_mean(x, mask)
    assert out.item() == pytest.approx((1 + 3 + 4) / 3)
    out.backward()
    torch.testing.assert_close(x.grad, mask.float() / 3)
    empty = masked_mean(torch.ones(2, 2, requires_grad=True), torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()
    assert masked_mean(torch.tensor([1.0, 3.0]), torch.tensor([1, 1])).item() == 2.0


def test_validation():
    t = torch.zeros(2, 3)
    m = torch.ones(2, 3)
    with pytest.raises(ValueError, match="old_logprobs"):
        ppo_clip_loss(t, torch.zeros(2, 2), t, m)
    with pytest.raises(ValueError, match="entropy"):
        ppo_clip_loss(t, t, t, m, entropy=torch.zeros(3))
    with pytest.raises(ValueError, match=r"clip_low must be a float in \[0, 1\]"):
        ppo_clip_loss(t, t, t, m, clip_low=1.5)
    with pytest.raises(ValueError, match="clip_high must be a finite float >= 0"):
        ppo_clip_loss(t, t, t, m, clip_high=-0.1)
    with pytest.raises(ValueError, match="clip_c must be a finite float > 1"):
        ppo_clip_loss(t, t, t, m, clip_c=1.0)
    with pytest.raises(ValueError, match="entropy_coef must be a finite float >= 0"):
        ppo_clip_loss(t, t, t, m, entropy_coef=-1.0)
    with pytest.raises(ValueError, match="mask"):
        masked_mean(t, torch.ones(3))
    with pytest.raises(ValueError, match="logits"):
        token_entropy(torch.zeros(2, 0))
