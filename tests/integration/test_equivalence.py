"""`feedback=none` ≡ λ = 0 ≡ plain GRPO loss on a fixed batch (docs/design.md §6).

The learner's loss on a fixed batch must be identical when (a) the teacher signal is present but λ = 0,
(b) λ > 0 but no row has a context (what `feedback=none` produces), and (c) the plain PPO-clip loss is
computed directly on the unmodified GRPO advantages. With λ > 0 and context on action tokens it must differ.
"""

from __future__ import annotations

import torch

from serl.algo.loss import PPOClip, ppo_clip_loss
from serl.learner import Learner
from serl.policy.logprobs import pad_prompt_response, response_logprobs
from serl.policy.models import load_policy, resolve_model_path
from serl.types import TrainBatch


def _fixed_batch(vocab: int, pad_id: int) -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, vocab, (n,), generator=g).tolist() for n in (7, 5, 9, 6)]
    responses = [torch.randint(5, vocab, (n,), generator=g).tolist() for n in (6, 4, 5, 6)]
    input_ids, attention_mask, response_mask = pad_prompt_response(prompts, responses, pad_id)
    response_mask = response_mask.float()
    n, t = response_mask.shape
    action = torch.zeros(n, t)
    action[:, 1:3] = 1.0
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        action_mask=action * response_mask,
        old_logprobs=(-1.0 - torch.rand(n, t, generator=g)) * response_mask,
        teacher_logprobs=(-0.5 - torch.rand(n, t, generator=g)) * response_mask,
        has_context=torch.tensor([True, True, False, True]),
        advantages=torch.tensor([1.5, -0.7, 0.3, -1.2])[:, None] * response_mask,
    )


def test_lambda_zero_equals_no_context_equals_plain_grpo_loss():
    model, tok = load_policy(resolve_model_path("tiny"))
    torch.manual_seed(0)
    batch = _fixed_batch(tok.vocab_size, tok.pad_token_id)
    learner = Learner(model, loss=PPOClip(entropy_coef=0.001))

    loss_lambda0, _ = learner.micro_loss(batch, lam=0.0)
    no_ctx = TrainBatch(**{**batch.__dict__, "has_context": torch.zeros(4, dtype=torch.bool)})
    loss_no_context, _ = learner.micro_loss(no_ctx, lam=0.5)

    logprobs, entropy = response_logprobs(
        model, batch.input_ids, batch.attention_mask, batch.n_response, with_entropy=True, grad=True
    )
    loss_plain, _ = ppo_clip_loss(
        logprobs, batch.old_logprobs, batch.advantages, batch.response_mask, entropy=entropy, entropy_coef=0.001
    )
    assert torch.allclose(loss_lambda0, loss_plain, atol=1e-7)
    assert torch.allclose(loss_no_context, loss_plain, atol=1e-7)

    loss_serl, stats = learner.micro_loss(batch, lam=0.5)
    assert not torch.allclose(loss_serl, loss_plain, atol=1e-7)
    assert stats["serl_action_mask/selected_fraction"] > 0
