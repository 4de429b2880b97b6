"""Insertion granularity × feedback source (serl/insertion; docs/reference.md §4). Expected texts are hand-derived.

The fixture group is ``tests/group_fixture.py`` (4 trajectories of one game; its docstring draws them).

Exact anchors (first appearance over (step_id, traj)): 0 ROOM {(0,0),(1,0),(2,0),(3,0)}; 1 COUNTER {(0,1),(1,1),
(3,1)}; 2 DRAWER {(2,1)}; 3 PICK_MUG {(0,2)}; 4 PICK_PLATE {(1,2)}; 5 NOTHING {(1,3),(2,2)} (two unrelated
states pooled, as in the reference); 6 EXAMINED {(3,2)}; 7 DESK {(0,3)}.

State-change anchors (key="state_change", by ``Step.state``; a step after a no-op belongs to the state the no-op
happened in):
0 ROOM; 1 COUNTER; 2 DRAWER {(2,1),(2,2)}; 3 PICK_MUG {(0,2)}; 4 PICK_PLATE {(1,2),(1,3)}; 5 EXAMINED {(3,2)};
6 DESK {(0,3)}.
"""

from __future__ import annotations

import ast
import pathlib
import random
import sys

import pytest

from serl.envs.response import ThinkActionFormat
from serl.feedback import AllOf, FeedbackSource, FirstAvailable, ImmediateFeedback, NoFeedback, StateDiffFeedback
from serl.insertion import ANCHOR_KEYS, LAYOUTS, AnchorInsertion, Insertion, StepInsertion
from serl.types import TeacherContext, Trajectory
from tests.group_fixture import (
    COUNTER, DESK, DRAWER, EXAMINED, NOTHING, PICK_MUG, PICK_PLATE, PUT, ROOM, act, make_group, mk_step, replay_states,
)

IMM = "Immediate feedback from the current step:"
IMM_LABEL = "  Immediate feedback from the current step"
SD = "State change caused by the current step:"
SD_LABEL = "  State change caused by the current step"
CAND = "Candidate actions tried from this state:"

ROOM_DIFF_HEAD = (
    "- -= Welcome to TextWorld, ALFRED! =-\n"
    "- You are in the middle of a room.\n"
    "- Looking quickly around you, you see a countertop 1, a desk 1, and a drawer 1.\n"
    "- Your task is to: put a mug in desk.\n"
)


@pytest.fixture
def group() -> list[Trajectory]:
    return make_group()


def texts(contexts: list[list[TeacherContext]]) -> list[list[str]]:
    return [[c.text for c in row] for row in contexts]


def test_fixture_sanity(group):
    assert [t.episode_reward for t in group] == [10.0, 0.0, 0.0, 0.0]
    assert [t.won for t in group] == [True, False, False, False]
    assert [t.length for t in group] == [4, 4, 3, 3]


def test_registry():
    from serl.build import validate
    from tests.helpers import CONF, compose_cfg

    # Each conf/insertion option builds an Insertion whose name is the option's (no registry to edit).
    options = sorted(p.stem for p in (CONF / "insertion").glob("*.yaml"))
    assert {"step", "anchor"} <= set(options)
    for name in options:
        built = validate(compose_cfg([f"insertion={name}"]))["insertion"]
        assert isinstance(built, Insertion) and type(built).name == name
    assert StepInsertion.name == "step" and AnchorInsertion.name == "anchor"
    assert issubclass(StepInsertion, Insertion) and issubclass(AnchorInsertion, Insertion)


# =========================================================================== step-level


def test_step_immediate(group):
    ctx = StepInsertion().contexts(group, ImmediateFeedback())
    assert texts(ctx) == [
        [f"{IMM}\n{COUNTER}", f"{IMM}\n{PICK_MUG}", f"{IMM}\n{DESK}", f"{IMM}\n{PUT}"],
        [f"{IMM}\n{COUNTER}", f"{IMM}\n{PICK_PLATE}", f"{IMM}\n{NOTHING}", f"{IMM}\n{DESK}"],
        [f"{IMM}\n{DRAWER}", f"{IMM}\n{NOTHING}", f"{IMM}\n{DESK}"],
        [f"{IMM}\n{COUNTER}", f"{IMM}\n{EXAMINED}", ""],
    ]
    assert [[c.has_context for c in row] for row in ctx] == [[True] * 4, [True] * 4, [True] * 3, [True, True, False]]
    assert ctx[0][0] == TeacherContext(sections=((IMM, COUNTER),), sources=("immediate",), anchor_size=None)
    assert ctx[3][2] == TeacherContext()


def test_step_state_diff(group):
    ctx = StepInsertion().contexts(group, StateDiffFeedback())
    to_counter = f"{SD}\n{ROOM_DIFF_HEAD}+ You arrive at countertop 1.\n+ On the countertop 1, you see a mug 1, and a plate 2."
    counter_gone = "- You arrive at countertop 1.\n- On the countertop 1, you see a mug 1, and a plate 2.\n"
    to_desk = "+ You arrive at desk 1.\n+ On the desk 1, you see a pen 1."
    assert texts(ctx) == [
        [
            to_counter,
            f"{SD}\n{counter_gone}+ You pick up the mug 1 from the countertop 1.",
            f"{SD}\n- You pick up the mug 1 from the countertop 1.\n{to_desk}",
            f"{SD}\n- You arrive at desk 1.\n- On the desk 1, you see a pen 1.\n+ You move the mug 1 to the desk 1.",
        ],
        [
            to_counter,
            f"{SD}\n{counter_gone}+ You pick up the plate 2 from the countertop 1.",
            f"{SD}\nThe action changed nothing.",
            # starts from "Nothing happens.": the state before is the previous observation (PICK_PLATE)
            f"{SD}\n- You pick up the plate 2 from the countertop 1.\n{to_desk}",
        ],
        [
            f"{SD}\n{ROOM_DIFF_HEAD}+ You arrive at drawer 1.\n+ The drawer 1 is closed.",
            f"{SD}\nThe action changed nothing.",
            f"{SD}\n- You arrive at drawer 1.\n- The drawer 1 is closed.\n{to_desk}",
        ],
        [
            to_counter,
            f"{SD}\n- You arrive at countertop 1.",
            "",
        ],
    ]
    assert ctx[1][2].sources == ("state_diff",)
    assert [[c.has_context for c in row] for row in ctx][3] == [True, True, False]


def test_step_none(group):
    ctx = StepInsertion().contexts(group, NoFeedback())
    assert [[c for c in row] for row in ctx] == [[TeacherContext()] * n for n in (4, 4, 3, 3)]
    assert not any(c.has_context for row in ctx for c in row)


# =========================================================================== anchor grouping


def test_anchor_ids_exact(group):
    assert AnchorInsertion().anchor_ids(group) == [[0, 1, 3, 7], [0, 1, 4, 5], [0, 2, 5], [0, 1, 6]]


def test_anchor_falls_back_to_prompt_for_blank_observation(group):
    group[2].steps[1].observation = "  "  # prompt "PROMPT[  ]" becomes the anchor value
    group[3].steps[2].observation = ""  # prompt "PROMPT[]": a different value
    assert AnchorInsertion().anchor_ids(group) == [[0, 1, 3, 7], [0, 1, 4, 5], [0, 2, 5], [0, 1, 6]]


def sim_group(observations: list[list[str]]) -> list[Trajectory]:
    """One trajectory per row; each step's feedback is the next observation ("ok" after the last)."""
    def steps(i: int, row: list[str]) -> list:
        feedback = row[1:] + ["ok"]
        return replay_states([mk_step(t, obs, act(f"a{i}{t}"), fb) for t, (obs, fb) in enumerate(zip(row, feedback))])

    return [Trajectory(group_id=0, traj_id=i, game="g", task_type="t", task="t", steps=steps(i, row))
            for i, row in enumerate(observations)]


def test_anchor_similarity_visits_step_id_then_trajectory():
    # hand ratios (see test_anchors.py): A~B 0.9, B~C 0.9, A~C 0.8, X unrelated
    A, B, C, X = "abcdefghij", "abcdefghiX", "abcdefghXX", "zzzzzzzzzz"
    grp = sim_group([[X, A], [B, C]])
    # visit order X(0,0), B(0,1), A(1,0), C(1,1): B is the representative, A and C join it
    assert AnchorInsertion(similarity=0.85).anchor_ids(grp) == [[0, 1], [1, 1]]
    # (trajectory, step) order would have made A the representative and C its own anchor: [[0, 1], [1, 2]]
    # exact grouping: four singletons, ids numbered in visit order X, B, A, C
    assert AnchorInsertion().anchor_ids(grp) == [[0, 2], [1, 3]]
    ctx = AnchorInsertion(similarity=0.85).contexts(grp, NoFeedback())
    assert [c.anchor_size for row in ctx for c in row] == [1, 3, 3, 3]


def test_anchor_similarity_on_fixture(group):
    # threshold 0.95 merges nothing here except identical strings
    assert AnchorInsertion(similarity=0.95).anchor_ids(group) == AnchorInsertion().anchor_ids(group)


def test_anchor_ids_state_change(group):
    assert AnchorInsertion(key="state_change").anchor_ids(group) == [[0, 1, 3, 6], [0, 1, 4, 4], [0, 2, 2], [0, 1, 5]]


def test_nothing_happens_steps_pooled_only_by_observation_key(group):
    obs_ids = AnchorInsertion().anchor_ids(group)
    sc_ids = AnchorInsertion(key="state_change").anchor_ids(group)
    # the reference's defect, reproduced: the two "Nothing happens." steps share an anchor
    assert obs_ids[1][3] == obs_ids[2][2]
    # by state: (2,2) pools with the DRAWER step (2,1), (1,3) with PICK_PLATE (1,2), and not with each other
    assert sc_ids[1][3] != sc_ids[2][2]
    assert sc_ids[2][2] == sc_ids[2][1] and sc_ids[1][3] == sc_ids[1][2]


def test_state_change_uses_the_envs_state(group):
    # an env that describes its state (ALFWorld's facts): steps with equal states pool whatever their text
    for traj in group:
        for s in traj.steps:
            s.state = "at desk" if s.observation.startswith("You arrive at desk") else "elsewhere"
    ids = AnchorInsertion(key="state_change").anchor_ids(group)
    assert ids == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_state_change_blank_state_falls_back_to_prompt():
    # a blank state (an env that reported one) says nothing: the step's prompt is its value, so it pools with nothing
    grp = sim_group([[ROOM, "x"], [ROOM, "x"]])
    for traj in grp:
        traj.steps[1].state = "  "
    grp[0].steps[1].prompt = "PROMPT[first]"
    assert AnchorInsertion(key="state_change").anchor_values(grp[0]) == [ROOM, "PROMPT[first]"]
    assert AnchorInsertion(key="state_change").anchor_ids(grp) == [[0, 1], [0, 2]]


def random_group(rng: random.Random) -> list[Trajectory]:
    pool = [ROOM, COUNTER, DRAWER, DESK, PICK_MUG, NOTHING, NOTHING, "  "]
    return sim_group([[rng.choice(pool) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 5))])


@pytest.mark.parametrize("seed", range(20))
def test_anchor_partition_property(seed):
    # Two steps share an anchor iff their anchor values are equal: under state_change the observation of the
    # last step not preceded by a no-op (slow walk-back), under observation the raw observation (the reference's
    # grouping); blank -> prompt.
    grp = random_group(random.Random(seed))
    for key in ANCHOR_KEYS:
        ins = AnchorInsertion(key=key)
        ids = ins.anchor_ids(grp)
        steps = [(i, t) for i, tr in enumerate(grp) for t in range(tr.length)]
        for i, t in steps:
            for j, u in steps:
                a, b = grp[i].steps[t], grp[j].steps[u]
                if key == "observation":
                    va = a.observation if a.observation.strip() else a.prompt
                    vb = b.observation if b.observation.strip() else b.prompt
                else:
                    va, vb = walk_back(grp[i].steps, t), walk_back(grp[j].steps, u)
                    va = va if va.strip() else a.prompt
                    vb = vb if vb.strip() else b.prompt
                assert (ids[i][t] == ids[j][u]) == (va == vb), (key, (i, t), (j, u))
        if key == "state_change":  # a no-op message is an anchor value only where the trajectory starts with one
            for i, t in steps:
                if grp[i].steps[0].observation != NOTHING:
                    assert ins.anchor_values(grp[i])[t] != NOTHING


def walk_back(steps, t: int) -> str:
    """Slow oracle of the rollout's state rule: back over steps that answer a no-op or are blank."""
    while t > 0 and (steps[t - 1].noop or not steps[t].observation.strip()):
        t -= 1
    return steps[t].observation


@pytest.mark.parametrize("kwargs", [{"key": "bogus"}, {"key": "prompt"}])
def test_anchor_key_validation(kwargs):
    with pytest.raises(ValueError, match="allowed: observation, state_change"):
        AnchorInsertion(**kwargs)


@pytest.mark.parametrize("layout", ["list", "Table", ""])
def test_anchor_layout_validation(layout):
    with pytest.raises(ValueError, match="anchor layout .*allowed: table, pairs"):
        AnchorInsertion(layout=layout)


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.5, 2.0])
def test_anchor_similarity_validation(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        AnchorInsertion(similarity=bad)


def test_anchor_accepts_hydra_style_kwargs():
    fmt = ThinkActionFormat(mode="reference")
    ins = AnchorInsertion(key="state_change", similarity=0.95, layout="pairs", remove_thinking=False,
                          response_format=fmt)
    assert (ins.key, ins.similarity, ins.layout, ins.remove_thinking, ins.response_format) == (
        "state_change", 0.95, "pairs", False, fmt
    )
    default = AnchorInsertion()
    assert (default.key, default.similarity, default.layout, default.remove_thinking, default.response_format) == (
        "observation", None, "table", True, ThinkActionFormat()
    )
    assert ANCHOR_KEYS == ("observation", "state_change") and LAYOUTS == ("table", "pairs")


# =========================================================================== anchor contexts


def cand(action: str, n: int, k: int, avg: str, best: str, worst: str) -> str:
    return (
        f"- action {action}, tried {n} times, success count: {k}/{n}, average return: {avg}\n"
        f"  best outcome: {best}\n"
        f"  worst outcome: {worst}"
    )


S10, F0 = "success, reward 10.0000", "failure, reward 0.0000"

# Candidate blocks without feedback lines, per anchor id
ROOM_GO_CT = cand("go to countertop 1", 3, 1, "3.3333", S10, F0)  # best (0,0); worst (3,0) (tie -> larger traj)
ROOM_GO_DRAWER = cand("go to drawer 1", 1, 0, "0.0000", F0, F0)
CT_TAKE_MUG = cand("take mug 1 from countertop 1", 1, 1, "10.0000", S10, S10)
CT_TAKE_PLATE = cand("take plate 2 from countertop 1", 1, 0, "0.0000", F0, F0)
CT_EXAMINE = cand("examine countertop 1", 1, 0, "0.0000", F0, F0)
DRAWER_OPEN = cand("i should open drawer 1", 1, 0, "0.0000", F0, F0)
PICK_MUG_GO_DESK = cand("go to desk 1", 1, 1, "10.0000", S10, S10)
PICK_PLATE_TAKE_MUG = cand("take mug 1 from countertop 1", 1, 0, "0.0000", F0, F0)
NOTHING_GO_DESK = cand("go to desk 1", 2, 0, "0.0000", F0, F0)  # best (2,2) (smaller step_id); worst (1,3)
EXAMINED_EMPTY = cand("(empty action)", 1, 0, "0.0000", F0, F0)
DESK_MOVE = cand("move mug 1 to desk 1", 1, 1, "10.0000", S10, S10)


def anchor_text(*lines: str) -> str:
    return CAND + "\n" + "\n".join(lines)


def by_anchor(group, ctx) -> dict[int, TeacherContext]:
    ids = AnchorInsertion().anchor_ids(group)
    out: dict[int, TeacherContext] = {}
    for i, row in enumerate(ctx):
        for t, c in enumerate(row):
            a = ids[i][t]
            if a in out:
                assert c == out[a], "steps of one anchor share one context"
            out[a] = c
    return out


def test_anchor_immediate(group):
    ctx = AnchorInsertion().contexts(group, ImmediateFeedback())
    got = by_anchor(group, ctx)
    imm = lambda which, text: f"{IMM_LABEL} ({which}): {text}"  # noqa: E731
    expected = {
        # worst (3,0) has the same feedback as best (0,0): one line only
        0: anchor_text(ROOM_GO_CT, imm("best outcome", COUNTER), ROOM_GO_DRAWER, imm("best outcome", DRAWER)),
        1: anchor_text(CT_TAKE_MUG, imm("best outcome", PICK_MUG), CT_TAKE_PLATE, imm("best outcome", PICK_PLATE),
                       CT_EXAMINE, imm("best outcome", EXAMINED)),
        2: anchor_text(DRAWER_OPEN, imm("best outcome", NOTHING)),
        3: anchor_text(PICK_MUG_GO_DESK, imm("best outcome", DESK)),
        4: anchor_text(PICK_PLATE_TAKE_MUG, imm("best outcome", NOTHING)),
        5: anchor_text(NOTHING_GO_DESK, imm("best outcome", DESK)),
        6: anchor_text(EXAMINED_EMPTY),  # blank env response: no feedback line
        7: anchor_text(DESK_MOVE, imm("best outcome", PUT)),
    }
    assert {a: c.text for a, c in got.items()} == expected
    assert {a: c.anchor_size for a, c in got.items()} == {0: 4, 1: 3, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1, 7: 1}
    assert {a: c.sources for a, c in got.items()} == {
        a: ("anchor",) if a == 6 else ("anchor", "immediate") for a in range(8)
    }
    assert all(c.has_context for row in ctx for c in row)  # every step, even the blank-feedback one
    assert all(len(c.sections) == 1 and c.sections[0][0] == CAND for row in ctx for c in row)
    # literal check of one full context, independent of the helpers above
    assert ctx[1][3].text == (
        "Candidate actions tried from this state:\n"
        "- action go to desk 1, tried 2 times, success count: 0/2, average return: 0.0000\n"
        "  best outcome: failure, reward 0.0000\n"
        "  worst outcome: failure, reward 0.0000\n"
        "  Immediate feedback from the current step (best outcome): "
        "You arrive at desk 1. On the desk 1, you see a pen 1."
    )


def test_anchor_state_diff(group):
    ctx = AnchorInsertion().contexts(group, StateDiffFeedback())
    got = by_anchor(group, ctx)
    to_desk = "    + You arrive at desk 1.\n    + On the desk 1, you see a pen 1."
    room_to_counter = "\n".join("    " + line for line in (
        ROOM_DIFF_HEAD + "+ You arrive at countertop 1.\n+ On the countertop 1, you see a mug 1, and a plate 2."
    ).splitlines())
    assert got[0].text == anchor_text(
        ROOM_GO_CT,
        f"{SD_LABEL} (best outcome):",  # multi-line content: block form; worst's diff is identical
        room_to_counter,
        ROOM_GO_DRAWER,
        f"{SD_LABEL} (best outcome):",
        "\n".join("    " + line for line in (ROOM_DIFF_HEAD + "+ You arrive at drawer 1.\n+ The drawer 1 is closed.").splitlines()),
    )
    assert got[1].text == anchor_text(
        CT_TAKE_MUG,
        f"{SD_LABEL} (best outcome):",
        "    - You arrive at countertop 1.\n"
        "    - On the countertop 1, you see a mug 1, and a plate 2.\n"
        "    + You pick up the mug 1 from the countertop 1.",
        CT_TAKE_PLATE,
        f"{SD_LABEL} (best outcome):",
        "    - You arrive at countertop 1.\n"
        "    - On the countertop 1, you see a mug 1, and a plate 2.\n"
        "    + You pick up the plate 2 from the countertop 1.",
        CT_EXAMINE,
        f"{SD_LABEL} (best outcome): - You arrive at countertop 1.",  # one-line content: inline
    )
    assert got[2].text == anchor_text(DRAWER_OPEN, f"{SD_LABEL} (best outcome): The action changed nothing.")
    # the pooled "Nothing happens." anchor: best (2,2) and worst (1,3) came from different states, so
    # their diffs differ and both are shown
    assert got[5].text == anchor_text(
        NOTHING_GO_DESK,
        f"{SD_LABEL} (best outcome):",
        f"    - You arrive at drawer 1.\n    - The drawer 1 is closed.\n{to_desk}",
        f"{SD_LABEL} (worst outcome):",
        f"    - You pick up the plate 2 from the countertop 1.\n{to_desk}",
    )
    assert got[6].text == anchor_text(EXAMINED_EMPTY)
    assert got[5].sources == ("anchor", "state_diff") and got[6].sources == ("anchor",)


def test_anchor_none(group):
    ctx = AnchorInsertion().contexts(group, NoFeedback())
    got = by_anchor(group, ctx)
    assert {a: c.text for a, c in got.items()} == {
        0: anchor_text(ROOM_GO_CT, ROOM_GO_DRAWER),
        1: anchor_text(CT_TAKE_MUG, CT_TAKE_PLATE, CT_EXAMINE),
        2: anchor_text(DRAWER_OPEN),
        3: anchor_text(PICK_MUG_GO_DESK),
        4: anchor_text(PICK_PLATE_TAKE_MUG),
        5: anchor_text(NOTHING_GO_DESK),
        6: anchor_text(EXAMINED_EMPTY),
        7: anchor_text(DESK_MOVE),
    }
    assert all(c.sources == ("anchor",) and c.has_context for c in got.values())


def test_anchor_without_think_removal(group):
    # a response with an action block is keyed by the action the env executed (tests/unit/test_anchors.py: also
    # when that block lies inside the thinking), so the knob changes only the fallback text of a response without
    # a block; the fixture's block-less response (traj 2, step 1) has no thinking: the same contexts
    with_removal = AnchorInsertion().contexts(group, ImmediateFeedback())
    assert AnchorInsertion(remove_thinking=False).contexts(group, ImmediateFeedback()) == with_removal
    assert "go to countertop 1, tried 3 times" in with_removal[0][0].text


def small_group(rows: list[list]) -> list[Trajectory]:
    """A group of failed trajectories with the given steps (trajectory i = rows[i])."""
    return [Trajectory(group_id=0, traj_id=i, game="g", task_type="t", task="t", steps=steps)
            for i, steps in enumerate(rows)]


def test_anchor_best_worst_tie_breaking():
    # one anchor, one action, four failing occurrences: best = smallest step_id then smallest traj;
    # worst = largest step_id then largest traj. Feedback tells them apart.
    S = "same state"
    grp = small_group([
        [mk_step(0, "other", act("x"), "o0"), mk_step(1, S, act("go"), "t0s1")],
        [mk_step(0, S, act("go"), "t1s0"), mk_step(1, S, act("go"), "t1s1")],
        [mk_step(0, S, act("go"), "t2s0")],
    ])
    ctx = AnchorInsertion().contexts(grp, ImmediateFeedback())
    assert ctx[1][0].text == (
        "Candidate actions tried from this state:\n"
        "- action go, tried 4 times, success count: 0/4, average return: 0.0000\n"
        "  best outcome: failure, reward 0.0000\n"
        "  worst outcome: failure, reward 0.0000\n"
        "  Immediate feedback from the current step (best outcome): t1s0\n"
        "  Immediate feedback from the current step (worst outcome): t1s1"
    )
    # a success outranks any step_id; the worst is the failing one with the largest step_id
    grp[2].won = True
    grp[2].steps[0].reward = 10.0
    ctx = AnchorInsertion().contexts(grp, ImmediateFeedback())
    assert ctx[2][0].text == (
        "Candidate actions tried from this state:\n"
        "- action go, tried 4 times, success count: 1/4, average return: 2.5000\n"
        "  best outcome: success, reward 10.0000\n"
        "  worst outcome: failure, reward 0.0000\n"
        "  Immediate feedback from the current step (best outcome): t2s0\n"
        "  Immediate feedback from the current step (worst outcome): t1s1"
    )


def test_anchor_only_worst_has_feedback():
    grp = [
        Trajectory(group_id=0, traj_id=0, game="g", task_type="t", task="t",
                   steps=[mk_step(0, "S", act("go"), "")], won=True),
        Trajectory(group_id=0, traj_id=1, game="g", task_type="t", task="t",
                   steps=[mk_step(0, "S", act("go"), "it failed")]),
    ]
    grp[0].steps[0].reward = 10.0
    ctx = AnchorInsertion().contexts(grp, ImmediateFeedback())
    assert ctx[0][0].text.endswith(
        "  worst outcome: failure, reward 0.0000\n"
        "  Immediate feedback from the current step (worst outcome): it failed"
    )
    assert ctx[0][0].sources == ("anchor", "immediate")


def test_empty_group():
    assert AnchorInsertion().contexts([], ImmediateFeedback()) == []
    assert StepInsertion().contexts([], ImmediateFeedback()) == []


def test_anchor_size_and_actions(group):
    ctx = AnchorInsertion().contexts(group, NoFeedback())
    assert [[c.anchor_size for c in row] for row in ctx] == [[4, 3, 1, 1], [4, 3, 1, 2], [4, 1, 2], [4, 3, 1]]
    # ROOM: countertop / drawer; COUNTER: take mug / take plate / examine; NOTHING: go to desk (twice)
    assert [[c.anchor_actions for c in row] for row in ctx] == [[2, 3, 1, 1], [2, 3, 1, 1], [2, 1, 1], [2, 3, 1]]
    ctx = AnchorInsertion(key="state_change").contexts(group, NoFeedback())
    assert [[c.anchor_size for c in row] for row in ctx] == [[4, 3, 1, 1], [4, 3, 2, 2], [4, 2, 2], [4, 3, 1]]
    assert [[c.anchor_actions for c in row] for row in ctx] == [[2, 3, 1, 1], [2, 3, 2, 2], [2, 2, 2], [2, 3, 1]]


# =========================================================================== state-change anchor contexts


def test_anchor_state_change_immediate(group):
    ctx = AnchorInsertion(key="state_change").contexts(group, ImmediateFeedback())
    imm = lambda text: f"{IMM_LABEL} (best outcome): {text}"  # noqa: E731
    go_desk_failed = cand("go to desk 1", 1, 0, "0.0000", F0, F0)
    # the DRAWER state: the tag-less "open drawer" did nothing, going to the desk from there worked
    drawer = anchor_text(DRAWER_OPEN, imm(NOTHING), go_desk_failed, imm(DESK))
    assert ctx[2][1].text == ctx[2][2].text == drawer
    # the PICK_PLATE state: taking the mug with the plate in hand did nothing
    plate = anchor_text(PICK_PLATE_TAKE_MUG, imm(NOTHING), go_desk_failed, imm(DESK))
    assert ctx[1][2].text == ctx[1][3].text == plate
    assert ctx[1][3] == TeacherContext(sections=((CAND, plate[len(CAND) + 1:]),), sources=("anchor", "immediate"),
                                       anchor_size=2, anchor_actions=2)
    # anchors without a no-op step are the same as by observation
    obs = AnchorInsertion().contexts(group, ImmediateFeedback())
    assert [ctx[i][t] for i, t in [(0, 0), (0, 1), (0, 2), (0, 3), (3, 2)]] == [
        obs[i][t] for i, t in [(0, 0), (0, 1), (0, 2), (0, 3), (3, 2)]
    ]


# =========================================================================== combinations (parts)

SUCC = "Successful trajectory in the same task, if any:"


class OtherWin(FeedbackSource):
    """Test-local stand-in for the success source: a section about the step's task, not its action."""

    name = "success"
    title = SUCC
    per_candidate = False

    def content(self, group, traj_idx, step_idx):
        wins = [k for k, tr in enumerate(group) if tr.won and k != traj_idx]
        return f"trajectory {wins[0]} won\nin {group[wins[0]].length} steps" if wins else None


WIN0 = f"{SUCC}\ntrajectory 0 won\nin 4 steps"
IMM_ROOM = anchor_text(ROOM_GO_CT, f"{IMM_LABEL} (best outcome): {COUNTER}",
                       ROOM_GO_DRAWER, f"{IMM_LABEL} (best outcome): {DRAWER}")
IMM_EXAMINED = anchor_text(EXAMINED_EMPTY)


def test_anchor_first_available(group):
    # success, else immediate: traj 0 (the only success) sees no *other* success -> immediate lines in the
    # table; every other step: the plain table, then the success section. Steps of one anchor now differ.
    ctx = AnchorInsertion().contexts(group, FirstAvailable([OtherWin(), ImmediateFeedback()]))
    assert ctx[0][0].text == IMM_ROOM
    assert ctx[0][0].sources == ("anchor", "immediate")
    plain_room = anchor_text(ROOM_GO_CT, ROOM_GO_DRAWER)
    for i in (1, 2, 3):
        assert ctx[i][0].text == f"{plain_room}\n\n{WIN0}"
        assert ctx[i][0] == TeacherContext(
            sections=((CAND, plain_room[len(CAND) + 1:]), (SUCC, "trajectory 0 won\nin 4 steps")),
            sources=("anchor", "success"), anchor_size=4, anchor_actions=2,
        )
    assert ctx[0][3].text == anchor_text(DESK_MOVE, f"{IMM_LABEL} (best outcome): {PUT}")
    assert ctx[3][2].text == f"{IMM_EXAMINED}\n\n{WIN0}"


def test_anchor_all_of(group):
    # every part: immediate lines in the table for every step, the success section appended where it exists
    ctx = AnchorInsertion().contexts(group, AllOf([OtherWin(), ImmediateFeedback()]))
    assert ctx[0][0].text == IMM_ROOM and ctx[0][0].sources == ("anchor", "immediate")
    assert ctx[1][0].text == ctx[2][0].text == ctx[3][0].text == f"{IMM_ROOM}\n\n{WIN0}"
    assert ctx[1][0].sources == ("anchor", "success", "immediate")  # in part order
    # no immediate line (blank env response), only the success section contributed
    assert ctx[3][2].text == f"{IMM_EXAMINED}\n\n{WIN0}" and ctx[3][2].sources == ("anchor", "success")


def test_anchor_two_per_candidate_parts(group):
    ctx = AnchorInsertion().contexts(group, AllOf([ImmediateFeedback(), StateDiffFeedback()]))
    assert ctx[2][1].text == anchor_text(
        DRAWER_OPEN,
        f"{IMM_LABEL} (best outcome): {NOTHING}",
        f"{SD_LABEL} (best outcome): The action changed nothing.",
    )
    assert ctx[2][1].sources == ("anchor", "immediate", "state_diff")


def test_anchor_with_real_success_source(group):
    success = pytest.importorskip("serl.feedback.success")
    ctx = AnchorInsertion().contexts(group, AllOf([success.SuccessfulTrajectory(), ImmediateFeedback()]))
    assert ctx[1][0].text == (
        f"{IMM_ROOM}\n\n"
        "Successful trajectory in the same task, if any:\n"
        "Step 0\nResponse:\n<action>go to countertop 1</action>\n\n"
        "Step 1\nResponse:\n<action>take mug 1 from countertop 1</action>\n\n"
        "Step 2\nResponse:\n<action>go to desk 1</action>\n\n"
        "Step 3\nResponse:\n<action>move mug 1 to desk 1</action>"
    )


# =========================================================================== pairs layout


def test_anchor_pairs_immediate(group):
    ctx = AnchorInsertion(layout="pairs").contexts(group, ImmediateFeedback())
    got = by_anchor(group, ctx)
    assert {a: c.text for a, c in got.items()} == {
        # (0,0), (1,0), (3,0) all went to the countertop and got COUNTER: one line
        0: f"{IMM}\naction go to countertop 1, {COUNTER}\naction go to drawer 1, {DRAWER}",
        1: f"{IMM}\naction take mug 1 from countertop 1, {PICK_MUG}\n"
           f"action take plate 2 from countertop 1, {PICK_PLATE}\naction examine countertop 1, {EXAMINED}",
        2: f"{IMM}\naction i should open drawer 1, {NOTHING}",
        3: f"{IMM}\naction go to desk 1, {DESK}",
        4: f"{IMM}\naction take mug 1 from countertop 1, {NOTHING}",
        5: f"{IMM}\naction go to desk 1, {DESK}",
        6: "",  # the only member has a blank env response: no context
        7: f"{IMM}\naction move mug 1 to desk 1, {PUT}",
    }
    assert got[6] == TeacherContext()
    assert got[0] == TeacherContext(
        sections=((IMM, f"action go to countertop 1, {COUNTER}\naction go to drawer 1, {DRAWER}"),),
        sources=("anchor", "immediate"), anchor_size=4, anchor_actions=2,
    )


def test_anchor_pairs_distinct_pairs_in_member_order():
    # one action, four members with four different responses: one line each, in (trajectory, step) order
    S = "same state"
    grp = small_group([
        [mk_step(0, "other", act("x"), "o0"), mk_step(1, S, act("go"), "t0s1")],
        [mk_step(0, S, act("go"), "t1s0"), mk_step(1, S, act("Go"), "t0s1")],
        [mk_step(0, S, act("stay"), "t0s1")],
    ])
    ctx = AnchorInsertion(layout="pairs").contexts(grp, ImmediateFeedback())
    assert ctx[2][0].text == f"{IMM}\naction go, t0s1\naction go, t1s0\naction stay, t0s1"


def test_anchor_pairs_multiline_state_diff(group):
    ctx = AnchorInsertion(layout="pairs").contexts(group, StateDiffFeedback())
    assert ctx[0][2].text == (
        f"{SD}\n"
        "action go to desk 1, - You pick up the mug 1 from the countertop 1.\n"
        "    + You arrive at desk 1.\n"
        "    + On the desk 1, you see a pen 1."
    )
    assert ctx[1][2].text == f"{SD}\naction take mug 1 from countertop 1, The action changed nothing."


def test_anchor_pairs_none_and_combinations(group):
    ins = AnchorInsertion(layout="pairs")
    assert all(c == TeacherContext() for row in ins.contexts(group, NoFeedback()) for c in row)
    ctx = ins.contexts(group, AllOf([OtherWin(), ImmediateFeedback()]))
    assert ctx[1][3].text == f"{IMM}\naction go to desk 1, {DESK}\n\n{WIN0}"
    assert ctx[1][3].sources == ("anchor", "success", "immediate")
    assert ctx[3][2].text == WIN0 and ctx[3][2].sources == ("anchor", "success")  # no pair, success only
    assert ctx[0][3].text == f"{IMM}\naction move mug 1 to desk 1, {PUT}"
    ctx = ins.contexts(group, FirstAvailable([OtherWin(), ImmediateFeedback()]))
    assert ctx[1][0].text == WIN0 and ctx[0][0].text == f"{IMM}\naction go to countertop 1, {COUNTER}\n" \
        f"action go to drawer 1, {DRAWER}"


def test_anchor_pairs_state_change(group):
    ctx = AnchorInsertion(key="state_change", layout="pairs").contexts(group, ImmediateFeedback())
    assert ctx[2][2].text == f"{IMM}\naction i should open drawer 1, {NOTHING}\naction go to desk 1, {DESK}"


# =========================================================================== layering


def test_feedback_and_insertion_import_only_types_algo_stdlib():
    root = pathlib.Path(__file__).resolve().parents[2] / "serl"
    files = [*sorted((root / "feedback").glob("*.py")), *sorted((root / "insertion").glob("*.py")), root / "algo" / "anchors.py"]
    allowed_serl = ("serl.types", "serl.algo", "serl.feedback", "serl.insertion", "serl.envs.response")
    for path in files:
        pkg = path.parent.name
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith("serl"):
                    assert name.startswith(allowed_serl), f"{path.name} imports {name}"
                    if pkg == "insertion":
                        assert not name.startswith("serl.feedback"), f"{path.name} imports {name}"
                    if pkg == "feedback":
                        assert not name.startswith("serl.insertion"), f"{path.name} imports {name}"
                    if pkg == "algo":  # anchors.py reads responses with the one response-format parser
                        assert name == "serl.algo.masks", f"anchors.py imports {name}"
                else:  # the standard library only (the judge's HTTP client included); no third-party package
                    top = name.split(".")[0]
                    assert top in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_anchor_writes_the_action_outcome_before_its_future_whatever_the_part_order(group):
    # §4.3: feedback / next observation lines come before the future example under each action, even when the
    # combination lists future first (as the step-level section order success, future, feedback does)
    from serl.feedback import AllOf, FutureTrajectory

    ctx = AnchorInsertion().contexts(group, AllOf([FutureTrajectory(), ImmediateFeedback()]))
    assert ctx[0][2].text == (
        "Candidate actions tried from this state:\n"
        "- action go to desk 1, tried 1 times, success count: 1/1, average return: 10.0000\n"
        "  best outcome: success, reward 10.0000\n"
        "  worst outcome: success, reward 10.0000\n"
        f"  Immediate feedback from the current step (best outcome): {DESK}\n"
        "  success future trajectory example:\n"
        "    Step 3\n"
        "    Response:\n"
        "    <action>move mug 1 to desk 1</action>"
    )
    assert ctx[0][2].sources == ("anchor", "future", "immediate")


def test_anchor_with_next_obs_current_and_judge(group):
    # next_obs is written under the candidate action (best member (2,1): its next prompt); current and judge are
    # the step's own sections after the table; the judge's answer for trajectory 2 is set by hand (no HTTP here)
    from serl.feedback import AllOf, CurrentTrajectory, NextObservation, TrajectoryJudge

    judge = TrajectoryJudge(model="m")
    judge.answers = {(7, 2): "This rollout failed. Open the drawer first."}
    ctx = AnchorInsertion().contexts(group, AllOf([NextObservation(), CurrentTrajectory(), judge]))
    assert ctx[2][1].text == (
        "Candidate actions tried from this state:\n"
        "- action i should open drawer 1, tried 1 times, success count: 0/1, average return: 0.0000\n"
        "  best outcome: failure, reward 0.0000\n"
        "  worst outcome: failure, reward 0.0000\n"
        "  next observation after the current step (best outcome): PROMPT[Nothing happens.]\n"
        "\n"
        "Current trajectory so far:\n"
        "Step 0\n"
        "Response:\n"
        "<action>go to drawer 1</action>\n"
        "\n"
        "Trajectory Judge:\n"
        "This rollout failed. Open the drawer first."
    )
    assert ctx[2][1].sources == ("anchor", "next_obs", "current", "judge")
    # step 0 has no past (no current section); trajectory 0 has no judge answer (no judge section)
    assert [title for title, _ in ctx[2][0].sections] == [CAND, "Trajectory Judge:"]
    assert [title for title, _ in ctx[0][1].sections] == [CAND, "Current trajectory so far:"]
    assert ctx[0][1].sources == ("anchor", "next_obs", "current")
