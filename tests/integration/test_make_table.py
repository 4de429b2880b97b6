"""scripts/make_table.py end to end on a folder of fake finished runs: exit codes, every output file, valid
PNGs, the printed table and file list, the one-line error, and the optional offline W&B run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import ROOT
from tests.unit.test_table import write_fake_runs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OUTPUTS = ("table.md", "table.csv", "reference.csv", "table.tex", "heatmap.png", "curves.png", "table.json")


def _make_table(*args, **env):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_table.py"), *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **env},
    )


def test_make_table_writes_every_output_and_prints_the_table(tmp_path):
    write_fake_runs(tmp_path)
    out = _make_table(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for name in OUTPUTS:
        path = tmp_path / name  # --out defaults to the root
        assert path.is_file() and path.stat().st_size > 0, name
        assert f"{name}".ljust(14) + str(path) in out.stdout  # the printed file list names it
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE
    lines = out.stdout.splitlines()
    first = lines.index("| env | method | feedback | insertion | seeds | held-out success (%) | training success (%) "
                        "| wall time per run |")
    assert lines[first + 2] == (
        "| alfworld | GRPO | none | – | 2 (0, 1) | 37.5 ± 17.7 [25.0, 50.0] | 25.0 ± 17.7 [12.5, 37.5] | 12.5 min |"
    )
    assert "## Published reference values (paper, not measured here)" in out.stdout
    assert f"{tmp_path / 'other' / 'crashed-s3'}: unfinished" in out.stdout  # the skipped run is listed
    assert "W&B" not in out.stdout and not (tmp_path / "wandb").exists()  # no --wandb: nothing touches W&B
    record = json.loads((tmp_path / "table.json").read_text())
    assert record["command"] == f"python scripts/make_table.py {tmp_path}"
    assert set(record["files"]) == set(OUTPUTS)
    assert [c["method"] for c in record["configurations"]] == ["GRPO", "SERL", "SERL"]


def test_empty_root_is_a_one_line_error_with_exit_code_2(tmp_path):
    out = _make_table(tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    error = f"make_table: no run folder (a folder with summary.json) under {tmp_path}"
    assert out.stderr.strip().splitlines() == [error]


def test_wandb_flag_logs_an_offline_table_run(tmp_path):
    write_fake_runs(tmp_path / "runs")
    out = _make_table(tmp_path / "runs", "--out", tmp_path / "report", "--wandb", WANDB_MODE="offline")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "W&B run" in out.stdout and "(mode offline)" in out.stdout
    (run,) = (tmp_path / "report" / "wandb").glob("offline-run-*")
    assert (run / f"run-{run.name.split('-')[-1]}.wandb").is_file()
    assert all((tmp_path / "report" / name).is_file() for name in OUTPUTS)
