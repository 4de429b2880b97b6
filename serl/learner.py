"""The policy learner: the algorithm's advantage transform and policy loss on mini-batches (docs/reference.md §1.6, §5.2).

One ``update(batch, lam)`` call = one training step's policy update: ``ppo_epochs`` passes over the batch
in mini-batches of ``mini_batch_size`` step samples, one AdamW step per mini-batch (grad-norm clipped),
each mini-batch accumulated over micro-batches of ``micro_batch_size``. Per micro-batch:

1. current log-probs (and entropy) of the response tokens, with gradients;
2. the advantages through ``reweight`` (``algorithm.reweight``): SERL's ``Ã``, the reweighted advantage on
   action tokens of rows with context while ``lam > 0`` (§5.2, :class:`serl.algo.reweight.SerlReweight`), or
   the identity (``algorithm=grpo``);
3. ``loss`` (``algorithm.loss``): by default the dual-clip PPO loss with token-mean aggregation and the
   entropy bonus (§1.6, :class:`serl.algo.loss.PPOClip`).

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
from typing import Callable

import torch

from serl.algo.loss import PPOClip
from serl.algo.reweight import SerlReweight
from serl.distributed import SINGLE, Dist, full_tensor
from serl.knobs import Count, NonNegativeFloat, PositiveFloat, UnitFloat
from serl.policy.logprobs import response_logprobs
from serl.types import LossInputs, TrainBatch

#: a policy loss (``algorithm.loss``): a micro-batch's inputs -> (scalar loss with gradient, metrics)
PolicyLoss = Callable[[LossInputs], tuple[torch.Tensor, dict[str, float]]]
#: an advantage transform (``algorithm.reweight``): the inputs -> (the advantages the loss sees [N, T], metrics)
Reweight = Callable[[LossInputs], tuple[torch.Tensor, dict[str, float]]]


class Learner:
    """Built from the ``learner`` node of conf/train.yaml (``_partial_``, completed with the policy, the
    algorithm's loss and reweighting by serl.build); the hints are the knobs' rules, checked before any model
    loads (:mod:`serl.knobs`).

    ``loss`` (``algorithm.loss``) maps a micro-batch's :class:`~serl.types.LossInputs` to ``(loss, stats)``;
    token entropies are computed when it has ``uses_entropy`` true. ``reweight`` (``algorithm.reweight``)
    maps the same inputs to the advantages the loss sees and its metrics (SERL's, or the identity)."""

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
        temperature: PositiveFloat = 1.0,
        loss: PolicyLoss = PPOClip(),
        reweight: Reweight = SerlReweight(),
        dist: Dist = SINGLE,
    ):
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        self.params = params
        self.grad_clip = grad_clip
        self.mini_batch_size = mini_batch_size
        self.micro_batch_size = micro_batch_size
        self.ppo_epochs = ppo_epochs
        self.loss = loss
        self.reweight = reweight
        self.temperature = temperature
        self.dist = dist  # the ranks the micro-batches are dealt to (serl.distributed)

    def micro_loss(self, micro: TrainBatch, lam: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (differentiable) and its metrics."""
        device = next(self.model.parameters()).device
        want_entropy = bool(getattr(self.loss, "uses_entropy", False))
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
        x = LossInputs(
            logprobs=logprobs,
            old_logprobs=micro.old_logprobs,
            advantages=micro.advantages,
            response_mask=micro.response_mask,
            action_mask=micro.action_mask,
            teacher_logprobs=micro.teacher_logprobs,
            has_context=micro.has_context,
            entropy=entropy,
            lam=float(lam),
            truncated=micro.truncated,
        )
        x.advantages, rw = self.reweight(x)  # §5.2 (SERL), or the identity
        stats = {f"serl_action_mask/{k}": v for k, v in rw.items()}
        loss, pg = self.loss(x)
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
