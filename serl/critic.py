"""The state-value critic of PPO (``algorithm.critic``): ``V(s_t)`` of every step sample's state, and its training.

Built from ``conf/algorithm/critic/<option>.yaml`` (``_partial_``, completed by serl.build with the policy and the
pad id), used by the trainer in two calls per training step:

1. ``values(steps)`` before the estimator: ``[N]`` values, one per step sample, of the state the step was
   taken from (its prompt), which the trainer puts into :class:`~serl.types.StepColumns` (``values``) for the
   estimator (:class:`serl.algo.gae.GAE`);
2. ``update(columns, estimator)`` after the policy update: ``epochs`` optimizer steps of the clipped value loss
   (:func:`serl.algo.gae.clipped_value_loss`) towards the estimator's ``value_targets`` (GAE's lambda-returns),
   on the states of the latest ``values`` call.

The value is a linear head on the final hidden state of the prompt's last token. ``trunk`` chooses whose:

* ``policy`` (``algorithm/critic=head``): the policy's own hidden states, read without gradient, so the value
  loss trains only the head (a small, cheap critic; the policy is not changed by it);
* ``separate`` (``algorithm/critic=model``): a separate copy of the policy made at build time (the veRL way: the
  critic starts from the actor's weights) whose trainable parameters (all of them, or the LoRA adapter) and head
  are trained together. It doubles the model memory and adds a forward and backward over the prompts.

:class:`NoCritic` (``algorithm/critic=none``) is the absence of one: every estimator but GAE.

The critic runs in one process: a run under ``torchrun`` with a critic is refused at build (docs/distributed.md).
"""

from __future__ import annotations

import copy
from typing import Literal, Optional, Protocol, Sequence

import torch

from serl.algo.gae import clipped_value_loss
from serl.knobs import Count, PositiveFloat
from serl.policy.logprobs import last_hidden_states
from serl.types import Step, StepColumns

__all__ = ["NoCritic", "ValueCritic", "TRUNKS"]

TRUNKS = ("policy", "separate")


class ValueTargets(Protocol):
    """An estimator that learns from a critic (:class:`serl.algo.gae.GAE`)."""

    def value_targets(self, cols: StepColumns) -> torch.Tensor: ...


class NoCritic:
    """No value function (``algorithm/critic=none``). Completed like any critic option, with the policy and
    the pad id, which it ignores."""

    enabled = False

    def __init__(self, model: Optional[torch.nn.Module] = None, pad_id: int = 0):
        pass

    def values(self, steps: Sequence[Step]) -> None:
        return None

    def update(self, cols: StepColumns, estimator: object) -> dict[str, float]:
        return {}

    def state_tensors(self) -> None:
        return None


class ValueCritic:
    """``V(s_t) = w · h(s_t) + b``: a linear head (zero-initialised, so every value starts at 0) on the final
    hidden state ``h`` of the prompt's last token, from the policy (``trunk=policy``) or a separate copy of it
    (``trunk=separate``); trained with AdamW (module docstring)."""

    enabled = True

    def __init__(
        self,
        model: torch.nn.Module,
        pad_id: int,
        trunk: Literal["policy", "separate"] = "policy",
        lr: PositiveFloat = 1e-3,
        epochs: Count = 4,
        value_clip: Optional[PositiveFloat] = 0.5,
        grad_clip: PositiveFloat = 1.0,
        micro_batch_size: Count = 8,
    ):
        if trunk not in TRUNKS:
            raise ValueError(f"trunk={trunk!r} is not one of {', '.join(TRUNKS)}")
        self.trunk_kind = trunk
        self.pad_id = int(pad_id)
        self.epochs = epochs
        self.value_clip = value_clip
        self.grad_clip = grad_clip
        self.micro_batch_size = micro_batch_size
        self.trunk = model if trunk == "policy" else copy.deepcopy(model)
        device = next(model.parameters()).device
        self.head = torch.nn.Linear(int(model.config.hidden_size), 1, device=device, dtype=torch.float32)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self.modules = {"head": self.head} if trunk == "policy" else {"head": self.head, "trunk": self.trunk}
        self.params = [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        self._prompts: list[list[int]] | None = None  # the states of the latest values() call
        self._features: torch.Tensor | None = None  # [N, H] their policy features (trunk=policy)

    def _hidden(self, prompts: list[list[int]], grad: bool) -> torch.Tensor:
        return last_hidden_states(self.trunk, prompts, self.pad_id, self.micro_batch_size, grad=grad)

    @torch.no_grad()
    def values(self, steps: Sequence[Step]) -> torch.Tensor:
        """``[N]`` float32 values of the steps' states (CPU), remembered for :meth:`update`."""
        self._prompts = [list(s.prompt_ids) for s in steps]
        features = self._hidden(self._prompts, grad=False)
        self._features = features if self.trunk_kind == "policy" else None
        return self.head(features).squeeze(-1).float().cpu()

    def update(self, cols: StepColumns, estimator: ValueTargets) -> dict[str, float]:
        """Train on the states of the latest :meth:`values` call towards ``estimator.value_targets(cols)``;
        returns the ``critic/*`` metrics (docs/metrics.md)."""
        if self._prompts is None or cols.values is None or len(cols) != len(self._prompts):
            raise RuntimeError("ValueCritic.update needs the columns of the latest values() call (values first)")
        old = cols.values.float()
        targets = estimator.value_targets(cols).float()
        device = self.head.weight.device
        n = len(self._prompts)
        for m in self.modules.values():
            m.train()
        chunk = n if self._features is not None else self.micro_batch_size  # cached features: one pass
        stats: dict[str, float] = {}
        norms = []
        for _ in range(self.epochs):  # one optimizer step per epoch, over every row
            self.optimizer.zero_grad(set_to_none=True)
            stats = {"value_loss": 0.0, "value_clipfrac": 0.0, "value_error": 0.0}
            for s0 in range(0, n, chunk):
                rows = slice(s0, min(n, s0 + chunk))
                features = self._features[rows] if self._features is not None else self._hidden(self._prompts[rows], grad=True)
                v = self.head(features.to(device)).squeeze(-1).float().cpu()
                loss, micro = clipped_value_loss(v, old[rows], targets[rows], self.value_clip)
                share = (rows.stop - rows.start) / n  # micro-batch losses are means: weight them by their rows
                (loss * share).backward()
                for k in stats:
                    stats[k] += micro[k] * share
            norms.append(float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)))
            self.optimizer.step()
        for m in self.modules.values():
            m.eval()
        var = float(targets.var()) if n > 1 else 0.0
        explained = 1.0 - float((targets - old).var()) / var if var > 0 else 0.0
        self._prompts, self._features = None, None
        return {
            "critic/value_loss": stats["value_loss"],  # the last epoch's
            "critic/value_clipfrac": stats["value_clipfrac"],
            "critic/value_error": stats["value_error"],
            "critic/values_mean": float(old.mean()),
            "critic/returns_mean": float(targets.mean()),
            "critic/explained_variance": explained,
            "critic/grad_norm": sum(norms) / len(norms),
        }

    # ------------------------------------------------------------------------------------ checkpointing
    def _named(self) -> dict[str, torch.nn.Parameter]:
        return {f"{k}.{n}": p for k, m in self.modules.items() for n, p in m.named_parameters() if p.requires_grad}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What a resumed run needs, as flat tensors: the trained parameters (``param/<name>``) and the
        optimizer's state (``optimizer/<index>/<key>``)."""
        out = {f"param/{k}": p.detach().cpu().clone() for k, p in self._named().items()}
        for idx, per_param in self.optimizer.state_dict()["state"].items():
            for key, v in per_param.items():
                out[f"optimizer/{idx}/{key}"] = torch.as_tensor(v).detach().cpu().clone()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """The inverse of :meth:`state_tensors`; ValueError naming what does not match (another critic)."""
        named = self._named()
        saved = {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}
        if set(saved) != set(named) or any(tuple(saved[k].shape) != tuple(p.shape) for k, p in named.items()):
            missing, extra = sorted(set(named) - set(saved)), sorted(set(saved) - set(named))
            raise ValueError(f"the checkpoint's critic does not match this run's (trunk={self.trunk_kind}): "
                             f"missing {missing[:3]}, unexpected {extra[:3]}, or other shapes")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optimizer/"):
                _, idx, key = k.split("/", 2)
                state.setdefault(int(idx), {})[key] = v
        with torch.no_grad():
            for k, p in named.items():
                p.copy_(saved[k].to(p.device, p.dtype))
        self.optimizer.load_state_dict({"state": state, "param_groups": self.optimizer.state_dict()["param_groups"]})
