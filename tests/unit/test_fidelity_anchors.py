"""Differential tests: anchor grouping against the reference's rule (docs/reference.md §4.2) on blank,
whitespace-only and near-identical observations (issue 10 item 7c).

The reference (``PC :: _build_anchor_groups``) is re-implemented below as a slow, literal loop from §4.2:

* anchor value of a record = its ``anchor_obs`` unless that is None (then the prompt text); a serl ``Step``
  always has an observation string, so the value is the raw observation, blank included;
* exact mode: records keyed by the value itself (no stripping);
* similarity mode: records visited in order; a record joins the first cluster whose representative (first
  member's value) is similar, else founds a cluster. Similar = both texts non-blank after stripping and
  ``difflib.SequenceMatcher(None, record_text, representative_text).ratio() >= threshold`` on the stripped
  texts (a blank side is never similar).
"""

from __future__ import annotations

import difflib
import random

import pytest

from serl.algo.anchors import group_by_observation, group_by_similarity
from serl.insertion import AnchorInsertion
from serl.types import Trajectory
from tests.group_fixture import COUNTER, DESK, NOTHING, ROOM, act, mk_step, replay_states


def reference_exact(values: list[str]) -> list[int]:
    clusters: dict[str, int] = {}
    out = []
    for v in values:
        if v not in clusters:
            clusters[v] = len(clusters)
        out.append(clusters[v])
    return out


def reference_similar(a: str, b: str, threshold: float) -> bool:
    a_text, b_text = a.strip(), b.strip()
    if not a_text or not b_text:
        return False
    return difflib.SequenceMatcher(None, a_text, b_text).ratio() >= threshold


def reference_similarity(values: list[str], threshold: float) -> list[int]:
    reps: list[str] = []
    out = []
    for v in values:
        for k, rep in enumerate(reps):
            if reference_similar(v, rep, threshold):  # (record, representative), the reference's order
                out.append(k)
                break
        else:
            out.append(len(reps))
            reps.append(v)
    return out


# --------------------------------------------------------------------------- minimal cases, hand-derived


def test_exact_grouping_keys_blank_observations_as_they_are():
    values = ["", "room", "", "  ", "  ", "room "]
    expected = [0, 1, 0, 2, 2, 3]  # every "" pools, every "  " pools, nothing is stripped
    assert reference_exact(values) == expected
    assert group_by_observation(values) == expected


def test_similarity_blank_is_never_similar():
    # ("", "") -> normalised text None on both sides -> not similar -> a cluster each
    assert reference_similarity(["", ""], 0.95) == [0, 1]
    assert group_by_similarity(["", ""], 0.95) == [0, 1]
    # a blank representative takes no member either, and a blank item joins no representative
    assert group_by_similarity(["  ", "a", "\n", "a"], 0.5) == [0, 1, 2, 1]


def test_similarity_compares_stripped_texts():
    # "a" vs "a " stripped: identical -> ratio 1.0 (raw: 2*1/3 = 0.667 < 0.95)
    assert difflib.SequenceMatcher(None, "a", "a ").ratio() == pytest.approx(2 / 3)
    assert group_by_similarity(["a", "a "], 0.95) == [0, 0]
    assert group_by_similarity(["\nroom\n", "room"], 0.95) == [0, 0]


def test_similarity_argument_order_is_item_then_representative():
    # Hand ratios. SequenceMatcher("aba", "babba"): longest block "ab" (a[0:2] = b[1:3]), then "a" in the
    # tail (a[2] = b[4]): M = 3, ratio = 2*3/8 = 0.75. SequenceMatcher("babba", "aba"): longest block "ba"
    # (a[0:2] = b[1:3]), nothing after b[3:]: M = 2, ratio = 4/8 = 0.5.
    assert difflib.SequenceMatcher(None, "aba", "babba").ratio() == 0.75
    assert difflib.SequenceMatcher(None, "babba", "aba").ratio() == 0.5
    # representative "babba", item "aba": the reference computes ratio(item, rep) = 0.75 >= 0.7 -> joins
    assert reference_similarity(["babba", "aba"], 0.7) == [0, 0]
    assert group_by_similarity(["babba", "aba"], 0.7) == [0, 0]
    # representative "aba", item "babba": ratio("babba", "aba") = 0.5 < 0.7 -> separate
    assert group_by_similarity(["aba", "babba"], 0.7) == [0, 1]


# --------------------------------------------------------------------------- randomised differential


def _corpus(rng: random.Random) -> list[str]:
    long_room = ROOM + " " + " ".join(f"a shelf {k}," for k in range(30))  # > 200 chars: difflib autojunk
    base = [ROOM, COUNTER, DESK, NOTHING, long_room, long_room.replace("shelf 7", "shelf 8"), "aba", "babba"]
    pool = base + [" " + b for b in base[:3]] + [b + "\n" for b in base[3:5]] + ["", " ", "\n\t"]
    return [rng.choice(pool) for _ in range(rng.randint(1, 14))]


@pytest.mark.parametrize("seed", range(25))
def test_grouping_matches_reference_randomised(seed):
    rng = random.Random(seed)
    values = _corpus(rng)
    assert group_by_observation(values) == reference_exact(values)
    for threshold in (0.3, 0.6, 0.9, 0.95, 0.99):
        assert group_by_similarity(values, threshold) == reference_similarity(values, threshold), threshold


# --------------------------------------------------------------------------- through AnchorInsertion


def _group(observations: list[list[str]]) -> list[Trajectory]:
    trajs = []
    for i, row in enumerate(observations):
        feedback = row[1:] + ["ok"]  # each step's answer is the next observation
        steps = replay_states([mk_step(t, obs, act(f"a{i}{t}"), fb) for t, (obs, fb) in enumerate(zip(row, feedback))])
        for t, step in enumerate(steps):
            step.prompt = f"PROMPT[traj {i} step {t}]"  # every prompt differs
        trajs.append(Trajectory(group_id=0, traj_id=i, game="g", task_type="t", task="t", steps=steps))
    return trajs


def test_anchor_insertion_blank_observations_like_the_reference():
    grp = _group([[ROOM, ""], [ROOM, "", "  "]])
    # visit order (step_id, traj): ROOM(0,0) ROOM(1,0) ""(0,1) ""(1,1) "  "(1,2)
    values = [ROOM, ROOM, "", "", "  "]
    assert AnchorInsertion().anchor_values(grp[1]) == [ROOM, "", "  "]  # raw, never the prompt
    # exact: the two "" pool although their prompts differ; "  " is another value
    assert reference_exact(values) == [0, 0, 1, 1, 2]
    assert AnchorInsertion().anchor_ids(grp) == [[0, 1], [0, 1, 2]]
    # similarity: every blank observation is an anchor of its own
    assert reference_similarity(values, 0.95) == [0, 0, 1, 2, 3]
    assert AnchorInsertion(similarity=0.95).anchor_ids(grp) == [[0, 1], [0, 2, 3]]


def test_state_change_key_keeps_its_prompt_fallback_for_blank():
    # beyond the reference: under key="state_change" a blank observation is not a state (serl.rollout.base.env_state):
    # it takes the last state of its trajectory, or its own prompt when there is none
    grp = _group([["", ROOM, ""]])
    assert AnchorInsertion(key="state_change").anchor_values(grp[0]) == ["PROMPT[traj 0 step 0]", ROOM, ROOM]
