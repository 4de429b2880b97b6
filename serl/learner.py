"""The GRPO learner with SERL's action-token reweighting (docs/reference.md §1.6, §5.2).

One ``update(batch, lam)`` call = one training step's policy update: ``ppo_epochs`` passes over the batch
in mini-batches of ``mini_batch_size`` step samples, one AdamW step per mini-batch (grad-norm clipped),
each mini-batch accumulated over micro-batches of ``micro_batch_size``. Per micro-batch:

1. current log-probs (and entropy) of the response tokens, with gradients;
2. ``Ã`` = the SERL reweight of the GRPO advantage on action tokens of rows with context (§5.2) when
   ``lam > 0``; the student log-prob in the gap is the behaviour log-prob (serl default) or the current
   one (``student_logprob="current"``, the reference, §10.6);
3. the dual-clip PPO loss with token-mean aggregation and the entropy bonus (§1.6).

Micro-batch losses are token-means over the micro-batch, scaled by the micro-batch's share of the
mini-batch's rows (the reference's gradient-accumulation scaling). Within a mini-batch, rows are cut into
micro-batches in order of length (prompt + response tokens), so each micro-batch is padded only to rows of
similar length (measured on a CPU-preset batch: +3 % padded positions instead of +14 % in arrival order); the
reference cuts them in arrival order (a deviation in grouping only: the same rows, the same scaling).

Data parallel (``torchrun``, :mod:`serl.distributed`): every rank holds the whole batch; the micro-batches of
each mini-batch are cut exactly as above and dealt round-robin to the ranks, whose FSDP2 reduce-scatter sums
the gradients, so an optimizer step equals the single-process one for any world size. A rank without a
micro-batch in the last round runs a zero-weight dummy (the FSDP collectives stay in step); the metrics are
merged over the ranks.
"""

from __future__ import annotations

from collections import defaultdict
from typing import get_args

import torch

from serl.algo.loss import ppo_clip_loss
from serl.algo.reweight import serl_reweight
from serl.distributed import SINGLE, Dist, full_tensor
from serl.knobs import Count, DualClip, NonNegativeFloat, PositiveFloat, StudentLogprob, UnitFloat
from serl.policy.logprobs import response_logprobs
from serl.types import TrainBatch

STUDENT_LOGPROB_CHOICES = get_args(StudentLogprob)


class Learner:
    """Built from the ``learner`` node of conf/train.yaml (``_partial_``, completed with the policy by
    serl.build); the hints are the knobs' rules, checked before any model loads (:mod:`serl.knobs`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        lr: PositiveFloat = 1e-6,
        betas: tuple[UnitFloat, UnitFloat] = (0.9, 0.999),
        weight_decay: NonNegativeFloat = 0.01,
        grad_clip: PositiveFloat = 1.0,
        mini_batch_size: Count = 256,
        micro_batch_size: Count = 32,
        ppo_epochs: Count = 1,
        clip_low: UnitFloat = 0.2,
        clip_high: NonNegativeFloat = 0.2,
        clip_c: DualClip = 3.0,
        entropy_coef: NonNegativeFloat = 0.001,
        weight_clip: NonNegativeFloat = 0.2,
        temperature: PositiveFloat = 1.0,
        student_logprob: StudentLogprob = "old",
        dist: Dist = SINGLE,
    ):
        if student_logprob not in STUDENT_LOGPROB_CHOICES:
            raise ValueError(f"student_logprob={student_logprob!r} is not one of {STUDENT_LOGPROB_CHOICES}")
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        self.params = params
        self.grad_clip = grad_clip
        self.mini_batch_size = mini_batch_size
        self.micro_batch_size = micro_batch_size
        self.ppo_epochs = ppo_epochs
        self.clip = dict(clip_low=clip_low, clip_high=clip_high, clip_c=clip_c)
        self.entropy_coef = entropy_coef
        self.weight_clip = weight_clip
        self.temperature = temperature
        self.student_logprob = student_logprob
        self.dist = dist  # the ranks the micro-batches are dealt to (serl.distributed)

    def micro_loss(self, micro: TrainBatch, lam: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (differentiable) and its metrics."""
        device = next(self.model.parameters()).device
        want_entropy = self.entropy_coef > 0
        out = response_logprobs(
            self.model,
            micro.input_ids.to(device),
            micro.attention_mask.to(device),
            n_response=micro.n_response,
            temperature=self.temperature,
            micro_batch_size=len(micro),
            with_entropy=want_entropy,
            grad=True,
        )
        logprobs, entropy = out if want_entropy else (out, None)
        logprobs = logprobs.float().cpu() if device.type != "cpu" else logprobs.float()
        if entropy is not None and device.type != "cpu":
            entropy = entropy.float().cpu()
        stats: dict[str, float] = {}
        advantages = micro.advantages
        if lam > 0 and bool(micro.has_context.any()):
            student = micro.old_logprobs if self.student_logprob == "old" else logprobs.detach()
            advantages, rw = serl_reweight(
                advantages,
                student,
                micro.teacher_logprobs,
                micro.response_mask,
                micro.action_mask,
                micro.has_context,
                lam=lam,
                weight_clip=self.weight_clip,
            )
            stats.update({f"serl_action_mask/{k}": v for k, v in rw.items()})
        loss, pg = ppo_clip_loss(
            logprobs,
            micro.old_logprobs,
            advantages,
            micro.response_mask,
            entropy=entropy,
            entropy_coef=self.entropy_coef,
            **self.clip,
        )
        stats.update({f"actor/{k}": v for k, v in pg.items()})
        stats["actor/loss"] = float(loss.detach())
        return loss, stats

    def update(self, batch: TrainBatch, lam: float) -> dict[str, float]:
        """One training step's update; metrics are micro-batch means (``*_min``/``*_max``: extremes)."""
        self.model.train()
        stats = _Stats()
        grad_norms = []
        n = len(batch)
        for _ in range(self.ppo_epochs):
            for m0 in range(0, n, self.mini_batch_size):
                mini = batch.select(slice(m0, min(n, m0 + self.mini_batch_size)))
                mini = mini.select(torch.argsort(mini.attention_mask.sum(dim=1), descending=True, stable=True))
                micros = [slice(u0, min(len(mini), u0 + self.micro_batch_size)) for u0 in range(0, len(mini), self.micro_batch_size)]
                self.optimizer.zero_grad(set_to_none=True)
                for c in self.dist.deal(len(micros)):  # all of them, in order, in a single process
                    micro = mini.select(micros[0 if c is None else c])
                    loss, micro_stats = self.micro_loss(micro, lam)
                    share = 0.0 if c is None else len(micro) / len(mini)  # None: a dummy keeping FSDP in step
                    (loss * share).backward()
                    if c is not None:
                        stats.add(micro_stats)
                norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
                grad_norms.append(float(full_tensor(norm)))
                self.optimizer.step()
        metrics = stats.merged(self.dist)
        metrics["actor/grad_norm"] = sum(grad_norms) / max(1, len(grad_norms))
        metrics["actor/optimizer_steps"] = float(len(grad_norms))
        self.model.eval()
        return metrics


class _Stats:
    """Micro-batch metrics: sums and counts for means, running extremes for ``*_min`` / ``*_max`` keys."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.extremes: dict[str, float] = {}

    def add(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            if k.endswith("_min"):
                self.extremes[k] = min(self.extremes.get(k, v), v)
            elif k.endswith("_max"):
                self.extremes[k] = max(self.extremes.get(k, v), v)
            else:
                self.sums[k] += v
                self.counts[k] += 1

    def merged(self, dist: Dist) -> dict[str, float]:
        """The means and extremes over every rank's micro-batches."""
        parts = dist.gather_each((dict(self.sums), dict(self.counts), self.extremes)) if dist.enabled else [(self.sums, self.counts, self.extremes)]
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        out: dict[str, float] = {}
        for s, c, e in parts:
            for k, v in s.items():
                sums[k] += v
                counts[k] += c[k]
            for k, v in e.items():
                out[k] = (min if k.endswith("_min") else max)(out.get(k, v), v)
        out.update({k: sums[k] / counts[k] for k in sums})
        return out
