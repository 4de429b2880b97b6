"""Reference mode vs serl mode on minimal malformed responses, with hand-derived values (docs/reference.md §3.2, §4.3,
§6.2, §8.3, §10.10), and the one-definition property of serl mode: projection, mask and validity agree.

Each row pins one malformed-input case: the reference's projection and action spans, and serl's. Offsets are
counted by hand from ``T = "<think>t</think>"`` (16 characters, so the content of a following ``<action>``
starts at 24); the ALFWorld fallback is the last 30 characters of the lower-cased response.
"""

from __future__ import annotations

import random

import pytest

from serl.algo.masks import parse_response
from serl.envs.projection import ALFWORLD_CHARSET, project_action
from tests.response_shims import action_mask_from_ids, candidate_action, find_action_spans, strip_thinking


T = "<think>t</think>"
ALF = 30

# name: (response, reference projection, serl projection, reference spans, serl spans)
CASES = {
    "well_formed": (T + "<action>Look</action>", ("look", True), ("look", True), [(24, 28)], [(24, 28)]),
    # tag with attributes: no "<action>" for the projection (fallback = text[14:]), yet the reference marks it
    "attributes": (
        T + "<action id='1'>look</action>",
        ("k><action id='1'>look</action>", False),
        ("k><action id='1'>look</action>", False),
        [(31, 35)],
        [],
    ),
    # malformed "[action>": invalid for the projection (fallback = text[8:]); the reference marks it
    "bracket": (
        T + "[action>look</action>]",
        ("</think>[action>look</action>]", False),
        ("</think>[action>look</action>]", False),
        [(24, 28)],
        [],
    ),
    # bare "action>": fallback = text[6:]
    "bare": (
        T + "action>look</action>",
        (">t</think>action>look</action>", False),
        (">t</think>action>look</action>", False),
        [(23, 27)],
        [],
    ),
    # truncated: the whole (29-character) response is the fallback; reference rule 2 marks to the end
    "unclosed": (
        T + "<action>go to",
        ("<think>t</think><action>go to", False),
        ("<think>t</think><action>go to", False),
        [(24, 29)],
        [],
    ),
    # "</action>" before "<action>": the reference extracts "" (valid); serl has no block (fallback text[13:]);
    # reference spans: rule 1 finds nothing, rule 2 takes the opening tag at 31 ("look" = [39, 43))
    "closing_first": (
        T + "</action> oops <action>look",
        ("", True),
        ("nk></action> oops <action>look", False),
        [(39, 43)],
        [],
    ),
    # empty action: valid in both; the reference's rule 2 then marks the closing tag [24, 33)
    "empty_action": (T + "<action></action>", ("", True), ("", True), [(24, 33)], []),
    # whitespace around the action: the reference marks it, serl only the executed characters
    "padded_action": (T + "<action> look </action>", ("look", True), ("look", True), [(24, 30)], [(25, 29)]),
    # no think tags: invalid in both; the reference still marks the action, serl keeps plain GRPO
    "no_think": ("<action>look</action>", ("look", False), ("look", False), [(8, 12)], []),
    # upper-case think tags: the reference's check is case-sensitive (§8.3, its env code)
    "upper_think": ("<THINK>t</THINK><action>look</action>", ("look", False), ("look", True), [(24, 28)], [(24, 28)]),
    "cjk_in_thinking": ("<think>我</think><action>look</action>", ("look", False), ("look", False), [(24, 28)], []),
    # CJK action: invalid in both, but the reference marks its tokens and sends it to the env
    "cjk_action": (
        T + "<action>去</action>",
        ("去", False),
        ("nk>t</think><action></action>", False),
        [(24, 25)],
        [],
    ),
    # Hangul is outside the reference's U+4E00-U+9FFF: a valid command there
    "hangul_action": (
        T + "<action>책</action>",
        ("책", True),
        ("nk>t</think><action></action>", False),
        [(24, 25)],
        [],
    ),
    # emoji / NUL / newline inside the command: valid and verbatim in the reference; serl: invalid, filtered tail
    "emoji_action": (
        T + "<action>look 😀</action>",
        ("look 😀", True),
        ("/think><action>look </action>", False),
        [(24, 30)],
        [],
    ),
    "nul_action": (
        T + "<action>look\x00</action>",
        ("look\x00", True),
        ("</think><action>look</action>", False),
        [(24, 29)],
        [],
    ),
    "newline_action": (
        T + "<action>go to\ndesk 1</action>",
        ("go to\ndesk 1", True),
        ("><action>go todesk 1</action>", False),
        [(24, 36)],
        [],
    ),
    # several blocks: the env executes the first; the reference marks all of them
    "two_blocks": (
        T + "<action>look</action><action>inventory</action>",
        ("look", True),
        ("look", True),
        [(24, 28), (45, 54)],
        [(24, 28)],
    ),
    # a block inside the thinking is the first one: both projections execute it; serl marks exactly it
    "action_in_thinking": (
        "<think><action>look</action></think><action>inventory</action>",
        ("look", True),
        ("look", True),
        [(15, 19), (44, 53)],
        [(15, 19)],
    ),
    # WebShop-style text without tags, inside the thinking: the reference's rule 3 marks it anyway
    "webshop_in_thinking": (
        "<think>click[buy now]</think>",
        ("<think>click[buy now]</think>", False),
        ("<think>click[buy now]</think>", False),
        [(7, 21)],
        [],
    ),
    "webshop_no_tags": (
        T + "search[red shoes]",
        ("ink>t</think>search[red shoes]", False),
        ("ink>t</think>search[red shoes]", False),
        [(16, 33)],
        [],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_vs_serl(name):
    text, ref_proj, serl_proj, ref_spans, serl_spans = CASES[name]
    assert project_action(text, ALF, mode="reference") == ref_proj
    assert project_action(text, ALF) == serl_proj
    assert find_action_spans(text, "reference") == ref_spans
    assert find_action_spans(text) == serl_spans
    # the mask from ids (one id per character) marks exactly the spans' characters
    ids = [ord(c) for c in text]
    for mode, spans in (("reference", ref_spans), ("serl", serl_spans)):
        marked = [i for i, m in enumerate(action_mask_from_ids(ids, _chars, mode)) if m]
        assert marked == [i for s, e in spans for i in range(s, e)]


def test_thinking_and_candidate_modes():
    # think removal: any ASCII case (serl) vs case-sensitive (reference, §3.2)
    assert strip_thinking("<THINK>a</THINK> b") == "b"
    assert strip_thinking("<THINK>a</THINK> b", mode="reference") == "<THINK>a</THINK> b"
    response = "<Think>a <action>x</action></Think><action>y</action>"
    assert candidate_action(response) == "x"  # serl: the executed block
    assert candidate_action(response, mode="reference") == "x"  # the upper-case thinking is not stripped
    # both projections execute the first block of the whole response (here inside the thinking); serl's
    # candidate is that action, the reference's the think-stripped response's first block (a mismatch it has)
    response = "<think><action>look</action></think><action>inventory</action>"
    assert candidate_action(response) == project_action(response, ALF)[0] == "look"
    assert candidate_action(response, mode="reference") == "inventory"
    assert project_action(response, ALF, mode="reference")[0] == "look"


def _chars(ids):
    return "".join(map(chr, ids))


PIECES = [
    "<think>", "</think>", "<THINK>", "<action>", "</action>", "<ACTION>", "</Action>", "<action id=1>",
    "[action>", "</action>]", "action>", "<action", ">", "search[", "click[", "]", "\n", " ", "\t", "go to desk 1",
    "Look", "é", "我", "책", "😀", "\x00", "\u212a", "ı", "<", "a", "[",
]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 14)))


def test_one_definition_projection_mask_validity():
    # serl mode: the marked characters are exactly the executed action (lower-cased) when the response is
    # valid, and nothing is marked otherwise; the env never receives a character outside the charset
    rng = random.Random(0)
    for _ in range(3000):
        text = _random_text(rng)
        action, valid = project_action(text, ALF)
        parsed = parse_response(text)
        mask = action_mask_from_ids([ord(c) for c in text], _chars)
        marked = "".join(c for c, m in zip(text, mask) if m)
        assert valid == parsed.valid
        assert all(ch in ALFWORLD_CHARSET for ch in action)
        if valid:
            assert marked.lower() == action == parsed.action
            assert marked == text[parsed.span[0] : parsed.span[1]]
        else:
            assert marked == ""
