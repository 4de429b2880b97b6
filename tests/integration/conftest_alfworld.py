"""Session fixtures for the ALFWorld adapter tests (imported by the test modules that need them).

``alfworld_synth_root`` generates one game of each of the 6 task types (train split, seed 0, indices 0..5,
round-robin task types) under ``$SERL_CACHE/alfworld_synth`` — the suite's default cache dir, which
tests/conftest.py points to a repo-local test cache, so later runs and the suite's own seed-0 pool reuse
them — or, without ``SERL_CACHE``, under pytest's session temp dir. A second request (e.g. from another
module that imported the fixture) is a disk-cache hit of ``generate_games`` (no planner work). Reused files
are still checked against a fresh generation by ``test_deterministic_across_hash_seeds``, which fails if
the generator changed without a ``GENERATOR_VERSION`` bump.
``ALFWORLD_DATA`` points to an empty session temp dir before anything imports alfworld
(docs/alfworld_games.md §5.4-4), so tests never touch ``~/.cache``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SESSION_SEED = 0
N_SESSION_GAMES = 6  # one per task type


def _session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = os.environ.get("SERL_CACHE")
    return Path(cache) / "alfworld_synth" if cache else tmp_path_factory.getbasetemp() / "alfworld_synth"


@pytest.fixture(scope="session")
def alfworld_data_dir(tmp_path_factory: pytest.TempPathFactory):
    """An empty official-data root, exported as ``ALFWORLD_DATA`` for the session (restored afterwards)."""
    path = tmp_path_factory.getbasetemp() / "alfworld_data"
    path.mkdir(exist_ok=True)
    old = os.environ.get("ALFWORLD_DATA")
    os.environ["ALFWORLD_DATA"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ALFWORLD_DATA", None)
    else:
        os.environ["ALFWORLD_DATA"] = old


@pytest.fixture(scope="session")
def alfworld_synth_root(tmp_path_factory: pytest.TempPathFactory, alfworld_data_dir: Path) -> Path:
    """Root of the session's generated games (``<root>/json_2.1.1/train/...``)."""
    from serl.envs.alfworld.generator import generate_games

    root = _session_root(tmp_path_factory)
    generate_games(root, "train", N_SESSION_GAMES, SESSION_SEED)
    return root


@pytest.fixture(scope="session")
def alfworld_games(alfworld_synth_root: Path) -> dict[str, Path]:
    """task type -> ``game.tw-pddl`` path of the session game of that type."""
    from serl.envs.alfworld.generator import generate_games

    paths = generate_games(alfworld_synth_root, "train", N_SESSION_GAMES, SESSION_SEED)  # cache hit
    out = {}
    for path in paths:
        task_type = json.loads((path.parent / "traj_data.json").read_text())["task_type"]
        out[task_type] = path
    return out


@pytest.fixture(scope="session")
def smallest_game(alfworld_games: dict[str, Path]) -> Path:
    """The session game with the shortest PDDL problem (fastest resets)."""
    return min(alfworld_games.values(), key=lambda p: len(json.loads(p.read_text())["pddl_problem"]))
