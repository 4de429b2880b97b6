"""Sweep bookkeeping shared by ``scripts/train.py``, ``scripts/reproduce_table.py`` and ``scripts/cpu_study.py``
(docs/sweeps.md). No Hydra here: plain functions over paths, argument lists and numbers.

* :func:`finished` — a run folder whose ``summary.json`` says the run completed; sweeps skip such runs
  (``skip_completed=true``) and remove the folders of unfinished ones before they start again
  (:func:`unfinished_runs`).
* :func:`missing_launcher` — the install command for a ``hydra/launcher=...`` whose plugin package is absent.
* :func:`threads_per_job` — torch threads per run when a launcher runs several runs at once on one machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Sequence

#: launcher option prefix -> (plugin module, pip requirement, how to install it)
LAUNCHER_PLUGINS: dict[str, tuple[str, str, str]] = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "make install"),
    "submitit": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "pip install -e '.[slurm]'"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher", "pip install -e '.[ray]'"),
}


def finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir/summary.json`` exists and records a completed run (``"completed": true``)."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text()).get("completed") is True
    except (OSError, ValueError, AttributeError):
        return False


def unfinished_runs(sweep_dir: str | Path) -> list[Path]:
    """Run folders under ``sweep_dir`` (any depth) that a run started but did not complete: they hold a
    ``config.yaml`` (written when a run starts) and no completed ``summary.json``. Sorted."""
    root = Path(sweep_dir)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob("config.yaml") if p.parent != root and not finished(p.parent)
                  and not p.parent.name.startswith("."))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def missing_launcher(argv: Sequence[str]) -> str | None:
    """``None``, or a one-line error when ``argv`` picks a ``hydra/launcher=<name>`` whose plugin is not
    installed, naming the package and the install command."""
    for arg in argv:
        key, sep, name = arg.lstrip("+~").partition("=")
        if key != "hydra/launcher" or not sep:
            continue
        for prefix, (module, package, install) in LAUNCHER_PLUGINS.items():
            if name.startswith(prefix) and not _installed(module):
                return f"hydra/launcher={name} needs the {package} plugin, which is not installed: {install}"
    return None


def threads_per_job(cpu_count: int, n_jobs: int) -> int:
    """Torch threads for each of ``n_jobs`` runs sharing ``cpu_count`` cores (joblib's ``n_jobs``: a negative
    value means ``cpu_count + 1 + n_jobs`` jobs, so -1 = one per core); at least 1."""
    if n_jobs == 0:
        raise ValueError("n_jobs must not be 0")
    jobs = n_jobs if n_jobs > 0 else max(1, cpu_count + 1 + n_jobs)
    return max(1, cpu_count // jobs)


def cpu_count() -> int:
    """Cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
