"""Inspecting the teacher: per-step JSONL dumps of what the teacher saw and how it reweighted the student.

The reference writes every sample's teacher/student texts to ``<run>/teacher/<step>.jsonl``
(docs/reference.md §7.1 ``dump_teacher_log``, ``teacher_log_dir``, ``teacher_log_every_n_steps``,
``teacher_log_max_text_chars``; docs/reference.md §10.23: every sample, every step, heavy I/O). serl writes
``<run>/teacher/step_<step:06d>.jsonl`` every ``every`` training steps while the teacher is active, for at
most ``max_samples`` step samples (context rows first, then the others, each in batch order), and adds what
the reference leaves implicit: per action token the student and teacher log-probs, the gap
``Δ = ℓT − ℓS``, the clipped weight ``w`` of §5.2 (before λ-mixing) and the multiplier ``(1 − λ) + λ·w``
that scales the GRPO advantage.

Weights come from :func:`serl.algo.reweight.token_weights` (the §5.2 formula) on the behaviour (old) log-probs. With
``algorithm.reweight.student_logprob=old`` (serl's default) they are exactly the weights the learner used. With
``current`` (the reference's choice, §10.6) the learner recomputes them per micro-batch from the current
policy; the logged weights then equal those of the first mini-batch (the policy before any optimizer step
of the training step, up to the numerical gap between the rollout and training forwards), not of later
mini-batches or epochs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from serl.algo.reweight import mixed_multiplier, token_weights
from serl.tracking import atomic_write_text
from serl.types import Step, TeacherContext, TrainBatch, Trajectory

TABLE_KEY = "teacher/samples"
TABLE_COLUMNS = ("step", "traj", "step_id", "sources", "advantage", "context", "response", "action_tokens")


@dataclass(frozen=True)
class TeacherLogSettings:
    """``teacher_log.*`` of ``conf/train.yaml`` (knobs documented there)."""

    every: int = 0  # dump every N training steps while the teacher is active (0: never)
    max_samples: int = 32  # step samples per dump
    max_chars: int = 4000  # cap per logged text (0: no truncation)

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"teacher_log.every={self.every} must be >= 0 (0: never)")
        if self.max_samples < 1:
            raise ValueError(f"teacher_log.max_samples={self.max_samples} must be >= 1")
        if self.max_chars < 0:
            raise ValueError(f"teacher_log.max_chars={self.max_chars} must be >= 0 (0: no truncation)")

    def due(self, step: int) -> bool:
        """Whether completed training step ``step`` is dumped."""
        return self.every > 0 and step % self.every == 0


def dump_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "teacher" / f"step_{step:06d}.jsonl"


def clip_text(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters from its middle, with a marker saying how many were cut.

    Head and tail survive: a prompt's task and its end (the privileged sections and the closing
    instruction of a teacher prompt) are what a reader looks for.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    head = (max_chars + 1) // 2
    tail = max_chars - head
    return text[:head] + f"\n[... {len(text) - max_chars} characters truncated ...]\n" + text[len(text) - tail :]


def select_rows(has_context: Sequence[bool], max_samples: int) -> list[int]:
    """Rows to dump: those with context first, then the rest, each in batch order; at most ``max_samples``."""
    rows = [i for i, h in enumerate(has_context) if h] + [i for i, h in enumerate(has_context) if not h]
    return rows[:max_samples]


def token_factors(batch: TrainBatch, lam: float, weight_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``(w, multiplier)`` ``[N, T]`` on the behaviour log-probs: the clipped weight of §5.2
    (:func:`serl.algo.reweight.token_weights`) and ``(1 − λ) + λ·w``, the factor on the advantage of a
    selected token (exactly 1 where ``A = 0``, since then ``w = 1``)."""
    _, w = token_weights(batch.advantages, batch.old_logprobs, batch.teacher_logprobs, weight_clip)
    return w, mixed_multiplier(w, lam)


def build_records(
    *,
    step: int,
    lam: float,
    weight_clip: float,
    batch: TrainBatch,
    advantages: Sequence[float],
    steps: Sequence[Step],
    owners: Sequence[Trajectory],
    contexts: Sequence[TeacherContext],
    rows: Sequence[int],
    student_prompt: Callable[[int], str],
    teacher_prompt: Callable[[int], str | None],
    token_text: Callable[[int], str],
    max_chars: int,
) -> list[dict[str, Any]]:
    """One JSON-able record per row of ``rows`` (see docs/training.md "Inspecting the teacher" for the fields).

    ``student_prompt(i)`` / ``teacher_prompt(i)`` give the prompt texts of row ``i`` (the teacher's is None
    when the row had no context), ``token_text(id)`` a token's text. Rows without context list their action
    tokens with the student log-prob only (teacher fields None): they are not reweighted.
    """
    w, mult = token_factors(batch, lam, weight_clip)
    records = []
    for i in rows:
        s, traj, ctx = steps[i], owners[i], contexts[i]
        has = bool(batch.has_context[i])
        tokens = []
        for t, is_action in enumerate(batch.action_mask[i, : len(s.response_ids)].tolist()):
            if not is_action:
                continue
            student = float(batch.old_logprobs[i, t])
            entry = {"index": t, "token": token_text(s.response_ids[t]), "student_logprob": student}
            if has:
                teacher = float(batch.teacher_logprobs[i, t])
                entry.update(
                    teacher_logprob=teacher,
                    delta=teacher - student,
                    weight=float(w[i, t]),
                    multiplier=float(mult[i, t]),
                )
            else:
                entry.update(teacher_logprob=None, delta=None, weight=None, multiplier=None)
            tokens.append(entry)
        teacher_text = teacher_prompt(i) if has else None
        records.append(
            {
                "step": step,
                "lambda": lam,
                "group_id": traj.group_id,
                "traj_id": traj.traj_id,
                "step_id": s.step_id,
                "task": traj.task,
                "sources": list(ctx.sources),
                "has_context": has,
                "anchor_size": ctx.anchor_size,
                "advantage": float(advantages[i]),
                "student_prompt": clip_text(student_prompt(i), max_chars),
                "teacher_prompt": None if teacher_text is None else clip_text(teacher_text, max_chars),
                "context": clip_text(ctx.text, max_chars) if has else None,
                "response": clip_text(s.response_text, max_chars),
                "action": s.action,
                "action_tokens": tokens,
            }
        )
    return records


def write_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """One JSON line per record, written atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def table_rows(records: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Rows of the W&B ``teacher/samples`` table (columns :data:`TABLE_COLUMNS`).

    ``action_tokens`` is compact: ``'tok'×w`` per action token (just ``'tok'`` without context).
    """
    out = []
    for r in records:
        toks = " ".join(
            repr(e["token"]) + ("" if e["weight"] is None else f"×{e['weight']:.3f}") for e in r["action_tokens"]
        )
        out.append(
            [
                r["step"],
                f"{r['group_id']}/{r['traj_id']}",
                r["step_id"],
                ",".join(r["sources"]),
                r["advantage"],
                r["context"] or "",
                r["response"],
                toks,
            ]
        )
    return out
