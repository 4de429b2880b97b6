"""serl.algo.reweight: the §5.2 sign table by hand, clipping, λ=0 identity, masks, §5.3 metrics, slow loop."""

from __future__ import annotations

import math

import pytest
import torch

from serl.algo.reweight import serl_reweight

E01 = math.exp(0.1)  # 1.10517…, inside [0.8, 1.2]
EM01 = math.exp(-0.1)  # 0.90484…, inside [0.8, 1.2]


def _call(adv, s, t, resp=None, act=None, ctx=None, lam=0.5, c=0.2):
    adv = torch.tensor(adv, dtype=torch.float64)
    n = adv.shape[0]
    s = torch.tensor(s, dtype=torch.float64)
    t = torch.tensor(t, dtype=torch.float64)
    resp = torch.ones_like(adv, dtype=torch.bool) if resp is None else torch.tensor(resp)
    act = torch.ones_like(adv, dtype=torch.bool) if act is None else torch.tensor(act)
    ctx = torch.ones(n, dtype=torch.bool) if ctx is None else torch.tensor(ctx)
    return serl_reweight(adv, s, t, resp, act, ctx, lam=lam, weight_clip=c)


def test_sign_table_by_hand():
    # one token per row of the §5.2 table; λ = 0.5 ⇒ multiplier = 0.5 + 0.5·w
    adv = [[2.0, 2.0, -2.0, -2.0, 0.0]]
    student = [[-1.0, -1.0, -1.0, -1.0, -1.0]]
    teacher = [[-0.9, -1.1, -0.9, -1.1, 4.0]]  # Δ = +0.1, −0.1, +0.1, −0.1, +5
    out, stats = _call(adv, student, teacher)
    expected = [
        2.0 * (0.5 + 0.5 * E01),  # A>0, Δ>0: w = e^0.1 > 1, promote more
        2.0 * (0.5 + 0.5 * EM01),  # A>0, Δ<0: w = e^-0.1 < 1, promote less
        -2.0 * (0.5 + 0.5 * EM01),  # A<0, Δ>0: u = −0.1, w < 1, penalise less
        -2.0 * (0.5 + 0.5 * E01),  # A<0, Δ<0: u = +0.1, w > 1, suppress more
        0.0,  # A=0: sign 0 ⇒ w = 1, Ã = 0
    ]
    torch.testing.assert_close(out, torch.tensor([expected], dtype=torch.float64))
    assert out[0, 0] > 2.0 and out[0, 1] < 2.0 and out[0, 2] > -2.0 and out[0, 3] < -2.0
    assert stats["weight_max"] == pytest.approx(E01)
    assert stats["weight_min"] == pytest.approx(EM01)
    assert stats["weight_mean"] == pytest.approx((2 * E01 + 2 * EM01 + 1.0) / 5)
    assert stats["delta_abs_mean"] == pytest.approx((0.4 + 5.0) / 5)
    assert stats["clipped_fraction"] == 0.0
    assert stats["selected_fraction"] == 1.0
    assert stats["empty_target"] == 0.0
    assert stats["lambda"] == 0.5


def test_clip_at_both_bounds():
    # Δ = ±1 ⇒ e^±1 outside [0.8, 1.2]; Δ = ±50 ⇒ u clamped to ±20 first, same result
    adv = [[1.0, 1.0, 1.0, 1.0, -3.0]]
    student = [[0.0, 0.0, 0.0, 0.0, 0.0]]
    teacher = [[1.0, -1.0, 50.0, -50.0, -1.0]]
    out, stats = _call(adv, student, teacher)
    # w = 1.2 ⇒ multiplier 0.5 + 0.6 = 1.1; w = 0.8 ⇒ 0.9; A<0, Δ<0 ⇒ u=+1 ⇒ w=1.2 ⇒ −3·1.1
    torch.testing.assert_close(out, torch.tensor([[1.1, 0.9, 1.1, 0.9, -3.3]], dtype=torch.float64))
    assert stats["weight_max"] == pytest.approx(1.2)
    assert stats["weight_min"] == pytest.approx(0.8)
    assert stats["clipped_fraction"] == 1.0


def test_lambda_one_and_other_clip():
    # λ = 1 ⇒ Ã = A·w; c = 0.05 ⇒ w ∈ [0.95, 1.05]
    out, stats = _call([[2.0, 2.0, 2.0]], [[0.0, 0.0, 0.0]], [[0.01, 0.2, -0.2]], lam=1.0, c=0.05)
    torch.testing.assert_close(out, torch.tensor([[2.0 * math.exp(0.01), 2.1, 1.9]], dtype=torch.float64))
    assert stats["clipped_fraction"] == pytest.approx(2 / 3)
    # c = 0 ⇒ w ≡ 1 ⇒ Ã = A
    out, stats = _call([[2.0, -1.0]], [[0.0, 0.0]], [[3.0, 3.0]], lam=1.0, c=0.0)
    torch.testing.assert_close(out, torch.tensor([[2.0, -1.0]], dtype=torch.float64))
    assert stats["clipped_fraction"] == 1.0


def test_lambda_zero_is_exact_identity():
    gen = torch.Generator().manual_seed(0)
    adv = torch.randn(4, 6, generator=gen)
    s, t = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    t[0, 0] = float("nan")  # even a broken teacher log-prob cannot leak in when λ = 0
    resp = torch.rand(4, 6, generator=gen) > 0.2
    act = torch.rand(4, 6, generator=gen) > 0.5
    ctx = torch.tensor([True, False, True, True])
    out, stats = serl_reweight(adv, s, t, resp, act, ctx, lam=0.0)
    assert torch.equal(out, adv * resp.to(adv.dtype))
    assert stats["lambda"] == 0.0


def test_no_context_rows_and_non_action_tokens_untouched():
    adv = [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]
    student = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    teacher = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    act = [[False, True, False], [True, True, True]]
    out, stats = _call(adv, student, teacher, act=act, ctx=[True, False])
    # row 0: only token 1 is an action token ⇒ 1·1.1; row 1 has no context ⇒ unchanged
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.1, 1.0], [-1.0, -1.0, -1.0]], dtype=torch.float64))
    # 1 selected of the 3 response tokens of context rows
    assert stats["selected_fraction"] == pytest.approx(1 / 3)


def test_response_mask_zeroes_padding():
    adv = [[1.0, 1.0, 1.0, 1.0]]
    resp = [[True, True, True, False]]
    act = [[False, True, True, True]]  # an action flag on padding must not count
    out, stats = _call(adv, [[0.0] * 4], [[1.0, 1.0, -1.0, 1.0]], resp=resp, act=act)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.1, 0.9, 0.0]], dtype=torch.float64))
    assert stats["selected_fraction"] == pytest.approx(2 / 3)


def test_empty_target_stats_are_finite():
    out, stats = _call([[1.0, -2.0]], [[0.0, 0.0]], [[1.0, 1.0]], ctx=[False])
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0]], dtype=torch.float64))
    assert stats == {
        "weight_mean": 1.0,
        "weight_min": 1.0,
        "weight_max": 1.0,
        "delta_abs_mean": 0.0,
        "clipped_fraction": 0.0,
        "selected_fraction": 0.0,
        "lambda": 0.5,
        "empty_target": 1.0,
    }
    _, stats = _call([[1.0, -2.0]], [[0.0, 0.0]], [[1.0, 1.0]], act=[[False, False]])
    assert stats["empty_target"] == 1.0 and stats["selected_fraction"] == 0.0
    assert all(math.isfinite(v) for v in stats.values())


def test_no_gradient_through_weights():
    s = torch.zeros(1, 2, requires_grad=True)
    adv = torch.ones(1, 2, requires_grad=True)
    out, _ = serl_reweight(
        adv, s, torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool),
        torch.ones(1, dtype=torch.bool), lam=0.5,
    )  # fmt: skip
    assert not out.requires_grad


def test_float_masks_accepted():
    out, _ = serl_reweight(
        torch.ones(1, 2), torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([[1, 1]]),
        torch.tensor([1]), lam=0.5,
    )  # fmt: skip
    torch.testing.assert_close(out, torch.tensor([[1.1, 0.0]]))


def _slow(adv, s, t, resp, act, ctx, lam, c):
    out = torch.zeros_like(adv)
    for i in range(adv.shape[0]):
        for j in range(adv.shape[1]):
            a = adv[i, j].item()
            if not resp[i, j]:
                continue
            if ctx[i] and act[i, j]:
                sign = (a > 0) - (a < 0)
                u = min(20.0, max(-20.0, sign * (t[i, j].item() - s[i, j].item())))
                w = min(1 + c, max(1 - c, math.exp(u)))
                out[i, j] = a * ((1 - lam) + lam * w)
            else:
                out[i, j] = a
    return out


@pytest.mark.parametrize("lam,c", [(0.5, 0.2), (0.13, 0.7), (1.0, 0.2), (0.0, 0.2)])
def test_matches_slow_loop(lam, c):
    gen = torch.Generator().manual_seed(3)
    n, t_len = 6, 9
    adv = torch.randn(n, 1, generator=gen, dtype=torch.float64).expand(n, t_len).clone()
    adv[0] = 0.0
    s = torch.randn(n, t_len, generator=gen, dtype=torch.float64) * 0.3 - 1
    t = torch.randn(n, t_len, generator=gen, dtype=torch.float64) * 0.3 - 1
    resp = torch.rand(n, t_len, generator=gen) > 0.2
    act = torch.rand(n, t_len, generator=gen) > 0.4
    ctx = torch.rand(n, generator=gen) > 0.3
    out, stats = serl_reweight(adv, s, t, resp, act, ctx, lam=lam, weight_clip=c)
    torch.testing.assert_close(out, _slow(adv, s, t, resp, act, ctx, lam, c))
    sel = resp & act & ctx[:, None]
    assert stats["selected_fraction"] == pytest.approx(sel.sum().item() / (resp & ctx[:, None]).sum().item())


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan")])
def test_bad_lambda(lam):
    with pytest.raises(ValueError, match=r"lam must be a float in \[0, 1\]"):
        _call([[1.0]], [[0.0]], [[0.0]], lam=lam)


@pytest.mark.parametrize("c", [-0.2, float("inf")])
def test_bad_weight_clip(c):
    with pytest.raises(ValueError, match="weight_clip"):
        _call([[1.0]], [[0.0]], [[0.0]], c=c)


def test_bad_shapes():
    with pytest.raises(ValueError, match="teacher_logprobs"):
        serl_reweight(
            torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 2), torch.ones(2, 3), torch.ones(2, 3),
            torch.ones(2, dtype=torch.bool), lam=0.5,
        )  # fmt: skip
    with pytest.raises(ValueError, match="has_context"):
        serl_reweight(
            torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3),
            torch.ones(3, dtype=torch.bool), lam=0.5,
        )  # fmt: skip
    with pytest.raises(ValueError, match="advantages"):
        serl_reweight(
            torch.ones(3), torch.ones(3), torch.ones(3), torch.ones(3), torch.ones(3), torch.ones(3), lam=0.5
        )
