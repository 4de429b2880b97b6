"""serl.algo.gspo: GSPO's sequence-ratio loss by hand (Zheng et al. 2025), its gradient, seq-mean-token-mean
aggregation, padding, the LossInputs wrapper and its knobs."""

from __future__ import annotations

import math

import pytest
import torch

from serl.algo.gspo import GSPO, gspo_loss
from serl.algo.loss import LOG_RATIO_CLAMP
from serl.types import LossInputs

F64 = torch.float64


def _one_row(log_ratios, adv, old=-1.0):
    lr = torch.tensor([log_ratios], dtype=F64)
    old_lp = torch.full_like(lr, old)
    new = (old_lp + lr).requires_grad_(True)
    return new, old_lp, torch.full_like(lr, adv), torch.ones_like(lr, dtype=torch.bool)


def test_positive_advantage_clipped_sequence_has_loss_at_the_bound_and_no_gradient():
    # log ratios 0.1, 0.3 → mean 0.2 → s = e^0.2 = 1.22140 > 1 + 0.2; A = 1:
    # L_t = −min(s·1, clip(s)·1) = −min(1.2214, 1.2) = −1.2 on both tokens; row mean −1.2; the clipped branch is
    # a constant, so the gradient is 0
    new, old, adv, mask = _one_row([0.1, 0.3], 1.0)
    loss, stats = gspo_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx(-1.2)
    loss.backward()
    assert torch.equal(new.grad, torch.zeros_like(new))
    assert stats["pg_loss"] == pytest.approx(-1.2)
    assert stats["pg_clipfrac"] == 1.0
    assert stats["seq_ratio_mean"] == pytest.approx(math.exp(0.2))
    assert stats["ppo_kl"] == pytest.approx(-0.2)  # token mean of old − new = −(0.1 + 0.3)/2
    assert stats["entropy"] == 0.0


def test_negative_advantage_takes_the_unclipped_pessimistic_side():
    # same ratio, A = −1: L_t = −min(−s, −clip(s)) = max(s, clip(s)) = max(1.2214, 1.2) = s = e^0.2 (unclipped);
    # gradient: L_t = −A·sg[s]·exp(ℓ_t − sg[ℓ_t]) → ∂L_t/∂ℓ_t = −A·s = s; row mean over 2 tokens → s/2 = 0.61070
    new, old, adv, mask = _one_row([0.1, 0.3], -1.0)
    loss, stats = gspo_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx(math.exp(0.2))
    loss.backward()
    torch.testing.assert_close(new.grad, torch.full_like(new, math.exp(0.2) / 2))
    assert stats["pg_clipfrac"] == 0.0


def test_negative_advantage_below_the_range_is_clipped():
    # log ratios −0.5, −0.1 → s = e^−0.3 = 0.74082 < 1 − 0.2; A = −1: L = max(s, clip(s)) = max(0.7408, 0.8) = 0.8
    new, old, adv, mask = _one_row([-0.5, -0.1], -1.0)
    loss, stats = gspo_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx(0.8)
    loss.backward()
    assert torch.equal(new.grad, torch.zeros_like(new)) and stats["pg_clipfrac"] == 1.0


def test_gradient_is_the_sequence_gradient():
    # Unclipped, A constant over row i: pg_loss_i = (1/|y_i|) Σ_t −A·sg[s_i]·exp(ℓ_t − sg[ℓ_t]), and each factor
    # exp(ℓ_t − sg[ℓ_t]) has value 1 and derivative 1 w.r.t. ℓ_t, so ∂pg_loss_i/∂ℓ_t = −A·s_i/|y_i|. This is the
    # derivative of the sequence form −A·s_i: s_i = exp((1/|y_i|) Σ_u (ℓ_u − ℓold_u)) → ∂s_i/∂ℓ_t = s_i/|y_i|.
    # With two rows the mean over rows adds a factor 1/2.
    lr = torch.tensor([[0.01, -0.02, 0.04], [0.03, -0.01, 0.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([[0.7] * 3, [-1.3] * 3], dtype=F64)
    old = torch.full_like(lr, -2.0)
    new = (old + lr).requires_grad_(True)
    loss, stats = gspo_loss(new, old, adv, mask, clip_low=0.5, clip_high=0.5)  # wide: nothing clipped
    loss.backward()
    s = [math.exp(0.03 / 3), math.exp(0.02 / 2)]
    want = torch.tensor([[-0.7 * s[0] / 3] * 3, [1.3 * s[1] / 2] * 2 + [0.0]], dtype=F64) / 2
    torch.testing.assert_close(new.grad, want)
    assert stats["pg_clipfrac"] == 0.0 and stats["seq_ratio_mean"] == pytest.approx(sum(s) / 2)
    # the same gradient from the sequence form −mean_i(A_i·s_i) written directly
    new2 = (old + lr).requires_grad_(True)
    seq = torch.stack([((new2[0] - old[0]).mean()).exp(), ((new2[1, :2] - old[1, :2]).mean()).exp()])
    (-(torch.tensor([0.7, -1.3], dtype=F64) * seq).mean()).backward()
    torch.testing.assert_close(new.grad, new2.grad)


def test_seq_mean_token_mean_differs_from_token_mean():
    # ratios 1 (log ratio 0) everywhere, nothing clipped: L_t = −A_t.
    # row 0: 3 tokens, A = 1 → row mean −1; row 1: 1 token, A = −2 → row mean 2.
    # seq-mean-token-mean: (−1 + 2)/2 = 0.5; the token mean would be (−3 + 2)/4 = −0.25
    old = torch.zeros(2, 3, dtype=F64)
    new = old.clone().requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, 5.0, 5.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss, _ = gspo_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx(0.5)
    assert loss.item() != pytest.approx(-0.25)
    # a row with no response token is left out of the mean over rows, and an empty batch gives 0
    loss3, _ = gspo_loss(
        torch.cat([new, torch.zeros(1, 3, dtype=F64)]), torch.cat([old, old[:1]]), torch.cat([adv, adv[:1]]),
        torch.cat([mask, torch.zeros(1, 3)]), clip_low=0.2, clip_high=0.2,
    )
    assert loss3.item() == pytest.approx(0.5)
    empty, stats = gspo_loss(new, old, adv, torch.zeros(2, 3))
    assert empty.item() == 0.0 and all(v == 0.0 for v in stats.values())


@pytest.mark.parametrize("pad_value", [float("inf"), float("nan"), -float("inf")])
def test_padding_garbage_is_ignored(pad_value):
    # row [0.1, 0.3, pad]: the same numbers as the hand case with A = −1 (loss e^0.2, gradient e^0.2/2)
    new = torch.tensor([[-0.9, -0.7, pad_value]], dtype=F64).requires_grad_(True)
    old = torch.tensor([[-1.0, -1.0, -float("inf")]], dtype=F64)
    adv = torch.tensor([[-1.0, -1.0, float("nan")]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    entropy = torch.tensor([[1.0, 3.0, float("nan")]], dtype=F64)
    loss, stats = gspo_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.2, entropy=entropy, entropy_coef=0.1)
    loss.backward()
    assert loss.item() == pytest.approx(math.exp(0.2) - 0.1 * 2.0)
    torch.testing.assert_close(new.grad, torch.tensor([[math.exp(0.2) / 2] * 2 + [0.0]], dtype=F64))
    assert all(math.isfinite(v) for v in stats.values()) and stats["entropy"] == pytest.approx(2.0)


def test_mean_log_ratio_is_clamped_as_serls_guard():
    # mean log ratio 100 would overflow nothing in float64 but e^100 in float32 is inf; serl caps it at e^20
    new, old, adv, mask = _one_row([100.0, 100.0], -1.0)
    loss, stats = gspo_loss(new.float(), old.float(), adv.float(), mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx(math.exp(LOG_RATIO_CLAMP), rel=1e-5)
    assert stats["ppo_kl"] == pytest.approx(-100.0)  # unclamped
    leaf = new.detach().float().requires_grad_(True)
    gspo_loss(leaf, old.float(), adv.float(), mask, clip_low=0.2, clip_high=0.2)[0].backward()
    assert torch.isfinite(leaf.grad).all()


def _slow_gspo(new, old, adv, mask, clip_low, clip_high):
    """Row by row, token by token, with the sequence form's value (the reference for the vectorised one)."""
    rows = []
    for i in range(new.shape[0]):
        idx = [t for t in range(new.shape[1]) if mask[i, t] > 0]
        if not idx:
            continue
        mean_lr = sum(new[i, t] - old[i, t] for t in idx) / len(idx)
        s = torch.exp(mean_lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).detach())
        terms = []
        for t in idx:
            s_t = s * torch.exp(new[i, t] - new[i, t].detach())
            a = adv[i, t]
            terms.append(-torch.minimum(s_t * a, torch.clamp(s_t, 1 - clip_low, 1 + clip_high) * a))
        rows.append(sum(terms) / len(idx))
    return sum(rows) / len(rows)


def test_vectorised_equals_a_slow_per_row_loop():
    g = torch.Generator().manual_seed(0)
    n, t = 7, 9
    old = -torch.rand(n, t, generator=g, dtype=F64) * 3
    lr = (torch.rand(n, t, generator=g, dtype=F64) - 0.5) * 0.02  # ratios near 1: some inside the range, some out
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    mask[0], mask[1] = 1.0, 0.0  # a full row and an empty one
    # a row-constant advantage on some rows, a per-token one (as after SERL's reweighting) on others
    adv = torch.randn(n, 1, generator=g, dtype=F64).expand(n, t).clone()
    adv[::2] *= 1 + 0.2 * torch.rand(adv[::2].shape, generator=g, dtype=F64)
    for clip in ((3e-4, 4e-4), (0.002, 0.003)):
        a = (old + lr).requires_grad_(True)
        b = (old + lr).requires_grad_(True)
        loss, _ = gspo_loss(a, old, adv, mask, clip_low=clip[0], clip_high=clip[1])
        want = _slow_gspo(b, old, adv, mask, *clip)
        loss.backward()
        want.backward()
        torch.testing.assert_close(loss, want)
        torch.testing.assert_close(a.grad, b.grad)


def _inputs(entropy=None):
    g = torch.Generator().manual_seed(1)
    lp = -torch.rand(3, 4, generator=g)
    return LossInputs(
        logprobs=lp.requires_grad_(True), old_logprobs=lp.detach() + 0.001, advantages=torch.randn(3, 1, generator=g).expand(3, 4),
        response_mask=torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]), action_mask=torch.zeros(3, 4),
        teacher_logprobs=torch.zeros(3, 4), has_context=torch.zeros(3, dtype=torch.bool), entropy=entropy, lam=0.5,
    )


def test_gspo_part_is_the_function_and_asks_for_entropy_only_with_a_bonus():
    x = _inputs(entropy=torch.rand(3, 4))
    loss, stats = GSPO(clip_high=0.01, entropy_coef=0.01)(x)
    want, want_stats = gspo_loss(
        x.logprobs, x.old_logprobs, x.advantages, x.response_mask, clip_high=0.01, entropy=x.entropy, entropy_coef=0.01
    )
    assert torch.equal(loss, want) and stats == want_stats
    assert set(stats) == {"pg_loss", "pg_clipfrac", "seq_ratio_mean", "ppo_kl", "entropy"}
    assert GSPO(entropy_coef=0.01).uses_entropy and not GSPO().uses_entropy
    assert (GSPO().clip_low, GSPO().clip_high, GSPO().entropy_coef) == (3e-4, 4e-4, 0.0)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"clip_low": 1.0}, r"clip_low must be a float in \[0, 1\), got 1.0"),
        ({"clip_low": -0.1}, r"clip_low must be a float in \[0, 1\), got -0.1"),
        ({"clip_high": -1e-4}, r"clip_high must be a finite float >= 0, got -0.0001"),
        ({"clip_high": float("inf")}, r"clip_high must be a finite float >= 0, got inf"),
        ({"entropy_coef": -0.5}, r"entropy_coef must be a finite float >= 0, got -0.5"),
        ({"entropy_coef": float("nan")}, r"entropy_coef must be a finite float >= 0, got nan"),
    ],
)
def test_bad_knobs_raise_naming_the_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GSPO(**kwargs)
