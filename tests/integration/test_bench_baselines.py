"""scripts/bench_baselines.py end to end on the tiny model: one shared rollout, every algorithm's post-rollout
step timed, ratios to GRPO written (a slow test: eight trainers are built)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.helpers import ROOT, TINY_RUN


@pytest.mark.slow
def test_bench_baselines_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_baselines", ROOT / "scripts" / "bench_baselines.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    tiny = [o for o in TINY_RUN if not o.startswith(("env.train_pool=", "env.eval_pool="))]
    record = bench.main(["--out", str(out), "--", *tiny, "env.train_pool=2", "env.eval_pool=1"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert set(record["results"]) == set(bench.ALGORITHMS)
    assert record["results"]["grpo"]["ratio_to_grpo"] == 1.0
    for name, r in record["results"].items():
        assert math.isfinite(r["step_s"]) and r["step_s"] > 0 and r["ratio_to_grpo"] > 0, name
    assert record["rollout"]["step_samples"] > 0
