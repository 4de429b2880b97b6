"""Sweeps end to end (docs/sweeps.md): a versioned sweep file through Hydra multirun, then the table built from its
runs; `scripts/reproduce_table.py` killed midway and started again does only the missing runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from serl.sweep import finished
from tests.helpers import ROOT, TINY_RUN

ONE_STEP = [*TINY_RUN, "steps=1", "torch_threads=1"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def test_sweep_file_multirun_then_table(tmp_path):
    """`-m sweep=insertion feedback=state_diff`: 2 configurations x 1 step, one folder per run named by its
    choices, a shared W&B group, and a table with one row per configuration."""
    out = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "sweep=insertion", "feedback=state_diff",
           "eval_every=1", "eval.max_turns=2", f"hydra.sweep.dir={out}", *ONE_STEP]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["alfworld-state_diff-anchor-linear-s0", "alfworld-state_diff-step-linear-s0"]
    for name in runs:
        assert finished(out / name)
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["steps_completed"] == 1 and "last/eval/success_rate" in summary
        saved = (out / name / "config.yaml").read_text()
        assert f"group: {out}" in saved  # the sweep's runs share one W&B group: the sweep folder

    table = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_table.py"), str(out)], cwd=ROOT,
                           env=_env(), capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    rows = json.loads((out / "table.json").read_text())
    configs = {(c["feedback"], c["insertion"]) for c in rows["configurations"]}
    assert configs == {("state_diff", "step"), ("state_diff", "anchor")}
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# scripts/reproduce_table.py with a 3-run grid (the real grids' 8 and 13 runs per seed, the same code path)
SMALL_GRID = """
import sys
sys.path.insert(0, {scripts!r})
import reproduce_table
reproduce_table.GRIDS["cpu"] = [["sweep=insertion"], ["feedback=none"]]
raise SystemExit(reproduce_table.main(sys.argv[1:]))
"""


def _reproduce(out: Path) -> list[str]:
    return [sys.executable, "-c", SMALL_GRID.format(scripts=str(ROOT / "scripts")), "--out", str(out), "--",
            *ONE_STEP]


def test_reproduce_table_killed_midway_redoes_only_the_missing_runs(tmp_path):
    out = tmp_path / "table"
    proc = subprocess.Popen(_reproduce(out), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and sum(finished(p) for p in out.glob("alfworld-*")) < 1:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and the run it is in, mid-way
    proc.wait()
    done = {p.name: (p / "summary.json").stat().st_mtime_ns for p in out.glob("alfworld-*") if finished(p)}
    assert 1 <= len(done) < 3, f"expected an interrupted grid, found {len(done)} finished runs"

    again = subprocess.run(_reproduce(out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"3 runs, {len(done)} already finished, {3 - len(done)} to go" in again.stdout
    runs = sorted(p for p in out.glob("alfworld-*"))
    assert len(runs) == 3 and all(finished(p) for p in runs)
    for name, mtime in done.items():  # finished runs were skipped, not redone
        assert (out / name / "summary.json").stat().st_mtime_ns == mtime
        assert f"skipped: {out / name} holds a completed run" in again.stdout
    assert again.stdout.count("skipped: ") == len(done)
    for run in runs:  # every run's metrics hold its one step once
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1]
    assert (out / "table.md").is_file() and "table.md" in again.stdout


def test_joblib_launcher_runs_in_parallel_with_the_cores_split(tmp_path):
    """`hydra/launcher=joblib hydra.launcher.n_jobs=2`: two runs at once, each with cores // 2 torch threads."""
    from serl.sweep import cpu_count, threads_per_job

    out = tmp_path / "joblib"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "sweep=insertion", "hydra/launcher=joblib",
           "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={out}", *[o for o in ONE_STEP if o != "torch_threads=1"]]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in run.stdout + run.stderr
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["alfworld-immediate-anchor-linear-s0", "alfworld-immediate-step-linear-s0"]
    for path in runs:
        assert finished(path)
        assert f"torch_threads: {threads_per_job(cpu_count(), 2)}\n" in (path / "config.yaml").read_text()
