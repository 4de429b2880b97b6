"""Rollout: the multi-turn agent–environment loop and its generation backends (docs/reference.md §1.3)."""

from serl.rollout.base import Generation, Generator, RolloutWorker
from serl.rollout.hf import HFGenerator

__all__ = ["Generation", "Generator", "HFGenerator", "RolloutWorker"]
