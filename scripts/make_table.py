"""The ablation table and its pictures from a folder of finished training runs (docs/tables.md).

    python scripts/make_table.py outputs/sweeps/2026-12-03_10-00-00     # every run folder under it
    python scripts/make_table.py outputs/table/cpu --out reports/cpu     # outputs elsewhere
    python scripts/make_table.py outputs/runs --wandb                    # also log to W&B (project serl)
    python scripts/make_table.py outputs/runs --resamples 20000 --bootstrap-seed 1

Finds every run folder (a folder with ``summary.json``) under the root, counts the completed ones (the others
are listed as skipped, with the reason), groups them into configurations (env, method, feedback, insertion;
plain GRPO is one configuration per env) whose runs are the seeds, and writes into ``--out`` (default: the
root): ``table.md``, ``table.csv``, ``reference.csv`` (the paper's published numbers, never measured here),
``table.tex``, ``heatmap.png``, ``curves.png`` and ``table.json``. Exit code 2 with a one-line error when the
root has no completed run or two runs of one configuration share a seed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serl.plots import plot_ablation_curves, plot_ablation_heatmap  # noqa: E402
from serl.table import (  # noqa: E402
    BOOTSTRAP_SEED,
    COLUMNS,
    CURVE_KEYS,
    HELDOUT,
    REFERENCE_COLUMNS,
    RESAMPLES,
    Table,
    TableError,
    build_table,
    curve_metric,
    curve_runs,
    figure_metric,
    heatmap_cells,
    heatmap_columns,
    markdown_tables,
    measured_rows,
    reference_rows,
    write_json,
    write_tables,
)


def draw_figures(table: Table, out: Path) -> dict[str, Path]:
    """``heatmap.png`` and ``curves.png`` in ``out``; their titles say which success they show."""
    metric = figure_metric(table)
    fallback = "" if metric == HELDOUT else "\n(no run evaluated: training-rollout success instead)"
    heatmap = plot_ablation_heatmap(
        heatmap_cells(table, metric), heatmap_columns(table), out / "heatmap.png",
        title=f"mean {metric} over seeds: feedback × insertion{fallback}",
    )
    metric = curve_metric(table)
    fallback = "" if metric == HELDOUT else "\n(no run evaluated: training-rollout success per step instead)"
    curves = plot_ablation_curves(
        curve_runs(table), CURVE_KEYS[metric], out / "curves.png", title=f"{metric} over training{fallback}"
    )
    return {"heatmap.png": heatmap, "curves.png": curves}


def log_to_wandb(table: Table, out: Path, files: dict[str, Path], command: str) -> str:
    """Log the measured table, the reference values and both images to a W&B run (project ``serl``,
    job_type ``table``; ``WANDB_MODE`` / key decide online or offline); returns where the run went."""
    import wandb

    from serl.tracking import WandbTracker

    tracker = WandbTracker(
        out, project="serl", name=f"table-{table.root.name}", job_type="table", group=str(table.root),
        config={"root": str(table.root), "command": command, "resamples": table.resamples,
                "bootstrap_seed": table.bootstrap_seed},
    )
    ok = False
    try:
        tracker.log_table("table/measured", COLUMNS, measured_rows(table), step=0)
        tracker.log_table("table/paper_reference_not_measured", REFERENCE_COLUMNS, reference_rows(), step=0)
        images = {name.removesuffix(".png"): wandb.Image(str(files[name])) for name in ("heatmap.png", "curves.png")}
        tracker.run.log(images, step=0)
        location = f"{tracker.location} (mode {tracker.mode})"
        ok = True
    finally:
        tracker.close(ok)
    return location


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="folder searched recursively for run folders")
    p.add_argument("--out", type=Path, default=None, help="where the outputs go (default: the root)")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
    p.add_argument("--bootstrap-seed", type=int, default=BOOTSTRAP_SEED, help="seed of the bootstrap's generator")
    p.add_argument("--wandb", action="store_true", help="also log the table and images to W&B (project serl)")
    args = p.parse_args(argv)
    command = shlex.join(["python", "scripts/make_table.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        table = build_table(args.root, resamples=args.resamples, bootstrap_seed=args.bootstrap_seed)
    except TableError as e:
        print(f"make_table: {e}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else args.root
    files = write_tables(table, out, command)
    files.update(draw_figures(table, out))
    files["table.json"] = write_json(table, out, command, files)

    print(markdown_tables(table))
    print(f"\nskipped run folders: {len(table.skipped)}")
    for s in table.skipped:
        print(f"  {s.path}: {s.reason}")
    print("\nwritten:")
    for name, path in files.items():
        print(f"  {name:<14}{path}")
    if args.wandb:
        print(f"  {'W&B run':<14}{log_to_wandb(table, out, files, command)}")
        print(" " * 16 + "(an offline run uploads later with `wandb sync <that folder>`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
