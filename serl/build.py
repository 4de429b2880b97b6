"""The only place where a Hydra config becomes objects (docs/design.md §2).

``validate(cfg)`` checks every value against the typed schema (:mod:`serl.config_schema`: types, ranges,
unknown keys; ``_target_`` options from their constructors' signatures) and instantiates the cheap group
options (env suite, decay schedule, feedback source, insertion), so a bad choice fails before any model or
game is loaded, with a one-line :class:`ConfigError` naming the key, the bad value and the allowed ones.
``build_trainer(cfg, run_dir)`` then loads the model and wires the rollout worker, teacher, learner and
trackers into a :class:`~serl.trainer.Trainer`.

``scripts/eval.py`` uses the same builders: ``validate_eval(cfg)`` checks its config (``conf/eval.yaml``;
``validate_sft`` checks ``conf/sft.yaml`` for ``scripts/sft.py``), then :func:`build_policy` (a model name,
HF folder or serl training checkpoint), :func:`build_worker` and :func:`build_tracker` make what
:func:`serl.evaluation.evaluate` needs.
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
from omegaconf.errors import OmegaConfBaseException

from serl.config_schema import ConfigError, check_config  # ConfigError is re-exported: scripts import it here


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


def _check(cfg: DictConfig, kind: str) -> dict[str, Any]:
    """Resolve ``cfg`` (an unresolvable or missing value is a ConfigError naming its key) and check it
    against the schema of ``kind`` (:mod:`serl.config_schema`, the one rule set)."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{key} is invalid: cannot resolve its value ({reason})") from None

    def origin(key: str) -> str | None:  # the raw "${...}" of an interpolated key, for error messages
        parent, _, leaf = key.rpartition(".")
        try:
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if isinstance(node, DictConfig) and leaf in node and OmegaConf.is_interpolation(node, leaf):
                return str(OmegaConf.to_container(node, resolve=False)[leaf])
        except Exception:  # best effort: the message is complete without it
            return None
        return None

    return check_config(kind, data, origin)


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check a training config (``conf/train.yaml``) before any model loads; return the group options built
    on the way (``env``, ``decay``, ``feedback``, ``insertion``, the algorithm's parts ``algorithm.advantage``,
    ``algorithm.loss``, ``algorithm.reweight``; ``learner`` and ``teacher`` as partials: ``learner(model, ...)``,
    ``teacher(model, tokenizer)``). Raises :class:`ConfigError`."""
    return _check(cfg, "train")


def validate_eval(cfg: DictConfig) -> None:
    """Check an evaluation config (``conf/eval.yaml``) before any model or game is loaded."""
    _check(cfg, "eval")


def validate_sft(cfg: DictConfig) -> None:
    """Check a warm-start config (``conf/sft.yaml``) before any model or game is loaded."""
    _check(cfg, "sft")


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

    A run folder (holding ``checkpoints/last.safetensors``, a legacy ``last.pt`` or a multi-process run's
    ``last.dcp``), its ``checkpoints`` folder, a ``.safetensors`` / ``.pt`` file or a ``.dcp`` folder counts;
    an HF model folder (with ``config.json``), a model name or a hub id does not.
    """
    from serl.checkpoint import checkpoint_path

    p = Path(name_or_path).expanduser()
    if not p.exists() or (p.is_dir() and (p / "config.json").is_file()):
        return None
    if p.is_file() and p.suffix not in (".safetensors", ".pt", ".dcp"):
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


def build_generator(cfg: DictConfig, model: Any, tokenizer: Any, model_path: str, dist: Any = None):
    """The ``cfg.rollout`` backend sampling from ``model``: HF ``generate`` on the model itself, or a vLLM
    engine started from ``model_path`` (the policy's HF folder) and loaded with ``model``'s weights.
    Under torchrun (``dist.enabled``; ``model`` is about to be sharded) HF generates on a whole replica of
    the policy that every update refreshes (:mod:`serl.rollout.replica`)."""
    r = cfg.rollout
    if r.name == "hf":
        from serl.rollout.hf import HFGenerator

        if dist is not None and dist.enabled:
            import copy

            from serl.rollout.replica import ReplicaGenerator

            replica = copy.deepcopy(model)
            replica.requires_grad_(False)
            return ReplicaGenerator(HFGenerator(replica, tokenizer), replica)
        return HFGenerator(model, tokenizer)
    if dist is not None and dist.enabled and cfg.model.get("lora") is not None:
        raise ConfigError(
            "rollout=vllm under torchrun needs full fine-tuning (model.lora=null): pushing a LoRA adapter merged into "
            "FSDP-sharded weights is not supported; use rollout=hf for a LoRA policy (docs/distributed.md)"
        )
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
        sleep=bool(r.sleep),
        colocated=dist is not None and dist.enabled,
    )
    generator = VLLMGenerator(engine, tokenizer, eos_token_ids(model, tokenizer))
    generator.sync_weights(model)  # a checkpoint or LoRA on top of the folder: serve exactly the policy
    return generator


def build_worker(cfg: DictConfig, model: Any, tokenizer: Any, suite: Any, model_path: str, dist: Any = None):
    """The rollout worker over the ``cfg.rollout`` backend sampling from ``model`` (see
    :func:`build_generator`; ``model_path`` is the folder the policy was loaded from)."""
    from serl.rollout.base import RolloutWorker

    r = OmegaConf.to_container(cfg.rollout, resolve=True)
    return RolloutWorker(
        build_generator(cfg, model, tokenizer, model_path, dist),
        tokenizer,
        suite,
        **{k: r[k] for k in ("max_new_tokens", "temperature", "top_p", "max_prompt_tokens")},
        **{f"env_{k}": v for k, v in OmegaConf.to_container(cfg.env_workers, resolve=True).items()},
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
                group=cfg.logger.get("group"),
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


def build_trainer(cfg: DictConfig, run_dir: str | Path, dist: Any = None):
    """Validate, then build every component; returns a ready :class:`~serl.trainer.Trainer`.

    ``dist`` (:class:`serl.distributed.Dist`, under torchrun): rank 0 prepares the shared caches first, the
    policy is sharded with FSDP2 after the rollout backend took its copy, and only rank 0 writes the config
    and tracks the run (docs/distributed.md)."""
    from serl.distributed import SINGLE, shard_model
    from serl.evaluation import EvalSettings
    from serl.teacher_log import TeacherLogSettings
    from serl.tracking import MultiTracker
    from serl.trainer import Trainer, TrainerSettings

    dist = dist or SINGLE
    parts = validate(cfg)
    if dist.enabled and getattr(parts["algorithm.critic"].func, "enabled", False):
        raise ConfigError("algorithm/critic runs in one process: PPO with a critic is not supported under torchrun "
                          f"(world size {dist.world_size}); run it without torchrun")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_runtime(cfg)

    c = OmegaConf.to_container(cfg, resolve=True)  # validated: every value has its type
    evaluation = None
    with dist.main_first():  # rank 0 writes the caches (generated games, a converted model), the others read them
        suite = build_suite(cfg)
        if c["eval_every"] > 0:
            evaluation = EvalSettings(**{k: c["eval"][k] for k in ("n_games", "temperature", "max_turns", "seed")})
            eval_game_list(suite, evaluation.n_games, "eval.n_games")  # a too-small eval pool fails now, not after step 1
        model, tokenizer, source = build_policy(cfg)

    worker = build_worker(cfg, model, tokenizer, suite, source.path, dist)
    shard_model(model, dist, str(cfg.device), **c["distributed"])  # FSDP2 under torchrun, else a no-op
    loss, reweight = parts["algorithm.loss"], parts["algorithm.reweight"]
    learner = parts["learner"](model, loss=loss, reweight=reweight, dist=dist)
    critic = parts["algorithm.critic"](model, pad_id=tokenizer.pad_token_id)  # NoCritic unless PPO's GAE reads one
    # the one switch for the teacher: a part that reads it (algorithm/reweight=serl, a distillation loss) and
    # feedback to show it; a loss that reads it needs its log-probs on every row, not only where A != 0
    uses_teacher = any(getattr(p, "uses_teacher", False) for p in (loss, reweight)) and parts["feedback"].enabled
    teacher = parts["teacher"](model, tokenizer, dist=dist) if uses_teacher else None

    tags = [cfg.env.name, cfg.feedback.name, cfg.insertion.name, cfg.decay.name, cfg.algorithm.name]
    if dist.is_main:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        tracker = build_tracker(cfg, run_dir, tags=tags, job_type="train")
    else:
        tracker = MultiTracker([])  # rank 0 writes the run's files
    settings = TrainerSettings(
        **{k: c[k] for k in ("steps", "n_tasks", "group_size", "seed", "save_every", "keep_last", "resume", "eval_every")},
        run_dir=run_dir,
        eval_at_start=c["eval"]["at_start"],
        evaluation=evaluation,
        teacher_log=TeacherLogSettings(**c["teacher_log"]),
        teacher_every_row=bool(getattr(loss, "uses_teacher", False)),
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
        advantage=parts["algorithm.advantage"],
        sampling=parts["algorithm.sampling"],
        critic=critic,
        tracker=tracker,
        decode=decode,
        pad_id=tokenizer.pad_token_id,
        dist=dist,
    )
