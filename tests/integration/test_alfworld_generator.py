"""Offline ALFWorld game generator (docs/alfworld_games.md §2–§4, behaviours of §7 items 1–7)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:  # fixtures live next to this module (tests/conftest.py is owned elsewhere)
    from tests.integration.conftest_alfworld import (  # noqa: F401
        SESSION_SEED,
        alfworld_data_dir,
        alfworld_games,
        alfworld_synth_root,
    )
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from conftest_alfworld import SESSION_SEED, alfworld_data_dir, alfworld_games, alfworld_synth_root  # noqa: F401

from serl.envs.alfworld import generator as gen
from serl.envs.alfworld.env import AlfworldTextEnv

REPO = Path(__file__).resolve().parents[2]
GAME_KEYS = {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough", "generator"}


def test_six_task_types_round_robin(alfworld_games):
    assert set(alfworld_games) == set(gen.TASK_TYPES)
    for index, task_type in enumerate(gen.TASK_TYPES):
        path = alfworld_games[task_type]
        assert path.parent.name == f"trial_synth_{SESSION_SEED}_{index:05d}"
        assert path.parent.parent.name.startswith(task_type + "-")


@pytest.mark.parametrize("task_type", gen.TASK_TYPES)
def test_walkthrough_replay_wins(alfworld_games, task_type):
    """§7.1/§7.3: solvable, non-empty walkthrough; replay wins with reward 10 exactly once."""
    path = alfworld_games[task_type]
    game = json.loads(path.read_text())
    walkthrough = game["walkthrough"]
    assert game["solvable"] is True
    assert 0 < len(walkthrough) <= gen.MAX_PLAN_LENGTH

    env = AlfworldTextEnv([path], max_episode_steps=50)
    obs, info = env.reset(options={"game": str(path)})
    assert info["won"] is False
    assert info["task_type"] == task_type
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert "You are in the middle of a room" in obs
    traj = json.loads((path.parent / "traj_data.json").read_text())
    assert obs.rstrip().endswith(f"Your task is to: {traj['task_desc']}.")
    assert info["task"] == traj["task_desc"]

    rewards, terms = [], []
    for command in walkthrough:
        assert not terms or not terms[-1], "won before the end of the walkthrough"
        assert command in info["admissible_commands"]
        obs, reward, terminated, truncated, info = env.step(command)
        rewards.append(reward)
        terms.append(terminated)
        assert truncated is False
    assert info["won"] is True and terms[-1] is True
    assert rewards.count(10.0) == 1 and sum(rewards) == 10.0
    env.close()


def test_game_files_follow_the_format(alfworld_games):
    """§7.4–§7.6: keys, shipped domain, task sentence, ids, layout, required appliances/lamps."""
    import alfworld.info
    from alfworld.gen.goal_library import gdict

    domain = Path(alfworld.info.ALFRED_PDDL_PATH).read_text()
    for task_type, path in alfworld_games.items():
        for part in gen.FORBIDDEN_PATH_PARTS:
            assert part not in str(path)
        game = json.loads(path.read_text())
        traj = json.loads((path.parent / "traj_data.json").read_text())
        assert set(game) == GAME_KEYS
        assert game["pddl_domain"] == domain
        assert "UNKNOWN GOAL" not in game["grammar"]
        assert traj["task_type"] == task_type
        params = traj["pddl_params"]
        assert set(params) == {"object_target", "parent_target", "toggle_target", "mrecep_target", "object_sliced"}

        # 5-part task dir: <task>-<Obj>-None-<Parent|Toggle>-<scene>
        parent = params["toggle_target"] or params["parent_target"]
        scene = traj["scene"]["scene_num"]
        assert path.parent.parent.name == f"{task_type}-{params['object_target']}-None-{parent}-{scene}"

        # the sentence is one of the two templates, lower-cased names (§3.5)
        fill = {k: params[f"{k}_target"].lower() for k in ("object", "parent", "toggle", "mrecep")}
        sentences = [
            t.format(obj=fill["object"], recep=fill["parent"], toggle=fill["toggle"], mrecep=fill["mrecep"])
            for t in gdict[task_type]["templates"]
        ]
        assert traj["task_desc"] in sentences
        assert f"Your task is to: {traj['task_desc']}." in game["grammar"]

        # ids: Type_bar_ form, unique; sinks end in _bar_SinkBasin (§3.1)
        problem = game["pddl_problem"]
        objects_section = problem.split("(:objects", 1)[1].split("\n)", 1)[0]
        decl = re.findall(r"^\s*(\S+) - (object|receptacle)$", objects_section, flags=re.M)
        ids = [name for name, _ in decl]
        assert len(ids) == len(set(ids)) > 0
        assert all("_bar_" in name for name in ids)
        for name in ids:
            if "SinkBasin" in name:
                assert name.startswith("Sink_bar_") and name.endswith("_bar_SinkBasin")
        receptacle_types = set(re.findall(r"\(receptacleType \S+ (\w+)Type\)", problem))
        appliance = {
            "pick_clean_then_place_in_recep": "SinkBasin",
            "pick_heat_then_place_in_recep": "Microwave",
            "pick_cool_then_place_in_recep": "Fridge",
        }.get(task_type)
        if appliance:
            assert appliance in receptacle_types
        if task_type == "look_at_obj_in_light":
            lamp = params["toggle_target"]
            assert re.search(rf"\(inReceptacle {lamp}_bar_\S+ \S+\)", problem)
            assert re.search(rf"\(toggleable {lamp}_bar_\S+\)", problem)


def test_alfredtwenv_accepts_the_generated_tree(alfworld_synth_root, alfworld_games):
    """§7.8: the official loader collects every generated game (solvable key, task types, path filter)."""
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    split_dir = alfworld_synth_root / "json_2.1.1" / "train"
    config = {
        "env": {"goal_desc_human_anns_prob": 0.0, "task_types": [1, 2, 3, 4, 5, 6]},
        "dataset": {"data_path": str(split_dir), "num_train_games": -1},
    }
    collected = {Path(p) for p in AlfredTWEnv(config, train_eval="train").game_files}
    assert collected == set(split_dir.rglob("game.tw-pddl"))
    assert set(alfworld_games.values()) <= collected


def test_second_call_is_a_cache_hit(alfworld_synth_root, alfworld_games, monkeypatch):
    def no_planner(*args, **kwargs):
        raise AssertionError("generate_games did planner work for cached games")

    monkeypatch.setattr(gen, "_run_workers", no_planner)
    monkeypatch.setattr(gen, "check_candidate", no_planner)
    t0 = time.perf_counter()
    paths = gen.generate_games(alfworld_synth_root, "train", 6, SESSION_SEED)
    assert paths == sorted(alfworld_games.values())
    assert gen.generate_games(alfworld_synth_root, "train", 3, SESSION_SEED) == sorted(
        p for p in alfworld_games.values() if int(p.parent.name[-5:]) < 3
    )
    assert time.perf_counter() - t0 < 5


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"'test'.*train, valid_seen, valid_unseen"):
        gen.generate_games(tmp_path, "test", 1, 0)
    with pytest.raises(ValueError, match="n must be"):
        gen.generate_games(tmp_path, "train", -1, 0)
    with pytest.raises(ValueError, match="seed must be"):
        gen.generate_games(tmp_path, "train", 1, -3)
    with pytest.raises(ValueError, match="movable"):
        gen.generate_games(tmp_path / "movable_tests", "train", 1, 0)
    assert gen.generate_games(tmp_path, "train", 0, 0) == []


def test_deterministic_across_hash_seeds(alfworld_games, alfworld_data_dir, tmp_path):
    """§4.4-1 / §7.2: a fresh interpreter with another PYTHONHASHSEED writes byte-identical files."""
    first = alfworld_games[gen.TASK_TYPES[0]]  # index 0
    other_hash_seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    env = dict(os.environ, PYTHONHASHSEED=other_hash_seed, ALFWORLD_DATA=str(alfworld_data_dir))
    code = (
        "import sys\n"
        "from serl.envs.alfworld.generator import generate_games\n"
        "generate_games(sys.argv[1], 'train', 1, 0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=REPO, env=env, timeout=120)
    rel = first.relative_to(first.parents[4])  # json_2.1.1/train/<task dir>/<trial>/game.tw-pddl
    again = tmp_path / rel
    assert again.read_bytes() == first.read_bytes()
    assert (again.parent / "traj_data.json").read_bytes() == (first.parent / "traj_data.json").read_bytes()


@pytest.mark.slow
def test_valid_unseen_games_of_every_type_are_won(alfworld_data_dir, tmp_path):
    """valid_unseen (held-out floor plans 10/219/308/424): one game per type, walkthrough replay wins."""
    paths = gen.generate_games(tmp_path, "valid_unseen", 6, 0)
    env = AlfworldTextEnv(paths)
    seen_types = set()
    for path in paths:
        traj = json.loads((path.parent / "traj_data.json").read_text())
        assert traj["scene"]["scene_num"] in gen.UNSEEN_FLOOR_PLANS
        _, info = env.reset(options={"game": path})
        seen_types.add(info["task_type"])
        for command in json.loads(path.read_text())["walkthrough"]:
            _, reward, terminated, _, info = env.step(command)
        assert info["won"] and terminated and reward == 10.0
    assert seen_types == set(gen.TASK_TYPES)


def test_placement_is_deterministic_and_seed_dependent(alfworld_data_dir):
    a = gen.build_candidate("train", 0, 3)
    assert gen.build_candidate("train", 0, 3) == a
    assert gen.build_candidate("train", 1, 3).problem != a.problem
    assert gen.build_candidate("valid_seen", 0, 3).problem != a.problem
    assert gen.build_candidate("train", 0, 3, attempt=1).problem != a.problem


def test_unseen_floor_plans_are_held_out(alfworld_data_dir):
    unseen = set(gen.UNSEEN_FLOOR_PLANS)
    for index in range(12):
        for attempt in range(3):
            assert gen.build_candidate("valid_unseen", 0, index, attempt).scene in unseen
            assert gen.build_candidate("train", 0, index, attempt).scene not in unseen
            assert gen.build_candidate("valid_seen", 0, index, attempt).scene not in unseen


def test_scene_room_matches_task(alfworld_data_dir):
    import alfworld.gen.constants as C

    for index in range(24):
        cand = gen.build_candidate("train", 7, index)
        room = next(name for name, nums in C.SCENE_TYPE.items() if cand.scene in nums)
        assert room in C.GOALS_VALID[cand.task_type]


# ------------------------------------------------------------------------------------------ sandbox


def _sleep_forever():
    time.sleep(60)


def _allocate(n_bytes):
    return len(bytearray(n_bytes))


def _raise_key_error():
    raise KeyError("val1")


def test_sandbox_enforces_wall_clock_limit():
    t0 = time.perf_counter()
    res = gen.run_sandboxed(_sleep_forever, time_limit_s=1.0, memory_limit_bytes=None)
    assert not res.ok and "timeout" in res.error
    assert time.perf_counter() - t0 < 10


def test_sandbox_enforces_memory_limit():
    res = gen.run_sandboxed(_allocate, 2 << 30, time_limit_s=30, memory_limit_bytes=1 << 30)
    assert not res.ok and "MemoryError" in res.error
    ok = gen.run_sandboxed(_allocate, 1 << 20, time_limit_s=30, memory_limit_bytes=1 << 30)
    assert ok.ok and ok.value == 1 << 20


def test_sandbox_reports_exceptions():
    res = gen.run_sandboxed(_raise_key_error, time_limit_s=30, memory_limit_bytes=None)
    assert not res.ok and res.error.startswith("KeyError")


def test_unsolvable_problem_is_rejected(alfworld_data_dir):
    """§4.3 / §7.7: the translator proves the goal unreachable -> rejected quickly, no walkthrough."""
    cand = gen.build_candidate("train", 0, 0)  # pick_and_place_simple
    obj, recep = cand.params.obj, cand.params.recep
    problem = re.sub(rf"\(canContain {recep}Type {obj}Type\)\n\s*", "", cand.problem)
    assert problem != cand.problem
    t0 = time.perf_counter()
    walkthrough, reason = gen.check_candidate(dataclasses.replace(cand, problem=problem), time_limit_s=30)
    assert walkthrough is None and "planner failed" in reason
    assert time.perf_counter() - t0 < 30
