"""Train a multi-turn agent with SERL.

    python scripts/train.py                                   # CPU preset: SmolLM2-135M on generated ALFWorld
    python scripts/train.py feedback=state_diff insertion=anchor
    python scripts/train.py --cfg job                         # print the composed config
    python scripts/train.py -m feedback=immediate,state_diff  # a multirun sweep
    python scripts/train.py -m sweep=feedback insertion=anchor  # a versioned sweep file (conf/sweep/, docs/sweeps.md)
    torchrun --nproc_per_node=8 scripts/train.py experiment=paper_alfworld  # data parallel (docs/distributed.md)

Configuration lives in conf/ (see README); outputs go to outputs/runs/<time>_<run_name>/.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from a hub unless the user asks for it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from omegaconf import OmegaConf  # noqa: E402

from serl.build import ConfigError, validate  # noqa: E402
from serl.distributed import SINGLE, Dist, close_distributed, init_distributed, rank_device  # noqa: E402
from serl.resume import ResumeError, check_resume, run_dir_of  # noqa: E402
from serl.sweep import cpu_count, finished, missing_launcher, threads_per_job  # noqa: E402
from serl.tracking import wandb_lines  # noqa: E402

OmegaConf.register_new_resolver("serl_run_dir", run_dir_of, replace=True)  # hydra.run.dir in conf/train.yaml
DIST: Dist = SINGLE  # this process's rank under torchrun (set in __main__, before Hydra composes the config)


def checkpoint_file(run_dir: Path) -> Path:
    """The run's newest checkpoint: ``last.safetensors``, or ``last.dcp`` for a run saved by several ranks."""
    from serl.checkpoint import checkpoint_path

    try:
        return checkpoint_path(run_dir)
    except FileNotFoundError:
        return run_dir / "checkpoints" / "last.safetensors"


def print_summary(summary: dict, trackers: dict[str, str], plot: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"serl run {summary.get('run_name', '')}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("steps completed", f"{summary['steps_completed']}"),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
    ]
    for key in sorted(summary):  # success rates averaged over the run's steps (one step is a handful of games)
        if key.startswith("mean/episode/") and "success_rate" in key:
            rows.append((key.removeprefix("mean/episode/") + " (run mean)", f"{summary[key]:.3f}"))
    if "mean/episode/mixed_group_fraction" in summary:  # GRPO learns only from groups with mixed outcomes
        rows.append(("groups with mixed outcomes (run mean)", f"{summary['mean/episode/mixed_group_fraction']:.3f}"))
    if "min/serl_action_mask/weight_min" in summary:  # SERL acting: teacher weights spread around 1
        rows.append((
            "teacher weight min / max (run)",
            f"{summary['min/serl_action_mask/weight_min']:.3f} / {summary['max/serl_action_mask/weight_max']:.3f}",
        ))
    if summary.get("last_eval_step") is not None:  # held-out games, docs/reference.md §8.4
        at = f"eval at step {summary['last_eval_step']}"
        for key in sorted(summary):
            if key.startswith("last/eval/") and "success_rate" in key:
                rows.append((key.removeprefix("last/eval/") + f" ({at})", f"{summary[key]:.3f}"))
        rows.append((f"valid-action ratio ({at})", f"{summary['last/eval/valid_action_ratio']:.3f}"))
    for key, label in (
        ("last/episode/valid_action_ratio", "valid-action ratio (last step)"),
        ("last/episode/reward/mean", "episode reward (last step mean)"),
        ("last/actor/loss", "loss (last step)"),
        ("last/serl/lambda", "λ (last step)"),
        ("last/serl_action_mask/weight_mean", "teacher weight mean (last step)"),
        ("last/rollout/tokens_per_s", "rollout tokens/s"),
        ("total/time/rollout_s", "rollout time (s)"),
        ("total/time/teacher_s", "teacher time (s)"),
        ("total/time/update_s", "update time (s)"),
    ):
        if key in summary:
            rows.append((label, f"{summary[key]:.4g}"))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    run_dir = Path(summary["run_dir"])
    lines = [
        f"outputs:    {run_dir}",
        f"  metrics:    {run_dir / 'metrics.jsonl'}",
        f"  summary:    {run_dir / 'summary.json'}",
        f"  config:     {run_dir / 'config.yaml'}",
        f"  checkpoint: {checkpoint_file(run_dir)}",
    ]
    if summary.get("last_eval_step") is not None:
        lines.append(f"  evals:      {run_dir / 'evals'}  (re-evaluate: scripts/eval.py model.path={run_dir})")
    if plot is not None:
        lines.append(f"  curves:     {plot}")
    if (run_dir / "teacher").is_dir():
        lines.append(f"  teacher:    {run_dir / 'teacher'}  (what the teacher saw and its per-action-token weights)")
    lines += wandb_lines(trackers, label_width=14)
    print("\n".join(lines))


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.torch_threads == 0 and "n_jobs" in hydra_cfg.launcher:
        cfg.torch_threads = threads_per_job(cpu_count(), int(hydra_cfg.launcher.n_jobs))  # parallel runs share the cores
    try:
        validate(cfg)  # fails before any model loads
        cfg.device = rank_device(DIST, str(cfg.device))  # under torchrun: cuda -> cuda:LOCAL_RANK
    except (ConfigError, ValueError, RuntimeError) as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.skip_completed and finished(run_dir):
        print(f"skipped: {run_dir} holds a completed run (summary.json); skip_completed=true")
        return json.loads((run_dir / "summary.json").read_text())
    from serl.build import build_trainer
    from serl.checkpoint import check_writable
    from serl.plots import plot_training_curves

    try:  # before any model loads
        resumed = check_resume(cfg) if cfg.resume else {}  # the checkpoint and the run's config
        check_writable(run_dir / "checkpoints")
    except (ResumeError, OSError) as e:
        print(f"{'resume' if isinstance(e, ResumeError) else 'run folder'} error: {e}", file=sys.stderr)
        raise SystemExit(2)
    try:
        trainer = build_trainer(cfg, run_dir, DIST)  # a too-small eval pool, a checkpoint without its run config ...
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2)
    trainer.s.extra_summary.update(resumed)
    ok = False
    try:
        summary = trainer.train()
        ok = True
    finally:
        trainer.worker.close()  # env worker processes
        trackers = trainer.tracker.locations
        trainer.tracker.close(ok)
    if not DIST.is_main:  # rank 0 reports the run
        return summary
    plot = None
    if (run_dir / "metrics.jsonl").is_file():
        plot = plot_training_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    print_summary(summary, trackers, plot)
    return summary


def join_ranks(argv: list[str]) -> Dist:
    """Under torchrun: join the process group and make every rank agree on the run folder (rank 0's time
    stamp, ``SERL_RUN_STAMP`` in conf/train.yaml's ``hydra.run.dir``); only rank 0 keeps Hydra's ``.hydra/``
    record. A single process returns :data:`SINGLE` and changes nothing."""
    dist = init_distributed()
    if not dist.enabled:
        return dist
    if any(a in ("-m", "--multirun") for a in argv):
        raise SystemExit("config error: a multirun (-m) cannot run under torchrun; launch one torchrun per run")
    import time

    os.environ["SERL_RUN_STAMP"] = dist.broadcast(time.strftime("%Y-%m-%d_%H-%M-%S"))
    if not dist.is_main:
        sys.argv.append("hydra.output_subdir=null")
    return dist


if __name__ == "__main__":
    if (problem := missing_launcher(sys.argv[1:])) is not None:
        print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    DIST = join_ranks(sys.argv[1:])
    try:
        main()
    finally:
        close_distributed()
