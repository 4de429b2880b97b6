"""The SERL training loop. It is handed its components (``serl/build.py`` makes them) and reads top to
bottom like docs/design.md §1:

rollout → reward & advantage → insertion + feedback → teacher → learner → weight sync → track & checkpoint.

One persisted counter, ``step`` (completed training steps, ``u`` in docs/reference.md §5.1), drives λ, the
teacher sync and the game sampling, so a resumed run continues exactly (fixes §10.5).

Periodic evaluation (docs/reference.md §8.4: the reference validates every 15 steps and after the last one):
with ``eval_every = N > 0``, after every N-th training step and after the last one the policy plays the
held-out games through :func:`serl.evaluation.evaluate` — the same code as ``scripts/eval.py`` — and the
``eval/*`` metrics are logged with that step's training metrics; the per-game rows go to
``<run>/evals/step_<step>.json``. Evaluation restores the RNG state, so it does not change the training run.

Teacher inspection (docs/reference.md §7.1 ``dump_teacher_log``): with ``teacher_log.every = N > 0``, every N-th
step while the teacher is active writes ``<run>/teacher/step_<step>.jsonl`` and a W&B ``teacher/samples``
table (:mod:`serl.teacher_log`). A failing dump warns and sets ``teacher_log/errors``; it never stops training.

Data parallel (``torchrun``, docs/distributed.md): with a :class:`~serl.distributed.Dist` of several ranks,
each rank plays its block of the step's games and builds the teacher contexts of its own groups; both are
gathered, so every rank holds the whole step and computes the same advantages and metrics; the teacher's and
the learner's forward/backward chunks are dealt over the ranks inside :class:`~serl.teacher.TeacherScorer`
and :class:`~serl.learner.Learner`. Only rank 0 writes files (its tracker is the real one).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from serl.algo.sampling import KeepAll
from serl.batch import action_masks, collate, step_columns
from serl.critic import NoCritic
from serl.checkpoint import assert_finite, check_writable, checkpoint_path, restore_training_state, save_training_state
from serl.distributed import SINGLE, Dist, local_tensor, merge_counts
from serl.envs.base import EnvSuite
from serl.evaluation import EvalSettings, evaluate
from serl.feedback.base import FeedbackSource
from serl.insertion.base import Insertion
from serl.learner import Learner
from serl.metrics import (
    advantage_metrics,
    check_finite,
    episode_metrics,
    groups_of,
    rollout_metrics,
    serl_metrics,
    summarize,
)
from serl.progress import Progress, Timer
from serl.policy.models import trainable_parameters
from serl.rollout.base import Rollout, RolloutWorker
from serl.rollout.sharded import collect_sharded
from serl.teacher import TeacherScorer, TeacherScores
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
from serl.types import Step, StepColumns, TeacherContext, TrainBatch, Trajectory


ROUND_SEED_STRIDE = 1_000_000_007  # seed offset of a training step's extra sampling rounds (a prime)


@dataclass
class TrainerSettings:
    steps: int  # training steps to reach (a resumed run continues up to this count)
    n_tasks: int  # games per training step
    group_size: int  # rollouts per game (GRPO group)
    seed: int = 0
    run_dir: Path = Path("outputs/run")
    save_every: int = 1  # checkpoint every N steps (0: only at the end)
    keep_last: int = 1  # step checkpoints kept on disk (the newest N)
    resume: str | None = None
    eval_every: int = 0  # evaluate every N training steps and after the last one (0: never)
    eval_at_start: bool = False  # with eval_every > 0: also evaluate the initial policy (logged at step 0)
    evaluation: EvalSettings | None = None  # what an evaluation plays (needed when eval_every > 0)
    teacher_log: TeacherLogSettings = field(default_factory=TeacherLogSettings)  # teacher dumps (off by default)
    teacher_every_row: bool = False  # score every row with a context (a loss reads the teacher), not only A != 0
    extra_summary: dict[str, Any] = field(default_factory=dict)


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
        advantage: Callable[[StepColumns], torch.Tensor],
        tracker: Tracker,
        decode: Callable[[Sequence[int]], str],
        pad_id: int,
        dist: Dist = SINGLE,
        sampling: Callable[[StepColumns], torch.Tensor] = KeepAll(),
        critic: Any = NoCritic(),
    ):
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
        self.advantage = advantage  # the algorithm's estimator: step columns -> [N] advantages (serl/algo/)
        self.sampling = sampling  # which groups of a round are kept, and how many rounds a step may play
        self.critic = critic  # the state values V(s_t) the estimator may read (algorithm.critic, serl/critic.py)
        self.tracker = tracker
        self.decode = decode
        self.pad_id = pad_id
        self.dist = dist  # this process's rank (serl.distributed); a single process by default
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.checkpoint_s = 0.0  # total time spent writing checkpoints
        self.last_eval_step: int | None = None  # training step of the latest evaluation

    # ------------------------------------------------------------------------------ checkpointing
    def save(self) -> Path:
        """Checkpoint the step counter, the policy's trainable weights (the adapter with LoRA; frozen base
        weights come from the config), the optimizer, the teacher and the RNG (serl/checkpoint.py); a
        collective under torchrun."""
        t0 = time.time()
        path = save_training_state(
            self.s.run_dir / "checkpoints",
            step=self.step,
            model=self.model,
            optimizer=self.learner.optimizer,
            teacher=self.teacher.snapshot if self.teacher is not None else None,
            extra={"run_dir": str(self.s.run_dir)},
            keep_last=self.s.keep_last,
            critic=self.critic.state_tensors(),
        )
        self.checkpoint_s += time.time() - t0
        return path

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, optimizer, teacher, RNG and step counter; the run's
        ``metrics.jsonl`` is cut back to the checkpoint's step, so every step is logged exactly once."""
        path = checkpoint_path(path)
        self.step, _ = restore_training_state(
            path,
            model=self.model,
            optimizer=self.learner.optimizer,
            teacher=self.teacher.snapshot if self.teacher is not None else None,
            critic=self.critic.load_state_tensors if self.critic.enabled else None,
        )
        self.tracker.rewind(self.step)
        self.worker.sync_weights(self.model)

    def _save_due(self) -> bool:
        return bool(self.s.save_every and self.step % self.s.save_every == 0) or self.step == self.s.steps

    # ------------------------------------------------------------------------------------- helpers
    def _seed(self, u: int) -> int:
        """Seed of training step ``u``'s game sample and rollout (a function of the step counter alone)."""
        return self.s.seed * 1_000_003 + u

    def _lambda(self, u: int) -> float:
        """λ of training step ``u`` (§5.1); 0 without a teacher."""
        return float(self.decay(u)) if self.teacher is not None else 0.0

    def rollout(self, u: int, progress: Progress) -> Rollout:
        """Training step ``u``'s groups: ``n_tasks`` games × ``group_size`` episodes. The sampling part
        (``algorithm.sampling``) keeps whole groups; while fewer than ``n_tasks`` are kept and it allows more
        rounds (DAPO's dynamic sampling), another ``n_tasks`` games are played. Kept groups are cut to
        ``n_tasks`` and, unless they are exactly the first round's, renumbered in order of arrival; when no
        round kept a group, the first round's groups are used. The stats add up over the rounds, plus
        ``sampling/rounds`` and ``sampling/kept_groups``."""
        kept: list[list[Trajectory]] = []
        first: list[Trajectory] | None = None
        stats: dict[str, float] = {}
        rounds = 0
        while rounds < self.sampling.max_rounds and len(kept) < self.s.n_tasks:
            seed = self._seed(u) + rounds * ROUND_SEED_STRIDE  # round 0: the step's own seed
            games = self.suite.train_games(self.s.n_tasks, seed=seed)
            label = "rollout" if rounds == 0 else f"rollout round {rounds + 1} ({len(kept)} groups kept)"
            played = collect_sharded(
                self.worker, self.dist, games, self.s.group_size, seed=seed, progress=progress.episodes(u + 1, label)
            )
            stats = {k: stats.get(k, 0.0) + played.stats.get(k, 0.0) for k in stats.keys() | played.stats.keys()}
            first = played.trajectories if first is None else first
            flags = iter(self.sampling(step_columns(played.trajectories)).tolist() if played.trajectories else [])
            for group in groups_of(played.trajectories):  # rows of step_columns: the same order
                if all([next(flags) for t in group for _ in t.steps]):
                    kept.append(group)
            rounds += 1
        kept = kept[: self.s.n_tasks]
        trajectories = [t for g in kept for t in g]
        if trajectories != first:  # some groups dropped or played in a later round: number them 0, 1, ...
            for gid, group in enumerate(kept):
                for t in group:
                    t.group_id = gid
        stats["sampling/rounds"] = float(rounds)
        stats["sampling/kept_groups"] = float(len(kept))
        return Rollout(trajectories or list(first or []), stats)

    def _contexts(self, trajectories: list[Trajectory]) -> list[TeacherContext]:
        """Insertion + feedback for every step, flattened in the same order as the steps of ``trajectories``."""
        out: dict[tuple[int, int, int], TeacherContext] = {}
        for group in groups_of(trajectories):
            for traj, ctxs in zip(group, self.insertion.contexts(group, self.feedback)):
                for step, ctx in zip(traj.steps, ctxs):
                    out[(traj.group_id, traj.traj_id, step.step_id)] = ctx
        return [out[(t.group_id, t.traj_id, s.step_id)] for t in trajectories for s in t.steps]

    def _teacher_pass(
        self, trajectories: list[Trajectory], steps: list[Step], advantages: torch.Tensor
    ) -> tuple[list[TeacherContext], TeacherScores, dict[str, float]]:
        """Feedback, insertion and the teacher's log-probs of the action tokens (§2–§4). A zero advantage
        makes the teacher's weight irrelevant (Ã = A·w, §5.2), so only rows with a non-zero advantage are
        scored, unless the loss itself reads the teacher (``teacher_every_row``). Returns the contexts, the
        scores and the feedback source's metrics."""
        assert self.teacher is not None
        lo, hi = self.dist.shard(self.s.n_tasks)  # each rank builds the contexts of the groups it played
        mine = [t for t in trajectories if lo <= t.group_id < hi]
        feedback_metrics = self.feedback.prepare(groups_of(mine))  # batched I/O (judge requests)
        contexts = self.dist.gather(self._contexts(mine))
        if self.dist.enabled:
            feedback_metrics = merge_counts(self.dist.gather_each(feedback_metrics))
        every = self.s.teacher_every_row
        scored = [c if (every or a != 0) else TeacherContext() for c, a in zip(contexts, advantages.tolist())]
        n_resp = max(len(s.response_ids) for s in steps)
        scores = self.teacher.score([s.prompt for s in steps], scored, [s.response_ids for s in steps], n_resp)
        return contexts, scores, feedback_metrics

    # ------------------------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any]:
        check_writable(self.s.run_dir / "checkpoints")  # before any rollout: a read-only folder fails now
        if self.s.resume:
            self.restore(self.s.resume)
        start, t_start, ok = self.step, time.time(), False
        progress = Progress(self.s.steps, initial=start, enabled=self.dist.is_main)
        try:
            if self.s.eval_every > 0 and self.s.eval_at_start and self.step == 0:  # where the curve starts
                self._log(self.run_eval(progress), step=0)
            while self.step < self.s.steps:
                metrics = self.train_step(progress)
                if self._eval_due():
                    metrics.update(self.run_eval(progress))
                self._log(metrics, step=self.step)
                progress.step_done(metrics)
                if self._save_due():
                    self.save()
            ok = True
        finally:
            progress.close()
            summary = self.summary(start, time.time() - t_start, ok)
            self.tracker.summary(summary)
        return summary

    def _log(self, metrics: dict[str, float], step: int) -> None:
        self.history.append(metrics)
        self.tracker.log(metrics, step=step)

    # ---------------------------------------------------------------------------------- evaluation
    def _eval_due(self) -> bool:
        """After every ``eval_every``-th completed step and after the last one (docs/reference.md §8.4)."""
        every = self.s.eval_every
        return every > 0 and (self.step % every == 0 or self.step == self.s.steps)

    def run_eval(self, progress: Progress | None = None) -> dict[str, float]:
        """Evaluate the current policy (:func:`serl.evaluation.evaluate`); write the per-game rows to
        ``<run>/evals/step_<step>.json``; return the ``eval/*`` and ``time/eval_s`` metrics."""
        e = self.s.evaluation
        assert e is not None  # checked in __init__
        result = evaluate(
            self.worker,
            self.suite,
            n_games=e.n_games,
            seed=e.seed,
            temperature=e.temperature,
            max_turns=e.max_turns,
            progress=progress.episodes(self.step, "evaluating,") if progress is not None else None,
            dist=self.dist,
        )
        if self.dist.is_main:
            out = self.s.run_dir / "evals" / f"step_{self.step:06d}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            record = {"step": self.step, "settings": asdict(e), **result.to_json()}
            atomic_write_text(out, json.dumps(record, indent=2) + "\n")
        self.last_eval_step = self.step
        return result.metrics

    # ------------------------------------------------------------------------------ one training step
    def train_step(self, progress: Progress) -> dict[str, float]:
        u = self.step
        lam = self._lambda(u)
        timer = Timer()

        # 1. rollout: n_tasks games x group_size episodes (§1.2-1.3), each rank playing its block of the games
        with timer("rollout"):
            rollout = self.rollout(u, progress)
        trajectories = rollout.trajectories
        if not trajectories:
            raise RuntimeError(f"training step {u + 1}: every episode was dropped after env failures (warnings above)")
        steps = [s for t in trajectories for s in t.steps]
        owners = [t for t in trajectories for _ in t.steps]
        self.worker.sleep()  # a sleeping vLLM engine frees the GPU for the critic, teacher and update (rollout.sleep)

        # 2. reward & advantage (GRPO: §1.4-1.5; any estimator of algorithm.advantage, PPO's GAE from the
        #    critic's state values); the action tokens (§6)
        with timer("critic"):
            columns = step_columns(trajectories, values=self.critic.values(steps))
        advantages = self.advantage(columns)
        masks = action_masks(steps, self.decode, self.suite.response_format)

        # 3-5. insertion + feedback -> teacher log-probs on the action tokens, while λ > 0 (§2-§4)
        synced = self.teacher is not None and self.teacher.maybe_sync(self.model, u)
        scores = None  # the teacher's log-probs, while λ > 0
        if lam > 0:
            progress.phase(u + 1, "teacher scoring")
            with timer("teacher"):
                contexts, scores, feedback_metrics = self._teacher_pass(trajectories, steps, advantages)

        # 6. learner update (SERL's reweighted advantage, §5.2), then the new weights go to the rollout backend
        progress.phase(u + 1, f"policy update on {len(steps)} step samples")
        with timer("update"):
            lp, has = (scores.logprobs, scores.has_context) if scores is not None else (None, None)
            batch = collate(steps, advantages, masks, self.pad_id, lp, has)
            metrics = self.learner.update(batch, lam)
        with timer("critic"):  # PPO: the critic regresses V(s_t) on the estimator's value targets
            metrics.update(self.critic.update(columns, self.advantage))
        assert_finite(
            {k: local_tensor(p.detach()) for k, p in trainable_parameters(self.model).items()},
            f"the policy after training step {u + 1} (nothing of it was saved)",
        )
        with timer("weight_sync"):
            self.worker.sync_weights(self.model)
        self.step = u + 1

        # 7. metrics (§5.3, §8.4)
        metrics.update(episode_metrics(trajectories, steps, self.suite.success_metrics(trajectories)))
        metrics.update(advantage_metrics(advantages))
        metrics.update(rollout_metrics(rollout.stats, steps))
        metrics.update(self._teacher_metrics(lam, synced, scores))
        if scores is not None:
            metrics.update(serl_metrics(contexts, scores.has_context, masks))
            metrics.update(feedback_metrics)
            if self.s.teacher_log.due(self.step) and self.dist.is_main:
                metrics.update(self._teacher_log(batch, advantages, steps, owners, contexts, lam))
        metrics.update(timer.metrics())
        check_finite(metrics, self.step)
        return metrics

    def _teacher_metrics(self, lam: float, synced: bool, scores: TeacherScores | None) -> dict[str, float]:
        m = {
            "serl/lambda": lam,
            "serl/teacher_inactive_after_decay": float(self.teacher is not None and lam == 0.0),
            "serl/teacher_synced": float(synced),
        }
        if scores is not None:
            m["serl/teacher_prompt_truncated"] = float(scores.truncated)
            m["serl/teacher_context_dropped"] = float(scores.dropped)
        return m

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
                # the reweighting's clip; the identity (no weight_clip) is c = 0: every weight and multiplier 1
                weight_clip=getattr(self.learner.reweight, "weight_clip", 0.0),
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
        out: dict[str, Any] = {
            "completed": ok,
            "steps_completed": self.step,
            "steps_this_run": self.step - start,
            "resumed_from_step": start if self.s.resume else None,
            "wall_time_s": wall_s,
            "checkpoint_time_s": self.checkpoint_s,
            "run_dir": str(self.s.run_dir),
        }
        out.update(summarize(self.history))
        # last/eval/* above are the latest evaluation's metrics; this is the step it ran at
        out["last_eval_step"] = self.last_eval_step
        out.update(self.s.extra_summary)
        return out
