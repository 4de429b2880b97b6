"""Checkpoints that make a resumed run continue exactly (DESIGN §4, fixes SERL_REFERENCE §10.5).

One file, ``<run>/checkpoints/last.pt``, holds everything the next training step depends on:

* ``model``: the policy's trainable state (the full state dict, or the adapter weights with LoRA);
* ``optimizer``: AdamW moments and step counts;
* ``teacher``: the teacher's weights (it lags the policy by up to ``teacher_sync_interval`` steps);
* ``step``: completed training steps — the single counter λ, the teacher sync and game sampling derive from;
* ``rng``: python, numpy and torch generator states.

It is written to a temp file, fsynced and renamed over the previous one, so a crash while saving never
destroys the last finished checkpoint.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "last.pt"


@dataclass
class TrainingState:
    step: int  # completed training steps
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    teacher: dict[str, torch.Tensor] | None
    rng: dict[str, Any]
    extra: dict[str, Any]


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def checkpoint_path(run_or_file: str | Path) -> Path:
    """Accept a run folder, its ``checkpoints`` folder or the file itself; return the checkpoint file."""
    p = Path(run_or_file)
    for candidate in (p, p / CHECKPOINT_NAME, p / "checkpoints" / CHECKPOINT_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"resume={str(run_or_file)!r}: no checkpoint found (looked for {p}, {p / CHECKPOINT_NAME} and "
        f"{p / 'checkpoints' / CHECKPOINT_NAME})"
    )


def save_checkpoint(directory: str | Path, state: TrainingState) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / CHECKPOINT_NAME
    tmp = directory / (CHECKPOINT_NAME + ".tmp")
    payload = {
        "step": state.step,
        "model": state.model,
        "optimizer": state.optimizer,
        "teacher": state.teacher,
        "rng": state.rng,
        "extra": state.extra,
    }
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def load_checkpoint(run_or_file: str | Path) -> TrainingState:
    path = checkpoint_path(run_or_file)
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return TrainingState(
        step=int(payload["step"]),
        model=payload["model"],
        optimizer=payload["optimizer"],
        teacher=payload.get("teacher"),
        rng=payload["rng"],
        extra=payload.get("extra", {}),
    )
