"""GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"): PPO's clipped surrogate on a sequence-level,
length-normalised importance ratio. Pure torch.

For row ``i`` with response tokens ``y_i`` (``|y_i|`` of them), current log-probs ``ℓ`` and behaviour
log-probs ``ℓ_old`` (the paper's objective J_GSPO with its sequence ratio, written in the form of its
token-level variant GSPO-token, which has the same value and, for a row-constant advantage, the same gradient)::

    s_i      = exp( (1/|y_i|) Σ_{t ∈ y_i} (ℓ_t − ℓ_old,t) )          sequence ratio (geometric mean of token ratios)
    s_{i,t}  = sg[s_i] · exp(ℓ_t − sg[ℓ_t])                            value s_i, gradient s_i·∇ℓ_t
    L_{i,t}  = −min( s_{i,t} A_{i,t}, clip(s_{i,t}, 1 − ε_low, 1 + ε_high) A_{i,t} )
    pg_loss  = mean over rows with >= 1 response token of ( mean over the row's response tokens of L_{i,t} )
    loss     = pg_loss − entropy_coef · token-mean(entropy)

(``sg`` = stop-gradient.) The aggregation is "seq-mean-token-mean": every sequence weighs the same, whatever
its length, as in the paper's objective (``1/G Σ_i 1/|y_i| Σ_t``); PPOClip's token mean instead weighs every
token of the batch the same. With an advantage constant over a row (plain GRPO) the token form is the
sequence form: ``∂ pg_loss_i / ∂ℓ_t = −A_i · s_i / |y_i|``, the gradient of ``−A_i · s_i``. Under SERL's
reweighting ``A_{i,t}`` varies over the action tokens and GSPO-token weighs each token's gradient by its own
advantage, as GSPO-token allows. The ratios are ~1 (a sequence's per-token average drifts little),
hence clip ranges of a few 1e-4 (the paper's 3e-4 / 4e-4) instead of PPO's 0.2.

No dual clip and no KL term. ``A`` is treated as a constant (detached).

Deviations from the paper
-------------------------
* serl's numerical guard (as :func:`serl.algo.loss.ppo_clip_loss`): the mean log-ratio is clamped to
  ``[−LOG_RATIO_CLAMP, LOG_RATIO_CLAMP]`` (±20) before ``exp``. Within it (a sequence whose per-token
  geometric-mean probability changed by less than e^20) the loss and the gradient are the paper's; beyond it
  the value is capped at e^±20 (such a row is clipped for A > 0 above, and the A > 0 loss below differs by
  less than ``|A|·e^−20``) and no overflow can turn the gradient into NaN. ``ppo_kl`` is unclamped.
* Padding may hold inf/NaN log-probs or advantages: it is neutralised before the ratio, so it reaches
  neither the loss, nor the stats, nor the gradient. A row without response tokens is left out of the mean
  over rows (0 when no row has one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from serl.algo.loss import LOG_RATIO_CLAMP, check_clip_knobs, check_token_tensors, entropy_bonus, masked_mean
from serl.types import LossInputs

__all__ = ["GSPO", "gspo_loss"]

def _row_means(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row mean of ``x`` ``[N, T]`` over ``mask`` ``[N, T]`` bool. Returns ``(means [N], nonempty [N])``:
    the means (0 for a row without a masked token) and whether the row has one. ``x`` must be finite where
    ``mask`` is unset (the caller neutralises padding)."""
    count = mask.sum(dim=1)
    nonempty = count > 0
    total = torch.where(mask, x, torch.zeros_like(x)).sum(dim=1)
    return total / count.clamp(min=1).to(x.dtype), nonempty


def gspo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """GSPO-token loss with seq-mean-token-mean aggregation (module docstring).

    Args:
        logprobs: ``[N, T]`` current-policy log-probs of the sampled tokens (carries the gradient).
        old_logprobs: ``[N, T]`` behaviour log-probs (detached).
        advantages: ``[N, T]`` per-token advantages (detached); constant over a row in plain GRPO.
        response_mask: ``[N, T]`` bool (or 0/1) valid response tokens.
        clip_low: ε_low ∈ [0, 1) (sequence-ratio lower bound ``1 − ε_low``; paper 3e-4).
        clip_high: ε_high ≥ 0 (sequence-ratio upper bound ``1 + ε_high``; paper 4e-4).
        entropy: optional ``[N, T]`` token entropies; adds the entropy bonus.
        entropy_coef: ≥ 0, weight of the entropy bonus (token mean, as PPOClip's).

    Returns:
        ``(loss, stats)``: scalar loss; ``stats`` keys ``pg_loss``, ``pg_clipfrac`` (share of rows where the
        clip binds, i.e. the clipped surrogate is the larger loss and the row's gradient is 0: the same test
        as PPOClip's per-token ``pg_clipfrac``, aggregated like the loss), ``seq_ratio_mean`` (mean of ``s_i``
        over rows with a response token), ``ppo_kl`` (token-mean of ``ℓ_old − ℓ``, unclamped, as PPOClip's),
        ``entropy`` (token-mean; 0.0 when ``entropy`` is None).
    """
    check_token_tensors(logprobs, old_logprobs=old_logprobs, advantages=advantages, response_mask=response_mask, entropy=entropy)
    check_gspo_knobs(clip_low, clip_high, entropy_coef)

    mask = response_mask.bool()
    # padding may hold anything (inf/NaN): neutralise it so neither the loss nor the gradient sees it
    adv = torch.where(mask, advantages.detach().to(logprobs.dtype), 0.0)
    new = torch.where(mask, logprobs, 0.0)
    old = old_logprobs.detach().to(logprobs.dtype)
    raw_log_ratio = torch.where(mask, logprobs - old, 0.0)
    mean_log_ratio, nonempty = _row_means(raw_log_ratio.detach(), mask)  # GSPO: (1/|y_i|) Σ_t log ratio
    # serl's numerical guard, not in the paper (module docstring)
    mean_log_ratio = torch.clamp(mean_log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    # GSPO-token: s_{i,t} = sg[s_i] · π(y_t) / sg[π(y_t)], computed in log space; its value is s_i
    ratio = torch.exp(mean_log_ratio[:, None] + (new - new.detach()))
    loss_unclipped = -adv * ratio
    loss_clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    token_loss = torch.maximum(loss_unclipped, loss_clipped)  # −min(s A, clip(s) A)
    row_loss, _ = _row_means(token_loss, mask)  # token-mean within each sequence ...
    pg_loss = masked_mean(row_loss, nonempty)  # ... then mean over the sequences with a token

    loss, entropy_mean = entropy_bonus(pg_loss, entropy, mask, entropy_coef)

    with torch.no_grad():
        clipped, _ = _row_means((loss_clipped > loss_unclipped).to(logprobs.dtype), mask)
        clipfrac = masked_mean(clipped, nonempty)
        seq_ratio_mean = masked_mean(torch.exp(mean_log_ratio), nonempty)
        ppo_kl = masked_mean(-raw_log_ratio, mask)  # token-mean of old − new, like ppo_clip_loss
    stats = {
        "pg_loss": float(pg_loss.detach().item()),
        "pg_clipfrac": float(clipfrac.item()),
        "seq_ratio_mean": float(seq_ratio_mean.item()),
        "ppo_kl": float(ppo_kl.item()),
        "entropy": entropy_mean,
    }
    return loss, stats


def check_gspo_knobs(clip_low: float, clip_high: float, entropy_coef: float) -> None:
    """ValueError naming the first knob of :func:`gspo_loss` outside its range."""
    check_clip_knobs(clip_low, clip_high, None, entropy_coef, low_below_one=True)  # no dual clip in GSPO


@dataclass(frozen=True)
class GSPO:
    """The GSPO loss of :func:`gspo_loss` as a policy loss (the ``algorithm.loss`` node,
    conf/algorithm/loss/gspo.yaml): called on a micro-batch's :class:`~serl.types.LossInputs`, returns
    ``(loss, stats)``. ``uses_entropy`` tells the learner to compute token entropies for the bonus."""

    clip_low: float = 3e-4  # ε_low ∈ [0, 1): sequence ratio >= 1 − ε_low (paper 3e-4)
    clip_high: float = 4e-4  # ε_high >= 0: sequence ratio <= 1 + ε_high (paper 4e-4)
    entropy_coef: float = 0.0  # >= 0 (the paper trains without an entropy bonus)

    def __post_init__(self) -> None:
        check_gspo_knobs(self.clip_low, self.clip_high, self.entropy_coef)

    @property
    def uses_entropy(self) -> bool:
        return self.entropy_coef > 0

    def __call__(self, x: LossInputs) -> tuple[Tensor, dict[str, float]]:
        return gspo_loss(
            x.logprobs,
            x.old_logprobs,
            x.advantages,
            x.response_mask,
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            entropy=x.entropy,
            entropy_coef=self.entropy_coef,
        )
