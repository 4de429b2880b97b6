"""serl.algo.distill: on-policy self-distillation by hand (reverse-KL surrogate on the context rows' response
tokens), its gradient, the λ schedule, the base PPO loss, garbage neutralisation and the knobs."""

from __future__ import annotations

import math

import pytest
import torch

from serl.algo.distill import SelfDistill, self_distill_loss
from serl.algo.loss import PPOClip
from serl.types import LossInputs

F64 = torch.float64
NAN, INF = float("nan"), float("inf")


def _x(logprobs, teacher, mask, has_context, lam=0.5, old=None, adv=None, entropy=None) -> LossInputs:
    lp = torch.tensor(logprobs, dtype=F64).requires_grad_(True)
    return LossInputs(
        logprobs=lp,
        old_logprobs=torch.tensor(old, dtype=F64) if old is not None else lp.detach().clone(),
        advantages=torch.tensor(adv, dtype=F64) if adv is not None else torch.zeros_like(lp.detach()),
        response_mask=torch.tensor(mask, dtype=torch.float32),
        action_mask=torch.zeros(lp.shape),
        teacher_logprobs=torch.tensor(teacher, dtype=F64),
        has_context=torch.tensor(has_context),
        entropy=entropy,
        lam=lam,
    )


def test_hand_derived_value_and_gradient():
    # one context row: ℓ = [−1, −2], ℓT = [−0.5, −3] → k = ℓ − ℓT = [−0.5, 1]
    # D = mean(sg[k]·ℓ) = (−0.5·−1 + 1·−2)/2 = (0.5 − 2)/2 = −0.75;  dD/dℓ = k/2 = [−0.25, 0.5]
    # total = coef·λ·D = 1·0.5·−0.75 = −0.375;  d total/dℓ = 0.5·k/2 = [−0.125, 0.25]
    # reverse-KL estimate: mean k = 0.25; selected share: 2 of 2 response tokens
    x = _x([[-1.0, -2.0]], [[-0.5, -3.0]], [[1, 1]], [True], lam=0.5)
    loss, stats = SelfDistill(coef=1.0)(x)
    assert loss.item() == pytest.approx(-0.375)
    loss.backward()
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[-0.125, 0.25]], dtype=F64))
    assert stats == pytest.approx({"distill_loss": -0.75, "distill_reverse_kl": 0.25, "distill_tokens": 1.0})
    # the bare surrogate: dD/dℓ = k/2
    lp = x.logprobs.detach().clone().requires_grad_(True)
    d, _ = self_distill_loss(lp, x.teacher_logprobs, x.response_mask, x.has_context)
    d.backward()
    assert d.item() == pytest.approx(-0.75)
    torch.testing.assert_close(lp.grad, torch.tensor([[-0.25, 0.5]], dtype=F64))


def test_a_no_context_row_contributes_nothing_even_with_garbage_teacher_logprobs():
    # row 1 has no context (its teacher log-probs are garbage): the hand case of row 0 is unchanged, row 1's
    # gradient is 0; 2 of the 4 response tokens are selected. Row 0's padding (token 2) is garbage too.
    x = _x(
        [[-1.0, -2.0, NAN], [-0.3, -0.4, -0.2]],
        [[-0.5, -3.0, INF], [NAN, -INF, 0.0]],
        [[1, 1, 0], [1, 1, 0]],
        [True, False],
        lam=0.5,
    )
    loss, stats = SelfDistill()(x)
    loss.backward()
    assert loss.item() == pytest.approx(-0.375)
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[-0.125, 0.25, 0.0], [0.0, 0.0, 0.0]], dtype=F64))
    assert stats == pytest.approx({"distill_loss": -0.75, "distill_reverse_kl": 0.25, "distill_tokens": 0.5})
    # no context row at all: exactly 0 with a zero gradient (the loss still backpropagates)
    x = _x([[-1.0, -2.0]], [[NAN, NAN]], [[1, 1]], [False], lam=0.5)
    loss, stats = SelfDistill()(x)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.logprobs.grad, torch.zeros(1, 2, dtype=F64))
    assert stats == {"distill_loss": 0.0, "distill_reverse_kl": 0.0, "distill_tokens": 0.0}


def _ppo_case(lam):
    # row 0 (context): the hand case; row 1 (no context): PPO signal only. Ratios e^0.1 and e^−0.1 (inside the
    # clip), A = 1 on row 0 and −1 on row 1.
    return _x(
        [[-1.0, -2.0], [-0.5, -0.7]],
        [[-0.5, -3.0], [0.0, 0.0]],
        [[1, 1], [1, 1]],
        [True, False],
        lam=lam,
        old=[[-1.1, -2.1], [-0.4, -0.6]],
        adv=[[1.0, 1.0], [-1.0, -1.0]],
        entropy=torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64),
    )


def test_base_ppo_plus_distillation_is_the_sum_of_both():
    base = PPOClip(clip_low=0.2, clip_high=0.2, clip_c=3.0, entropy_coef=0.001)
    x = _ppo_case(lam=0.5)
    loss, stats = SelfDistill(coef=0.1, base=base)(x)
    loss.backward()
    grad = x.logprobs.grad.clone()
    # PPO token losses: row 0 −e^0.1 (×2), row 1 +e^−0.1 (×2) → token mean (e^−0.1 − e^0.1)/2; entropy mean 2.5
    ppo = (math.exp(-0.1) - math.exp(0.1)) / 2 - 0.001 * 2.5
    # distillation: D = −0.75 over row 0's tokens only (as in the hand case); weight coef·λ = 0.05
    assert loss.item() == pytest.approx(ppo + 0.05 * -0.75)
    assert stats["pg_loss"] == pytest.approx((math.exp(-0.1) - math.exp(0.1)) / 2)
    assert stats["distill_loss"] == pytest.approx(-0.75) and stats["distill_tokens"] == 0.5
    assert {"pg_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "entropy"} <= set(stats)
    # the gradient is the sum of PPO's and 0.05 × the distillation's
    y = _ppo_case(lam=0.5)
    want_loss, want_stats = base(y)
    want_loss.backward()
    ppo_grad = y.logprobs.grad.clone()
    torch.testing.assert_close(grad - ppo_grad, 0.05 * torch.tensor([[-0.25, 0.5], [0.0, 0.0]], dtype=F64))
    assert all(stats[k] == v for k, v in want_stats.items())


def test_lambda_zero_is_exactly_the_base_loss():
    base = PPOClip()
    x = _ppo_case(lam=0.0)
    loss, stats = SelfDistill(coef=10.0, base=base)(x)
    loss.backward()
    y = _ppo_case(lam=0.0)
    want, _ = base(y)
    want.backward()
    assert torch.equal(loss.detach(), want.detach()) and torch.equal(x.logprobs.grad, y.logprobs.grad)
    assert stats["distill_loss"] == pytest.approx(-0.75)  # the stats still report D
    # coef = 0 likewise
    z = _ppo_case(lam=0.5)
    assert torch.equal(SelfDistill(coef=0.0, base=base)(z)[0].detach(), want.detach())


def _slow_distill(lp, teacher, mask, has_context):
    """Token by token over the selected tokens (the reference for the vectorised one)."""
    terms = [
        (lp[i, t] - teacher[i, t]).detach() * lp[i, t]
        for i in range(lp.shape[0]) if has_context[i]
        for t in range(lp.shape[1]) if mask[i, t] > 0
    ]
    return sum(terms) / len(terms)


def test_vectorised_equals_a_slow_per_token_loop():
    g = torch.Generator().manual_seed(0)
    n, t = 8, 6
    lp = -torch.rand(n, t, generator=g, dtype=F64) * 4
    teacher = -torch.rand(n, t, generator=g, dtype=F64) * 4
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    mask[0] = 1.0
    has_context = torch.rand(n, generator=g) < 0.6
    has_context[0] = True
    teacher[~has_context] = NAN  # garbage where there is no context
    a, b = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    d, stats = self_distill_loss(a, teacher, mask, has_context)
    want = _slow_distill(b, teacher, mask, has_context)
    d.backward()
    want.backward()
    torch.testing.assert_close(d, want)
    torch.testing.assert_close(a.grad, b.grad)
    sel = mask.bool() & has_context[:, None]
    assert stats["distill_reverse_kl"] == pytest.approx(float((lp - teacher)[sel].mean()))
    assert stats["distill_tokens"] == pytest.approx(float(sel.sum() / mask.sum()))


def test_flags_and_defaults():
    assert SelfDistill.uses_teacher and SelfDistill().uses_teacher
    assert (SelfDistill().coef, SelfDistill().base) == (1.0, None)
    assert not SelfDistill().uses_entropy
    assert SelfDistill(base=PPOClip()).uses_entropy and not SelfDistill(base=PPOClip(entropy_coef=0.0)).uses_entropy


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"coef": -0.1}, r"coef must be a finite float >= 0, got -0.1"),
        ({"coef": float("inf")}, r"coef must be a finite float >= 0, got inf"),
        ({"coef": float("nan")}, r"coef must be a finite float >= 0, got nan"),
        ({"coef": "1"}, r"coef must be a finite float >= 0, got '1'"),
        ({"base": {"clip_low": 0.2}}, r"base must be None or a serl.algo.loss.PPOClip, got \{'clip_low': 0.2\}"),
        ({"base": "ppo_clip"}, r"base must be None or a serl.algo.loss.PPOClip, got 'ppo_clip'"),
    ],
)
def test_bad_knobs_raise_naming_the_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SelfDistill(**kwargs)
