"""PPO-clip policy loss with dual clip and entropy bonus, token-mean aggregation. Pure torch.

docs/reference.md §1.6 (``CA :: compute_policy_loss``, ``CA :: agg_loss`` with ``token-mean``)::

    r  = exp(ℓ − ℓ_old)
    L  = max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high))
    L  = min(L, −A·c)            where A < 0          (dual clip, c = 3)
    pg_loss = token-mean of L over response tokens
    loss    = pg_loss − entropy_coef · token-mean(entropy)     (entropy_coef = 0.001)

There is no KL term (the reference trains without one). ``A`` is the (possibly SERL-reweighted) advantage
``Ã`` of §5.2; it is treated as a constant (detached).

:func:`sft_nll` is the supervised warm-start loss (docs/design.md §5 "Warm start"): the token-mean negative
log-likelihood of the expert response tokens, the same token-mean aggregation as ``pg_loss``.

Deviations from the reference
-----------------------------
* :func:`masked_mean` returns 0 (not NaN) for an empty mask and ignores the values under the mask
  entirely; :func:`ppo_clip_loss` likewise neutralises padding positions before the ratio, so padding may
  hold inf/NaN log-probs or advantages without poisoning the loss, the stats or the gradient.
* :func:`token_entropy` computes in float32 when given half-precision logits and treats ``-inf`` logits
  (masked vocabulary entries) as zero-probability terms instead of producing NaN.
* The log-ratio ``ℓ − ℓ_old`` is clamped to ``[−20, 20]`` before ``exp``. The reference's
  ``CA :: compute_policy_loss`` does not clamp (``ratio = exp(log_prob − old_log_prob)``, §1.6); this is a
  numerical guard of serl's own. Within ``|ℓ − ℓ_old| <= 20`` (a token whose probability changed by less than
  a factor e^20 ≈ 4.9e8 since the behaviour policy) loss and gradient are bit-identical to the reference's.
  Beyond it: above +20 the token is clipped (A > 0) or dual-clipped (A < 0) either way, so loss and gradient
  are unchanged; below −20 the A > 0 token's loss differs by less than ``|A|·e^−20 ≈ 2e-9·|A|`` and its
  gradient (≤ ``|A|·e^−20`` in the reference) becomes 0. Above ~88.7 the reference's ``exp`` overflows to
  inf and its gradient turns NaN (``0·inf`` in the backward of ``exp``, or ``−0·inf`` for ``A = 0``); serl's
  stays finite. ``ppo_kl`` is computed from the unclamped log-ratio, like the reference's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from serl.types import LossInputs

__all__ = ["masked_mean", "sft_nll", "token_entropy", "ppo_clip_loss", "PPOClip", "LOG_RATIO_CLAMP", "check_token_tensors",
           "entropy_bonus", "check_clip_knobs"]

LOG_RATIO_CLAMP = 20.0


def _check_same_shape(name: str, x: Tensor, shape: torch.Size, like: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != shape:
        raise ValueError(f"{name} must have the shape of {like} {tuple(shape)}, got {tuple(x.shape)}")


def check_token_tensors(logprobs: Tensor, **others: Tensor | None) -> None:
    """ValueError unless ``logprobs`` is a 2-D ``[N, T]`` tensor and every other tensor given (by name; None is
    skipped) has its shape: the per-token inputs of a policy loss."""
    if not isinstance(logprobs, Tensor) or logprobs.dim() != 2:
        shape = tuple(logprobs.shape) if isinstance(logprobs, Tensor) else type(logprobs).__name__
        raise ValueError(f"logprobs must be a 2-D tensor [N, T], got {shape}")
    for name, x in others.items():
        if x is not None:
            _check_same_shape(name, x, logprobs.shape, "logprobs")


def entropy_bonus(pg_loss: Tensor, entropy: Tensor | None, mask: Tensor, entropy_coef: float) -> tuple[Tensor, float]:
    """``(pg_loss − entropy_coef · token-mean(entropy), token-mean(entropy))`` over ``mask`` ``[N, T]`` bool
    (§1.6); ``(pg_loss, 0.0)`` without ``entropy``."""
    if entropy is None:
        return pg_loss, 0.0
    entropy_mean = masked_mean(entropy.to(pg_loss.dtype), mask)
    return pg_loss - entropy_coef * entropy_mean, float(entropy_mean.detach().item())


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is set (token mean); 0 when the mask is empty.

    Args:
        x: any shape, floating.
        mask: same shape as ``x``; bool, or numeric weights (0 = excluded).

    Returns:
        scalar tensor (dtype of ``x``), differentiable w.r.t. ``x``.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    _check_same_shape("mask", mask, x.shape, "x")
    keep = mask.bool() if mask.dtype != torch.bool else mask
    weights = mask.to(x.dtype)
    numerator = torch.where(keep, x * weights, torch.zeros_like(x)).sum()
    denominator = torch.where(keep, weights, torch.zeros_like(weights)).sum()
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    return numerator / safe  # empty mask: 0 / 1 = 0


def sft_nll(logprobs: Tensor, response_mask: Tensor) -> Tensor:
    """Token-mean negative log-likelihood of the target response tokens (supervised warm start).

    ``loss = −Σ_{n,t} m_{n,t} ℓ_{n,t} / Σ_{n,t} m_{n,t}``: every real response token of the batch weighs the
    same (long responses count more than short ones, as in ``pg_loss``); prompt tokens are not in
    ``logprobs`` at all and padding is excluded by the mask.

    Args:
        logprobs: ``[N, T]`` log-probs of the target response tokens under the current policy (carries the
            gradient), e.g. :func:`serl.policy.logprobs.response_logprobs` with ``grad=True``.
        response_mask: ``[N, T]`` bool or 0/1, 1 = real response token (0 = right padding).

    Returns:
        scalar tensor; 0 when the mask is empty. Padding positions may hold anything (inf/NaN included).
    """
    check_token_tensors(logprobs, response_mask=response_mask)
    mask = response_mask.bool()
    return -masked_mean(torch.where(mask, logprobs, torch.zeros_like(logprobs)), mask)


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of ``softmax(logits)`` over the last axis.

    Args:
        logits: ``[N, T, V]`` (any leading shape ``[..., V]`` works).

    Returns:
        ``[N, T]`` entropies ``H = −Σ_v p_v log p_v`` (float32 for half-precision input, else the input
        dtype), differentiable.
    """
    if not isinstance(logits, Tensor) or logits.dim() < 1 or logits.shape[-1] == 0:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a tensor [N, T, V] with V >= 1, got {shape}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return entropy_from_logprobs(torch.log_softmax(logits, dim=-1))


def entropy_from_logprobs(logp: Tensor) -> Tensor:
    """``H = −Σ_v p_v log p_v`` over the last axis of log-probabilities ``[..., V]`` → ``[...]``, with
    0·log 0 := 0 (a token of probability 0 adds nothing, where ``exp(-inf) * -inf`` would give NaN)."""
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(dim=-1)


def check_clip_knobs(
    clip_low: float, clip_high: float, clip_c: float | None, entropy_coef: float, *, low_below_one: bool = False
) -> None:
    """ValueError naming the first knob of :func:`ppo_clip_loss` outside its range. ``clip_c=None``: a loss
    without a dual clip (GSPO); ``low_below_one``: ``clip_low`` in [0, 1), as a loss object demands (1 would
    allow a ratio of 0)."""
    if low_below_one and not (isinstance(clip_low, (int, float)) and 0.0 <= clip_low < 1.0):
        raise ValueError(f"clip_low must be a float in [0, 1), got {clip_low!r}")
    if not (isinstance(clip_low, (int, float)) and 0.0 <= clip_low <= 1.0):
        raise ValueError(f"clip_low must be a float in [0, 1], got {clip_low!r}")
    if not (isinstance(clip_high, (int, float)) and math.isfinite(clip_high) and clip_high >= 0.0):
        raise ValueError(f"clip_high must be a finite float >= 0, got {clip_high!r}")
    if clip_c is not None and not (isinstance(clip_c, (int, float)) and math.isfinite(clip_c) and clip_c > 1.0):
        raise ValueError(f"clip_c must be a finite float > 1, got {clip_c!r}")
    if not (isinstance(entropy_coef, (int, float)) and math.isfinite(entropy_coef) and entropy_coef >= 0.0):
        raise ValueError(f"entropy_coef must be a finite float >= 0, got {entropy_coef!r}")


def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.001,
) -> tuple[Tensor, dict[str, float]]:
    """Dual-clip PPO loss, token-mean over response tokens (docs/reference.md §1.6).

    Args:
        logprobs: ``[N, T]`` current-policy log-probs of the sampled tokens (carries the gradient).
        old_logprobs: ``[N, T]`` behaviour log-probs (detached).
        advantages: ``[N, T]`` per-token advantages (detached).
        response_mask: ``[N, T]`` bool (or 0/1) valid response tokens.
        clip_low: ε_low ∈ [0, 1] (ratio lower bound ``1 − ε_low``).
        clip_high: ε_high ≥ 0 (ratio upper bound ``1 + ε_high``).
        clip_c: dual-clip constant c > 1 (reference 3).
        entropy: optional ``[N, T]`` token entropies (:func:`token_entropy`); adds the entropy bonus.
        entropy_coef: ≥ 0, weight of the entropy bonus (reference 0.001).

    Returns:
        ``(loss, stats)``: scalar loss; ``stats`` keys ``pg_loss``, ``pg_clipfrac`` (share of response tokens
        where the clipped surrogate is the larger one), ``pg_clipfrac_lower`` (dual clip active),
        ``ppo_kl`` (token-mean of ``ℓ_old − ℓ``, unclamped as in the reference), ``entropy`` (token-mean; 0.0
        when ``entropy`` is None).
    """
    check_token_tensors(logprobs, old_logprobs=old_logprobs, advantages=advantages, response_mask=response_mask, entropy=entropy)
    check_clip_knobs(clip_low, clip_high, clip_c, entropy_coef)

    mask = response_mask.bool()
    # padding may hold anything (inf/NaN): neutralise it so neither the loss nor the gradient sees it
    adv = torch.where(mask, advantages.detach().to(logprobs.dtype), 0.0)
    old = old_logprobs.detach().to(logprobs.dtype)
    raw_log_ratio = torch.where(mask, logprobs - old, 0.0)
    # serl's numerical guard, not in the reference (§1.6 has no clamp; module docstring, docs/differences.md)
    log_ratio = torch.clamp(raw_log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)  # §1.6: r = exp(log_prob − old_log_prob)
    loss_unclipped = -adv * ratio  # §1.6: L1 = −Ã r
    # §1.6: L2 = −Ã clip(r, 1−0.2, 1+0.2)
    loss_clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss_ppo = torch.maximum(loss_unclipped, loss_clipped)  # §1.6: L = max(L1, L2)
    loss_dual = -adv * clip_c  # §1.6: −Ã·3
    negative = adv < 0
    # §1.6: if Ã < 0: L = min(L, −Ã·3)
    token_loss = torch.where(negative, torch.minimum(loss_ppo, loss_dual), loss_ppo)
    pg_loss = masked_mean(token_loss, mask)  # §1.6: token-mean over response tokens

    loss, entropy_mean = entropy_bonus(pg_loss, entropy, mask, entropy_coef)  # §1.6: − 0.001·token-mean(entropy)

    with torch.no_grad():
        clipfrac = masked_mean((loss_clipped > loss_unclipped).to(logprobs.dtype), mask)
        clipfrac_lower = masked_mean((negative & (loss_ppo > loss_dual)).to(logprobs.dtype), mask)
        ppo_kl = masked_mean(-raw_log_ratio, mask)  # §1.6 (CA :: compute_policy_loss): token-mean of old − new
    stats = {
        "pg_loss": float(pg_loss.detach().item()),
        "pg_clipfrac": float(clipfrac.item()),
        "pg_clipfrac_lower": float(clipfrac_lower.item()),
        "ppo_kl": float(ppo_kl.item()),
        "entropy": entropy_mean,
    }
    return loss, stats


@dataclass(frozen=True)
class PPOClip:
    """The dual-clip PPO loss of :func:`ppo_clip_loss` as a policy loss (the ``algorithm.loss`` node,
    conf/algorithm/loss/ppo_clip.yaml): called on a micro-batch's :class:`~serl.types.LossInputs`, returns
    ``(loss, stats)``. ``uses_entropy`` tells the learner to compute token entropies for the bonus."""

    clip_low: float = 0.2  # ε_low ∈ [0, 1)
    clip_high: float = 0.2  # ε_high >= 0
    clip_c: float = 3.0  # dual-clip bound > 1
    entropy_coef: float = 0.001  # >= 0

    def __post_init__(self) -> None:
        check_clip_knobs(self.clip_low, self.clip_high, self.clip_c, self.entropy_coef, low_below_one=True)

    @property
    def uses_entropy(self) -> bool:
        return self.entropy_coef > 0

    def __call__(self, x: LossInputs) -> tuple[Tensor, dict[str, float]]:
        return ppo_clip_loss(
            x.logprobs,
            x.old_logprobs,
            x.advantages,
            x.response_mask,
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            clip_c=self.clip_c,
            entropy=x.entropy,
            entropy_coef=self.entropy_coef,
        )
