"""The SERL training loop. It is handed its components (``serl/build.py`` makes them) and reads top to
bottom like DESIGN.md §1:

rollout → reward & advantage → insertion + feedback → teacher → learner → weight sync → track & checkpoint.

One persisted counter, ``step`` (completed training steps, ``u`` in SERL_REFERENCE §5.1), drives λ, the
teacher sync and the game sampling, so a resumed run continues exactly (fixes §10.5).

Periodic evaluation (SERL_REFERENCE §8.4: the reference validates every 15 steps and after the last one):
with ``eval_every = N > 0``, after every N-th training step and after the last one the policy plays the
held-out games through :func:`serl.evaluation.evaluate` — the same code as ``scripts/eval.py`` — and the
``eval/*`` metrics are logged with that step's training metrics; the per-game rows go to
``<run>/evals/step_<step>.json``. Evaluation restores the RNG state, so it does not change the training run.

Teacher inspection (SERL_REFERENCE §7.1 ``dump_teacher_log``): with ``teacher_log.every = N > 0``, every N-th
step while the teacher is active writes ``<run>/teacher/step_<step>.jsonl`` and a W&B ``teacher/samples``
table (:mod:`serl.teacher_log`). A failing dump warns and sets ``teacher_log/errors``; it never stops training.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from serl.algo.advantages import grpo_advantages, step_scores, trajectory_grpo_advantages
from serl.batch import action_masks, collate
from serl.checkpoint import (
    TrainingState,
    checkpoint_path,
    load_checkpoint,
    load_trainable,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trainable_state,
)
from serl.envs.base import EnvSuite
from serl.evaluation import EvalSettings, evaluate
from serl.feedback.base import FeedbackSource
from serl.insertion.base import Insertion
from serl.learner import Learner
from serl.rollout.base import RolloutWorker
from serl.teacher import TeacherScorer
from serl.teacher_log import (
    TABLE_COLUMNS,
    TABLE_KEY,
    TeacherLogSettings,
    build_records,
    dump_path,
    select_rows,
    table_rows,
    write_records,
)
from serl.tracking import Tracker, atomic_write_text
from serl.types import Step, TeacherContext, TrainBatch, Trajectory

ADVANTAGE_CHOICES = ("cross_step", "trajectory")


@dataclass
class TrainerSettings:
    steps: int  # training steps to reach (a resumed run continues up to this count)
    n_tasks: int  # games per training step
    group_size: int  # rollouts per game (GRPO group)
    seed: int = 0
    run_dir: Path = Path("outputs/run")
    save_every: int = 1  # checkpoint every N steps (0: only at the end)
    advantage: str = "cross_step"  # cross_step (reference §1.5) | trajectory
    norm_by_std: bool = True
    invalid_penalty: float = 0.1
    resume: str | None = None
    eval_every: int = 0  # evaluate every N training steps and after the last one (0: never)
    eval_at_start: bool = False  # with eval_every > 0: also evaluate the initial policy (logged at step 0)
    evaluation: EvalSettings | None = None  # what an evaluation plays (needed when eval_every > 0)
    teacher_log: TeacherLogSettings = field(default_factory=TeacherLogSettings)  # teacher dumps (off by default)
    extra_summary: dict[str, Any] = field(default_factory=dict)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def mixed_group_fraction(groups: Sequence[Sequence[Trajectory]]) -> float:
    """Fraction of GRPO groups with mixed outcomes (some won, some lost): the only groups whose episode
    reward differs, i.e. that carry a win/loss signal for the advantage (§1.5)."""
    return _mean([float(0 < sum(t.won for t in g) < len(g)) for g in groups])


class Trainer:
    def __init__(
        self,
        settings: TrainerSettings,
        suite: EnvSuite,
        worker: RolloutWorker,
        learner: Learner,
        teacher: TeacherScorer | None,
        feedback: FeedbackSource,
        insertion: Insertion,
        decay: Callable[[int], float],
        tracker: Tracker,
        decode: Callable[[Sequence[int]], str],
        pad_id: int,
    ):
        if settings.advantage not in ADVANTAGE_CHOICES:
            raise ValueError(f"advantage={settings.advantage!r} is not one of {ADVANTAGE_CHOICES}")
        if settings.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0: never), got {settings.eval_every}")
        if settings.eval_every > 0 and settings.evaluation is None:
            raise ValueError("eval_every > 0 needs evaluation settings (TrainerSettings.evaluation)")
        self.s = settings
        self.suite = suite
        self.worker = worker
        self.learner = learner
        self.model = learner.model
        # The teacher runs only when there is something to show it (feedback=none is plain GRPO).
        self.teacher = teacher if (teacher is not None and feedback.enabled) else None
        self.feedback = feedback
        self.insertion = insertion
        self.decay = decay
        self.tracker = tracker
        self.decode = decode
        self.pad_id = pad_id
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.checkpoint_s = 0.0  # total time spent writing checkpoints
        self.last_eval_step: int | None = None  # training step of the latest evaluation

    # ------------------------------------------------------------------------------ checkpointing
    def save(self) -> Path:
        state = TrainingState(
            step=self.step,
            model=trainable_state(self.model),  # the adapter with LoRA; frozen base weights come from the config
            optimizer=self.learner.optimizer.state_dict(),
            teacher=self.teacher.state_dict() if self.teacher is not None else None,
            rng=rng_state(),
            extra={"run_dir": str(self.s.run_dir)},
        )
        return save_checkpoint(self.s.run_dir / "checkpoints", state)

    def restore(self, path: str | Path) -> None:
        path = checkpoint_path(path)
        state = load_checkpoint(path)
        load_trainable(self.model, state.model, path)
        self.learner.optimizer.load_state_dict(state.optimizer)
        if self.teacher is not None and state.teacher is not None:
            self.teacher.load_state_dict(state.teacher)
        set_rng_state(state.rng)
        self.step = state.step
        self.worker.generator.sync_weights(self.model)

    # ------------------------------------------------------------------------------------- helpers
    def _advantages(self, steps: list[Step], owners: list[Trajectory]) -> torch.Tensor:
        """§1.4–1.5: episode reward on every step, invalid penalty, group-relative normalisation."""
        rewards = torch.tensor([t.episode_reward for t in owners], dtype=torch.float32)
        valid = torch.tensor([s.valid for s in steps], dtype=torch.bool)
        scores = step_scores(rewards, valid, invalid_penalty=self.s.invalid_penalty)
        groups = torch.tensor([t.group_id for t in owners], dtype=torch.long)
        if self.s.advantage == "cross_step":
            return grpo_advantages(scores, groups, norm_by_std=self.s.norm_by_std)
        trajs = torch.tensor([t.group_id * self.s.group_size + t.traj_id for t in owners], dtype=torch.long)
        return trajectory_grpo_advantages(scores, groups, trajs, norm_by_std=self.s.norm_by_std)

    @staticmethod
    def _groups(trajectories: list[Trajectory]) -> list[list[Trajectory]]:
        """The GRPO groups of a step (by group id), each ordered by trajectory index."""
        by_group: dict[int, list[Trajectory]] = {}
        for t in trajectories:
            by_group.setdefault(t.group_id, []).append(t)
        return [sorted(g, key=lambda t: t.traj_id) for _, g in sorted(by_group.items())]

    def _contexts(self, trajectories: list[Trajectory], groups: list[list[Trajectory]]) -> list[TeacherContext]:
        """Insertion + feedback for every step, flattened in the same order as the steps of ``trajectories``."""
        out: dict[tuple[int, int, int], TeacherContext] = {}
        for group in groups:
            for traj, ctxs in zip(group, self.insertion.contexts(group, self.feedback)):
                for step, ctx in zip(traj.steps, ctxs):
                    out[(traj.group_id, traj.traj_id, step.step_id)] = ctx
        return [out[(t.group_id, t.traj_id, s.step_id)] for t in trajectories for s in t.steps]

    def _episode_metrics(self, trajectories: list[Trajectory], steps: list[Step]) -> dict[str, float]:
        rewards = [t.episode_reward for t in trajectories]
        lengths = [t.length for t in trajectories]
        m = {f"episode/{k}": v for k, v in self.suite.success_metrics(trajectories).items()}
        m.update(
            {
                "episode/reward/mean": _mean(rewards),
                "episode/reward/max": max(rewards),
                "episode/reward/min": min(rewards),
                "episode/length/mean": _mean(lengths),
                "episode/length/max": float(max(lengths)),
                "episode/length/min": float(min(lengths)),
                "episode/valid_action_ratio": _mean([float(s.valid) for s in steps]),
                "episode/mixed_group_fraction": mixed_group_fraction(self._groups(trajectories)),
                "episode/step_samples": float(len(steps)),
            }
        )
        return m

    @staticmethod
    def _serl_metrics(
        contexts: list[TeacherContext], has: torch.Tensor, masks: list[list[bool]], lam: float
    ) -> dict[str, float]:
        """SERL_REFERENCE §5.3 driver-side metrics; ``has`` marks the rows the teacher scored (a context and a
        non-zero advantage)."""
        n = len(masks)
        m = {
            "serl/context_available_fraction": _mean([float(c.has_context) for c in contexts]),
            "serl/teacher_scored_fraction": float(has.float().mean()) if n else 0.0,
        }
        sources = sorted({src for c in contexts for src in c.sources})
        for src in sources:
            m[f"serl/{src}_reference_fraction"] = _mean([float(src in c.sources) for c in contexts])
        rows = [i for i in range(n) if bool(has[i])]
        tok = sum(len(masks[i]) for i in rows)
        m["serl/action_token_fraction"] = sum(sum(masks[i]) for i in rows) / tok if tok else 0.0
        m["serl/action_parse_failure_fraction"] = _mean([float(not any(masks[i])) for i in rows])
        sizes = [c.anchor_size for c in contexts if c.anchor_size is not None]
        if sizes:
            m["serl/anchor_group_size_mean"] = _mean(sizes)
            m["serl/anchor_action_count_mean"] = _mean([c.anchor_actions for c in contexts if c.anchor_actions is not None])
        return m

    # ------------------------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any]:
        if self.s.resume:
            self.restore(self.s.resume)
        start = self.step
        t_start = time.time()
        ok = False
        bar = tqdm(total=self.s.steps, initial=start, desc="serl", unit="step", dynamic_ncols=True)
        try:
            if self.s.eval_every > 0 and self.s.eval_at_start and self.step == 0:  # where the curve starts
                metrics = self.run_eval(bar)
                self.history.append(metrics)
                self.tracker.log(metrics, step=0)
            while self.step < self.s.steps:
                metrics = self.train_step(bar)
                if self._eval_due():
                    metrics.update(self.run_eval(bar))
                self.history.append(metrics)
                self.tracker.log(metrics, step=self.step)
                bar.update(1)
                postfix = (
                    f"success {metrics['episode/success_rate']:.2f} valid {metrics['episode/valid_action_ratio']:.2f} "
                    f"loss {metrics['actor/loss']:+.4f} λ {metrics['serl/lambda']:.3f}"
                )
                if "eval/success_rate" in metrics:
                    postfix += f" eval success {metrics['eval/success_rate']:.2f}"
                bar.set_postfix_str(postfix)
                if (self.s.save_every and self.step % self.s.save_every == 0) or self.step == self.s.steps:
                    t0 = time.time()
                    self.save()
                    self.checkpoint_s += time.time() - t0
            ok = True
        finally:
            bar.close()
            summary = self.summary(start, time.time() - t_start, ok)
            self.tracker.summary(summary)
        return summary

    # ---------------------------------------------------------------------------------- evaluation
    def _eval_due(self) -> bool:
        """After every ``eval_every``-th completed step and after the last one (SERL_REFERENCE §8.4)."""
        every = self.s.eval_every
        return every > 0 and (self.step % every == 0 or self.step == self.s.steps)

    def run_eval(self, bar: tqdm | None = None) -> dict[str, float]:
        """Evaluate the current policy (:func:`serl.evaluation.evaluate`); write the per-game rows to
        ``<run>/evals/step_<step>.json``; return the ``eval/*`` and ``time/eval_s`` metrics."""
        e = self.s.evaluation
        assert e is not None  # checked in __init__

        def progress(finished: int, total: int) -> None:
            if bar is not None:
                bar.set_postfix_str(f"step {self.step}: evaluating, {finished}/{total} games finished")

        result = evaluate(
            self.worker,
            self.suite,
            n_games=e.n_games,
            seed=e.seed,
            temperature=e.temperature,
            max_turns=e.max_turns,
            progress=progress,
        )
        out = self.s.run_dir / "evals" / f"step_{self.step:06d}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": self.step, "settings": asdict(e), **result.to_json()}
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
        self.last_eval_step = self.step
        return result.metrics

    # ------------------------------------------------------------------------------ one training step
    def train_step(self, bar: tqdm | None = None) -> dict[str, float]:
        u = self.step
        t_step = time.time()
        lam = float(self.decay(u)) if self.teacher is not None else 0.0
        teacher_active = self.teacher is not None and lam > 0

        # 1. rollout: n_tasks games x group_size episodes (§1.2-1.3)
        t0 = time.time()
        games = self.suite.train_games(self.s.n_tasks, seed=self.s.seed * 1_000_003 + u)

        turns = [0]

        def progress(finished: int, total: int) -> None:  # called by the worker after every turn
            turns[0] += 1
            if bar is not None:
                bar.set_postfix_str(f"step {u + 1}: rollout turn {turns[0]}, {finished}/{total} episodes finished")

        trajectories = self.worker.collect(games, self.s.group_size, seed=self.s.seed * 1_000_003 + u, progress=progress)
        steps = [s for t in trajectories for s in t.steps]
        owners = [t for t in trajectories for _ in t.steps]
        t_rollout = time.time() - t0

        # 2. reward & advantage (§1.4-1.5)
        advantages = self._advantages(steps, owners)
        masks = action_masks(steps, self.decode)

        # 3-5. insertion + feedback -> teacher scores, once per step (§2, §3, §4; DESIGN §4)
        t0 = time.time()
        teacher_lp = has = None
        contexts: list[TeacherContext] = []
        feedback_metrics: dict[str, float] = {}
        synced = False
        if self.teacher is not None:
            synced = self.teacher.maybe_sync(self.model, u)
        if teacher_active:
            if bar is not None:
                bar.set_postfix_str(f"step {u + 1}: teacher scoring")
            groups = self._groups(trajectories)
            feedback_metrics = self.feedback.prepare(groups)  # batched I/O (judge requests), only while λ > 0
            contexts = self._contexts(trajectories, groups)
            # A zero advantage makes the teacher's weight irrelevant (Ã = A·multiplier, §5.2): only rows
            # with a non-zero advantage are scored (a group whose steps all score alike costs no teacher forward).
            scored = [c if a != 0 else TeacherContext() for c, a in zip(contexts, advantages.tolist())]
            n_resp = max(len(s.response_ids) for s in steps)
            teacher_lp, has = self.teacher.score(
                [s.prompt for s in steps], scored, [s.response_ids for s in steps], n_resp
            )
        t_teacher = time.time() - t0

        # 6. learner update, then push the new weights to the rollout backend
        t0 = time.time()
        if bar is not None:
            bar.set_postfix_str(f"step {u + 1}: policy update on {len(steps)} step samples")
        batch = collate(steps, advantages, masks, self.pad_id, teacher_lp, has)
        metrics = self.learner.update(batch, lam if teacher_active else 0.0)
        t_update = time.time() - t0
        t0 = time.time()
        self.worker.generator.sync_weights(self.model)
        t_sync = time.time() - t0
        self.step = u + 1

        # 7. metrics (§5.3, §8.4)
        metrics.update(self._episode_metrics(trajectories, steps))
        metrics["serl/lambda"] = lam
        metrics["serl/teacher_inactive_after_decay"] = float(self.teacher is not None and lam == 0.0)
        metrics["serl/teacher_synced"] = float(synced)
        if teacher_active:
            metrics.update(self._serl_metrics(contexts, has, masks, lam))
            metrics.update(feedback_metrics)
            metrics["serl/teacher_prompt_truncated"] = float(self.teacher.truncated)
            metrics["serl/teacher_context_dropped"] = float(self.teacher.dropped)
        metrics["advantage/mean"] = float(advantages.mean())
        metrics["advantage/max"] = float(advantages.max())
        metrics["advantage/min"] = float(advantages.min())
        stats = getattr(self.worker, "last_stats", {}) or {}
        tokens = float(stats.get("tokens_generated", sum(len(s.response_ids) for s in steps)))
        metrics["rollout/tokens"] = tokens
        metrics["rollout/tokens_per_s"] = tokens / stats["generate_s"] if stats.get("generate_s") else 0.0
        metrics["time/env_s"] = float(stats.get("env_s", 0.0))
        metrics["time/rollout_s"] = t_rollout
        metrics["time/teacher_s"] = t_teacher
        metrics["time/update_s"] = t_update
        metrics["time/weight_sync_s"] = t_sync
        if teacher_active and self.s.teacher_log.due(self.step):
            metrics.update(self._teacher_log(batch, advantages, steps, owners, contexts, lam))
        metrics["time/step_s"] = time.time() - t_step
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise FloatingPointError(f"metric {k} is {v} at training step {self.step}")
        return metrics

    def _teacher_log(
        self,
        batch: TrainBatch,
        advantages: torch.Tensor,
        steps: list[Step],
        owners: list[Trajectory],
        contexts: list[TeacherContext],
        lam: float,
    ) -> dict[str, float]:
        """Write ``<run>/teacher/step_<step>.jsonl`` and log the ``teacher/samples`` table (serl/teacher_log.py).

        Prompts are the exact ids each model scored, decoded with their special tokens: the student's
        ``prompt_ids`` and the teacher's :meth:`~serl.teacher.TeacherScorer.prompt_ids` (middle-out truncation
        included). Any failure becomes a warning and ``teacher_log/errors = 1``; training goes on.
        """
        cfg, teacher = self.s.teacher_log, self.teacher
        assert teacher is not None  # only called while the teacher is active
        tok = teacher.tokenizer

        def teacher_prompt(i: int) -> str | None:  # bumps teacher.truncated/dropped, read before this call
            ids = teacher.prompt_ids(steps[i].prompt, contexts[i])
            return None if ids is None else tok.decode(ids)

        try:
            records = build_records(
                step=self.step,
                lam=lam,
                weight_clip=self.learner.weight_clip,
                batch=batch,
                advantages=advantages.tolist(),
                steps=steps,
                owners=owners,
                contexts=contexts,
                rows=select_rows(batch.has_context.tolist(), cfg.max_samples),
                student_prompt=lambda i: tok.decode(steps[i].prompt_ids),
                teacher_prompt=teacher_prompt,
                token_text=lambda t: self.decode([t]),
                max_chars=cfg.max_chars,
            )
            write_records(dump_path(self.s.run_dir, self.step), records)
            self.tracker.log_table(TABLE_KEY, TABLE_COLUMNS, table_rows(records), step=self.step)
        except Exception as e:  # inspection must never stop training
            warnings.warn(f"teacher log of step {self.step} failed: {type(e).__name__}: {e}", RuntimeWarning)
            return {"teacher_log/errors": 1.0}
        return {"teacher_log/errors": 0.0}

    def summary(self, start: int, wall_s: float, ok: bool) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        out: dict[str, Any] = {
            "completed": ok,
            "steps_completed": self.step,
            "steps_this_run": self.step - start,
            "resumed_from_step": start if self.s.resume else None,
            "wall_time_s": wall_s,
            "checkpoint_time_s": self.checkpoint_s,
            "run_dir": str(self.s.run_dir),
        }
        if self.history:
            for key in sorted({k for h in self.history for k in h}):
                vals = [h[key] for h in self.history if key in h]
                out[f"last/{key}"] = last.get(key, vals[-1])
                if key.startswith("episode/") and ("success_rate" in key or "mixed_group" in key):
                    out[f"mean/{key}"] = _mean(vals)
                if key.endswith(("_min", "/min")):  # extremes over the run (e.g. the teacher's weight range)
                    out[f"min/{key}"] = min(vals)
                elif key.endswith(("_max", "/max")):
                    out[f"max/{key}"] = max(vals)
            for key in ("time/rollout_s", "time/teacher_s", "time/update_s", "time/step_s", "time/eval_s"):
                out[f"total/{key}"] = sum(h.get(key, 0.0) for h in self.history)
        # last/eval/* above are the latest evaluation's metrics; this is the step it ran at
        out["last_eval_step"] = self.last_eval_step
        out.update(self.s.extra_summary)
        return out
