"""Per-prompt seeded sampling (serl.rollout.hf: the HF backend's sampler; serl.rollout.base: the seeds).

The sampler draws row i's token from ``softmax(scores / T)`` (restricted to the top-p nucleus) at the
row's own uniform, by inverse CDF. Checked on fixed logits: the empirical frequencies over many seeds are
the tempered probabilities (within 5 standard errors), top-p keeps exactly the nucleus, T = 0 is the argmax,
the draw is the exact float64 inverse-CDF token over a vocabulary of several blocks; the random streams are
per row (independent of the other rows and of the number of steps drawn) and episode seeds are distinct.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from serl.rollout.base import check_generate_args, episode_seed
from serl.rollout.hf import _SeededSampler, inverse_cdf, row_uniforms, sample_tokens

N = 40_000  # seeds per frequency check: 5 standard errors are <= 0.0125


def _frequencies(tokens: torch.Tensor, V: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=V).double() / tokens.numel()


def _assert_frequencies(freq: torch.Tensor, expected: torch.Tensor, n: int) -> None:
    for k, (f, p) in enumerate(zip(freq.tolist(), expected.tolist())):
        tol = 5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9
        assert abs(f - p) <= tol, f"token {k}: frequency {f:.4f}, probability {p:.4f} (tolerance {tol:.4f})"


def _seed_uniforms(n: int, first: int = 0) -> torch.Tensor:
    """The step-0 uniform of rows seeded ``first .. first + n - 1`` (what the sampler uses at step 0)."""
    return row_uniforms(list(range(first, first + n)), n, 1)[:, 0]


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_frequencies_match_tempered_softmax(temperature):
    logits = torch.tensor([2.0, -1.0, 0.5, 1.5, -3.0, 0.0, 1.0])
    u = _seed_uniforms(N)
    scores = logits.expand(N, -1)
    tokens = sample_tokens(scores, temperature, 1.0, u)
    _assert_frequencies(_frequencies(tokens, 7), torch.softmax(logits.double() / temperature, -1), N)
    # through the logits processor HF runs last: 0 at the sample, -inf elsewhere, so greedy argmax takes it
    sampler = _SeededSampler(prompt_len=3, temperature=temperature, top_p=1.0, uniforms=u[:, None])
    out = sampler(torch.zeros(N, 3, dtype=torch.long), scores.clone())
    assert torch.equal(out.argmax(-1), tokens)
    assert torch.equal(torch.isfinite(out).sum(-1), torch.ones(N, dtype=torch.long))
    assert out.max(-1).values.eq(0).all()


def test_top_p_keeps_exactly_the_nucleus():
    probs = torch.tensor([0.05, 0.30, 0.10, 0.25, 0.20, 0.10])
    logits = probs.log() + 3.0  # unnormalised scores
    u = _seed_uniforms(N)
    scores = logits.expand(N, -1)
    # by decreasing probability 0.30 (1), 0.25 (3), 0.20 (4), 0.10, 0.10, 0.05; mass before: 0, .3, .55, .75
    tokens = sample_tokens(scores, 1.0, 0.7, u)
    assert set(tokens.unique().tolist()) == {1, 3, 4}
    nucleus = torch.zeros(6, dtype=torch.float64)
    nucleus[[1, 3, 4]] = probs[[1, 3, 4]].double()
    _assert_frequencies(_frequencies(tokens, 6), nucleus / nucleus.sum(), N)
    # top_p below the top token's probability: the top token alone (at least one token is kept)
    assert sample_tokens(scores, 1.0, 0.1, u).eq(1).all()
    # the nucleus is taken over the TEMPERED distribution: at T = 0.5 (probs ∝ p²: .09 .0625 .04 ...)
    # the top two already hold 0.1525 / 0.215 = 0.709 >= 0.7 of the mass
    hot = sample_tokens(scores, 0.5, 0.7, u)
    assert set(hot.unique().tolist()) == {1, 3}
    # top_p = 1: every token of positive probability occurs
    assert set(sample_tokens(scores, 1.0, 1.0, u).unique().tolist()) == set(range(6))


def test_temperature_zero_is_argmax():
    scores = torch.randn(64, 300, generator=torch.Generator().manual_seed(0))
    for u in (torch.zeros(64, dtype=torch.float64), torch.full((64,), 0.999, dtype=torch.float64)):
        assert torch.equal(sample_tokens(scores, 0.0, 1.0, u), scores.argmax(-1))
        assert torch.equal(sample_tokens(scores, 0.0, 0.5, u), scores.argmax(-1))


@pytest.mark.parametrize("V", [700, 5000, 5120])
def test_draw_is_the_float64_inverse_cdf_token(V):
    """One level (V <= 4096) and two levels of 256-token blocks (V a multiple of the block or not): the
    index is exactly the float64 reference's ``searchsorted(cumsum(p), u * sum(p), 'right')``, with and
    without top-p."""
    g = torch.Generator().manual_seed(V)
    scores = torch.randn(200, V, generator=g) * 4
    u = torch.rand(200, generator=g, dtype=torch.float64)
    for top_p in (1.0, 0.8):
        tokens = sample_tokens(scores, 0.8, top_p, u).numpy()
        probs = torch.softmax(scores / 0.8, -1).numpy().astype(np.float64)
        for row, ui, tok in zip(probs, u.numpy(), tokens):
            # top_p = 1: the CDF in vocabulary order; else by decreasing probability, nucleus only
            order = np.arange(V) if top_p >= 1 else np.argsort(-row, kind="stable")
            p = row[order]
            p[(np.cumsum(p) - p) >= top_p] = 0.0
            ref = order[np.searchsorted(np.cumsum(p), ui * p.sum(), side="right")]
            assert tok == ref


@pytest.mark.parametrize("V", [1000, 5000])
def test_inverse_cdf_edges_never_pick_zero_weight(V):
    w = torch.zeros(3, V)
    w[:, 5] = w[:, 300] = 1.0
    w[2, V - 1] = 2.0
    ends = torch.tensor([0.0, 1 - 2**-53, 0.5], dtype=torch.float64)
    assert inverse_cdf(w, ends).tolist() == [5, 300, V - 1]  # row 2: 0.5 · 4 = 2 = the mass up to token 300
    assert inverse_cdf(w[2:], torch.tensor([0.49], dtype=torch.float64)).tolist() == [300]
    assert inverse_cdf(w[2:], torch.tensor([1 - 2**-53], dtype=torch.float64)).tolist() == [V - 1]
    with pytest.raises(RuntimeError, match="no finite positive mass"):
        inverse_cdf(torch.full((1, V), float("nan")), torch.zeros(1, dtype=torch.float64))


def test_row_streams_are_per_seed():
    a = row_uniforms([3, 4, None], 3, 5)
    b = row_uniforms([9, 4], 2, 8)
    assert a.dtype == torch.float64 and a.shape == (3, 5) and ((a >= 0) & (a < 1)).all()
    assert torch.equal(a[1], b[1, :5])  # seed 4's draws: not the other rows', nor the number of steps
    assert not torch.equal(a[0], b[0])
    # all 64 bits of a seed count (a CPU torch.Generator would only use the low 32)
    assert not torch.equal(row_uniforms([1], 1, 4), row_uniforms([1 + 2**32], 1, 4))
    # unseeded rows draw their seed from torch's global RNG
    torch.manual_seed(0)
    x = row_uniforms(None, 2, 3)
    torch.manual_seed(0)
    assert torch.equal(x, row_uniforms([None, None], 2, 3)) and not torch.equal(x[0], x[1])


def test_episode_seeds_are_distinct_and_in_range():
    seeds = {episode_seed(s, e, t) for s in range(3) for e in range(100) for t in range(40)}
    assert len(seeds) == 3 * 100 * 40
    assert all(0 <= s < 2**63 for s in seeds)
    assert episode_seed(5, 7, 2) == episode_seed(5, 7, 2)
    assert episode_seed(-1, 0, 0) >= 0 and episode_seed(2**70, 1, 1) < 2**63


def test_check_generate_args_wants_one_seed_per_prompt():
    check_generate_args([[1], [2]], 4, 1.0, [0, None])
    check_generate_args([[1], [2]], 4, 1.0, None)
    with pytest.raises(ValueError, match="3 seeds for 2 prompts"):
        check_generate_args([[1], [2]], 4, 1.0, [0, 1, 2])
