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


def _mean_bands(ax, curves: dict, legend, alpha: float) -> None:
    """Draw each label's mean over seeds with its min-max band (``curves``: :func:`study_curves`' result) on a
    success-rate axis over training steps; ``legend(label, n_seeds)`` names a line."""
    from matplotlib.ticker import MaxNLocator

    for i, (label, pts) in enumerate(curves.items()):
        if not pts:
            continue
        steps, mean, lo, hi, n = zip(*pts)
        style = dict(marker="os^vDP*X"[i % 8], linestyle=("-", "--", ":", "-.")[i % 4])  # equal curves stay visible
        line = ax.plot(steps, mean, label=legend(label, max(n)), **style)[0]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    ax.set_xlabel("training step")
    ax.set_ylim(-0.03, 1.03)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_study(runs: dict[str, list[list[dict]]], out_path: str | Path, title: str = "") -> Path:
    """One PNG: per panel of :data:`STUDY_PANELS`, each method's mean over seeds with its min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(STUDY_PANELS), figsize=(12, 4.2), constrained_layout=True)
    for ax, (key, panel) in zip(axes, STUDY_PANELS):
        _mean_bands(ax, study_curves(runs, key), lambda label, n: f"{label} (mean of {n} seeds)", alpha=0.2)
        ax.set_title(panel + "\nline: mean over seeds, band: min-max")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def plot_ablation_heatmap(
    panels: dict[str, list[tuple[str, str | None, float | None, int]]],
    columns: list[str],
    out_path: str | Path,
    title: str,
) -> Path:
    """One heatmap per panel (e.g. per env) of a mean success in [0, 1], each cell annotated with mean and n.

    ``panels`` maps a panel title to its cells ``(row label, column, mean or None, n)`` in row order; a cell
    whose column is None spans the whole row (a reference row such as GRPO, drawn once across all columns and
    set off by a line). ``columns`` are the column labels (e.g. ``["step", "anchor"]``). Cells without a value
    are grey with ``–`` (and their n when runs exist but have no value).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n_rows = max(len(dict.fromkeys(row for row, *_ in cells)) for cells in panels.values())
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(7.0, 2.0 + 2.2 * len(columns) * len(panels)), max(3.0, 1.6 + 0.55 * n_rows)),
        squeeze=False, constrained_layout=True,
    )
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("lightgrey")
    image = None
    for ax, (panel, cells) in zip(axes[0], panels.items()):
        rows = list(dict.fromkeys(row for row, *_ in cells))
        grid = np.full((len(rows), len(columns)), np.nan)  # (rows, columns) means; NaN = no run
        counts = np.zeros((len(rows), len(columns)), dtype=int)
        spanning = {}  # row index -> (mean, n) of a row-spanning cell
        for row, column, mean, n in cells:
            i = rows.index(row)
            if column is None:
                spanning[i] = (mean, n)
                grid[i, :] = np.nan if mean is None else mean
                counts[i, :] = n
            elif column in columns:
                grid[i, columns.index(column)] = np.nan if mean is None else mean
                counts[i, columns.index(column)] = n
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(len(rows)):
            targets = [((len(columns) - 1) / 2, grid[i, 0], counts[i, 0])] if i in spanning else [
                (j, grid[i, j], counts[i, j]) for j in range(len(columns))
            ]
            for x, mean, n in targets:
                if np.isnan(mean):  # no run, or runs without a value (n > 0)
                    note = f"\n(n = {n}, no value)" if n else ""
                    ax.text(x, i, "–" + note, ha="center", va="center", color="black", fontsize="small")
                else:
                    color = "white" if mean < 0.6 else "black"  # readable on viridis' dark and light ends
                    ax.text(x, i, f"{100 * mean:.1f} %\nn = {n}", ha="center", va="center", color=color,
                            fontsize="small")
        for i in spanning:  # set the reference row off from the grid
            ax.axhline(i + 0.5, color="white", linewidth=3)
        ax.set_xticks(range(len(columns)), [f"insertion: {c}" for c in columns])
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylabel("feedback")
        ax.set_title(panel)
    fig.colorbar(image, ax=axes[0].tolist(), label="success", shrink=0.9)
    fig.suptitle(title)
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def plot_ablation_curves(runs: dict[str, list[list[dict]]], key: str, out_path: str | Path, title: str) -> Path:
    """One PNG: ``key`` over training steps, one line per configuration (mean over its seeds, band: min-max).

    ``runs`` maps a configuration label to its runs' metric rows (one list of ``metrics.jsonl`` rows per seed);
    labels without a value of ``key`` are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), constrained_layout=True)
    _mean_bands(ax, study_curves(runs, key), lambda label, n: f"{label} (n = {n})", alpha=0.15)
    ax.set_title(title + "\nline: mean over seeds, band: min-max")
    ax.set_ylabel(key)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
