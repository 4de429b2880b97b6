"""Teacher scorer: sync schedule (docs/reference.md §2), prompt assembly (§3.2), middle-out truncation that
never cuts the closing instruction or the assistant header (docs/design.md §4, fixes §10.8), scoring."""

from __future__ import annotations

import torch

from serl.policy.logprobs import pad_prompt_response, response_logprobs
from serl.policy.models import chat_prompt_ids
from serl.teacher import TRUNCATION_MARKER, TeacherScorer
from serl.types import TeacherContext

CLOSING = "Correctly solve the current task."


def _ctx(text: str) -> TeacherContext:
    return TeacherContext(sections=(("Immediate feedback from the current step:", text),), sources=("immediate",))


def test_prompt_is_student_prompt_plus_sections_plus_closing(tiny_policy):
    model, tok = tiny_policy
    teacher = TeacherScorer(model, tok)
    ids = teacher.prompt_ids("go to desk 1", _ctx("You arrive at desk 1."))
    expected = "go to desk 1\n\nImmediate feedback from the current step:\nYou arrive at desk 1.\n\n" + CLOSING + "\n"
    assert ids == chat_prompt_ids(tok, expected)


def test_long_context_is_cut_in_the_middle_and_keeps_the_tail(tiny_policy):
    model, tok = tiny_policy
    head = "you see a mug 1 on the countertop 1. " * 40
    tail = "the drawer 3 is open and empty."
    context = _ctx("BEGIN " + head + tail)
    full = TeacherScorer(model, tok, max_prompt_tokens=100_000).prompt_ids("put a mug in desk", context)
    limit = len(full) - 60
    teacher = TeacherScorer(model, tok, max_prompt_tokens=limit)
    ids = teacher.prompt_ids("put a mug in desk", context)
    assert ids is not None and len(ids) <= limit and teacher.truncated == 1
    text = tok.decode(ids)
    assert TRUNCATION_MARKER.strip() in text
    assert "BEGIN" in text and tail in text  # head and tail of the context survive
    # the closing instruction and the chat template's assistant header survive intact at the end
    template_tail = tok.decode(chat_prompt_ids(tok, CLOSING + "\n")).split(CLOSING)[1]
    assert "assistant" in template_tail
    assert text.endswith(CLOSING + template_tail)


def test_context_that_cannot_fit_is_dropped_not_cut_from_the_right(tiny_policy):
    model, tok = tiny_policy
    student = "put a mug in desk " * 20
    teacher = TeacherScorer(model, tok, max_prompt_tokens=len(chat_prompt_ids(tok, student)) + 2)
    assert teacher.prompt_ids(student, _ctx("feedback " * 50)) is None
    assert teacher.dropped == 1


def test_sync_every_k_steps_is_a_hard_copy(tiny_policy):
    model, tok = tiny_policy
    policy = type(model)(model.config)
    policy.load_state_dict(model.state_dict())
    teacher = TeacherScorer(policy, tok, sync_interval=3)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5)
    first = next(iter(teacher.state_dict().values())).clone()
    # steps 1, 2 (u = 1, 2): no sync; u = 3: copy
    assert not teacher.maybe_sync(policy, 1) and not teacher.maybe_sync(policy, 2)
    assert torch.equal(next(iter(teacher.state_dict().values())), first)
    assert teacher.maybe_sync(policy, 3)
    params = dict(policy.named_parameters())  # full fine-tuning: every parameter, the tied head once
    assert set(teacher.state_dict()) == set(params)
    for k, v in params.items():
        assert torch.equal(teacher.state_dict()[k], v)
        assert not teacher.snapshot[k].requires_grad and teacher.snapshot[k].data_ptr() != v.data_ptr()


def test_score_matches_a_direct_forward_and_skips_rows_without_context(tiny_policy):
    model, tok = tiny_policy
    teacher = TeacherScorer(model, tok)
    prompts = ["go to desk 1", "open drawer 1", "look"]
    contexts = [_ctx("You arrive at desk 1."), TeacherContext(), _ctx("Nothing happens.")]
    responses = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    lp, has, _, _ = teacher.score(prompts, contexts, responses, n_response=4)
    assert has.tolist() == [True, False, True]
    assert torch.all(lp[1] == 0)
    for i in (0, 2):
        ids = teacher.prompt_ids(prompts[i], contexts[i])
        x, m, _ = pad_prompt_response([ids], [responses[i]], tok.pad_token_id)
        ref = response_logprobs(model, x, m, n_response=len(responses[i]))
        assert torch.allclose(lp[i, : len(responses[i])], ref[0], atol=1e-5)
        assert torch.all(lp[i, len(responses[i]) :] == 0)


def test_lora_teacher_is_an_adapter_snapshot_scored_on_the_shared_base(tiny_policy):
    """With a LoRA policy the teacher holds only the adapter; scoring swaps it in and puts the policy's back."""
    from serl.policy.models import apply_lora

    model, tok = tiny_policy
    policy = type(model)(model.config)
    policy.load_state_dict(model.state_dict())
    policy = apply_lora(policy, {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    teacher = TeacherScorer(policy, tok)
    assert teacher.snapshot and all("lora_" in k for k in teacher.snapshot)
    n_snapshot = sum(v.numel() for v in teacher.snapshot.values())
    assert n_snapshot < sum(p.numel() for p in policy.parameters()) / 10

    ids = teacher.prompt_ids("go to desk 1", _ctx("You arrive at desk 1."))
    x, m, _ = pad_prompt_response([ids], [[5, 6, 7]], tok.pad_token_id)
    before = response_logprobs(policy, x, m, n_response=3)  # the policy == the teacher (just synced)
    with torch.no_grad():  # the policy moves on (lora_B starts at 0: move it so the adapter matters)
        for k, p in policy.named_parameters():
            if "lora_B" in k:
                p.add_(0.3)
    moved = {k: p.detach().clone() for k, p in policy.named_parameters() if p.requires_grad}
    after = response_logprobs(policy, x, m, n_response=3)
    assert not torch.allclose(before, after, atol=1e-4)

    lp, has, _, _ = teacher.score(["go to desk 1"], [_ctx("You arrive at desk 1.")], [[5, 6, 7]], n_response=3)
    assert has.tolist() == [True]
    assert torch.allclose(lp[0], before[0], atol=1e-5)  # scored with the old adapter
    for k, p in policy.named_parameters():  # and the policy's own adapter is back
        if p.requires_grad:
            assert torch.equal(p, moved[k]), k
