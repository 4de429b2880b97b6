"""Training curves as a PNG beside ``metrics.jsonl`` (a picture beats a column of numbers)."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = (
    ("episode/success_rate", "success rate"),
    ("episode/valid_action_ratio", "valid-action ratio"),
    ("episode/mixed_group_fraction", "GRPO groups with mixed outcomes"),
    ("actor/loss", "loss"),
    ("serl/lambda", "λ (teacher mixing)"),
    ("serl_action_mask/weight_mean", "teacher weight (mean, bar: min-max)"),
)
# drawn as a min-max bar at each point of a panel's line: (low key, high key)
BANDS = {"serl_action_mask/weight_mean": ("serl_action_mask/weight_min", "serl_action_mask/weight_max")}
# the held-out evaluation (eval_every > 0) drawn on the panel of its training counterpart
OVERLAYS = {
    "episode/success_rate": ("eval/success_rate", "held-out eval"),
    "episode/valid_action_ratio": ("eval/valid_action_ratio", "held-out eval"),
}


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_training_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Plot the PANELS metrics against the training step; returns the PNG path (None if no data)."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 3, figsize=(12, 6), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, PANELS):
        # teacher-weight statistics mean nothing on steps where no action token was selected
        pts = [
            (r["step"], r[key])
            for r in rows
            if isinstance(r.get(key), (int, float))
            and not (key.startswith("serl_action_mask/weight") and r.get("serl_action_mask/empty_target", 0) >= 1)
        ]
        overlay = OVERLAYS.get(key)
        extra = []
        if overlay is not None:
            extra = [(r["step"], r[overlay[0]]) for r in rows if isinstance(r.get(overlay[0]), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            line = ax.plot(xs, ys, marker="o", label="training rollouts")[0]
            if key in BANDS:
                lo, hi = BANDS[key]
                band = [(r["step"], r[lo], r[hi]) for r in rows if r["step"] in xs and lo in r and hi in r]
                if band:
                    bx, blo, bhi = zip(*band)
                    ax.vlines(bx, blo, bhi, color=line.get_color(), linewidth=6, alpha=0.3)
                    ax.set_xlim(0.5, max(r["step"] for r in rows) + 0.5)
        if extra:
            xs, ys = zip(*extra)
            ax.plot(xs, ys, marker="s", linestyle="--", label=overlay[1])
            ax.legend(fontsize="small")
        if not pts and not extra:
            note = "no action tokens selected" if key.startswith("serl_action_mask/weight") else "not logged"
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


STUDY_PANELS = (
    ("eval/success_rate", "held-out success (fixed games, T = 0.4)"),
    ("episode/success_rate", "training-rollout success"),
)


def study_curves(runs: dict[str, list[list[dict]]], key: str) -> dict[str, list[tuple[int, float, float, float, int]]]:
    """Per method, ``(step, mean, min, max, n_runs)`` of ``key`` over its runs at every step some run logged it.

    ``runs`` maps a method label to its runs' metric rows (one list of ``metrics.jsonl`` rows per seed).
    """
    out: dict[str, list[tuple[int, float, float, float, int]]] = {}
    for label, method_runs in runs.items():
        by_step: dict[int, list[float]] = {}
        for rows in method_runs:
            for r in rows:
                if isinstance(r.get(key), (int, float)):
                    by_step.setdefault(int(r["step"]), []).append(float(r[key]))
        out[label] = [
            (step, sum(v) / len(v), min(v), max(v), len(v)) for step, v in sorted(by_step.items())
        ]
    return out


def plot_study(runs: dict[str, list[list[dict]]], out_path: str | Path, title: str = "") -> Path:
    """One PNG: per panel of :data:`STUDY_PANELS`, each method's mean over seeds with its min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(STUDY_PANELS), figsize=(12, 4.2), constrained_layout=True)
    for ax, (key, panel) in zip(axes, STUDY_PANELS):
        for i, (label, pts) in enumerate(study_curves(runs, key).items()):
            if not pts:
                continue
            steps, mean, lo, hi, n = zip(*pts)
            style = dict(marker="os^v"[i % 4], linestyle=("-", "--", ":", "-.")[i % 4])  # equal curves stay visible
            line = ax.plot(steps, mean, label=f"{label} (mean of {max(n)} seeds)", **style)[0]
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(panel + "\nline: mean over seeds, band: min-max")
        ax.set_xlabel("training step")
        ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
