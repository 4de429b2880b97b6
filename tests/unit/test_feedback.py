"""Feedback sources (serl/feedback; docs/reference.md §3.1–§3.2, docs/design.md §4). Expected texts are hand-derived."""

from __future__ import annotations

import pytest

from serl.feedback import (
    NO_CHANGE,
    FeedbackSource,
    ImmediateFeedback,
    NoFeedback,
    StateDiffFeedback,
)
from serl.feedback.state_diff import split_units, unit_diff
from serl.types import Step, TeacherContext, Trajectory
from tests.group_fixture import COUNTER, DESK, NOTHING, PICK_MUG, ROOM, replay_states

PICK = PICK_MUG


def step(step_id: int, observation: str, action: str, feedback: str, reward: float = 0.0, done: bool = False) -> Step:
    return Step(
        step_id=step_id,
        observation=observation,
        prompt=f"PROMPT[{observation}]",
        admissible=(),
        prompt_ids=[1, 2],
        response_ids=[3],
        response_logprobs=[-0.5],
        response_text=f"<think>thinking</think>\n<action>{action}</action>",
        action=action,
        valid=True,
        feedback=feedback,
        next_prompt="",
        reward=reward,
        done=done,
    )


def traj(steps: list[Step], won: bool = False, traj_id: int = 0) -> Trajectory:
    return Trajectory(group_id=0, traj_id=traj_id, game="g", task_type="pick_and_place_simple",
                      task="put a mug in desk", steps=replay_states(steps), won=won)


@pytest.fixture
def group() -> list[Trajectory]:
    """Trajectory 0: room -> counter -> pick -> (failed command) -> desk -> blank response (artificial)."""
    t0 = traj([
        step(0, ROOM, "go to countertop 1", COUNTER),
        step(1, COUNTER, "take mug 1 from countertop 1", "  " + PICK + "\n"),
        step(2, PICK, "take plate 2 from countertop 1", NOTHING),
        step(3, NOTHING, "go to desk 1", DESK),
        step(4, DESK, "inventory", " \n\t", done=True),
    ])
    t1 = traj([step(0, ROOM, "go to desk 1", DESK, reward=10.0, done=True)], won=True, traj_id=1)
    return [t0, t1]


# --------------------------------------------------------------------------- API


def test_registry_and_attributes():
    from serl.build import validate
    from tests.helpers import CONF, compose_cfg

    # Every conf/feedback option (each part of a combination) builds a FeedbackSource whose name is its option's
    # (a new source is one module + one YAML: no registry to edit).
    built: dict[str, type] = {}
    pending = [validate(compose_cfg([f"feedback={p.stem}"]))["feedback"] for p in (CONF / "feedback").glob("*.yaml")]
    while pending:
        source = pending.pop()
        if hasattr(source, "members"):  # AllOf / FirstAvailable
            pending.extend(source.members)
        else:
            built[type(source).name] = type(source)
    assert {"none", "immediate", "state_diff", "next_obs", "future", "success", "current", "judge"} <= set(built)
    assert ImmediateFeedback.title == "Immediate feedback from the current step:"
    assert StateDiffFeedback.title == "State change caused by the current step:"
    assert (ImmediateFeedback.enabled, StateDiffFeedback.enabled, NoFeedback.enabled) == (True, True, False)
    for name, cls in built.items():
        assert cls.name == name and issubclass(cls, FeedbackSource)
        if name != "judge":  # judge.yaml's option is the judge; its parts are named by the YAML file
            assert (CONF / "feedback" / f"{name}.yaml").is_file()
    with pytest.raises(TypeError):
        FeedbackSource()  # abstract


# --------------------------------------------------------------------------- immediate


def test_immediate_is_the_raw_env_response(group):
    fb = ImmediateFeedback()
    assert fb(group, 0, 0) == COUNTER
    assert fb(group, 0, 1) == PICK  # stripped
    assert fb(group, 0, 2) == NOTHING
    assert fb(group, 1, 0) == DESK
    assert fb(group, 0, 4) is None  # whitespace-only response => no section


def test_immediate_context(group):
    fb = ImmediateFeedback()
    ctx = fb.context(group, 0, 2)
    assert ctx == TeacherContext(sections=(("Immediate feedback from the current step:", NOTHING),),
                                 sources=("immediate",), anchor_size=None)
    assert ctx.text == "Immediate feedback from the current step:\nNothing happens."
    assert fb.context(group, 0, 4) == TeacherContext()
    assert not fb.context(group, 0, 4).has_context


def test_no_feedback(group):
    fb = NoFeedback()
    assert all(fb(group, i, t) is None for i, tr in enumerate(group) for t in range(tr.length))
    assert not fb.context(group, 0, 0).has_context


# --------------------------------------------------------------------------- state diff: units


def test_split_units_alfworld():
    assert split_units(ROOM) == [
        "-= Welcome to TextWorld, ALFRED! =-",
        "You are in the middle of a room.",
        "Looking quickly around you, you see a countertop 1, a desk 1, and a drawer 1.",
        "Your task is to: put a mug in desk.",
    ]
    assert split_units(COUNTER) == ["You arrive at countertop 1.", "On the countertop 1, you see a mug 1, and a plate 2."]
    assert split_units("You open the drawer 1. The drawer 1 is open. In it, you see nothing.") == [
        "You open the drawer 1.", "The drawer 1 is open.", "In it, you see nothing.",
    ]
    assert split_units("  \n\n ") == []


def test_split_units_webshop_page():
    page = "'Back to Search' [SEP] 'Page 1 (Total results: 2)' [SEP] 'Next >' [SEP] 'B01' [SEP] 'Red mug. Nice' [SEP] '$12.99'"
    # [SEP] parts are units as they are; no sentence split inside them
    assert split_units(page) == ["'Back to Search'", "'Page 1 (Total results: 2)'", "'Next >'", "'B01'",
                                 "'Red mug. Nice'", "'$12.99'"]


# --------------------------------------------------------------------------- state diff: exact outputs


def test_state_diff_replace(group):
    # case 1: taking the mug replaces both sentences of the counter view by the pick-up sentence
    assert StateDiffFeedback()(group, 0, 1) == (
        "- You arrive at countertop 1.\n"
        "- On the countertop 1, you see a mug 1, and a plate 2.\n"
        "+ You pick up the mug 1 from the countertop 1."
    )


def test_state_diff_from_initial_room(group):
    assert StateDiffFeedback()(group, 0, 0) == (
        "- -= Welcome to TextWorld, ALFRED! =-\n"
        "- You are in the middle of a room.\n"
        "- Looking quickly around you, you see a countertop 1, a desk 1, and a drawer 1.\n"
        "- Your task is to: put a mug in desk.\n"
        "+ You arrive at countertop 1.\n"
        "+ On the countertop 1, you see a mug 1, and a plate 2."
    )


def test_state_diff_nothing_happens(group):
    # case 2: the failed command changed nothing
    assert StateDiffFeedback()(group, 0, 2) == NO_CHANGE == "The action changed nothing."


def test_state_diff_after_a_failed_command_walks_back(group):
    # case 3: step 3 starts from "Nothing happens."; the state before is step 2's observation (PICK)
    assert StateDiffFeedback()(group, 0, 3) == (
        "- You pick up the mug 1 from the countertop 1.\n"
        "+ You arrive at desk 1.\n"
        "+ On the desk 1, you see a pen 1."
    )


def test_state_diff_blank_response_is_none(group):
    assert StateDiffFeedback()(group, 0, 4) is None
    assert not StateDiffFeedback().context(group, 0, 4).has_context


def test_state_diff_context(group):
    ctx = StateDiffFeedback().context(group, 1, 0)
    assert ctx.sources == ("state_diff",)
    assert ctx.text == (
        "State change caused by the current step:\n"
        "- -= Welcome to TextWorld, ALFRED! =-\n"
        "- You are in the middle of a room.\n"
        "- Looking quickly around you, you see a countertop 1, a desk 1, and a drawer 1.\n"
        "- Your task is to: put a mug in desk.\n"
        "+ You arrive at desk 1.\n"
        "+ On the desk 1, you see a pen 1."
    )


def test_state_diff_partial_change_keeps_only_changed_units():
    tr = traj([step(0, COUNTER, "examine countertop 1", "On the countertop 1, you see a mug 1, and a plate 2.")])
    assert StateDiffFeedback()([tr], 0, 0) == "- You arrive at countertop 1."


def test_state_diff_webshop_page_change():
    results = "'Back to Search' [SEP] 'Page 1 (Total results: 2)' [SEP] 'Next >' [SEP] 'B01' [SEP] 'Red mug' [SEP] '$12.99'"
    item = "'Back to Search' [SEP] '< Prev' [SEP] 'Red mug' [SEP] 'Price: $12.99' [SEP] 'Buy Now'"
    tr = traj([step(0, results, "click[b01]", item), step(1, item, "click[next >]", item)])
    # difflib aligns 'Back to Search' and 'Red mug'; the two changed blocks are written in order
    assert StateDiffFeedback()([tr], 0, 0) == (
        "- 'Page 1 (Total results: 2)'\n"
        "- 'Next >'\n"
        "- 'B01'\n"
        "+ '< Prev'\n"
        "- '$12.99'\n"
        "+ 'Price: $12.99'\n"
        "+ 'Buy Now'"
    )
    # an invalid WebShop click leaves the page unchanged
    assert StateDiffFeedback()([tr], 0, 1) == NO_CHANGE


def test_unit_diff_identical_is_empty():
    assert unit_diff(COUNTER, COUNTER) == []
    assert unit_diff(COUNTER, "  " + COUNTER.replace(". ", ".\n")) == []  # same units, other layout


def test_state_diff_noop_is_the_envs_flag():
    # the env decides what a no-op is (Step.noop), not a message list: any answer it flags changes nothing,
    # and the next step's observation diff walks back over it
    tr = traj([step(0, COUNTER, "dance", "I don't understand that."), step(1, "I don't understand that.", "look", PICK)])
    assert StateDiffFeedback(source="observation")([tr], 0, 0) == (
        "- You arrive at countertop 1.\n"
        "- On the countertop 1, you see a mug 1, and a plate 2.\n"
        "+ I don't understand that."
    )
    tr.steps[0].noop = True
    fb = StateDiffFeedback(source="observation")
    assert fb([tr], 0, 0) == NO_CHANGE
    assert fb([tr], 0, 1) == (  # walk-back skips the answer to the no-op
        "- You arrive at countertop 1.\n"
        "- On the countertop 1, you see a mug 1, and a plate 2.\n"
        "+ You pick up the mug 1 from the countertop 1."
    )


def test_state_diff_of_env_states():
    # ALFWorld-like symbolic states (serl/envs/alfworld/state.py): only the changed facts show
    tr = traj([step(0, COUNTER, "take mug 1 from countertop 1", PICK)])
    tr.steps[0].state = "You are at countertop 1\nYou hold nothing\nAt countertop 1 you see: mug 1, plate 2"
    tr.steps[0].next_state = "You are at countertop 1\nYou hold mug 1\nAt countertop 1 you see: plate 2"
    assert StateDiffFeedback()([tr], 0, 0) == (
        "- You hold nothing\n"
        "- At countertop 1 you see: mug 1, plate 2\n"
        "+ You hold mug 1\n"
        "+ At countertop 1 you see: plate 2"
    )
    assert StateDiffFeedback(source="observation")([tr], 0, 0).startswith("- You arrive at countertop 1.")
    tr.steps[0].next_state = " "
    assert StateDiffFeedback()([tr], 0, 0) is None  # no state after the action: no section
    with pytest.raises(ValueError, match="allowed: state, observation"):
        StateDiffFeedback(source="text")


def test_state_diff_walk_back_falls_back_to_own_observation():
    # nothing but no-op observations before: the step's own observation is the state before
    tr = traj([step(0, NOTHING, "look", DESK)])
    assert StateDiffFeedback()([tr], 0, 0) == (
        "- Nothing happens.\n+ You arrive at desk 1.\n+ On the desk 1, you see a pen 1."
    )
