"""Model fixtures shared by the test suite (imported by tests/conftest.py).

``tiny_model_dir`` builds the tiny random Qwen2 + locally trained tokenizer (serl.policy.tiny) once per
session; ``warm_tiny_dir`` is that model warm-started on expert demonstrations (once per session, shared by the
distributed and baseline tests); nothing is fetched from the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Folder of the tiny test model (Qwen2, hidden 64, 2 layers, vocab ~800), built once per session."""
    from serl.policy.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_policy(tiny_model_dir):
    """``(model, tokenizer)`` of the tiny model in float32 eval mode, shared by the session (read-only)."""
    from serl.policy.models import load_policy

    model, tokenizer = load_policy(str(tiny_model_dir))
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def warm_tiny_dir(tmp_path_factory) -> Path:
    """HF folder of the tiny model warm-started for a few seconds (tests.helpers.warm_start_tiny; one thread,
    fixed hash seed, as the distributed test's launches)."""
    from tests.helpers import warm_start_tiny

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return warm_start_tiny(tmp_path_factory.mktemp("warm") / "sft", env=env)
