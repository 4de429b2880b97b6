"""The only place where a Hydra config becomes objects (DESIGN §2).

``validate(cfg)`` checks every value and instantiates the cheap pure components (decay schedule, feedback
source, insertion), so a bad choice fails before any model or game is loaded, with a message naming the
bad value and the allowed ones. ``build_trainer(cfg, run_dir)`` then loads the model and wires the
rollout worker, teacher, learner and trackers into a :class:`~serl.trainer.Trainer`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside its allowed range or set."""


DTYPES = ("float32", "bfloat16")
ADVANTAGES = ("cross_step", "trajectory")
STUDENT_LOGPROBS = ("old", "current")
ROLLOUT_BACKENDS = ("hf",)
LOGGER_MODES = ("auto", "online", "offline", "disabled")


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {rule}")


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    _check(value in allowed, key, value, f"allowed values are {', '.join(map(str, allowed))}")


def make(node: DictConfig) -> Any:
    """Instantiate a group option: its ``_target_`` with every key but ``name`` as a keyword argument."""
    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("name", None)
    return instantiate(spec)


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check all values; return the pure components built on the way (decay, feedback, insertion)."""
    _check(int(cfg.steps) >= 1, "steps", cfg.steps, "must be >= 1")
    _check(int(cfg.n_tasks) >= 1, "n_tasks", cfg.n_tasks, "must be >= 1")
    _check(int(cfg.group_size) >= 2, "group_size", cfg.group_size, "must be >= 2 (GRPO compares rollouts of a group)")
    _check(int(cfg.save_every) >= 0, "save_every", cfg.save_every, "must be >= 0 (0: only after the last step)")
    _check(int(cfg.torch_threads) >= 0, "torch_threads", cfg.torch_threads, "must be >= 0")
    _check(str(cfg.device) == "cpu" or str(cfg.device).startswith("cuda"), "device", cfg.device, "cpu or cuda[:i]")

    lr = cfg.learner
    _check(float(lr.lr) > 0, "learner.lr", lr.lr, "must be > 0")
    _check(float(lr.grad_clip) > 0, "learner.grad_clip", lr.grad_clip, "must be > 0")
    _check(float(lr.weight_decay) >= 0, "learner.weight_decay", lr.weight_decay, "must be >= 0")
    _check(int(lr.mini_batch_size) >= 1, "learner.mini_batch_size", lr.mini_batch_size, "must be >= 1")
    _check(int(lr.micro_batch_size) >= 1, "learner.micro_batch_size", lr.micro_batch_size, "must be >= 1")
    _check(int(lr.ppo_epochs) >= 1, "learner.ppo_epochs", lr.ppo_epochs, "must be >= 1")

    a = cfg.algorithm
    _one_of("algorithm.advantage", a.advantage, ADVANTAGES)
    _one_of("algorithm.student_logprob", a.student_logprob, STUDENT_LOGPROBS)
    _check(float(a.invalid_penalty) >= 0, "algorithm.invalid_penalty", a.invalid_penalty, "must be >= 0")
    _check(0 <= float(a.clip_low) < 1, "algorithm.clip_low", a.clip_low, "must be in [0, 1)")
    _check(float(a.clip_high) >= 0, "algorithm.clip_high", a.clip_high, "must be >= 0")
    _check(float(a.clip_c) > 1, "algorithm.clip_c", a.clip_c, "must be > 1 (dual-clip bound)")
    _check(float(a.entropy_coef) >= 0, "algorithm.entropy_coef", a.entropy_coef, "must be >= 0")
    _check(float(a.weight_clip) >= 0, "algorithm.weight_clip", a.weight_clip, "must be >= 0")
    _check(int(a.teacher_sync_interval) >= 1, "algorithm.teacher_sync_interval", a.teacher_sync_interval, "must be >= 1")
    _check(int(a.teacher_max_prompt_tokens) >= 1, "algorithm.teacher_max_prompt_tokens", a.teacher_max_prompt_tokens, "must be >= 1")
    for key in ("{prompt}", "{privileged_context}"):
        _check(key in a.privileged_template, "algorithm.privileged_template", a.privileged_template, f"must contain {key}")

    r = cfg.rollout
    _one_of("rollout.name", r.name, ROLLOUT_BACKENDS)
    _check(int(r.max_new_tokens) >= 1, "rollout.max_new_tokens", r.max_new_tokens, "must be >= 1")
    _check(float(r.temperature) > 0, "rollout.temperature", r.temperature, "must be > 0 for training")
    _check(0 < float(r.top_p) <= 1, "rollout.top_p", r.top_p, "must be in (0, 1]")
    _check(int(r.max_prompt_tokens) >= 1, "rollout.max_prompt_tokens", r.max_prompt_tokens, "must be >= 1")

    _one_of("model.dtype", cfg.model.dtype, DTYPES)
    _one_of("logger.mode", cfg.logger.mode, LOGGER_MODES)
    _check(int(cfg.env.max_turns) >= 1, "env.max_turns", cfg.env.max_turns, "must be >= 1")

    # The pure components validate their own arguments (lambda0 in [0, 1], horizons, anchor keys ...).
    built = {}
    for group in ("decay", "feedback", "insertion"):
        try:
            built[group] = make(cfg[group])
        except Exception as e:  # hydra wraps the constructor's error; surface it with the group name
            cause = e.__cause__ or e
            raise ConfigError(f"{group}={cfg[group].name}: {cause}") from e
    return built


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_trainer(cfg: DictConfig, run_dir: str | Path):
    """Validate, then build every component; returns a ready :class:`~serl.trainer.Trainer`."""
    from serl.learner import Learner
    from serl.policy.models import load_policy, resolve_model_path
    from serl.rollout.base import RolloutWorker
    from serl.rollout.hf import HFGenerator
    from serl.teacher import TeacherScorer
    from serl.tracking import JsonlTracker, MultiTracker, WandbTracker
    from serl.trainer import Trainer, TrainerSettings

    parts = validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if int(cfg.torch_threads) > 0:
        torch.set_num_threads(int(cfg.torch_threads))
    seed_everything(int(cfg.seed))

    suite = make(cfg.env)
    path = resolve_model_path(str(cfg.model.path))
    lora = OmegaConf.to_container(cfg.model.lora, resolve=True) if cfg.model.lora is not None else None
    model, tokenizer = load_policy(
        path, dtype=str(cfg.model.dtype), lora=lora, gradient_checkpointing=bool(cfg.model.gradient_checkpointing)
    )
    model.to(torch.device(str(cfg.device)))

    a, r, lr = cfg.algorithm, cfg.rollout, cfg.learner
    generator = HFGenerator(model, tokenizer)
    worker = RolloutWorker(
        generator,
        tokenizer,
        suite,
        max_new_tokens=int(r.max_new_tokens),
        temperature=float(r.temperature),
        top_p=float(r.top_p),
        max_prompt_tokens=int(r.max_prompt_tokens),
    )
    learner = Learner(
        model,
        lr=float(lr.lr),
        betas=tuple(lr.betas),
        weight_decay=float(lr.weight_decay),
        grad_clip=float(lr.grad_clip),
        mini_batch_size=int(lr.mini_batch_size),
        micro_batch_size=int(lr.micro_batch_size),
        ppo_epochs=int(lr.ppo_epochs),
        clip_low=float(a.clip_low),
        clip_high=float(a.clip_high),
        clip_c=float(a.clip_c),
        entropy_coef=float(a.entropy_coef),
        weight_clip=float(a.weight_clip),
        temperature=float(r.temperature),
        student_logprob=str(a.student_logprob),
    )
    teacher = None
    if bool(a.teacher) and parts["feedback"].enabled:
        teacher = TeacherScorer(
            model,
            tokenizer,
            sync_interval=int(a.teacher_sync_interval),
            max_prompt_tokens=int(a.teacher_max_prompt_tokens),
            privileged_template=str(a.privileged_template),
            temperature=float(r.temperature),
            micro_batch_size=int(lr.micro_batch_size),
        )

    resolved = OmegaConf.to_container(cfg, resolve=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    trackers = [JsonlTracker(run_dir, stream_metrics=cfg.logger.name != "none")]
    if bool(cfg.logger.wandb):
        trackers.append(
            WandbTracker(
                run_dir,
                project=str(cfg.logger.project),
                name=str(cfg.run_name),
                config=resolved,
                mode=str(cfg.logger.mode),
                entity=cfg.logger.entity,
                tags=[cfg.env.name, cfg.feedback.name, cfg.insertion.name, cfg.decay.name, cfg.algorithm.name],
            )
        )
    settings = TrainerSettings(
        steps=int(cfg.steps),
        n_tasks=int(cfg.n_tasks),
        group_size=int(cfg.group_size),
        seed=int(cfg.seed),
        run_dir=run_dir,
        save_every=int(cfg.save_every),
        advantage=str(a.advantage),
        norm_by_std=bool(a.norm_by_std),
        invalid_penalty=float(a.invalid_penalty),
        resume=str(cfg.resume) if cfg.resume else None,
        extra_summary={
            "run_name": str(cfg.run_name),
            "model_path": str(path),
            "env_source": getattr(suite, "source", None),
            "choices": {g: str(cfg[g].name) for g in ("env", "model", "rollout", "algorithm", "feedback", "insertion", "decay", "logger")},
        },
    )
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    return Trainer(
        settings,
        suite=suite,
        worker=worker,
        learner=learner,
        teacher=teacher,
        feedback=parts["feedback"],
        insertion=parts["insertion"],
        decay=parts["decay"],
        tracker=MultiTracker(trackers),
        decode=decode,
        pad_id=tokenizer.pad_token_id,
    )

