"""Data parallel SERL under torchrun, on CPU with gloo (docs/distributed.md).

The real entry point on the tiny model, warm-started for a few seconds on expert demonstrations (so it
writes well-formed actions some of the time: groups have mixed scores, advantages are non-zero and the
teacher scores rows), on generated ALFWorld games, SERL with state_diff feedback at anchor granularity:

* a 2-rank ``torchrun`` run of 2 training steps ends with the parameters (and the teacher, and AdamW's
  moments) of the single-process run over the same games and seeds, to 1e-5, and logs the same metrics;
* its step-1 checkpoint (sharded, torch.distributed.checkpoint) resumes in ONE process and continues
  exactly: step 2 equals the uninterrupted runs' step 2;
* only rank 0 writes the run's files.

Each rank has 1 thread (2 ranks on 2 cores); the warm start and the three launches take about two minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from serl.checkpoint import load_checkpoint
from tests.helpers import ROOT, TINY_RUN

RUN = [
    *[o for o in TINY_RUN if not o.startswith(("n_tasks=", "env.train_pool=", "env.eval_pool="))],
    "n_tasks=3",  # 3 games over 2 ranks: blocks of 2 and 1 (unequal shares)
    "env.train_pool=4",
    "feedback=state_diff",
    "insertion=anchor",
    "learner.mini_batch_size=4",  # several optimizer steps per update, micro-batches of 2 dealt to the ranks
    "steps=2",
    "keep_last=2",
    "teacher_log.every=0",
    "rollout.max_new_tokens=40",  # room for a whole <think>...</think><action>...</action> response
    "env.eval_pool=3",
    "eval_every=2",  # an evaluation after step 2: 3 held-out games, 2 on rank 0 and 1 on rank 1
    "eval.n_games=3",
    "eval.max_turns=2",
]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _train(run_dir: Path, model: Path, *overrides: str, ranks: int = 1) -> subprocess.CompletedProcess:
    script = [str(ROOT / "scripts" / "train.py"), *RUN, f"model.path={model}", *overrides]
    if ranks == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={ranks}", *script]
    if not any(o.startswith("resume=") for o in overrides):
        cmd.append(f"hydra.run.dir={run_dir}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=_env())
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-6000:])
    return out


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_state(a, b, what: str, atol: float = 1e-5) -> None:
    assert a.step == b.step, what
    assert set(a.model) == set(b.model), what
    for k in a.model:
        assert torch.allclose(a.model[k].float(), b.model[k].float(), atol=atol, rtol=0), f"{what}: model {k}"
    assert (a.teacher is None) == (b.teacher is None), what
    for k in a.teacher or {}:
        assert torch.allclose(a.teacher[k].float(), b.teacher[k].float(), atol=atol, rtol=0), f"{what}: teacher {k}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, warm_tiny_dir):
    root = tmp_path_factory.mktemp("dist")
    model = warm_tiny_dir
    single, ranked = root / "single", root / "ranked"
    _train(single, model)
    out = _train(ranked, model, ranks=2)
    # resume in one process from the 2-rank run's step-1 checkpoint, in a copy of the run at step 1
    resumed = root / "resumed"
    shutil.copytree(ranked, resumed, ignore=shutil.ignore_patterns("step_000002*", "last*", "wandb"))
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    (resumed / "metrics.jsonl").write_text(lines[0] + "\n")
    (resumed / "summary.json").unlink()
    _train(resumed, model, f"resume={resumed / 'checkpoints' / 'step_000001.dcp'}")
    return {"single": single, "ranked": ranked, "resumed": resumed, "ranked_stdout": out.stdout}


def test_two_ranks_equal_one_process_after_two_steps(runs):
    single, ranked = runs["single"], runs["ranked"]
    assert (ranked / "checkpoints" / "last.dcp").exists()
    a, b = load_checkpoint(single), load_checkpoint(ranked)
    _assert_same_state(a, b, "2 ranks vs 1 process")
    initial = load_checkpoint(single / "checkpoints" / "step_000001.safetensors")
    moved = max(float((a.model[k] - initial.model[k]).abs().max()) for k in a.model)
    assert moved > 1e-3, "the second step must move the parameters, or the comparison proves nothing"


def test_two_rank_metrics_reduce_to_the_single_process_values(runs):
    one, two = _metrics(runs["single"]), _metrics(runs["ranked"])
    assert [m["step"] for m in two] == [1, 2]
    for m1, m2 in zip(one, two):
        for key, value in m1.items():
            if key.startswith("time/") or key.endswith(("_s", "tokens_per_s")):
                continue  # wall times differ between launches
            assert key in m2, key
            assert m2[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    # the teacher scored and the update used it: the comparison covers SERL, not plain GRPO
    assert any(m["serl/teacher_scored_fraction"] > 0 for m in one), one
    assert one[-1]["eval/n_games"] == two[-1]["eval/n_games"] == 3  # the sharded evaluation played every game
    rows = [json.loads((runs[k] / "evals" / "step_000002.json").read_text())["games"] for k in ("single", "ranked")]
    assert rows[0] == rows[1]


def test_two_rank_checkpoint_resumes_in_one_process_exactly(runs):
    resumed, ranked = runs["resumed"], runs["ranked"]
    assert [m["step"] for m in _metrics(resumed)] == [1, 2]
    _assert_same_state(load_checkpoint(resumed), load_checkpoint(ranked), "resumed in 1 process vs 2 ranks")
    _assert_same_state(load_checkpoint(resumed), load_checkpoint(runs["single"]), "resumed vs single process")
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_from_step"] == 1 and summary["steps_completed"] == 2


def test_only_rank_zero_writes_the_run_files(runs):
    ranked = runs["ranked"]
    summary = json.loads((ranked / "summary.json").read_text())
    assert summary["completed"] and summary["steps_completed"] == 2
    assert len((ranked / "metrics.jsonl").read_text().splitlines()) == 2  # not once per rank
    assert runs["ranked_stdout"].count("steps completed") == 1  # one summary table
