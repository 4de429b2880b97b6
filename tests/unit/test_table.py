"""serl/table.py on a hand-written folder of fake runs: discovery, GRPO pooling, statistics checked by hand and
against a slow bootstrap loop, the Markdown/CSV/LaTeX/JSON outputs, and the errors."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from serl.table import (
    HELDOUT,
    TRAINING,
    TableError,
    bootstrap_interval,
    build_table,
    config_label,
    curve_metric,
    figure_metric,
    heatmap_cells,
    heatmap_columns,
    mean_std,
    reference_csv,
    to_csv,
    to_json,
    to_latex,
    to_markdown,
)

COMMAND = "python scripts/make_table.py <root>"


def write_run(
    root: Path,
    name: str,
    *,
    seed: int,
    feedback: str = "state_diff",
    insertion: str = "anchor",
    algorithm: str = "serl",
    training: float = 0.0,
    heldout: float | None = None,
    wall: float | None = 600.0,
    completed: bool = True,
    steps: int = 3,
) -> Path:
    """A run folder as scripts/train.py leaves it: config.yaml, summary.json, metrics.jsonl (one row per step;
    with ``heldout``, evaluations at step 0 (0.0) and at the last step (``heldout``))."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"env:\n  name: alfworld\n  max_turns: 6\nalgorithm:\n  name: {algorithm}\n  teacher: true\n"
        f"feedback:\n  name: {feedback}\ninsertion:\n  name: {insertion}\ndecay:\n  name: linear\n"
        f"model:\n  name: tiny\nseed: {seed}\nsteps: {steps}\nrun_name: {name}\n"
    )
    summary = {"completed": completed, "mean/episode/success_rate": training, "steps_completed": steps}
    if heldout is not None:
        summary["last/eval/success_rate"] = heldout
    if wall is not None:
        summary["wall_time_s"] = wall
    (run / "summary.json").write_text(json.dumps(summary))
    rows = [{"step": s, "episode/success_rate": training} for s in range(1, steps + 1)]
    if heldout is not None:
        rows = [{"step": 0, "eval/success_rate": 0.0}] + rows
        rows[-1]["eval/success_rate"] = heldout
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def write_fake_runs(root: Path) -> Path:
    """Seven run folders: GRPO at step (seed 0) and at anchor (seed 1, via algorithm=grpo), which pool into one
    configuration; SERL state_diff/anchor seeds 0-2; SERL immediate/step seed 0 (no evaluation); one unfinished
    run; plus an eval-only folder deeper down. Returns ``root``."""
    write_run(root, "sweep/grpo-step-s0", seed=0, feedback="none", insertion="step", heldout=0.25, training=0.125,
              wall=600.0)
    write_run(root, "sweep/grpo-anchor-s1", seed=1, algorithm="grpo", feedback="immediate", insertion="anchor",
              heldout=0.5, training=0.375, wall=900.0)
    for seed, (heldout, training, wall) in enumerate([(0.25, 0.1, 1200.0), (0.5, 0.2, 1500.0), (0.5, 0.3, 1800.0)]):
        write_run(root, f"sweep/sd-anchor-s{seed}", seed=seed, heldout=heldout, training=training, wall=wall)
    write_run(root, "other/imm-step-s0", seed=0, feedback="immediate", insertion="step", training=0.5, wall=60.0)
    write_run(root, "other/crashed-s3", seed=3, training=0.9, completed=False)
    return root


@pytest.fixture
def table(tmp_path):
    return build_table(write_fake_runs(tmp_path))


def _config(table, method, feedback):
    (c,) = [c for c in table.configurations if c.key.method == method and c.key.feedback == feedback]
    return c


# ---------------------------------------------------------------------------------------------- statistics


def slow_bootstrap(values, resamples=10_000, seed=0, level=0.95):
    """Reference: one resample at a time, one seed index at a time, quantiles by hand (numpy's "linear")."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = []
    for _ in range(resamples):
        total = 0.0
        for _ in range(n):
            total += values[int(rng.integers(0, n))]
        means.append(total / n)
    means.sort()

    def quantile(q):  # position q * (B - 1) between the order statistics around it
        pos = q * (len(means) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (means[hi] - means[lo]) * (pos - lo)

    tail = (1 - level) / 2
    return quantile(tail), quantile(1 - tail)


@pytest.mark.parametrize(
    "values,seed,level",
    [([0.0, 0.25, 0.5, 0.75, 1.0], 0, 0.95), ([0.1, 0.4, 0.4, 0.9], 3, 0.95), ([0.2, 0.7, 0.3], 0, 0.9)],
)
def test_vectorised_bootstrap_equals_the_slow_loop(values, seed, level):
    fast = bootstrap_interval(values, resamples=10_000, seed=seed, level=level)
    assert fast == pytest.approx(slow_bootstrap(values, 10_000, seed, level), rel=1e-12, abs=1e-12)
    assert min(values) <= fast[0] <= fast[1] <= max(values)
    assert fast[0] < float(np.mean(values)) < fast[1]  # n >= 3 distinct values: a real interval around the mean
    assert bootstrap_interval(values, seed=seed, level=level) == fast  # deterministic for a fixed seed


def test_bootstrap_of_two_or_three_seeds_spans_min_to_max():
    # n = 2: a resample's mean is the min with probability 1/4, so ~2,500 of the 10,000 sorted means equal the
    # min and the 2.5 % quantile (position 0.025 * 9,999 = 249.975) is the min; likewise the max.
    assert bootstrap_interval([0.25, 0.5]) == (0.25, 0.5)
    # n = 3: all three draws hit the min with probability 1/27 = 3.7 % > 2.5 % (~370 of 10,000 means).
    assert bootstrap_interval([0.25, 0.5, 0.5]) == (0.25, 0.5)
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_mean_and_sample_std_by_hand():
    # [0.25, 0.5]: mean 0.375; deviations ±0.125, squares 0.015625 each, sum 0.03125 / (2 - 1) -> std sqrt(0.03125)
    assert mean_std([0.25, 0.5]) == pytest.approx((0.375, math.sqrt(0.03125)))
    # [0.25, 0.5, 0.5]: mean 1.25 / 3; deviations -1/6, 1/12, 1/12; squares 1/36 + 1/144 + 1/144 = 6/144 = 1/24;
    # / (3 - 1) = 1/48 -> std sqrt(1/48) = 0.1443
    assert mean_std([0.25, 0.5, 0.5]) == pytest.approx((1.25 / 3, math.sqrt(1 / 48)))
    assert mean_std([0.5]) == (0.5, None)


# ---------------------------------------------------------------------------------------------- grouping


def test_runs_are_grouped_and_grpo_pools_its_insertions(table):
    keys = [tuple(c.key) for c in table.configurations]
    assert keys == [
        ("alfworld", "GRPO", "none", "–"),  # GRPO first, both of its insertions in one row
        ("alfworld", "SERL", "immediate", "step"),
        ("alfworld", "SERL", "state_diff", "anchor"),
    ]
    assert _config(table, "GRPO", "none").seeds == [0, 1]
    assert _config(table, "SERL", "state_diff").seeds == [0, 1, 2]
    assert [(s.path.name, s.reason) for s in table.skipped] == [
        ("crashed-s3", "unfinished: summary.json has completed=false")
    ]


def test_statistics_per_configuration_by_hand(table):
    grpo = _config(table, "GRPO", "none")
    h, t = grpo.stats[HELDOUT], grpo.stats[TRAINING]
    # held-out [0.25, 0.5]: mean 0.375, std sqrt(0.03125) = 0.17678; n = 2 -> interval [min, max]
    assert (h.n, h.mean, h.std, h.ci) == (2, 0.375, pytest.approx(math.sqrt(0.03125)), (0.25, 0.5))
    # training [0.125, 0.375]: mean 0.25, deviations ±0.125 -> std sqrt(0.03125)
    assert (t.n, t.mean, t.std, t.ci) == (2, 0.25, pytest.approx(math.sqrt(0.03125)), (0.125, 0.375))
    assert grpo.wall_time_s == 750.0  # (600 + 900) / 2

    sd = _config(table, "SERL", "state_diff")
    h, t = sd.stats[HELDOUT], sd.stats[TRAINING]
    assert (h.n, h.mean, h.std) == (3, pytest.approx(1.25 / 3), pytest.approx(math.sqrt(1 / 48)))
    assert h.ci == (0.25, 0.5)
    # training [0.1, 0.2, 0.3]: mean 0.2; deviations -0.1, 0, 0.1; squares 0.01 + 0 + 0.01 = 0.02; / 2 -> std 0.1
    assert (t.n, t.mean, t.std) == (3, pytest.approx(0.2), pytest.approx(0.1))
    assert t.ci == pytest.approx(slow_bootstrap([0.1, 0.2, 0.3]), abs=1e-12)
    assert 0.1 - 1e-12 <= t.ci[0] <= t.ci[1] <= 0.3 + 1e-12
    assert sd.wall_time_s == 1500.0  # (1200 + 1500 + 1800) / 3

    imm = _config(table, "SERL", "immediate")
    assert imm.stats[HELDOUT] is None  # it never evaluated
    assert (imm.stats[TRAINING].n, imm.stats[TRAINING].std, imm.stats[TRAINING].ci) == (1, None, None)


def test_duplicate_seed_is_an_error_naming_both_folders(tmp_path):
    a = write_run(tmp_path, "a-s0", seed=0, training=0.1)
    b = write_run(tmp_path, "b-s0", seed=0, training=0.2)
    with pytest.raises(TableError, match="seed 0") as e:
        build_table(tmp_path)
    assert str(a) in str(e.value) and str(b) in str(e.value)


def test_grpo_at_both_insertions_with_one_seed_is_a_duplicate(tmp_path):
    write_run(tmp_path, "g-step", seed=0, feedback="none", insertion="step")
    write_run(tmp_path, "g-anchor", seed=0, feedback="none", insertion="anchor")
    with pytest.raises(TableError, match="GRPO pools its insertion settings"):
        build_table(tmp_path)


def test_no_run_and_only_unfinished_runs_are_errors_naming_the_root(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(TableError, match=f"no run folder .* under {tmp_path / 'empty'}$"):
        build_table(tmp_path / "empty")
    write_run(tmp_path, "only/crashed", seed=0, completed=False)
    with pytest.raises(TableError, match=f"no completed run under {tmp_path / 'only'}"):
        build_table(tmp_path / "only")


def test_malformed_and_foreign_folders_are_skipped_with_reasons(tmp_path):
    write_run(tmp_path, "good", seed=0, training=0.5)
    (write_run(tmp_path, "bad-json", seed=1) / "summary.json").write_text('{"completed": tru')
    (write_run(tmp_path, "bad-yaml", seed=2) / "config.yaml").write_text("env: [unclosed\n")
    eval_run = tmp_path / "evals" / "eval-s0"  # scripts/eval.py's folder: no algorithm/feedback/insertion
    eval_run.mkdir(parents=True)
    (eval_run / "config.yaml").write_text("env:\n  name: alfworld\nseed: 0\n")
    (eval_run / "summary.json").write_text("{}")
    killed = tmp_path / "killed"  # killed before its summary: config.yaml and metrics.jsonl only
    killed.mkdir()
    (killed / "config.yaml").write_text("seed: 0\n")
    (killed / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "episode/succ')
    table = build_table(tmp_path)
    assert [c.seeds for c in table.configurations] == [[0]]
    reasons = {s.path.name: s.reason for s in table.skipped}
    assert reasons["bad-json"].startswith("summary.json is not valid JSON")
    assert reasons["bad-yaml"].startswith("config.yaml is not valid YAML")
    assert reasons["eval-s0"] == (
        "not a training run: config.yaml has no algorithm.name, feedback.name, insertion.name"
    )
    assert reasons["killed"] == "unfinished: no summary.json (still running, or killed)"


# ---------------------------------------------------------------------------------------------- outputs


def _measured_lines(md: str) -> list[str]:
    measured = md.split("## Published reference values")[0]
    return [line for line in measured.splitlines() if line.startswith("| alfworld")]


def test_markdown_rows_and_separate_reference_block(table):
    md = to_markdown(table, COMMAND)
    assert _measured_lines(md) == [
        "| alfworld | GRPO | none | – | 2 (0, 1) | 37.5 ± 17.7 [25.0, 50.0] | 25.0 ± 17.7 [12.5, 37.5] | 12.5 min |",
        "| alfworld | SERL | immediate | step | 1 (0) | – | 50.0 ± – [–] | 60 s |",
        "| alfworld | SERL | state_diff | anchor | 3 (0, 1, 2) | 41.7 ± 14.4 [25.0, 50.0] | 20.0 ± 10.0 [10.0, 30.0] "
        "| 25.0 min |",
    ]
    measured, reference = md.split("## Published reference values (paper, not measured here)")
    assert "90.0" not in measured and "80.1" not in measured and "Qwen" not in measured
    assert "were NOT measured" in reference
    assert "| ALFWorld | SERL | Qwen2.5-7B-Instruct | official | 90.0 |" in reference
    assert "| WebShop | SERL | Qwen2.5-7B-Instruct | official | 80.1 |" in reference
    assert "crashed-s3`: unfinished" in reference  # the skipped list follows the reference section
    assert COMMAND in md


def test_csv_has_raw_fractions_and_measured_source(table):
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["method"] for r in rows] == ["GRPO", "SERL", "SERL"]
    assert {r["source"] for r in rows} == {"measured"}
    grpo, imm, sd = rows
    assert (float(grpo["heldout_mean"]), float(grpo["heldout_ci_low"]), grpo["seed_list"]) == (0.375, 0.25, "0 1")
    assert float(sd["training_std"]) == pytest.approx(0.1)
    assert (imm["heldout_n"], imm["heldout_mean"], imm["training_std"], imm["training_ci_low"]) == ("", "", "", "")
    assert float(imm["wall_time_s_mean"]) == 60.0
    reference = list(csv.DictReader(io.StringIO(reference_csv())))
    assert [(r["source"], r["benchmark"], float(r["value"])) for r in reference] == [
        ("paper", "ALFWorld", 90.0), ("paper", "WebShop", 80.1)
    ]


def test_latex_is_booktabs_escaped_with_a_separate_reference_tabular(table):
    tex = to_latex(table, COMMAND)
    measured, reference = tex.split("% Published reference values")
    assert measured.count(r"\begin{tabular}") == 1 and reference.count(r"\begin{tabular}") == 1
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in measured and rule in reference
    body = [line for line in measured.splitlines() if line.startswith("alfworld")]
    assert body[0] == r"alfworld & GRPO & none & -- & 2 (0, 1) & 37.5 $\pm$ 17.7 [25.0, 50.0] & " \
                      r"25.0 $\pm$ 17.7 [12.5, 37.5] & 12.5 min \\"
    assert r"state\_diff" in body[2] and "state_diff" not in tex.replace(r"state\_diff", "")
    assert r"held-out success (\%)" in measured
    assert "90.0" not in measured and "90.0" in reference and "not measured by this table" in reference


def test_json_holds_per_seed_values_statistics_and_skipped(table, tmp_path):
    record = to_json(table, COMMAND, {"table.md": tmp_path / "table.md"})
    json.dumps(record)  # serialisable
    grpo = record["configurations"][0]
    assert grpo["method"] == "GRPO" and grpo["seeds"] == [0, 1]
    assert [(r["seed"], r[HELDOUT], r[TRAINING]) for r in grpo["runs"]] == [(0, 0.25, 0.125), (1, 0.5, 0.375)]
    assert grpo["stats"][HELDOUT] == {"n": 2, "mean": 0.375, "std": pytest.approx(math.sqrt(0.03125)),
                                      "ci_low": 0.25, "ci_high": 0.5}
    assert record["skipped"] == [{"path": str(tmp_path / "other" / "crashed-s3"),
                                  "reason": "unfinished: summary.json has completed=false"}]
    assert record["reference"]["source"] == "paper" and record["command"] == COMMAND
    assert record["bootstrap"]["resamples"] == 10_000


def test_figure_data_and_the_training_fallback(table, tmp_path):
    assert figure_metric(table) == curve_metric(table) == HELDOUT
    cells = heatmap_cells(table, HELDOUT)["alfworld"]
    assert cells == [("GRPO (reference)", None, 0.375, 2), ("immediate", "step", None, 1),
                     ("state_diff", "anchor", pytest.approx(1.25 / 3), 3)]
    write_run(tmp_path / "noeval", "s0", seed=0, training=0.2)
    no_eval = build_table(tmp_path / "noeval")
    assert figure_metric(no_eval) == curve_metric(no_eval) == TRAINING


def test_notes_flag_mixed_settings_and_resumed_runs(tmp_path):
    write_run(tmp_path, "s0", seed=0, steps=3)
    resumed = write_run(tmp_path, "s1", seed=1, steps=5)
    summary = json.loads((resumed / "summary.json").read_text())
    (resumed / "summary.json").write_text(json.dumps({**summary, "resumed_from_step": 2}))
    md = to_markdown(build_table(tmp_path), COMMAND)
    assert "- alfworld: SERL state_diff / anchor: its runs differ in steps (3, 5)" in md
    assert "- alfworld: SERL state_diff / anchor: seed 1 was resumed at step 2; its wall time covers only" in md


def test_baselines_are_rows_of_their_own_next_to_grpo(tmp_path):
    # RLOO without a teacher at both insertions pools into one row (its insertion does nothing); GiGPO with a
    # teacher (SERL on GiGPO) and self-distillation are rows per feedback / insertion like SERL's
    write_run(tmp_path, "b/grpo-s0", seed=0, algorithm="grpo", feedback="none", insertion="step")
    write_run(tmp_path, "b/rloo-step-s0", seed=0, algorithm="rloo", feedback="none", insertion="step", training=0.2)
    write_run(tmp_path, "b/rloo-anchor-s1", seed=1, algorithm="rloo", feedback="none", insertion="anchor", training=0.4)
    write_run(tmp_path, "b/gigpo-sd-s0", seed=0, algorithm="gigpo", feedback="state_diff", insertion="anchor")
    write_run(tmp_path, "b/distill-s0", seed=0, algorithm="self_distill", feedback="state_diff", insertion="anchor")
    write_run(tmp_path, "b/serl-none-s1", seed=1, algorithm="serl", feedback="none", insertion="anchor")  # = GRPO
    t = build_table(tmp_path)
    assert [tuple(c.key) for c in t.configurations] == [
        ("alfworld", "GRPO", "none", "–"),
        ("alfworld", "RLOO", "none", "–"),
        ("alfworld", "GiGPO", "state_diff", "anchor"),
        ("alfworld", "Self-distillation", "state_diff", "anchor"),
    ]
    assert _config(t, "GRPO", "none").seeds == [0, 1]  # serl with feedback=none is plain GRPO
    rloo = _config(t, "RLOO", "none")
    assert rloo.seeds == [0, 1] and config_label(rloo.key) == "RLOO"
    rows = [(row, column) for row, column, _, _ in heatmap_cells(t, TRAINING)["alfworld"]]
    assert rows[:2] == [("GRPO (reference)", None), ("RLOO (baseline)", None)]
    assert ("state_diff [GiGPO]", "anchor") in rows and heatmap_columns(t) == ["step", "anchor"]
