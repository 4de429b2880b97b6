"""Checkpoints that make a resumed run continue exactly (docs/design.md §4, fixes docs/reference.md §10.5).

One safetensors file per saved step, ``<run>/checkpoints/step_<step>.safetensors`` (the newest ``keep_last``
are kept; ``last.safetensors`` is a hard link to the newest), holds everything the next training step depends
on, and nothing the run can rebuild from its ``config.yaml`` (the frozen base weights are not saved: with LoRA
the file is megabytes, not gigabytes):

* ``model/<name>``: the policy's trainable parameters only (``requires_grad``; with LoRA just the adapter, with
  full fine-tuning every parameter, tied weights once);
* ``teacher/<name>``: the teacher's snapshot of those parameters (it lags the policy by up to
  ``teacher_sync_interval`` steps); absent without a teacher;
* ``optimizer/<param index>/<key>``: AdamW's per-parameter state (``step``, ``exp_avg``, ``exp_avg_sq``);
* ``rng/torch``, ``rng/numpy`` (and ``rng/cuda/<device>`` once CUDA is in use): generator states.

The rest is JSON in the file's string metadata: the format version, ``step`` (completed training steps — the
single counter λ, the teacher sync and game sampling derive from), the optimizer's ``param_groups``, python's
RNG state, numpy's RNG scalars and ``extra``.

It is written to a temp file in the same folder, fsynced and renamed into place, so a crash (or a full disk)
while saving never leaves a partial ``last.safetensors`` nor destroys the last finished checkpoint; weights
with a NaN or inf are never saved.
A legacy ``last.pt`` (torch.save of the full state dicts) is still read by :func:`load_checkpoint`, and
:func:`load_trainable` puts either kind of weights onto a model.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from serl.policy.models import match_trainable, trainable_parameters

CHECKPOINT_NAME = "last.safetensors"
LEGACY_CHECKPOINT_NAME = "last.pt"  # torch.save format written before safetensors; still readable
FORMAT = "serl-checkpoint"
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    step: int  # completed training steps
    model: dict[str, torch.Tensor]  # trainable parameters by name (a legacy last.pt: the full state dict)
    optimizer: dict[str, Any]  # a torch.optim state_dict: {"state": {int: {...}}, "param_groups": [...]}
    teacher: dict[str, torch.Tensor] | None
    rng: dict[str, Any]
    extra: dict[str, Any]


# ----------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------------------------------ weights
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of ``model``'s trainable parameters, by name (tied weights once)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in trainable_parameters(model).items()}


def load_trainable(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Copy a checkpoint's trainable parameters (``TrainingState.model``) into ``model``.

    ``path`` is the checkpoint file the tensors came from (for errors). The names must be exactly ``model``'s
    trainable parameter names and the shapes must match (:func:`serl.policy.models.match_trainable`), else a
    ``ValueError`` names ``path``. The full state dict of a legacy ``.pt`` checkpoint (frozen weights and
    buffers too) goes through ``model.load_state_dict``.
    """
    if Path(path).suffix == ".pt":  # a legacy last.pt: the full state dict
        try:
            model.load_state_dict(dict(tensors))
        except RuntimeError as e:
            raise ValueError(f"checkpoint {path} does not fit this model: {e}") from e
        return
    params = match_trainable(model, tensors, f"checkpoint {path} was written by a run with a different model or LoRA setting")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[n])


# ------------------------------------------------------------------------------------------- paths
def checkpoint_path(run_or_file: str | Path) -> Path:
    """Accept a run folder, its ``checkpoints`` folder or the file itself; return the checkpoint file
    (``last.safetensors``, or a legacy ``last.pt``)."""
    p = Path(run_or_file)
    if p.is_file():
        return p
    candidates = [d / name for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME) for d in (p, p / "checkpoints")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"resume={str(run_or_file)!r}: no checkpoint found (looked for {p}, {p / CHECKPOINT_NAME} and "
        f"{p / 'checkpoints' / CHECKPOINT_NAME}, and a legacy {LEGACY_CHECKPOINT_NAME} there)"
    )


# ------------------------------------------------------------------------------------------- JSON
def _to_json(x: Any) -> Any:
    """JSON-ready copy of ``x`` that keeps tuples apart from lists (optimizer ``betas`` is a tuple)."""
    if isinstance(x, tuple):
        return {"__tuple__": [_to_json(v) for v in x]}
    if isinstance(x, list):
        return [_to_json(v) for v in x]
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            raise TypeError(f"checkpoint metadata needs string keys, got {list(x)[:5]}")
        return {k: _to_json(v) for k, v in x.items()}
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"cannot store {type(x).__name__} {x!r} in the checkpoint metadata (not JSON)")


def _from_json(x: Any) -> Any:
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    if isinstance(x, dict):
        if set(x) == {"__tuple__"}:
            return tuple(_from_json(v) for v in x["__tuple__"])
        return {k: _from_json(v) for k, v in x.items()}
    return x


def _dumps(x: Any) -> str:
    return json.dumps(_to_json(x))


def _loads(s: str) -> Any:
    return _from_json(json.loads(s))


# ------------------------------------------------------------------------------------------- write
def _flatten(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (by prefixed name) and string metadata of one checkpoint file."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in state.model.items():
        tensors[f"model/{name}"] = t
    if state.teacher is not None:
        for name, t in state.teacher.items():
            tensors[f"teacher/{name}"] = t
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state.optimizer.get("state", {}).items():
        for key, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer/{int(idx)}/{key}"] = v
            else:
                opt_scalars.setdefault(str(int(idx)), {})[key] = v
    rng = state.rng
    tensors["rng/torch"] = rng["torch"]
    kind, keys, pos, has_gauss, cached_gaussian = rng["numpy"][:5]
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).copy())
    for i, s in enumerate(rng.get("cuda") or []):
        tensors[f"rng/cuda/{i}"] = s
    version, internal, gauss_next = rng["python"]
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "step": str(int(state.step)),
        "has_teacher": json.dumps(state.teacher is not None),
        "optimizer_param_groups": _dumps(state.optimizer.get("param_groups", [])),
        "optimizer_scalars": _dumps(opt_scalars),
        "rng_python": json.dumps([version, list(internal), gauss_next]),
        "rng_numpy": json.dumps([kind, int(pos), int(has_gauss), float(cached_gaussian)]),
        "extra": _dumps(state.extra),
    }
    # safetensors needs contiguous CPU tensors that own their storage (no two names on one buffer)
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if t.numel() and (storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size()):
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out, metadata


def _write(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write the file and force it to disk."""
    save_file(tensors, str(path), metadata=metadata)
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def assert_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise ``FloatingPointError`` naming the first tensor of ``tensors`` with a NaN or inf value; ``what``
    says whose tensors they are (e.g. ``"the policy after training step 3"``)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise FloatingPointError(f"{what}: {name} has {bad} non-finite value(s) of {t.numel()}")


def check_writable(directory: str | Path) -> None:
    """Create ``directory`` and write + delete a probe file in it: an unwritable checkpoint folder is an
    ``OSError`` naming it before any training work (not after the first step)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_probe.{os.getpid()}"
        probe.write_bytes(b"serl")
        probe.unlink()
    except OSError as e:
        raise OSError(f"checkpoint folder {directory} is not writable: {e.strerror or e}") from e


def step_checkpoint_name(step: int) -> str:
    return f"step_{step:06d}.safetensors"


def _fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (best effort where the OS cannot open folders)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_checkpoint(directory: str | Path, state: TrainingState, keep_last: int = 1) -> Path:
    """Write ``directory/step_<step>.safetensors`` and point ``directory/last.safetensors`` at it; return the
    latter.

    Refuses non-finite weights (``FloatingPointError``: the previous checkpoint stays the latest). Each file
    appears by an atomic rename of a complete, fsynced temp file, so a crash or a full disk at any moment
    leaves the previous ``last.safetensors`` whole; a failed write removes its temp file and raises an
    ``OSError`` that names the file. ``last.safetensors`` is a hard link to the newest step file (a copy where
    the file system has no links). Step files beyond the newest ``keep_last`` are deleted.
    """
    if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
        raise ValueError(f"keep_last must be an int >= 1, got {keep_last!r}")
    assert_finite(state.model, f"refusing to save the checkpoint of training step {state.step}")
    if state.teacher is not None:
        assert_finite(state.teacher, f"refusing to save the checkpoint of training step {state.step} (teacher)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step_file = directory / step_checkpoint_name(state.step)
    final = directory / CHECKPOINT_NAME
    tensors, metadata = _flatten(state)
    tmp = directory / f"{step_file.name}.{os.getpid()}.tmp"
    link = directory / f"{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    try:
        _write(tensors, metadata, tmp)
        os.replace(tmp, step_file)
        try:
            link.unlink(missing_ok=True)
            os.link(step_file, link)
        except OSError:  # no hard links here: a full copy, still renamed into place
            _write(tensors, metadata, link)
        os.replace(link, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        link.unlink(missing_ok=True)
        kept = f"; {final} still holds the previous checkpoint" if final.exists() else ""
        raise OSError(e.errno, f"could not write checkpoint {step_file}: {e.strerror or e}{kept}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        link.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    for old in sorted(directory.glob("step_*.safetensors"))[:-keep_last]:
        if old != step_file:
            old.unlink(missing_ok=True)
    return final


# -------------------------------------------------------------------------------------------- read
def _load_legacy(path: Path) -> TrainingState:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return TrainingState(
        step=int(payload["step"]),
        model=payload["model"],
        optimizer=payload["optimizer"],
        teacher=payload.get("teacher"),
        rng=payload["rng"],
        extra=payload.get("extra", {}),
    )


def load_checkpoint(run_or_file: str | Path) -> TrainingState:
    """Read a checkpoint (see :func:`checkpoint_path` for what ``run_or_file`` may be) onto the CPU."""
    path = checkpoint_path(run_or_file)
    if path.suffix == ".pt":
        return _load_legacy(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint {path} cannot be read as a safetensors file: {e}") from e
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a serl training checkpoint (safetensors metadata format={metadata.get('format')!r})"
        )
    if int(metadata.get("format_version", -1)) != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {metadata.get('format_version')!r}; this serl reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        model: dict[str, torch.Tensor] = {}
        teacher: dict[str, torch.Tensor] = {}
        opt_state: dict[int, dict[str, Any]] = {}
        cuda: dict[int, torch.Tensor] = {}
        for key, t in tensors.items():
            kind, _, rest = key.partition("/")
            if kind == "model":
                model[rest] = t
            elif kind == "teacher":
                teacher[rest] = t
            elif kind == "optimizer":
                idx, _, name = rest.partition("/")
                opt_state.setdefault(int(idx), {})[name] = t
            elif key.startswith("rng/cuda/"):
                cuda[int(key.rsplit("/", 1)[1])] = t
        for idx, scalars in _loads(metadata["optimizer_scalars"]).items():
            opt_state.setdefault(int(idx), {}).update(scalars)
        version, internal, gauss_next = json.loads(metadata["rng_python"])
        kind, pos, has_gauss, cached_gaussian = json.loads(metadata["rng_numpy"])
        rng: dict[str, Any] = {
            "python": (version, tuple(internal), gauss_next),
            "numpy": (kind, tensors["rng/numpy"].numpy().copy(), int(pos), int(has_gauss), float(cached_gaussian)),
            "torch": tensors["rng/torch"],
        }
        if cuda:
            rng["cuda"] = [cuda[i] for i in sorted(cuda)]
        return TrainingState(
            step=int(metadata["step"]),
            model=model,
            optimizer={
                "state": dict(sorted(opt_state.items())),
                "param_groups": _loads(metadata["optimizer_param_groups"]),
            },
            teacher=teacher if json.loads(metadata["has_teacher"]) else None,
            rng=rng,
            extra=_loads(metadata["extra"]),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {path} is incomplete or damaged ({type(e).__name__}: {e})") from e
