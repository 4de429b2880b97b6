"""The training core on a CUDA device gives the CPU's numbers (marker ``gpu``; skipped without a GPU).

What ``device=cuda`` changes is where the policy, the teacher copy and the learner's tensors live; the math
must not change. On the tiny model in float32, from identical weights and the same batch:

* HF rollout: greedy generation gives the same ids, and the same behaviour log-probs;
* teacher: the log-probs of fixed responses after privileged prompts match;
* learner: one PPO update with the SERL reweight moves the parameters to the same values.

Tolerances are float32 kernel differences (cuBLAS vs. CPU BLAS, TF32 off). Needs only torch, transformers
and peft (no env, no Hydra), so it runs on a bare GPU machine:
``python -m pytest -q -m gpu tests/integration/test_cuda.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from serl.algo.loss import PPOClip
from serl.algo.reweight import SerlReweight
from serl.learner import Learner
from serl.policy.models import load_policy, resolve_model_path
from serl.rollout.hf import HFGenerator
from serl.teacher import TeacherScorer
from serl.types import TeacherContext
from tests.integration.test_equivalence import _fixed_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
TOL = 2e-4


@pytest.fixture(scope="module", autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture
def pair():
    """(cpu model, cuda model with the same weights, tokenizer)."""
    model, tok = load_policy(resolve_model_path("tiny"))
    return model, copy.deepcopy(model).to("cuda"), tok


def test_greedy_rollout_on_cuda_matches_cpu(pair):
    cpu, gpu, tok = pair
    prompts = [tok.encode(t, add_special_tokens=False) for t in ("go to the desk 1", "take mug 1 from", "open")]
    a = HFGenerator(cpu, tok).generate(prompts, max_new_tokens=12, temperature=0.0, top_p=1.0, seeds=None)
    b = HFGenerator(gpu, tok).generate(prompts, max_new_tokens=12, temperature=0.0, top_p=1.0, seeds=None)
    assert [g.ids for g in a] == [g.ids for g in b]
    for x, y in zip(a, b):
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < TOL


def test_seeded_sampling_on_cuda_matches_cpu(pair):
    """Each row's random stream is drawn on the host from its seed, so a seeded sample is the same on either
    device (up to logits rounding, ~1e-6 here), at top_p 1 and < 1."""
    cpu, gpu, tok = pair
    prompts = [tok.encode(t, add_special_tokens=False) for t in ("go to the desk 1", "take mug 1 from", "open")]
    for top_p in (1.0, 0.9):
        a = HFGenerator(cpu, tok).generate(prompts, max_new_tokens=12, temperature=1.0, top_p=top_p, seeds=[4, 5, 6])
        b = HFGenerator(gpu, tok).generate(prompts, max_new_tokens=12, temperature=1.0, top_p=top_p, seeds=[4, 5, 6])
        assert [g.ids for g in a] == [g.ids for g in b]
        for x, y in zip(a, b):
            assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < TOL


def test_teacher_scores_on_cuda_match_cpu(pair):
    cpu, gpu, tok = pair
    prompts = ["PROMPT[You arrive at countertop 1.]", "PROMPT[Nothing happens.]", "PROMPT[room]"]
    contexts = [
        TeacherContext(sections=(("Immediate feedback from the current step:", "You pick up the mug 1."),), sources=("immediate",)),
        TeacherContext(),  # no context: not forwarded, zeros
        TeacherContext(sections=(("Successful trajectory in the same task, if any:", "Step 0\nResponse:\n<action>go to desk 1</action>"),), sources=("success",)),
    ]
    responses = [tok.encode(t, add_special_tokens=False) for t in ("<action>take mug 1</action>", "<action>look</action>", "<action>go to desk 1</action>")]
    n = max(map(len, responses))
    lp_cpu, has_cpu, _, _ = TeacherScorer(cpu, tok).score(prompts, contexts, responses, n)
    lp_gpu, has_gpu, _, _ = TeacherScorer(gpu, tok).score(prompts, contexts, responses, n)
    assert has_cpu.tolist() == has_gpu.tolist() == [True, False, True]
    assert lp_gpu.device.type == "cpu"  # scores come back to the host, where the batch is collated
    assert (lp_cpu - lp_gpu).abs().max() < TOL
    assert lp_cpu[0, : len(responses[0])].abs().sum() > 0  # real log-probs, not the zero padding


def test_learner_update_on_cuda_matches_cpu(pair):
    cpu, gpu, tok = pair
    batch = _fixed_batch(tok.vocab_size, tok.pad_token_id)
    settings = dict(lr=1e-3, mini_batch_size=4, micro_batch_size=2, loss=PPOClip(entropy_coef=0.001), reweight=SerlReweight(0.2))
    m_cpu = Learner(cpu, **settings).update(batch, lam=0.5)
    m_gpu = Learner(gpu, **settings).update(batch, lam=0.5)
    initial = load_policy(resolve_model_path("tiny"))[0]
    with torch.no_grad():
        moved = max(float((p - q).abs().max()) for p, q in zip(cpu.parameters(), initial.parameters()))
        diff = max(float((p - q.cpu()).abs().max()) for p, q in zip(cpu.parameters(), gpu.parameters()))
    assert moved > 1e-4, "the update must move the parameters"
    assert diff < TOL
    for key in ("actor/pg_loss", "serl_action_mask/weight_mean", "serl_action_mask/selected_fraction"):
        assert m_cpu[key] == pytest.approx(m_gpu[key], abs=TOL), key
