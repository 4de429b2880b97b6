"""Benchmark serl's learner update against a bare-torch floor, the teacher against the update, and the
learner's peak memory, in ONE process (ratios are what hold on these noisy machines).

    python scripts/bench_learner.py                                   # SmolLM2-SFT, float32, 32 rows
    python scripts/bench_learner.py --rows 16 --repeats 2
    python scripts/bench_learner.py --dtype bfloat16 --lora --gradient-checkpointing
    python scripts/bench_learner.py --compare-presets --rows 8 --repeats 1   # peak RSS: before vs. after
    python scripts/bench_learner.py --model tiny --rows 4 --repeats 1        # seconds (tests)

The batch
    ``--rows`` step samples, built once and shared by every contender: an ALFWorld-like student prompt
    (:func:`serl.envs.alfworld.prompts.render_prompt` over a fixed fake kitchen: 32 receptacles, the
    admissible list, 0-2 history pairs; chat-templated, 565-750 tokens (mean ~655) with SmolLM2's tokenizer,
    so rows differ and padding matters) and a response like ``<think>I go to cabinet 3 to look for a mug.</think><action>go
    to cabinet 3</action>`` + eos (29-41 tokens). Advantages are ±1 at random (``--seed``); the behaviour
    log-probs are computed once, without gradients, by :func:`serl.policy.logprobs.response_logprobs`. The
    :class:`~serl.types.TrainBatch` is made by :func:`serl.batch.collate` with the action masks of
    :func:`serl.batch.action_masks`, exactly as ``Trainer.train_step`` makes it.

What is measured (default mode)
    Four contenders on the same rows and the same model object, one untimed warm-up call each, then
    ``--repeats`` rounds, the order reversed every other round (A B C D, D C B A, ...) so drift hits all:

    * ``serl``: ``Learner.update(batch, lam=0)`` — plain GRPO (λ = 0, no reweighting), the Learner built
      with the training config's values (conf/train.yaml ``learner.*``, conf/algorithm/loss ``clip_*``,
      ``entropy_coef``; ``--mini-batch-size`` / ``--micro-batch-size`` override the batch sizes).
    * ``floor``: the same update written out in bare torch on the same rows and the same micro-batches (as
      the Learner cuts them: within a mini-batch, longest rows first). Per micro-batch (rows padded to the
      micro-batch's own longest prompt / response, tensors built before timing) one forward with
      ``position_ids`` from the mask and ``logits_to_keep`` = response length + 1, the response tokens'
      ``log_softmax(logits / T)`` gathered, the dual-clip PPO token-mean loss with the same advantages and
      behaviour log-probs (plus the entropy bonus when ``entropy_coef > 0``, as the Learner computes it;
      ``--entropy-coef 0`` drops it on both sides), backward scaled by the micro-batch's row share; per
      mini-batch ``clip_grad_norm_`` and one step of its own AdamW (same hyper-parameters) over the same
      trainable parameters.
    * ``teacher_step`` / ``teacher_anchor``: ``TeacherScorer.score(prompts, contexts, response_ids,
      n_response)`` over the same rows, with step-insertion contexts (an immediate-feedback and a
      state-change section, 250-450 characters per row) and with anchor-insertion-like contexts (a table of
      5-9 candidate actions with their outcomes, 1.5-3k characters per row).

    Tokens are the non-pad prompt + response tokens forwarded (``attention_mask.sum()``; for the teacher its
    own prompts + the responses), per call. The table gives median seconds and tokens/s per contender and:

    * ``serl / floor``: tokens/s of serl's update over the floor's (1.0 = serl costs nothing extra; the
      median of the per-round ratios is in the JSON as ``paired``);
    * ``teacher / update``: median seconds of one ``score`` call over one ``Learner.update`` on the same rows
      (what the teacher adds to a training step's update, per context kind).

    Peak memory of the update in this process: the peak RSS (``VmHWM`` of /proc/self/status, reset through
    /proc/self/clear_refs right before the learner's warm-up update, which allocates AdamW's state; falls
    back to ``ru_maxrss`` where the reset is refused) and the RSS just before it. The learner is warmed up
    first, before the floor's optimizer and the teacher exist, so this peak is the learner's own.

``--compare-presets``
    Peak memory and tokens/s of ``Learner.update`` alone (one warm-up + ``--repeats`` calls) for two model
    setups, each in its own child process (``--learner-only``) so its peak RSS is clean:

    * ``before``: the CPU preset before issue 9: float32, full fine-tuning, micro-batches of 4;
    * ``after``: the CPU preset now: bfloat16 base weights, the RL LoRA adapter of
      ``conf/model/smollm2-135m-sft.yaml``, micro-batches of 2;

    both without gradient checkpointing, on the same rows (``--micro-batch-size`` overrides both). Printed per setup: trainable parameters,
    RSS before the update, peak RSS during the updates, the process's peak RSS (``ru_maxrss``, includes model
    loading) and tokens/s; then after / before of each. The two children run one after the other, so their
    tokens/s are not interleaved: trust the memory ratio more than the speed ratio.

Other settings (``--help`` lists all): ``--model`` (``smollm2-135m-sft`` default, ``tiny``, or any name /
path :func:`serl.policy.models.resolve_model_path` takes), ``--dtype``, ``--lora`` (the RL adapter of the model config),
``--gradient-checkpointing``, ``--threads`` (torch intra-op threads, 0 = all CPUs of this process),
``--json`` (all numbers, default ``outputs/bench/learner_<time>.json``). Trailing ``key=value`` arguments are
Hydra overrides of conf/train.yaml (e.g. ``learner.lr=1e-5``, ``rollout.temperature=0.7``).

Caveats
    * CPU timings are noisy (shared machine): trust the ratios over the absolute rates; the per-round numbers
      are in the JSON.
    * The model's weights change a little with every update (lr 1e-6 by default); the amount of work does
      not depend on the values.
    * ``Learner.update`` includes its own micro-batch slicing and column trimming, the metric bookkeeping
      and ``model.train()`` / ``model.eval()``; the floor's padded micro-batches are built before timing.
    * Peak RSS counts everything resident in the process (Python, torch, tokenizer), not only tensors.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# "before": the CPU preset before issue 9 (float32, full fine-tuning, micro-batches of 4); "after": the CPU preset
# now (conf/train.yaml + conf/model/smollm2-135m-sft.yaml: bfloat16 base, the RL LoRA adapter of the model
# config, micro-batches of 2). ``--lora`` always takes the adapter settings from the model config.
PRESETS: dict[str, dict[str, Any]] = {
    "before": {"dtype": "float32", "lora": False, "gradient_checkpointing": False, "micro_batch_size": 4},
    "after": {"dtype": "bfloat16", "lora": True, "gradient_checkpointing": False, "micro_batch_size": 2},
}
CONTENDERS = ("serl", "floor", "teacher_step", "teacher_anchor")
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------------ CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="serl's Learner.update vs. a bare-torch floor, teacher vs. update, and peak RSS (one process)",
        epilog="Trailing key=value arguments are Hydra overrides of conf/train.yaml (e.g. learner.lr=1e-5).",
    )
    p.add_argument("--model", default="smollm2-135m-sft", help="smollm2-135m-sft, smollm2-135m, tiny, or a path")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="the policy's weights")
    p.add_argument("--lora", action="store_true", help="train a fresh LoRA adapter (r=16, alpha 32, q/k/v/o/gate/up/down)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--rows", type=int, default=32, help="step samples in the batch")
    p.add_argument("--micro-batch-size", type=int, default=None, help="default: conf learner.micro_batch_size (4)")
    p.add_argument("--mini-batch-size", type=int, default=None, help="default: conf learner.mini_batch_size (64)")
    p.add_argument("--entropy-coef", type=float, default=None, help="default: conf algorithm.loss.entropy_coef (0.001)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up call each)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all CPUs of this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="output JSON (default outputs/bench/learner_<time>.json)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--compare-presets",
        action="store_true",
        help="peak RSS + tokens/s of the update, 'before' (float32, full FT) vs. 'after' (bf16, LoRA, "
        "gradient checkpointing), each in a child process",
    )
    mode.add_argument(
        "--learner-only",
        action="store_true",
        help="time only Learner.update (peak RSS of this configuration; what --compare-presets runs per preset)",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    a = p.parse_args(argv)
    for key in ("rows", "repeats", "micro_batch_size", "mini_batch_size"):
        v = getattr(a, key)
        if v is not None and v < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if a.entropy_coef is not None and a.entropy_coef < 0:
        p.error("--entropy-coef must be >= 0")
    return a


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def lora_settings(cfg) -> dict[str, Any]:
    """The RL LoRA adapter of the CPU preset's model config (conf/model/smollm2-135m-sft.yaml)."""
    from omegaconf import OmegaConf

    from hydra import compose, initialize_config_dir

    lora = cfg.model.get("lora")
    if lora is None:  # --model tiny etc.: the warm-started model's adapter settings
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            lora = compose(config_name="train", overrides=["model=smollm2-135m-sft"]).model.lora
    return OmegaConf.to_container(lora, resolve=True)


def compose_config(args: argparse.Namespace):
    """conf/train.yaml with plain GRPO (``algorithm=grpo``) and the user's overrides."""
    from hydra import compose, initialize_config_dir

    overrides = ["algorithm=grpo", "logger=none", f"seed={args.seed}"] + list(args.overrides)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


# ------------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; False where the kernel refuses it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else None


def peak_rss_mib(reset_ok: bool) -> float:
    """VmHWM since the last reset (when the reset worked), else the process's ru_maxrss."""
    kib = _status_kib("VmHWM") if reset_ok else None
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def process_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -------------------------------------------------------------------------------------------- batch
_RECEPTACLES = [
    ("cabinet", 10), ("countertop", 3), ("drawer", 6), ("fridge", 1), ("microwave", 1), ("sinkbasin", 1),
    ("stoveburner", 4), ("coffeemachine", 1), ("garbagecan", 1), ("toaster", 1), ("shelf", 3),
]
_OBJECTS = [
    "apple", "bread", "butterknife", "cup", "dishsponge", "egg", "fork", "knife", "lettuce", "mug", "pan",
    "peppershaker", "plate", "pot", "potato", "saltshaker", "soapbottle", "spatula", "spoon", "tomato",
]
PLACES = [f"{r} {k}" for r, n in _RECEPTACLES for k in range(1, n + 1)]
TASK = "put a clean mug in coffeemachine"
HISTORY_LENGTH = 2  # conf/env/alfworld.yaml history_length


def _things(rng: random.Random, k: int) -> list[str]:
    return [f"{o} {rng.randint(1, 3)}" for o in rng.sample(_OBJECTS, k)]


def _listing(items: list[str]) -> str:
    if len(items) == 1:
        return f"a {items[0]}"
    return ", ".join(f"a {x}" for x in items[:-1]) + f", and a {items[-1]}"


def _arrive(place: str, items: list[str]) -> str:
    return f"You arrive at {place}. On the {place}, you see {_listing(items)}." if items else (
        f"You arrive at {place}. The {place} is closed."
    )


def fake_row(rng: random.Random, i: int) -> dict[str, Any]:
    """One ALFWorld-like step: prompt text, observation, admissible actions, response text and action."""
    from serl.envs.alfworld.prompts import render_prompt

    step_id = i % 4
    place = rng.choice(PLACES)
    seen = _things(rng, rng.randint(2, 9))
    observation = _arrive(place, seen)
    if step_id == 0:
        observation = (
            "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, "
            f"you see {_listing(PLACES[::-1])}.\n\nYour task is to: {TASK}."
        )
        place, seen = "the middle of the room", []
    admissible = sorted(
        [f"go to {p}" for p in PLACES if p != place]
        + [f"take {s} from {place}" for s in seen]
        + ([f"examine {place}"] if seen else [])
        + ["inventory", "look"]
    )
    history = []
    for _ in range(step_id):
        p = rng.choice(PLACES)
        history.append((_arrive(p, _things(rng, rng.randint(1, 6))), f"go to {p}"))
    prompt = render_prompt(TASK, history, step_id, observation, admissible, HISTORY_LENGTH)
    target = rng.choice([p for p in PLACES if p != place])
    obj = rng.choice(["mug", "mug", "cup", "sponge"])
    think = f"I go to {target} to look for a {obj}."
    if rng.random() < 0.5:
        think = f"The {obj} is not here. " + think
    action = f"go to {target}"
    return {
        "step_id": step_id,
        "observation": observation,
        "prompt": prompt,
        "admissible": tuple(admissible),
        "place": place,
        "target": target,
        "response": f"<think>{think}</think><action>{action}</action>",
        "action": action,
    }


def step_context(rng: random.Random, row: dict[str, Any]):
    """Step insertion: immediate feedback + a state-change section (a few hundred characters)."""
    from serl.types import TeacherContext

    items = _things(rng, rng.randint(3, 7))
    feedback = _arrive(row["target"], items)
    diff = "\n".join(
        [f"- location: {row['place']}", f"+ location: {row['target']}"] + [f"+ visible: {x}" for x in items]
    )
    return TeacherContext(
        sections=(
            ("Immediate feedback from the current step:", feedback),
            ("State change caused by the current step:", diff),
        ),
        sources=("immediate", "state_diff"),
    )


def anchor_context(rng: random.Random, row: dict[str, Any]):
    """Anchor insertion, table layout: every candidate action tried from this state with its outcomes."""
    from serl.types import TeacherContext

    n_candidates = rng.randint(5, 9)
    others = rng.sample([p for p in PLACES if p != row["target"]], n_candidates - 1)
    candidates = [row["action"]] + [f"go to {p}" for p in others]
    lines, size = [], 0
    for action in candidates:
        n = rng.randint(1, 4)
        k = rng.randint(0, n)
        size += n
        best, worst = ("success", 10.0) if k else ("failure", 0.0), ("failure", 0.0) if k < n else ("success", 10.0)
        lines += [
            f"- action {action}, tried {n} times, success count: {k}/{n}, average return: {10.0 * k / n:.4f}",
            f"  best outcome: {best[0]}, reward {best[1]:.4f}",
            f"  worst outcome: {worst[0]}, reward {worst[1]:.4f}",
            f"  Immediate feedback from the current step (best outcome): "
            f"{_arrive(action.removeprefix('go to '), _things(rng, rng.randint(1, 5)))}",
        ]
    return TeacherContext(
        sections=(("Candidate actions tried from this state:", "\n".join(lines)),),
        sources=("anchor", "immediate"),
        anchor_size=size,
        anchor_actions=len(candidates),
    )


def build_steps(tokenizer, n_rows: int, seed: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """``n_rows`` :class:`~serl.types.Step` records (behaviour log-probs still empty) and their raw rows."""
    from serl.policy.models import chat_prompt_ids
    from serl.types import Step

    rng = random.Random(seed)
    eos = tokenizer.eos_token_id
    steps, rows = [], []
    for i in range(n_rows):
        row = fake_row(rng, i)
        response_ids = list(tokenizer(row["response"], add_special_tokens=False)["input_ids"]) + [eos]
        steps.append(
            Step(
                step_id=row["step_id"],
                observation=row["observation"],
                prompt=row["prompt"],
                admissible=row["admissible"],
                prompt_ids=chat_prompt_ids(tokenizer, row["prompt"]),
                response_ids=response_ids,
                response_logprobs=[],
                response_text=row["response"],
                action=row["action"],
                valid=True,
                feedback="",
                next_prompt="",
                reward=0.0,
                done=False,
            )
        )
        rows.append(row)
    return steps, rows


def fill_behaviour_logprobs(model, steps, pad_id: int, temperature: float, micro_batch_size: int) -> None:
    """The behaviour log-probs, once, without gradients (the rollout's ``log_softmax(logits / T)``)."""
    from serl.policy.logprobs import pad_prompt_response, response_logprobs

    ids, mask, _ = pad_prompt_response([s.prompt_ids for s in steps], [s.response_ids for s in steps], pad_id)
    T = max(len(s.response_ids) for s in steps)
    model.eval()
    lp = response_logprobs(model, ids, mask, n_response=T, temperature=temperature, micro_batch_size=micro_batch_size)
    for i, s in enumerate(steps):
        s.response_logprobs = lp[i, : len(s.response_ids)].tolist()


# -------------------------------------------------------------------------------------------- floor
class FloorUpdate:
    """The GRPO/PPO update written out in bare torch (module docstring, ``floor``)."""

    def __init__(self, model, steps, advantages, pad_id: int, s: dict[str, Any]):
        import torch

        from serl.policy.logprobs import pad_prompt_response, position_ids_from_mask

        self.model = model
        self.s = s
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=s["lr"], betas=tuple(s["betas"]), weight_decay=s["weight_decay"]
        )
        self.device = next(model.parameters()).device
        self.minis: list[tuple[int, list[dict[str, Any]]]] = []
        n = len(steps)
        total = [len(x.prompt_ids) + len(x.response_ids) for x in steps]
        for m0 in range(0, n, s["mini_batch_size"]):
            # Learner.update's grouping: within a mini-batch, longest rows first (stable), then cut in order
            mini = sorted(range(m0, min(n, m0 + s["mini_batch_size"])), key=lambda i: -total[i])
            micros = []
            for u0 in range(0, len(mini), s["micro_batch_size"]):
                idx = mini[u0 : u0 + s["micro_batch_size"]]
                sub = [steps[i] for i in idx]
                ids, mask, resp = pad_prompt_response([x.prompt_ids for x in sub], [x.response_ids for x in sub], pad_id)
                T = resp.shape[1]
                old = torch.zeros(len(sub), T)
                for j, x in enumerate(sub):
                    old[j, : len(x.response_logprobs)] = torch.tensor(x.response_logprobs)
                micros.append(
                    {
                        "input_ids": ids.to(self.device),
                        "attention_mask": mask.to(self.device),
                        "position_ids": position_ids_from_mask(mask).to(self.device),
                        "mask": resp.bool().to(self.device),
                        "old": old.to(self.device),
                        "adv": (advantages[idx].float()[:, None] * resp).to(self.device),
                        "T": T,
                        "rows": len(sub),
                    }
                )
            self.minis.append((len(mini), micros))

    def update(self) -> None:
        import torch
        import torch.nn.functional as F

        s = self.s
        self.model.train()
        for _ in range(s["ppo_epochs"]):
            for n_mini, micros in self.minis:
                self.optimizer.zero_grad(set_to_none=True)
                for m in micros:
                    T = m["T"]
                    logits = self.model(
                        input_ids=m["input_ids"],
                        attention_mask=m["attention_mask"],
                        position_ids=m["position_ids"],
                        use_cache=False,
                        logits_to_keep=T + 1,
                    ).logits[:, :-1]
                    logp = F.log_softmax(logits.float() / s["temperature"], dim=-1)
                    lp = logp.gather(-1, m["input_ids"][:, -T:, None]).squeeze(-1)
                    mask, adv = m["mask"], m["adv"]
                    ratio = torch.exp((lp - m["old"]).masked_fill(~mask, 0.0).clamp(-20.0, 20.0))
                    loss_ppo = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - s["clip_low"], 1 + s["clip_high"]))
                    token = torch.where(adv < 0, torch.minimum(loss_ppo, -adv * s["clip_c"]), loss_ppo)
                    denom = mask.sum()
                    loss = (token * mask).sum() / denom
                    if s["entropy_coef"] > 0:
                        entropy = -(logp.exp() * logp).sum(-1)
                        loss = loss - s["entropy_coef"] * (entropy * mask).sum() / denom
                    (loss * (m["rows"] / n_mini)).backward()
                torch.nn.utils.clip_grad_norm_(self.params, s["grad_clip"])
                self.optimizer.step()
        self.model.eval()


# -------------------------------------------------------------------------------------------- timing
def _timed(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def run_contenders(
    calls: dict[str, Callable[[], Any]], tokens: dict[str, int], repeats: int, log, warm: dict[str, float] | None = None
) -> dict[str, Any]:
    """One untimed warm-up per contender (unless given in ``warm``), then ``repeats`` rounds, the order
    reversed every other round."""
    warm = dict(warm or {})
    for name, call in calls.items():
        if name not in warm:
            warm[name] = _timed(call)
            log(f"    warm-up {name:14s}: {warm[name]:7.2f} s")
    runs: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sec = _timed(calls[name])
            runs[name].append(sec)
            log(f"    round {r + 1}/{repeats} {name:14s}: {sec:7.2f} s = {tokens[name] / sec:8.1f} tok/s")
    out: dict[str, Any] = {}
    for name in names:
        secs = runs[name]
        out[name] = {
            "tokens": tokens[name],
            "seconds": statistics.median(secs),
            "tokens_per_s": statistics.median(tokens[name] / x for x in secs),
            "warmup_s": round(warm[name], 4),
            "runs_s": [round(x, 4) for x in secs],
        }
    return out


# -------------------------------------------------------------------------------------------- setup
def learner_settings(cfg, args: argparse.Namespace) -> dict[str, Any]:
    """The Learner's keyword arguments: the config's ``learner`` node (what serl.build completes with the
    model), with the CLI overrides."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(cfg.learner, resolve=True)
    settings = {k: v for k, v in node.items() if k not in ("_target_", "_partial_")}
    settings["betas"] = tuple(settings["betas"])
    for key in ("mini_batch_size", "micro_batch_size"):
        settings[key] = getattr(args, key) or settings[key]
    loss = OmegaConf.to_container(cfg.algorithm.loss, resolve=True)  # the PPO-clip knobs (conf/algorithm/loss/)
    settings.update({k: loss[k] for k in LOSS_KNOBS})
    if args.entropy_coef is not None:
        settings["entropy_coef"] = args.entropy_coef
    return settings


LOSS_KNOBS = ("clip_low", "clip_high", "clip_c", "entropy_coef")  # in learner_settings: read by the floor too


def make_learner(model, ls: dict[str, Any]):
    """serl's Learner with these settings: the loss knobs go to its PPOClip loss."""
    from serl.algo.loss import PPOClip
    from serl.learner import Learner

    rest = {k: v for k, v in ls.items() if k not in LOSS_KNOBS}
    return Learner(model, **rest, loss=PPOClip(**{k: ls[k] for k in LOSS_KNOBS}))


def setup(args: argparse.Namespace, log) -> dict[str, Any]:
    """Model, tokenizer, steps, TrainBatch and Learner of this configuration."""
    import torch

    from serl.batch import action_masks, collate
    from serl.policy.models import load_policy, resolve_model_path

    if args.threads <= 0:
        args.threads = _cpu_count()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = compose_config(args)
    ls = learner_settings(cfg, args)
    t0 = time.perf_counter()
    path = resolve_model_path(args.model)
    model, tokenizer = load_policy(
        path, dtype=args.dtype, lora=lora_settings(cfg) if args.lora else None, gradient_checkpointing=args.gradient_checkpointing
    )
    model.eval()
    load_s = time.perf_counter() - t0
    pad_id = tokenizer.pad_token_id
    steps, rows = build_steps(tokenizer, args.rows, args.seed)
    t0 = time.perf_counter()
    fill_behaviour_logprobs(model, steps, pad_id, ls["temperature"], ls["micro_batch_size"])
    old_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(args.seed)
    advantages = torch.randint(0, 2, (len(steps),), generator=g).float() * 2 - 1
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731  (serl.build's)
    batch = collate(steps, advantages, action_masks(steps, decode), pad_id)
    learner = make_learner(model, ls)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    p_lens = [len(s.prompt_ids) for s in steps]
    r_lens = [len(s.response_ids) for s in steps]
    log(
        f"model {path} ({args.dtype}{', LoRA r=16' if args.lora else ''}"
        f"{', gradient checkpointing' if args.gradient_checkpointing else ''}): {n_train:,} of {n_params:,} "
        f"parameters trainable; {len(steps)} rows, prompts {min(p_lens)}-{max(p_lens)} tokens, responses "
        f"{min(r_lens)}-{max(r_lens)}; {args.threads} torch threads"
    )
    return {
        "cfg": cfg,
        "learner_settings": ls,
        "model": model,
        "tokenizer": tokenizer,
        "model_path": path,
        "pad_id": pad_id,
        "steps": steps,
        "rows": rows,
        "advantages": advantages,
        "batch": batch,
        "learner": learner,
        "n_params": n_params,
        "n_trainable": n_train,
        "load_s": load_s,
        "behaviour_logprobs_s": old_s,
        "prompt_tokens": p_lens,
        "response_tokens": r_lens,
    }


def _base_record(args: argparse.Namespace, argv: list[str], env: dict[str, Any] | None) -> dict[str, Any]:
    import torch

    record: dict[str, Any] = {
        "script": "scripts/bench_learner.py",
        "command": "python scripts/bench_learner.py " + shlex.join(argv),
        "time": datetime.now().isoformat(timespec="seconds"),
        "argv": argv,
        "model": args.model,
        "settings": {
            "dtype": args.dtype,
            "lora": lora_settings(compose_config(args)) if args.lora else None,
            "gradient_checkpointing": args.gradient_checkpointing,
            "rows": args.rows,
            "repeats": args.repeats,
            "seed": args.seed,
            "overrides": list(args.overrides),
        },
        "runtime": {"cpus": _cpu_count(), "torch": torch.__version__},
    }
    if env is not None:
        ls = env["learner_settings"]
        record["model_path"] = env["model_path"]
        record["settings"].update(
            micro_batch_size=ls["micro_batch_size"],
            mini_batch_size=ls["mini_batch_size"],
            learner=ls,
        )
        record["batch"] = {
            "rows": len(env["steps"]),
            "tokens": int(env["batch"].attention_mask.sum()),
            "padded_shape": list(env["batch"].input_ids.shape),
            "prompt_tokens_mean": statistics.mean(env["prompt_tokens"]),
            "prompt_tokens_min": min(env["prompt_tokens"]),
            "prompt_tokens_max": max(env["prompt_tokens"]),
            "response_tokens_mean": statistics.mean(env["response_tokens"]),
            "positive_advantages": int((env["advantages"] > 0).sum()),
        }
        record["params"] = {"total": env["n_params"], "trainable": env["n_trainable"]}
        record["runtime"].update(
            torch_threads=torch.get_num_threads(),
            model_load_s=round(env["load_s"], 2),
            behaviour_logprobs_s=round(env["behaviour_logprobs_s"], 2),
        )
    return record


def measure_learner_memory(env: dict[str, Any], log) -> tuple[dict[str, Any], float]:
    """The learner's warm-up update with the peak RSS reset before it. Returns (memory record, seconds)."""
    import gc

    gc.collect()
    before = rss_mib()
    reset_ok = reset_peak_rss()
    sec = _timed(lambda: env["learner"].update(env["batch"], 0.0))
    peak = peak_rss_mib(reset_ok)
    mem = {
        "rss_before_update_mib": before,
        "peak_rss_update_mib": peak,
        "peak_rss_source": "VmHWM after reset" if reset_ok else "ru_maxrss (reset refused: process peak)",
    }
    log(f"    warm-up {'serl':14s}: {sec:7.2f} s; RSS {before:.0f} MiB before, peak {peak:.0f} MiB during the update")
    return mem, sec


def _json_default(o):
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def write_json(record: dict[str, Any], path: str | None, stem: str) -> Path:
    out = Path(path) if path else ROOT / "outputs" / "bench" / f"{stem}_{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record["json"] = str(out)
    out.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    return out


# --------------------------------------------------------------------------------------------- modes
def run_main(args: argparse.Namespace, argv: list[str], log) -> dict[str, Any]:
    """Default mode: serl vs. floor, teacher vs. update, the update's peak RSS."""
    from serl.teacher import TeacherScorer

    env = setup(args, log)
    record = _base_record(args, argv, env)
    batch, steps, ls = env["batch"], env["steps"], env["learner_settings"]
    log("== learner warm-up (peak RSS of the update)")
    record["memory"], serl_warm = measure_learner_memory(env, log)
    floor = FloorUpdate(env["model"], steps, env["advantages"], env["pad_id"], ls)

    a = env["cfg"].algorithm
    teacher = TeacherScorer(
        env["model"],
        env["tokenizer"],
        max_prompt_tokens=int(a.teacher_max_prompt_tokens),
        privileged_template=str(a.privileged_template),
        temperature=ls["temperature"],
        micro_batch_size=ls["micro_batch_size"],
    )
    rng = random.Random(args.seed + 1)
    contexts = {
        "teacher_step": [step_context(rng, r) for r in env["rows"]],
        "teacher_anchor": [anchor_context(rng, r) for r in env["rows"]],
    }
    prompts = [s.prompt for s in steps]
    responses = [s.response_ids for s in steps]
    n_resp = max(len(r) for r in responses)
    tokens = {"serl": int(batch.attention_mask.sum()) * ls["ppo_epochs"]}
    tokens["floor"] = tokens["serl"]
    record["contexts"] = {}
    for name, ctxs in contexts.items():
        chars = [len(c.text) for c in ctxs]
        t_ids = [teacher.prompt_ids(p, c) for p, c in zip(prompts, ctxs)] if hasattr(teacher, "prompt_ids") else None
        if t_ids is not None and all(x is not None for x in t_ids):
            tokens[name] = sum(len(x) for x in t_ids) + sum(len(r) for r in responses)
            t_lens = [len(x) for x in t_ids]
        else:  # the scorer's prompt rendering is not public: count the chat-templated student prompt + context
            from serl.policy.models import chat_prompt_ids

            t_lens = [len(chat_prompt_ids(env["tokenizer"], f"{p}\n\n{c.text}")) for p, c in zip(prompts, ctxs)]
            tokens[name] = sum(t_lens) + sum(len(r) for r in responses)
        record["contexts"][name] = {
            "chars_mean": statistics.mean(chars),
            "chars_min": min(chars),
            "chars_max": max(chars),
            "teacher_prompt_tokens_mean": statistics.mean(t_lens),
            "teacher_prompt_tokens_max": max(t_lens),
        }
        log(
            f"{name}: contexts of {min(chars)}-{max(chars)} characters, teacher prompts "
            f"{min(t_lens)}-{max(t_lens)} tokens"
        )
    calls = {
        "serl": lambda: env["learner"].update(batch, 0.0),
        "floor": floor.update,
        "teacher_step": lambda: teacher.score(prompts, contexts["teacher_step"], responses, n_resp),
        "teacher_anchor": lambda: teacher.score(prompts, contexts["teacher_anchor"], responses, n_resp),
    }
    log("== warm-up and timed rounds")
    res = run_contenders(calls, tokens, args.repeats, log, warm={"serl": serl_warm})
    record["contenders"] = res
    record["ratios"] = {
        "serl_over_floor_tokens_per_s": res["serl"]["tokens_per_s"] / res["floor"]["tokens_per_s"],
        # per round: the same tokens, so serl's rate / the floor's = the floor's seconds / serl's
        "serl_over_floor_paired": statistics.median(
            f / s for s, f in zip(res["serl"]["runs_s"], res["floor"]["runs_s"])
        ),
        "teacher_step_over_update_s": res["teacher_step"]["seconds"] / res["serl"]["seconds"],
        "teacher_anchor_over_update_s": res["teacher_anchor"]["seconds"] / res["serl"]["seconds"],
        "teacher_step_over_update_paired": statistics.median(
            t / u for t, u in zip(res["teacher_step"]["runs_s"], res["serl"]["runs_s"])
        ),
        "teacher_anchor_over_update_paired": statistics.median(
            t / u for t, u in zip(res["teacher_anchor"]["runs_s"], res["serl"]["runs_s"])
        ),
    }
    record["memory"]["process_peak_rss_mib"] = process_peak_rss_mib()
    write_json(record, args.json, "learner")
    print_main(record, log)
    return record


def run_learner_only(args: argparse.Namespace, argv: list[str], log) -> dict[str, Any]:
    """Only Learner.update: warm-up (peak RSS reset before it) + ``repeats`` timed calls."""
    env = setup(args, log)
    record = _base_record(args, argv, env)
    record["memory"], warm = measure_learner_memory(env, log)
    tokens = int(env["batch"].attention_mask.sum()) * env["learner_settings"]["ppo_epochs"]
    update = lambda: env["learner"].update(env["batch"], 0.0)  # noqa: E731
    res = run_contenders({"serl": update}, {"serl": tokens}, args.repeats, log, warm={"serl": warm})
    record["contenders"] = res
    record["memory"]["peak_rss_update_mib"] = peak_rss_mib(record["memory"]["peak_rss_source"].startswith("VmHWM"))
    record["memory"]["process_peak_rss_mib"] = process_peak_rss_mib()
    write_json(record, args.json, "learner_only")
    m = record["memory"]
    log(
        f"learner only: {res['serl']['tokens_per_s']:.1f} tok/s (median of {args.repeats}), RSS before the update "
        f"{m['rss_before_update_mib']:.0f} MiB, peak during the updates {m['peak_rss_update_mib']:.0f} MiB, process "
        f"peak {m['process_peak_rss_mib']:.0f} MiB"
    )
    log(f"json: {record['json']}")
    return record


def _child_argv(args: argparse.Namespace, preset: dict[str, Any], out: Path) -> list[str]:
    argv = [
        "--learner-only", "--model", args.model, "--dtype", preset["dtype"], "--rows", str(args.rows),
        "--repeats", str(args.repeats), "--threads", str(args.threads), "--seed", str(args.seed), "--json", str(out),
    ]
    argv += ["--micro-batch-size", str(args.micro_batch_size or preset["micro_batch_size"])]
    if args.mini_batch_size:
        argv += ["--mini-batch-size", str(args.mini_batch_size)]
    if args.entropy_coef is not None:
        argv += ["--entropy-coef", str(args.entropy_coef)]
    if preset["lora"]:
        argv.append("--lora")
    if preset["gradient_checkpointing"]:
        argv.append("--gradient-checkpointing")
    return argv + list(args.overrides)


def run_compare_presets(args: argparse.Namespace, argv: list[str], log) -> dict[str, Any]:
    """Each preset's learner-only run in a child process; a table of peak RSS and tokens/s."""
    if args.threads <= 0:
        args.threads = _cpu_count()
    record = _base_record(args, argv, None)
    record["settings"]["micro_batch_size"] = args.micro_batch_size or {k: v["micro_batch_size"] for k, v in PRESETS.items()}
    record["presets"] = {}
    with tempfile.TemporaryDirectory(prefix="bench_learner_") as tmp:
        for name, preset in PRESETS.items():
            out = Path(tmp) / f"{name}.json"
            cargv = _child_argv(args, preset, out)
            log(f"== preset {name}: python scripts/bench_learner.py {shlex.join(cargv)}")
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), *cargv], capture_output=True, text=True, cwd=str(ROOT)
            )
            for line in proc.stdout.splitlines():
                if line.startswith("    ") or line.startswith("model ") or line.startswith("learner only"):
                    log("  " + line)
            if proc.returncode != 0 or not out.is_file():
                raise RuntimeError(f"preset {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            child = json.loads(out.read_text())
            record["presets"][name] = {
                "preset": preset,
                "command": child["command"],
                "params": child["params"],
                "memory": child["memory"],
                "tokens": child["contenders"]["serl"]["tokens"],
                "tokens_per_s": child["contenders"]["serl"]["tokens_per_s"],
                "seconds": child["contenders"]["serl"]["seconds"],
                "runs_s": child["contenders"]["serl"]["runs_s"],
                "warmup_s": child["contenders"]["serl"]["warmup_s"],
                "batch": child["batch"],
            }
    b, a = record["presets"]["before"], record["presets"]["after"]
    record["ratios_after_over_before"] = {
        "peak_rss_update": a["memory"]["peak_rss_update_mib"] / b["memory"]["peak_rss_update_mib"],
        "process_peak_rss": a["memory"]["process_peak_rss_mib"] / b["memory"]["process_peak_rss_mib"],
        "rss_before_update": a["memory"]["rss_before_update_mib"] / b["memory"]["rss_before_update_mib"],
        "tokens_per_s": a["tokens_per_s"] / b["tokens_per_s"],
        "trainable_params": a["params"]["trainable"] / b["params"]["trainable"],
    }
    write_json(record, args.json, "learner_presets")
    print_presets(record, log)
    return record


# -------------------------------------------------------------------------------------------- tables
def _render(table) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=140, force_terminal=False, color_system=None).print(table)
    return buf.getvalue().rstrip("\n")


def print_main(record: dict[str, Any], log) -> None:
    from rich.table import Table

    s, b = record["settings"], record["batch"]
    title = (
        f"{record['model']} ({s['dtype']}{', LoRA r=16' if s['lora'] else ''}"
        f"{', grad ckpt' if s['gradient_checkpointing'] else ''}), {b['rows']} rows "
        f"({b['prompt_tokens_mean']:.0f} prompt + {b['response_tokens_mean']:.0f} response tokens mean), micro "
        f"{s['micro_batch_size']}, mini {s['mini_batch_size']}, {s['repeats']} rounds, "
        f"{record['runtime']['torch_threads']} threads"
    )
    t = Table(title=title)
    for col in ("contender", "what", "tokens", "median s", "tok/s", "rounds (s)"):
        t.add_column(col, justify="left" if col in ("contender", "what") else "right")
    what = {
        "serl": "Learner.update(batch, lam=0)",
        "floor": "bare torch fwd/bwd + AdamW",
        "teacher_step": "TeacherScorer.score, step contexts",
        "teacher_anchor": "TeacherScorer.score, anchor contexts",
    }
    for name, c in record["contenders"].items():
        t.add_row(
            name, what[name], f"{c['tokens']:,}", f"{c['seconds']:.2f}", f"{c['tokens_per_s']:.1f}",
            " ".join(f"{x:.2f}" for x in c["runs_s"]),
        )
    r, m = record["ratios"], record["memory"]
    log("")
    log(record["command"])
    log(_render(t))
    for label, key, paired in (
        ("serl / floor (tok/s):        ", "serl_over_floor_tokens_per_s", "serl_over_floor_paired"),
        ("teacher / update, step ctx:  ", "teacher_step_over_update_s", "teacher_step_over_update_paired"),
        ("teacher / update, anchor ctx:", "teacher_anchor_over_update_s", "teacher_anchor_over_update_paired"),
    ):
        log(f"{label}   {r[key]:.3f}   (median of the per-round ratios {r[paired]:.3f})")
    log(
        f"peak RSS of the update:         {m['peak_rss_update_mib']:.0f} MiB ({m['peak_rss_source']}; "
        f"{m['rss_before_update_mib']:.0f} MiB before it)"
    )
    log(f"json: {record['json']}")


def print_presets(record: dict[str, Any], log) -> None:
    from rich.table import Table

    s = record["settings"]
    t = Table(
        title=f"Learner.update only, {record['model']}, {s['rows']} rows, micro {s['micro_batch_size']}, "
        f"{s['repeats']} timed calls each, {record['runtime']['cpus']} CPUs"
    )
    for col in ("preset", "setup", "trainable params", "RSS before update", "peak RSS update", "process peak", "tok/s"):
        t.add_column(col, justify="left" if col in ("preset", "setup") else "right")
    for name, p in record["presets"].items():
        pr = p["preset"]
        setup_txt = (
            f"{pr['dtype']}, {'LoRA r=16' if pr['lora'] else 'full FT'}, "
            f"{'grad ckpt' if pr['gradient_checkpointing'] else 'no grad ckpt'}"
        )
        mem = p["memory"]
        t.add_row(
            name, setup_txt, f"{p['params']['trainable']:,}", f"{mem['rss_before_update_mib']:.0f} MiB",
            f"{mem['peak_rss_update_mib']:.0f} MiB", f"{mem['process_peak_rss_mib']:.0f} MiB", f"{p['tokens_per_s']:.1f}",
        )
    r = record["ratios_after_over_before"]
    t.add_row(
        "after / before", "", f"{r['trainable_params']:.4f}", f"{r['rss_before_update']:.3f}",
        f"{r['peak_rss_update']:.3f}", f"{r['process_peak_rss']:.3f}", f"{r['tokens_per_s']:.3f}",
    )
    log("")
    log(record["command"])
    log(_render(t))
    log(f"json: {record['json']}")


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    log("python scripts/bench_learner.py " + shlex.join(argv))
    if args.compare_presets:
        return run_compare_presets(args, argv, log)
    if args.learner_only:
        return run_learner_only(args, argv, log)
    return run_main(args, argv, log)


if __name__ == "__main__":
    main()
