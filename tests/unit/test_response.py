"""The env's response format, one definition (serl/envs/response.py; docs/reference.md §3.2, §4.3, §6.2, §8.3)."""

from __future__ import annotations

import pytest

from serl.envs.response import EMPTY_ACTION, ThinkActionFormat

SERL = ThinkActionFormat()
REF = ThinkActionFormat(mode="reference")



def test_strip_thinking():
    assert SERL.strip_thinking("<think>a\nb</think>\n  <action>x</action>") == "<action>x</action>"
    assert SERL.strip_thinking("pre <think>a</think> mid <THINK>b</THINK>end") == "pre mid end"
    assert SERL.strip_thinking("<think>unclosed <action>x</action>") == "<think>unclosed <action>x</action>"


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
    assert SERL.candidate_action(response) == expected


def test_candidate_action_without_think_removal():
    response = "<think>maybe <action>Go to drawer 1</action>?</think><action>look</action>"
    assert SERL.candidate_action(response, remove_thinking=False) == "go to drawer 1"
    assert SERL.candidate_action("<think>x</think>", remove_thinking=False) == "<think>x</think>"


def test_strip_thinking_modes():
    # serl: think tags in any ASCII case; the reference's think removal is case-sensitive (§3.2)
    text = "pre <think>a</think> mid <THINK>b</THINK>end"
    assert SERL.strip_thinking(text) == SERL.strip_thinking(text) == "pre mid end"
    assert REF.strip_thinking(text) == "pre mid <THINK>b</THINK>end"
    with pytest.raises(ValueError, match="response_format must be one of"):
        ThinkActionFormat(mode="Reference")


def test_candidate_action_modes():
    response = "<think>maybe <action>go to drawer 1</action></think><action>look</action>"
    # serl: the executed (first) block; the reference: the first block after the thinking is stripped
    assert SERL.candidate_action(response) == "go to drawer 1"
    assert REF.candidate_action(response) == "look"
    # the reference keeps an upper-case thinking block (case-sensitive think tags), so there it finds the inner one
    assert REF.candidate_action(response.replace("think>", "THINK>")) == "go to drawer 1"
    # the action block is the first <action> and the first </action> after it (the projection's rule)
    assert SERL.candidate_action("<think>x</think></action> <action>Look</action>") == "look"


def test_compose_projects_back_to_the_action():
    fmt = ThinkActionFormat(fallback_chars=20)
    response = fmt.compose("I need soap.", "search[soap bar]")
    assert response == "<think>I need soap.</think><action>search[soap bar]</action>"
    assert fmt.project(response) == ("search[soap bar]", True)
    assert fmt.action_spans(response) == [(response.index("search"), response.index("</action>"))]


def test_bracket_verbs_are_the_envs_in_reference_mode():
    # docs/reference.md §6.2 rule 3: with no action tag, the reference marks every verb[...] of the env's verbs
    text = "<think>I will search[red shoes] then click[b0001]</think> done"
    assert REF.action_spans(text) == []  # an env without bracket verbs (ALFWorld) marks nothing
    web = ThinkActionFormat(mode="reference", fallback_chars=20, bracket_verbs=["search", "click"])
    s, c = text.index("search["), text.index("click[")
    assert web.action_spans(text) == [(s, s + len("search[red shoes]")), (c, c + len("click[b0001]"))]
    # serl mode never marks tokens of an invalid response, bracket verbs or not
    assert ThinkActionFormat(bracket_verbs=["search"]).action_spans(text) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "serl_reference"}, "response_format must be one of"),
        ({"charset": "ascii"}, "charset must be one of printable_ascii, any"),
        ({"fallback_chars": -1}, "fallback_chars must be an int >= 0"),
        ({"bracket_verbs": "search"}, "list of verbs"),
        ({"bracket_verbs": ["Search["]}, "lower-case words"),
    ],
)
def test_bad_knobs_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThinkActionFormat(**kwargs)


def test_charset_any_lets_non_ascii_commands_through():
    response = "<think>t</think><action>click[café]</action>"
    assert SERL.project(response)[1] is False
    assert ThinkActionFormat(charset="any").project(response) == ("click[café]", True)
