"""Data parallelism under ``torchrun`` (docs/distributed.md; docs/design.md §5 "Scale-out").

One process per device. :func:`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``) and joins the process group: NCCL for ``cuda`` ranks (rank r takes ``cuda:LOCAL_RANK``),
gloo for CPU ranks. Without torchrun (or with one process) it returns :data:`SINGLE` and nothing here
communicates: a single-process run executes exactly the code it always did.

:class:`Dist` is the handle the trainer, the learner and the teacher share. The work of a training step is
split three ways, each chosen so that the result equals the single-process result for any world size:

* **games** — :meth:`Dist.shard` gives each rank a contiguous block of the step's games (a GRPO group never
  spans ranks); the trajectories are then gathered (:meth:`Dist.gather`) so every rank holds the whole
  rollout and computes the same advantages and metrics;
* **forward/backward chunks** — the teacher's scoring micro-batches and the learner's micro-batches are cut
  from the whole batch exactly as in one process and dealt round-robin (:meth:`Dist.deal`); a rank short of
  a chunk in the last round runs a zero-weight dummy so that every rank issues the same FSDP collectives;
* **sharded state** — :func:`shard_model` wraps the policy in FSDP2 (``fully_shard`` per decoder layer, then
  the root), so parameters, gradients and AdamW state are split over the ranks; gradients are *summed* by the
  reduce-scatter (each rank holds a disjoint part of the mini-batch's loss).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence, TypeVar

import torch

T = TypeVar("T")

MixedPrecision = Literal["auto", "fp32", "bf16"]
MIXED_PRECISION_CHOICES = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks; world size 1 is the single-process run (no communication)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's files (metrics, summary, config, W&B, plots, teacher dumps)."""
        return self.rank == 0

    # ------------------------------------------------------------------------------------ splitting
    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous block ``[lo, hi)`` of ``n`` items; block sizes differ by at most one and
        earlier ranks get the larger ones (``n=5, world_size=2``: ``[0, 3)`` and ``[3, 5)``)."""
        base, extra = divmod(n, self.world_size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def deal(self, n_chunks: int) -> list[int | None]:
        """The chunk indices this rank processes when ``n_chunks`` chunks are dealt round-robin (chunk c goes
        to rank ``c % world_size``), one entry per round; ``None`` marks a round where this rank has no chunk
        and must run a zero-weight dummy (every rank runs ``ceil(n_chunks / world_size)`` rounds, at least
        one when ``n_chunks > 0``)."""
        rounds = -(-n_chunks // self.world_size)
        out: list[int | None] = []
        for r in range(rounds):
            c = r * self.world_size + self.rank
            out.append(c if c < n_chunks else None)
        return out

    # ------------------------------------------------------------------------------ communication
    def gather(self, items: Sequence[T]) -> list[T]:
        """Every rank's ``items`` concatenated in rank order, on every rank (picklable objects)."""
        if not self.enabled:
            return list(items)
        parts: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(parts, list(items))
        return [x for part in parts for x in part]

    def gather_each(self, obj: T) -> list[T]:
        """``[rank 0's obj, rank 1's obj, ...]`` on every rank."""
        if not self.enabled:
            return [obj]
        parts: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(parts, obj)
        return parts

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it may write shared caches: a converted model, generated games), the
        other ranks after it, reading what it wrote."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


SINGLE = Dist()


def merge_counts(per_rank: Sequence[dict[str, float]]) -> dict[str, float]:
    """One metrics dict from every rank's share of a step: seconds (``time/*`` and ``*_s`` keys) take the
    slowest rank's value — the ranks run side by side, the step waits for the last — and everything else
    (tokens, requests, errors, dropped episodes ...) is summed."""
    keys = sorted({k for m in per_rank for k in m})
    out: dict[str, float] = {}
    for k in keys:
        values = [m[k] for m in per_rank if k in m]
        out[k] = max(values) if (k.startswith("time/") or k.endswith("_s")) else sum(values)
    return out


def init_distributed() -> Dist:
    """Join torchrun's process group when this process was launched by torchrun with ``WORLD_SIZE > 1``;
    return this rank's handle (:data:`SINGLE` for a plain process, which starts nothing).

    Called before the config is composed (every rank must agree on the run folder first), so the group
    carries both backends when CUDA exists — gloo for CPU tensors, NCCL for CUDA ones — and each rank's
    current CUDA device is ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    return Dist(rank=rank, world_size=world, local_rank=local)


def rank_device(dist: Dist, device: str) -> str:
    """The torch device of this rank for the configured ``device``: ``cuda`` is ``cuda:LOCAL_RANK`` under
    torchrun (one process per GPU); ``cpu`` stays ``cpu``."""
    if not dist.enabled or not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise ValueError(f"device={device!r}: under torchrun write device=cuda (each rank takes cuda:LOCAL_RANK)")
    if dist.local_rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"rank {dist.rank}: LOCAL_RANK={dist.local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
            "visible; launch at most that many processes per node (--nproc_per_node)"
        )
    return f"cuda:{dist.local_rank}"


def close_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------------- FSDP2
def _block_classes(model: torch.nn.Module) -> set[str]:
    """Class names of the model's repeated blocks (HF's ``_no_split_modules``, e.g. ``Qwen2DecoderLayer``)."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    return names


def shard_model(
    model: torch.nn.Module, dist: Dist, device: str, mixed_precision: MixedPrecision = "auto", reshard_after_forward: bool = True
) -> torch.nn.Module:
    """Wrap ``model`` in FSDP2 over all ranks, in place: ``fully_shard`` on every decoder block, then the root
    (embeddings, final norm and a tied head stay in the root's group). ``mixed_precision``: ``auto`` = bf16
    parameters for compute with fp32 gradient reduction on CUDA, the model's own dtype on CPU; ``bf16`` forces
    the former, ``fp32`` the latter. With bf16 compute the sharded parameters are upcast to fp32 first, so the
    optimizer updates fp32 master weights (a bf16 weight near 0.02 moves in steps of ~1e-4: an update of
    lr 1e-6 would round away). Gradients are summed over the ranks, not averaged (see the module docstring).
    Returns ``model`` (a no-op with one rank)."""
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"distributed.mixed_precision={mixed_precision!r} is not one of {MIXED_PRECISION_CHOICES}")
    if not dist.enabled:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (dist.world_size,))
    bf16 = mixed_precision == "bf16" or (mixed_precision == "auto" and device.startswith("cuda"))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    if bf16:  # the shards are the fp32 master weights AdamW updates; compute all-gathers them as bf16
        model.float()
    blocks = _block_classes(model)
    kwargs = dict(mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    for module in list(model.modules()):
        if module is not model and type(module).__name__ in blocks:
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    for module in model.modules():  # sum, not mean: every rank holds a disjoint share of the loss
        if hasattr(module, "set_gradient_divide_factor"):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no pre-multiplied sum)
    return model


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a (possibly sharded) DTensor; a collective for DTensors, a no-op otherwise."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (no communication); the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def full_named_tensors(items: Iterator[tuple[str, torch.Tensor]] | Sequence[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, whole tensor)`` one at a time (gathered from the shards when sharded): a weight push never
    holds two copies of the whole model. Every rank must consume the iterator in the same order."""
    for name, t in items:
        yield name, full_tensor(t.detach())
