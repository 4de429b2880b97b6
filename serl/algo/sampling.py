"""Which groups of a rollout a training step keeps: the ``algorithm.sampling`` part. Pure torch.

A sampling part is called on a rollout round's :class:`~serl.types.StepColumns` and returns a ``[N]`` bool
mask of the rows to keep (a group is kept or dropped whole). Its ``max_rounds`` is how many rounds of
``n_tasks`` games the trainer may play in one training step to collect ``n_tasks`` kept groups
(:meth:`serl.trainer.Trainer.rollout`); kept groups are renumbered in order of arrival.

* :class:`KeepAll` — every group, one round (GRPO, SERL: the default).
* :class:`serl.algo.dapo.DynamicSampling` — DAPO's dynamic sampling: only groups whose outcomes differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from serl.types import StepColumns

__all__ = ["KeepAll", "check_max_rounds"]


def check_max_rounds(max_rounds: int) -> None:
    if not (isinstance(max_rounds, int) and not isinstance(max_rounds, bool) and max_rounds >= 1):
        raise ValueError(f"max_rounds must be an integer >= 1, got {max_rounds!r}")


@dataclass(frozen=True)
class KeepAll:
    """Keep every group of the one round played (conf/algorithm/sampling/all.yaml)."""

    max_rounds = 1

    def __call__(self, cols: StepColumns) -> Tensor:
        return torch.ones(len(cols), dtype=torch.bool)
