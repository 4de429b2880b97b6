"""serl.sweep: run bookkeeping of sweeps (finished / unfinished runs), launcher plugin checks, threads per job."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serl import sweep
from serl.sweep import finished, missing_launcher, threads_per_job, unfinished_runs
from tests.helpers import ROOT


def _run(path, summary=None):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    if summary is not None:
        (path / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    return path


def test_finished_needs_a_summary_that_says_completed(tmp_path):
    assert finished(_run(tmp_path / "a", {"completed": True}))
    assert not finished(_run(tmp_path / "b", {"completed": False}))
    assert not finished(_run(tmp_path / "c", {"steps_completed": 3}))  # no "completed" key
    assert not finished(_run(tmp_path / "d", "{not json"))
    assert not finished(_run(tmp_path / "e", "[1, 2]"))  # JSON, but not a mapping
    assert not finished(_run(tmp_path / "f"))  # started, no summary yet
    assert not finished(tmp_path / "missing")


def test_unfinished_runs_are_started_runs_without_a_completed_summary(tmp_path):
    _run(tmp_path / "grid" / "alfworld-none-step-linear-s0", {"completed": True})
    crashed = _run(tmp_path / "grid" / "alfworld-immediate-anchor-linear-s0", {"completed": False})
    killed = _run(tmp_path / "grid" / "nested" / "alfworld-future-anchor-linear-s0")
    (tmp_path / "grid" / "logs").mkdir()  # not a run: no config.yaml
    (tmp_path / "grid" / "config.yaml").write_text("")  # the sweep folder itself is never a run
    assert unfinished_runs(tmp_path / "grid") == sorted([crashed, killed])
    assert unfinished_runs(tmp_path / "nothing") == []


@pytest.mark.parametrize(
    ("cores", "n_jobs", "threads"),
    [(2, 1, 2), (2, 2, 1), (2, 3, 1), (16, 3, 5), (16, -1, 1), (16, -2, 1), (8, -5, 2)],  # -5 on 8 cores: 4 jobs
)
def test_threads_per_job_splits_the_cores(cores, n_jobs, threads):
    assert threads_per_job(cores, n_jobs) == threads


def test_threads_per_job_refuses_zero_jobs():
    with pytest.raises(ValueError, match="n_jobs must not be 0"):
        threads_per_job(4, 0)


def test_missing_launcher_names_the_package_and_the_install_command(monkeypatch):
    assert missing_launcher(["hydra/launcher=joblib", "feedback=none"]) is None  # a core dependency
    assert missing_launcher(["hydra/launcher=basic"]) is None
    assert missing_launcher(["feedback=none", "-m"]) is None
    monkeypatch.setitem(sweep.LAUNCHER_PLUGINS, "submitit", ("no_such_pkg.plugin", "hydra-submitit-launcher",
                                                             "pip install -e '.[slurm]'"))
    assert missing_launcher(["hydra/launcher=submitit_slurm"]) == (
        "hydra/launcher=submitit_slurm needs the hydra-submitit-launcher plugin, which is not installed: "
        "pip install -e '.[slurm]'"
    )


def test_train_py_refuses_a_missing_launcher_plugin_before_hydra_starts(tmp_path):
    if missing_launcher(["hydra/launcher=ray"]) is None:
        pytest.skip("hydra-ray-launcher is installed here")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "hydra/launcher=ray",
                          f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert "config error: hydra/launcher=ray needs the hydra-ray-launcher plugin, which is not installed: " \
           "pip install -e '.[ray]'" in out.stderr


def test_reproduce_table_grids_and_commands():
    """The CPU grid is GRPO + every feedback source at anchor level + state_diff at step level + the RL baselines
    + the distillation baselines (15 runs per seed), the full grid GRPO + every source at both levels + the
    baselines (20); one multirun command per block into one folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_table", ROOT / "scripts" / "reproduce_table.py")
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    assert [rt.runs_per_seed(b) for b in rt.GRIDS["cpu"]] == [1, 6, 1, 5, 2]  # baselines: RLOO, GiGPO, DAPO, GSPO, PPO
    assert [rt.runs_per_seed(b) for b in rt.GRIDS["full"]] == [1, 12, 5, 2]
    cmd = rt.multirun_command(["sweep=feedback", "insertion=anchor"], 3, "default", ROOT / "o", "joblib", 2, ["x=1"])
    assert cmd[1:4] == [str(ROOT / "scripts" / "train.py"), "-m", "sweep=feedback"]
    for arg in ("insertion=anchor", "seed=0,1,2", "eval_every=${steps}", f"hydra.sweep.dir={ROOT / 'o'}",
                "hydra.sweep.subdir=${run_name}", "skip_completed=true", "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2"):
        assert arg in cmd
    assert cmd[-1] == "x=1"  # the user's overrides come last, so they win
    assert "experiment=cpu_study" in rt.multirun_command(["sweep=grpo"], 1, "cpu_study", ROOT, "basic", 1, [])
