"""Every baseline trains one step through the real trainer on the tiny model and changes its parameters
(issue 14; the parts' numbers are checked by hand in tests/unit/test_{rloo,gigpo,dapo,gspo,distill}.py).

The tiny model is warm-started for a few seconds first (the session's ``warm_tiny_dir``), so it answers in the
response format and some groups mix: the estimators have non-zero advantages to give. Each run plays 2 games
x 2 rollouts of 2 turns with the state-diff teacher at anchors, so the SERL reweighting (on top of RLOO,
GiGPO, DAPO, GSPO) and the distillation losses have a teacher to read.
"""

from __future__ import annotations

import json

import pytest
import torch

from serl.build import build_trainer
from tests.helpers import TINY_RUN, compose_cfg

RUN = [
    *[o for o in TINY_RUN if not o.startswith(("n_tasks=", "env.train_pool="))],
    "n_tasks=2",
    "env.train_pool=4",
    "steps=1",
    "feedback=state_diff",
    "insertion=anchor",
    "rollout.max_new_tokens=40",  # room for a whole <think>...</think><action>...</action> response
    "teacher_log.every=0",
]
# In the default suite: an estimator (RLOO), a loss that reads the teacher on every row (GRPO + distillation) and
# PPO with its critic; the others are `slow` (make test-all), about 20 s each on 2 cores.
BASELINES = [
    "rloo", "grpo_self_distill", "ppo",
    *(pytest.param(a, marks=pytest.mark.slow) for a in ("gigpo", "dapo", "gspo", "self_distill")),
]


@pytest.mark.parametrize("algorithm", BASELINES)
def test_baseline_trains_one_step_and_moves_the_parameters(algorithm, warm_tiny_dir, tmp_path):
    cfg = compose_cfg([*RUN, f"model.path={warm_tiny_dir}", f"algorithm={algorithm}"])
    trainer = build_trainer(cfg, tmp_path)
    assert trainer.teacher is not None  # every baseline here reads the teacher: SERL's reweighting or distillation
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    trainer.train()
    trainer.tracker.close()
    moved = max(float((v.detach() - before[k]).abs().max()) for k, v in trainer.model.named_parameters() if k in before)
    (line,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["completed"] and summary["choices"]["algorithm"] == algorithm
    assert moved > 0, f"algorithm={algorithm}: the update left every parameter as it was"
    assert torch.isfinite(torch.tensor(line["actor/loss"]))
    if algorithm in ("self_distill", "grpo_self_distill"):
        assert line["actor/distill_tokens"] > 0  # the teacher scored rows with a context
    if algorithm == "dapo":
        assert line["sampling/rounds"] >= 1 and "actor/overlong_filtered" in line
