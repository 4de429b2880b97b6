"""Padding of (prompt, response) pairs and per-token log-probs of responses.

Layout as in veRL (docs/reference.md §2 "Scoring the student's tokens", ``serl.types.TrainBatch``): prompts
are LEFT-padded to the longest prompt P, responses RIGHT-padded to the longest response T, so
``input_ids[:, P:]`` are the response tokens and the logits at positions ``P-1 .. P+T-2`` score them.
Position ids are recomputed from the attention mask (cumsum − 1, clamped at 0), so left padding does not
shift positions. The same function serves the learner (current log-probs, with autograd), the teacher
(no-grad log-probs of the student's own tokens under the privileged prompt, §2) and tests against the
rollout backend's behaviour log-probs (docs/reference.md §1.6).
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
import torch.nn.functional as F

from serl.algo.loss import entropy_from_logprobs


def pad_prompt_response(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate left-padded prompts and right-padded responses.

    Returns ``input_ids [N, P+T]`` (long), ``attention_mask [N, P+T]`` (long, 1 = real token) and
    ``response_mask [N, T]`` (float, 1 = real response token), with ``P = max len(prompt)`` and
    ``T = max len(response)``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    n = len(prompts)
    if n == 0:
        raise ValueError("pad_prompt_response needs at least one row")
    P = max(len(p) for p in prompts)
    T = max(len(r) for r in responses)
    input_ids = torch.full((n, P + T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, P + T), dtype=torch.long)
    response_mask = torch.zeros((n, T), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if len(p):
            input_ids[i, P - len(p) : P] = torch.as_tensor(list(p), dtype=torch.long)
            attention_mask[i, P - len(p) : P] = 1
        if len(r):
            input_ids[i, P : P + len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            attention_mask[i, P : P + len(r)] = 1
            response_mask[i, : len(r)] = 1.0
    return input_ids, attention_mask, response_mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` positions counting real tokens only: ``cumsum(mask) - 1`` clamped at 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _supports_logits_to_keep(model) -> bool:
    """Whether the (possibly peft-wrapped) causal LM's forward accepts ``logits_to_keep``."""
    inner = model
    get_base = getattr(inner, "get_base_model", None)
    if callable(get_base):  # peft.PeftModel: forwards kwargs to the wrapped model
        inner = get_base()
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def tempered_log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log_softmax(logits / temperature)`` over the last axis, in float32: the sampling distribution whose
    log-probs the rollout records and the learner recomputes (§1.6)."""
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``logits [n, T, V]``, ``targets [n, T]`` → log-probs ``[n, T]`` (and entropy ``[n, T]``) in float32."""
    logp = tempered_log_softmax(logits, temperature)
    lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ent = None
    if with_entropy:
        ent = entropy_from_logprobs(logp)
    return lp, ent


def response_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_response: int,
    temperature: float = 1.0,
    micro_batch_size: int = 8,
    with_entropy: bool = False,
    grad: bool = False,
    with_argmax_match: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Log-probs of the last ``n_response`` tokens of each row under ``log_softmax(logits / temperature)``.

    ``input_ids``, ``attention_mask``: ``[N, P+T]`` in the layout of :func:`pad_prompt_response`
    (``T = n_response``). Returns ``logprobs [N, T]`` float32 — and ``entropy [N, T]`` (entropy of the
    tempered next-token distribution) when ``with_entropy`` — with 0 where the response is padding
    (``attention_mask[:, P:] == 0``). Rows are processed in micro-batches of ``micro_batch_size``; only
    the last ``T+1`` logit positions are computed when the model supports ``logits_to_keep``.
    ``grad=True`` keeps the autograd graph (the learner's current log-probs); otherwise runs under
    ``torch.no_grad()``. ``with_argmax_match`` also returns ``match [N, T]`` bool: the greedy (argmax)
    next token equals the target token (False on padding), e.g. the SFT token accuracy; it costs one
    argmax over the logits already computed.

    Return value: ``logprobs`` alone, or ``(logprobs, entropy)``, ``(logprobs, match)`` or
    ``(logprobs, entropy, match)`` — extras in that order, only those asked for.
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask must be equal [N, L] shapes")
    N, L = input_ids.shape
    T = int(n_response)
    if not 0 < T < L:
        raise ValueError(f"n_response must be in [1, {L - 1}] for sequences of length {L}, got {T}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")

    device = next(model.parameters()).device
    keep = _supports_logits_to_keep(model)
    out_lp, out_ent, out_match = [], [], []
    with torch.set_grad_enabled(grad):
        for start in range(0, N, micro_batch_size):
            ids = input_ids[start : start + micro_batch_size].to(device)
            mask = attention_mask[start : start + micro_batch_size].to(device)
            # Drop the columns that are padding in every row of this micro-batch (left prompt padding,
            # right response padding): the batch is padded to its global maxima, a micro-batch rarely is.
            real_cols = mask.any(dim=0).nonzero().flatten()
            first, last = int(real_cols[0]), int(real_cols[-1]) + 1
            first = min(first, L - T - 1)  # keep at least one prompt column to predict the first response token
            t_eff = T - (L - last)
            ids, mask = ids[:, first:last], mask[:, first:last]
            kwargs = dict(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position_ids_from_mask(mask),
                use_cache=False,
            )
            if keep:
                kwargs["logits_to_keep"] = t_eff + 1
            logits = model(**kwargs).logits
            # positions -(t+1) .. -2 predict the response tokens at -t .. -1
            logits = logits[:, -(t_eff + 1) : -1, :]
            lp, ent = _token_logprobs(logits, ids[:, -t_eff:], temperature, with_entropy)
            real = mask[:, -t_eff:].bool()
            pad = (0, T - t_eff)  # restore the trimmed right padding as zeros
            out_lp.append(torch.nn.functional.pad(torch.where(real, lp, torch.zeros_like(lp)), pad))
            if with_entropy:
                out_ent.append(torch.nn.functional.pad(torch.where(real, ent, torch.zeros_like(ent)), pad))
            if with_argmax_match:
                match = (logits.argmax(dim=-1) == ids[:, -t_eff:]) & real
                out_match.append(torch.nn.functional.pad(match.detach(), pad, value=False))
            del logits
    logprobs = torch.cat(out_lp, dim=0)
    extras = []
    if with_entropy:
        extras.append(torch.cat(out_ent, dim=0))
    if with_argmax_match:
        extras.append(torch.cat(out_match, dim=0))
    return (logprobs, *extras) if extras else logprobs


def last_hidden_states(
    model, prompts: Sequence[Sequence[int]], pad_id: int, micro_batch_size: int = 8, grad: bool = False
) -> torch.Tensor:
    """The final layer's hidden state at the last token of every prompt, ``[N, H]`` float32: a state's features
    for a value head (:mod:`serl.critic`).

    Prompts are left-padded (position ids from the mask, as for the log-probs), processed in micro-batches of
    ``micro_batch_size`` rows of similar length (sorted by length, results in the given order); the LM head is
    skipped where the model supports ``logits_to_keep`` (one position is kept). ``grad=True`` keeps the
    autograd graph.
    """
    if len(prompts) == 0 or any(len(p) == 0 for p in prompts):
        raise ValueError("last_hidden_states needs at least one prompt and no empty prompt")
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    device = next(model.parameters()).device
    keep = _supports_logits_to_keep(model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    with torch.set_grad_enabled(grad):
        for start in range(0, len(order), micro_batch_size):
            rows = order[start : start + micro_batch_size]
            ids, mask, _ = pad_prompt_response([prompts[i] for i in rows], [[] for _ in rows], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                          use_cache=False, output_hidden_states=True)
            if keep:
                kwargs["logits_to_keep"] = 1
            hidden = model(**kwargs).hidden_states[-1][:, -1, :].float()  # left padding: the last column is real
            for k, i in enumerate(rows):
                out[i] = hidden[k]
    return torch.stack(out)
