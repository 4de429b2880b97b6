"""Action projection and validity, one case per rule of docs/reference.md §8.3, in serl mode (default) and in the
reference's literal mode; serl's deviations pinned with minimal inputs."""

from __future__ import annotations

import pytest

from serl.envs.projection import ALFWORLD_CHARSET, contains_cjk, project_action, reference_projection

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


def test_closing_tag_before_opening_tag():
    text = "<think>x</think></action> oops <action>look"
    # reference, literally: text between the first <action> and the first </action> = "" (valid)
    assert project_action(text, ALF, mode="reference") == ("", True)
    # serl: the closing tag must follow the opening tag, so there is no action block: fallback, invalid
    assert project_action(text, ALF) == (text.lower()[-30:], False)


def test_characters_outside_the_charset_are_invalid_in_serl_mode_only():
    # the reference sends emoji, NUL, a newline inside the command verbatim as a valid command
    for action in ("look 😀", "look\x00", "go to\ndesk 1", "café"):
        text = f"<think>x</think><action>{action}</action>"
        assert project_action(text, ALF, mode="reference") == (action, True)
        action_serl, valid = project_action(text, ALF)
        # serl: invalid; the env gets the fallback tail with every character outside the charset dropped
        assert valid is False
        assert action_serl == "".join(ch for ch in text.lower()[-30:] if ch in ALFWORLD_CHARSET)
    # 39 characters; the last 30 start at index 9 ("/think>..."), the emoji dropped
    assert project_action("<think>x</think><action>look 😀</action>", ALF)[0] == "/think><action>look </action>"


def test_fallback_tail_is_filtered_to_the_charset():
    text = "<think>x</think>I go to the desk now 😀\n"
    assert project_action(text, ALF, mode="reference") == (text.lower()[-30:], False)
    # last 30 characters "/think>i go to the desk now 😀\n" (7 + 21 + 2) minus the emoji and the newline
    assert project_action(text, ALF) == ("/think>i go to the desk now ", False)


def test_suite_charset_parameter():
    text = "<think>x</think><action>Café</action>"
    assert project_action(text, ALF, charset=ALFWORLD_CHARSET | {"é"}) == ("café", True)
    assert project_action(text, ALF, charset=None) == ("café", True)


def test_think_tag_case():
    # §8.3: the reference's env code tests the think tags on the original text
    text = "<THINK>x</THINK><action>look</action>"
    assert project_action(text, ALF, mode="reference") == ("look", False)
    assert project_action(text, ALF) == ("look", True)


def test_cjk_ranges():
    # the reference tests U+4E00-U+9FFF only; serl also counts kana and Hangul
    for text, reference_valid in (("<think>책</think><action>look</action>", True), ("<think>我</think><action>look</action>", False)):
        assert project_action(text, ALF, mode="reference") == ("look", reference_valid)
        assert project_action(text, ALF) == ("look", False)


@pytest.mark.parametrize("mode", ["serl", "reference"])
def test_modes_agree_on_well_formed_responses(mode):
    for text, expected in (
        ("<think>a</think><action>Go To Desk 1</action>", ("go to desk 1", True)),
        ("<think>a</think>\n<action>\n take mug 1 \n</action>", ("take mug 1", True)),
        ("<think>a</think><action>look</action><action>inventory</action>", ("look", True)),
        ("<think><action>look</action></think><action>inventory</action>", ("look", True)),
        ("<think>a</think><action>  </action>", ("", True)),
    ):
        assert project_action(text, ALF, mode=mode) == expected


def test_reference_projection_is_the_reference_mode():
    text = "<THINK>x</THINK><action>look\x00</action>"
    assert reference_projection(text, ALF) == project_action(text, ALF, mode="reference") == ("look\x00", False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fallback_chars"):
        project_action("x", -1)
    with pytest.raises(TypeError):
        project_action(None, ALF)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="response_format must be one of"):
        project_action("x", ALF, mode="authors")
    assert project_action("abc", 0) == ("", False)
    assert project_action("abc", 0, mode="reference") == ("", False)
