"""Evaluate a model or a training checkpoint on held-out games (docs/reference.md §8.4 validation).

    python scripts/eval.py model.path=outputs/runs/<run>        # a training run (its checkpoints/last.safetensors)
    python scripts/eval.py model.path=<HF folder or hub id> n_games=16
    python scripts/eval.py model=tiny n_games=2 temperature=0   # greedy
    python scripts/eval.py --cfg job                            # print the composed config

Plays the first ``n_games`` of the env's sorted eval pool (never used for training) once each, through the
same rollout worker as training, and writes to outputs/evals/<time>_<run_name>/: ``eval.json`` (metrics,
one row per game, the model source and the config choices), ``config.yaml``, the tracker's
``metrics.jsonl``/``summary.json`` and, with ``logger=wandb``, the W&B run. Configuration: conf/eval.yaml.
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
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from serl.build import ConfigError, validate_eval  # noqa: E402
from serl.tracking import wandb_lines  # noqa: E402

GROUPS = ("env", "model", "rollout", "logger")



def print_summary(record: dict, run_dir: Path, trackers: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    m, games = record["metrics"], record["games"]
    model = record["model"]
    what = model["model_path"]
    if model["checkpoint"]:
        what += f" + checkpoint {model['checkpoint']} (step {model['checkpoint_step']})"
    table = Table(title=f"serl eval {record['run_name']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    won = sum(g["won"] for g in games)
    table.add_row("success rate", f"{m['eval/success_rate']:.3f}  ({won}/{len(games)})")
    for task_type in sorted({g["task_type"] for g in games}):
        rows = [g for g in games if g["task_type"] == task_type]
        rate = m.get(f"eval/{task_type}/success_rate", 0.0)
        table.add_row(f"  {task_type}", f"{rate:.3f}  ({sum(g['won'] for g in rows)}/{len(rows)})")
    table.add_row("valid-action rate", f"{m['eval/valid_action_ratio']:.3f}")
    table.add_row("mean episode length", f"{m['eval/episode_length_mean']:.2f}")
    table.add_row("tokens/s", f"{m['eval/tokens_per_s']:.1f}")
    table.add_row("eval time", f"{m['time/eval_s']:.1f} s")
    console = Console()
    console.print(table)
    s = record["settings"]
    print(
        f"model:   {what}\n"
        f"games:   {len(games)} of {record['env'].get('eval_split', '?')} ({record['env'].get('source', '?')}), "
        f"temperature {s['temperature']}, max_turns {s['max_turns']}, seed {s['seed']}"
    )
    lines = [f"outputs: {run_dir}", f"  eval:     {run_dir / 'eval.json'}", f"  config:   {run_dir / 'config.yaml'}"]
    if "JsonlTracker" in trackers:
        lines.append(f"  metrics:  {trackers['JsonlTracker']}")
    lines += wandb_lines(trackers, label_width=12)
    print("\n".join(lines))


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from serl.build import build_policy, build_suite, build_tracker, build_worker, eval_game_list, setup_runtime

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate_eval(cfg)  # fails before any game or model loads
        setup_runtime(cfg)
        suite = build_suite(cfg)
        games = eval_game_list(suite, int(cfg.n_games), "n_games")  # builds the eval pool; fails before the model
        model, tokenizer, source = build_policy(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2)

    from tqdm.auto import tqdm

    from serl.evaluation import evaluate
    from serl.tracking import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    worker = build_worker(cfg, model, tokenizer, suite, source.path)
    tracker = build_tracker(cfg, run_dir, tags=[str(cfg.env.name), "eval"], job_type="eval")
    ok = False
    try:
        bar = tqdm(total=len(games), desc="eval", unit="game", dynamic_ncols=True)
        turns = [0]

        def progress(finished: int, total: int) -> None:  # after every turn
            turns[0] += 1
            bar.update(finished - bar.n)
            bar.set_postfix_str(f"turn {turns[0]}")

        try:
            result = evaluate(
                worker,
                suite,
                n_games=int(cfg.n_games),
                seed=int(cfg.seed),
                temperature=float(cfg.temperature),
                max_turns=int(cfg.max_turns),
                progress=progress,
            )
        finally:
            bar.close()
        record = {
            "run_name": str(cfg.run_name),
            "model": source.describe(),
            "settings": {
                "seed": int(cfg.seed),
                "n_games": int(cfg.n_games),
                "temperature": float(cfg.temperature),
                "max_turns": int(cfg.max_turns),
                "max_new_tokens": int(cfg.rollout.max_new_tokens),
                "top_p": float(cfg.rollout.top_p),
            },
            "choices": {g: str(cfg[g].name) for g in GROUPS},
            "env": suite.describe() if hasattr(suite, "describe") else {"name": str(cfg.env.name)},
            **result.to_json(),
        }
        atomic_write_text(run_dir / "eval.json", json.dumps(record, indent=2) + "\n")
        # a checkpoint's metrics go to its training step, so they line up with the run's curves
        tracker.log(result.metrics, step=source.checkpoint_step or 0)
        tracker.summary({**result.metrics, **source.describe(), "run_name": str(cfg.run_name)})
        ok = True
    finally:
        trackers = tracker.locations
        tracker.close(ok)
    print_summary(record, run_dir, trackers)
    return record


if __name__ == "__main__":
    main()
