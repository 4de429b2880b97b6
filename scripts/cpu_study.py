"""The CPU study: plain GRPO against SERL (state-diff feedback, anchor insertion), several seeds each, on the
``experiment=cpu_study`` preset; then one PNG of the held-out success curves and a Markdown table.

    python scripts/cpu_study.py                          # 2 methods x seeds 0 1 2, two runs at a time
    python scripts/cpu_study.py --seeds 0 --parallel 1   # one seed, one run at a time
    python scripts/cpu_study.py --plot-only              # redraw study.png / study.md from finished runs
    python scripts/cpu_study.py -- steps=4               # extra overrides for every run (after --)

Each run is ``scripts/train.py experiment=cpu_study <method overrides> seed=<s>`` in
``<out>/<method>-s<seed>/`` (a normal run folder: metrics.jsonl, summary.json, curves.png, W&B files). A run
whose ``summary.json`` says it completed is skipped, so an interrupted study continues where it stopped.
``--parallel 2`` runs the GRPO and SERL runs of one seed side by side with one torch thread each (fair: both
see the same machine load); ``--parallel 1`` runs them one after the other with ``--threads`` threads.

Outputs in ``<out>``: ``study.png`` (per method: mean over seeds and min-max band of the held-out success at
every evaluation, and of the training-rollout success per step), ``study.md`` (final held-out success mean ±
std over seeds with each seed's value, the warm start's, wall time per run) and ``study.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serl.plots import plot_study, read_metrics  # noqa: E402
from serl.sweep import finished  # noqa: E402

METHODS = {  # label -> overrides on top of experiment=cpu_study
    "GRPO": ["feedback=none"],
    "SERL (state_diff, anchor)": ["feedback=state_diff", "insertion=anchor"],
}
SLUGS = {"GRPO": "grpo", "SERL (state_diff, anchor)": "serl"}


def run_dir(out: Path, label: str, seed: int) -> Path:
    return out / f"{SLUGS[label]}-s{seed}"


def command(label: str, seed: int, path: Path, threads: int, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        "experiment=cpu_study",
        *METHODS[label],
        f"seed={seed}",
        f"torch_threads={threads}",
        f"hydra.run.dir={path}",
        *extra,
    ]


def run_all(out: Path, seeds: list[int], parallel: int, threads: int, extra: list[str]) -> None:
    jobs = [(label, seed) for seed in seeds for label in METHODS]
    todo = [(label, seed) for label, seed in jobs if not finished(run_dir(out, label, seed))]
    print(f"cpu study: {len(jobs)} runs, {len(jobs) - len(todo)} already finished, {len(todo)} to go", flush=True)
    t0 = time.time()
    per_run_threads = threads if parallel == 1 else max(1, threads // parallel)
    while todo:
        batch, todo = todo[:parallel], todo[parallel:]
        procs = []
        for label, seed in batch:
            path = run_dir(out, label, seed)
            if path.exists():  # an unfinished run is redone from scratch
                shutil.rmtree(path)
            path.mkdir(parents=True)
            cmd = command(label, seed, path, per_run_threads, extra)
            print(f"[{time.time() - t0:7.0f} s] start {label} seed {seed}: {shlex.join(cmd[1:])}", flush=True)
            log = open(path / "stdout.log", "w")
            procs.append((label, seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log))
        for label, seed, proc, log in procs:
            rc = proc.wait()
            log.close()
            state = "done" if rc == 0 else f"FAILED (exit {rc}, see {run_dir(out, label, seed) / 'stdout.log'})"
            print(f"[{time.time() - t0:7.0f} s] {state}: {label} seed {seed}; {len(todo)} runs left", flush=True)


def collect(out: Path, seeds: list[int]) -> dict[str, list[dict]]:
    """Per method, one record per finished seed: metrics rows, summary, held-out success per evaluation."""
    result: dict[str, list[dict]] = {}
    for label in METHODS:
        for seed in seeds:
            path = run_dir(out, label, seed)
            if not finished(path):
                continue
            rows = read_metrics(path / "metrics.jsonl")
            evals = {int(r["step"]): float(r["eval/success_rate"]) for r in rows if "eval/success_rate" in r}
            summary = json.loads((path / "summary.json").read_text())
            result.setdefault(label, []).append({"seed": seed, "rows": rows, "summary": summary, "evals": evals})
    return result


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def report(out: Path, seeds: list[int], extra: list[str]) -> None:
    runs = collect(out, seeds)
    if not runs:
        print(f"no finished runs under {out}")
        return
    png = plot_study({k: [r["rows"] for r in v] for k, v in runs.items()}, out / "study.png",
                     title="serl CPU study: SmolLM2-135M warm start + LoRA RL, ALFWorld pick-and-place (generated games)")
    lines = [
        "| method | seeds | held-out success at start | held-out success at the end (mean ± std) | per seed (start → end) | "
        "training success, run mean | wall time per run |",
        "|---|---|---|---|---|---|---|",
    ]
    record = {}
    for label, rs in runs.items():
        start = [r["evals"][min(r["evals"])] for r in rs if r["evals"]]
        end = [r["evals"][max(r["evals"])] for r in rs if r["evals"]]
        train = [r["summary"].get("mean/episode/success_rate", float("nan")) for r in rs]
        wall = [r["summary"]["wall_time_s"] / 60 for r in rs]
        per_seed = ", ".join(
            f"s{r['seed']}: {r['evals'][min(r['evals'])]:.2f} → {r['evals'][max(r['evals'])]:.2f}" for r in rs if r["evals"]
        )
        lines.append(
            f"| {label} | {len(rs)} | {_mean_std(start)} | {_mean_std(end)} | {per_seed} | {_mean_std(train)} | "
            f"{statistics.mean(wall):.1f} min |"
        )
        record[label] = {"seeds": [r["seed"] for r in rs], "start": start, "end": end, "train_mean": train,
                         "wall_min": wall, "evals": {r["seed"]: r["evals"] for r in rs}}
    cmds = [" ".join(["python scripts/train.py experiment=cpu_study", *METHODS[k], "seed=<s>", *map(shlex.quote, extra)])
            for k in METHODS]
    text = "\n".join(lines) + "\n\nCommands (seed = " + ", ".join(map(str, seeds)) + "):\n\n" + "\n".join(
        f"    {c}" for c in cmds) + "\n"
    (out / "study.md").write_text(text)
    (out / "study.json").write_text(json.dumps(record, indent=2) + "\n")
    print(text)
    print(f"curves: {png}\ntable:  {out / 'study.md'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per method")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "cpu_study", help="study folder")
    p.add_argument("--parallel", type=int, default=2, choices=(1, 2), help="runs at a time")
    p.add_argument("--threads", type=int, default=2, help="torch threads in all (split between parallel runs)")
    p.add_argument("--plot-only", action="store_true", help="only redraw study.png / study.md")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        run_all(args.out, args.seeds, args.parallel, args.threads, args.overrides)
    report(args.out, args.seeds, args.overrides)


if __name__ == "__main__":
    main()
