"""Supervised warm start on expert demonstrations (docs/design.md §5 "Warm start").

A small instruct model (SmolLM2-135M) never answers in the ``<think>…</think><action>…</action>`` format
on the ALFWorld prompt (docs/reference.md §6.1, §8.3), so every action is invalid and GRPO has nothing to
compare. A short SFT on the environment's own expert plans, rendered in the student's exact prompt format,
teaches the format (and a little of the task) before RL starts.

* :mod:`serl.warmstart.demos` — play each game's expert steps (``suite.expert_steps``: the environment's
  own thoughts and actions) through the real env and record one :class:`serl.types.Demonstration` per step
  (prompt rendered by the rollout code path, the suite's response format); JSONL cache.
* :mod:`serl.warmstart.sft` — token-mean NLL on the response tokens (:func:`serl.algo.loss.sft_nll`),
  AdamW, full fine-tuning or LoRA; export as a merged HF folder and/or a LoRA adapter.

``scripts/sft.py`` (config ``conf/sft.yaml``) is the entry point; ``make warmstart`` regenerates the
adapter behind the named model ``smollm2-135m-sft``. No ``transformers``/``peft`` import here: model
work goes through :mod:`serl.policy`.
"""

from serl.warmstart.demos import (
    collect_demonstrations,
    load_demonstrations,
    save_demonstrations,
)
from serl.warmstart.sft import evaluate_sft, save_adapter, save_warmstart, tokenize_demonstrations, train_sft

__all__ = [
    "collect_demonstrations",
    "save_demonstrations",
    "load_demonstrations",
    "train_sft",
    "evaluate_sft",
    "tokenize_demonstrations",
    "save_warmstart",
    "save_adapter",
]
