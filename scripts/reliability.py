"""Kill -9 a real training run at random points and resume it, until it finishes; check nothing was lost or
logged twice and that it ends exactly where an uninterrupted run ends.

    python scripts/reliability.py                      # 20 kills, tiny model, real ALFWorld (about 10 min on 2 cores)
    python scripts/reliability.py --kills 2 --steps 2  # the quick version the default test suite runs

For each kill the runner picks, at random, one of three moments: a random time after the process started
(start-up, rollout, teacher, update ...), the instant a new line appears in ``metrics.jsonl`` (between a step's
log line and its checkpoint), or the instant a checkpoint temp file appears (during the checkpoint write). It
sends SIGKILL, then resumes with ``resume=<run folder>`` (or starts over when no checkpoint exists yet) until
the run completes; kills that remain go to a new run. Every finished run must have:

* each training step exactly once in ``metrics.jsonl``, no partial line;
* a final checkpoint whose policy and teacher tensors are bit-identical to the uninterrupted reference run.

Prints one line per kill and a verdict; exit status 0 when every check holds. ``--json PATH`` writes the record.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = [
    "model=tiny", "n_tasks=1", "group_size=2", "env.max_turns=2", "env.train_pool=2", "rollout.max_new_tokens=12",
    "learner.micro_batch_size=2", "learner.lr=1e-3", "logger=jsonl", "torch_threads=1", "algorithm.teacher_sync_interval=2",
    "decay.horizon=4", "teacher_log.every=0",
]
MOMENTS = ("random_time", "after_metrics_line", "during_checkpoint_write")


def _cmd(run: Path, steps: int, resume: bool, extra: list[str]) -> list[str]:
    where = f"resume={run}" if resume else f"hydra.run.dir={run}"
    return [sys.executable, str(ROOT / "scripts" / "train.py"), *TINY, f"steps={steps}", where, *extra]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _run_to_end(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def _run_and_kill(cmd: list[str], run: Path, moment: str, limit_s: float, rng: random.Random, log: Path) -> str:
    """Start ``cmd``, SIGKILL it at ``moment``; return what happened (``killed …`` or ``finished``)."""
    metrics = run / "metrics.jsonl"
    start_lines = _lines(metrics)
    delay = rng.uniform(0.5, limit_s)
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    t0 = time.monotonic()
    while proc.poll() is None:
        now = time.monotonic() - t0
        fire = (
            (moment == "random_time" and now >= delay)
            or (moment == "after_metrics_line" and _lines(metrics) > start_lines)
            or (moment == "during_checkpoint_write" and any((run / "checkpoints").glob("*.tmp")))
            or now > limit_s * 3  # the chosen moment never came: kill anyway
        )
        if fire:
            os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its env worker processes
            proc.wait()
            return f"killed at {now:.1f} s ({moment})"
        time.sleep(0.002)
    if proc.returncode != 0:
        raise RuntimeError(f"training exited with {proc.returncode}; see {log}")
    return "finished"


def _tensors(run: Path) -> dict:
    from serl.checkpoint import load_checkpoint

    state = load_checkpoint(run)
    out = {f"model/{k}": v for k, v in state.model.items()}
    out.update({f"teacher/{k}": v for k, v in (state.teacher or {}).items()})
    return out


def _check(run: Path, steps: int, reference: dict) -> list[str]:
    import torch

    problems = []
    text = (run / "metrics.jsonl").read_text()
    if text and not text.endswith("\n"):
        problems.append("metrics.jsonl ends with a partial line")
    logged = [json.loads(line)["step"] for line in text.splitlines()]
    if logged != list(range(1, steps + 1)):
        problems.append(f"metrics.jsonl steps are {logged}, expected each of 1..{steps} once")
    final = _tensors(run)
    if set(final) != set(reference):
        problems.append("the final checkpoint holds other tensors than the reference's")
    else:
        differ = [k for k in reference if not torch.equal(final[k], reference[k])]
        if differ:
            problems.append(f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[0]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="kill -9 points in all (default 20)")
    p.add_argument("--steps", type=int, default=3, help="training steps per run (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    p.add_argument("--moments", default=",".join(MOMENTS), help=f"kill moments to draw from (default: all of {', '.join(MOMENTS)})")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "reliability", help="work folder (emptied first)")
    p.add_argument("--json", type=Path, default=None, help="write the record here")
    args = p.parse_args(argv)
    if args.kills < 1 or args.steps < 1:
        p.error(f"--kills and --steps must be >= 1, got {args.kills} and {args.steps}")
    moments = [m for m in args.moments.split(",") if m]
    if not moments or set(moments) - set(MOMENTS):
        p.error(f"--moments={args.moments!r}: choose from {', '.join(MOMENTS)}")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    log = args.out / "train.log"
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    t0 = time.monotonic()
    _run_to_end(_cmd(args.out / "reference", args.steps, False, []), log)
    full_s = time.monotonic() - t0
    reference = _tensors(args.out / "reference")
    print(f"reference run: {args.steps} steps in {full_s:.1f} s")

    rng = random.Random(args.seed)
    record = {"kills": [], "runs": [], "reference_s": full_s}
    kills, n_run, ok = 0, 0, True
    while kills < args.kills:
        n_run += 1
        run = args.out / f"run_{n_run:02d}"
        started = False
        while True:
            resume = (run / "checkpoints" / "last.safetensors").is_file()
            if not resume and started:  # killed before its first checkpoint: start over
                shutil.rmtree(run)
            cmd = _cmd(run, args.steps, resume, [])
            if kills < args.kills:
                moment = rng.choice(moments)
                what = _run_and_kill(cmd, run, moment, full_s, rng, log)
                started = True
                if what == "finished":
                    break
                kills += 1
                record["kills"].append({"run": run.name, "moment": moment, "what": what})
                print(f"kill {kills:2d}/{args.kills}: {run.name} {what}")
            else:
                _run_to_end(cmd, log)
                break
        problems = _check(run, args.steps, reference)
        record["runs"].append({"run": run.name, "problems": problems})
        print(f"{run.name}: " + ("OK: each step logged once, final weights equal the reference" if not problems else "; ".join(problems)))
        ok &= not problems
    print(f"verdict: {'PASS' if ok else 'FAIL'} ({kills} kills over {n_run} runs, {time.monotonic() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({**record, "pass": ok}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
