"""The algorithm's seams (docs/configuration.md "An algorithm's parts"): an advantage estimator and a policy
loss are callables chosen by ``_target_``; the trainer, learner and build run them without naming them.

* a toy estimator (one function here, one config node built here) trains one step through the real trainer;
* a toy loss the same way (the learner computes entropies only for a loss that asks for them), with a toy
  sampling part (keep odd groups) that makes the trainer play a second round and renumber the kept groups;
* (slow) ``algorithm=dapo`` on the tiny model (no group ever differs) plays its 3 rounds, trains on the first;
* the teacher is built only when the reweighting reads it and the feedback source is on.
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from dataclasses import dataclass

from serl.build import build_trainer
from serl.progress import Progress
from serl.types import LossInputs, StepColumns
from tests.helpers import TINY_RUN, compose_cfg

CALLS: dict[str, list] = {"advantage": [], "loss": []}


def toy_advantage(cols: StepColumns, scale: float) -> torch.Tensor:
    """+scale on the rows of trajectory 0 of each group, -scale on the others (whatever the rewards)."""
    CALLS["advantage"].append(cols)
    return torch.where(cols.traj_ids == 0, scale, -scale).float()


def toy_loss(x: LossInputs, coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE on the advantages: -coef * token-mean(A * logprob)."""
    CALLS["loss"].append(x)
    mask = x.response_mask
    loss = -coef * (x.advantages * x.logprobs * mask).sum() / mask.sum()
    return loss, {"toy_loss": float(loss.detach())}


@dataclass(frozen=True)
class KeepOddGroups:
    """A sampling part: keeps the rows of groups with an odd id (within a round)."""

    max_rounds: int = 4

    def __call__(self, cols: StepColumns) -> torch.Tensor:
        return cols.group_ids % 2 == 1


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _train_one_step(tmp_path, *overrides, **nodes):
    cfg = compose_cfg([*TINY_RUN, "steps=1", "feedback=none", *overrides])
    for part, node in nodes.items():
        cfg.algorithm[part] = OmegaConf.create(node)  # a node built in the test, replacing the option's
    trainer = build_trainer(cfg, tmp_path)
    before = _params(trainer.model)
    trainer.train()
    trainer.tracker.close()
    after = _params(trainer.model)
    moved = max(float((after[k] - before[k]).abs().max()) for k in before)
    (line,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return trainer, moved, line


def test_toy_estimator_trains_one_step_through_the_real_trainer(tmp_path):
    CALLS["advantage"].clear()
    node = {"_target_": f"{__name__}.toy_advantage", "_partial_": True, "scale": 2.0}
    trainer, moved, line = _train_one_step(tmp_path, advantage=node)
    (cols,) = CALLS["advantage"]
    assert isinstance(cols, StepColumns) and len(cols) == len(cols.valid) > 0
    assert set(cols.group_ids.tolist()) == {0} and set(cols.traj_ids.tolist()) == {0, 1}  # 1 game x 2 rollouts
    assert line["advantage/max"] == 2.0 and line["advantage/min"] == -2.0  # the toy's values reached the batch
    assert moved > 0 and trainer.teacher is None


def test_toy_loss_and_sampling_part_train_one_step(tmp_path):
    """A toy loss (no entropy asked, none computed) and a sampling part keeping odd groups: with 2 games per round
    the trainer plays a second round to keep 2 groups, renumbered in order of arrival."""
    CALLS["loss"].clear()
    loss = {"_target_": f"{__name__}.toy_loss", "_partial_": True, "coef": 1.0}
    advantage = {"_target_": f"{__name__}.toy_advantage", "_partial_": True, "scale": 1.0}
    sampling = {"_target_": f"{__name__}.KeepOddGroups"}
    trainer, moved, line = _train_one_step(tmp_path, "n_tasks=2", loss=loss, advantage=advantage, sampling=sampling)
    assert CALLS["loss"] and all(isinstance(x, LossInputs) and x.entropy is None for x in CALLS["loss"])
    assert "actor/toy_loss" in line and moved > 0
    assert line["sampling/rounds"] == 2 and line["sampling/kept_groups"] == 2  # one odd group per round of 2 games
    rollout = trainer.rollout(5, Progress(1, enabled=False))
    seen = sorted({t.group_id for t in rollout.trajectories})
    assert seen == [0, 1] and rollout.stats["sampling/rounds"] == 2  # renumbered in order of arrival


@pytest.mark.slow
def test_dapo_plays_its_rounds_and_trains_on_the_first_when_no_group_differs(tmp_path):
    _, moved, line = _train_one_step(tmp_path, "algorithm=dapo")
    # the tiny model never wins: no group's outcomes differ, 3 rounds are played, the first round is trained on
    assert line["sampling/rounds"] == 3 and line["sampling/kept_groups"] == 0
    assert line["actor/overlong_filtered"] >= 0 and line["episode/step_samples"] > 0


def test_teacher_built_only_when_the_reweighting_reads_it_and_feedback_is_on(tmp_path):
    def teacher_of(*overrides):
        return build_trainer(compose_cfg([*TINY_RUN, *overrides]), tmp_path / "_".join(overrides)).teacher

    assert teacher_of("feedback=immediate") is not None
    assert teacher_of("feedback=immediate", "algorithm=grpo") is None
    assert teacher_of("feedback=none") is None
