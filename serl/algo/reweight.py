"""SERL action-token reweighting of the GRPO advantage. Pure torch.

Implements docs/reference.md §5.2 (``CA :: compute_serl_action_mask_reweighted_advantages``) and the §5.3
metrics. The teacher/student log-prob gap on the student's own sampled tokens turns into a bounded,
sign-aware weight ``w ∈ [1−c, 1+c]`` that is mixed into the advantage with coefficient λ, on the
executable-action tokens of steps that received a privileged context only::

    Δ_t   = stopgrad(ℓT_t − ℓS_t)
    u_t   = clamp(sign(A_t) · Δ_t, −20, 20)          sign(0) = 0
    w_t   = clamp(exp(u_t), 1 − c, 1 + c)
    sel_t = response_t ∧ context_row ∧ action_t
    Ã_t   = A_t · ((1 − λ) + λ · w_t)  if sel_t,  A_t otherwise
    Ã_t  *= response_t

Sign table (w before mixing): A>0, Δ>0 → w>1 (promote more); A>0, Δ<0 → w<1 (promote less);
A<0, Δ>0 → w<1 (penalise less); A<0, Δ<0 → w>1 (suppress more); A=0 → w=1.

Which student log-prob is passed (behaviour/old by default, or current) is the caller's choice
(docs/design.md §4, §10.6); this function only sees ``student_logprobs``.

Deviations from the reference
-----------------------------
* λ = 0 short-circuits to exactly ``A · response_mask`` (the reference gives the same values; the short
  cut also makes non-finite teacher log-probs harmless when SERL is off). Metrics are still computed.
* When no token is selected the weight metrics are 1.0 (mean/min/max) and 0.0 (``delta_abs_mean``,
  ``clipped_fraction``, ``selected_fraction``), never NaN; ``empty_target`` is 1.0.
* The output carries no autograd history (A and Δ are detached, as in the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from serl.types import LossInputs

__all__ = ["serl_reweight", "token_weights", "SerlReweight", "NoReweight", "U_CLAMP", "CLIP_TOL"]

U_CLAMP = 20.0  # §5.2: u = clamp(sign(A)·Δ, −20, 20)
CLIP_TOL = 1e-6  # §5.3: w "at a bound" within ±1e-6


def _check_2d_like(name: str, x: Tensor, shape: torch.Size) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != shape:
        raise ValueError(f"{name} must have shape [N, T] = {tuple(shape)} (like advantages), got {tuple(x.shape)}")


def token_weights(
    advantages: Tensor, student_logprobs: Tensor, teacher_logprobs: Tensor, weight_clip: float = 0.2
) -> tuple[Tensor, Tensor]:
    """``(Δ, w)``, both ``[N, T]``: the teacher/student gap and the clipped sign-aware weight of §5.2.

    ``Δ = ℓT − ℓS`` (detached); ``w = clamp(exp(clamp(sign(A)·Δ, −20, 20)), 1 − c, 1 + c)``, so ``w = 1``
    where ``A = 0``. Every token gets a value; which tokens are reweighted is :func:`serl_reweight`'s business.
    """
    delta = (teacher_logprobs.detach() - student_logprobs.detach()).to(advantages.dtype)  # §5.2: Δ_t
    # §5.2: u_t = clamp(sign(A_t)·Δ_t, −20, 20), sign(0) = 0
    u = torch.clamp(torch.sign(advantages.detach()) * delta, -U_CLAMP, U_CLAMP)
    # §5.2: w_t = clamp(exp(u_t), 1 − c, 1 + c)
    return delta, torch.clamp(torch.exp(u), 1.0 - weight_clip, 1.0 + weight_clip)


def mixed_multiplier(w: Tensor, lam: float) -> Tensor:
    """The factor on a selected token's advantage, ``(1 − λ) + λ·w`` (§5.2): λ mixes the teacher's weight
    ``w`` with plain GRPO's 1."""
    return (1.0 - lam) + lam * w


def serl_reweight(
    advantages: Tensor,
    student_logprobs: Tensor,
    teacher_logprobs: Tensor,
    response_mask: Tensor,
    action_mask: Tensor,
    has_context: Tensor,
    lam: float,
    weight_clip: float = 0.2,
) -> tuple[Tensor, dict[str, float]]:
    """Reweight the advantage on selected action tokens (docs/reference.md §5.2) and report §5.3 metrics.

    Args:
        advantages: ``[N, T]`` per-token advantages (the step advantage broadcast over its response).
        student_logprobs: ``[N, T]`` student log-probs of the sampled tokens (ℓS).
        teacher_logprobs: ``[N, T]`` teacher log-probs of the same tokens (ℓT); values outside the
            selected tokens are ignored (may be anything, e.g. 0 or NaN padding).
        response_mask: ``[N, T]`` bool (or 0/1) valid response tokens.
        action_mask: ``[N, T]`` bool (or 0/1) executable-action tokens (§6).
        has_context: ``[N]`` bool, the step received a privileged context (the reference's ``serl_mask``).
        lam: effective mixing coefficient λ ∈ [0, 1] (§5.1).
        weight_clip: c ≥ 0; ``w`` is clipped to ``[1 − c, 1 + c]`` (reference 0.2).

    Returns:
        ``(Ã [N, T], stats)`` with ``stats`` keys ``weight_mean``, ``weight_min``, ``weight_max`` (of clipped
        ``w`` on selected tokens), ``delta_abs_mean`` (mean ``|Δ|`` on selected tokens),
        ``selected_fraction`` (#selected / #response tokens of context rows), ``clipped_fraction``
        (share of selected tokens with ``w`` at a bound ±1e-6), ``lambda`` and ``empty_target``
        (1.0 iff no token is selected).
    """
    if not isinstance(advantages, Tensor) or advantages.dim() != 2:
        shape = tuple(advantages.shape) if isinstance(advantages, Tensor) else type(advantages).__name__
        raise ValueError(f"advantages must be a 2-D tensor [N, T], got {shape}")
    shape = advantages.shape
    _check_2d_like("student_logprobs", student_logprobs, shape)
    _check_2d_like("teacher_logprobs", teacher_logprobs, shape)
    _check_2d_like("response_mask", response_mask, shape)
    _check_2d_like("action_mask", action_mask, shape)
    if not isinstance(has_context, Tensor) or has_context.shape != shape[:1]:
        got = tuple(has_context.shape) if isinstance(has_context, Tensor) else type(has_context).__name__
        raise ValueError(f"has_context must have shape [N] = ({shape[0]},), got {got}")
    if not (isinstance(lam, (int, float)) and 0.0 <= lam <= 1.0):
        raise ValueError(f"lam must be a float in [0, 1], got {lam!r}")
    if not (isinstance(weight_clip, (int, float)) and math.isfinite(weight_clip) and weight_clip >= 0.0):
        raise ValueError(f"weight_clip must be a finite float >= 0, got {weight_clip!r}")
    lam = float(lam)
    c = float(weight_clip)

    adv = advantages.detach()
    resp = response_mask.bool()
    ctx_rows = has_context.bool()
    # §5.2: sel_t = response_mask_t ∧ serl_mask_row ∧ action_mask_t
    sel = resp & ctx_rows[:, None] & action_mask.bool()

    delta, w = token_weights(adv, student_logprobs, teacher_logprobs, c)  # §5.2: Δ_t, w_t

    resp_f = resp.to(adv.dtype)
    if lam == 0.0:
        new_adv = adv * resp_f  # λ = 0 ⇒ exactly A·response_mask (plain GRPO, §1.8)
    else:
        # §5.2: Ã_t = A_t·((1 − λ) + λ·w_t) if sel_t, A_t otherwise
        new_adv = torch.where(sel, adv * mixed_multiplier(w, lam), adv)
        new_adv = new_adv * resp_f  # §5.2: Ã_t *= response_mask_t

    # §5.3 metrics
    n_sel = int(sel.sum().item())
    n_ctx_resp = int((resp & ctx_rows[:, None]).sum().item())
    if n_sel > 0:
        w_sel = w[sel].to(torch.float64)
        at_bound = ((w_sel - (1.0 - c)).abs() <= CLIP_TOL) | ((w_sel - (1.0 + c)).abs() <= CLIP_TOL)
        stats = {
            "weight_mean": float(w_sel.mean().item()),
            "weight_min": float(w_sel.min().item()),
            "weight_max": float(w_sel.max().item()),
            "delta_abs_mean": float(delta[sel].to(torch.float64).abs().mean().item()),
            "clipped_fraction": float(at_bound.to(torch.float64).mean().item()),
        }
    else:
        stats = {
            "weight_mean": 1.0,
            "weight_min": 1.0,
            "weight_max": 1.0,
            "delta_abs_mean": 0.0,
            "clipped_fraction": 0.0,
        }
    stats["selected_fraction"] = n_sel / n_ctx_resp if n_ctx_resp > 0 else 0.0
    stats["lambda"] = lam
    stats["empty_target"] = 1.0 if n_sel == 0 else 0.0
    return new_adv, stats


@dataclass(frozen=True)
class SerlReweight:
    """SERL's reweighting as a transform of any estimator's per-token advantages (the ``algorithm.reweight``
    node, conf/algorithm/reweight/serl.yaml): :func:`serl_reweight` on a micro-batch's
    :class:`~serl.types.LossInputs` at its λ. ``student_logprob`` picks ℓS in the gap: ``old`` (the behaviour
    log-prob, serl) or ``current`` (the learner's, the reference, docs/reference.md §10.6).
    ``uses_teacher``: the trainer runs the teacher for it (when the feedback source is on)."""

    weight_clip: float = 0.2  # c: w clipped to [1 − c, 1 + c] (§5.2)
    student_logprob: Literal["old", "current"] = "old"
    uses_teacher = True

    def __post_init__(self) -> None:
        if not (isinstance(self.weight_clip, (int, float)) and math.isfinite(self.weight_clip) and self.weight_clip >= 0):
            raise ValueError(f"weight_clip must be a finite float >= 0, got {self.weight_clip!r}")
        if self.student_logprob not in ("old", "current"):
            raise ValueError(f"student_logprob={self.student_logprob!r} is not one of old, current")

    def __call__(self, x: LossInputs) -> tuple[Tensor, dict[str, float]]:
        """``(Ã [N, T], §5.3 metrics)``; ``x.advantages`` unchanged (times the response mask) while λ = 0 or no
        row has a context."""
        if x.lam <= 0 or not bool(x.has_context.any()):
            return x.advantages, {}
        student = x.old_logprobs if self.student_logprob == "old" else x.logprobs.detach()
        return serl_reweight(
            x.advantages, student, x.teacher_logprobs, x.response_mask, x.action_mask, x.has_context,
            lam=x.lam, weight_clip=self.weight_clip,
        )


@dataclass(frozen=True)
class NoReweight:
    """The identity transform (conf/algorithm/reweight/none.yaml): the estimator's advantages as they are, and
    no teacher. ``algorithm=grpo`` is SERL with this transform."""

    uses_teacher = False

    def __call__(self, x: LossInputs) -> tuple[Tensor, dict[str, float]]:
        return x.advantages, {}
