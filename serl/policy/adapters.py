"""Exporting a warm-started policy and merging LoRA adapters (docs/design.md §5 "Warm start", "Models").

The supervised warm start (:mod:`serl.warmstart`) produces either a fully fine-tuned model or a peft LoRA
model. Three exports, all written atomically (a temporary sibling folder renamed into place, so a reader
never sees a half-written folder):

* :func:`save_merged` — a plain HF folder (weights + tokenizer) that :func:`serl.policy.models.load_policy`
  loads like any model; a LoRA model is merged into its base first (peft ``merge_and_unload`` on a deep
  copy, so the trained peft model is left as it was).
* :func:`save_lora_adapter` — only the LoRA adapter (peft ``save_pretrained``: ``adapter_config.json`` +
  ``adapter_model.safetensors``), weights cast to bfloat16 by default: SmolLM2-135M with r=16 on all
  attention and MLP projections is about 5 MB, small enough to version in the repository as data.
* :func:`merge_adapter` — base folder + adapter folder → merged HF folder. ``resolve_model_path`` uses it
  to build named warm-started models (``"smollm2-135m-sft"``) on first use; the folder records a
  fingerprint of its base and adapter, so a regenerated adapter is merged again.

Every ``transformers`` / ``peft`` import of serl lives in ``serl/policy``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MERGED_MARKER = "serl_merged.json"
ADAPTER_DTYPES = ("bfloat16", "float32")


def is_lora(model: Any) -> bool:
    """True for a peft model (as built by :func:`serl.policy.models.apply_lora`)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextmanager
def atomic_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``out_dir``; on success it replaces ``out_dir``.

    An existing ``out_dir`` is moved aside, the new folder renamed into place, and the old one deleted: at
    every moment ``out_dir`` is either the complete old folder, the complete new one or (for an instant)
    absent. On an exception the temporary folder is removed and ``out_dir`` is left untouched.
    """
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the final folder gets the usual permissions
    old = None
    try:
        yield tmp
        if out_dir.is_symlink() or out_dir.is_file():
            raise FileExistsError(f"{out_dir} exists and is not a folder; refusing to replace it")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rename(out_dir, old / out_dir.name)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if old is not None and not out_dir.exists():
                os.rename(old / out_dir.name, out_dir)  # put the previous folder back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _save_model_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def save_merged(model: Any, tokenizer: Any, out_dir: str | os.PathLike, info: dict | None = None) -> Path:
    """Write ``model`` (+ ``tokenizer``) as a plain HF folder ``out_dir``; returns it.

    A LoRA model is merged into its base weights (``merge_and_unload`` on a deep copy; ``model`` keeps its
    adapter and stays trainable). ``info`` (JSON-able) goes to ``serl_merged.json`` in the folder.
    """
    out_dir = Path(out_dir)
    export = model
    if is_lora(model):
        export = copy.deepcopy(model).merge_and_unload()
    with atomic_folder(out_dir) as tmp:
        _save_model_folder(export, tokenizer, tmp)
        (tmp / MERGED_MARKER).write_text(json.dumps({"lora_merged": is_lora(model), **(info or {})}, indent=2))
    return out_dir


def save_lora_adapter(
    model: Any,
    out_dir: str | os.PathLike,
    dtype: str = "bfloat16",
    base_model_name: str | None = None,
    readme: str | None = None,
) -> Path:
    """Write only the LoRA adapter of a peft ``model`` to ``out_dir`` (peft ``save_pretrained`` layout).

    ``dtype``: ``"bfloat16"`` (default, half the size) or ``"float32"`` (bit-exact). ``base_model_name``
    replaces ``base_model_name_or_path`` in ``adapter_config.json`` (e.g. ``"smollm2-135m"`` instead of
    this machine's cache path). ``readme`` (text) becomes the folder's ``README.md`` (how the adapter was
    made); peft's generic model card is not written. Raises ``ValueError`` for a model without LoRA.
    """
    import torch

    if not is_lora(model):
        raise ValueError("save_lora_adapter needs a LoRA (peft) model; this one is fully fine-tuned")
    if dtype not in ADAPTER_DTYPES:
        raise ValueError(f"adapter dtype must be one of {ADAPTER_DTYPES}, got {dtype!r}")
    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    state = {
        k: (v.detach().to(torch_dtype) if "lora_" in k and v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    configs = list(model.peft_config.values())
    previous = [c.base_model_name_or_path for c in configs]
    try:
        if base_model_name is not None:
            for c in configs:
                c.base_model_name_or_path = base_model_name
        with atomic_folder(out_dir) as tmp:
            model.save_pretrained(str(tmp), state_dict=state, safe_serialization=True, save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's generic, empty model card
            if readme is not None:
                (tmp / "README.md").write_text(readme)
    finally:
        for c, p in zip(configs, previous):
            c.base_model_name_or_path = p
    return Path(out_dir)


def has_adapter(adapter_dir: str | os.PathLike) -> bool:
    """True when ``adapter_dir`` holds ``adapter_config.json`` and ``adapter_model.safetensors``."""
    return all((Path(adapter_dir) / f).is_file() for f in ADAPTER_FILES)


def _fingerprint(base_path: Path, adapter_dir: Path) -> dict[str, str]:
    """What a merge was made from: sha256 of the adapter files (a few MB) and a cheap identity of the base
    folder (absolute path, config.json content, name/size/mtime of its weight files; hashing hundreds of MB
    of base weights on every resolve would cost seconds)."""
    h = hashlib.sha256()
    for f in ADAPTER_FILES:
        h.update((adapter_dir / f).read_bytes())
    base = hashlib.sha256(str(base_path.absolute()).encode())
    base.update((base_path / "config.json").read_bytes())
    for f in sorted(base_path.glob("*.safetensors")):
        st = f.stat()
        base.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return {"adapter_sha256": h.hexdigest(), "base_id": base.hexdigest()}


def _merged_is_current(out_dir: Path, fingerprint: dict[str, str]) -> bool:
    try:
        marker = json.loads((out_dir / MERGED_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (out_dir / "config.json").is_file() and all(marker.get(k) == v for k, v in fingerprint.items())


def merge_adapter(
    base_path: str | os.PathLike, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> Path:
    """Merge the LoRA adapter ``adapter_dir`` into the HF model at ``base_path``; write ``out_dir``.

    The merge runs in float32 (a bfloat16 adapter is upcast). ``out_dir`` is reused when its
    ``serl_merged.json`` fingerprint matches the current base and adapter files, otherwise rebuilt
    atomically. The tokenizer is the base's. Returns ``out_dir``.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from serl.policy.models import load_tokenizer

    base_path, adapter_dir, out_dir = Path(base_path), Path(adapter_dir), Path(out_dir)
    if not has_adapter(adapter_dir):
        missing = [f for f in ADAPTER_FILES if not (adapter_dir / f).is_file()]
        raise FileNotFoundError(f"no LoRA adapter in {adapter_dir}: missing {missing}")
    if not (base_path / "config.json").is_file():
        raise FileNotFoundError(f"base model folder {base_path} has no config.json")
    fingerprint = _fingerprint(base_path, adapter_dir)
    if _merged_is_current(out_dir, fingerprint):
        return out_dir
    t0 = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    try:
        peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    except (ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"LoRA adapter {adapter_dir} does not fit the base model {base_path}: {e}") from e
    merged = peft_model.merge_and_unload()
    tokenizer = load_tokenizer(base_path)
    info = {
        "lora_merged": True,
        "base": str(base_path),
        "adapter": str(adapter_dir),
        **fingerprint,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    try:
        with atomic_folder(out_dir) as tmp:
            _save_model_folder(merged, tokenizer, tmp)
            (tmp / MERGED_MARKER).write_text(json.dumps(info, indent=2))
    except OSError:
        if not _merged_is_current(out_dir, fingerprint):  # tolerate losing a race to an identical merge
            raise
    return out_dir
