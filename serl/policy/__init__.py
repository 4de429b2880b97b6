"""Policy models: resolution, loading, the tiny test model and response log-probs (docs/design.md §5).

Every ``transformers`` / ``peft`` import of serl lives in this package; they are imported lazily inside
functions, so importing ``serl.policy`` is cheap.
"""

from serl.policy.logprobs import pad_prompt_response, position_ids_from_mask, response_logprobs
from serl.policy.models import (
    apply_lora,
    chat_prompt_ids,
    check_chat_template,
    convert_smollm2,
    default_cache_dir,
    load_policy,
    load_tokenizer,
    resolve_model_path,
)
from serl.policy.tiny import build_tiny_model

__all__ = [
    "apply_lora",
    "build_tiny_model",
    "chat_prompt_ids",
    "check_chat_template",
    "convert_smollm2",
    "default_cache_dir",
    "load_policy",
    "load_tokenizer",
    "pad_prompt_response",
    "position_ids_from_mask",
    "resolve_model_path",
    "response_logprobs",
]
