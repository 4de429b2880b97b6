"""serl.algo.masks: the one response parser (serl mode), the reference's §6.2 spans, offsets from the generated ids
and the §6.3 overlap rule, on hand-made inputs with hand-derived values."""

from __future__ import annotations

import pytest
import torch

from serl.algo.masks import (
    PRINTABLE_ASCII,
    action_token_mask,
    first_action_block,
    incremental_char_offsets,
    parse_response,
    remove_thinking,
)
from tests.response_shims import action_mask_from_ids, find_action_spans, reference_action_spans


T = "<think>t</think>"  # 16 characters: the action block of T + "<action>X</action>" starts at 24


def _contents(text: str, mode: str = "serl") -> list[str]:
    return [text[s:e] for s, e in find_action_spans(text, mode)]


# ---------------------------------------------------------------- parse_response (serl: one definition)


def test_parse_well_formed():
    text = "<think>go to desk</think><action>Go To Desk 1</action>"
    # 7 + 10 + 8 + 8 = 33 characters before the content, 12 content characters
    p = parse_response(text)
    assert (p.action, p.span, p.valid, p.problems) == ("go to desk 1", (33, 45), True, ())
    assert find_action_spans(text) == [(33, 45)]


def test_parse_strips_and_maps_to_the_original_text():
    text = T + "<action> \n Take Mug 1 \t</action>"
    p = parse_response(text)
    assert p.span == (27, 37) and text[27:37] == "Take Mug 1" and p.action == "take mug 1" and p.valid


def test_parse_problems_in_order():
    assert parse_response("").problems == ("no_action_block", "no_think")
    assert parse_response("<action>look</action>").problems == ("no_think",)
    assert parse_response("<think>我</think><action>look</action>").problems == ("cjk",)
    p = parse_response("<action>我</action>")
    assert p.problems == ("charset", "no_think", "cjk") and p.action is None and p.span is None


def test_parse_first_block_and_tag_rules():
    # first <action>, first </action> after it; a closing tag before the opening one does not count
    assert parse_response(T + "</action>x<action>look</action><action>b</action>").span == (34, 38)
    assert parse_response(T + "</action>x<action>look").problems == ("no_action_block",)
    # any ASCII case; no attributes; the think tags in any ASCII case
    assert parse_response("<THINK>t</Think><ACTION>Look</Action>").action == "look"
    assert parse_response(T + "<action id='1'>look</action>").problems == ("no_action_block",)
    # no Unicode case folding: U+212A KELVIN SIGN is not "k"
    assert parse_response("<thin\u212a>t</think><action>look</action>").problems == ("no_think",)


def test_parse_charset():
    assert parse_response(T + "<action>look\x00</action>").problems == ("charset",)
    assert parse_response(T + "<action>go to\ndesk 1</action>").problems == ("charset",)
    assert parse_response(T + "<action>café</action>").problems == ("charset",)
    # a suite passes its own set; None allows everything
    assert parse_response(T + "<action>café</action>", charset=PRINTABLE_ASCII | {"é"}).action == "café"
    assert parse_response(T + "<action>go\n😀</action>", charset=None).valid
    with pytest.raises(TypeError, match="charset"):
        parse_response(T, charset=3)  # type: ignore[arg-type]


def test_first_action_block_modes():
    assert first_action_block("a<Action>x</ACTION>", "serl") == (9, 10)
    assert first_action_block("a<Action>x</ACTION>", "reference") == (9, 10)
    assert first_action_block("<action>x", "serl") is None
    # Unicode case folding only in the reference's IGNORECASE: dotless i (U+0131) reads as "i"
    assert first_action_block("<act\u0131on>x</action>", "serl") is None
    assert first_action_block("<act\u0131on>x</action>", "reference") == (8, 9)


def test_remove_thinking_modes():
    assert remove_thinking("<think>a\nb</think>\n  <action>x</action>") == "<action>x</action>"
    assert remove_thinking("pre <think>a</think> mid <THINK>b</THINK>end") == "pre mid end"
    assert remove_thinking("pre <think>a</think> mid <THINK>b</THINK>end", "reference") == "pre mid <THINK>b</THINK>end"
    assert remove_thinking("<think>unclosed <action>x</action>") == "<think>unclosed <action>x</action>"
    # non-greedy: an inner <think> is swallowed, the first </think> closes the block
    assert remove_thinking("<think>a<think>b</think>c</think>d") == "c</think>d"


# ---------------------------------------------------------------- find_action_spans (serl mode)


def test_serl_spans_only_for_valid_responses():
    assert find_action_spans(T + "<action>look</action>") == [(24, 28)]
    assert find_action_spans("<action>look</action>") == []  # no think: invalid ⇒ no action tokens
    assert find_action_spans(T + "<action>look 😀</action>") == []  # charset
    assert find_action_spans(T + "<action>  </action>") == []  # empty action: nothing to mark
    assert find_action_spans(T + "<action>go to sh") == []  # truncated
    # several blocks: only the executed (first) one
    assert _contents(T + "<action>look</action><action>inventory</action>") == ["look"]
    # a block inside the thinking is the one the env executes, so it is the one marked
    assert _contents("<think><action>look</action></think><action>inventory</action>") == ["look"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="text must be a str"):
        find_action_spans(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="response_format must be one of"):
        find_action_spans("x", mode="authors")
    with pytest.raises(ValueError, match="response_format must be one of"):
        action_mask_from_ids([0], lambda ids: "x", mode="Serl")


# ---------------------------------------------------------------- reference_action_spans (§6.2)


def test_reference_rule1_patterns():
    assert reference_action_spans("<Action id=1>look</ACTION>") == [(13, 17)]  # attributes, any case
    assert reference_action_spans("[action>look</action>]") == [(8, 12)]  # malformed bracket
    assert reference_action_spans("I do action>open drawer 1</action>") == [(12, 25)]  # bare
    # "<action>a</action>" = 18 chars, " and " → 23, "<action>" → 31
    assert reference_action_spans("<action>a</action> and <action>bc</action>") == [(8, 9), (31, 33)]
    assert _contents("<action>go to\ndesk 1</action>", "reference") == ["go to\ndesk 1"]
    # the first ">" after "<action" ends the opening tag, whatever lies before it
    assert reference_action_spans("<action a<b>x</action>") == [(12, 13)]


def test_reference_rule1_bare_pattern_inside_closing_tags():
    # "action>" inside the first "</action>" opens a bare match that the second "</action>" closes
    assert reference_action_spans("</action>x</action>") == [(9, 10)]


def test_reference_rule1_beats_webshop_fallback_and_keeps_thinking_mentions():
    assert reference_action_spans("<think>search[a]</think><action>search[x]</action>") == [(32, 41)]
    assert _contents("<think>use <action>x</action></think><action>go</action>", "reference") == ["x", "go"]


def test_reference_rule2_first_unclosed_opening():
    assert reference_action_spans("<think>hmm</think><action>go to sh") == [(26, 34)]
    # the FIRST opening tag: "<think>format: " = 15, "<action>" ends at 23, to the end (41)
    assert reference_action_spans("<think>format: <action></think><action>go") == [(23, 41)]
    assert reference_action_spans("<action>") == []  # nothing after the tag


def test_reference_rule3_webshop_anywhere():
    # "<think>maybe " = 13, "search[red shoes]" = 17 → 30, "</think>" → 38, "search[blue shoes]" = 18 → 56
    assert reference_action_spans("<think>maybe search[red shoes]</think>search[blue shoes]") == [(13, 30), (38, 56)]
    assert _contents("click[Buy Now] then search[x]", "reference") == ["click[Buy Now]", "search[x]"]
    assert reference_action_spans("<think>I will click[buy now]") == [(14, 28)]  # inside the thinking too
    assert reference_action_spans("search[a\nb] click[c]") == [(12, 20)]  # no newline inside the brackets


def test_reference_no_action():
    assert reference_action_spans("I don't know what to do.") == []
    assert reference_action_spans("") == []
    # empty content: rule 1 finds nothing, so rule 2 takes the first opening tag to the end — the closing tag
    assert reference_action_spans("<action></action>") == [(8, 17)]


# ---------------------------------------------------------------- action_token_mask (§6.3)


def test_strict_overlap_rule():
    spans = [(10, 15)]
    offsets = [(5, 10), (9, 11), (10, 15), (14, 16), (15, 20), (12, 12), (11, 11), (0, 30)]
    assert action_token_mask(offsets, spans) == [False, True, True, True, False, False, False, True]


def test_unsorted_overlapping_spans_and_no_spans():
    offsets = [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert action_token_mask(offsets, [(5, 7), (0, 1), (6, 7)]) == [True, False, True, True]
    assert action_token_mask(offsets, []) == [False] * 4


# ---------------------------------------------------------------- incremental offsets + composition


VOCAB = ["<think>", "go", " to", "</think>", "<action>", "go to", " desk 1", "</action>"]


def _decode_vocab(vocab):
    def decode(ids):
        return "".join(vocab[i] for i in ids)

    return decode


def test_hand_vocabulary_mask():
    ids = list(range(len(VOCAB)))
    text, offsets = incremental_char_offsets(ids, _decode_vocab(VOCAB))
    assert text == "<think>go to</think><action>go to desk 1</action>"
    assert offsets == [(0, 7), (7, 9), (9, 12), (12, 20), (20, 28), (28, 33), (33, 40), (40, 49)]
    assert find_action_spans(text) == find_action_spans(text, "reference") == [(28, 40)]
    # "go"/" to" inside the thinking are not action tokens; the tags are not; "go to", " desk 1" are
    expected = [False, False, False, False, False, True, True, False]
    for mode in ("serl", "reference"):
        assert action_mask_from_ids(ids, _decode_vocab(VOCAB), mode) == expected
        assert action_mask_from_ids(torch.tensor(ids), _decode_vocab(VOCAB), mode) == expected


def test_boundary_straddling_piece_and_eos():
    vocab = ["<action", ">go", " to desk 1", "</", "action>", "", "<think>", "</think>"]  # id 5: EOS → ""
    decode = _decode_vocab(vocab)
    ids = [6, 7, 0, 1, 2, 3, 4, 5]
    text, offsets = incremental_char_offsets(ids, decode)
    assert text == "<think></think><action>go to desk 1</action>"
    assert offsets == [(0, 7), (7, 15), (15, 22), (22, 25), (25, 35), (35, 37), (37, 44), (44, 44)]
    # ">go" straddles the tag end and the first action character ⇒ marked (§6.3); EOS is zero-width
    expected = [False, False, False, True, True, False, False, False]
    assert action_mask_from_ids(ids, decode) == action_mask_from_ids(ids, decode, "reference") == expected


def test_invalid_response_keeps_plain_grpo_in_serl_mode_only():
    # no think tags: invalid ⇒ serl marks nothing; the reference marks the action anyway
    vocab = ["<action>", "look", "</action>"]
    assert action_mask_from_ids([0, 1, 2], _decode_vocab(vocab)) == [False, False, False]
    assert action_mask_from_ids([0, 1, 2], _decode_vocab(vocab), "reference") == [False, True, False]


def test_webshop_fallback_only_in_reference_mode():
    vocab = ["<think>", "click[", "buy now", "]", "</think>"]
    decode = _decode_vocab(vocab)
    ids = [0, 1, 2, 3, 4, 1, 2, 3]
    # reference: every click[...] (inside the thinking too); serl: no action block ⇒ invalid ⇒ nothing
    assert action_mask_from_ids(ids, decode, "reference") == [False, True, True, True, False, True, True, True]
    assert action_mask_from_ids(ids, decode) == [False] * 8


def test_multibyte_character_split_over_byte_tokens():
    byte_vocab = [b"<action>", b"caf", b"\xc3", b"\xa9", b"</action>", b"<think>", b"</think>"]

    def decode(ids):
        return b"".join(byte_vocab[i] for i in ids).decode("utf-8", errors="replace")

    ids = [5, 6, 0, 1, 2, 3, 4]
    text, offsets = incremental_char_offsets(ids, decode)
    assert text == "<think></think><action>café</action>"
    # b"\xc3" alone decodes to U+FFFD: held back, then shares "é" = [26, 27) with b"\xa9"
    assert offsets == [(0, 7), (7, 15), (15, 23), (23, 26), (26, 27), (26, 27), (27, 36)]
    assert action_mask_from_ids(ids, decode, "reference") == [False] * 3 + [True, True, True, False]
    # "é" is outside ALFWorld's printable ASCII: invalid in serl mode, unless the suite's charset has it
    assert action_mask_from_ids(ids, decode) == [False] * 7
    assert action_mask_from_ids(ids, decode, charset=PRINTABLE_ASCII | {"é"}) == [False] * 3 + [True] * 3 + [False]
    # a response truncated inside a character still gets an offset for every token
    text, offsets = incremental_char_offsets([0, 1, 2], decode)
    assert text == "<action>caf\ufffd" and offsets[-1] == (11, 12)


def test_decoder_that_rewrites_earlier_text():
    # tokenizer clean-up: " 's" → "'s" once the "s" arrives; the rewriting token starts at the changed char
    vocab = ["<action>", "it", " '", "s", "</action>"]

    def decode(ids):
        return "".join(vocab[i] for i in ids).replace(" 's", "'s")

    text, offsets = incremental_char_offsets([0, 1, 2, 3, 4], decode)
    assert text == "<action>it's</action>"
    assert offsets == [(0, 8), (8, 10), (10, 12), (10, 12), (12, 21)]
    assert action_mask_from_ids([0, 1, 2, 3, 4], decode, "reference") == [False, True, True, True, False]


def test_bounded_decode_work():
    calls = []

    def decode(ids):
        calls.append(len(ids))
        return "".join(VOCAB[i] for i in ids)

    ids = list(range(len(VOCAB))) * 50  # 400 ids
    text, offsets = incremental_char_offsets(ids, decode)
    assert text == "".join(VOCAB) * 50 and len(offsets) == len(ids)
    # one window decode per id, one per window slide (every 4 ids), one full decode; windows of <= 9 ids
    assert len(calls) <= 1.25 * len(ids) + 2
    assert max(calls[:-1]) <= 9 and calls[-1] == len(ids)
    calls.clear()
    assert incremental_char_offsets([], decode) == ("", [])
    assert calls == []


def test_decoder_with_a_context_dependent_prefix():
    # a decoder that prefixes every call with "<s>" (not stable under added left context): the prefix is
    # recognised when the window slides, so the offsets are still the growing-prefix ones
    vocab = ["<action>", "go", " to", " desk", " 1", "</action>", "<think>", "</think>"]

    def decode(ids):
        return "<s>" + "".join(vocab[i] for i in ids)

    ids = [6, 7, 0, 1, 2, 3, 4, 5] * 3
    text, offsets = incremental_char_offsets(ids, decode)
    assert text == decode(ids)
    ends = [3 + sum(len(vocab[i]) for i in ids[: k + 1]) for k in range(len(ids))]
    assert offsets == [(0, ends[0])] + list(zip(ends[:-1], ends[1:]))
    # serl: the first (executed) block only; the reference: every block
    assert action_mask_from_ids(ids, decode) == [False, False, False, True, True, True, True, False] + [False] * 16
    assert action_mask_from_ids(ids, decode, "reference") == [False, False, False, True, True, True, True, False] * 3


def test_unstable_decoder_is_realigned_onto_the_full_decode():
    # a decoder whose output depends on the whole call (a length prefix): intervals are re-aligned onto the
    # full decode; the text is always decode(ids) and every interval lies inside it
    vocab = ["<think>", "</think>", "<action>", "look", "</action>", " x"]

    def decode(ids):
        return f"{len(ids)}:" + "".join(vocab[i] for i in ids)

    ids = [0, 1, 2, 3, 4] + [5] * 20
    text, offsets = incremental_char_offsets(ids, decode)
    assert text == decode(ids) and len(offsets) == len(ids)
    assert all(0 <= s <= e <= len(text) for s, e in offsets)


def test_no_action_gives_all_false():
    for mode in ("serl", "reference"):
        assert action_mask_from_ids([0, 1, 2, 3], _decode_vocab(VOCAB), mode) == [False] * 4


def test_batch_action_masks_modes():
    from serl.batch import action_masks
    from serl.envs.response import ThinkActionFormat
    from serl.types import Step

    vocab = ["<action>", "look", "</action>", "<think>", "</think>"]

    def step(ids):
        return Step(0, "", "", (), [0], ids, [0.0] * len(ids), "", "", False, "", "", 0.0, False)

    steps = [step([3, 4, 0, 1, 2]), step([0, 1, 2])]  # valid; no think tags (invalid)
    decode = _decode_vocab(vocab)
    assert action_masks(steps, decode) == [[False, False, False, True, False], [False, False, False]]
    assert action_masks(steps, decode, ThinkActionFormat(mode="reference")) == [
        [False, False, False, True, False], [False, True, False]
    ]
