"""Resume preflight (serl/resume.py): where a resumed run writes, and every refusal before a model loads."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from serl.checkpoint import TrainingState, rng_state, save_checkpoint
from serl.resume import ResumeError, check_resume, config_changes, run_dir_of
from tests.helpers import TINY_RUN, compose_cfg


def test_run_dir_of_every_resume_form(tmp_path):
    assert run_dir_of(None, "outputs/runs/new") == "outputs/runs/new"
    run = tmp_path / "run"
    for form in (run, run / "checkpoints", run / "checkpoints" / "last.safetensors", run / "checkpoints" / "step_000002.safetensors"):
        assert run_dir_of(str(form), "outputs/runs/new") == str(run)


def _run(tmp_path, *overrides, step=2):
    """A finished run folder: its config.yaml and a checkpoint of ``step`` (a stand-in model, no LLM)."""
    cfg = compose_cfg([*TINY_RUN, "steps=2", *overrides])
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(cfg, run / "config.yaml", resolve=True)
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(lin.parameters())
    state = TrainingState(step, dict(lin.named_parameters()), opt.state_dict(), None, rng_state(), {})
    save_checkpoint(run / "checkpoints", state)
    return run


def test_a_resume_with_the_runs_own_settings_passes(tmp_path):
    run = _run(tmp_path)
    info = check_resume(compose_cfg([*TINY_RUN, "steps=5", f"resume={run}", "eval_every=1", "logger=none"]))
    assert info["resume_checkpoint_step"] == 2 and info["resume_changes"] == {}
    assert info["resumed_from"] == str(run / "checkpoints" / "last.safetensors")


@pytest.mark.parametrize(
    ("override", "key"),
    [("algorithm=grpo", "algorithm.reweight"), ("n_tasks=2", "n_tasks"), ("model.dtype=bfloat16", "model.dtype"),
     ("learner.lr=0.5", "learner.lr"), ("feedback=state_diff", "feedback")],
)
def test_changed_settings_are_refused_unless_allowed(tmp_path, override, key):
    run = _run(tmp_path)
    cfg = compose_cfg([*TINY_RUN, "steps=3", f"resume={run}", override])
    with pytest.raises(ResumeError, match=rf"changes the run's settings \(.*{key}.*resume_allow_changes=true"):
        check_resume(cfg)
    allowed = check_resume(compose_cfg([*TINY_RUN, "steps=3", f"resume={run}", override, "resume_allow_changes=true"]))
    assert any(k.startswith(key) for k in allowed["resume_changes"])


def test_missing_and_damaged_checkpoints_are_named(tmp_path):
    with pytest.raises(ResumeError, match="no checkpoint found"):
        check_resume(compose_cfg([*TINY_RUN, f"resume={tmp_path}"]))
    run = _run(tmp_path)
    last = run / "checkpoints" / "last.safetensors"
    data = last.read_bytes()
    last.unlink()  # a hard link: unlink before writing, or the step file changes too
    last.write_bytes(data[: len(data) // 2])  # truncated by a full disk or a copy
    with pytest.raises(ResumeError, match=f"checkpoint {last} cannot be read"):
        check_resume(compose_cfg([*TINY_RUN, "steps=3", f"resume={run}"]))


def test_fewer_steps_than_the_checkpoint_is_refused(tmp_path):
    run = _run(tmp_path, step=2)
    with pytest.raises(ResumeError, match="steps=1 is below the checkpoint's step 2"):
        check_resume(compose_cfg([*TINY_RUN, "steps=1", f"resume={run}"]))


def test_config_changes_ignores_run_length_and_watching():
    saved = {"steps": 2, "eval": {"n_games": 4}, "learner": {"lr": 1e-3}, "logger": {"name": "wandb"}}
    new = {"steps": 9, "eval": {"n_games": 8}, "learner": {"lr": 1e-3, "extra": 1}, "logger": {"name": "jsonl"}}
    assert config_changes(saved, new) == {"learner.extra": (None, 1)}
