"""HF ``generate`` rollout backend (docs/design.md §5 "Rollout backends": the default on CPU).

Implements :class:`serl.rollout.base.Generator` with ``model.generate`` (KV cache, left-padded batch).
The distribution is the reference's plain sampling (docs/reference.md §1.3: temperature 1.0, top_p 1, no
top-k): ``softmax(logits / T)``, restricted to the top-p nucleus when ``top_p < 1``; greedy when
``temperature <= 0``. No top-k, repetition penalty or other warper of the checkpoint's
``generation_config.json`` changes it.

**Per-prompt seeds, batch-invariant.** Sampling does not use HF's ``do_sample`` (one ``torch.multinomial``
over the whole batch from the global RNG, so a row's sample would depend on which other rows share the
call). ``model.generate`` runs greedy (``do_sample=False``) and a last logits processor
(:class:`_SeededSampler`) samples every row itself: row i owns a random stream seeded with ``seeds[i]``
(NumPy's PCG64 via ``SeedSequence``, which uses all 64 bits of the seed — a CPU ``torch.Generator`` only
uses the low 32), from which it takes exactly one uniform ``u`` per generation step, finished rows
included, whatever the batch. At each step the processor forms the row's tempered distribution
``softmax(scores / T)``, zeroes the tokens outside the nucleus (top-p: tokens by decreasing probability
while the mass before them is ``< top_p``; the top token always stays), picks the token at ``u`` of the
distribution's CDF (inverse-CDF sampling, CDF in float64 over 256-token blocks, so no float32 cumulative
sum over the 49k vocabulary biases the tail) and returns scores that are 0 at that token and ``-inf``
elsewhere, so HF's greedy argmax takes it. One uniform per row and step (instead of Gumbel noise over the
whole vocabulary) keeps the random draws negligible, and the sampler costs less than HF's own
softmax + ``multinomial``. A prompt's sample therefore depends only on its ids, its seed and the weights
(up to the float rounding of a padded batch's forward pass). ``seeds=None`` (or a ``None`` entry) draws the
row's seed from torch's global RNG.

Behaviour log-probs are ``log_softmax(raw_logits / temperature)`` of the sampled ids (greedy: temperature
1), i.e. the same quantity :func:`serl.policy.logprobs.response_logprobs` computes for the learner's
``old_logprobs`` (§1.6) — with ``top_p < 1`` they are the log-probs of the untruncated tempered
distribution, as the learner recomputes them (vLLM would report the truncated one, so ``rollout=vllm``
requires ``top_p = 1``). They are gathered step by step by a logits processor that runs before the sampler
(:class:`_BehaviourLogprobs`, first of serl's processors), instead of ``output_logits=True``, which would keep
``max_new_tokens × batch × vocab`` floats alive (13 GB for 128 episodes × 512 tokens × 49k vocab). The
processor sees the raw logits unless the checkpoint's ``generation_config.json`` itself adds processors
(``suppress_tokens``, ``bad_words_ids``, ...), in which case it sees the distribution actually sampled from.

All ``transformers`` use stays inside the model object handed in (built by :mod:`serl.policy`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
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


_BLOCK = 256  # tokens per block of the two-level inverse CDF
_SMALL_VOCAB = 4096  # up to this vocabulary size, one float64 cumulative sum over the row
_MASK64 = (1 << 64) - 1


def _last_positive(x: torch.Tensor) -> torch.Tensor:
    """Index of the last entry ``> 0`` along the last axis of ``x [n, m]`` (0 where there is none)."""
    idx = torch.arange(x.shape[-1], device=x.device)
    return torch.where(x > 0, idx, torch.zeros_like(idx)).amax(-1)


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Row i of ``weights [n, V]`` (non-negative, not necessarily normalised) → the index k whose CDF
    interval ``[c_{k-1}, c_k)`` holds ``uniforms[i] · total``: an exact sample of ``weights[i] / total`` for
    ``u ~ U[0, 1)``. Never an index of weight 0.

    Cumulative sums in float64 (a float32 one over a 49k vocabulary would misplace the tail's tiny
    intervals): over the whole row when ``V <= 4096``, else in two levels — the row's ``⌈V/256⌉`` block
    masses, then the 256 weights of the chosen block (a float64 pass over 49k weights costs several times
    the softmax).
    """
    n, V = weights.shape
    if V <= _SMALL_VOCAB:
        cdf = weights.double().cumsum(-1)
        total = cdf[:, -1]
        if not bool(torch.all(torch.isfinite(total) & (total > 0))):
            raise RuntimeError("sampling distribution has no finite positive mass (nan/inf logits?)")
        target = uniforms.to(device=cdf.device, dtype=torch.float64) * total
        k = torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1)
        return torch.minimum(k, _last_positive(weights))  # u·total rounded up to total
    B = -(-V // _BLOCK)
    if B * _BLOCK != V:
        weights = torch.nn.functional.pad(weights, (0, B * _BLOCK - V))
    blocks = weights.view(n, B, _BLOCK)
    mass = blocks.sum(-1).double()  # [n, B]
    cdf = mass.cumsum(-1)
    total = cdf[:, -1]
    if not bool(torch.all(torch.isfinite(total) & (total > 0))):
        raise RuntimeError("sampling distribution has no finite positive mass (nan/inf logits?)")
    target = uniforms.to(device=cdf.device, dtype=torch.float64) * total  # [n], in [0, total)
    b = torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1)
    b = torch.minimum(b, _last_positive(mass))  # u·total rounded up to total: the last block with mass
    rest = (target - (cdf - mass).gather(1, b[:, None]).squeeze(-1)).clamp(min=0.0)
    inner = blocks.gather(1, b.view(n, 1, 1).expand(n, 1, _BLOCK)).squeeze(1).double()  # [n, 256]
    k = torch.searchsorted(inner.cumsum(-1), rest[:, None], right=True).squeeze(-1)
    k = torch.minimum(k, _last_positive(inner))  # block mass (float32 sum) vs. its float64 cumsum
    return b * _BLOCK + k


def sample_tokens(scores: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of ``scores [n, V]``: the draw at ``uniforms [n]`` (each in [0, 1)) from
    ``softmax(scores / temperature)`` restricted to its top-p nucleus (the tokens, by decreasing
    probability, whose preceding mass is ``< top_p``; at least the top token). ``temperature <= 0``: the
    argmax. Row i's token depends only on ``scores[i]`` and ``uniforms[i]``."""
    if temperature <= 0:
        return scores.argmax(-1)
    probs = torch.softmax(scores.float() / float(temperature), dim=-1)
    if top_p >= 1.0:
        return inverse_cdf(probs, uniforms)
    probs, order = probs.sort(dim=-1, descending=True, stable=True)
    outside = (probs.cumsum(-1) - probs) >= float(top_p)  # mass before the token already reaches top_p
    outside[:, 0] = False
    k = inverse_cdf(probs.masked_fill(outside, 0.0), uniforms)
    return order.gather(-1, k[:, None]).squeeze(-1)


def row_uniforms(seeds: Sequence[int | None] | None, n: int, steps: int) -> torch.Tensor:
    """``[n, steps]`` float64 uniforms in [0, 1): row i is the first ``steps`` draws of its own stream,
    NumPy PCG64 seeded with ``seeds[i]`` (all 64 bits: taken modulo 2^64), so step k's draw of a row never
    depends on the other rows nor on ``steps``. A ``None`` seed (or ``seeds=None``) takes the row's seed
    from torch's global RNG."""
    rows = []
    for i in range(n):
        s = None if seeds is None else seeds[i]
        if s is None:
            s = int(torch.randint(0, 2**63 - 1, ()).item())
        rows.append(np.random.Generator(np.random.PCG64(int(s) & _MASK64)).random(steps))
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, steps, dtype=torch.float64)


class _SeededSampler:
    """Last logits processor of a sampled generation: row i's scores become 0 at the token
    :func:`sample_tokens` draws with the row's uniform of this step (``uniforms [n, L]``) and ``-inf``
    elsewhere, so the greedy argmax of ``generate(do_sample=False)`` returns that sample."""

    def __init__(self, prompt_len: int, temperature: float, top_p: float, uniforms: torch.Tensor):
        self.prompt_len = prompt_len
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.uniforms = uniforms

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        if not 0 <= step < self.uniforms.shape[1] or input_ids.shape[0] != self.uniforms.shape[0]:
            raise RuntimeError(f"seeded sampler out of range (step {step}, {tuple(self.uniforms.shape)} uniforms)")
        tokens = sample_tokens(scores, self.temperature, self.top_p, self.uniforms[:, step])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, tokens.view(-1, 1).to(out.device), 0.0)


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
        seeds: list[int | None] | None,
    ) -> list[Generation]:
        """Sample one response per prompt (prompt ids without padding), row i from its own stream seeded
        ``seeds[i]`` (batch-invariant; see the module docstring)."""
        check_generate_args(prompts, max_new_tokens, top_p, seeds)
        if not prompts:
            return []
        greedy = temperature <= 0
        device = next(self.model.parameters()).device
        n, P = len(prompts), max(len(p) for p in prompts)
        input_ids, attention_mask, _ = pad_prompt_response(prompts, [[] for _ in prompts], self.pad_id)  # left-padded

        capture = _BehaviourLogprobs(P, 1.0 if greedy else float(temperature))
        processors: list[Any] = [capture]  # first: sees the raw scores
        if not greedy:
            uniforms = row_uniforms(seeds, n, int(max_new_tokens)).to(device)
            processors.append(_SeededSampler(P, float(temperature), float(top_p), uniforms))
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=int(max_new_tokens),
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
                do_sample=False,  # the argmax of _SeededSampler's one-hot scores when sampling
                repetition_penalty=1.0,
                use_cache=True,
                logits_processor=processors,
                return_dict_in_generate=True,
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
