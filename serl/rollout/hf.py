"""HF ``generate`` rollout backend (docs/design.md §5 "Rollout backends": the default on CPU).

Implements :class:`serl.rollout.base.Generator` with ``model.generate`` (KV cache, left-padded batch).
Sampling is the reference's plain sampling (docs/reference.md §1.3: temperature 1.0, top_p 1, no top-k):
``do_sample`` when ``temperature > 0``, greedy otherwise; top-k and repetition penalties are switched off
explicitly so that a checkpoint's ``generation_config.json`` cannot change the sampling distribution.

Behaviour log-probs are ``log_softmax(raw_logits / temperature)`` of the sampled ids (greedy: temperature
1), i.e. the same quantity :func:`serl.policy.logprobs.response_logprobs` computes for the learner's
``old_logprobs`` (§1.6) — with ``top_p < 1`` they are the log-probs of the untruncated tempered
distribution, as the learner recomputes them (vLLM would report the truncated one, so ``rollout=vllm``
requires ``top_p = 1``). They are gathered step by step by a logits processor that runs before
the sampling warpers (temperature, top-p), instead of ``output_logits=True``, which would keep
``max_new_tokens × batch × vocab`` floats alive (13 GB for 128 episodes × 512 tokens × 49k vocab). The
processor sees the raw logits unless the checkpoint's ``generation_config.json`` itself adds processors
(``suppress_tokens``, ``bad_words_ids``, ...), in which case it sees the distribution actually sampled from.

All ``transformers`` use stays inside the model object handed in (built by :mod:`serl.policy`).
"""

from __future__ import annotations

from typing import Any

import torch

from serl.policy.logprobs import pad_prompt_response, tempered_log_softmax
from serl.policy.models import eos_token_ids
from serl.rollout.base import Generation, check_generate_args


class _BehaviourLogprobs:
    """Logits processor gathering ``log_softmax(scores / temperature)`` of each sampled token.

    Called once per generation step with the ids so far ``[n, P + k]`` and the next-token scores
    ``[n, V]``; the token sampled at step k-1 is the last column of the ids at step k, so only one step's
    distribution is kept at a time. :meth:`finish` gathers the last step's tokens. Result ``[n, L]``.
    """

    def __init__(self, prompt_len: int, temperature: float):
        self.prompt_len = prompt_len
        self.temperature = temperature
        self.prev: torch.Tensor | None = None  # [n, V] log-probs of the previous step
        self.out: list[torch.Tensor] = []  # L tensors [n]

    def _gather_prev(self, tokens: torch.Tensor) -> None:
        self.out.append(self.prev.gather(-1, tokens.view(-1, 1).to(self.prev.device)).squeeze(-1).cpu())

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        if max(step - 1, 0) != len(self.out) or (step > 0) != (self.prev is not None):
            raise RuntimeError(f"behaviour log-prob capture out of sync (step {step}, {len(self.out)} captured)")
        if self.prev is not None:
            self._gather_prev(input_ids[:, -1])
        self.prev = tempered_log_softmax(scores, self.temperature)
        return scores

    def finish(self, new_ids: torch.Tensor) -> torch.Tensor:
        """``new_ids [n, L]`` → behaviour log-probs ``[n, L]``."""
        L = new_ids.shape[1]
        if L and self.prev is not None and len(self.out) == L - 1:
            self._gather_prev(new_ids[:, -1])
        self.prev = None
        if len(self.out) != L:
            raise RuntimeError(f"captured {len(self.out)} behaviour log-probs for {L} generated tokens")
        return torch.stack(self.out, dim=1) if L else torch.zeros(new_ids.shape[0], 0)


class HFGenerator:
    """:class:`~serl.rollout.base.Generator` over a HF causal LM (optionally peft-wrapped)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("HFGenerator needs a tokenizer with a pad or eos token")
        self.pad_id = int(pad)
        self.eos_ids = eos_token_ids(model, tokenizer)

    def sync_weights(self, model: Any) -> None:
        """No-op: HF generation runs on the very model object the learner updates, so it always samples
        from the current weights. (The vLLM backend copies the weights into its engine here.)"""

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> list[Generation]:
        """Sample one response per prompt (prompt ids without padding). See the module docstring."""
        check_generate_args(prompts, max_new_tokens, top_p)
        if not prompts:
            return []
        greedy = temperature <= 0
        device = next(self.model.parameters()).device
        n, P = len(prompts), max(len(p) for p in prompts)
        input_ids, attention_mask, _ = pad_prompt_response(prompts, [[] for _ in prompts], self.pad_id)  # left-padded

        if seed is not None:
            torch.manual_seed(seed)
        sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=float(temperature))
        if not greedy:
            sampling.update(top_p=float(top_p), top_k=0)
        capture = _BehaviourLogprobs(P, 1.0 if greedy else float(temperature))
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=int(max_new_tokens),
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
                repetition_penalty=1.0,
                use_cache=True,
                logits_processor=[capture],
                return_dict_in_generate=True,
                **sampling,
            )
        finally:
            self.model.train(was_training)

        new_ids = out.sequences[:, P:].cpu()  # [n, L]
        logps = capture.finish(new_ids)  # [n, L]
        eos = set(self.eos_ids)
        results = []
        for i in range(n):
            ids = new_ids[i].tolist()
            end = next((t for t, tok in enumerate(ids) if tok in eos), None)
            if end is None:
                finish, keep = "length", len(ids)
            else:
                finish, keep = "stop", end + 1  # keep the eos: the learner trains on it
            ids = ids[:keep]
            results.append(
                Generation(
                    ids=ids,
                    logprobs=logps[i, :keep].tolist(),
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    finish_reason=finish,
                )
            )
        return results
