"""Checkpoints that make a resumed run continue exactly (docs/design.md §4, fixes docs/reference.md §10.5).

The trainer calls :func:`save_training_state` and :func:`restore_training_state`; they pick one of two
on-disk formats by the number of processes (``torch.distributed`` world size). Both hold everything the next
training step depends on, and nothing the run can rebuild from its ``config.yaml`` (the frozen base weights
are not saved: with LoRA a checkpoint is megabytes, not gigabytes).

**One process: one safetensors file per saved step**, ``<run>/checkpoints/step_<step:06d>.safetensors`` (the
newest ``keep_last`` are kept; ``last.safetensors`` is a hard link to the newest), written by
:func:`save_checkpoint`:

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

**Several processes (FSDP, world size > 1): one torch.distributed.checkpoint (DCP) folder per saved step**,
``<run>/checkpoints/step_<step:06d>.dcp/`` (the newest ``keep_last`` are kept; ``last.dcp`` is a symlink to the
newest — or, where the file system has no symlinks, a small text file holding its folder name). Every rank
writes its own shards, so no rank ever holds the full weights or optimizer state:

* ``.metadata`` and ``__<rank>_0.distcp``: DCP's index and the ranks' data files. The DCP keys are
  ``model.<name>`` (the trainable parameters, as above), ``teacher.<name>`` (absent without a teacher) and
  ``optim.state.<name>.<key>`` / ``optim.param_groups.<i>.<key>`` (AdamW's state keyed by parameter *name*,
  as ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` returns it). Tensors are stored
  with their full (global) shapes, so the folder loads onto any number of ranks (resharding), or into one
  process without a process group;
* ``rng_rank<r>.safetensors``: rank ``r``'s python / numpy / torch / CUDA generator states (the same
  ``rng/...`` tensors and JSON as in the single-process file);
* ``meta.json``: ``format``, ``format_version``, ``step``, ``world_size`` (ranks that saved), ``has_teacher``
  and ``extra``.

The folder is written as ``.step_<step>.dcp.tmp`` and renamed into place by rank 0 only after every rank has
finished (and fsynced) its files; then ``last.dcp`` is repointed by an atomic ``os.replace``. A crash or an
``OSError`` at any point leaves the previous ``last.dcp`` whole and (except for a crash) no temp folder.

A legacy ``last.pt`` (torch.save of the full state dicts) is still read by :func:`load_checkpoint`, and
:func:`load_trainable` puts any kind of weights onto a model. :func:`checkpoint_path` finds any of the three.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from serl.policy.models import match_trainable, trainable_parameters

CHECKPOINT_NAME = "last.safetensors"
LEGACY_CHECKPOINT_NAME = "last.pt"  # torch.save format written before safetensors; still readable
FORMAT = "serl-checkpoint"
FORMAT_VERSION = 1

DCP_CHECKPOINT_NAME = "last.dcp"  # symlink (or pointer file) to the newest step_<step>.dcp folder
DCP_FORMAT = "serl-checkpoint-dcp"
DCP_FORMAT_VERSION = 1
DCP_META_NAME = "meta.json"  # serl's own metadata in a DCP folder
DCP_INDEX_NAME = ".metadata"  # torch.distributed.checkpoint's index, written last by its FileSystemWriter
RNG_FORMAT = "serl-rng"


@dataclass
class TrainingState:
    step: int  # completed training steps
    model: dict[str, torch.Tensor]  # trainable parameters by name (a legacy last.pt: the full state dict)
    optimizer: dict[str, Any]  # a torch.optim state_dict: {"state": {int: {...}}, "param_groups": [...]}
    teacher: dict[str, torch.Tensor] | None
    rng: dict[str, Any]
    extra: dict[str, Any]
    critic: dict[str, torch.Tensor] | None = None  # a value critic's flat tensors (serl.critic), single file only


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
    """Accept a run folder, its ``checkpoints`` folder, a checkpoint file or a DCP step folder
    (``step_<step>.dcp``); return the checkpoint: ``last.safetensors`` (one process), ``last.dcp`` (several
    processes) or a legacy ``last.pt``.

    A folder holding both a ``last.safetensors`` and a ``last.dcp`` (a run resumed with another number of
    processes) gives the one with the later step (on a tie, the newer one).
    """
    p = Path(run_or_file)
    if p.suffix == ".dcp" and (p.exists() or p.is_symlink()):
        return p
    if p.is_file():
        return p
    for d in (p, p / "checkpoints"):
        found = [c for c in (d / CHECKPOINT_NAME,) if c.is_file()]
        found += [c for c in (d / DCP_CHECKPOINT_NAME,) if c.exists() or c.is_symlink()]
        if found:
            return found[0] if len(found) == 1 else max(found, key=_recency)
    for d in (p, p / "checkpoints"):
        if (d / LEGACY_CHECKPOINT_NAME).is_file():
            return d / LEGACY_CHECKPOINT_NAME
    raise FileNotFoundError(
        f"resume={str(run_or_file)!r}: no checkpoint found (looked for {p}, {p / CHECKPOINT_NAME} and "
        f"{p / 'checkpoints' / CHECKPOINT_NAME}, a {DCP_CHECKPOINT_NAME} there, and a legacy "
        f"{LEGACY_CHECKPOINT_NAME})"
    )


def _recency(path: Path) -> tuple[int, float]:
    """(step, modification time) of a checkpoint, read cheaply; (-1, 0) if it cannot be read."""
    try:
        if path.suffix == ".dcp":
            folder = dcp_folder(path)
            return int(read_dcp_meta(path)["step"]), (folder / DCP_META_NAME).stat().st_mtime
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return int((f.metadata() or {})["step"]), path.stat().st_mtime
    except (OSError, ValueError, KeyError, SafetensorError):
        return -1, 0.0


def checkpoint_step(run_or_file: str | Path) -> int:
    """The completed training steps of the checkpoint :func:`checkpoint_path` finds. A DCP checkpoint is
    checked for completeness (``meta.json`` and DCP's index) and only its ``meta.json`` is read; a file is
    read whole (:func:`load_checkpoint`), so a damaged one is an error now. Raises ``ValueError`` naming it."""
    path = checkpoint_path(run_or_file)
    if path.suffix == ".dcp":
        return int(read_dcp_meta(path)["step"])
    return load_checkpoint(path).step


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
    for name, t in (state.critic or {}).items():
        tensors[f"critic/{name}"] = t
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state.optimizer.get("state", {}).items():
        for key, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer/{int(idx)}/{key}"] = v
            else:
                opt_scalars.setdefault(str(int(idx)), {})[key] = v
    rng_tensors, rng_metadata = _pack_rng(state.rng)
    tensors.update(rng_tensors)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "step": str(int(state.step)),
        "has_teacher": json.dumps(state.teacher is not None),
        "optimizer_param_groups": _dumps(state.optimizer.get("param_groups", [])),
        "optimizer_scalars": _dumps(opt_scalars),
        **rng_metadata,
        "extra": _dumps(state.extra),
    }
    return _safetensors_ready(tensors), metadata


def _pack_rng(rng: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An :func:`rng_state` dict as safetensors tensors (``rng/torch``, ``rng/numpy``, ``rng/cuda/<i>``) and
    string metadata (``rng_python``, ``rng_numpy``)."""
    tensors = {"rng/torch": rng["torch"]}
    kind, keys, pos, has_gauss, cached_gaussian = rng["numpy"][:5]
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).copy())
    for i, s in enumerate(rng.get("cuda") or []):
        tensors[f"rng/cuda/{i}"] = s
    version, internal, gauss_next = rng["python"]
    metadata = {
        "rng_python": json.dumps([version, list(internal), gauss_next]),
        "rng_numpy": json.dumps([kind, int(pos), int(has_gauss), float(cached_gaussian)]),
    }
    return tensors, metadata


def _unpack_rng(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of :func:`_pack_rng` (raises ``KeyError`` / ``ValueError`` on a damaged file)."""
    version, internal, gauss_next = json.loads(metadata["rng_python"])
    kind, pos, has_gauss, cached_gaussian = json.loads(metadata["rng_numpy"])
    rng: dict[str, Any] = {
        "python": (version, tuple(internal), gauss_next),
        "numpy": (kind, tensors["rng/numpy"].numpy().copy(), int(pos), int(has_gauss), float(cached_gaussian)),
        "torch": tensors["rng/torch"],
    }
    cuda = {int(k.rsplit("/", 1)[1]): t for k, t in tensors.items() if k.startswith("rng/cuda/")}
    if cuda:
        rng["cuda"] = [cuda[i] for i in sorted(cuda)]
    return rng


def _safetensors_ready(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors needs contiguous CPU tensors that own their storage (no two names on one buffer)."""
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
    return out


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


def load_checkpoint(run_or_file: str | Path, *, with_optimizer: bool = False) -> TrainingState:
    """Read a checkpoint (see :func:`checkpoint_path` for what ``run_or_file`` may be) onto the CPU, in this
    process alone (never a collective, with or without a process group).

    A safetensors file (or legacy ``last.pt``) gives everything, as saved. A DCP folder gives the *full*
    (gathered) ``model`` and ``teacher`` tensors, rank 0's ``rng``, ``step`` and ``extra``; its ``optimizer``
    is ``{}`` unless ``with_optimizer=True``: then it is the full optimizer state keyed by parameter *name*
    (``{"state": {name: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [{..., "params": [names]}]}``,
    as ``get_optimizer_state_dict`` returns it; not loadable by ``optimizer.load_state_dict`` as is). To put
    a checkpoint into a training model and optimizer, use :func:`restore_training_state`.
    """
    path = checkpoint_path(run_or_file)
    if path.suffix == ".pt":
        return _load_legacy(path)
    if path.suffix == ".dcp":
        return _load_dcp_state(path, with_optimizer=with_optimizer)
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
        critic: dict[str, torch.Tensor] = {}
        opt_state: dict[int, dict[str, Any]] = {}
        for key, t in tensors.items():
            kind, _, rest = key.partition("/")
            if kind == "model":
                model[rest] = t
            elif kind == "teacher":
                teacher[rest] = t
            elif kind == "critic":
                critic[rest] = t
            elif kind == "optimizer":
                idx, _, name = rest.partition("/")
                opt_state.setdefault(int(idx), {})[name] = t
        for idx, scalars in _loads(metadata["optimizer_scalars"]).items():
            opt_state.setdefault(int(idx), {}).update(scalars)
        rng = _unpack_rng(tensors, metadata)
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
            critic=critic or None,
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {path} is incomplete or damaged ({type(e).__name__}: {e})") from e


# ============================================================================ training state (1 or N processes)
def save_training_state(
    directory: str | Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    teacher: Mapping[str, torch.Tensor] | None,
    extra: Mapping[str, Any] | None = None,
    keep_last: int = 1,
    critic: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Save what the next training step depends on; return the ``last.*`` path that now points at it.

    * ``model``: the policy; only its trainable parameters (:func:`serl.policy.models.trainable_parameters`)
      are saved. Under FSDP (``fully_shard``) they are DTensors sharded over the ranks.
    * ``optimizer``: its AdamW over those parameters (``[p for p in model.parameters() if p.requires_grad]``).
    * ``teacher``: the teacher's snapshot (``{name: tensor}``, the trainable names and shapes; DTensors under
      FSDP), or None without a teacher.
    * ``extra``: JSON-able values (tuples stay tuples) given back by :func:`restore_training_state`.
    * ``critic``: a value critic's flat ``{name: tensor}`` state (:meth:`serl.critic.ValueCritic.state_tensors`),
      or None. Single-process only (a critic never runs under torchrun).

    Without a process group, or with a world size of 1, this writes today's single file
    ``directory/step_<step:06d>.safetensors`` and returns ``directory/last.safetensors``
    (:func:`save_checkpoint`). With a world size > 1 it is a collective — **every rank must call it** — that
    writes the DCP folder ``directory/step_<step:06d>.dcp/`` (module docstring) and returns
    ``directory/last.dcp``.

    Both refuse non-finite weights (``FloatingPointError`` on every rank, nothing written) and keep the newest
    ``keep_last`` step checkpoints. A failed write raises ``OSError`` (on every rank) and leaves the previous
    ``last.*`` whole; a temp folder is removed.
    """
    if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
        raise ValueError(f"keep_last must be an int >= 1, got {keep_last!r}")
    extra = dict(extra or {})
    rank, world = _rank_and_world()
    if world == 1:
        state = TrainingState(
            step=int(step),
            model={n: _full(p).detach().to("cpu", copy=True) for n, p in trainable_parameters(model).items()},
            optimizer=_full_optimizer_state(optimizer.state_dict()),
            teacher=None if teacher is None else {k: _full(v).detach() for k, v in teacher.items()},
            rng=rng_state(),
            extra=extra,
            critic=None if critic is None else {k: v.detach().cpu() for k, v in critic.items()},
        )
        return save_checkpoint(directory, state, keep_last=keep_last)
    if critic is not None:
        raise ValueError("a value critic's state is saved by a single process only (a critic never runs under torchrun)")
    return _save_dcp(Path(directory), int(step), model, optimizer, teacher, extra, keep_last, rank, world)


def restore_training_state(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    teacher: Mapping[str, torch.Tensor] | None,
    critic: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Load a checkpoint into ``model``'s trainable parameters, ``optimizer`` and the ``teacher`` snapshot
    tensors, all IN PLACE, and set this process's RNG state; return ``(step, extra)``.

    ``path`` is anything :func:`checkpoint_path` accepts. Under a process group this is a collective (every
    rank calls it). What loads where:

    * a DCP folder saved by N ranks: into M ranks with FSDP (M = N or not: DCP reshards), or into one process
      without a process group and plain tensors (M = 1). Rank r takes rank r's saved RNG state, or rank 0's
      when r >= N;
    * a safetensors file (saved by one process): into one process, or into M FSDP ranks (each rank reads the
      file and copies its slice of every full tensor into its DTensor shards; the optimizer's parameter-index
      keys map to the optimizer's parameters in order, i.e. ``[p for p in model.parameters() if
      p.requires_grad]`` as :class:`serl.learner.Learner` builds it). Every rank takes the saved RNG state;
    * a legacy ``last.pt``: one process only.

    ``optimizer=None`` skips the optimizer. The teacher snapshot is loaded when both ``teacher`` and the
    checkpoint have one; otherwise ``teacher`` is left as it is. ``critic`` (a value critic's
    :meth:`~serl.critic.ValueCritic.load_state_tensors`) is called with the saved critic state; a checkpoint
    without one raises ``ValueError`` then. Names or shapes that do not match the model
    (another model or LoRA setting), the optimizer or the teacher raise ``ValueError`` naming the checkpoint,
    before any weight is changed.
    """
    path = checkpoint_path(path)
    if path.suffix == ".dcp":
        if critic is not None:
            raise ValueError(f"checkpoint {path} was written by several ranks: it holds no critic state")
        return _restore_dcp(path, model, optimizer, teacher)
    return _restore_file(path, model, optimizer, teacher, critic)


# ------------------------------------------------------------------------------------ DTensor helpers
def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _is_dtensor(t: Any) -> bool:
    if not dist.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _full(t: torch.Tensor) -> torch.Tensor:
    """The full tensor of a DTensor (a collective over its mesh), else ``t``."""
    return t.full_tensor() if _is_dtensor(t) else t


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor, else ``t``."""
    return t.to_local() if _is_dtensor(t) else t


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` as a DTensor placed like ``like`` (each rank slices its own part: no communication), or
    ``full`` itself when ``like`` is a plain tensor."""
    if not _is_dtensor(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


@torch.no_grad()
def _copy_full_into(dst: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a full tensor into ``dst`` in place (into this rank's shard when ``dst`` is a DTensor)."""
    if _is_dtensor(dst):
        dst.to_local().copy_(_shard_like(full, dst).to_local())
    else:
        dst.copy_(full)


def _full_optimizer_state(osd: dict[str, Any]) -> dict[str, Any]:
    """A torch.optim state dict with its DTensor states gathered (world size 1 with a 1-rank mesh)."""
    state = {idx: {k: _full(v) if isinstance(v, torch.Tensor) else v for k, v in st.items()}
             for idx, st in osd.get("state", {}).items()}
    return {"state": state, "param_groups": osd.get("param_groups", [])}


def _check_names_and_shapes(expected: Mapping[str, tuple[int, ...]], saved: Mapping[str, tuple[int, ...]],
                            what: str) -> None:
    """``ValueError`` starting with ``what`` when ``saved`` does not hold exactly ``expected``'s names and shapes
    (the wording of :func:`serl.policy.models.match_trainable`)."""
    def few(names: list[str], k: int = 5) -> str:
        return ", ".join(sorted(names)[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")

    missing, unexpected = [n for n in expected if n not in saved], [n for n in saved if n not in expected]
    if missing or unexpected:
        parts = [f"missing {len(missing)}: {few(missing)}" if missing else "",
                 f"unexpected {len(unexpected)}: {few(unexpected)}" if unexpected else ""]
        raise ValueError(f"{what}: its tensors do not match ({'; '.join(x for x in parts if x)})")
    wrong = [f"{n}: {tuple(saved[n])} saved, {tuple(s)} here"
             for n, s in expected.items() if tuple(saved[n]) != tuple(s)]
    if wrong:
        raise ValueError(f"{what}: shapes differ ({few(wrong)})")


# --------------------------------------------------------------------------- restore from one file
def _restore_file(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                  teacher: Mapping[str, torch.Tensor] | None,
                  critic: Callable[[dict[str, torch.Tensor]], None] | None = None) -> tuple[int, dict[str, Any]]:
    """A safetensors file or legacy ``last.pt`` into this process's model (plain tensors or DTensor shards)."""
    state = load_checkpoint(path)
    if critic is not None and state.critic is None:
        raise ValueError(f"checkpoint {path} holds no critic state (it was written by a run without algorithm.critic)")
    sharded = any(_is_dtensor(p) for p in model.parameters())
    if path.suffix == ".pt" and sharded:
        raise ValueError(f"checkpoint {path} is a legacy .pt file; it can only be restored without FSDP")
    if path.suffix == ".pt":
        params = None
    else:
        params = match_trainable(
            model, state.model, f"checkpoint {path} was written by a run with a different model or LoRA setting"
        )
    restore_teacher = teacher is not None and state.teacher is not None
    if restore_teacher and path.suffix == ".pt":  # a legacy teacher is a full state dict: take what is asked for
        state.teacher = {k: v for k, v in state.teacher.items() if k in teacher}
    if restore_teacher:
        _check_names_and_shapes({k: tuple(v.shape) for k, v in teacher.items()},
                                {k: tuple(v.shape) for k, v in state.teacher.items()},
                                f"checkpoint {path}: the teacher snapshot")
    opt_state = _optimizer_state_for(optimizer, state.optimizer, path) if optimizer is not None else None
    if critic is not None:  # checks its names and shapes before it changes anything, like the checks above
        critic(state.critic)
    if params is None:
        load_trainable(model, state.model, path)
    else:
        for n, p in params.items():
            _copy_full_into(p, state.model[n])
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    if restore_teacher:
        for k, t in teacher.items():
            _copy_full_into(t, state.teacher[k])
    set_rng_state(state.rng)
    return state.step, state.extra


def _optimizer_state_for(optimizer: torch.optim.Optimizer, saved: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's param-index keyed optimizer state, checked against ``optimizer``'s parameters (index i is the
    i-th parameter over its param groups) and with every full per-parameter tensor sharded like its
    parameter, ready for ``optimizer.load_state_dict``."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n_saved = sum(len(g.get("params", [])) for g in saved.get("param_groups", []))
    if len(saved.get("param_groups", [])) != len(optimizer.param_groups) or n_saved != len(params):
        raise ValueError(
            f"checkpoint {path}: its optimizer has {n_saved} parameters in {len(saved.get('param_groups', []))} "
            f"group(s), this one {len(params)} in {len(optimizer.param_groups)}"
        )
    state: dict[Any, dict[str, Any]] = {}
    for idx, per_param in saved.get("state", {}).items():
        if not 0 <= int(idx) < len(params):
            raise ValueError(f"checkpoint {path}: optimizer state for parameter {idx}, but there are {len(params)}")
        p = params[int(idx)]
        out: dict[str, Any] = {}
        for key, v in per_param.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                if tuple(v.shape) != tuple(p.shape):
                    raise ValueError(
                        f"checkpoint {path}: optimizer state {idx}/{key} has shape {tuple(v.shape)}, its parameter "
                        f"{tuple(p.shape)}"
                    )
                v = _shard_like(v, p)
            out[key] = v
        state[idx] = out
    return {"state": state, "param_groups": saved["param_groups"]}


# ------------------------------------------------------------------------------------ DCP folders
def step_dcp_name(step: int) -> str:
    return f"step_{step:06d}.dcp"


def _rng_file_name(rank: int) -> str:
    return f"rng_rank{rank}.safetensors"


def dcp_folder(path: str | Path) -> Path:
    """The step folder a DCP checkpoint path stands for: the folder itself, the target of the ``last.dcp``
    symlink, or the folder named in a ``last.dcp`` pointer file. ``ValueError`` naming ``path`` when that
    folder is missing or incomplete (no ``meta.json`` or no DCP index)."""
    path = Path(path)
    try:
        if path.is_file():  # a pointer file: the step folder's name
            name = path.read_text().strip()
            if not name or "/" in name or os.sep in name:
                raise ValueError(f"checkpoint {path} is not a serl checkpoint pointer (holds {name[:80]!r})")
            folder = path.parent / name
        else:
            folder = path.resolve() if path.is_symlink() else path
    except OSError as e:
        raise ValueError(f"checkpoint {path} cannot be read: {e}") from e
    if not folder.is_dir():
        raise ValueError(f"checkpoint {path} is incomplete or damaged: its folder {folder} is missing")
    for name in (DCP_META_NAME, DCP_INDEX_NAME):
        if not (folder / name).is_file():
            raise ValueError(f"checkpoint {path} is incomplete or damaged: {folder / name} is missing")
    return folder


def read_dcp_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a DCP checkpoint (``format``, ``format_version``, ``step``, ``world_size``,
    ``has_teacher``, ``extra``); ``ValueError`` naming ``path`` when it is missing, damaged or of another
    format version."""
    folder = dcp_folder(path)
    try:
        meta = json.loads((folder / DCP_META_NAME).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: {folder / DCP_META_NAME} cannot be read ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != DCP_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path} is not a serl training checkpoint (meta.json format={found!r})")
    if meta.get("format_version") != DCP_FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {meta.get('format_version')!r}; this serl reads version "
            f"{DCP_FORMAT_VERSION}"
        )
    missing = [k for k in ("step", "world_size", "has_teacher", "extra") if k not in meta]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete or damaged (meta.json lacks {missing})")
    return meta


def _dcp_index(folder: Path, path: Path):
    """DCP's ``Metadata`` of ``folder`` (``state_dict_metadata``: flat key -> tensor/bytes metadata;
    ``planner_data``: flat key -> its path in the saved nested dict, e.g. ``("model", name)``)."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        md = FileSystemReader(folder).read_metadata()
    except Exception as e:  # pickle, OS and format errors alike
        raise ValueError(f"checkpoint {path}: the DCP index {folder / DCP_INDEX_NAME} cannot be read ({e})") from e
    if not isinstance(md.planner_data, dict):
        raise ValueError(f"checkpoint {path}: the DCP index has no key mapping (not written by serl)")
    return md


def _saved_shapes(md: Any, prefix: str) -> dict[str, tuple[int, ...]]:
    """``{name: full shape}`` of the tensors saved under ``prefix`` (``model`` or ``teacher``)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    out = {}
    for key, item in md.state_dict_metadata.items():
        obj_path = md.planner_data.get(key, ())
        if len(obj_path) == 2 and obj_path[0] == prefix and isinstance(item, TensorStorageMetadata):
            out[str(obj_path[1])] = tuple(item.size)
    return out


def _dcp_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s trainable parameters by name as ``get_model_state_dict(ignore_frozen_params=True)``
    returns them (DTensor shards under FSDP), a tied weight under its first name only. The tensors share
    storage with the parameters, so loading into them loads into the model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True))
    names = list(trainable_parameters(model))
    missing = [n for n in names if n not in sd]
    if missing:
        raise ValueError(f"get_model_state_dict does not name the trainable parameters {missing[:5]} as "
                         "named_parameters does (a wrapped or compiled model?)")
    return {n: sd[n] for n in names}


def _describe(e: BaseException) -> tuple[str, int | None]:
    """A one-line description of an error (the first rank's cause of a DCP ``CheckpointException``) and its errno."""
    from torch.distributed.checkpoint.api import CheckpointException

    if isinstance(e, CheckpointException) and e.failures:
        rank, (inner, _) = next(iter(sorted(e.failures.items(), key=lambda kv: kv[0])))
        text, code = _describe(inner)
        return f"torch.distributed.checkpoint failed on rank {rank}: {text}", code
    if isinstance(e, OSError):
        return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else ""), e.errno
    return f"{type(e).__name__}: {e}", None


def _failures(error: BaseException | None) -> list[tuple[int, str, int | None]]:
    """Collective (also a barrier): ``(rank, description, errno)`` of every rank whose ``error`` is not None,
    the same list on every rank."""
    mine = None if error is None else _describe(error)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return [(r, g[0], g[1]) for r, g in enumerate(gathered) if g is not None]


def _write_json(obj: Any, path: Path) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _remove(path: Path) -> None:
    """Remove a file, symlink or folder if it is there."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _point_last(directory: Path, name: str) -> None:
    """Atomically point ``directory/last.dcp`` at the step folder ``name``: a relative symlink renamed over it
    (``os.replace``), or a pointer file holding ``name`` where symlinks cannot be made."""
    tmp = directory / f".{DCP_CHECKPOINT_NAME}.tmp"
    _remove(tmp)
    try:
        os.symlink(name, tmp, target_is_directory=True)
    except (OSError, NotImplementedError):  # no symlinks here (some Windows / network file systems)
        with open(tmp, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
    try:
        os.replace(tmp, directory / DCP_CHECKPOINT_NAME)
    except OSError:
        _remove(tmp)
        raise


def _param_groups_by_name(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``get_optimizer_state_dict``'s layout for an optimizer without state: ``{"state": {}, "param_groups":
    [{..., "params": [parameter names]}]}``, built without DSD (which would initialise the state)."""
    names: dict[int, str] = {}
    for n, p in model.named_parameters():
        names.setdefault(id(p), n)
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    groups = []
    for group in optimizer.state_dict()["param_groups"]:
        try:
            groups.append({**group, "params": [names[id(flat[i])] for i in group["params"]]})
        except KeyError as e:
            raise ValueError("the optimizer holds a parameter that is not the model's") from e
    return {"state": {}, "param_groups": groups}


def _save_dcp(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              teacher: Mapping[str, torch.Tensor] | None, extra: dict[str, Any], keep_last: int,
              rank: int, world: int) -> Path:
    """:func:`save_training_state` with world size > 1 (every rank runs this, in lockstep)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model_sd = _dcp_model_state(model)
    meta = {"format": DCP_FORMAT, "format_version": DCP_FORMAT_VERSION, "step": step, "world_size": world,
            "has_teacher": teacher is not None, "extra": _to_json(extra)}  # a TypeError here is every rank's

    # 1. every rank checks its own shards; all refuse together, before anything is written
    what = f"refusing to save the checkpoint of training step {step}"
    problem: BaseException | None = None
    try:
        assert_finite({n: _local(t) for n, t in model_sd.items()}, what)
        if teacher is not None:
            assert_finite({n: _local(t) for n, t in teacher.items()}, f"{what} (teacher)")
    except FloatingPointError as e:
        problem = e
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, None if problem is None else str(problem))
    bad = [(r, text) for r, text in enumerate(gathered) if text is not None]
    if bad:
        r, text = bad[0]
        raise FloatingPointError(f"{text} (in rank {r}'s shard)") from problem

    final = directory / step_dcp_name(step)
    tmp = directory / f".{final.name}.tmp"
    last = directory / DCP_CHECKPOINT_NAME
    # DSD initialises an optimizer without state by a zero-lr step (state "step" 1): that would change the
    # run, so an optimizer that has not stepped yet saves its param_groups only
    osd = get_optimizer_state_dict(model, optimizer) if optimizer.state else _param_groups_by_name(model, optimizer)
    state: dict[str, Any] = {"model": model_sd, "optim": osd}
    if teacher is not None:
        state["teacher"] = dict(teacher)

    def fail(failures: list[tuple[int, str, int | None]], cause: BaseException | None) -> OSError:
        if rank == 0:
            _remove(tmp)
        dist.barrier()  # the temp folder is gone before any rank returns
        kept = f"; {last} still holds the previous checkpoint" if (last.exists() or last.is_symlink()) else ""
        text = "; ".join(f"rank {r}: {t}" for r, t, _ in failures)
        code = next((c for _, _, c in failures if c is not None), errno.EIO)
        err = OSError(code, f"could not write checkpoint {final}: {text}{kept}")
        err.__cause__ = cause
        return err

    # 2. rank 0 makes the folder and clears temp folders of dead saves
    error: BaseException | None = None
    if rank == 0:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob(".step_*.dcp.tmp"):
                _remove(stale)
        except OSError as e:
            error = e
    failures = _failures(error)  # also a barrier: nobody writes before the temp folder is clean
    if failures:
        raise fail(failures, error)

    # 3. every rank writes its shards (DCP), its RNG file and, rank 0, meta.json into the temp folder
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint.api import CheckpointException

    error = None
    rng_tensors, rng_metadata = _pack_rng(rng_state())
    try:
        dcp.save(state, storage_writer=FileSystemWriter(tmp, sync_files=True, overwrite=False))
        _write(_safetensors_ready(rng_tensors), {"format": RNG_FORMAT, "rank": str(rank), **rng_metadata},
               tmp / _rng_file_name(rank))
        if rank == 0:
            _write_json(meta, tmp / DCP_META_NAME)
    except (Exception, CheckpointException) as e:  # CheckpointException is a BaseException
        error = e
    failures = _failures(error)  # all files of all ranks are written (and fsynced) once this returns clean
    if failures:
        raise fail(failures, error)

    # 4. rank 0 renames the folder into place, repoints last.dcp and prunes old step folders
    error = None
    if rank == 0:
        trash = directory / f".{final.name}.old"
        set_aside = renamed = False
        try:
            _fsync_dir(tmp)
            if final.exists():  # this step was saved before (a resumed run): set the old copy aside first
                _remove(trash)
                os.replace(final, trash)
                set_aside = True
            os.replace(tmp, final)
            renamed = True
            _fsync_dir(directory)
            _point_last(directory, final.name)
            _fsync_dir(directory)
        except OSError as e:
            error = e
            if set_aside and not renamed:  # put the old copy back: last.dcp may point at it
                try:
                    os.replace(trash, final)
                    set_aside = False
                except OSError:
                    pass
        if set_aside and renamed:
            _remove(trash)
        if error is None:
            for old in sorted(directory.glob("step_*.dcp"))[:-keep_last]:
                if old != final and old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old, ignore_errors=True)
    failures = _failures(error)
    if failures:
        raise fail(failures, error)
    return last


# ------------------------------------------------------------------------------------ DCP restore
def _restore_dcp(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                 teacher: Mapping[str, torch.Tensor] | None) -> tuple[int, dict[str, Any]]:
    """A DCP folder into this process's model/optimizer/teacher (a collective under a process group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    folder = dcp_folder(path)
    meta = read_dcp_meta(path)
    md = _dcp_index(folder, path)
    rank, _ = _rank_and_world()
    rng_file = folder / _rng_file_name(rank if rank < int(meta["world_size"]) else 0)
    rng = _read_rng_file(rng_file, path)

    # check everything against the index before any tensor changes
    model_sd = _dcp_model_state(model)
    match_trainable(model, {n: torch.empty(s, device="meta") for n, s in _saved_shapes(md, "model").items()},
                    f"checkpoint {path} was written by a run with a different model or LoRA setting")
    state: dict[str, Any] = {"model": model_sd}
    saved_groups = sorted({(k, md.planner_data[k]) for k in md.state_dict_metadata
                           if md.planner_data.get(k, ())[:2] == ("optim", "param_groups")}, key=lambda kv: kv[0])
    stateless = not any(md.planner_data.get(k, ())[:2] == ("optim", "state") for k in md.state_dict_metadata)
    if optimizer is not None and stateless:  # saved before its first step: param_groups only
        n_groups = len({obj_path[2] for _, obj_path in saved_groups})
        if n_groups != len(optimizer.param_groups):
            raise ValueError(f"checkpoint {path}: its optimizer has {n_groups} param group(s), this one "
                             f"{len(optimizer.param_groups)}")
        state.update({k: None for k, _ in saved_groups})  # flat keys: DCP replaces each value by the saved one
    elif optimizer is not None:
        osd = get_optimizer_state_dict(model, optimizer)
        wanted: dict[str, Any] = {}
        for name, per_param in osd["state"].items():
            for key, v in per_param.items():
                wanted[f"optim.state.{name}.{key}"] = v
        for i, group in enumerate(osd["param_groups"]):
            for key in group:
                wanted[f"optim.param_groups.{i}.{key}"] = None
        missing = [k for k in wanted if k not in md.state_dict_metadata]
        wrong = [k for k, v in wanted.items() if isinstance(v, torch.Tensor) and k not in missing
                 and isinstance(md.state_dict_metadata[k], TensorStorageMetadata)
                 and tuple(md.state_dict_metadata[k].size) != tuple(v.shape)]
        if missing or wrong:
            raise ValueError(
                f"checkpoint {path}: its optimizer state does not fit this optimizer ("
                + "; ".join(x for x in (f"missing {missing[:5]}" if missing else "",
                                         f"shapes differ for {wrong[:5]}" if wrong else "") if x) + ")"
            )
        state["optim"] = osd
    restore_teacher = teacher is not None and bool(meta["has_teacher"])
    if restore_teacher:
        _check_names_and_shapes({k: tuple(v.shape) for k, v in teacher.items()}, _saved_shapes(md, "teacher"),
                                f"checkpoint {path}: the teacher snapshot")
        state["teacher"] = dict(teacher)

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, storage_reader=FileSystemReader(folder))
    except (Exception, CheckpointException) as e:
        raise ValueError(f"checkpoint {path} cannot be loaded: {_describe(e)[0]}") from e
    set_model_state_dict(model, state["model"], options=StateDictOptions(strict=False))
    if optimizer is not None and stateless:
        mine = _param_groups_by_name(model, optimizer)["param_groups"]
        groups: dict[int, dict[str, Any]] = {}
        for key, obj_path in saved_groups:
            groups.setdefault(int(obj_path[2]), {})[str(obj_path[3])] = state[key]
        for i, (group, saved) in enumerate(zip(optimizer.param_groups, (groups[j] for j in sorted(groups)))):
            if saved.get("params") != mine[i]["params"]:
                raise ValueError(f"checkpoint {path}: its optimizer's param group {i} holds other parameters "
                                 f"({saved.get('params')} saved, {mine[i]['params']} here)")
            group.update({k: v for k, v in saved.items() if k != "params"})
        optimizer.state.clear()
    elif optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optim"])
    if restore_teacher:
        for k, t in teacher.items():
            if state["teacher"][k] is not t:  # DCP loads tensors in place; this is only a safeguard
                _copy_full_into(t, _full(state["teacher"][k]))
    set_rng_state(rng)
    return int(meta["step"]), _from_json(meta["extra"])


def _read_rng_file(file: Path, path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if metadata.get("format") != RNG_FORMAT:
            raise ValueError(f"format={metadata.get('format')!r}")
        return _unpack_rng(tensors, metadata)
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {path}: the RNG state {file} cannot be read ({e})") from e


def _load_dcp_state(path: Path, *, with_optimizer: bool) -> TrainingState:
    """:func:`load_checkpoint` of a DCP folder: full tensors, read in this process alone."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    folder = dcp_folder(path)
    meta = read_dcp_meta(path)
    md = _dcp_index(folder, path)
    wanted = {"model", "teacher"} | ({"optim"} if with_optimizer else set())
    flat: dict[str, Any] = {}
    for key, item in md.state_dict_metadata.items():
        obj_path = md.planner_data.get(key, ())
        if obj_path and obj_path[0] in wanted:
            # tensors are allocated at their full shape; DCP assembles them from every rank's shards
            is_tensor = isinstance(item, TensorStorageMetadata)
            flat[key] = torch.empty(item.size, dtype=item.properties.dtype) if is_tensor else None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(flat, storage_reader=FileSystemReader(folder), no_dist=True)
    except (Exception, CheckpointException) as e:
        raise ValueError(f"checkpoint {path} cannot be loaded: {_describe(e)[0]}") from e
    model: dict[str, torch.Tensor] = {}
    teacher: dict[str, torch.Tensor] = {}
    opt_state: dict[str, dict[str, Any]] = {}
    groups: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        obj_path = md.planner_data[key]
        if obj_path[0] == "model":
            model[str(obj_path[1])] = value
        elif obj_path[0] == "teacher":
            teacher[str(obj_path[1])] = value
        elif obj_path[1] == "state":  # ("optim", "state", name, key)
            opt_state.setdefault(str(obj_path[2]), {})[str(obj_path[3])] = value
        elif obj_path[1] == "param_groups":  # ("optim", "param_groups", i, key)
            groups.setdefault(int(obj_path[2]), {})[str(obj_path[3])] = value
    return TrainingState(
        step=int(meta["step"]),
        model=model,
        optimizer={"state": opt_state, "param_groups": [groups[i] for i in sorted(groups)]} if with_optimizer else {},
        teacher=teacher if meta["has_teacher"] else None,
        rng=_read_rng_file(folder / _rng_file_name(0), path),
        extra=_from_json(meta["extra"]),
    )
