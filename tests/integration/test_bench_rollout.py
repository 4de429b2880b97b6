"""scripts/bench_rollout.py: the benchmark runs end to end with the tiny model on the HF backend and writes
both rates and their ratio (the vLLM backend is exercised by running the script itself)."""

from __future__ import annotations

import importlib.util
import json

from tests.helpers import ROOT


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_rollout", ROOT / "scripts" / "bench_rollout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_rollout_hf_tiny(tmp_path):
    bench = _bench_module()
    out = tmp_path / "bench.json"
    lines: list[str] = []
    record = bench.main(
        [
            "--model", "tiny", "--backends", "hf", "--games", "1", "--group-size", "2",
            "--max-new-tokens", "6", "--repeats", "2", "--out", str(out),
            "env.train_pool=2", "env.eval_pool=1",
        ],
        log=lines.append,
    )
    saved = json.loads(out.read_text())
    assert saved["backends"].keys() == {"hf"}
    hf = saved["backends"]["hf"]
    for path in ("serl", "raw"):
        assert hf[path]["tokens_per_s"] > 0
        assert len(hf[path]["runs"]) == 2
        assert all(0 < r["tokens"] <= 2 * 6 for r in hf[path]["runs"])
    assert abs(hf["ratio_serl_over_raw"] - hf["serl"]["tokens_per_s"] / hf["raw"]["tokens_per_s"]) < 1e-9
    assert saved["prompts"]["n"] == 2 and saved["settings"]["dtype"] == "float32"
    assert record["out"] == str(out)
    assert any(line.startswith("hf ") for line in lines)  # the table row


def test_cpu_spec():
    bench = _bench_module()
    assert bench._cpu_spec([0, 1]) == "0-1"
    assert bench._cpu_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert bench._cpu_spec([3]) == "3"
