"""The real training pipeline on the tiny model and generated ALFWorld games.

* the entry point (`scripts/train.py`) runs 2 steps, changes the parameters and writes metrics.jsonl,
  summary.json, a checkpoint and the W&B offline files;
* a run killed after 2 steps resumes with the same step counter, λ and teacher weights, and its third step
  reproduces the uninterrupted run's third step;
* `feedback=none`, `algorithm=grpo` and λ = 0 all train without the teacher.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from serl.build import build_trainer
from serl.checkpoint import load_checkpoint
from serl.policy.models import load_policy, resolve_model_path
from tests.helpers import ROOT, TINY_RUN, compose_cfg, documented_metric_patterns


def test_entry_point_two_steps_changes_parameters_and_writes_wandb_offline(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            *[o for o in TINY_RUN if not o.startswith("logger=")],
            "steps=2",
            "feedback=state_diff",
            "insertion=anchor",
            "logger=wandb",
            "logger.mode=offline",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]

    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for key in ("episode/success_rate", "actor/loss", "serl/lambda", "time/step_s", "serl/anchor_reference_fraction"):
        assert key in lines[0], key
    assert lines[0]["serl/lambda"] == pytest.approx(0.5) and lines[1]["serl/lambda"] == pytest.approx(0.49)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is True and summary["steps_completed"] == 2
    assert summary["choices"]["feedback"] == "state_diff" and summary["choices"]["insertion"] == "anchor"
    assert (run_dir / "curves.png").stat().st_size > 0
    assert "W&B run" in out.stdout

    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")), "no W&B offline event file"

    # the parameters changed: compare the checkpoint with the initial tiny model
    state = load_checkpoint(run_dir)
    assert state.step == 2
    initial, _ = load_policy(resolve_model_path("tiny"))
    diffs = [
        float((state.model[k].float() - v.float()).abs().max())
        for k, v in initial.state_dict().items()
        if k in state.model
    ]
    assert diffs and max(diffs) > 0


def _trainer(tmp_path, name, *overrides):
    cfg = compose_cfg([*TINY_RUN, "algorithm.teacher_sync_interval=2", "decay.horizon=4", *overrides])
    return build_trainer(cfg, tmp_path / name)


def test_kill_and_resume_continues_with_same_step_lambda_and_teacher(tmp_path, monkeypatch):
    full = _trainer(tmp_path, "full", "steps=3")
    full.train()
    full.tracker.close()

    # a run that crashes in its third update: two finished steps must survive
    crashed = _trainer(tmp_path, "crashed", "steps=3")
    real_update = crashed.learner.update
    calls = {"n": 0}

    def update_then_crash(batch, lam):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_update(batch, lam)

    monkeypatch.setattr(crashed.learner, "update", update_then_crash)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    crashed.tracker.close(ok=False)
    logged = [json.loads(x) for x in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged] == [1, 2]
    saved = load_checkpoint(tmp_path / "crashed")
    assert saved.step == 2

    resumed = _trainer(tmp_path, "resumed", "steps=3", f"resume={tmp_path / 'crashed'}")
    resumed.restore(resumed.s.resume)
    assert resumed.step == 2
    for k, v in saved.teacher.items():
        assert torch.equal(resumed.teacher.state_dict()[k], v)
    resumed.s.resume = None  # already restored
    resumed.train()
    resumed.tracker.close()

    third_full, third_resumed = full.history[-1], resumed.history[-1]
    assert len(resumed.history) == 1
    assert third_resumed["serl/lambda"] == pytest.approx(third_full["serl/lambda"]) == pytest.approx(0.25)
    assert third_resumed["serl/teacher_synced"] == third_full["serl/teacher_synced"] == 1.0
    for key in ("rollout/tokens", "episode/reward/mean", "episode/valid_action_ratio", "actor/loss", "actor/pg_loss"):
        assert third_resumed[key] == pytest.approx(third_full[key], abs=1e-5), key
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


@pytest.mark.parametrize("override", ["feedback=none", "algorithm=grpo", "decay.lambda0=0"])
def test_plain_grpo_variants_never_run_the_teacher(tmp_path, override):
    trainer = _trainer(tmp_path, "run", "steps=1", override)
    scored = []
    if trainer.teacher is not None:
        monkey = trainer.teacher.score
        trainer.teacher.score = lambda *a, **k: scored.append(1) or monkey(*a, **k)
    trainer.train()
    trainer.tracker.close()
    assert scored == []
    assert trainer.history[0]["serl/lambda"] == 0.0
    assert "serl/context_available_fraction" not in trainer.history[0]


def test_lora_option_trains_only_the_adapter(tmp_path):
    trainer = _trainer(
        tmp_path, "lora", "steps=1", "model.lora={r: 4, lora_alpha: 8, lora_dropout: 0.0, target_modules: [q_proj, v_proj]}"
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    trainer.tracker.close()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed), sorted(changed)[:5]


def test_every_logged_metric_is_documented(tmp_path):
    trainer = _trainer(tmp_path, "doc", "steps=1", "insertion=anchor")
    trainer.train()
    trainer.tracker.close()
    patterns = documented_metric_patterns()
    undocumented = [n for n in trainer.history[0] if not any(p.match(n) for p in patterns)]
    assert not undocumented, undocumented


def test_teacher_scores_only_rows_with_a_context_and_a_nonzero_advantage(tmp_path):
    trainer = _trainer(tmp_path, "skip", "steps=1", "group_size=3", "insertion=anchor")
    seen = {}
    real_score, real_update = trainer.teacher.score, trainer.learner.update

    def score(prompts, contexts, responses, n):
        seen["contexts"] = contexts
        return real_score(prompts, contexts, responses, n)

    def update(batch, lam):
        seen["advantages"], seen["has"] = batch.advantages.sum(dim=1), batch.has_context
        return real_update(batch, lam)

    trainer.teacher.score, trainer.learner.update = score, update
    trainer.train()
    trainer.tracker.close()
    zero = (seen["advantages"] == 0).tolist()
    for ctx, z, has in zip(seen["contexts"], zero, seen["has"].tolist()):
        assert not (z and ctx.has_context), "a zero-advantage row was sent to the teacher"
        assert has == ctx.has_context  # everything with a context (and a non-zero advantage) was scored
    m = trainer.history[-1]
    assert m["serl/teacher_scored_fraction"] == pytest.approx(sum(seen["has"].tolist()) / len(zero))
    assert m["serl/teacher_scored_fraction"] <= m["serl/context_available_fraction"]
