"""Teacher dumps (serl/teacher_log.py) from the real trainer on the tiny model and generated ALFWorld games.

The tiny random model never writes `<action>` tags and its rollouts all fail, so every action mask would be
empty and every advantage 0; the tests mark every response token as an action token and give the step
samples distinct advantages, so the dumped weights come from real teacher and student log-probs.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import serl.trainer
from serl.build import build_trainer
from serl.teacher_log import TABLE_COLUMNS
from tests.helpers import TINY_RUN, compose_cfg

FIELDS = set(
    "step lambda group_id traj_id step_id task sources has_context anchor_size advantage student_prompt "
    "teacher_prompt context response action action_tokens".split()
)
TOKEN_FIELDS = {"index", "token", "student_logprob", "teacher_logprob", "delta", "weight", "multiplier"}


def _trainer(tmp_path, monkeypatch, *overrides):
    monkeypatch.setattr(serl.trainer, "action_masks", lambda steps, decode, *a, **kw: [[True] * len(s.response_ids) for s in steps])
    trainer = build_trainer(compose_cfg([*TINY_RUN, "steps=1", *overrides]), tmp_path / "run")
    trainer.advantage = lambda cols: torch.linspace(-1.0, 1.0, len(cols))  # an estimator giving every row a sign
    return trainer


def test_dump_holds_weights_the_learner_used_and_wandb_gets_the_table(tmp_path, monkeypatch):
    trainer = _trainer(
        tmp_path, monkeypatch, "teacher_log.every=1", "teacher_log.max_chars=0", "logger=wandb", "logger.mode=offline"
    )
    trainer.train()
    trainer.tracker.close()
    metrics = trainer.history[0]
    assert metrics["teacher_log/errors"] == 0.0

    path = tmp_path / "run" / "teacher" / "step_000001.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(records) == metrics["episode/step_samples"] == 4
    has = [r["has_context"] for r in records]
    assert any(has) and has == sorted(has, reverse=True)  # context rows first
    lam, c = 0.5, 0.2
    weights = []
    for r in records:
        assert set(r) == FIELDS and r["step"] == 1 and r["lambda"] == pytest.approx(lam)
        assert r["action_tokens"] and all(set(e) == TOKEN_FIELDS for e in r["action_tokens"])
        if not r["has_context"]:
            assert all(e["weight"] is None for e in r["action_tokens"])
            continue
        # the teacher saw the student's user message, then the privileged context (chat template included)
        student_user = r["student_prompt"].split("<|im_end|>")[0]
        assert student_user.startswith("<|im_start|>user\n") and r["teacher_prompt"].startswith(student_user)
        assert r["context"] in r["teacher_prompt"] and r["teacher_prompt"].endswith("<|im_start|>assistant\n")
        for e in r["action_tokens"]:
            u = math.copysign(1.0, r["advantage"]) * e["delta"] if r["advantage"] else 0.0
            assert e["delta"] == pytest.approx(e["teacher_logprob"] - e["student_logprob"], abs=1e-6)
            assert 1 - c - 1e-6 <= e["weight"] <= 1 + c + 1e-6
            assert e["weight"] == pytest.approx(min(max(math.exp(u), 1 - c), 1 + c), abs=1e-5)
            assert e["multiplier"] == pytest.approx((1 - lam) + lam * e["weight"], abs=1e-6)
            weights.append(e["weight"])
    assert any(abs(w - 1) > 1e-3 for w in weights)  # the teacher's privileged view moved its log-probs
    # the learner (student_logprob=old) reweighted with exactly these weights
    assert min(weights) == pytest.approx(metrics["serl_action_mask/weight_min"], abs=1e-6)
    assert max(weights) == pytest.approx(metrics["serl_action_mask/weight_max"], abs=1e-6)

    (run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (table,) = run.glob("files/media/table/teacher/samples_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"] == list(TABLE_COLUMNS) and len(data["data"]) == len(records)
    assert b"teacher/samples" in next(run.glob("run-*.wandb")).read_bytes()


def test_every_zero_writes_nothing(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, monkeypatch, "teacher_log.every=0")
    trainer.train()
    trainer.tracker.close()
    assert not (tmp_path / "run" / "teacher").exists()
    assert "teacher_log/errors" not in trainer.history[0]


def test_a_failing_dump_warns_and_training_goes_on(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, monkeypatch, "teacher_log.every=1")

    def disk_full(path, records):
        raise OSError("No space left on device")

    monkeypatch.setattr(serl.trainer, "write_records", disk_full)
    with pytest.warns(RuntimeWarning, match="teacher log of step 1 failed: OSError: No space left"):
        summary = trainer.train()
    trainer.tracker.close()
    assert summary["completed"] and trainer.history[0]["teacher_log/errors"] == 1.0
