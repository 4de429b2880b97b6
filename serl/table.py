"""The ablation table: finished training runs under a folder -> one row per configuration, with statistics over
seeds, as Markdown, CSV, LaTeX and JSON (``scripts/make_table.py``; the user page is docs/tables.md).

A *run folder* is a directory with ``summary.json`` (plus ``config.yaml`` and ``metrics.jsonl``), as
``scripts/train.py`` writes it. A *configuration* is (env, method, feedback, insertion); its runs are its seeds.
Plain GRPO (``feedback=none`` or ``algorithm=grpo``) is one configuration per env whatever its insertion
setting (which does nothing without a teacher).

Pure: standard library + numpy (``config.yaml`` is read with ``yaml.safe_load``); the figures are drawn by
``serl/plots.py``, W&B logging lives in the script.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import yaml

HELDOUT = "held-out success"
TRAINING = "training success"
# table metric -> its per-run value in summary.json (a fraction in [0, 1])
SUMMARY_KEYS = {HELDOUT: "last/eval/success_rate", TRAINING: "mean/episode/success_rate"}
# table metric -> its per-step value in metrics.jsonl (the curves)
CURVE_KEYS = {HELDOUT: "eval/success_rate", TRAINING: "episode/success_rate"}
METHODS = {  # algorithm option -> its name in tables (the baselines' sources: docs/configuration.md)
    "serl": "SERL", "serl_reference": "SERL (reference)", "grpo": "GRPO", "rloo": "RLOO", "gigpo": "GiGPO",
    "dapo": "DAPO", "gspo": "GSPO", "ppo": "PPO", "self_distill": "Self-distillation", "grpo_self_distill": "GRPO + self-distillation",
}
TEACHER_OPTIONAL = ("serl", "serl_reference")  # with feedback=none these are plain GRPO
GRPO = "GRPO"
DASH = "–"  # not available
NO_INSERTION = DASH  # GRPO's insertion: the setting does nothing without a teacher
INSERTION_ORDER = ("step", "anchor")
# run settings outside the configuration key: runs of one configuration that differ in them get a note
SETTINGS = ("steps", "decay.name", "model.name")

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
LEVEL = 0.95

# The paper's published SERL numbers. Never measured by serl: shown only in their own, labelled section.
PAPER = "What and When to Distill: Selective Hindsight Distillation for Multi-Turn Agents"
PAPER_REFERENCE = (
    {"benchmark": "ALFWorld", "method": "SERL", "model": "Qwen2.5-7B-Instruct", "games": "official",
     "metric": "success rate (%)", "value": 90.0},
    {"benchmark": "WebShop", "method": "SERL", "model": "Qwen2.5-7B-Instruct", "games": "official",
     "metric": "success rate (%)", "value": 80.1},
)


class TableError(Exception):
    """A root the table cannot be made from (no run, no completed run, two runs with one seed)."""


class ConfigKey(NamedTuple):
    """One row of the table."""

    env: str
    method: str
    feedback: str
    insertion: str


@dataclass(frozen=True)
class Run:
    """One completed run: its configuration, seed and per-run values (fractions in [0, 1], None if absent)."""

    path: Path
    key: ConfigKey
    seed: int
    values: dict[str, float | None]  # table metric (HELDOUT, TRAINING) -> value
    wall_time_s: float | None  # summary.json's wall_time_s: the last invocation only (a resume restarts it)
    resumed_from_step: int | None
    settings: dict[str, str]  # SETTINGS name -> value as text ("?" when the config lacks it)
    rows: tuple[dict, ...] = field(default=(), repr=False)  # metrics.jsonl rows, one per logged step


@dataclass(frozen=True)
class Skipped:
    """A run folder left out of the table, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Stats:
    """A metric over the seeds of one configuration: n values, their mean, sample std (ddof 1) and the
    percentile-bootstrap interval of the mean (std and interval None when n = 1)."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None
    values: tuple[float, ...]


@dataclass(frozen=True)
class Configuration:
    """One row: its runs (sorted by seed) and per-metric statistics (None when no run has the metric)."""

    key: ConfigKey
    runs: tuple[Run, ...]
    stats: dict[str, Stats | None]
    wall_time_s: float | None  # mean over the runs that report it

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


@dataclass(frozen=True)
class Table:
    """Everything the outputs are made from."""

    root: Path
    configurations: tuple[Configuration, ...]
    skipped: tuple[Skipped, ...]
    resamples: int = RESAMPLES
    bootstrap_seed: int = BOOTSTRAP_SEED
    level: float = LEVEL


class _Skip(Exception):
    """Raised while reading a run folder that does not count; the message is the reason."""


# ---------------------------------------------------------------------------------------------- finding runs


def is_run_dir(path: Path) -> bool:
    """A finished run has ``summary.json``; a running or killed one has ``config.yaml`` and ``metrics.jsonl``."""
    if (path / "summary.json").is_file():
        return True
    return (path / "config.yaml").is_file() and (path / "metrics.jsonl").is_file()


def find_run_dirs(root: Path) -> list[Path]:
    """Every run folder under ``root`` (``root`` itself included), sorted; never looks inside a run folder."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here):
            found.append(here)
            dirnames[:] = []  # checkpoints/, wandb/, evals/ ... belong to this run
        else:  # hidden folders (.hydra) and W&B's folders never hold a run
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "wandb")
    return sorted(found)


def _number(value: Any) -> float | None:
    """A finite float, or None (missing, "nan" as the tracker writes non-finite values, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _integer(value: Any) -> int | None:
    """An int (not a bool), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dig(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _load(path: Path, parse: Any, what: str) -> dict:
    if not path.is_file():
        raise _Skip(f"no {path.name}")
    try:
        data = parse(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _Skip(f"{path.name} is not valid {what} ({first})") from None
    if not isinstance(data, dict):
        raise _Skip(f"{path.name} is not a {what} mapping")
    return data


def read_metrics_rows(path: Path) -> tuple[dict, ...]:
    """The rows of ``metrics.jsonl`` that are JSON objects with an integer ``step`` (a cut line is dropped)."""
    if not path.is_file():
        return ()
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return tuple(rows)


def configuration_key(config: Mapping[str, Any]) -> ConfigKey:
    """The configuration of a resolved run config; plain GRPO is ("GRPO", "none", "–") whatever its insertion, and
    a baseline without a teacher (feedback=none) is ("<its name>", "none", "–")."""
    names = {k: _dig(config, f"{k}.name") for k in ("env", "algorithm", "feedback", "insertion")}
    missing = [f"{k}.name" for k, v in names.items() if not isinstance(v, str)]
    if missing:
        raise _Skip(f"not a training run: config.yaml has no {', '.join(missing)}")
    if names["algorithm"] == "grpo" or (names["feedback"] == "none" and names["algorithm"] in TEACHER_OPTIONAL):
        return ConfigKey(names["env"], GRPO, "none", NO_INSERTION)
    method = METHODS.get(names["algorithm"], names["algorithm"])
    if names["feedback"] == "none":  # a baseline without a teacher: its insertion does nothing either
        return ConfigKey(names["env"], method, "none", NO_INSERTION)
    return ConfigKey(names["env"], method, names["feedback"], names["insertion"])


def read_run(path: Path) -> Run:
    """Read one run folder; raises ``_Skip`` (the reason) when it does not count (unfinished, malformed ...)."""
    if not (path / "summary.json").is_file():
        raise _Skip("unfinished: no summary.json (still running, or killed)")
    summary = _load(path / "summary.json", json.loads, "JSON")
    config = _load(path / "config.yaml", yaml.safe_load, "YAML")
    key = configuration_key(config)
    if summary.get("completed") is not True:
        raise _Skip(f"unfinished: summary.json has completed={json.dumps(summary.get('completed'))}")
    seed = _integer(config.get("seed"))
    if seed is None:
        raise _Skip(f"config.yaml has no integer seed (seed={config.get('seed')!r})")
    return Run(
        path=path,
        key=key,
        seed=seed,
        values={metric: _number(summary.get(k)) for metric, k in SUMMARY_KEYS.items()},
        wall_time_s=_number(summary.get("wall_time_s")),
        resumed_from_step=_integer(summary.get("resumed_from_step")),
        settings={name: "?" if _dig(config, name) is None else str(_dig(config, name)) for name in SETTINGS},
        rows=read_metrics_rows(path / "metrics.jsonl"),
    )


def collect_runs(root: Path) -> tuple[list[Run], list[Skipped]]:
    """The completed runs under ``root`` and the run folders skipped, with reasons."""
    runs, skipped = [], []
    for path in find_run_dirs(root):
        try:
            runs.append(read_run(path))
        except _Skip as e:
            skipped.append(Skipped(path, str(e)))
    return runs, skipped


# ---------------------------------------------------------------------------------------------- grouping


def sort_key(key: ConfigKey) -> tuple:
    """Row order: per env, GRPO first, the baselines without a teacher next, then by feedback, method, insertion
    (step, anchor, then others)."""
    rank = INSERTION_ORDER.index(key.insertion) if key.insertion in INSERTION_ORDER else len(INSERTION_ORDER)
    return (key.env, key.method != GRPO, key.feedback != "none", key.feedback, key.method, rank, key.insertion)


def config_label(key: ConfigKey, with_env: bool = False) -> str:
    """Short name of a configuration for figures and messages, e.g. ``SERL state_diff / anchor``."""
    label = key.method if key.feedback == "none" else f"{key.method} {key.feedback} / {key.insertion}"
    return f"{key.env}: {label}" if with_env else label


def group_runs(runs: Sequence[Run]) -> dict[ConfigKey, list[Run]]:
    """Runs per configuration (sorted by seed), in table order; two runs of one configuration with one seed
    are a ``TableError`` naming both folders."""
    groups: dict[ConfigKey, dict[int, Run]] = {}
    for run in runs:
        seeds = groups.setdefault(run.key, {})
        if run.seed in seeds:
            plain = run.key.feedback == "none"
            pooled = f" ({run.key.method} pools its insertion settings: its insertion does nothing)" if plain else ""
            raise TableError(
                f"two runs of configuration {config_label(run.key, with_env=True)} have seed {run.seed}: "
                f"{seeds[run.seed].path} and {run.path}{pooled}; runs differing only in decay, steps or model "
                "count as one configuration, so table them from separate folders"
            )
        seeds[run.seed] = run
    return {k: [groups[k][s] for s in sorted(groups[k])] for k in sorted(groups, key=sort_key)}


# ---------------------------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1; None for a single value) of ``values`` (shape (n,))."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else None)


def bootstrap_interval(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (shape (n,), one value per seed).

    Draws ``resamples`` samples of n values with replacement (indices from ``np.random.default_rng(seed)``,
    shape (resamples, n)), takes each sample's mean and returns the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of those means (numpy's linear interpolation).
    """
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))  # (resamples, n)
    means = x[idx].mean(axis=1)  # (resamples,)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def describe(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = LEVEL
) -> Stats | None:
    """n, mean, std and bootstrap interval of one metric over seeds (None when there is no value)."""
    if not values:
        return None
    mean, std = mean_std(values)
    ci = bootstrap_interval(values, resamples, seed, level) if len(values) > 1 else None
    return Stats(n=len(values), mean=mean, std=std, ci=ci, values=tuple(float(v) for v in values))


def make_configuration(key: ConfigKey, runs: Sequence[Run], resamples: int, seed: int, level: float) -> Configuration:
    """A row from its runs: :func:`describe` per metric over the runs that have it, mean wall time."""
    stats = {
        metric: describe([r.values[metric] for r in runs if r.values[metric] is not None], resamples, seed, level)
        for metric in SUMMARY_KEYS
    }
    walls = [r.wall_time_s for r in runs if r.wall_time_s is not None]
    return Configuration(key, tuple(runs), stats, sum(walls) / len(walls) if walls else None)


def build_table(
    root: Path, resamples: int = RESAMPLES, bootstrap_seed: int = BOOTSTRAP_SEED, level: float = LEVEL
) -> Table:
    """Read every run under ``root`` and compute the table; ``TableError`` when there is nothing to table."""
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"{root} is not a folder")
    runs, skipped = collect_runs(root)
    if not runs:
        if not skipped:
            raise TableError(f"no run folder (a folder with summary.json) under {root}")
        raise TableError(f"no completed run under {root} ({plural(len(skipped), 'run folder')} skipped: "
                         f"{'; '.join(f'{s.path.name}: {s.reason}' for s in skipped[:3])}"
                         f"{' ...' if len(skipped) > 3 else ''})")
    configurations = tuple(
        make_configuration(key, group, resamples, bootstrap_seed, level) for key, group in group_runs(runs).items()
    )
    return Table(root, configurations, tuple(skipped), resamples, bootstrap_seed, level)


def notes(table: Table) -> list[str]:
    """One line per configuration whose runs differ in a setting outside the key (steps, decay, model), and
    one per resumed run (its wall time covers only the part after the resume)."""
    out = []
    for c in table.configurations:
        label = config_label(c.key, with_env=True)
        for name in SETTINGS:
            distinct = sorted({r.settings[name] for r in c.runs})
            if len(distinct) > 1:
                out.append(f"{label}: its runs differ in {name} ({', '.join(distinct)})")
        out += [f"{label}: seed {r.seed} was resumed at step {r.resumed_from_step}; its wall time covers only the "
                "part after the resume" for r in c.runs if r.resumed_from_step is not None]
    return out


def figure_metric(table: Table) -> str:
    """The heatmap's metric: held-out success when some run evaluated, else training success."""
    return HELDOUT if any(c.stats[HELDOUT] for c in table.configurations) else TRAINING


def curve_metric(table: Table) -> str:
    """The curves' metric: held-out success when some run logged an evaluation step, else training success."""
    evaluated = any(CURVE_KEYS[HELDOUT] in row for c in table.configurations for r in c.runs for row in r.rows)
    return HELDOUT if evaluated else TRAINING


# ---------------------------------------------------------------------------------------------- figures' data


def heatmap_cells(table: Table, metric: str) -> dict[str, list[tuple[str, str | None, float | None, int]]]:
    """Per env, the heatmap's cells ``(row label, insertion or None = the whole row, mean or None, n)`` in
    row order: ``GRPO (reference)`` first (one value spanning the row), then one row per feedback (and per
    method other than SERL, e.g. ``state_diff [SERL (reference)]``) with a cell per insertion present. n is
    the metric's seed count, or the configuration's run count when none of its runs has the metric."""
    panels: dict[str, list[tuple[str, str | None, float | None, int]]] = {}
    for c in table.configurations:
        stats = c.stats[metric]
        mean, n = (stats.mean, stats.n) if stats else (None, len(c.runs))
        if c.key.method == GRPO:
            row, column = f"{GRPO} (reference)", None
        elif c.key.feedback == "none":  # a baseline without a teacher: one value spanning the row
            row, column = f"{c.key.method} (baseline)", None
        else:
            row = c.key.feedback if c.key.method == "SERL" else f"{c.key.feedback} [{c.key.method}]"
            column = c.key.insertion
        panels.setdefault(c.key.env, []).append((row, column, mean, n))
    return panels


def heatmap_columns(table: Table) -> list[str]:
    """The heatmap's columns: step and anchor, then any other insertion present."""
    present = {c.key.insertion for c in table.configurations if c.key.feedback != "none"}
    return list(INSERTION_ORDER) + sorted(present - set(INSERTION_ORDER))


def curve_runs(table: Table) -> dict[str, list[list[dict]]]:
    """Per configuration label, its runs' metrics.jsonl rows (one list per seed), in table order."""
    with_env = len({c.key.env for c in table.configurations}) > 1
    return {config_label(c.key, with_env): [list(r.rows) for r in c.runs] for c in table.configurations}


# ---------------------------------------------------------------------------------------------- formatting


def percent(x: float) -> str:
    """A fraction in [0, 1] as a percentage with one decimal (0.1667 -> "16.7")."""
    return f"{100.0 * x:.1f}"


def format_stats(stats: Stats | None) -> str:
    """``mean ± std [low, high]`` in percent; ``–`` for a missing std and interval (n = 1) or metric."""
    if stats is None:
        return DASH
    std = percent(stats.std) if stats.std is not None else DASH
    ci = f"[{percent(stats.ci[0])}, {percent(stats.ci[1])}]" if stats.ci is not None else f"[{DASH}]"
    return f"{percent(stats.mean)} ± {std} {ci}"


def format_duration(seconds: float | None) -> str:
    """Wall time: seconds under 2 min, minutes under 2 h, else hours (``–`` when unknown)."""
    if seconds is None:
        return DASH
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plural(n: int, noun: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_seeds(c: Configuration) -> str:
    """``n (seed, seed, ...)``."""
    return f"{len(c.runs)} ({', '.join(map(str, c.seeds))})"


def _metric_cell(c: Configuration, metric: str) -> str:
    """The statistics cell, with its n when fewer runs than seeds have the metric."""
    stats = c.stats[metric]
    return format_stats(stats) + (f" (n = {stats.n})" if stats is not None and stats.n < len(c.runs) else "")


COLUMNS = ("env", "method", "feedback", "insertion", "seeds", "held-out success (%)", "training success (%)",
           "wall time per run")
REFERENCE_COLUMNS = ("benchmark", "method", "model", "games", "success rate (%)")


def measured_rows(table: Table) -> list[list[str]]:
    """The measured table's cells, one list of ``COLUMNS`` per configuration."""
    return [
        [c.key.env, c.key.method, c.key.feedback, c.key.insertion, format_seeds(c),
         _metric_cell(c, HELDOUT), _metric_cell(c, TRAINING), format_duration(c.wall_time_s)]
        for c in table.configurations
    ]


def reference_rows() -> list[list[str]]:
    """The published reference values' cells, one list of ``REFERENCE_COLUMNS`` per row."""
    return [[r["benchmark"], r["method"], r["model"], r["games"], f"{r['value']:.1f}"] for r in PAPER_REFERENCE]


def statistics_sentence(table: Table) -> str:
    return (
        f"Success rates in %: mean ± sample std (ddof 1) over seeds [{100 * table.level:g} % percentile-bootstrap "
        f"interval of the mean: {table.resamples:,} resamples of the seed values with replacement, numpy "
        f"generator seed {table.bootstrap_seed}]. `{DASH}`: std and interval need 2 seeds; held-out success needs "
        f"a run that evaluated (`eval_every` > 0); insertion `{DASH}`: GRPO, whose runs at either insertion pool "
        "(without a teacher the setting does nothing). Held-out success is each run's last evaluation "
        "(`last/eval/success_rate`), training success the run's mean rollout success (`mean/episode/success_rate`)."
    )


REFERENCE_NOTE = (
    f"Published in *{PAPER}* for SERL with Qwen2.5-7B-Instruct on the official games. "
    "These numbers were NOT measured by this table or by any run under this folder; they are the paper's, "
    "shown for orientation only."
)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
    ]


def markdown_tables(table: Table) -> str:
    """The measured table (with its notes) and, in its own section, the published reference values."""
    n_runs = sum(len(c.runs) for c in table.configurations)
    lines = [
        "# Ablation table (measured)",
        "",
        f"{plural(n_runs, 'completed run')} under `{table.root}`, "
        f"{plural(len(table.configurations), 'configuration')}, {plural(len(table.skipped), 'run folder')} skipped. "
        f"{statistics_sentence(table)}",
        "",
        *_md_table(COLUMNS, measured_rows(table)),
    ]
    extra = notes(table)
    if extra:
        lines += ["", "Notes:", "", *(f"- {n}" for n in extra)]
    lines += ["", "## Published reference values (paper, not measured here)", "", REFERENCE_NOTE, "",
              *_md_table(REFERENCE_COLUMNS, reference_rows())]
    return "\n".join(lines)


def to_markdown(table: Table, command: str) -> str:
    """``table.md``: :func:`markdown_tables`, then the skipped run folders and the command."""
    lines = [markdown_tables(table), "", "## Skipped run folders", ""]
    lines += [f"- `{s.path}`: {s.reason}" for s in table.skipped] or ["none"]
    lines += ["", "## Command", "", f"    {command}", ""]
    return "\n".join(lines)


CSV_FIELDS = (
    "source", "env", "method", "feedback", "insertion", "seeds", "seed_list",
    *(f"{prefix}_{stat}" for prefix in ("heldout", "training") for stat in ("n", "mean", "std", "ci_low", "ci_high")),
    "wall_time_s_mean",
)
CSV_PREFIX = {HELDOUT: "heldout", TRAINING: "training"}


def _stats_fields(prefix: str, stats: Stats | None) -> dict[str, Any]:
    if stats is None:
        return {f"{prefix}_{s}": "" for s in ("n", "mean", "std", "ci_low", "ci_high")}
    return {
        f"{prefix}_n": stats.n,
        f"{prefix}_mean": repr(stats.mean),
        f"{prefix}_std": repr(stats.std) if stats.std is not None else "",
        f"{prefix}_ci_low": repr(stats.ci[0]) if stats.ci else "",
        f"{prefix}_ci_high": repr(stats.ci[1]) if stats.ci else "",
    }


def to_csv(table: Table) -> str:
    """``table.csv``: one row per configuration, raw fractions in [0, 1] (empty: not available), source=measured."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for c in table.configurations:
        row: dict[str, Any] = {"source": "measured", **c.key._asdict(), "seeds": len(c.runs),
                               "seed_list": " ".join(map(str, c.seeds)),
                               "wall_time_s_mean": repr(c.wall_time_s) if c.wall_time_s is not None else ""}
        for metric, prefix in CSV_PREFIX.items():
            row.update(_stats_fields(prefix, c.stats[metric]))
        writer.writerow(row)
    return buf.getvalue()


def reference_csv() -> str:
    """``reference.csv``: the paper's published numbers (source=paper), kept out of ``table.csv``."""
    buf = io.StringIO()
    fields = ("source", "benchmark", "method", "model", "games", "metric", "value", "paper")
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in PAPER_REFERENCE:
        writer.writerow({"source": "paper", **r, "paper": PAPER})
    return buf.getvalue()


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", DASH: "--"}


def latex_escape(text: str) -> str:
    """Text for a LaTeX cell: special characters escaped, ``±`` as ``$\\pm$``, ``–`` as ``--``."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_tabular(header: Sequence[str], rows: Sequence[Sequence[str]], align: str, title: str = "") -> list[str]:
    """A booktabs ``tabular`` of plain-text ``header`` and ``rows`` (escaped here), under an optional title row."""
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    if title:
        lines += [rf"\multicolumn{{{len(header)}}}{{l}}{{{latex_escape(title)}}} \\", r"\midrule"]
    lines += [" & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    return lines + [r"\bottomrule", r"\end{tabular}"]


def to_latex(table: Table, command: str) -> str:
    """``table.tex``: the measured ``tabular`` and, separately, the published-reference ``tabular`` (booktabs)."""
    lines = [
        f"% Ablation table (measured): {plural(len(table.configurations), 'configuration')} under {table.root}",
        f"% made by: {command}",
        "% needs \\usepackage{booktabs}; success in %: mean +- sample std "
        f"[{100 * table.level:g} % bootstrap interval of the mean over seeds]",
        *_latex_tabular(COLUMNS, measured_rows(table), "lllllllr"),
        "",
        "% Published reference values: the paper's SERL numbers, NOT measured by this table",
        *_latex_tabular(REFERENCE_COLUMNS, reference_rows(), "llllr",
                        title="Published reference values (paper; not measured by this table)"),
        "",
    ]
    return "\n".join(lines)


def _stats_json(stats: Stats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {"n": stats.n, "mean": stats.mean, "std": stats.std,
            "ci_low": stats.ci[0] if stats.ci else None, "ci_high": stats.ci[1] if stats.ci else None}


def to_json(table: Table, command: str, files: Mapping[str, Path]) -> dict[str, Any]:
    """``table.json``: configurations with per-seed values and statistics, skipped runs, reference, command."""
    return {
        "root": str(table.root),
        "command": command,
        "bootstrap": {"resamples": table.resamples, "seed": table.bootstrap_seed, "level": table.level,
                      "method": "percentile bootstrap of the mean over seeds"},
        "metrics": {m: {"summary_key": SUMMARY_KEYS[m], "curve_key": CURVE_KEYS[m]} for m in SUMMARY_KEYS},
        "heatmap_metric": figure_metric(table),
        "curves_metric": curve_metric(table),
        "configurations": [
            {
                **c.key._asdict(),
                "seeds": c.seeds,
                "runs": [{"path": str(r.path), "seed": r.seed, **r.values, "wall_time_s": r.wall_time_s,
                          **r.settings} for r in c.runs],
                "stats": {m: _stats_json(c.stats[m]) for m in SUMMARY_KEYS},
                "wall_time_s_mean": c.wall_time_s,
            }
            for c in table.configurations
        ],
        "notes": notes(table),
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in table.skipped],
        "reference": {"source": "paper", "paper": PAPER, "note": REFERENCE_NOTE, "rows": list(PAPER_REFERENCE)},
        "files": {name: str(p) for name, p in files.items()},
    }


def write_tables(table: Table, out: Path, command: str) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv``, ``reference.csv`` and ``table.tex`` into ``out``; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {"table.md": to_markdown(table, command), "table.csv": to_csv(table),
             "reference.csv": reference_csv(), "table.tex": to_latex(table, command)}
    for name, text in texts.items():
        (out / name).write_text(text)
    return {name: out / name for name in texts}


def write_json(table: Table, out: Path, command: str, files: Mapping[str, Path]) -> Path:
    """Write ``table.json`` (listing ``files`` and itself); returns its path."""
    path = out / "table.json"
    record = to_json(table, command, {**files, "table.json": path})
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path
