"""Anchor grouping, state-change values and candidate-action text (serl/algo/anchors.py; docs/reference.md §4.2,
§4.3, §3.2, §10.14; docs/design.md §4)."""

from __future__ import annotations

import difflib

import pytest

from serl.algo.anchors import (
    DEFAULT_NOOP_MESSAGES,
    EMPTY_ACTION,
    candidate_action,
    effective_observations,
    group_by_observation,
    group_by_similarity,
    is_state,
    strip_thinking,
)

# Hand-derived difflib ratios (ratio = 2*M/(|a|+|b|), M = matched characters):
#   A~B: "abcdefghi" matches, M=9 -> 0.9;  B~C: "abcdefgh" + "X", M=9 -> 0.9;  A~C: "abcdefgh", M=8 -> 0.8
A, B, C = "abcdefghij", "abcdefghiX", "abcdefghXX"
X = "zzzzzzzzzz"  # shares nothing with A, B, C


def test_hand_ratios():
    ratio = lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()  # noqa: E731
    assert ratio(A, B) == pytest.approx(0.9)
    assert ratio(B, C) == pytest.approx(0.9)
    assert ratio(A, C) == pytest.approx(0.8)
    assert ratio(X, A) == 0.0


# --------------------------------------------------------------------------- exact grouping


def test_group_by_observation_ids_in_first_appearance_order():
    assert group_by_observation(["b", "a", "b", "c", "a", "b"]) == [0, 1, 0, 2, 1, 0]
    assert group_by_observation([]) == []
    assert group_by_observation(["only"]) == [0]


def test_group_by_observation_pools_nothing_happens_like_the_reference():
    # docs/reference.md §4.2: every "Nothing happens." step is one anchor whatever the true location;
    # the step-0 room description is shared by every rollout; near-identical strings stay apart.
    room = "You are in the middle of a room. Looking quickly around you, you see a desk 1."
    obs = [
        room,
        room,
        "Nothing happens.",
        "You arrive at desk 1. On the desk 1, you see a pen 1.",
        "Nothing happens.",
        "You arrive at desk 1. On the desk 1, you see a pen 2.",
        "Nothing happens.",
    ]
    assert group_by_observation(obs) == [0, 0, 1, 2, 1, 3, 1]


def test_group_by_observation_is_exact_equality():
    assert group_by_observation(["a", "a ", "A", "a"]) == [0, 1, 2, 0]


# --------------------------------------------------------------------------- similarity grouping


def test_similarity_identical_strings_cluster():
    assert group_by_similarity(["x", "y", "x", "y"], 0.95) == [0, 1, 0, 1]


def test_similarity_first_representative_and_order_dependence():
    t = 0.85
    # B first: A and C both reach B's representative.
    assert group_by_similarity([B, A, C], t) == [0, 0, 0]
    # A first: C is not similar to the representative A (0.8) -> its own cluster, although C ~ B.
    assert group_by_similarity([A, B, C], t) == [0, 0, 1]
    # A, C found two clusters; B is similar to both and joins the FIRST one (A's).
    assert group_by_similarity([A, C, B], t) == [0, 1, 0]
    assert group_by_similarity([C, A, B], t) == [0, 1, 0]


def test_similarity_threshold_is_inclusive():
    assert group_by_similarity([A, B], 0.9) == [0, 0]  # ratio exactly 0.9 >= 0.9
    assert group_by_similarity([A, B], 0.9000001) == [0, 1]


def test_similarity_unrelated_strings_separate():
    assert group_by_similarity([X, A, X, C], 0.5) == [0, 1, 0, 1]  # A~C = 0.8 >= 0.5


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_similarity_threshold_range(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        group_by_similarity(["a"], bad)


def test_similarity_matches_brute_force_definition():
    # slow-loop reference of the §4.2 rule on a small random-ish corpus
    words = ["go to desk 1", "go to desk 2", "go to desk 12", "take mug 1", "take mug 2", "open drawer 1"]
    items = [w + suffix for w in words for suffix in ("", ".", " now")]
    items = items[::2] + items[1::2]
    for threshold in (0.6, 0.8, 0.9, 0.95):
        reps: list[str] = []
        expected = []
        for s in items:
            for k, r in enumerate(reps):
                if difflib.SequenceMatcher(None, r, s).ratio() >= threshold:
                    expected.append(k)
                    break
            else:
                expected.append(len(reps))
                reps.append(s)
        assert group_by_similarity(items, threshold) == expected


# --------------------------------------------------------------------------- state-change values

NOTHING = "Nothing happens."


def test_is_state():
    assert DEFAULT_NOOP_MESSAGES == (NOTHING,)
    assert is_state("You arrive at desk 1.")
    assert not is_state(NOTHING) and not is_state("  Nothing happens.\n") and not is_state(" ") and not is_state("")
    assert is_state("Nothing happens. Or does it?")  # only whole messages are no-ops
    assert is_state(NOTHING, noop_messages=()) and not is_state("huh?", noop_messages=[" huh? "])


def test_effective_observations_walk_back():
    obs = ["room", "desk", NOTHING, NOTHING, "  ", "drawer", NOTHING, "drawer"]
    assert effective_observations(obs) == ["room", "desk", "desk", "desk", "desk", "drawer", "drawer", "drawer"]
    assert effective_observations([]) == []
    # nothing to walk back to: the step's own observation
    assert effective_observations([NOTHING, "", "room", NOTHING]) == [NOTHING, "", "room", "room"]
    # custom messages; the default one is then an ordinary state
    assert effective_observations(["room", "huh?", NOTHING], noop_messages=["huh?"]) == ["room", "room", NOTHING]


def test_effective_observations_matches_slow_definition():
    # slow loop: for step t, the most recent k <= t whose observation is a state, else observation t itself
    pool = ["a", "b", NOTHING, " ", "a"]
    obs = [pool[(7 * k * k + 3 * k) % len(pool)] for k in range(40)]
    expected = []
    for t in range(len(obs)):
        found = [obs[k] for k in range(t, -1, -1) if obs[k].strip() and obs[k].strip() != NOTHING]
        expected.append(found[0] if found else obs[t])
    assert effective_observations(obs) == expected


# --------------------------------------------------------------------------- candidate action text


def test_strip_thinking():
    assert strip_thinking("<think>a\nb</think>\n  <action>x</action>") == "<action>x</action>"
    assert strip_thinking("pre <think>a</think> mid <THINK>b</THINK>end") == "pre mid end"
    assert strip_thinking("<think>unclosed <action>x</action>") == "<think>unclosed <action>x</action>"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>go</think>\n<action>go to countertop 1</action>", "go to countertop 1"),
        ("<think>t</think><action>  Go to\n\tDesk 1  </action>", "go to desk 1"),
        ("<action>first</action> <action>second</action>", "first"),
        # the first block, also inside the thinking: the action the projection executes
        ("<think>maybe <action>go to drawer 1</action>?</think><action>look</action>", "go to drawer 1"),
        ("I should  Open drawer 1", "i should open drawer 1"),  # no tag: whole normalised response
        ("<think>x</think> <action>half open", "<action>half open"),  # unclosed tag = no tag
        ("<think>x</think>\n<action>\n</action>", EMPTY_ACTION),
        ("", EMPTY_ACTION),
        ("<think>only thinking</think>", EMPTY_ACTION),
    ],
)
def test_candidate_action(response, expected):
    assert candidate_action(response) == expected


def test_candidate_action_without_think_removal():
    response = "<think>maybe <action>Go to drawer 1</action>?</think><action>look</action>"
    assert candidate_action(response, remove_thinking=False) == "go to drawer 1"
    assert candidate_action("<think>x</think>", remove_thinking=False) == "<think>x</think>"


def test_strip_thinking_modes():
    # serl: think tags in any ASCII case; the reference's think removal is case-sensitive (§3.2)
    text = "pre <think>a</think> mid <THINK>b</THINK>end"
    assert strip_thinking(text) == strip_thinking(text, mode="serl") == "pre mid end"
    assert strip_thinking(text, mode="reference") == "pre mid <THINK>b</THINK>end"
    with pytest.raises(ValueError, match="response_format must be one of"):
        strip_thinking(text, mode="Reference")


def test_candidate_action_modes():
    response = "<think>maybe <action>go to drawer 1</action></think><action>look</action>"
    # serl: the executed (first) block; the reference: the first block after the thinking is stripped
    assert candidate_action(response) == "go to drawer 1"
    assert candidate_action(response, mode="reference") == "look"
    # the reference keeps an upper-case thinking block (case-sensitive think tags), so there it finds the inner one
    assert candidate_action(response.replace("think>", "THINK>"), mode="reference") == "go to drawer 1"
    # the action block is the first <action> and the first </action> after it (the projection's rule)
    assert candidate_action("<think>x</think></action> <action>Look</action>") == "look"
