"""Resuming a training run: where it continues and whether it may, decided before any model loads.

``python scripts/train.py resume=<run folder | its checkpoints/ | a checkpoint file | a step_<N>.dcp folder> [steps=N]``

* **Same folder.** The resumed run writes into the folder it resumes (``hydra.run.dir`` resolves through
  :func:`run_dir_of`), so one run stays one folder: its ``metrics.jsonl`` is cut back to the checkpoint's
  step (:meth:`serl.tracking.JsonlTracker.rewind`) and every step appears in it exactly once.
* **Checked first.** :func:`check_resume` reads the checkpoint (a missing or damaged one is an error naming
  the file; of a multi-process run's DCP folder, ``checkpoints/last.dcp``, only its ``meta.json`` is read and
  the folder checked for completeness) and compares the run's saved ``config.yaml`` with the new config.
  Keys that only say how long to run or how to watch it (:data:`MAY_CHANGE`) may differ; any other
  difference (another model, algorithm, feedback, game pool, learning rate ...) is an error listing the keys,
  unless ``resume_allow_changes=true``: then the changes are accepted and recorded in ``summary.json``
  (``resume_changes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from serl.checkpoint import checkpoint_path, checkpoint_step

# Keys (dotted prefixes) a resumed run may change freely: how long it runs, how it is watched, where envs run.
MAY_CHANGE = (
    "steps",
    "resume",
    "resume_allow_changes",
    "skip_completed",
    "save_every",
    "keep_last",
    "eval_every",
    "eval",
    "teacher_log",
    "logger",
    "device",
    "torch_threads",
    "env_workers",
    "env.cache_dir",
    "env.data_root",
)


class ResumeError(ValueError):
    """A resume that cannot continue the run it names."""


def run_dir_of(resume: str | None, default: str) -> str:
    """The folder a run writes to: ``default`` for a new run, else the resumed run's folder (the folder
    itself, the parent of its ``checkpoints/``, or the run folder of a checkpoint file or DCP folder)."""
    if resume in (None, "", "None", "null"):
        return default
    p = Path(str(resume)).expanduser()
    if p.suffix in (".safetensors", ".pt", ".dcp"):
        p = p.parent
    if p.name == "checkpoints":
        p = p.parent
    return str(p)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved value, new value)}`` for every leaf that differs and is not in :data:`MAY_CHANGE`
    (a key present on one side only counts, with ``None`` on the other)."""
    a, b = _flat(saved), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not _may_change(k)}


def check_resume(cfg: DictConfig) -> dict[str, Any]:
    """Check ``cfg.resume`` before any model loads; return what the summary records about it
    (``resumed_from``, ``resume_checkpoint_step``, ``resume_changes``). Raises :class:`ResumeError`."""
    try:
        path = checkpoint_path(str(cfg.resume))
    except FileNotFoundError as e:
        raise ResumeError(str(e)) from e
    try:
        step = checkpoint_step(path)  # a DCP folder: only its meta.json; a file: read whole (damage shows now)
    except (ValueError, OSError) as e:
        raise ResumeError(str(e)) from e
    if int(cfg.steps) < step:
        raise ResumeError(f"steps={cfg.steps} is below the checkpoint's step {step} ({path}); raise steps")
    run_cfg = Path(run_dir_of(str(cfg.resume), "")) / "config.yaml"
    if not run_cfg.is_file():
        raise ResumeError(f"resume={cfg.resume!r}: the run's config.yaml ({run_cfg}) is missing, so the run cannot be checked")
    saved = OmegaConf.to_container(OmegaConf.load(run_cfg), resolve=True)
    new = OmegaConf.to_container(cfg, resolve=True)
    changes = config_changes(saved, new)  # type: ignore[arg-type]
    if changes and not bool(cfg.get("resume_allow_changes", False)):
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        raise ResumeError(
            f"resume={cfg.resume!r} changes the run's settings ({listed}); resume with the run's own settings, or "
            "pass resume_allow_changes=true to continue with these (recorded in summary.json)"
        )
    return {
        "resumed_from": str(path),
        "resume_checkpoint_step": step,
        "resume_changes": {k: [old, new] for k, (old, new) in changes.items()},
    }
