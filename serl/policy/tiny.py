"""A tiny random causal LM with a locally trained tokenizer, for tests and smoke runs (docs/design.md §5).

The model is a 2-layer Qwen2 (or Llama) with hidden size 64 and 2 heads of size 32 (the smallest head size
vLLM's CPU attention supports, so the vLLM backend is tested on it too); the tokenizer is a byte-level BPE trained by
the ``tokenizers`` library on a small built-in ALFWorld-like corpus (vocab ~1000), wrapped as a
``PreTrainedTokenizerFast`` with ChatML special tokens and a ChatML chat template, so that the student's
single user message (docs/reference.md §1.3) and the ``<think>…</think><action>…</action>`` format (§6.1)
tokenise the same way they do for a real instruct model. Nothing is fetched from the network.

Building takes about a second and is deterministic for a seed; a folder that already holds a complete
model is returned as is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from serl.envs.alfworld.sample_text import tokenizer_corpus

# Special tokens, ids 0..2 (the SmolLM2 layout): pad, bos/turn start, eos/turn end.
PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

VOCAB_SIZE = 1000
_ARCHS = ("qwen2", "llama")
# Files whose presence marks a complete model folder (the folder is written atomically, so any folder
# that exists under the final name is complete; the check guards against foreign folders).
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_MARKER = "serl_tiny.json"

# The Qwen2 pre-tokenisation regex. transformers >= 5 loads any ``model_type == "qwen2"`` folder through
# ``Qwen2Tokenizer``, which rebuilds normaliser / pre-tokeniser / decoder from code and keeps only vocab and
# merges; the tiny tokenizer uses exactly that pipeline so AutoTokenizer and the saved tokenizer.json agree.
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _train_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus() * 4, trainer=trainer)
    return tok


def _build_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _build_model(tokenizer, seed: int, arch: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 32: the smallest vLLM's CPU attention kernels support
        num_key_value_heads=1,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Qwen2Config(**common) if arch == "qwen2" else LlamaConfig(**common)
    devices = []  # fork_rng without CUDA devices: only the CPU generator is forked
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def is_complete(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a complete tiny model written by :func:`build_tiny_model`."""
    out_dir = Path(out_dir)
    return all((out_dir / f).is_file() for f in (*_REQUIRED_FILES, _MARKER))


def build_tiny_model(out_dir: Path, seed: int = 0, arch: str = "qwen2") -> Path:
    """Build (or reuse) a tiny random causal LM + tokenizer in ``out_dir`` and return ``out_dir``.

    ``arch`` is ``"qwen2"`` or ``"llama"``. The folder is written to a temporary sibling and renamed into
    place, so a concurrent reader never sees a half-written model. If ``out_dir`` already holds a complete
    model it is returned unchanged (whatever seed built it: use one folder per seed).
    """
    if arch not in _ARCHS:
        raise ValueError(f"arch must be one of {_ARCHS}, got {arch!r}")
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists, is not empty and does not hold a complete tiny model")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    tokenizer = _build_tokenizer()
    model = _build_model(tokenizer, seed, arch)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"seed": seed, "arch": arch, "vocab_size": len(tokenizer)}))
        if out_dir.exists():  # an empty folder (e.g. created by the caller)
            out_dir.rmdir()
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not is_complete(out_dir):  # lost a race against another builder only if theirs is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
