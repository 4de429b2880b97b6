"""Differential tests: serl's PPO loss against the reference's (docs/reference.md §1.6; issue 10 item 7d).

The reference (``CA :: compute_policy_loss`` + ``agg_loss`` token-mean) is re-implemented below as a slow,
literal per-token loop from §1.6, with NO clamp of the log-ratio (the reference has none)::

    r = exp(ℓ − ℓ_old);  L = max(−A r, −A clip(r, 0.8, 1.2));  if A < 0: L = min(L, −3A);  token mean

serl clamps ``ℓ − ℓ_old`` to ±20 before ``exp`` (its own numerical guard, named in docs/differences.md, "Differences from
the reference"). These tests pin: bit-identical loss and gradient inside ±20; the exact hand-derived
difference beyond; the reference's NaN gradient when ``exp`` overflows, which serl avoids; ``ppo_kl``
unclamped like the reference's.
"""

from __future__ import annotations

import math

import pytest
import torch

from serl.algo.loss import LOG_RATIO_CLAMP, ppo_clip_loss


def reference_loss(new: torch.Tensor, old: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """§1.6, one token at a time (1-D tensors of equal length, every token a response token)."""
    terms = []
    for k in range(new.shape[0]):
        r = torch.exp(new[k] - old[k])
        loss = torch.maximum(-adv[k] * r, -adv[k] * torch.clamp(r, 1 - 0.2, 1 + 0.2))
        if adv[k] < 0:
            loss = torch.minimum(loss, -adv[k] * 3.0)
        terms.append(loss)
    return torch.stack(terms).sum() / len(terms)


def _both(log_ratio: list[float], adv: list[float], dtype=torch.float64):
    """(serl loss, serl grad, serl stats, reference loss, reference grad) on one row."""
    old = torch.full((len(adv),), -2.0, dtype=dtype)
    a = torch.tensor(adv, dtype=dtype)
    new_s = (old + torch.tensor(log_ratio, dtype=dtype)).detach().requires_grad_(True)
    loss_s, stats = ppo_clip_loss(new_s[None], old[None], a[None], torch.ones(1, len(adv), dtype=torch.bool))
    loss_s.backward()
    new_r = (old + torch.tensor(log_ratio, dtype=dtype)).detach().requires_grad_(True)
    loss_r = reference_loss(new_r, old, a)
    loss_r.backward()
    return loss_s, new_s.grad, stats, loss_r, new_r.grad


def test_clamp_bound_is_20():
    assert LOG_RATIO_CLAMP == 20.0


def test_identical_to_reference_inside_the_clamp():
    # every branch of §1.6 (inside clip, clipped, pessimistic side, dual clip, A = 0) and the clamp's edges
    log_ratio = [0.05, 0.5, -0.7, -0.7, 0.1, 1.6, 0.0, 19.99, -19.99, 20.0, -20.0, 3.0]
    adv = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 0.0, 1.0, 1.0, -2.0, 0.5, -0.3]
    loss_s, grad_s, stats, loss_r, grad_r = _both(log_ratio, adv)
    assert loss_s.item() == loss_r.item()
    assert torch.equal(grad_s, grad_r)
    assert stats["ppo_kl"] == pytest.approx(-sum(log_ratio) / len(log_ratio))


def test_above_plus_20_loss_and_gradient_unchanged():
    # ℓ − ℓ_old = 25: A > 0 is clipped at 1.2 (loss −1.2 A), A < 0 dual-clipped at −3A (loss 3|A|): both
    # surrogates are constants there, so the value and the zero gradient do not depend on the clamp
    loss_s, grad_s, _, loss_r, grad_r = _both([25.0, 25.0], [1.0, -1.0])
    assert loss_s.item() == loss_r.item() == pytest.approx((-1.2 + 3.0) / 2)
    assert grad_s.tolist() == grad_r.tolist() == [0.0, 0.0]


def test_below_minus_20_hand_values():
    # ℓ − ℓ_old = −25, A = 1: reference loss −e^−25 (pessimistic unclipped side), grad −e^−25;
    # serl: ratio e^−20, loss −e^−20, grad 0 (clamp saturated). Difference < |A|·e^−20 ≈ 2.1e-9.
    loss_s, grad_s, _, loss_r, grad_r = _both([-25.0], [1.0])
    assert loss_r.item() == pytest.approx(-math.exp(-25), rel=1e-12)
    assert grad_r.item() == pytest.approx(-math.exp(-25), rel=1e-12)
    assert loss_s.item() == pytest.approx(-math.exp(-20), rel=1e-12)
    assert grad_s.item() == 0.0
    assert abs(loss_s.item() - loss_r.item()) < math.exp(-20)
    # A < 0 there: both take the clipped side −A·0.8, gradient 0
    loss_s, grad_s, _, loss_r, grad_r = _both([-25.0], [-1.0])
    assert loss_s.item() == loss_r.item() == pytest.approx(0.8)
    assert grad_s.item() == grad_r.item() == 0.0


def test_overflow_reference_nan_serl_finite():
    # float32 exp overflows above ~88.7: the reference's ratio is inf; the chosen clipped branch is finite but
    # the backward of exp multiplies a zero gradient by inf -> NaN; with A = 0 even the loss is −0·inf = NaN
    loss_s, grad_s, _, loss_r, grad_r = _both([100.0, 100.0], [1.0, -1.0], dtype=torch.float32)
    assert loss_r.item() == pytest.approx((-1.2 + 3.0) / 2)
    assert torch.isnan(grad_r).all()
    assert loss_s.item() == pytest.approx((-1.2 + 3.0) / 2)
    assert grad_s.tolist() == [0.0, 0.0]
    loss_s, grad_s, _, loss_r, _ = _both([100.0], [0.0], dtype=torch.float32)
    assert math.isnan(loss_r.item())
    assert loss_s.item() == 0.0 and grad_s.item() == 0.0


def test_ppo_kl_is_unclamped_like_the_reference():
    # reference: ppo_kl = token-mean of −(ℓ − ℓ_old) with no clamp
    _, _, stats, _, _ = _both([25.0, -30.0], [1.0, 1.0])
    assert stats["ppo_kl"] == pytest.approx((-25.0 + 30.0) / 2)
