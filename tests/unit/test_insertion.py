"""Insertion granularity × feedback source (serl/insertion; SERL_REFERENCE §4). Expected texts are hand-derived.

The fixture group (4 trajectories of one ALFWorld-like game, "put a mug in desk"):

    traj 0 (won, return 10): ROOM -go to countertop 1-> COUNTER -take mug 1-> PICK_MUG -go to desk 1-> DESK
                              -move mug 1 to desk 1-> PUT (reward 10, last step)
    traj 1 (return 0): ROOM -go to countertop 1-> COUNTER -take plate 2-> PICK_PLATE -take mug 1-> NOTHING
                              -go to desk 1-> DESK (last step)
    traj 2 (return 0): ROOM -go to drawer 1-> DRAWER -(no tags) "I should open drawer 1"-> NOTHING
                              -go to desk 1-> DESK (last step)
    traj 3 (return 0): ROOM -go to countertop 1 (an <action> inside the thinking says drawer)-> COUNTER
                              -examine countertop 1-> EXAMINED -(empty action)-> "  " (blank, artificial; last)

Exact anchors (first appearance over (step_id, traj)): 0 ROOM {(0,0),(1,0),(2,0),(3,0)}; 1 COUNTER {(0,1),(1,1),
(3,1)}; 2 DRAWER {(2,1)}; 3 PICK_MUG {(0,2)}; 4 PICK_PLATE {(1,2)}; 5 NOTHING {(1,3),(2,2)} (two unrelated
states pooled, as in the reference); 6 EXAMINED {(3,2)}; 7 DESK {(0,3)}.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from serl.feedback import ImmediateFeedback, NoFeedback, StateDiffFeedback
from serl.insertion import INSERTIONS, AnchorInsertion, Insertion, StepInsertion
from serl.types import TeacherContext, Trajectory
from tests.group_fixture import (
    COUNTER, DESK, DRAWER, EXAMINED, NOTHING, PICK_MUG, PICK_PLATE, PUT, ROOM, act, make_group, mk_step,
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
    assert INSERTIONS == {"step": StepInsertion, "anchor": AnchorInsertion}
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
    return [
        Trajectory(group_id=0, traj_id=i, game="g", task_type="t", task="t",
                   steps=[mk_step(t, obs, act(f"a{i}{t}"), "ok") for t, obs in enumerate(row)])
        for i, row in enumerate(observations)
    ]


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


@pytest.mark.parametrize("kwargs", [{"key": "state_change"}, {"key": "prompt"}])
def test_anchor_key_validation(kwargs):
    with pytest.raises(ValueError, match="allowed: observation"):
        AnchorInsertion(**kwargs)


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.5, 2.0])
def test_anchor_similarity_validation(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        AnchorInsertion(similarity=bad)


def test_anchor_accepts_hydra_style_kwargs():
    ins = AnchorInsertion(key="observation", similarity=0.95, remove_thinking=False)
    assert (ins.key, ins.similarity, ins.remove_thinking) == ("observation", 0.95, False)


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
    # traj 3's thinking contains "<action>go to drawer 1</action>", which now is its candidate action
    ctx = AnchorInsertion(remove_thinking=False).contexts(group, ImmediateFeedback())
    assert ctx[0][0].text == (
        "Candidate actions tried from this state:\n"
        "- action go to countertop 1, tried 2 times, success count: 1/2, average return: 5.0000\n"
        "  best outcome: success, reward 10.0000\n"
        "  worst outcome: failure, reward 0.0000\n"
        f"  Immediate feedback from the current step (best outcome): {COUNTER}\n"
        "- action go to drawer 1, tried 2 times, success count: 0/2, average return: 0.0000\n"
        "  best outcome: failure, reward 0.0000\n"
        "  worst outcome: failure, reward 0.0000\n"
        f"  Immediate feedback from the current step (best outcome): {DRAWER}\n"
        f"  Immediate feedback from the current step (worst outcome): {COUNTER}"
    )


def test_anchor_best_worst_tie_breaking():
    # one anchor, one action, four failing occurrences: best = smallest step_id then smallest traj;
    # worst = largest step_id then largest traj. Feedback tells them apart.
    S = "same state"
    grp = [
        Trajectory(group_id=0, traj_id=0, game="g", task_type="t", task="t",
                   steps=[mk_step(0, "other", act("x"), "o0"), mk_step(1, S, act("go"), "t0s1")]),
        Trajectory(group_id=0, traj_id=1, game="g", task_type="t", task="t",
                   steps=[mk_step(0, S, act("go"), "t1s0"), mk_step(1, S, act("go"), "t1s1")]),
        Trajectory(group_id=0, traj_id=2, game="g", task_type="t", task="t",
                   steps=[mk_step(0, S, act("go"), "t2s0")]),
    ]
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


# =========================================================================== layering


def test_feedback_and_insertion_import_only_types_algo_stdlib():
    root = pathlib.Path(__file__).resolve().parents[2] / "serl"
    files = [*sorted((root / "feedback").glob("*.py")), *sorted((root / "insertion").glob("*.py")), root / "algo" / "anchors.py"]
    allowed_serl = ("serl.types", "serl.algo", "serl.feedback", "serl.insertion")
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
                    if pkg == "algo":
                        assert False, f"anchors.py imports {name}"
                else:
                    top = name.split(".")[0]
                    assert top in {"__future__", "abc", "dataclasses", "difflib", "re", "typing"}, (
                        f"{path.name} imports {name}"
                    )
