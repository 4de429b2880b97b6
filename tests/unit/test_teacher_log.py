"""The teacher-dump records (serl/teacher_log.py) on a hand-made batch with hand-derived weights (§5.2)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from serl.build import ConfigError, validate
from serl.teacher_log import (
    TABLE_COLUMNS,
    TeacherLogSettings,
    build_records,
    clip_text,
    dump_path,
    select_rows,
    table_rows,
    write_records,
)
from serl.types import Step, TeacherContext, TrainBatch, Trajectory
from tests.helpers import compose_cfg

LN11 = math.log(1.1)


def _step(step_id: int, n_tokens: int) -> Step:
    return Step(
        step_id=step_id,
        observation="obs",
        prompt=f"prompt {step_id}",
        admissible=("look",),
        prompt_ids=[1, 2],
        response_ids=list(range(10, 10 + n_tokens)),
        response_logprobs=[-1.0] * n_tokens,
        response_text=f"response {step_id}",
        action="look",
        valid=True,
        feedback="Nothing happens.",
        next_prompt="next",
        reward=0.0,
        done=False,
    )


def _case():
    """Three rows, T = 4. Row 0: no context, A = +0.5, action tokens 0-1. Row 1: context, A = +1, action
    tokens 1-2 with Δ = ln 1.1 (w = 1.1) and Δ = 1 (w = e clipped to 1.2); token 0 is not an action token.
    Row 2 (3 tokens): context, A = −2, Δ = ln 1.1 (w = 1/1.1) and Δ = −1 (w = e clipped to 1.2)."""
    steps = [_step(0, 4), _step(1, 4), _step(2, 3)]
    traj = Trajectory(group_id=3, traj_id=1, game="g", task_type="t", task="put a mug in desk", steps=steps)
    ctx = TeacherContext(sections=(("Immediate feedback", "Nothing happens."),), sources=("immediate",))
    contexts = [TeacherContext(), ctx, ctx]
    response = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.float32)
    action = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    old = -torch.ones(3, 4) * response
    teacher = old.clone()
    teacher[1, 1] += LN11
    teacher[1, 2] += 1.0
    teacher[2, 0] += LN11
    teacher[2, 1] -= 1.0
    adv = torch.tensor([0.5, 1.0, -2.0])
    batch = TrainBatch(
        input_ids=torch.zeros(3, 6, dtype=torch.long),
        attention_mask=torch.ones(3, 6, dtype=torch.long),
        response_mask=response,
        action_mask=action,
        old_logprobs=old,
        teacher_logprobs=teacher,
        has_context=torch.tensor([False, True, True]),
        advantages=adv[:, None] * response,
    )
    return steps, [traj] * 3, contexts, batch, adv.tolist()


def _records(rows, lam=0.5, max_chars=0):
    steps, owners, contexts, batch, adv = _case()
    return build_records(
        step=7,
        lam=lam,
        weight_clip=0.2,
        batch=batch,
        advantages=adv,
        steps=steps,
        owners=owners,
        contexts=contexts,
        rows=rows,
        student_prompt=lambda i: steps[i].prompt,
        teacher_prompt=lambda i: f"{steps[i].prompt} + privileged",
        token_text=lambda t: f"<{t}>",
        max_chars=max_chars,
    )


def test_weights_and_multipliers_are_the_hand_derived_ones():
    rows = select_rows([False, True, True], max_samples=32)
    assert rows == [1, 2, 0]  # context rows first, then the rest, each in order
    r1, r2, r0 = _records(rows)

    assert r1["step"] == 7 and r1["lambda"] == 0.5 and r1["advantage"] == 1.0 and r1["has_context"]
    assert (r1["group_id"], r1["traj_id"], r1["step_id"], r1["task"]) == (3, 1, 1, "put a mug in desk")
    assert r1["sources"] == ["immediate"] and r1["context"] == "Immediate feedback\nNothing happens."
    assert r1["teacher_prompt"] == "prompt 1 + privileged" and r1["student_prompt"] == "prompt 1"
    a, b = r1["action_tokens"]  # token 0 is not an action token
    assert (a["index"], a["token"], b["index"], b["token"]) == (1, "<11>", 2, "<12>")
    assert a["student_logprob"] == -1.0 and a["delta"] == pytest.approx(LN11, abs=1e-6)
    assert a["weight"] == pytest.approx(1.1, abs=1e-6) and a["multiplier"] == pytest.approx(1.05, abs=1e-6)
    assert b["weight"] == pytest.approx(1.2) and b["multiplier"] == pytest.approx(1.1)  # e clipped to 1 + c

    c, d = r2["action_tokens"]  # A < 0: the sign flips the gap
    assert c["weight"] == pytest.approx(1 / 1.1, abs=1e-6)
    assert c["multiplier"] == pytest.approx(0.5 + 0.5 / 1.1, abs=1e-6)
    assert d["delta"] == pytest.approx(-1.0) and d["weight"] == pytest.approx(1.2)

    assert not r0["has_context"] and r0["teacher_prompt"] is None and r0["context"] is None
    assert [e["index"] for e in r0["action_tokens"]] == [0, 1]
    for e in r0["action_tokens"]:  # no context: no reweighting
        assert e["student_logprob"] == -1.0
        assert e["teacher_logprob"] is e["delta"] is e["weight"] is e["multiplier"] is None


def test_zero_advantage_gives_weight_one_and_max_samples_caps_rows():
    steps, owners, contexts, batch, _ = _case()
    batch.advantages = torch.zeros_like(batch.advantages)
    (rec,) = build_records(
        step=1,
        lam=0.3,
        weight_clip=0.2,
        batch=batch,
        advantages=[0.0] * 3,
        steps=steps,
        owners=owners,
        contexts=contexts,
        rows=select_rows([False, True, True], max_samples=1),
        student_prompt=str,
        teacher_prompt=str,
        token_text=str,
        max_chars=0,
    )
    assert rec["step_id"] == 1
    assert [(e["weight"], e["multiplier"]) for e in rec["action_tokens"]] == [(1.0, 1.0), (1.0, 1.0)]


def test_texts_are_cut_with_a_marker_and_the_dump_is_jsonl(tmp_path):
    assert clip_text("abcdef", 0) == "abcdef" and clip_text("abcdef", 6) == "abcdef"
    assert clip_text("abcdef", 4) == "ab\n[... 2 characters truncated ...]\nef"  # middle-out
    assert clip_text("abcdef", 3) == "ab\n[... 3 characters truncated ...]\nf"
    (rec,) = _records([1], max_chars=3)
    assert rec["student_prompt"] == "pr\n[... 5 characters truncated ...]\n1"
    assert rec["response"] == "re\n[... 7 characters truncated ...]\n1"

    records = _records([1, 2, 0])
    path = dump_path(tmp_path / "run", 7)
    assert path == tmp_path / "run" / "teacher" / "step_000007.jsonl"
    write_records(path, records)
    assert [json.loads(x) for x in path.read_text().splitlines()] == records
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_000007.jsonl"]  # no temp file left

    rows = table_rows(records)
    assert len(rows) == 3 and all(len(r) == len(TABLE_COLUMNS) for r in rows)
    assert rows[0][:5] == [7, "3/1", 1, "immediate", 1.0]
    assert rows[0][7] == "'<11>'×1.100 '<12>'×1.200"
    assert rows[2][5] == "" and rows[2][7] == "'<10>' '<11>'"  # no context: tokens only


def test_settings_and_config_knobs_fail_early_with_clear_errors():
    s = TeacherLogSettings(every=3)
    assert [step for step in range(1, 10) if s.due(step)] == [3, 6, 9]
    assert not TeacherLogSettings(every=0).due(5)
    with pytest.raises(ValueError, match="teacher_log.every=-1"):
        TeacherLogSettings(every=-1)
    with pytest.raises(ValueError, match="teacher_log.max_samples=0"):
        TeacherLogSettings(max_samples=0)

    cfg = compose_cfg([])
    assert (cfg.teacher_log.every, cfg.teacher_log.max_samples, cfg.teacher_log.max_chars) == (1, 32, 4000)
    for override, needle in [
        ("teacher_log.every=-1", "teacher_log.every=-1 is invalid: must be >= 0 (0: never dump)"),
        ("teacher_log.max_samples=0", "teacher_log.max_samples=0 is invalid"),
        ("teacher_log.max_chars=-5", "teacher_log.max_chars=-5 is invalid"),
    ]:
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            validate(compose_cfg([override]))
