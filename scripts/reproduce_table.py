"""Regenerate the paper's ablation table: run the grid through Hydra multirun, then ``scripts/make_table.py``.

    python scripts/reproduce_table.py                          # = make reproduce-table: the CPU grid, 1 seed
    python scripts/reproduce_table.py --grid full --seeds 3 --preset cpu_study
    python scripts/reproduce_table.py --grid full --seeds 3 --preset paper_alfworld   # GPU machines
    python scripts/reproduce_table.py --launcher joblib --jobs 2   # two runs at a time on one machine
    python scripts/reproduce_table.py --grid full --seeds 3 --preset paper_alfworld --launcher submitit_slurm \
        -- hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=1440
    python scripts/reproduce_table.py -- rollout.max_new_tokens=32 # extra overrides for every run (after --)

Grids (docs/sweeps.md), each a list of Hydra multiruns over the versioned sweep files in ``conf/sweep/``:

* ``cpu`` (default): GRPO (``sweep=grpo``), every feedback source at anchor level (``sweep=feedback
  insertion=anchor``), ``state_diff`` at step level, the RL baselines RLOO, GiGPO, DAPO, GSPO, PPO without a teacher
  (``sweep=baselines``) and self-distillation alone and with GRPO (``sweep=distill``) — 15 runs per seed.
* ``full``: GRPO, every feedback source at both insertion levels (``sweep=grpo``, ``sweep=table``) and the
  baselines (``sweep=baselines``, ``sweep=distill``) — 20 runs per seed.

Presets: ``default`` (the CPU preset of ``conf/train.yaml``, plus a held-out evaluation of the ``env.eval_pool``
games after the last step, capped at the training episode length), ``cpu_study`` (``experiment=cpu_study``,
which evaluates before the first step and after the last) and ``paper_alfworld`` (``experiment=paper_alfworld``,
a GPU recipe).

All runs go to ``--out`` (default ``outputs/table/<grid>-<preset>-<seeds>seeds``), one folder per run named by
its choices and seed. Started again after an interruption, the script removes the folders of runs that started
but did not finish, and every run whose ``summary.json`` says it completed is skipped (``skip_completed=true``), so
only the missing runs are done. While it runs it prints which run started, how many are left and the time so far;
the Hydra output of each multirun goes to ``<out>/logs/``. At the end it runs ``scripts/make_table.py <out>`` (with
``--wandb`` unless the runs used ``logger=jsonl`` or ``logger=none``: the table joins the runs' W&B group) and
prints where the table and the pictures are.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from serl.sweep import finished, missing_launcher, unfinished_runs  # noqa: E402

#: grid -> the multiruns that make it (overrides of each); every run of a grid is one configuration x one seed
GRIDS: dict[str, list[list[str]]] = {
    "cpu": [
        ["sweep=grpo"], ["sweep=feedback", "insertion=anchor"], ["feedback=state_diff", "insertion=step"],
        ["sweep=baselines"], ["sweep=distill"],
    ],
    "full": [["sweep=grpo"], ["sweep=table"], ["sweep=baselines"], ["sweep=distill"]],
}

#: preset -> (overrides, minutes per run on 2 CPU cores or None when it needs a GPU)
PRESETS: dict[str, tuple[list[str], float | None]] = {
    "default": (["eval_every=${steps}", "eval.max_turns=${env.max_turns}"], 9.0),
    "cpu_study": (["experiment=cpu_study"], 25.0),
    "paper_alfworld": (["experiment=paper_alfworld"], None),
}
SHOWN = ("algorithm", "feedback", "insertion", "decay", "seed")  # the choices a progress line names
HYDRA_JOB = re.compile(r"\[HYDRA\]\s+#(\d+)\s*:\s*(.*)$")


def runs_per_seed(block: list[str]) -> int:
    """Runs of one seed in a multirun: the product of the swept choices of its sweep file (seed aside) and of
    its comma-separated command-line overrides."""
    n = 1
    for arg in block:
        key, _, value = arg.partition("=")
        if key == "sweep":
            params = yaml.safe_load((ROOT / "conf" / "sweep" / f"{value}.yaml").read_text())["hydra"]["sweeper"]["params"]
            for name, choices in params.items():
                n *= 1 if name == "seed" else len(str(choices).split(","))
        else:
            n *= len(value.split(","))
    return n


def multirun_command(block: list[str], seeds: int, preset: str, out: Path, launcher: str, jobs: int,
                     extra: list[str]) -> list[str]:
    """The ``scripts/train.py -m`` command of one multirun of the grid."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *block,
           "seed=" + ",".join(str(s) for s in range(seeds)), *PRESETS[preset][0],
           f"hydra.sweep.dir={out}", "hydra.sweep.subdir=${run_name}", f"logger.group={out}",
           "skip_completed=true"]
    if launcher != "basic":  # cluster launchers take their own knobs as extra overrides (docs/sweeps.md)
        cmd += [f"hydra/launcher={launcher}", *([f"hydra.launcher.n_jobs={jobs}"] if launcher == "joblib" else [])]
    return cmd + extra


def clean_unfinished(out: Path) -> list[Path]:
    """Remove the folders of runs that started and did not complete (they are redone from the start)."""
    removed = unfinished_runs(out)
    for path in removed:
        shutil.rmtree(path)
    return removed


def run_multirun(cmd: list[str], log_path: Path, done: int, total: int, t0: float) -> int:
    """Run one multirun, printing a line per started run; returns how many runs it started."""
    started = 0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, text=True,
                                bufsize=1, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            job = HYDRA_JOB.search(line)
            if job:
                started += 1
                choices = " ".join(o for o in job.group(2).split() if o.partition("=")[0] in SHOWN)
                print(f"[{_clock(time.time() - t0)}] run {done + started}/{total}: {choices}", flush=True)
            elif line.startswith("skipped: "):
                print(f"           {line.strip()}", flush=True)
        rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"a run failed (exit {rc}); see {log_path}. Start the same command again to continue.")
    return started


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Arguments after -- are Hydra overrides for every run.")
    p.add_argument("--grid", choices=sorted(GRIDS), default="cpu")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per configuration (default 1)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--out", type=Path, default=None, help="sweep folder (default outputs/table/<grid>-<preset>-<N>seeds)")
    p.add_argument("--launcher", default="basic", help="basic (one run at a time) | joblib | submitit_slurm | ray ...")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time with --launcher joblib (its n_jobs)")
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.launcher != "basic" and (problem := missing_launcher([f"hydra/launcher={args.launcher}"])):
        p.error(problem)
    out = (args.out or ROOT / "outputs" / "table" / f"{args.grid}-{args.preset}-{args.seeds}seeds").resolve()
    total = sum(runs_per_seed(block) for block in GRIDS[args.grid]) * args.seeds
    minutes = PRESETS[args.preset][1]
    done_before = sum(finished(p.parent) for p in out.rglob("summary.json")) if out.is_dir() else 0
    removed = clean_unfinished(out)
    todo = total - done_before
    per = f"about {minutes:.0f} min per run on 2 CPU cores" if minutes else "a GPU recipe (time per run: docs/sweeps.md)"
    print(f"reproduce-table: grid {args.grid}, preset {args.preset}, {args.seeds} seed(s): {total} runs, "
          f"{done_before} already finished, {todo} to go; {per}"
          + (f", about {todo * minutes / (args.jobs if args.launcher == 'joblib' else 1):.0f} min in all" if minutes else ""))
    print(f"runs: {out}")
    for path in removed:
        print(f"redoing an unfinished run: {path}")
    t0 = time.time()
    started = 0
    for i, block in enumerate(GRIDS[args.grid]):
        cmd = multirun_command(block, args.seeds, args.preset, out, args.launcher, args.jobs, extra)
        started += run_multirun(cmd, out / "logs" / f"multirun_{i}.log", started, total, t0)
    print(f"[{_clock(time.time() - t0)}] all {total} runs finished; building the table")
    wandb = not any(a in ("logger=jsonl", "logger=none") for a in extra)  # the runs logged to W&B: so does the table
    rc = subprocess.call([sys.executable, str(ROOT / "scripts" / "make_table.py"), str(out), *(["--wandb"] if wandb else [])],
                         cwd=ROOT)
    if rc != 0:
        print(f"make_table.py failed (exit {rc})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
