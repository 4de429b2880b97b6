"""``AlfworldTextEnv`` and ``AlfworldSuite`` on generated games (docs/alfworld_games.md §5, §6.2, §7)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

try:  # fixtures live next to this module (tests/conftest.py is owned elsewhere)
    from tests.integration.conftest_alfworld import (  # noqa: F401
        SESSION_SEED,
        alfworld_data_dir,
        alfworld_games,
        alfworld_synth_root,
        smallest_game,
    )
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from conftest_alfworld import (  # noqa: F401
        SESSION_SEED,
        alfworld_data_dir,
        alfworld_games,
        alfworld_synth_root,
        smallest_game,
    )

from serl.envs.alfworld.env import AlfworldTextEnv
from serl.envs.alfworld.suite import AlfworldSuite

REPO = Path(__file__).resolve().parents[2]
INFO_KEYS = {"admissible_commands", "won", "task", "task_type", "game", "state", "noop"}


@pytest.fixture
def env(smallest_game):
    e = AlfworldTextEnv([smallest_game], max_episode_steps=5)
    yield e
    e.close()


@pytest.mark.filterwarnings("ignore:.*environment not having a spec.*")  # no gymnasium registration here
def test_check_env_passes(env):
    check_env(env.unwrapped)


def test_reset_info(env, smallest_game):
    obs, info = env.reset(options={"game": smallest_game})
    assert set(info) == INFO_KEYS
    assert info["game"] == str(smallest_game)
    assert info["won"] is False
    adm = info["admissible_commands"]
    assert adm == sorted(adm) and {"look", "inventory", "help"} <= set(adm)
    assert obs in env.observation_space
    assert info["task"] and not info["task"].endswith(".")
    assert f"Your task is to: {info['task']}." in obs


@pytest.mark.parametrize("command", ["take unicorn 1 from moon 1", "LOOK", "goto somewhere", "dance"])
def test_inadmissible_command_does_nothing(env, smallest_game, command):
    _, info0 = env.reset(options={"game": smallest_game})
    assert command not in info0["admissible_commands"]
    obs, reward, terminated, truncated, info = env.step(command)
    assert obs == "Nothing happens."
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["admissible_commands"] == info0["admissible_commands"]
    assert info["noop"] is True and info["state"] == info0["state"]  # the env's no-op: the state is unchanged


def test_state_is_a_few_facts_that_a_move_changes(env, smallest_game):
    # serl/envs/alfworld/state.py: the start, then the location and what is seen there
    _, info0 = env.reset(options={"game": smallest_game})
    assert info0["noop"] is False
    assert info0["state"].splitlines()[:2] == ["You are in the middle of the room", "You hold nothing"]
    go = next(c for c in info0["admissible_commands"] if c.startswith("go to "))
    obs, _r, _t, _u, info = env.step(go)
    place = go[len("go to "):]
    lines = info["state"].splitlines()
    assert info["noop"] is False and lines[0] == f"You are at {place}" and len(lines) <= 6
    assert any(line.startswith((f"At {place} you see: ", f"{place} is ")) for line in lines[2:3])
    # what the env says it sees there is what the state lists (a closed receptacle shows nothing inside)
    seen = next((line.split(": ", 1)[1].split(", ") for line in lines if line.startswith(f"At {place} you see: ")), [])
    assert all(f"a {obj}" in obs for obj in seen)


def test_reset_keeps_sys_argv(env, smallest_game, alfworld_games, monkeypatch):
    argv = ["train.py", "env=alfworld"]
    monkeypatch.setattr(sys, "argv", argv)
    env.reset(options={"game": smallest_game})
    other = next(p for p in alfworld_games.values() if p != smallest_game)
    env.reset(options={"game": other})  # a new game: load + reset
    assert sys.argv is argv and argv == ["train.py", "env=alfworld"]


def test_surrounding_spaces_are_accepted(env, smallest_game):
    env.reset(options={"game": smallest_game})
    obs, *_ = env.step("  inventory  ")
    assert obs == "You are not carrying anything."


def test_truncation_at_max_episode_steps(smallest_game):
    env = AlfworldTextEnv([smallest_game], max_episode_steps=3)
    env.reset(options={"game": smallest_game})
    flags = [env.step(a)[2:4] for a in ("look", "dance", "inventory")]
    assert flags == [(False, False), (False, False), (False, True)]  # invalid steps count too
    # a finished episode is a no-op
    obs, reward, terminated, truncated, info = env.step("look")
    assert (reward, terminated, truncated) == (0.0, False, True) and info["won"] is False
    # reset starts a new episode
    env.reset(options={"game": smallest_game})
    assert env.step("look")[2:4] == (False, False)


def test_seeded_reset_draws_from_the_pool(alfworld_games):
    pool = sorted(alfworld_games.values())[:3]
    env = AlfworldTextEnv(pool)
    picks = [env.reset(seed=s)[1]["game"] for s in range(6)]
    assert set(picks) <= {str(p) for p in pool}
    assert [env.reset(seed=s)[1]["game"] for s in range(6)] == picks


def test_reset_errors(smallest_game, tmp_path):
    env = AlfworldTextEnv([])
    with pytest.raises(ValueError, match="no game pool"):
        env.reset()
    with pytest.raises(ValueError, match=r"unknown reset option.*'game'"):
        env.reset(options={"gmae": smallest_game})
    with pytest.raises(FileNotFoundError):
        env.reset(options={"game": tmp_path / "nope" / "game.tw-pddl"})
    with pytest.raises(RuntimeError, match="reset"):
        env.step("look")
    with pytest.raises(ValueError, match="max_episode_steps"):
        AlfworldTextEnv([], max_episode_steps=0)


def test_import_creates_nothing_under_home_cache(tmp_path):
    """§5.4-4 / §7.15: with ALFWORLD_DATA set, importing and loading alfworld leaves ~/.cache alone."""
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "alfdata"
    code = (
        "import sys\n"
        "import serl.envs.alfworld.env, serl.envs.alfworld.suite\n"
        "assert 'alfworld' not in sys.modules and 'textworld' not in sys.modules\n"
        "from serl.envs.alfworld import import_alfworld\n"
        "import_alfworld()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SERL_CACHE", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), ALFWORLD_DATA=str(data))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=120)
    assert not (home / ".cache").exists()
    assert data.is_dir()

    # ALFWORLD_DATA unset: serl points it into its own cache ($SERL_CACHE), never ~/.cache/alfworld
    env.pop("ALFWORLD_DATA")
    env["SERL_CACHE"] = str(tmp_path / "serl_cache")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=120)
    assert not (home / ".cache").exists()
    assert (tmp_path / "serl_cache" / "alfworld_data").is_dir()


# ------------------------------------------------------------------------------------------- suite


def _fake_official(root: Path, split: str, game: Path, trial: str = "trial_T20190909_000000_000000") -> Path:
    task_dir = root / "json_2.1.1" / split / game.parent.parent.name / trial
    shutil.copytree(game.parent, task_dir)
    return task_dir / "game.tw-pddl"


def test_suite_picks_generated_without_official_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "empty"))
    suite = AlfworldSuite(cache_dir=str(tmp_path / "cache"))
    assert suite.source == "generated"
    assert suite.data_root == tmp_path / "empty"
    with pytest.raises(FileNotFoundError, match=r"require_official.*\['train', 'valid_seen'\]"):
        AlfworldSuite(cache_dir=str(tmp_path / "cache"), require_official=True)


def test_suite_picks_official_when_present(tmp_path, monkeypatch, alfworld_games):
    data = tmp_path / "official"
    game = alfworld_games["pick_and_place_simple"]
    official_train = _fake_official(data, "train", game)
    official_eval = _fake_official(data, "valid_seen", alfworld_games["look_at_obj_in_light"])
    monkeypatch.setenv("ALFWORLD_DATA", str(data))

    suite = AlfworldSuite(cache_dir=str(tmp_path / "cache"), require_official=True)
    assert suite.source == "official"
    assert suite.train_games(2, seed=0) == [str(official_train)] * 2
    assert suite.pool(suite.eval_split) == [str(official_eval)]
    assert not (tmp_path / "cache").exists()  # nothing generated

    # explicit data_root wins over $ALFWORLD_DATA
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "empty"))
    assert AlfworldSuite(data_root=str(data), cache_dir=str(tmp_path / "cache")).source == "official"


def test_evaluation_needs_only_the_official_eval_split(tmp_path, monkeypatch, alfworld_games):
    data = tmp_path / "official"
    official_eval = _fake_official(data, "valid_seen", alfworld_games["look_at_obj_in_light"])
    monkeypatch.setenv("ALFWORLD_DATA", str(data))
    with pytest.raises(FileNotFoundError, match=r"\['train'\]"):  # training needs both splits
        AlfworldSuite(cache_dir=str(tmp_path / "cache"), require_official=True)
    suite = AlfworldSuite(cache_dir=str(tmp_path / "cache"), require_official=True, use_train_pool=False)
    assert suite.source == "official" and suite.pool(suite.eval_split) == [str(official_eval)]


def test_suite_applies_the_alfredtwenv_filter(tmp_path, monkeypatch, alfworld_games, caplog):
    data = tmp_path / "official"
    _fake_official(data, "train", alfworld_games["pick_and_place_simple"])
    # eval split: only games the loader must skip (unsolvable; 'movable' in the path)
    bad = _fake_official(data, "valid_seen", alfworld_games["look_at_obj_in_light"])
    game = json.loads(bad.read_text())
    game["solvable"] = False
    bad.write_text(json.dumps(game))
    _fake_official(data, "valid_seen", alfworld_games["pick_two_obj_and_place"], trial="trial_movable_1")
    monkeypatch.setenv("ALFWORLD_DATA", str(data))

    with caplog.at_level(logging.WARNING):
        suite = AlfworldSuite(cache_dir=str(tmp_path / "cache"))
    assert suite.source == "generated"  # never mix sources (§6.2-4)
    assert "using generated games for both" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"\['valid_seen'\]"):
        AlfworldSuite(cache_dir=str(tmp_path / "cache"), require_official=True)


def test_suite_bad_values_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"'train'.*valid_seen, valid_unseen"):
        AlfworldSuite(cache_dir=str(tmp_path), eval_split="train")
    with pytest.raises(ValueError, match="max_turns"):
        AlfworldSuite(cache_dir=str(tmp_path), max_turns=0)


def test_suite_pools_are_disjoint_and_seeded(alfworld_synth_root, alfworld_data_dir, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(alfworld_data_dir))
    # train pool = the session's 6 cached games; the eval pool generates 2 valid_seen games
    suite = AlfworldSuite(cache_dir=str(alfworld_synth_root), train_pool=6, eval_pool=2, seed=SESSION_SEED)
    assert suite.source == "generated"
    train_pool, eval_pool = set(suite.pool("train")), set(suite.pool("valid_seen"))
    assert len(train_pool) == 6 and len(eval_pool) == 2
    assert not train_pool & eval_pool
    assert all("/json_2.1.1/valid_seen/" in p for p in eval_pool)

    picks = suite.train_games(4, seed=1)
    assert len(set(picks)) == 4 and set(picks) <= train_pool  # no repeats while n <= pool
    assert suite.train_games(4, seed=1) == picks
    many = suite.train_games(14, seed=2)
    assert set(many) == train_pool and len(many) == 14  # repeats only once the pool is exhausted
    evals = sorted(eval_pool)

    env = suite.make_env()
    assert env.max_episode_steps == suite.max_turns
    obs, info = env.reset(options={"game": evals[0]})
    assert info["game"] == evals[0] and not info["won"]
    _, info = env.reset(seed=3)  # no option: a game of the training pool
    assert info["game"] in train_pool
    env.close()
