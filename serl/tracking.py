"""Experiment tracking: Weights & Biases, ``metrics.jsonl`` / ``summary.json``, behind one interface.

Only this module imports ``wandb``. Every tracker gets the same calls:

* ``log(metrics, step)`` once per training step (flat ``{"namespace/name": float}``);
* ``log_table(key, columns, rows, step)`` for a table (the teacher samples, ``serl/teacher_log.py``);
  only W&B keeps tables, the other trackers ignore them;
* ``summary(values)`` once at the end;
* ``close(ok)`` always (also after a crash, so nothing logged is lost).

``JsonlTracker`` appends one JSON line per step and flushes + fsyncs it immediately, so a crash never
loses a logged step; ``summary.json`` is written atomically. ``WandbTracker`` runs offline (files under
``<run>/wandb``) unless the user configured a key (``WANDB_API_KEY`` or ``wandb login``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file + rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Tracker:
    """Interface: no-op defaults."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        pass

    def summary(self, values: Mapping[str, Any]) -> None:
        pass

    def rewind(self, step: int) -> None:
        """A resumed run continues after training step ``step``: forget what was logged after it."""

    def close(self, ok: bool = True) -> None:
        pass

    @property
    def location(self) -> str | None:
        """Where this tracker's output goes (printed in the run's closing summary)."""
        return None


class JsonlTracker(Tracker):
    """``<run>/metrics.jsonl`` (one line per step, each with ``"step"``) and ``<run>/summary.json``."""

    def __init__(self, run_dir: Path, stream_metrics: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stream_metrics = stream_metrics
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.summary_path = self.run_dir / "summary.json"
        self._file = open(self.metrics_path, "a") if stream_metrics else None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(_jsonable({"step": step, **metrics})) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def summary(self, values: Mapping[str, Any]) -> None:
        atomic_write_text(self.summary_path, json.dumps(_jsonable(dict(values)), indent=2, sort_keys=True) + "\n")

    def rewind(self, step: int) -> None:
        """Cut ``metrics.jsonl`` back to the lines of steps <= ``step`` (and drop a partial last line), so a
        step logged after the checkpoint a run resumes from is not logged twice."""
        if self._file is None or not self.metrics_path.is_file():
            return
        self._file.close()
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill mid-write
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line)
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        self._file = open(self.metrics_path, "a")

    def close(self, ok: bool = True) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def location(self) -> str:
        return str(self.metrics_path if self.stream_metrics else self.summary_path)


WANDB_MODES = ("auto", "online", "offline", "disabled")
ONLINE_INIT_TIMEOUT_S = 30.0  # how long an online W&B init may take before the run falls back to offline


def wandb_mode(requested: str) -> str:
    """Resolve ``auto``: the ``WANDB_MODE`` environment variable when it is set, else ``online`` when a W&B
    key is configured, else ``offline``. An explicit ``online`` / ``offline`` / ``disabled`` wins.

    A key counts as configured when ``WANDB_API_KEY`` is set or ``~/.netrc`` has an entry for the W&B API
    host (what ``wandb login`` writes).
    """
    if requested not in WANDB_MODES:
        raise ValueError(f"logger.mode={requested!r} is not one of {WANDB_MODES}")
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        if env not in ("online", "offline", "disabled", "dryrun", "run"):
            raise ValueError(f"WANDB_MODE={env!r} is not one of online, offline, disabled")
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class WandbTracker(Tracker):
    """A W&B run in ``<run>/wandb``; metrics are mirrored from the same dicts the JSONL file gets."""

    def __init__(
        self,
        run_dir: Path,
        project: str,
        name: str,
        config: Mapping[str, Any],
        mode: str = "auto",
        entity: str | None = None,
        tags: Sequence[str] = (),
        job_type: str | None = None,
        group: str | None = None,
    ):
        import wandb

        self.mode = wandb_mode(mode)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        kwargs = dict(
            project=project,
            entity=entity,
            name=name,
            dir=str(self.run_dir),
            config=_jsonable(dict(config)),
            tags=list(tags),
            job_type=job_type,  # "train" | "eval": lets the W&B UI group training runs and evaluations
            group=group,  # the runs of one sweep share a group (conf/sweep/)
            reinit="finish_previous",
        )
        try:
            self.run = wandb.init(mode=self.mode, settings=self._settings(), **kwargs)
        except Exception as e:  # noqa: BLE001 - unreachable server, rejected key: the run goes on offline
            if self.mode != "online":
                raise
            warnings.warn(
                f"W&B online init failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"logging offline to {self.run_dir / 'wandb'} instead (upload later with `wandb sync`)",
                RuntimeWarning,
                stacklevel=2,
            )
            self.mode = "offline"
            self.run = wandb.init(mode=self.mode, settings=self._settings(), **kwargs)

    def _settings(self) -> Any:
        return self._wandb.Settings(
            console="off", silent=True, x_disable_stats=True, init_timeout=ONLINE_INIT_TIMEOUT_S
        )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        self.run.log({key: self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            if isinstance(v, (int, float, str, bool)):
                self.run.summary[k] = v

    def close(self, ok: bool = True) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if ok else 1)
            self.run = None

    @property
    def location(self) -> str:
        return str(Path(self.run.dir).parent) if self.run is not None else str(self.run_dir / "wandb")


def wandb_lines(locations: dict[str, str], label_width: int) -> list[str]:
    """The closing-summary lines that say where the W&B run went (empty without a W&B tracker)."""
    if "WandbTracker" not in locations:
        return []
    label = "  W&B run:".ljust(label_width)
    return [
        f"{label}{locations['WandbTracker']}",
        " " * label_width + "(offline runs upload later with `wandb sync <that folder>`)",
    ]


class MultiTracker(Tracker):
    """Fans every call out to several trackers; ``close`` reaches all of them even if one fails."""

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        for t in self.trackers:
            t.log_table(key, columns, rows, step)

    def summary(self, values: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.summary(values)

    def rewind(self, step: int) -> None:
        for t in self.trackers:
            t.rewind(step)

    def close(self, ok: bool = True) -> None:
        errors = []
        for t in self.trackers:
            try:
                t.close(ok)
            except Exception as e:  # keep closing the others; report after
                errors.append(e)
        if errors:
            raise errors[0]

    @property
    def locations(self) -> dict[str, str]:
        return {type(t).__name__: t.location for t in self.trackers if t.location}
