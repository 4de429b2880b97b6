"""Test-session environment: offline, isolated caches, shared fixtures.

* ``SERL_CACHE`` (generated games, converted/tiny models) defaults to ``<repo>/.cache/serl-test`` so repeated
  runs reuse what an earlier run generated; CI sets it explicitly.
* ``ALFWORLD_DATA`` points to an empty folder, so the ALFWorld loader uses generated games and importing
  alfworld never writes into ``~/.cache``.
* Nothing is fetched from a model hub; W&B never goes online.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SERL_CACHE", str(ROOT / ".cache" / "serl-test"))
_empty_official = Path(os.environ["SERL_CACHE"]) / "no_official_alfworld_data"
_empty_official.mkdir(parents=True, exist_ok=True)
os.environ["ALFWORLD_DATA"] = str(_empty_official)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("WANDB_API_KEY", None)

from fixtures_models import tiny_model_dir, tiny_policy, warm_tiny_dir  # noqa: E402,F401
