"""Shared test helpers: compose the real Hydra config and build the real trainer in-process."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# The smallest real run: tiny model, generated ALFWorld games, 1 game x 2 rollouts, 2 turns.
TINY_RUN = [
    "model=tiny",
    "n_tasks=1",
    "group_size=2",
    "env.max_turns=2",
    "env.train_pool=2",
    "env.eval_pool=1",
    "rollout.max_new_tokens=12",
    "learner.micro_batch_size=2",
    "learner.lr=1e-3",
    "logger=jsonl",
    "env_workers.processes=0",  # envs in the test process (fast); the worker-process path: test_faults, test_reliability
]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def warm_start_tiny(out_dir: Path, env: dict[str, str] | None = None) -> Path:
    """The tiny model warm-started for a few seconds on expert demonstrations (``scripts/sft.py``, full
    fine-tuning): it answers in the response format and wins some games, so groups mix and advantages are
    non-zero. Returns its HF folder."""
    import subprocess
    import sys

    sft = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sft.py"), "model=tiny", "n_games=4", "epochs=30", "lr=3e-3", "lora=null",
         "batch_size=4", "micro_batch_size=4", "logger=none", "progress=false", f"hydra.run.dir={out_dir}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )
    assert sft.returncode == 0, sft.stderr[-4000:]
    return out_dir / "model"


def make_columns(groups, trajs, episode_rewards, *, valid=None, steps=None, step_rewards=None, anchors=None, values=None):
    """A :class:`serl.types.StepColumns` written by hand for estimator tests: defaults every step valid, step
    id 0, step reward 0, each row its own anchor, responses of 3 tokens, none truncated, no critic values."""
    import torch

    from serl.types import StepColumns

    n = len(groups)
    long = lambda xs: torch.tensor(list(xs), dtype=torch.long)  # noqa: E731
    return StepColumns(
        group_ids=long(groups), traj_ids=long(trajs), step_ids=long(steps if steps is not None else [0] * n),
        episode_rewards=torch.tensor(episode_rewards, dtype=torch.float32),
        step_rewards=torch.tensor(step_rewards if step_rewards is not None else [0.0] * n, dtype=torch.float32),
        valid=torch.tensor(valid if valid is not None else [True] * n, dtype=torch.bool),
        anchor_ids=long(anchors if anchors is not None else range(n)), response_lengths=long([3] * n),
        truncated=torch.zeros(n, dtype=torch.bool),
        values=None if values is None else torch.tensor(values, dtype=torch.float32),
    )


def documented_metric_patterns() -> list:
    """Regexes for the metric names in the table of docs/metrics.md (`{a,b}` and `<name>` expanded)."""
    import re

    table = (ROOT / "docs" / "metrics.md").read_text()
    patterns = []
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        for name in re.findall(r"`([^`]+)`", first_cell):
            rx = re.escape(name)
            rx = re.sub(r"\\\{([^}]*)\\\}", lambda m: "(" + m.group(1).replace(",", "|").replace("\\ ", "") + ")", rx)
            rx = re.sub(r"<[^>]+>", "[^/]+", rx)
            patterns.append(re.compile(rx + "$"))
    return patterns
