"""Each baseline's training step on the CPU study preset, timed against GRPO's in one process (issue 14).

    python scripts/bench_baselines.py                        # experiment=cpu_study, seed 0, all algorithms
    python scripts/bench_baselines.py --algorithms grpo rloo --repeats 2 -- rollout.max_new_tokens=48

One rollout of the preset's first training step (1 game × 5 episodes, 6 turns, the warm-started SmolLM2-135M) is
played once with GRPO's trainer; then, for every algorithm, a trainer is built from the same config (fresh
weights, ``algorithm=<name>``), and in each of ``--repeats`` rounds every trainer's ``train_step`` runs once, in
turn, on a copy of that rollout: the critic (PPO), the estimator, the teacher pass (when a part reads the teacher) and the update
on the same step samples. Interleaving the algorithms spreads a slow drift of the machine over all of them. The rollout is shared so
the sampled text does not differ between algorithms; what the step costs beyond it is what differs. Plain RL
baselines run without a teacher (``feedback=none``, as in ``sweep=baselines``); SERL, the self-distillation
losses run with ``feedback=state_diff insertion=anchor`` (the card's, ``sweep=distill``). DAPO's dynamic
sampling would add rollout rounds on top (one per round, ``sampling/rounds``); that is not in these times.

Prints per algorithm the median seconds of the post-rollout step (teacher + update + the rest) and its ratio
to GRPO's, and writes the numbers as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: algorithm -> its overrides (plain baselines without a teacher; the teacher readers with the card's feedback)
ALGORITHMS = {
    "grpo": ["algorithm=grpo", "feedback=none"],
    "rloo": ["algorithm=rloo", "feedback=none"],
    "gigpo": ["algorithm=gigpo", "feedback=none"],
    "dapo": ["algorithm=dapo", "feedback=none"],
    "gspo": ["algorithm=gspo", "feedback=none"],
    "ppo": ["algorithm=ppo", "feedback=none"],
    "serl": ["algorithm=serl", "feedback=state_diff", "insertion=anchor"],
    "self_distill": ["algorithm=self_distill", "feedback=state_diff", "insertion=anchor"],
    "grpo_self_distill": ["algorithm=grpo_self_distill", "feedback=state_diff", "insertion=anchor"],
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    p.add_argument("--repeats", type=int, default=2, help="rounds; each times every algorithm's step once (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/bench/baselines.json"))
    p.add_argument("overrides", nargs="*", help="extra config overrides for every trainer (after --)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if "grpo" not in args.algorithms:
        p.error("--algorithms must include grpo (the ratios are to GRPO)")
    return args


def build(overrides: list[str], run_dir: Path):
    from hydra import compose, initialize_config_dir

    from serl.build import build_trainer

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return build_trainer(cfg, run_dir)


def main(argv: list[str]) -> dict:
    from serl.progress import Progress

    args = parse_args(argv)
    common = ["experiment=cpu_study", "logger=none", "eval_every=0", "save_every=0", f"seed={args.seed}", *args.overrides]
    quiet = Progress(1, enabled=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trainer = build([*common, *ALGORITHMS["grpo"]], Path(tmp) / "rollout")
        rollout = trainer.rollout(0, quiet)  # the preset's first step: what every algorithm trains on
        rollout_s = time.perf_counter() - t0
        del trainer
        n_steps = sum(len(t.steps) for t in rollout.trajectories)
        won = sum(t.won for t in rollout.trajectories)
        print(f"rollout: {len(rollout.trajectories)} episodes, {n_steps} step samples, {won} won, {rollout_s:.0f} s (build + play)")
        trainers = {}
        for name in args.algorithms:  # all built first, so the timed rounds interleave the algorithms
            trainers[name] = build([*common, *ALGORITHMS[name]], Path(tmp) / name)
            trainers[name].rollout = lambda u, progress: copy.deepcopy(rollout)  # the shared rollout, as played
        secs: dict[str, list[float]] = {name: [] for name in args.algorithms}
        last: dict[str, dict] = {}
        for r in range(args.repeats):  # round r: every algorithm once, in order (a drift of the machine hits all)
            for name, trainer in trainers.items():
                t = time.perf_counter()
                last[name] = trainer.train_step(quiet)
                secs[name].append(time.perf_counter() - t)
                m = last[name]
                print(f"round {r + 1}: {name:>18} {secs[name][-1]:7.1f} s (teacher {m.get('time/teacher_s', 0.0):.1f} s, "
                      f"critic {m.get('time/critic_s', 0.0):.1f} s, update {m.get('time/update_s', 0.0):.1f} s)", flush=True)
        results: dict[str, dict] = {
            name: {
                "step_s": statistics.median(secs[name]),
                "runs_s": [round(x, 3) for x in secs[name]],
                "teacher_s": last[name].get("time/teacher_s", 0.0),
                "critic_s": last[name].get("time/critic_s", 0.0),
                "update_s": last[name].get("time/update_s", 0.0),
                "overrides": ALGORITHMS[name],
            }
            for name in args.algorithms
        }
        del trainers
    base = results["grpo"]["step_s"]
    print("\nalgorithm            post-rollout step   / GRPO")
    for name, r in results.items():
        r["ratio_to_grpo"] = r["step_s"] / base
        print(f"{name:<20} {r['step_s']:>10.1f} s   {r['ratio_to_grpo']:>8.2f}x")
    record = {"preset": "experiment=cpu_study", "seed": args.seed, "rollout": {"episodes": len(rollout.trajectories),
              "step_samples": n_steps, "won": won}, "results": results, "command": " ".join(["scripts/bench_baselines.py", *argv])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
