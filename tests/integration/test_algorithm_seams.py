"""The algorithm's seams (docs/configuration.md "An algorithm's parts"): an advantage estimator and a policy
loss are callables chosen by ``_target_``; the trainer, learner and build run them without naming them.

* a toy estimator (one function here, one config node built here) trains one step through the real trainer;
* a toy loss the same way, and the learner computes entropies only for a loss that asks for them;
* the teacher is built only when the reweighting reads it and the feedback source is on.
"""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from serl.build import build_trainer
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


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _train_one_step(tmp_path, **nodes):
    cfg = compose_cfg([*TINY_RUN, "steps=1", "feedback=none"])
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


def test_toy_loss_trains_one_step_and_gets_no_entropy(tmp_path):
    CALLS["loss"].clear()
    node = {"_target_": f"{__name__}.toy_loss", "_partial_": True, "coef": 1.0}
    advantage = {"_target_": f"{__name__}.toy_advantage", "_partial_": True, "scale": 1.0}
    _, moved, line = _train_one_step(tmp_path, loss=node, advantage=advantage)
    assert CALLS["loss"] and all(isinstance(x, LossInputs) and x.entropy is None for x in CALLS["loss"])
    assert "actor/toy_loss" in line and moved > 0


def test_teacher_built_only_when_the_reweighting_reads_it_and_feedback_is_on(tmp_path):
    def teacher_of(*overrides):
        return build_trainer(compose_cfg([*TINY_RUN, *overrides]), tmp_path / "_".join(overrides)).teacher

    assert teacher_of("feedback=immediate") is not None
    assert teacher_of("feedback=immediate", "algorithm=grpo") is None
    assert teacher_of("feedback=none") is None
