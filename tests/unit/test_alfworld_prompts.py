"""ALFWorld student prompt templates (docs/reference.md §8.1) and the suite's per-step helpers."""

from __future__ import annotations

import pytest

from serl.envs.alfworld.prompts import format_admissible, render_prompt
from serl.envs.alfworld.suite import AlfworldSuite
from serl.types import Trajectory

INTRO = (
    "-= Welcome to TextWorld, ALFRED! =-\n\n"
    "You are in the middle of a room. Looking quickly around you, you see a desk 1, and a drawer 1.\n\n"
    "Your task is to: put a mug in desk."
)
ADMISSIBLE = ["go to desk 1", "go to drawer 1", "help", "inventory", "look"]

EXPECTED_STEP0 = """\
You are an expert agent acting in ALFRED, an embodied household environment.
Your current observation is: -= Welcome to TextWorld, ALFRED! =-

You are in the middle of a room. Looking quickly around you, you see a desk 1, and a drawer 1.

Your task is to: put a mug in desk.
The admissible actions in your current situation are: ['go to desk 1'
 'go to drawer 1'
 'inventory'
 'look'].

Now it is your turn to act.
First reason step by step about the current situation; this reasoning MUST be enclosed within <think> </think> tags.
Once you have finished reasoning, choose one admissible action for the current step and present it within <action> </action> tags."""

EXPECTED_STEP3 = """\
You are an expert agent acting in ALFRED, an embodied household environment. Your task is to: put a mug in desk.
Prior to this step, you have already taken 3 step(s). Below are the most recent 2 observations and the corresponding actions you took:
[Observation 2: 'You arrive at drawer 1. The drawer 1 is closed.', Action 2: 'open drawer 1']
[Observation 3: 'You open the drawer 1. The drawer 1 is open. In it, you see a mug 1.', Action 3: 'take mug 1 from drawer 1']
You are now at step 4 and your current observation is: You pick up the mug 1 from the drawer 1.
The admissible actions in your current situation are: ['close drawer 1'
 'go to desk 1'
 'move mug 1 to drawer 1'].

Now it is your turn to act.
First reason step by step about the current situation; this reasoning MUST be enclosed within <think> </think> tags.
Once you have finished reasoning, choose one admissible action for the current step and present it within <action> </action> tags."""

HISTORY = [
    (INTRO, "go to drawer 1"),
    ("You arrive at drawer 1. The drawer 1 is closed.", "open drawer 1"),
    ("You open the drawer 1. The drawer 1 is open. In it, you see a mug 1.", "take mug 1 from drawer 1"),
]
ADMISSIBLE3 = ["close drawer 1", "go to desk 1", "help", "move mug 1 to drawer 1"]


def test_step0_uses_the_no_history_template():
    assert render_prompt("put a mug in desk", [], 0, INTRO, ADMISSIBLE, history_length=2) == EXPECTED_STEP0


def test_history_step_shows_the_last_h_pairs():
    obs = "You pick up the mug 1 from the drawer 1."
    prompt = render_prompt("put a mug in desk", HISTORY, 3, obs, ADMISSIBLE3, history_length=2)
    assert prompt == EXPECTED_STEP3


def test_history_may_be_passed_truncated():
    obs = "You pick up the mug 1 from the drawer 1."
    full = render_prompt("put a mug in desk", HISTORY, 3, obs, ADMISSIBLE3, history_length=2)
    assert render_prompt("put a mug in desk", HISTORY[-2:], 3, obs, ADMISSIBLE3, history_length=2) == full


def test_first_history_step_and_zero_history_length():
    prompt = render_prompt("put a mug in desk", HISTORY[:1], 1, "You arrive at drawer 1.", ["look"], history_length=2)
    assert "already taken 1 step(s). Below are the most recent 1 observations" in prompt
    assert f"[Observation 1: '{INTRO}', Action 1: 'go to drawer 1']" in prompt
    assert "You are now at step 2 and your current observation is: You arrive at drawer 1." in prompt
    no_hist = render_prompt("put a mug in desk", HISTORY, 3, "obs", ["look"], history_length=0)
    assert no_hist.startswith("You are an expert agent acting in ALFRED, an embodied household environment.\n")
    assert "Your current observation is: obs\n" in no_hist and "Observation 1" not in no_hist


def test_format_admissible_excludes_help():
    assert format_admissible(["help", "look"]) == "['look']"
    assert format_admissible(["a", "help", "b"]) == "['a'\n 'b']"
    assert format_admissible([]) == "[]"


def test_render_prompt_rejects_inconsistent_history():
    with pytest.raises(ValueError, match="history has 3 pairs"):
        render_prompt("t", HISTORY, 2, "obs", ["look"], history_length=2)
    with pytest.raises(ValueError, match="step_id"):
        render_prompt("t", [], -1, "obs", ["look"], history_length=2)


# ------------------------------------------------------------------------------------------- suite


@pytest.fixture
def suite(tmp_path, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "alfworld_data"))
    return AlfworldSuite(cache_dir=str(tmp_path / "cache"), history_length=2)


def test_suite_renders_with_its_history_length(suite):
    obs = "You pick up the mug 1 from the drawer 1."
    assert suite.render_prompt("put a mug in desk", HISTORY, 3, obs, ADMISSIBLE3) == EXPECTED_STEP3
    assert suite.render_prompt("put a mug in desk", [], 0, INTRO, ADMISSIBLE) == EXPECTED_STEP0


def test_suite_projection_uses_30_fallback_chars(suite):
    assert suite.response_format.project("<think>a</think><action>Look</action>") == ("look", True)
    text = "I will now go to the drawer number one"
    assert suite.response_format.project(text) == (text.lower()[-30:], False)


def test_suite_construction_is_lazy(suite, tmp_path):
    assert suite.name == "alfworld" and suite.source == "generated"
    assert (suite.max_turns, suite.history_length) == (50, 2)
    assert not (tmp_path / "cache").exists()  # nothing generated before first use


def _traj(task_type: str, won: bool) -> Trajectory:
    return Trajectory(group_id=0, traj_id=0, game="g", task_type=task_type, task="t", won=won)


def test_success_metrics_overall_and_per_task_type(suite):
    trajs = [
        _traj("pick_and_place_simple", True),
        _traj("pick_and_place_simple", False),
        _traj("look_at_obj_in_light", True),
        _traj("pick_two_obj_and_place", False),
    ]
    assert suite.success_metrics(trajs) == {
        "success_rate": 0.5,
        "look_at_obj_in_light/success_rate": 1.0,
        "pick_and_place_simple/success_rate": 0.5,
        "pick_two_obj_and_place/success_rate": 0.0,
    }
    assert suite.success_metrics([]) == {}
