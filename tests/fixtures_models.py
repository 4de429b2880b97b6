"""Model fixtures shared by the test suite (imported by tests/conftest.py).

``tiny_model_dir`` builds the tiny random Qwen2 + locally trained tokenizer (serl.policy.tiny) once per
session; nothing is fetched from the network.
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
