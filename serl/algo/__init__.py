"""Pure math of serl: tensors (or strings / id lists) in, tensors out. Imports only torch, numpy, stdlib.

* :mod:`serl.algo.advantages` — per-step scores and GRPO advantages (SERL_REFERENCE §1.4–1.5).
* :mod:`serl.algo.reweight` — SERL action-token reweighting of the advantage (§5.2–5.3).
* :mod:`serl.algo.decay` — λ schedules (§5.1).
* :mod:`serl.algo.loss` — dual-clip PPO loss, entropy, masked mean (§1.6); SFT NLL (warm start).
* :mod:`serl.algo.masks` — the response format (one parser), action spans and the action-token mask from
  generated ids (§6, §8.3).
* :mod:`serl.algo.anchors` — anchor grouping (§4.2).
"""

from serl.algo.advantages import grpo_advantages, step_scores, trajectory_grpo_advantages
from serl.algo.decay import ConstantDecay, CosineDecay, DecaySchedule, ExponentialDecay, LinearDecay, StepDecay
from serl.algo.loss import masked_mean, ppo_clip_loss, sft_nll, token_entropy
from serl.algo.masks import (
    PRINTABLE_ASCII,
    ParsedResponse,
    action_mask_from_ids,
    action_token_mask,
    find_action_spans,
    incremental_char_offsets,
    parse_response,
    reference_action_spans,
)
from serl.algo.reweight import serl_reweight

__all__ = [
    "step_scores",
    "grpo_advantages",
    "trajectory_grpo_advantages",
    "serl_reweight",
    "DecaySchedule",
    "LinearDecay",
    "ConstantDecay",
    "CosineDecay",
    "ExponentialDecay",
    "StepDecay",
    "masked_mean",
    "token_entropy",
    "ppo_clip_loss",
    "sft_nll",
    "find_action_spans",
    "incremental_char_offsets",
    "action_token_mask",
    "action_mask_from_ids",
    "parse_response",
    "ParsedResponse",
    "reference_action_spans",
    "PRINTABLE_ASCII",
]
