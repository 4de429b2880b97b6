"""Warm-start a policy by supervised fine-tuning on expert demonstrations (DESIGN.md §5 "Warm start").

    python scripts/sft.py                                   # SmolLM2-135M + LoRA r=16 on 32 generated games
    python scripts/sft.py lora=null lr=1e-5                 # full fine-tuning
    python scripts/sft.py adapter_dir=serl/policy/warmstart_adapters/smollm2-135m-sft   # = make warmstart
    python scripts/train.py model.path=<run>/model          # RL from the warm-started folder

Steps: pick ``n_games`` training games (never evaluation games) → play each expert plan through the real
env and render every step in the student's exact prompt format (:mod:`serl.warmstart.demos`; cached as
JSONL at ``demos_path``) → SFT (:func:`serl.warmstart.sft.train_sft`) → write the merged HF folder
(``output_dir``), optionally the LoRA adapter alone (``adapter_dir``, with a README stating the command
and seed), ``sft_summary.json`` and the tracker's files in the run folder.

Configuration: conf/sft.yaml (every knob documented beside its value); outputs go to
outputs/sft/<time>_<run_name>/ unless ``hydra.run.dir=...``.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from a hub unless the user asks for it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from serl.tracking import wandb_lines  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOGGER_MODES = ("auto", "online", "offline", "disabled")
DTYPES = ("float32", "bfloat16")


class SFTConfigError(ValueError):
    """A conf/sft.yaml value outside its allowed range or set."""


def _check(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise SFTConfigError(f"{key}={value!r} is invalid: {rule}")


def validate(cfg: DictConfig) -> None:
    """Check every SFT knob before anything heavy runs; the message names the key and the allowed values."""
    _check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "must be an int >= 0")
    _check(isinstance(cfg.n_games, int) and cfg.n_games >= 1, "n_games", cfg.n_games, "must be an int >= 1")
    _check(isinstance(cfg.max_detours, int) and cfg.max_detours >= 0, "max_detours", cfg.max_detours, "must be an int >= 0")
    _check(isinstance(cfg.epochs, int) and cfg.epochs >= 1, "epochs", cfg.epochs, "must be an int >= 1")
    _check(float(cfg.lr) > 0, "lr", cfg.lr, "must be > 0")
    _check(isinstance(cfg.batch_size, int) and cfg.batch_size >= 1, "batch_size", cfg.batch_size, "must be an int >= 1")
    _check(
        isinstance(cfg.micro_batch_size, int) and 1 <= cfg.micro_batch_size <= cfg.batch_size,
        "micro_batch_size",
        cfg.micro_batch_size,
        f"must be an int in [1, batch_size={cfg.batch_size}]",
    )
    _check(
        cfg.max_steps is None or (isinstance(cfg.max_steps, int) and cfg.max_steps >= 1),
        "max_steps",
        cfg.max_steps,
        "must be null or an int >= 1",
    )
    _check(float(cfg.weight_decay) >= 0, "weight_decay", cfg.weight_decay, "must be >= 0")
    _check(float(cfg.grad_clip) > 0, "grad_clip", cfg.grad_clip, "must be > 0")
    _check(cfg.lora is None or isinstance(cfg.lora, DictConfig), "lora", cfg.lora, "must be null or a mapping of LoraConfig options")
    _check(
        cfg.model.lora is None,
        "model.lora",
        cfg.model.lora,
        "must be null for SFT: set the adapter with the top-level `lora` knob (lora=null: full fine-tuning)",
    )
    _check(
        cfg.adapter_dir is None or cfg.lora is not None,
        "adapter_dir",
        cfg.adapter_dir,
        "needs LoRA training (lora=null fine-tunes the full weights: there is no adapter to export)",
    )
    _check(bool(cfg.output_dir), "output_dir", cfg.output_dir, "must be a folder path")
    _check(bool(cfg.demos_path), "demos_path", cfg.demos_path, "must be a file path")
    _check(cfg.model.dtype in DTYPES, "model.dtype", cfg.model.dtype, f"allowed values are {', '.join(DTYPES)}")
    _check(cfg.logger.mode in LOGGER_MODES, "logger.mode", cfg.logger.mode, f"allowed values are {', '.join(LOGGER_MODES)}")
    _check(str(cfg.device) == "cpu" or str(cfg.device).startswith("cuda"), "device", cfg.device, "cpu or cuda[:i]")
    _check(isinstance(cfg.torch_threads, int) and cfg.torch_threads >= 0, "torch_threads", cfg.torch_threads, "must be an int >= 0")


def _command_line() -> str:
    overrides = list(HydraConfig.get().overrides.task)
    return " ".join(["python scripts/sft.py", *(shlex.quote(o) for o in overrides)])


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def select_games(suite, n_games: int, seed: int) -> list[str]:
    """``n_games`` distinct training games: ``suite.train_games`` (seeded draw from the training pool;
    never evaluation games). Too few distinct games is an error naming ``env.train_pool``."""
    games = list(dict.fromkeys(suite.train_games(n_games, seed)))
    if len(games) < n_games:
        raise SFTConfigError(
            f"n_games={n_games} is invalid: the training pool has only {len(games)} distinct games "
            "(raise env.train_pool, or lower n_games)"
        )
    return games


def demonstrations(suite, games: list[str], path: Path, progress: bool, max_detours: int = 0, seed: int = 0):
    """Load the JSONL cache at ``path`` when it exists (its games must be ``games``), else collect it."""
    from serl.warmstart.demos import collect_demonstrations, load_demonstrations, save_demonstrations

    if path.is_file():
        demos = load_demonstrations(path)
        cached = sorted({d.game for d in demos})
        if cached != sorted(games):
            raise SFTConfigError(
                f"demos_path={str(path)!r} is invalid: it holds demonstrations of {len(cached)} other game(s) than "
                f"this run's {len(games)} (different n_games, seed or env?); delete it or point demos_path elsewhere"
            )
        print(f"loaded {len(demos)} demonstrations of {len(games)} games from {path}")
        return demos
    t0 = time.perf_counter()
    demos = collect_demonstrations(suite, games, progress=progress, max_detours=max_detours, seed=seed)
    save_demonstrations(path, demos)
    print(f"collected {len(demos)} demonstrations of {len(games)} games in {time.perf_counter() - t0:.1f} s -> {path}")
    return demos


def adapter_readme(cfg: DictConfig, command: str, summary: dict) -> str:
    lora = OmegaConf.to_container(cfg.lora, resolve=True)
    return (
        f"# Warm-start LoRA adapter: {cfg.model.name}\n\n"
        "Supervised warm start of the policy on expert demonstrations (DESIGN.md §5 \"Warm start\"): the\n"
        "expert plans of generated ALFWorld training games rendered in the student's exact prompt format with\n"
        "a templated `<think>` rationale (serl/warmstart/demos.py), token-mean NLL on the response tokens.\n"
        "Merged into its base on first use by `serl.policy.models.resolve_model_path`.\n\n"
        "Produced by (the adapter versioned in the repo is regenerated by `make warmstart`):\n\n"
        f"    {command}\n\n"
        f"- seed: {cfg.seed}\n"
        f"- base model: {cfg.model.path}\n"
        f"- games: {cfg.n_games} training games of env={cfg.env.name} (source: {summary['env_source']}, "
        f"game seed {cfg.env.get('seed', None)})\n"
        f"- search detours per game: 0..{cfg.max_detours}\n"
        f"- demonstrations: {int(summary['n_demos'])}, epochs: {cfg.epochs}, lr: {cfg.lr}, batch size: {cfg.batch_size}\n"
        f"- lora: {json.dumps(lora)}\n"
        f"- final loss: {summary['final_loss']:.4f} (last-epoch mean {summary['final_epoch_loss']:.4f}, "
        f"token accuracy {summary['final_epoch_token_accuracy']:.3f})\n"
        f"- wall time: {summary['wall_time_s']:.0f} s on {summary['device']}\n"
        f"- serl commit: {summary['git_commit']}\n"
        f"- date: {summary['date']}\n"
    )


@hydra.main(config_path="../conf", config_name="sft", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    try:
        validate(cfg)  # fails before any game or model loads
    except SFTConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2)
    import torch

    from serl.build import ConfigError, build_suite, build_tracker, setup_runtime
    from serl.policy.models import load_policy, resolve_model_path
    from serl.tracking import WandbTracker, atomic_write_text
    from serl.warmstart.sft import save_adapter, save_warmstart, train_sft

    t_start = time.perf_counter()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_runtime(cfg)  # torch threads, global seeds
    command = _command_line()

    try:
        suite = build_suite(cfg)
        games = select_games(suite, int(cfg.n_games), int(cfg.seed))
        demos = demonstrations(
            suite, games, Path(str(cfg.demos_path)), bool(cfg.progress), int(cfg.max_detours), int(cfg.seed)
        )
    except (SFTConfigError, ConfigError) as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2)

    path = resolve_model_path(str(cfg.model.path))
    lora = OmegaConf.to_container(cfg.lora, resolve=True) if cfg.lora is not None else None
    model, tokenizer = load_policy(
        path, dtype=str(cfg.model.dtype), lora=lora, gradient_checkpointing=bool(cfg.model.gradient_checkpointing)
    )
    model.to(torch.device(str(cfg.device)))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"model {path}: {'LoRA ' + json.dumps(lora) if lora else 'full fine-tuning'}, {n_trainable:,} trainable parameters")

    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    # metrics.jsonl (+ W&B) get train_sft's per-step metrics; the run summary goes to sft_summary.json
    tracker = build_tracker(cfg, run_dir, tags=["sft", str(cfg.env.name), str(cfg.model.name)], job_type="sft")
    ok = False
    try:
        result = train_sft(
            model,
            tokenizer,
            demos,
            epochs=int(cfg.epochs),
            lr=float(cfg.lr),
            batch_size=int(cfg.batch_size),
            micro_batch_size=int(cfg.micro_batch_size),
            max_steps=None if cfg.max_steps is None else int(cfg.max_steps),
            seed=int(cfg.seed),
            weight_decay=float(cfg.weight_decay),
            grad_clip=float(cfg.grad_clip),
            log=tracker.log,
            progress=bool(cfg.progress),
        )
        summary = {
            **result,
            "n_tokens": result["n_prompt_tokens"] + result["n_response_tokens"],
            "n_games": len(games),
            "n_trainable_params": n_trainable,
            "lora": lora,
            "model_path": str(path),
            "env_source": getattr(suite, "source", None),
            "run_name": str(cfg.run_name),
            "run_dir": str(run_dir),
            "output_dir": str(Path(str(cfg.output_dir)).absolute()),
            "adapter_dir": str(Path(str(cfg.adapter_dir)).absolute()) if cfg.adapter_dir else None,
            "demos_path": str(Path(str(cfg.demos_path)).absolute()),
            "command": command,
            "seed": int(cfg.seed),
            "device": str(cfg.device),
            "git_commit": _git_commit(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        info = {k: summary[k] for k in ("model_path", "lora", "command", "seed", "n_demos", "final_loss", "git_commit")}
        save_warmstart(model, tokenizer, summary["output_dir"], info=info)
        summary["wall_time_s"] = time.perf_counter() - t_start
        if cfg.adapter_dir:
            save_adapter(
                model,
                summary["adapter_dir"],
                base_model_name=str(cfg.model.path),
                readme=adapter_readme(cfg, command, summary),
            )
        summary["wall_time_s"] = time.perf_counter() - t_start
        atomic_write_text(run_dir / "sft_summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
        for t in tracker.trackers:
            if isinstance(t, WandbTracker):
                t.summary({f"sft_summary/{k}": v for k, v in summary.items()})
        ok = True
    finally:
        locations = tracker.locations
        tracker.close(ok)

    lines = [
        f"sft: {int(summary['steps'])} steps over {int(summary['n_demos'])} demonstrations of {len(games)} games, "
        f"final loss {summary['final_loss']:.4f} (last-epoch mean {summary['final_epoch_loss']:.4f}, "
        f"token accuracy {summary['final_epoch_token_accuracy']:.3f}), {summary['wall_time_s']:.1f} s",
        f"outputs:    {run_dir}",
        f"  model:      {summary['output_dir']}   (python scripts/train.py model.path=<this folder>)",
    ]
    if summary["adapter_dir"]:
        lines.append(f"  adapter:    {summary['adapter_dir']}")
    lines += [
        f"  demos:      {summary['demos_path']}",
        f"  summary:    {run_dir / 'sft_summary.json'}",
        f"  config:     {run_dir / 'config.yaml'}",
    ]
    if "JsonlTracker" in locations and cfg.logger.name != "none":
        lines.append(f"  metrics:    {locations['JsonlTracker']}")
    lines += wandb_lines(locations, label_width=14)
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
