"""Supervised fine-tuning on expert demonstrations: the warm start before RL (docs/design.md §5 "Warm start").

Each :class:`serl.types.Demonstration` becomes one (prompt, response) pair in the rollout's token layout:

* prompt ids = :func:`serl.policy.models.chat_prompt_ids` of the demonstration prompt (one user message +
  the assistant generation prompt, exactly what the rollout worker feeds the policy, docs/reference.md §1.3);
* response ids = the tokenised response (no special tokens) + the eos id, so the policy learns to stop
  after ``</action>`` — generation ends at eos.

Batches are padded with :func:`serl.policy.logprobs.pad_prompt_response` (veRL layout, prompt left-padded
to P, response right-padded to T) and scored with :func:`serl.policy.logprobs.response_logprobs`
(``grad=True``); the loss is :func:`serl.algo.loss.sft_nll`, the token-mean NLL over response tokens only
(prompt tokens never contribute). AdamW, constant learning rate, global grad-norm clip, one optimizer
step per batch of ``batch_size`` demonstrations (accumulated over micro-batches of ``micro_batch_size``,
weighted by their share of the batch's response tokens so the result equals the full-batch token mean).
The order of demonstrations is reshuffled every epoch by a ``torch.Generator`` seeded with ``seed``.

Works for full fine-tuning and for LoRA (a peft model from :func:`serl.policy.models.load_policy` with
``lora=...``: only adapter parameters require grad, so only they change). Export with
:func:`save_warmstart` (merged HF folder) and :func:`save_adapter` (LoRA adapter only).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from serl.algo.loss import sft_nll
from serl.policy.adapters import is_lora, save_lora_adapter, save_merged
from serl.policy.logprobs import pad_prompt_response, response_logprobs
from serl.policy.models import chat_prompt_ids
from serl.types import Demonstration

LogFn = Callable[[dict[str, float], int], None]


def tokenize_demonstrations(tokenizer: Any, demos: Sequence[Demonstration]) -> list[tuple[list[int], list[int]]]:
    """``[(prompt_ids, response_ids)]``: chat-templated prompt; response tokens + eos (module docstring)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos token; SFT needs one")
    out = []
    for d in demos:
        prompt = chat_prompt_ids(tokenizer, d.prompt)
        response = list(tokenizer(d.response, add_special_tokens=False).input_ids) + [int(eos)]
        out.append((prompt, response))
    return out


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {rule}")


def _batch_stats(
    model: Any,
    rows: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    micro_batch_size: int,
    backward: bool,
) -> tuple[float, float, int]:
    """Token-mean NLL and token accuracy of ``rows`` (backward into the grads when asked).

    Returns ``(loss, token_accuracy, n_response_tokens)``; the loss is the token mean over all rows, built
    from micro-batches weighted by their share of the response tokens.
    """
    n_total = sum(len(r) for _, r in rows)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(rows), micro_batch_size):
        micro = rows[start : start + micro_batch_size]
        input_ids, attention_mask, response_mask = pad_prompt_response(
            [p for p, _ in micro], [r for _, r in micro], pad_id
        )
        logprobs, match = response_logprobs(
            model,
            input_ids,
            attention_mask,
            n_response=response_mask.shape[1],
            micro_batch_size=len(micro),
            grad=backward,
            with_argmax_match=True,
        )
        mask = response_mask.to(logprobs.device)
        n_micro = int(response_mask.sum())
        loss = sft_nll(logprobs, mask) * (n_micro / n_total)  # share of the batch's token mean
        if backward:
            loss.backward()
        loss_sum += float(loss.detach())
        correct += int((match & mask.bool()).sum())
    return loss_sum, correct / max(1, n_total), n_total


def train_sft(
    model: Any,
    tokenizer: Any,
    demos: Sequence[Demonstration],
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 4,
    max_steps: int | None = None,
    seed: int = 0,
    log: LogFn | None = None,
    progress: bool = True,
    micro_batch_size: int | None = None,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
) -> dict[str, float]:
    """Fine-tune ``model`` in place on ``demos``; returns a summary (see below).

    Args:
        model: causal LM (or peft LoRA model) from :func:`serl.policy.models.load_policy`.
        tokenizer: its tokenizer (pad and eos tokens needed).
        demos: the demonstrations (:func:`serl.warmstart.demos.collect_demonstrations`).
        epochs: passes over ``demos`` (>= 1).
        lr: AdamW learning rate (> 0), constant.
        batch_size: demonstrations per optimizer step (>= 1; the last batch of an epoch may be smaller).
        max_steps: stop after this many optimizer steps in total (None: ``epochs`` decides).
        seed: seed of the per-epoch shuffle.
        log: ``log(metrics, step)`` after every optimizer step (``step`` = steps completed, from 1):
            ``sft/loss`` (token-mean NLL of the batch), ``sft/token_accuracy`` (greedy argmax == target
            on response tokens), ``sft/epoch`` (fractional epochs completed), ``sft/grad_norm`` (before
            clipping), ``sft/lr``, ``sft/response_tokens``, ``time/sft_s`` (seconds since the start).
        progress: show a tqdm bar.
        micro_batch_size: demonstrations per forward/backward (default ``batch_size``).
        weight_decay: AdamW weight decay (>= 0).
        grad_clip: max global grad norm (> 0).

    Returns:
        ``steps``, ``epochs`` (fractional epochs completed), ``first_loss``, ``final_loss`` (last step),
        ``final_epoch_loss`` / ``final_epoch_token_accuracy`` (token-weighted over the last epoch's
        steps, possibly partial), ``n_demos``, ``n_prompt_tokens`` / ``n_response_tokens`` (of the
        demonstration set), ``tokens_processed`` (prompt + response tokens of all steps), ``wall_s``,
        ``samples_per_s``.
    """
    from tqdm.auto import tqdm

    _check(len(demos) > 0, "demos", f"<{len(demos)} demonstrations>", "need at least one demonstration")
    _check(isinstance(epochs, int) and epochs >= 1, "epochs", epochs, "must be an int >= 1")
    _check(math.isfinite(lr) and lr > 0, "lr", lr, "must be > 0")
    _check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "must be an int >= 1")
    micro = batch_size if micro_batch_size is None else micro_batch_size
    _check(isinstance(micro, int) and 1 <= micro <= batch_size, "micro_batch_size", micro, f"must be in [1, batch_size={batch_size}]")
    _check(max_steps is None or (isinstance(max_steps, int) and max_steps >= 1), "max_steps", max_steps, "must be null or an int >= 1")
    _check(weight_decay >= 0, "weight_decay", weight_decay, "must be >= 0")
    _check(grad_clip > 0, "grad_clip", grad_clip, "must be > 0")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    rows = tokenize_demonstrations(tokenizer, demos)
    n = len(rows)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(int(seed))

    t0 = time.perf_counter()
    step = 0
    first_loss = last_loss = float("nan")
    tokens_processed = samples = 0
    epoch_loss_sum = epoch_correct = epoch_tokens = 0.0
    model.train()
    bar = tqdm(total=total_steps, desc="sft", unit="step", disable=not progress)
    try:
        for epoch in range(epochs):
            if step >= total_steps:
                break
            order = torch.randperm(n, generator=generator).tolist()
            epoch_loss_sum = epoch_correct = epoch_tokens = 0.0
            for b in range(steps_per_epoch):
                if step >= total_steps:
                    break
                batch = [rows[i] for i in order[b * batch_size : (b + 1) * batch_size]]
                optimizer.zero_grad(set_to_none=True)
                loss, acc, n_tok = _batch_stats(model, batch, pad_id, micro, backward=True)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
                optimizer.step()
                step += 1
                tokens_processed += sum(len(p) + len(r) for p, r in batch)
                samples += len(batch)
                first_loss = loss if step == 1 else first_loss
                last_loss = loss
                epoch_loss_sum += loss * n_tok
                epoch_correct += acc * n_tok
                epoch_tokens += n_tok
                metrics = {
                    "sft/loss": loss,
                    "sft/token_accuracy": acc,
                    "sft/epoch": epoch + (b + 1) / steps_per_epoch,
                    "sft/grad_norm": grad_norm,
                    "sft/lr": float(lr),
                    "sft/response_tokens": float(n_tok),
                    "time/sft_s": time.perf_counter() - t0,
                }
                if log is not None:
                    log(metrics, step)
                bar.update(1)
                bar.set_postfix(epoch=f"{metrics['sft/epoch']:.2f}", loss=f"{loss:.3f}", acc=f"{acc:.2f}")
    finally:
        bar.close()
        model.eval()
    wall = time.perf_counter() - t0
    return {
        "steps": float(step),
        "epochs": step / steps_per_epoch,
        "first_loss": first_loss,
        "final_loss": last_loss,
        "final_epoch_loss": epoch_loss_sum / max(1.0, epoch_tokens),
        "final_epoch_token_accuracy": epoch_correct / max(1.0, epoch_tokens),
        "n_demos": float(n),
        "n_prompt_tokens": float(sum(len(p) for p, _ in rows)),
        "n_response_tokens": float(sum(len(r) for _, r in rows)),
        "tokens_processed": float(tokens_processed),
        "wall_s": wall,
        "samples_per_s": samples / wall if wall > 0 else float("nan"),
    }


def evaluate_sft(model: Any, tokenizer: Any, demos: Sequence[Demonstration], batch_size: int = 8) -> dict[str, float]:
    """No-grad ``{"loss", "token_accuracy", "n_response_tokens"}`` of ``model`` on ``demos`` (token means
    over all response tokens, eos included)."""
    _check(len(demos) > 0, "demos", f"<{len(demos)} demonstrations>", "need at least one demonstration")
    _check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "must be an int >= 1")
    rows = tokenize_demonstrations(tokenizer, demos)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    loss_sum = correct = total = 0.0
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            loss, acc, n_tok = _batch_stats(model, batch, pad_id, batch_size, backward=False)
            loss_sum += loss * n_tok
            correct += acc * n_tok
            total += n_tok
    finally:
        model.train(was_training)
    return {"loss": loss_sum / total, "token_accuracy": correct / total, "n_response_tokens": float(total)}


def save_warmstart(model: Any, tokenizer: Any, out_dir: str | Path, info: dict | None = None) -> Path:
    """Write the warm-started policy as a plain HF folder (LoRA merged into full weights), atomically.

    :func:`serl.policy.models.load_policy` loads the result like any model (``model.path=<out_dir>``).
    ``info`` (JSON-able) is recorded in ``serl_merged.json``. Returns ``out_dir``.
    """
    return save_merged(model, tokenizer, out_dir, info=info)


def save_adapter(
    model: Any,
    out_dir: str | Path,
    dtype: str = "bfloat16",
    base_model_name: str | None = None,
    readme: str | None = None,
) -> Path:
    """Write only the LoRA adapter (peft layout, weights in ``dtype``, default bfloat16) to ``out_dir``,
    atomically; ``readme`` becomes its ``README.md``. Raises ``ValueError`` for a fully fine-tuned model."""
    if not is_lora(model):
        raise ValueError("save_adapter needs a LoRA model (train with lora=...); this one is fully fine-tuned")
    return save_lora_adapter(model, out_dir, dtype=dtype, base_model_name=base_model_name, readme=readme)
