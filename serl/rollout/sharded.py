"""Rollouts split over data-parallel ranks (docs/distributed.md).

:func:`collect_sharded` is :meth:`serl.rollout.base.RolloutWorker.collect` over the ranks: each rank plays a
contiguous block of the games (``Dist.shard``; a GRPO group never spans ranks) as global groups
``first_group = lo ...``, so episode seeds and sampling seeds are those of the single-process run; the kept
trajectories are gathered in group order and the stats merged (:func:`serl.distributed.merge_counts`: counts summed, seconds the slowest rank's),
so every rank returns what one process playing every game would have returned. With one process it is a
plain ``collect`` call.
"""

from __future__ import annotations

from typing import Any

from serl.distributed import Dist, merge_counts
from serl.rollout.base import Rollout, RolloutWorker


def collect_sharded(worker: RolloutWorker, dist: Dist, games: list[str], group_size: int, seed: int, **kwargs: Any) -> Rollout:
    """This rank's share of ``len(games) × group_size`` episodes, then everyone's (see the module docstring);
    ``kwargs`` go to ``collect`` (progress, max_turns, temperature)."""
    lo, hi = dist.shard(len(games))
    local = worker.collect(games[lo:hi], group_size, seed=seed, first_group=lo, **kwargs)
    if not dist.enabled:
        return local
    return Rollout(dist.gather(local.trajectories), merge_counts(dist.gather_each(local.stats)))
