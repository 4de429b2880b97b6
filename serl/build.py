"""The only place where a Hydra config becomes objects (DESIGN §2).

``validate(cfg)`` checks every value and instantiates the cheap pure components (decay schedule, feedback
source, insertion), so a bad choice fails before any model or game is loaded, with a message naming the
bad value and the allowed ones. ``build_trainer(cfg, run_dir)`` then loads the model and wires the
rollout worker, teacher, learner and trackers into a :class:`~serl.trainer.Trainer`.

``scripts/eval.py`` uses the same builders: ``validate_eval(cfg)`` checks its config (``conf/eval.yaml``),
then :func:`build_policy` (a model name, HF folder or serl training checkpoint), :func:`build_worker` and
:func:`build_tracker` make what :func:`serl.evaluation.evaluate` needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside its allowed range or set."""


DTYPES = ("auto", "float32", "bfloat16")
ADVANTAGES = ("cross_step", "trajectory")
STUDENT_LOGPROBS = ("old", "current")
ROLLOUT_BACKENDS = ("hf", "vllm")
LOGGER_MODES = ("auto", "online", "offline", "disabled")


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {rule}")


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    _check(value in allowed, key, value, f"allowed values are {', '.join(map(str, allowed))}")


def _drop_names(spec: Any) -> Any:
    """``spec`` without the ``name`` key of every node that has a ``_target_`` (option names are labels)."""
    if isinstance(spec, dict):
        return {k: _drop_names(v) for k, v in spec.items() if not (k == "name" and "_target_" in spec)}
    if isinstance(spec, list):
        return [_drop_names(v) for v in spec]
    return spec


def make(node: DictConfig) -> Any:
    """Instantiate a group option: its ``_target_`` with every key but ``name`` as a keyword argument.

    Nested options (the parts of a feedback combination, placed there by the option's defaults list) are
    instantiated the same way, depth first; containers reach the constructors as plain dicts and lists.
    """
    spec = _drop_names(OmegaConf.to_container(node, resolve=True))
    return instantiate(spec, _convert_="all")


def _validate_runtime(cfg: DictConfig) -> None:
    """The keys training and evaluation share: device, threads, model, rollout backend, logger, env cap."""
    _check(int(cfg.torch_threads) >= 0, "torch_threads", cfg.torch_threads, "must be >= 0")
    _check(str(cfg.device) == "cpu" or str(cfg.device).startswith("cuda"), "device", cfg.device, "cpu or cuda[:i]")
    r = cfg.rollout
    _one_of("rollout.name", r.name, ROLLOUT_BACKENDS)
    _check(int(r.max_new_tokens) >= 1, "rollout.max_new_tokens", r.max_new_tokens, "must be >= 1")
    _check(0 < float(r.top_p) <= 1, "rollout.top_p", r.top_p, "must be in (0, 1]")
    _check(int(r.max_prompt_tokens) >= 1, "rollout.max_prompt_tokens", r.max_prompt_tokens, "must be >= 1")
    if r.name == "vllm":
        from serl.policy.vllm_engine import INSTALL_HINT, vllm_available

        _check(vllm_available(), "rollout", r.name, INSTALL_HINT)
        _check(float(r.top_p) == 1.0, "rollout.top_p", r.top_p,
               "must be 1 with rollout=vllm (vLLM reports log-probs of the top-p-truncated distribution, the "
               "learner recomputes untruncated ones; the reference samples with top_p = 1)")
        budget = int(r.max_prompt_tokens) + int(r.max_new_tokens)
        _check(int(r.max_model_len) >= budget, "rollout.max_model_len", r.max_model_len,
               f"must be >= rollout.max_prompt_tokens + rollout.max_new_tokens = {budget}")
        _check(int(r.tensor_parallel_size) >= 1, "rollout.tensor_parallel_size", r.tensor_parallel_size, "must be >= 1")
        _check(0 < float(r.gpu_memory_utilization) <= 1, "rollout.gpu_memory_utilization", r.gpu_memory_utilization,
               "must be in (0, 1]")
        _check(isinstance(r.kv_cache_gb, int) and r.kv_cache_gb >= 1, "rollout.kv_cache_gb", r.kv_cache_gb,
               "must be a whole number of GiB >= 1 (VLLM_CPU_KVCACHE_SPACE)")
    _one_of("model.dtype", cfg.model.dtype, DTYPES)
    _one_of("logger.mode", cfg.logger.mode, LOGGER_MODES)
    _check(int(cfg.env.max_turns) >= 1, "env.max_turns", cfg.env.max_turns, "must be >= 1")


def _validate_eval_knobs(node: DictConfig, prefix: str) -> None:
    """``n_games``, ``temperature``, ``max_turns`` of an evaluation (``eval.*`` in training, top level in
    ``conf/eval.yaml``); ``prefix`` is how the keys are named in error messages."""
    _check(int(node.n_games) >= 1, f"{prefix}n_games", node.n_games, "must be >= 1 (games played once each)")
    _check(
        float(node.temperature) >= 0,
        f"{prefix}temperature",
        node.temperature,
        "must be >= 0 (0 = greedy; the reference validates at 0.4, SERL_REFERENCE §8.4)",
    )
    _check(int(node.max_turns) >= 1, f"{prefix}max_turns", node.max_turns, "must be >= 1 (episode cap in env steps)")


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check all values; return the pure components built on the way (decay, feedback, insertion)."""
    _check(int(cfg.steps) >= 1, "steps", cfg.steps, "must be >= 1")
    _check(int(cfg.n_tasks) >= 1, "n_tasks", cfg.n_tasks, "must be >= 1")
    _check(int(cfg.group_size) >= 2, "group_size", cfg.group_size, "must be >= 2 (GRPO compares rollouts of a group)")
    _check(int(cfg.save_every) >= 0, "save_every", cfg.save_every, "must be >= 0 (0: only after the last step)")
    _check(int(cfg.eval_every) >= 0, "eval_every", cfg.eval_every, "must be >= 0 (0: never evaluate)")
    _validate_eval_knobs(cfg.eval, "eval.")
    _validate_runtime(cfg)
    tl = cfg.teacher_log
    _check(int(tl.every) >= 0, "teacher_log.every", tl.every, "must be >= 0 (0: never dump)")
    _check(int(tl.max_samples) >= 1, "teacher_log.max_samples", tl.max_samples, "must be >= 1")
    _check(int(tl.max_chars) >= 0, "teacher_log.max_chars", tl.max_chars, "must be >= 0 (0: no truncation)")

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
    _check(float(r.temperature) > 0, "rollout.temperature", r.temperature, "must be > 0 for training")

    # The pure components validate their own arguments (lambda0 in [0, 1], horizons, anchor keys ...).
    built = {}
    for group in ("decay", "feedback", "insertion"):
        try:
            built[group] = make(cfg[group])
        except Exception as e:  # hydra wraps the constructor's error; surface it with the group name
            cause = e.__cause__ or e
            raise ConfigError(f"{group}={cfg[group].name}: {cause}") from e
    return built


def validate_eval(cfg: DictConfig) -> None:
    """Check an evaluation config (``conf/eval.yaml``) before any model or game is loaded."""
    _validate_eval_knobs(cfg, "")
    _validate_runtime(cfg)


def build_suite(cfg: DictConfig) -> Any:
    """The env suite of ``cfg.env``; a constructor error (bad value, missing official data) becomes a
    ConfigError naming the group option."""
    try:
        return make(cfg.env)
    except Exception as e:  # hydra wraps the constructor's error
        cause = e.__cause__ or e
        raise ConfigError(f"env={cfg.env.name}: {cause}") from e


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_runtime(cfg: DictConfig) -> None:
    """torch threads (``torch_threads``, 0 = torch's default) and the global seeds (``seed``)."""
    if int(cfg.torch_threads) > 0:
        torch.set_num_threads(int(cfg.torch_threads))
    seed_everything(int(cfg.seed))


@dataclass(frozen=True)
class PolicySource:
    """Where a policy's weights came from (recorded in summaries and ``eval.json``)."""

    path: str  # the HF folder or hub id ``from_pretrained`` loaded
    checkpoint: str | None = None  # a serl training checkpoint loaded on top of ``path``, if any
    checkpoint_step: int | None = None  # its completed training steps

    def describe(self) -> dict[str, Any]:
        return {"model_path": self.path, "checkpoint": self.checkpoint, "checkpoint_step": self.checkpoint_step}


def training_checkpoint(name_or_path: str) -> Path | None:
    """The serl training checkpoint ``name_or_path`` points to, or None.

    A run folder (holding ``checkpoints/last.safetensors`` or a legacy ``last.pt``), its ``checkpoints`` folder
    or a ``.safetensors`` / ``.pt`` file counts;
    an HF model folder (with ``config.json``), a model name or a hub id does not.
    """
    from serl.checkpoint import checkpoint_path

    p = Path(name_or_path).expanduser()
    if not p.exists() or (p.is_dir() and (p / "config.json").is_file()):
        return None
    if p.is_file() and p.suffix not in (".safetensors", ".pt"):
        return None
    try:
        return checkpoint_path(p)
    except FileNotFoundError:
        return None


def build_policy(cfg: DictConfig) -> tuple[Any, Any, PolicySource]:
    """Load ``(model, tokenizer, source)`` for ``cfg.model`` on ``cfg.device``.

    ``model.path`` is a model name (``smollm2-135m``, ``tiny``), an HF folder, a hub id, or a serl training
    run (its folder, ``checkpoints/`` or ``last.safetensors``): then the base model and LoRA settings come from
    that run's ``config.yaml`` and the trained weights from its checkpoint; ``model.dtype`` and
    ``model.gradient_checkpointing`` stay this config's.
    """
    from serl.checkpoint import load_checkpoint, load_trainable
    from serl.policy.models import load_policy, resolve_model_path

    from serl.policy.models import resolve_dtype

    model_cfg = cfg.model
    ckpt = training_checkpoint(str(cfg.model.path))
    if ckpt is not None:
        run_cfg = ckpt.parent.parent / "config.yaml"
        if not run_cfg.is_file():
            raise ConfigError(
                f"model.path={cfg.model.path!r} is a serl training checkpoint ({ckpt}) but its run's config.yaml "
                f"({run_cfg}), which names the base model, is missing"
            )
        model_cfg = OmegaConf.load(run_cfg).model
    path = resolve_model_path(str(model_cfg.path))
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise ConfigError(
            f"model.path={cfg.model.path!r}: {path} is neither an HF model folder (config.json) nor a serl "
            "training run (checkpoints/last.safetensors)"
        )
    lora = OmegaConf.to_container(model_cfg.lora, resolve=True) if model_cfg.get("lora") is not None else None
    model, tokenizer = load_policy(
        path,
        dtype=resolve_dtype(str(cfg.model.dtype), str(cfg.device)),
        lora=lora,
        gradient_checkpointing=bool(cfg.model.gradient_checkpointing),
    )
    source = PolicySource(path=str(path))
    if ckpt is not None:
        state = load_checkpoint(ckpt)
        load_trainable(model, state.model, ckpt)
        source = PolicySource(path=str(path), checkpoint=str(ckpt), checkpoint_step=state.step)
    model.to(torch.device(str(cfg.device)))
    return model, tokenizer, source


def build_generator(cfg: DictConfig, model: Any, tokenizer: Any, model_path: str):
    """The ``cfg.rollout`` backend sampling from ``model``: HF ``generate`` on the model itself, or a vLLM
    engine started from ``model_path`` (the policy's HF folder) and loaded with ``model``'s weights."""
    r = cfg.rollout
    if r.name == "hf":
        from serl.rollout.hf import HFGenerator

        return HFGenerator(model, tokenizer)
    from serl.policy.models import eos_token_ids, resolve_dtype
    from serl.policy.vllm_engine import VLLMEngine
    from serl.rollout.vllm import VLLMGenerator

    engine = VLLMEngine(
        model_path,
        dtype=resolve_dtype(str(cfg.model.dtype), str(cfg.device)),
        seed=int(cfg.seed),
        max_model_len=int(r.max_model_len),
        enforce_eager=bool(r.enforce_eager),
        tensor_parallel_size=int(r.tensor_parallel_size),
        gpu_memory_utilization=float(r.gpu_memory_utilization),
        kv_cache_gb=int(r.kv_cache_gb),
    )
    generator = VLLMGenerator(engine, tokenizer, eos_token_ids(model, tokenizer))
    generator.sync_weights(model)  # a checkpoint or LoRA on top of the folder: serve exactly the policy
    return generator


def build_worker(cfg: DictConfig, model: Any, tokenizer: Any, suite: Any, model_path: str):
    """The rollout worker over the ``cfg.rollout`` backend sampling from ``model`` (see
    :func:`build_generator`; ``model_path`` is the folder the policy was loaded from)."""
    from serl.rollout.base import RolloutWorker

    r = cfg.rollout
    return RolloutWorker(
        build_generator(cfg, model, tokenizer, model_path),
        tokenizer,
        suite,
        max_new_tokens=int(r.max_new_tokens),
        temperature=float(r.temperature),
        top_p=float(r.top_p),
        max_prompt_tokens=int(r.max_prompt_tokens),
    )


def build_tracker(cfg: DictConfig, run_dir: Path, tags: list[str], job_type: str):
    """``metrics.jsonl``/``summary.json`` in ``run_dir`` (the stream is off with ``logger=none``), plus a W&B
    run when ``logger.wandb``; returns a :class:`~serl.tracking.MultiTracker`."""
    from serl.tracking import JsonlTracker, MultiTracker, WandbTracker

    trackers = [JsonlTracker(run_dir, stream_metrics=cfg.logger.name != "none")]
    if bool(cfg.logger.wandb):
        trackers.append(
            WandbTracker(
                run_dir,
                project=str(cfg.logger.project),
                name=str(cfg.run_name),
                config=OmegaConf.to_container(cfg, resolve=True),
                mode=str(cfg.logger.mode),
                entity=cfg.logger.entity,
                tags=tags,
                job_type=job_type,
            )
        )
    return MultiTracker(trackers)


def eval_game_list(suite: Any, n_games: int, key: str) -> list[str]:
    """:func:`serl.evaluation.eval_game_list` with a too-small pool reported as a ConfigError on ``key``.
    Builds the eval pool (generated games are written on first use)."""
    from serl.evaluation import eval_game_list as games_of

    try:
        return games_of(suite, n_games)
    except ValueError as e:
        raise ConfigError(f"{key}={n_games} is invalid: {e}") from e


def build_trainer(cfg: DictConfig, run_dir: str | Path):
    """Validate, then build every component; returns a ready :class:`~serl.trainer.Trainer`."""
    from serl.evaluation import EvalSettings
    from serl.learner import Learner
    from serl.teacher import TeacherScorer
    from serl.teacher_log import TeacherLogSettings
    from serl.trainer import Trainer, TrainerSettings

    parts = validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_runtime(cfg)

    suite = build_suite(cfg)
    evaluation = None
    if int(cfg.eval_every) > 0:
        e = cfg.eval
        evaluation = EvalSettings(
            n_games=int(e.n_games), temperature=float(e.temperature), max_turns=int(e.max_turns), seed=int(e.seed)
        )
        eval_game_list(suite, evaluation.n_games, "eval.n_games")  # a too-small eval pool fails now, not after step 1
    model, tokenizer, source = build_policy(cfg)

    a, r, lr = cfg.algorithm, cfg.rollout, cfg.learner
    worker = build_worker(cfg, model, tokenizer, suite, source.path)
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

    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    tracker = build_tracker(
        cfg,
        run_dir,
        tags=[cfg.env.name, cfg.feedback.name, cfg.insertion.name, cfg.decay.name, cfg.algorithm.name],
        job_type="train",
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
        eval_every=int(cfg.eval_every),
        eval_at_start=bool(cfg.eval.at_start),
        evaluation=evaluation,
        teacher_log=TeacherLogSettings(
            every=int(cfg.teacher_log.every),
            max_samples=int(cfg.teacher_log.max_samples),
            max_chars=int(cfg.teacher_log.max_chars),
        ),
        extra_summary={
            "run_name": str(cfg.run_name),
            "model_path": source.path,
            "init_checkpoint": source.checkpoint,
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
        tracker=tracker,
        decode=decode,
        pad_id=tokenizer.pad_token_id,
    )
