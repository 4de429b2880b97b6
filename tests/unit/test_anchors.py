"""Anchor grouping (serl/algo/anchors.py; docs/reference.md §4.2, §10.14)."""

from __future__ import annotations

import difflib

import pytest

from serl.algo.anchors import group_by_observation, group_by_similarity

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
