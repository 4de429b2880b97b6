"""vLLM rollout backend (docs/design.md §5 "Rollout backends"; ``rollout=vllm``).

:class:`VLLMGenerator` implements :class:`serl.rollout.base.Generator` over a
:class:`serl.policy.vllm_engine.VLLMEngine`, so the multi-turn :class:`~serl.rollout.base.RolloutWorker`
runs unchanged on either backend: every turn, all active episodes go to the engine in one batched call,
one ``n = 1`` request per prompt seeded from that prompt's seed (so a sample does not depend on the other
prompts of the call; identical prompts — the ``group_size`` episodes of a game at turn 0 — share their
prefill through the prefix cache), and each sample comes back as token ids + behaviour log-probs + text,
with no re-tokenisation.

Conventions shared with the HF backend (:mod:`serl.rollout.hf`), so the learner sees the same thing from
both: plain sampling (``top_k`` off), greedy when ``temperature <= 0``; the end-of-sequence ids of the
tokenizer and the model's generation config stop a sample and the stopping id is KEPT in ``ids`` (the
learner trains on it); behaviour log-probs are ``log_softmax(logits / T)`` of the sampled ids (greedy:
``T = 1``) — exactly the HF backend's when ``top_p = 1`` (see the engine's docstring for ``top_p < 1``).

:meth:`VLLMGenerator.sync_weights` pushes the learner's weights into the engine after every update (a LoRA
adapter merged in), in memory; the trainer times it as ``time/weight_sync_s``.
"""

from __future__ import annotations

from typing import Any

from serl.policy.vllm_engine import VLLMEngine, policy_weights
from serl.rollout.base import Generation, check_generate_args


class VLLMGenerator:
    """:class:`~serl.rollout.base.Generator` over a vLLM engine that serves the learner's weights."""

    def __init__(self, engine: VLLMEngine, tokenizer: Any, eos_ids: list[int]):
        if not eos_ids:
            raise ValueError("VLLMGenerator needs at least one end-of-sequence token id")
        self.engine = engine
        self.tokenizer = tokenizer
        self.eos_ids = [int(i) for i in eos_ids]

    def sync_weights(self, model: Any) -> None:
        """Copy ``model``'s current weights (LoRA merged) into the engine, waking it if it sleeps; later
        samples use them."""
        self.engine.load_weights(policy_weights(model))

    def sleep(self) -> None:
        """Release the GPU memory while the teacher and the learner run (``rollout.sleep``)."""
        self.engine.sleep()

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int | None] | None,
    ) -> list[Generation]:
        """One response per prompt (prompt ids unpadded), in order, prompt i sampled with ``seeds[i]``
        (:class:`~serl.rollout.base.Generator`). See the module docstring."""
        check_generate_args(prompts, max_new_tokens, top_p, seeds)
        samples = self.engine.generate(
            prompts,
            max_tokens=int(max_new_tokens),
            temperature=max(float(temperature), 0.0),
            top_p=float(top_p),
            seeds=seeds,
            stop_token_ids=self.eos_ids,
        )
        return [Generation(ids=s.ids, logprobs=s.logprobs, text=s.text, finish_reason=s.finish_reason) for s in samples]
