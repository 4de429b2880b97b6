"""Data parallel SERL on GPUs: NCCL ranks and vLLM's sleep mode (marker ``gpu``; skipped without the hardware).

The CPU suite proves the distributed algorithm with gloo (tests/integration/test_distributed.py); what only a GPU
node exercises is checked here:

* ``torchrun --nproc_per_node=2`` with ``device=cuda`` (NCCL collectives, FSDP2 in fp32 so the numbers are
  comparable) ends 2 training steps with the parameters of one CUDA process over the same games and seeds;
* a colocated vLLM engine put to sleep (``enable_sleep_mode``, level 1) and woken generates what it generated
  before, and after ``load_weights`` the new weights (the protocol of ``rollout.sleep=true``).

Run on a GPU machine: ``python -m pytest -q -m gpu tests/integration/test_distributed_gpu.py`` (or
``SERL_CHECK_NPROC=2 scripts/check_gpu.sh``). Where they ran is written in docs/distributed.md ("Tests").
"""

from __future__ import annotations

import pytest
import torch

from tests.integration.test_distributed import _assert_same_state, _train

pytestmark = [pytest.mark.gpu]

two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")


@two_gpus
def test_two_nccl_ranks_equal_one_cuda_process(tmp_path):
    from serl.checkpoint import load_checkpoint
    from serl.policy.models import resolve_model_path

    model = resolve_model_path("tiny")
    cuda = ["device=cuda", "distributed.mixed_precision=fp32", "eval_every=0"]
    _train(tmp_path / "single", model, *cuda)
    _train(tmp_path / "ranked", model, *cuda, ranks=2)
    _assert_same_state(load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "ranked"), "NCCL", atol=1e-4)


@pytest.mark.vllm
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vllm_sleep_and_wake_keep_and_update_the_weights():
    pytest.importorskip("vllm")
    from serl.policy.models import load_policy, resolve_model_path
    from serl.policy.vllm_engine import VLLMEngine, policy_weights

    path = resolve_model_path("tiny")
    engine = VLLMEngine(path, sleep=True, gpu_memory_utilization=0.3, max_model_len=256)
    prompts = [[1, 5, 9, 12], [1, 7, 7]]
    before = engine.generate(prompts, max_tokens=8, temperature=0.0, top_p=1.0, seeds=None)
    engine.sleep()
    engine.wake_up()
    again = engine.generate(prompts, max_tokens=8, temperature=0.0, top_p=1.0, seeds=None)
    assert [g.ids for g in again] == [g.ids for g in before]
    model, _ = load_policy(path)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.0)  # other weights: greedy outputs change
    engine.sleep()
    engine.load_weights(policy_weights(model))  # wakes the engine and streams the weights one at a time
    changed = engine.generate(prompts, max_tokens=8, temperature=0.0, top_p=1.0, seeds=None)
    assert [g.ids for g in changed] != [g.ids for g in before]
