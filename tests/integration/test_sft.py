"""Supervised warm start (serl.warmstart.sft, scripts/sft.py; docs/design.md §5 "Warm start") on the tiny model.

Demonstrations come from two generated ALFWorld games (7 expert steps). Checks: SFT lowers the NLL and
changes the weights; LoRA changes only adapter weights; the exports (merged folder, float32 and bfloat16
adapters, the named-model path through resolve_model_path) reproduce the trained model's logits; the
entry point writes the model folder and sft_summary.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

try:  # fixtures live next to this module (tests/conftest.py is owned elsewhere)
    from tests.integration.conftest_alfworld import (  # noqa: F401
        alfworld_data_dir,
        alfworld_games,
        alfworld_synth_root,
    )
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from conftest_alfworld import alfworld_data_dir, alfworld_games, alfworld_synth_root  # noqa: F401

import serl.policy.models as models
from serl.policy.adapters import merge_adapter
from serl.policy.logprobs import pad_prompt_response
from serl.policy.models import load_policy, resolve_model_path
from serl.warmstart.demos import collect_demonstrations
from serl.warmstart.sft import evaluate_sft, save_adapter, save_warmstart, tokenize_demonstrations, train_sft

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


@pytest.fixture(scope="module")
def demos(alfworld_games):
    from serl.envs.alfworld.suite import AlfworldSuite

    games = [str(alfworld_games[t]) for t in ("look_at_obj_in_light", "pick_and_place_simple")]
    return collect_demonstrations(AlfworldSuite(seed=0), games)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _logits(model, tokenizer, demos) -> torch.Tensor:
    rows = tokenize_demonstrations(tokenizer, demos[:3])
    ids, am, _ = pad_prompt_response([p for p, _ in rows], [r for _, r in rows], tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        pos = (am.cumsum(-1) - 1).clamp(min=0)
        return model(input_ids=ids, attention_mask=am, position_ids=pos).logits


def test_full_sft_lowers_the_loss_and_changes_the_weights(tiny_model_dir, demos):
    model, tok = load_policy(str(tiny_model_dir))
    before_w = _snapshot(model)
    before = evaluate_sft(model, tok, demos)
    logged = []
    out = train_sft(
        model, tok, demos, epochs=3, lr=3e-3, batch_size=4, micro_batch_size=2, seed=0,
        log=lambda m, s: logged.append((s, m)), progress=False,
    )
    after = evaluate_sft(model, tok, demos)
    assert after["loss"] < before["loss"] - 0.5, (before, after)
    assert after["token_accuracy"] >= before["token_accuracy"]
    assert any(not torch.equal(before_w[k], v) for k, v in model.state_dict().items())
    steps = 3 * 2  # 7 demos / batch 4 -> 2 steps per epoch
    assert out["steps"] == steps and out["n_demos"] == len(demos) and out["epochs"] == 3
    assert [s for s, _ in logged] == list(range(1, steps + 1))
    keys = {"sft/loss", "sft/token_accuracy", "sft/epoch", "sft/grad_norm", "sft/lr", "sft/response_tokens", "time/sft_s"}
    assert all(set(m) == keys for _, m in logged)
    assert logged[-1][1]["sft/epoch"] == 3.0 and logged[0][1]["sft/epoch"] == 0.5
    assert out["n_response_tokens"] == sum(len(r) for _, r in tokenize_demonstrations(tok, demos))
    assert not model.training


def test_max_steps_and_seeded_shuffle(tiny_model_dir, demos):
    runs = []
    for _ in range(2):
        model, tok = load_policy(str(tiny_model_dir))
        out = train_sft(model, tok, demos, epochs=5, lr=1e-3, batch_size=2, max_steps=3, seed=7, progress=False)
        runs.append((out, _snapshot(model)))
    assert runs[0][0]["steps"] == 3
    assert runs[0][0]["final_loss"] == runs[1][0]["final_loss"]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    with pytest.raises(ValueError, match="micro_batch_size"):
        train_sft(model, tok, demos, batch_size=2, micro_batch_size=3, progress=False)


@pytest.fixture(scope="module")
def lora_trained(tiny_model_dir, demos):
    model, tok = load_policy(str(tiny_model_dir), lora=LORA)
    before = _snapshot(model)
    train_sft(model, tok, demos, epochs=2, lr=1e-2, batch_size=4, seed=0, progress=False)
    return model, tok, before


def test_lora_changes_only_adapter_weights(lora_trained):
    model, _, before = lora_trained
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed) and any("lora_A" in k for k in changed)


def test_exports_round_trip_to_the_same_logits(tmp_path, tiny_model_dir, demos, lora_trained, monkeypatch):
    model, tok, _ = lora_trained
    reference = _logits(model, tok, demos)

    # merged full weights: loads as a plain model with the same logits
    merged_dir = save_warmstart(model, tok, tmp_path / "merged")
    merged, merged_tok = load_policy(str(merged_dir))
    assert not hasattr(merged, "peft_config")
    merged_logits = _logits(merged, merged_tok, demos)
    torch.testing.assert_close(merged_logits, reference, atol=1e-5, rtol=1e-5)
    assert "lora_" not in " ".join(merged.state_dict())
    # writing again replaces the folder atomically and leaves no temporary folder behind
    assert save_warmstart(model, tok, tmp_path / "merged", info={"again": True}) == merged_dir
    assert json.loads((merged_dir / "serl_merged.json").read_text())["again"] is True
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".merged")]

    # float32 adapter merged into the base folder = the same merge
    save_adapter(model, tmp_path / "adapter32", dtype="float32", base_model_name="tiny")
    config = json.loads((tmp_path / "adapter32" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny" and config["r"] == 8
    out32 = merge_adapter(tiny_model_dir, tmp_path / "adapter32", tmp_path / "from32")
    torch.testing.assert_close(_logits(load_policy(str(out32))[0], tok, demos), merged_logits, atol=1e-6, rtol=1e-6)

    # bfloat16 adapter (the versioned format): half the bytes, logits within bf16 rounding of the adapter
    save_adapter(model, tmp_path / "adapter16", readme="# made by the test, seed 0\n")
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "adapter16" / "adapter_model.safetensors"))
    assert weights and all(v.dtype == torch.bfloat16 for v in weights.values())
    assert (tmp_path / "adapter16" / "README.md").read_text() == "# made by the test, seed 0\n"
    size16 = (tmp_path / "adapter16" / "adapter_model.safetensors").stat().st_size
    assert size16 < 0.6 * (tmp_path / "adapter32" / "adapter_model.safetensors").stat().st_size
    out16 = merge_adapter(tiny_model_dir, tmp_path / "adapter16", tmp_path / "from16")
    logits16 = _logits(load_policy(str(out16))[0], tok, demos)
    assert (logits16 - merged_logits).abs().max() < 0.05 * merged_logits.abs().max()

    # the named-model path of resolve_model_path: <adapters>/<name>/ merged into the resolved base, cached
    adapters = tmp_path / "adapters"
    (adapters / "tiny-sft").mkdir(parents=True)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (adapters / "tiny-sft" / f).write_bytes((tmp_path / "adapter16" / f).read_bytes())
    monkeypatch.setitem(models.WARMSTART_MODELS, "tiny-sft", "tiny")
    cache = tmp_path / "cache"
    path = resolve_model_path("tiny-sft", cache_dir=cache, adapters_dir=adapters)
    assert path == str(cache / "tiny-sft")
    torch.testing.assert_close(_logits(load_policy(path)[0], tok, demos), logits16, atol=1e-6, rtol=1e-6)
    stamp = (cache / "tiny-sft" / "serl_merged.json").stat().st_mtime_ns
    assert resolve_model_path("tiny-sft", cache_dir=cache, adapters_dir=adapters) == path
    assert (cache / "tiny-sft" / "serl_merged.json").stat().st_mtime_ns == stamp  # reused, not re-merged
    # a regenerated adapter is merged again
    (adapters / "tiny-sft" / "adapter_model.safetensors").write_bytes(
        (tmp_path / "adapter32" / "adapter_model.safetensors").read_bytes()
    )
    resolve_model_path("tiny-sft", cache_dir=cache, adapters_dir=adapters)
    torch.testing.assert_close(_logits(load_policy(path)[0], tok, demos), merged_logits, atol=1e-6, rtol=1e-6)


def test_missing_versioned_adapter_names_make_warmstart(tmp_path):
    with pytest.raises(FileNotFoundError, match="make warmstart"):
        resolve_model_path("smollm2-135m-sft", cache_dir=tmp_path / "cache", adapters_dir=tmp_path / "nothing")
    assert not (tmp_path / "cache").exists()  # failed before converting anything


def test_save_adapter_refuses_a_fully_fine_tuned_model(tiny_policy, tmp_path):
    model, _ = tiny_policy
    with pytest.raises(ValueError, match="LoRA"):
        save_adapter(model, tmp_path / "a")


def _run_sft(args, timeout=120):
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "sft.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_sft_script_smoke(tmp_path, alfworld_games):
    run = tmp_path / "run"
    proc = _run_sft([
        "model=tiny", "n_games=2", "epochs=1", "batch_size=2", "micro_batch_size=1", "max_steps=2", "lr=1e-3",
        "logger=jsonl", "progress=false", f"hydra.run.dir={run}", f"adapter_dir={tmp_path / 'adapter'}",
    ])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run / "sft_summary.json").read_text())
    assert summary["steps"] == 2 and summary["n_games"] == 2 and summary["n_demos"] > 2
    assert summary["n_tokens"] == summary["n_prompt_tokens"] + summary["n_response_tokens"] > 0
    assert summary["final_loss"] > 0 and summary["wall_time_s"] > 0
    assert summary["output_dir"] == str(run / "model")
    model, tok = load_policy(str(run / "model"))
    assert not hasattr(model, "peft_config")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2] and "sft/loss" in json.loads(lines[0])
    assert (run / "demos.jsonl").is_file() and (run / "config.yaml").is_file()
    readme = (tmp_path / "adapter" / "README.md").read_text()
    assert "python scripts/sft.py model=tiny n_games=2" in readme and "seed: 0" in readme
    assert str(run / "model") in proc.stdout and "sft_summary.json" in proc.stdout

    # the demonstration cache is reused by a later run, and refused when it holds other games
    demos_path = f"demos_path={run / 'demos.jsonl'}"
    again = _run_sft(["model=tiny", "n_games=2", "max_steps=1", "logger=none", "progress=false", "lora=null",
                      demos_path, f"hydra.run.dir={tmp_path / 'again'}"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"loaded {int(summary['n_demos'])} demonstrations of 2 games" in again.stdout
    other = _run_sft(["model=tiny", "n_games=1", "logger=none", demos_path, f"hydra.run.dir={tmp_path / 'other'}"])
    assert other.returncode == 2 and "config error: demos_path=" in other.stderr


def test_sft_script_rejects_bad_config_before_loading(tmp_path):
    proc = _run_sft(["model=tiny", "lora=null", f"adapter_dir={tmp_path / 'a'}", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 2
    assert "config error: adapter_dir=" in proc.stderr and "lora=null" in proc.stderr
