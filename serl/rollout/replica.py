"""Generation on a whole copy of a sharded policy (docs/distributed.md: the HF backend under torchrun).

Under FSDP2 every rank holds only a shard of the policy, and HF ``generate`` cannot run on a sharded model
(each forward is a collective, and the ranks' episodes need different numbers of forwards). So each rank
generates on a *replica*: an ordinary, unsharded copy of the policy made before sharding. After every update
:meth:`ReplicaGenerator.sync_weights` gathers the trainable tensors from the shards one at a time and copies
them into the replica (frozen weights — a LoRA run's base — never change, so they are never sent). This is
the same protocol as a colocated vLLM engine receiving the gathered weights.
"""

from __future__ import annotations

from typing import Any

import torch

from serl.distributed import full_named_tensors
from serl.policy.models import trainable_parameters
from serl.rollout.base import Generator


class ReplicaGenerator:
    """A :class:`~serl.rollout.base.Generator` sampling from ``replica`` through ``generator`` (e.g. an
    :class:`~serl.rollout.hf.HFGenerator` built on the replica), kept equal to the sharded policy."""

    def __init__(self, generator: Generator, replica: torch.nn.Module):
        self.generator = generator
        self.replica = replica

    def generate(self, *args: Any, **kwargs: Any):
        return self.generator.generate(*args, **kwargs)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Copy ``model``'s trainable tensors (gathered from their shards, one at a time) into the replica.
        A collective under FSDP: every rank calls it."""
        targets = dict(self.replica.named_parameters())  # the replica is frozen: it never trains itself
        with torch.no_grad():
            for name, full in full_named_tensors(trainable_parameters(model).items()):
                targets[name].copy_(full)
