"""scripts/bench_learner.py: the benchmark runs end to end with the tiny model and writes finite positive
rates, ratios and peak RSS; its bare-torch floor computes the same gradient as serl's Learner; the
``--compare-presets`` mode (two child processes, tens of seconds) is a slow test. One torch thread: the
tiny model's small ops are fastest that way and suffer least when other jobs share the CPUs."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from tests.helpers import ROOT


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_learner", ROOT / "scripts" / "bench_learner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _check_memory(mem: dict) -> None:
    for key in ("rss_before_update_mib", "peak_rss_update_mib", "process_peak_rss_mib"):
        assert _positive(mem[key]), (key, mem)
    assert mem["peak_rss_update_mib"] >= mem["rss_before_update_mib"] * 0.99


def test_bench_learner_tiny(tmp_path):
    bench = _bench_module()
    out = tmp_path / "bench.json"
    lines: list[str] = []
    argv = ["--model", "tiny", "--rows", "3", "--repeats", "1", "--micro-batch-size", "2", "--threads", "1", "--json", str(out)]
    record = bench.main(argv, log=lines.append)
    saved = json.loads(out.read_text())
    assert saved["contenders"].keys() == set(bench.CONTENDERS)
    for name, c in saved["contenders"].items():
        assert _positive(c["tokens"]) and _positive(c["seconds"]) and _positive(c["tokens_per_s"]), (name, c)
        assert len(c["runs_s"]) == 1 and _positive(c["warmup_s"])
    assert saved["contenders"]["serl"]["tokens"] == saved["contenders"]["floor"]["tokens"] == saved["batch"]["tokens"]
    # the teacher forwards its longer prompts: anchor contexts > step contexts > the student's prompts
    assert saved["contenders"]["teacher_anchor"]["tokens"] > saved["contenders"]["teacher_step"]["tokens"]
    assert saved["contenders"]["teacher_step"]["tokens"] > saved["batch"]["tokens"]
    assert len(saved["ratios"]) == 6 and all(_positive(v) for v in saved["ratios"].values())
    r = saved["ratios"]
    c = saved["contenders"]
    assert abs(r["serl_over_floor_tokens_per_s"] - c["serl"]["tokens_per_s"] / c["floor"]["tokens_per_s"]) < 1e-9
    _check_memory(saved["memory"])
    assert saved["batch"]["rows"] == 3 and saved["settings"]["micro_batch_size"] == 2
    assert saved["settings"]["learner"]["temperature"] > 0
    assert record["json"] == str(out)
    assert lines[0] == "python scripts/bench_learner.py " + " ".join(argv)
    assert any(line.startswith("serl / floor") for line in lines)
    assert any("teacher_anchor" in line and "│" in line for line in lines)  # the rich table row


def test_bench_learner_only_lora_tiny(tmp_path):
    """The 'after' preset's setup (bfloat16, LoRA, gradient checkpointing), learner only, in this process."""
    bench = _bench_module()
    out = tmp_path / "only.json"
    bench.main(
        ["--learner-only", "--model", "tiny", "--rows", "2", "--repeats", "1", "--threads", "1", "--dtype", "bfloat16",
         "--lora", "--gradient-checkpointing", "--json", str(out)],
        log=lambda _: None,
    )
    saved = json.loads(out.read_text())
    assert saved["contenders"].keys() == {"serl"}
    assert _positive(saved["contenders"]["serl"]["tokens_per_s"])
    assert 0 < saved["params"]["trainable"] < saved["params"]["total"]
    assert saved["settings"]["lora"]["r"] == 16
    _check_memory(saved["memory"])


def test_floor_computes_the_learners_gradient():
    """One mini-batch: after ``Learner.update`` and after ``FloorUpdate.update`` from the same weights, the
    clipped gradients left on the parameters agree (same objective, same rows, same scaling)."""
    bench = _bench_module()
    args = bench.parse_args(
        ["--model", "tiny", "--rows", "5", "--micro-batch-size", "2", "--entropy-coef", "0.01", "--threads", "1"]
    )
    env = bench.setup(args, log=lambda _: None)
    model = env["model"]
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    env["learner"].update(env["batch"], 0.0)
    serl_grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.load_state_dict(start)
    floor = bench.FloorUpdate(model, env["steps"], env["advantages"], env["pad_id"], env["learner_settings"])
    floor.update()
    floor_grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    assert serl_grads.keys() == floor_grads.keys() and serl_grads
    for n in serl_grads:
        torch.testing.assert_close(floor_grads[n], serl_grads[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.slow
def test_compare_presets_tiny(tmp_path):
    bench = _bench_module()
    out = tmp_path / "presets.json"
    lines: list[str] = []
    argv = ["--compare-presets", "--model", "tiny", "--rows", "2", "--repeats", "1", "--threads", "1", "--json", str(out)]
    bench.main(argv, log=lines.append)
    saved = json.loads(out.read_text())
    assert saved["presets"].keys() == {"before", "after"}
    for p in saved["presets"].values():
        _check_memory(p["memory"])
        assert _positive(p["tokens_per_s"])
    assert saved["presets"]["after"]["params"]["trainable"] < saved["presets"]["before"]["params"]["trainable"]
    assert all(_positive(v) for v in saved["ratios_after_over_before"].values())
    assert any("after / before" in line for line in lines)  # the table's ratio row
