"""Action projection and validity, one case per rule of SERL_REFERENCE §8.3."""

from __future__ import annotations

import pytest

from serl.envs.projection import contains_cjk, project_action

ALF = 30  # ALFWorld fallback characters


def test_well_formed_response_is_valid_and_lower_cased():
    text = "<think>The mug is on the desk.</think><action>Go To Desk 1</action>"
    assert project_action(text, ALF) == ("go to desk 1", True)


def test_action_is_stripped():
    assert project_action("<think>x</think><action>  \n take mug 1 from desk 1 \t</action>", ALF) == (
        "take mug 1 from desk 1",
        True,
    )


def test_first_action_block_wins():
    text = "<think>t</think><action>look</action> then <action>inventory</action>"
    assert project_action(text, ALF) == ("look", True)


def test_missing_closing_action_tag_falls_back_to_last_chars():
    text = "<think>reasoning</think><action>go to the countertop number one please"
    action, valid = project_action(text, ALF)
    assert valid is False
    assert action == text.lower()[-30:] and len(action) == 30


def test_missing_opening_action_tag_falls_back_to_last_chars():
    text = "<think>reasoning</think>I choose: open Drawer 1</action>"
    assert project_action(text, ALF) == (text.lower()[-30:], False)


def test_no_tags_short_response_is_whole_text():
    assert project_action("Look", ALF) == ("look", False)


def test_webshop_fallback_length():
    text = "<think>x</think>click the first product on the page"
    assert project_action(text, 20) == (text.lower()[-20:], False)


@pytest.mark.parametrize(
    "text",
    [
        "<action>look</action>",  # no think at all
        "reasoning</think><action>look</action>",  # no <think>
        "<think>reasoning<action>look</action>",  # no </think>
    ],
)
def test_missing_think_tag_is_invalid_but_action_extracted(text):
    assert project_action(text, ALF) == ("look", False)


@pytest.mark.parametrize("cjk", ["我去桌子", "つくえ", "책상"])
def test_cjk_characters_make_the_response_invalid(cjk):
    text = f"<think>{cjk}</think><action>go to desk 1</action>"
    assert contains_cjk(text)
    assert project_action(text, ALF) == ("go to desk 1", False)


def test_non_cjk_unicode_is_fine():
    assert not contains_cjk("café — naïve ✓")
    assert project_action("<think>café ✓</think><action>look</action>", ALF) == ("look", True)


def test_tags_match_case_insensitively():
    assert project_action("<THINK>x</THINK><Action>LOOK</ACTION>", ALF) == ("look", True)


def test_inadmissible_but_well_formed_action_is_valid():
    # admissibility is the env's business ("Nothing happens."), not the projection's
    assert project_action("<think>x</think><action>fly to the moon</action>", ALF) == ("fly to the moon", True)


def test_closing_tag_before_opening_tag_gives_empty_action():
    # literal rule: text between the first <action> and the first </action>
    assert project_action("<think>x</think></action> oops <action>look", ALF) == ("", True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fallback_chars"):
        project_action("x", -1)
    with pytest.raises(TypeError):
        project_action(None, ALF)  # type: ignore[arg-type]
    assert project_action("abc", 0) == ("", False)
