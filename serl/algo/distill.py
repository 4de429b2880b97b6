"""On-policy self-distillation from the privileged teacher: an unbounded per-token reverse-KL objective on the
student's own samples. Pure torch.

The teacher is the policy itself shown the privileged hindsight context (docs/reference.md §3.2). Where SERL
uses its opinion only as a bounded, sign-aware weight on the action tokens' advantages (§5.2), this loss pulls
the student towards the teacher on **every** response token of every row whose teacher saw a context: the
"unconstrained distillation" baseline SERL argues against. It is on-policy distillation with the reverse KL
(Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes",
GKD with student-generated data and the reverse KL as the divergence), estimated on the sampled token only.

For row ``i`` with ``has_context`` and response token ``t`` (the selected tokens ``S``)::

    k_t  = ℓ_t − ℓT_t                                   one-sample estimate of KL(π_θ ‖ π_T) at the token
    D    = (1/|S|) Σ_{t ∈ S} sg[k_t] · ℓ_t              token mean over S
    loss = base(x) + coef · λ · D                        base: a PPOClip, or nothing (0)

``∇D = (1/|S|) Σ sg[k_t] ∇ℓ_t``: the score-function (policy-gradient) estimate of ∇ KL(π_θ ‖ π_T) on the
student's samples, with the per-token reverse-KL ``ℓ − ℓT`` as the cost — a token the teacher finds likelier
than the student (k < 0) is pushed up, one it finds less likely (k > 0) pushed down, without bound. ``D``'s
value is this surrogate, not the KL; the KL estimate is the stat ``distill_reverse_kl``. ``λ`` is the step's
teacher mixing coefficient (``x.lam``), so the term decays with the schedule of SERL's reweighting; with
``λ = 0``, ``coef = 0`` or no context row the total is exactly the base loss (0 without a base).

Teacher log-probs of rows without context (0, or anything else) and all padding (inf/NaN included) are
neutralised before use: they reach neither the loss, nor the stats, nor the gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from serl.algo.loss import PPOClip, _check_same_shape, check_token_tensors, masked_mean
from serl.types import LossInputs

__all__ = ["SelfDistill", "self_distill_loss"]


def self_distill_loss(
    logprobs: Tensor, teacher_logprobs: Tensor, response_mask: Tensor, has_context: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """The distillation surrogate ``D`` of the module docstring (without ``coef · λ``).

    Args:
        logprobs: ``[N, T]`` current-policy log-probs of the sampled tokens (carries the gradient).
        teacher_logprobs: ``[N, T]`` the privileged teacher's log-probs of the same tokens (detached); read only
            on response tokens of rows with context.
        response_mask: ``[N, T]`` bool (or 0/1) valid response tokens.
        has_context: ``[N]`` bool, the row's teacher saw a privileged context.

    Returns:
        ``(D, stats)``: scalar ``D`` (0 when no token is selected); ``stats`` keys ``distill_loss`` (``D``),
        ``distill_reverse_kl`` (token-mean of ``k_t`` over the selected tokens), ``distill_tokens`` (selected
        share of the response tokens; 0.0 when there are none).
    """
    check_token_tensors(logprobs, teacher_logprobs=teacher_logprobs, response_mask=response_mask)
    _check_same_shape("has_context", has_context, logprobs.shape[:1], "logprobs' rows")

    response = response_mask.bool()
    selected = response & has_context.bool()[:, None]  # all response tokens of rows with context
    # rows without context and padding may hold anything (0, inf, NaN): neutralise before the difference
    new = torch.where(selected, logprobs, 0.0)
    teacher = torch.where(selected, teacher_logprobs.detach().to(logprobs.dtype), 0.0)
    k = (new - teacher).detach()  # per-token reverse-KL estimate ℓ − ℓT on the sampled token
    distill = masked_mean(k * new, selected)  # ∇ = token-mean of k·∇ℓ, the on-policy reverse-KL gradient

    with torch.no_grad():
        reverse_kl = masked_mean(k, selected)
        share = masked_mean(selected.to(logprobs.dtype), response)
    stats = {
        "distill_loss": float(distill.detach().item()),
        "distill_reverse_kl": float(reverse_kl.item()),
        "distill_tokens": float(share.item()),
    }
    return distill, stats


@dataclass(frozen=True)
class SelfDistill:
    """On-policy self-distillation as a policy loss (the ``algorithm.loss`` node,
    conf/algorithm/loss/self_distill.yaml, or on top of PPO in grpo_self_distill.yaml): ``base(x)`` when a
    base loss is set, plus ``coef · λ · D`` (module docstring). ``uses_teacher`` tells the trainer to score
    every row with the teacher (not only those with a non-zero advantage)."""

    coef: float = 1.0  # >= 0, weight of the distillation term (times λ)
    base: PPOClip | None = None  # the RL loss it is added to; None: distillation alone

    uses_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.coef, bool) or not (
            isinstance(self.coef, (int, float)) and math.isfinite(self.coef) and self.coef >= 0.0
        ):
            raise ValueError(f"coef must be a finite float >= 0, got {self.coef!r}")
        if self.base is not None and not isinstance(self.base, PPOClip):
            raise ValueError(f"base must be None or a serl.algo.loss.PPOClip, got {self.base!r}")

    @property
    def uses_entropy(self) -> bool:
        return self.base is not None and self.base.uses_entropy

    def __call__(self, x: LossInputs) -> tuple[Tensor, dict[str, float]]:
        distill, stats = self_distill_loss(x.logprobs, x.teacher_logprobs, x.response_mask, x.has_context)
        weighted = (self.coef * float(x.lam)) * distill  # D is finite, so λ = 0 adds exactly 0
        if self.base is None:
            return weighted, stats
        loss, base_stats = self.base(x)
        return loss + weighted, {**base_stats, **stats}
