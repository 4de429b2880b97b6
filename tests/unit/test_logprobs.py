"""Padding layout, response log-probs (docs/reference.md §2, veRL layout) and HF behaviour log-probs (§1.6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from serl.policy.logprobs import pad_prompt_response, position_ids_from_mask, response_logprobs
from serl.policy.models import chat_prompt_ids
from serl.rollout.hf import HFGenerator


def test_pad_prompt_response_hand_example():
    ids, am, rm = pad_prompt_response([[5, 6, 7], [8]], [[1], [2, 3, 4]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 1, 0, 0], [0, 0, 8, 2, 3, 4]]
    assert am.tolist() == [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert rm.tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert ids.dtype == torch.long and am.dtype == torch.long and rm.dtype == torch.float32
    # veRL layout: input_ids[:, P:] are the responses
    assert ids[:, 3:].tolist() == [[1, 0, 0], [2, 3, 4]]


def test_pad_prompt_response_errors():
    with pytest.raises(ValueError):
        pad_prompt_response([[1]], [[1], [2]], pad_id=0)
    with pytest.raises(ValueError):
        pad_prompt_response([], [], pad_id=0)


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5]]


def _rows(tokenizer):
    texts = [
        ("go to countertop 1", "<think>ok</think><action>look</action>"),
        ("You arrive at fridge 1. The fridge 1 is closed.", "<action>open fridge 1</action>"),
        ("x", "take mug 2 from desk 1 and more words here"),
        ("Your task is to: put a clean mug in coffeemachine.", "go"),
        ("look", "<think>I see a mug 2 on the countertop 1.</think>"),
    ]
    prompts = [chat_prompt_ids(tokenizer, p) for p, _ in texts]
    responses = [tokenizer(r, add_special_tokens=False).input_ids for _, r in texts]
    return prompts, responses


def _slow_logprobs(model, prompt, response, temperature):
    """Per-row reference: no padding, full logits, default positions."""
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = F.log_softmax(logits / temperature, dim=-1)
    P, T = len(prompt), len(response)
    lp = logp[P - 1 : P + T - 1].gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1)[P - 1 : P + T - 1]
    return lp, ent


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_match_unpadded_loop(tiny_policy, temperature):
    model, tokenizer = tiny_policy
    prompts, responses = _rows(tokenizer)
    ids, am, rm = pad_prompt_response(prompts, responses, tokenizer.pad_token_id)
    lp, ent = response_logprobs(
        model, ids, am, rm.shape[1], temperature=temperature, micro_batch_size=2, with_entropy=True
    )
    assert lp.shape == rm.shape and ent.shape == rm.shape
    assert not lp.requires_grad
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ref_lp, ref_ent = _slow_logprobs(model, p, r, temperature)
        T = len(r)
        torch.testing.assert_close(lp[i, :T], ref_lp, atol=1e-5, rtol=0)
        torch.testing.assert_close(ent[i, :T], ref_ent, atol=1e-5, rtol=0)
        assert (lp[i, T:] == 0).all() and (ent[i, T:] == 0).all()  # padded response positions
    assert (lp <= 0).all() and (ent >= 0).all()


def test_response_logprobs_micro_batch_size_invariant(tiny_policy):
    model, tokenizer = tiny_policy
    prompts, responses = _rows(tokenizer)
    ids, am, rm = pad_prompt_response(prompts, responses, tokenizer.pad_token_id)
    a = response_logprobs(model, ids, am, rm.shape[1], micro_batch_size=1)
    b = response_logprobs(model, ids, am, rm.shape[1], micro_batch_size=8)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM wrapper whose forward does not accept ``logits_to_keep`` (full logits path)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return self.inner(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache
        )


def test_response_logprobs_without_logits_to_keep(tiny_policy):
    model, tokenizer = tiny_policy
    prompts, responses = _rows(tokenizer)
    ids, am, rm = pad_prompt_response(prompts, responses, tokenizer.pad_token_id)
    a = response_logprobs(model, ids, am, rm.shape[1])
    b = response_logprobs(_NoLogitsToKeep(model), ids, am, rm.shape[1])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_response_logprobs_grad(tiny_policy):
    model, tokenizer = tiny_policy
    prompts, responses = _rows(tokenizer)
    ids, am, rm = pad_prompt_response(prompts, responses, tokenizer.pad_token_id)
    lp = response_logprobs(model, ids, am, rm.shape[1], grad=True, micro_batch_size=3)
    assert lp.requires_grad
    (lp * rm).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_response_logprobs_argument_errors(tiny_policy):
    model, _ = tiny_policy
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="n_response"):
        response_logprobs(model, ids, torch.ones_like(ids), 5)
    with pytest.raises(ValueError, match="temperature"):
        response_logprobs(model, ids, torch.ones_like(ids), 2, temperature=0.0)


# -- HF generation backend -------------------------------------------------------------------------


def _prompts(tokenizer):
    return [
        chat_prompt_ids(tokenizer, t)
        for t in ["go to countertop 1", "You arrive at fridge 1. The fridge 1 is closed. take", "x", "look"]
    ]


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_hf_behaviour_logprobs_equal_response_logprobs(tiny_policy, temperature, top_p):
    model, tokenizer = tiny_policy
    gen = HFGenerator(model, tokenizer)
    prompts = _prompts(tokenizer)
    outs = gen.generate(prompts, max_new_tokens=16, temperature=temperature, top_p=top_p, seeds=[3, 4, 5, 6])
    assert len(outs) == len(prompts)
    for o in outs:
        assert len(o.ids) == len(o.logprobs) >= 1
        assert o.finish_reason in ("stop", "length")
        assert all(math.isfinite(x) and x <= 0 for x in o.logprobs)
        assert o.text == tokenizer.decode(o.ids, skip_special_tokens=True)
    ids, am, rm = pad_prompt_response(prompts, [o.ids for o in outs], tokenizer.pad_token_id)
    lp = response_logprobs(model, ids, am, rm.shape[1], temperature=temperature if temperature > 0 else 1.0)
    for i, o in enumerate(outs):
        torch.testing.assert_close(lp[i, : len(o.ids)], torch.tensor(o.logprobs), atol=1e-4, rtol=0)


def test_hf_greedy_is_deterministic_and_seeded_sampling_reproducible(tiny_policy):
    model, tokenizer = tiny_policy
    gen = HFGenerator(model, tokenizer)
    prompts = _prompts(tokenizer)
    g1 = gen.generate(prompts, 12, temperature=0.0, top_p=1.0, seeds=None)
    torch.manual_seed(123)
    g2 = gen.generate(prompts, 12, temperature=0.0, top_p=1.0, seeds=None)
    assert [g.ids for g in g1] == [g.ids for g in g2]
    s1 = gen.generate(prompts, 12, temperature=1.0, top_p=1.0, seeds=[7, 8, 9, 10])
    s2 = gen.generate(prompts, 12, temperature=1.0, top_p=1.0, seeds=[7, 8, 9, 10])
    s3 = gen.generate(prompts, 12, temperature=1.0, top_p=1.0, seeds=[11, 12, 13, 14])
    assert [g.ids for g in s1] == [g.ids for g in s2]
    assert [g.ids for g in s1] != [g.ids for g in s3]
    # a batch row generates the same greedy continuation as the row alone (left padding is neutral)
    alone = gen.generate(prompts[2:3], 12, temperature=0.0, top_p=1.0, seeds=None)
    assert alone[0].ids == g1[2].ids


def test_hf_generate_restores_training_mode(tiny_policy):
    model, tokenizer = tiny_policy
    gen = HFGenerator(model, tokenizer)
    model.train()
    try:
        gen.generate(_prompts(tokenizer)[:1], 4, temperature=1.0, top_p=1.0, seeds=[0])
        assert model.training
    finally:
        model.eval()
    gen.generate(_prompts(tokenizer)[:1], 4, temperature=1.0, top_p=1.0, seeds=[0])
    assert not model.training
    gen.sync_weights(model)  # documented no-op


def test_hf_strips_after_eos_and_keeps_eos(tiny_policy):
    """Force row 0 to emit eos at its 3rd token; rows after their eos must not carry padding."""
    model, tokenizer = tiny_policy
    eos = tokenizer.eos_token_id
    calls = {"n": 0}

    def force_eos(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 3:
            output = output.clone()
            output[0, -1, eos] = 1e4
        return output

    handle = model.get_output_embeddings().register_forward_hook(force_eos)
    try:
        gen = HFGenerator(model, tokenizer)
        outs = gen.generate(_prompts(tokenizer)[:2], 10, temperature=1.0, top_p=1.0, seeds=[0, 1])
    finally:
        handle.remove()
    assert outs[0].finish_reason == "stop"
    assert len(outs[0].ids) == 3 and outs[0].ids[-1] == eos
    assert outs[0].logprobs[-1] == pytest.approx(0.0, abs=1e-4)
    assert "<|im_end|>" not in outs[0].text  # special tokens skipped in the text
    if eos not in outs[1].ids:
        assert outs[1].finish_reason == "length" and len(outs[1].ids) == 10


def test_hf_ignores_checkpoint_sampling_defaults(tiny_policy):
    """A checkpoint's generation_config (top-k, repetition penalty, temperature) must not change sampling."""
    model, tokenizer = tiny_policy
    gen = HFGenerator(model, tokenizer)
    prompts = _prompts(tokenizer)
    ref = gen.generate(prompts, 10, temperature=1.0, top_p=1.0, seeds=[5, 6, 7, 8])
    cfg = model.generation_config
    saved = (cfg.top_k, cfg.repetition_penalty, cfg.temperature, cfg.do_sample)
    cfg.top_k, cfg.repetition_penalty, cfg.temperature, cfg.do_sample = 2, 3.0, 0.2, True
    try:
        outs = gen.generate(prompts, 10, temperature=1.0, top_p=1.0, seeds=[5, 6, 7, 8])
    finally:
        cfg.top_k, cfg.repetition_penalty, cfg.temperature, cfg.do_sample = saved
    assert [o.ids for o in outs] == [o.ids for o in ref]
    assert [o.logprobs for o in outs] == [o.logprobs for o in ref]
