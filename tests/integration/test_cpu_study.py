"""scripts/cpu_study.py end to end on the tiny model: both methods run through the real entry point, the
curves and table are written, and a second call skips the finished runs."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT, TINY_RUN

TINY = [o for o in TINY_RUN if not o.startswith("logger=")] + [
    "logger=jsonl", "steps=1", "env.eval_pool=1", "eval.max_turns=2", "rollout.max_new_tokens=8",
]


def _study(out, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cpu_study.py"), "--out", str(out), "--seeds", "0",
         "--parallel", "1", "--threads", "1", *args, "--", *TINY],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


def test_study_runs_both_methods_and_writes_curves_and_table(tmp_path):
    out = _study(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for slug, feedback in (("grpo", "none"), ("serl", "state_diff")):
        run = tmp_path / f"{slug}-s0"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["completed"] and summary["choices"]["feedback"] == feedback
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == [0, 1]  # the warm start's evaluation, then the one training step (evaluated too)
    assert (tmp_path / "study.png").stat().st_size > 0
    table = (tmp_path / "study.md").read_text()
    assert "| GRPO | 1 |" in table and "| SERL (state_diff, anchor) | 1 |" in table
    record = json.loads((tmp_path / "study.json").read_text())
    assert set(record) == {"GRPO", "SERL (state_diff, anchor)"}
    assert all(len(r["start"]) == len(r["end"]) == 1 for r in record.values())

    again = _study(tmp_path)
    assert again.returncode == 0 and "2 already finished, 0 to go" in again.stdout
