"""Trajectory and next-observation feedback sources and their combinations (docs/reference.md §3.1–§3.5, §4.3).

Expected texts are written out by hand from the shared group (``tests/group_fixture.py``):

    traj 0 (won):  ROOM -go to countertop 1-> COUNTER -take mug 1-> PICK_MUG -go to desk 1-> DESK -move mug 1-> PUT
    traj 1:        ROOM -go to countertop 1-> COUNTER -take plate 2-> PICK_PLATE -take mug 1-> NOTHING -go to desk 1-> DESK
    traj 2:        ROOM -go to drawer 1-> DRAWER -(no tags) "I should  open drawer 1"-> NOTHING -go to desk 1-> DESK
    traj 3:        ROOM -go to countertop 1 (thinking mentions drawer)-> COUNTER -examine-> EXAMINED -(empty action)-> "  "

Traj 0 is the only success, so with ``exclude_self`` it never gets a success section itself.
"""

from __future__ import annotations

import pytest

from serl.build import validate
from serl.feedback import (
    AllOf,
    CurrentTrajectory,
    FeedbackSource,
    FirstAvailable,
    FutureTrajectory,
    ImmediateFeedback,
    NextObservation,
    SuccessfulTrajectory,
)
from serl.insertion import StepInsertion
from serl.types import TeacherContext, Trajectory
from tests.group_fixture import COUNTER, DESK, NOTHING, PICK_MUG, ROOM, make_group
from tests.helpers import compose_cfg

NEXT = "next observation after the current step:"
FUT = "Observed future trajectory of the current step:"
SUC = "Successful trajectory in the same task, if any:"
CUR = "Current trajectory so far:"
IMM = "Immediate feedback from the current step:"

# traj 0 rendered in the reference's default "response" format, thinking removed (§3.3)
SUCCESS_0 = (
    "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n"
    "Step 1\nResponse:\n<action>take mug 1 from countertop 1</action>\n\n"
    "Step 2\nResponse:\n<action>go to desk 1</action>\n\n"
    "Step 3\nResponse:\n<action>move mug 1 to desk 1</action>"
)
THINK = "<think>I reason about it.</think>\n"


@pytest.fixture
def group() -> list[Trajectory]:
    return make_group()


def mask(group, source) -> list[list[bool]]:
    return [[c.has_context for c in row] for row in StepInsertion().contexts(group, source)]


def every_step(group, source) -> list[list[str | None]]:
    return [[source(group, i, t) for t in range(tr.length)] for i, tr in enumerate(group)]


# --------------------------------------------------------------------------- registry, attributes


def test_attributes():
    names = {cls: cls.name for cls in (NextObservation, FutureTrajectory, SuccessfulTrajectory, CurrentTrajectory)}
    assert names == {NextObservation: "next_obs", FutureTrajectory: "future", SuccessfulTrajectory: "success",
                     CurrentTrajectory: "current"}
    assert NextObservation.title == "next observation after the current step:"
    assert FutureTrajectory.title == "Observed future trajectory of the current step:"
    assert SuccessfulTrajectory.title == "Successful trajectory in the same task, if any:"
    assert CurrentTrajectory.title == "Current trajectory so far:"
    per = {cls.name: cls.per_candidate for cls in (NextObservation, FutureTrajectory, SuccessfulTrajectory,
                                                   CurrentTrajectory)}
    assert per == {"next_obs": True, "future": True, "success": False, "current": False}
    for cls in (NextObservation, FutureTrajectory, SuccessfulTrajectory, CurrentTrajectory):
        assert issubclass(cls, FeedbackSource) and cls.enabled


# --------------------------------------------------------------------------- next observation


def test_next_obs_is_the_next_prompt(group):
    fb = NextObservation()
    assert fb(group, 0, 0) == f"PROMPT[{COUNTER}]"
    assert fb(group, 1, 2) == "PROMPT[Nothing happens.]"
    assert fb(group, 0, 3) == "PROMPT[You move the mug 1 to the desk 1.]"  # last steps have a next prompt too
    assert fb(group, 3, 2) == "PROMPT[  ]"  # blank env text, but the prompt itself is not blank
    assert fb.context(group, 2, 1) == TeacherContext(sections=((NEXT, "PROMPT[Nothing happens.]"),),
                                                     sources=("next_obs",))
    assert mask(group, fb) == [[True] * 4, [True] * 4, [True] * 3, [True] * 3]


def test_next_obs_blank_is_none(group):
    group[1].steps[0].next_prompt = " \n "
    assert NextObservation()(group, 1, 0) is None
    assert not NextObservation().context(group, 1, 0).has_context


# --------------------------------------------------------------------------- future


def test_future_texts(group):
    fb = FutureTrajectory()
    assert every_step(group, fb) == [
        [
            "Step 1\nResponse:\n<action>take mug 1 from countertop 1</action>\n\n"
            "Step 2\nResponse:\n<action>go to desk 1</action>\n\n"
            "Step 3\nResponse:\n<action>move mug 1 to desk 1</action>",
            "Step 2\nResponse:\n<action>go to desk 1</action>\n\n"
            "Step 3\nResponse:\n<action>move mug 1 to desk 1</action>",
            "Step 3\nResponse:\n<action>move mug 1 to desk 1</action>",
            None,  # last step: no future
        ],
        [
            "Step 1\nResponse:\n<action>take plate 2 from countertop 1</action>\n\n"
            "Step 2\nResponse:\n<action>take mug 1 from countertop 1</action>\n\n"
            "Step 3\nResponse:\n<action>go to desk 1</action>",
            "Step 2\nResponse:\n<action>take mug 1 from countertop 1</action>\n\n"
            "Step 3\nResponse:\n<action>go to desk 1</action>",
            "Step 3\nResponse:\n<action>go to desk 1</action>",
            None,
        ],
        [
            "Step 1\nResponse:\nI should  open drawer 1\n\nStep 2\nResponse:\n<action>go to desk 1</action>",
            "Step 2\nResponse:\n<action>go to desk 1</action>",
            None,
        ],
        [
            "Step 1\nResponse:\n<action>examine countertop 1</action>\n\nStep 2\nResponse:\n<action>\n</action>",
            "Step 2\nResponse:\n<action>\n</action>",
            None,
        ],
    ]
    assert mask(group, fb) == [[True, True, True, False], [True, True, True, False], [True, True, False],
                               [True, True, False]]
    assert fb.context(group, 2, 1).text == f"{FUT}\nStep 2\nResponse:\n<action>go to desk 1</action>"


def test_future_knobs(group):
    assert FutureTrajectory(remove_thinking=False)(group, 1, 2) == f"Step 3\nResponse:\n{THINK}<action>go to desk 1</action>"
    assert FutureTrajectory(max_steps=1)(group, 0, 0) == (
        "Step 1\nResponse:\n<action>take mug 1 from countertop 1</action>\n\n... 2 more steps omitted."
    )
    assert FutureTrajectory(max_steps=1)(group, 0, 2) == "Step 3\nResponse:\n<action>move mug 1 to desk 1</action>"
    assert FutureTrajectory(format="observation_action")(group, 0, 1) == (
        f"Step 2\nObservation:\nPROMPT[{PICK_MUG}]\nAction:\n<action>go to desk 1</action>\n\n"
        f"Step 3\nObservation:\nPROMPT[{DESK}]\nAction:\n<action>move mug 1 to desk 1</action>"
    )
    assert FutureTrajectory(format="obs_action").format == "observation_action"  # reference alias


FUTURE_1_1 = [  # future of (1, 1), indented
    "    Step 2",
    "    Response:",
    "    <action>take mug 1 from countertop 1</action>",
    "",
    "    Step 3",
    "    Response:",
    "    <action>go to desk 1</action>",
]


def test_future_candidate_lines(group):
    fb = FutureTrajectory()
    # best won (traj 0, step 1), worst failed (traj 1, step 1): both examples (§4.3)
    assert fb.candidate_lines(group, (0, 1), (1, 1)) == [
        "  success future trajectory example:",
        "    Step 2",
        "    Response:",
        "    <action>go to desk 1</action>",
        "",
        "    Step 3",
        "    Response:",
        "    <action>move mug 1 to desk 1</action>",
        "  failed future trajectory example:",
        *FUTURE_1_1,
    ]
    # nobody won: only the failed example
    assert fb.candidate_lines(group, (2, 0), (1, 1)) == ["  failed future trajectory example:", *FUTURE_1_1]
    # a singleton won action: only the success example; a last step has no future
    assert fb.candidate_lines(group, (0, 3), (0, 3)) == [
        "  success future trajectory example:",
        "    (no future trajectory after this action)",
    ]
    assert fb.candidate_lines(group, (0, 3), (1, 3)) == [
        "  success future trajectory example:",
        "    (no future trajectory after this action)",
        "  failed future trajectory example:",
        "    (no future trajectory after this action)",
    ]
    assert fb.candidate_lines(group, (3, 1), (3, 1)) == [
        "  failed future trajectory example:",
        "    Step 2",
        "    Response:",
        "    <action>",
        "    </action>",
    ]


# --------------------------------------------------------------------------- success


def test_success_texts(group):
    fb = SuccessfulTrajectory()
    assert every_step(group, fb) == [[None] * 4, [SUCCESS_0] * 4, [SUCCESS_0] * 3, [SUCCESS_0] * 3]
    assert mask(group, fb) == [[False] * 4, [True] * 4, [True] * 3, [True] * 3]
    assert fb.context(group, 3, 2) == TeacherContext(sections=((SUC, SUCCESS_0),), sources=("success",))


def test_success_exclude_self_false(group):
    fb = SuccessfulTrajectory(exclude_self=False)
    assert every_step(group, fb) == [[SUCCESS_0] * 4, [SUCCESS_0] * 4, [SUCCESS_0] * 3, [SUCCESS_0] * 3]


def test_success_first_other_success_in_group_order(group):
    group[2].won = True  # now traj 0 and traj 2 succeeded
    traj2 = (
        "Step 0\nResponse:\n<action>go to drawer 1</action>\n\n"
        "Step 1\nResponse:\nI should  open drawer 1\n\n"
        "Step 2\nResponse:\n<action>go to desk 1</action>"
    )
    fb = SuccessfulTrajectory()
    assert [fb(group, i, 0) for i in range(4)] == [traj2, SUCCESS_0, SUCCESS_0, SUCCESS_0]
    assert [SuccessfulTrajectory(exclude_self=False)(group, i, 0) for i in range(4)] == [SUCCESS_0] * 4


def test_success_no_success_in_group(group):
    group[0].won = False
    assert every_step(group, SuccessfulTrajectory(exclude_self=False)) == [[None] * 4, [None] * 4, [None] * 3, [None] * 3]


def test_success_knobs(group):
    assert SuccessfulTrajectory(max_steps=2)(group, 1, 0) == (
        "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n"
        "Step 1\nResponse:\n<action>take mug 1 from countertop 1</action>\n\n"
        "... 2 more steps omitted."
    )
    assert SuccessfulTrajectory(max_steps=4)(group, 1, 0) == SUCCESS_0  # nothing omitted
    assert SuccessfulTrajectory(format="observation_action", max_steps=2, remove_thinking=False)(group, 2, 1) == (
        f"Step 0\nObservation:\nPROMPT[{ROOM}]\nAction:\n{THINK}<action>go to countertop 1</action>\n\n"
        f"Step 1\nObservation:\nPROMPT[{COUNTER}]\nAction:\n{THINK}<action>take mug 1 from countertop 1</action>\n\n"
        "... 2 more steps omitted."
    )


# --------------------------------------------------------------------------- current


def test_current_texts(group):
    fb = CurrentTrajectory()
    assert every_step(group, fb) == [
        [
            None,  # step 0: no past
            "Step 0\nResponse:\n<action>go to countertop 1</action>",
            "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n"
            "Step 1\nResponse:\n<action>take mug 1 from countertop 1</action>",
            "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n"
            "Step 1\nResponse:\n<action>take mug 1 from countertop 1</action>\n\n"
            "Step 2\nResponse:\n<action>go to desk 1</action>",
        ],
        [
            None,
            "Step 0\nResponse:\n<action>go to countertop 1</action>",
            "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n"
            "Step 1\nResponse:\n<action>take plate 2 from countertop 1</action>",
            "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n"
            "Step 1\nResponse:\n<action>take plate 2 from countertop 1</action>\n\n"
            "Step 2\nResponse:\n<action>take mug 1 from countertop 1</action>",
        ],
        [
            None,
            "Step 0\nResponse:\n<action>go to drawer 1</action>",
            "Step 0\nResponse:\n<action>go to drawer 1</action>\n\nStep 1\nResponse:\nI should  open drawer 1",
        ],
        [
            None,
            "Step 0\nResponse:\n<action>Go to  Countertop 1</action>",  # the thinking is gone
            "Step 0\nResponse:\n<action>Go to  Countertop 1</action>\n\n"
            "Step 1\nResponse:\n<action>examine countertop 1</action>",
        ],
    ]
    assert mask(group, fb) == [[False, True, True, True], [False, True, True, True], [False, True, True],
                               [False, True, True]]
    assert fb.context(group, 2, 1).text == f"{CUR}\nStep 0\nResponse:\n<action>go to drawer 1</action>"


def test_current_knobs(group):
    assert CurrentTrajectory(remove_thinking=False)(group, 3, 1) == (
        "Step 0\nResponse:\n<think>Maybe go to drawer 1? No.</think>\n"
        "<action>Go to  Countertop 1</action>"
    )
    assert CurrentTrajectory(max_steps=1)(group, 1, 3) == (
        "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n... 2 more steps omitted."
    )
    assert CurrentTrajectory(format="observation_action")(group, 2, 1) == (
        f"Step 0\nObservation:\nPROMPT[{ROOM}]\nAction:\n<action>go to drawer 1</action>"
    )


# --------------------------------------------------------------------------- knob validation


@pytest.mark.parametrize("cls", [FutureTrajectory, SuccessfulTrajectory, CurrentTrajectory])
def test_bad_knobs(cls):
    with pytest.raises(ValueError, match=r"unknown trajectory format 'actions_only'; allowed: response, observation_action"):
        cls(format="actions_only")
    with pytest.raises(ValueError, match=r"max_steps must be >= 0 .*-1"):
        cls(max_steps=-1)
    with pytest.raises(ValueError, match=r"max_steps must be an integer >= 0 .*'3'"):
        cls(max_steps="3")
    with pytest.raises(ValueError, match=r"remove_thinking must be true or false, got 'yes'"):
        cls(remove_thinking="yes")


def test_bad_exclude_self():
    with pytest.raises(ValueError, match=r"exclude_self must be true or false, got 1"):
        SuccessfulTrajectory(exclude_self=1)


# --------------------------------------------------------------------------- combinations, step-level (§3.5)


def success_and(*others):
    return AllOf({"success": SuccessfulTrajectory(), **{o.name: o for o in others}})


def test_success_or_immediate(group):
    fb = FirstAvailable({"success": SuccessfulTrajectory(), "immediate": ImmediateFeedback()})
    ctx = StepInsertion().contexts(group, fb)
    # traj 0 (the only success, excluded for itself) falls back to immediate; the others see traj 0,
    # including (3, 2) whose immediate feedback is blank
    assert [[c.sources for c in row] for row in ctx] == [
        [("immediate",)] * 4, [("success",)] * 4, [("success",)] * 3, [("success",)] * 3,
    ]
    assert mask(group, fb) == [[True] * 4, [True] * 4, [True] * 3, [True] * 3]
    assert ctx[0][1].text == f"{IMM}\n{PICK_MUG}"
    assert ctx[3][2].text == f"{SUC}\n{SUCCESS_0}"
    group[0].won = False  # no success anywhere: immediate everywhere it exists
    assert mask(group, fb) == [[True] * 4, [True] * 4, [True] * 3, [True, True, False]]


def test_success_and_immediate(group):
    fb = success_and(ImmediateFeedback())
    assert mask(group, fb) == [[False] * 4, [True] * 4, [True] * 3, [True, True, False]]
    ctx = fb.context(group, 1, 2)
    assert ctx.sources == ("success", "immediate")
    assert ctx.text == f"{SUC}\n{SUCCESS_0}\n\n{IMM}\n{NOTHING}"


def test_success_and_next_obs(group):
    fb = success_and(NextObservation())
    assert mask(group, fb) == [[False] * 4, [True] * 4, [True] * 3, [True] * 3]
    assert fb.context(group, 3, 2).text == f"{SUC}\n{SUCCESS_0}\n\n{NEXT}\nPROMPT[  ]"


def test_success_and_future(group):
    fb = success_and(FutureTrajectory())
    assert mask(group, fb) == [[False] * 4, [True, True, True, False], [True, True, False], [True, True, False]]
    assert fb.context(group, 2, 1).text == (
        f"{SUC}\n{SUCCESS_0}\n\n{FUT}\nStep 2\nResponse:\n<action>go to desk 1</action>"
    )


def test_success_and_future_and_immediate(group):
    fb = success_and(FutureTrajectory(), ImmediateFeedback())
    assert mask(group, fb) == [[False] * 4, [True, True, True, False], [True, True, False], [True, True, False]]
    ctx = fb.context(group, 2, 1)
    assert ctx.sources == ("success", "future", "immediate")
    assert ctx.text == (
        f"{SUC}\n{SUCCESS_0}\n\n{FUT}\nStep 2\nResponse:\n<action>go to desk 1</action>\n\n{IMM}\n{NOTHING}"
    )


def test_success_and_future_and_next_obs(group):
    fb = success_and(FutureTrajectory(), NextObservation())
    assert mask(group, fb) == [[False] * 4, [True, True, True, False], [True, True, False], [True, True, False]]
    assert fb.context(group, 3, 1).text == (
        f"{SUC}\n{SUCCESS_0}\n\n{FUT}\nStep 2\nResponse:\n<action>\n</action>\n\n"
        "next observation after the current step:\nPROMPT[On the countertop 1, you see a mug 1, and a plate 2.]"
    )


# --------------------------------------------------------------------------- conf files


SINGLE = {
    "next_obs": NextObservation,
    "future": FutureTrajectory,
    "success": SuccessfulTrajectory,
    "current": CurrentTrajectory,
}
COMBINED = {
    "success_or_immediate": (FirstAvailable, (SuccessfulTrajectory, ImmediateFeedback)),
    "success_and_immediate": (AllOf, (SuccessfulTrajectory, ImmediateFeedback)),
    "success_and_next_obs": (AllOf, (SuccessfulTrajectory, NextObservation)),
    "success_and_future": (AllOf, (SuccessfulTrajectory, FutureTrajectory)),
    "success_and_future_and_immediate": (AllOf, (SuccessfulTrajectory, FutureTrajectory, ImmediateFeedback)),
    "success_and_future_and_next_obs": (AllOf, (SuccessfulTrajectory, FutureTrajectory, NextObservation)),
}


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_conf_single(name):
    cfg = compose_cfg([f"feedback={name}"])
    fb = validate(cfg)["feedback"]
    assert type(fb) is SINGLE[name] and cfg.feedback.name == name
    if name != "next_obs":  # the reference defaults
        assert (fb.format, fb.max_steps, fb.remove_thinking) == ("response", 0, True)
    if name == "success":
        assert fb.exclude_self is True


@pytest.mark.parametrize("name", sorted(COMBINED))
def test_conf_combinations(name):
    cfg = compose_cfg([f"feedback={name}"])
    fb = validate(cfg)["feedback"]
    cls, parts = COMBINED[name]
    assert type(fb) is cls and cfg.feedback.name == name
    assert tuple(type(p) for p in fb.members) == parts


def test_conf_part_knob_override(group):
    cfg = compose_cfg(["feedback=success_and_future", "feedback.parts.success.max_steps=1",
                       "feedback.parts.success.exclude_self=false", "feedback.parts.future.format=observation_action"])
    fb = validate(cfg)["feedback"]
    success, future = fb.members
    assert (success.max_steps, success.exclude_self, future.format) == (1, False, "observation_action")
    assert success(group, 0, 0) == "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n... 3 more steps omitted."


def test_conf_bad_knob_fails_at_validate():
    with pytest.raises(ValueError, match=r"feedback=future: unknown trajectory format 'steps'"):
        validate(compose_cfg(["feedback=future", "feedback.format=steps"]))
    with pytest.raises(ValueError, match=r"exclude_self must be true or false"):
        validate(compose_cfg(["feedback=success_and_immediate", "feedback.parts.success.exclude_self=maybe"]))
