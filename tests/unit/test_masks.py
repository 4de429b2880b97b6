"""serl.algo.masks: action spans per §6.2 rule (with the DESIGN §4 think deviation) and hand-made vocabularies."""

from __future__ import annotations

import pytest
import torch

from serl.algo.masks import (
    action_mask_from_ids,
    action_token_mask,
    find_action_spans,
    incremental_char_offsets,
    thinking_regions,
)


def _contents(text: str) -> list[str]:
    return [text[s:e] for s, e in find_action_spans(text)]


# ---------------------------------------------------------------- find_action_spans (§6.2)


def test_rule1_proper_tags():
    text = "<think>go to desk</think><action>go to desk 1</action>"
    # 7 + 10 + 8 + 8 = 33 characters before the content, 12 content characters
    assert find_action_spans(text) == [(33, 45)]
    assert _contents(text) == ["go to desk 1"]


def test_rule1_case_insensitive_and_attributes():
    assert find_action_spans("<Action id=1>look</ACTION>") == [(13, 17)]


def test_rule1_malformed_bracket():
    assert find_action_spans("[action>look</action>]") == [(8, 12)]


def test_rule1_bare():
    assert find_action_spans("I do action>open drawer 1</action>") == [(12, 25)]


def test_rule1_two_action_blocks():
    # "<action>a</action>" = 18 chars, " and " → 23, "<action>" → 31
    assert find_action_spans("<action>a</action> and <action>bc</action>") == [(8, 9), (31, 33)]


def test_rule1_multiline_content():
    text = "<action>go to\ndesk 1</action>"
    assert _contents(text) == ["go to\ndesk 1"]


def test_rule1_beats_webshop_fallback():
    assert find_action_spans("<think>search[a]</think><action>search[x]</action>") == [(32, 41)]


def test_rule1_mention_inside_thinking_kept_like_reference():
    # §10.10 second half: an <action> block inside the thinking still yields a span (DESIGN keeps it)
    text = "<think>use <action>x</action></think><action>go</action>"
    assert _contents(text) == ["x", "go"]


def test_rule2_unclosed_action_runs_to_end():
    text = "<think>hmm</think><action>go to sh"
    assert find_action_spans(text) == [(26, 34)]


def test_rule2_takes_last_unclosed_opening():
    # "<think>format: " = 15, "<action>" → 23, "</think>" → 31, "<action>" → 39
    assert find_action_spans("<think>format: <action></think><action>go") == [(39, 41)]


def test_rule3_webshop_fallback_outside_think():
    # think region: 7 + 23 + 8 = 38 characters; "search[blue shoes]" is 18
    text = "<think>maybe search[red shoes]</think>search[blue shoes]"
    assert find_action_spans(text) == [(38, 56)]
    assert _contents("click[Buy Now] then search[x]") == ["click[Buy Now]", "search[x]"]


def test_rule3_never_inside_think():
    assert find_action_spans("<think>I will click[buy now]</think>") == []
    assert find_action_spans("<think>I will click[buy now]") == []  # unclosed think (truncated)
    assert _contents("<think>x</think>click[a] <think>click[b]") == ["click[a]"]
    # orphan </think> (template put <think> in the prompt): the text before it is thinking
    assert find_action_spans("click[back]</think>click[buy now]") == [(19, 33)]
    # a match cannot straddle a thinking block
    assert find_action_spans("search[a <think>b]</think> c") == []


def test_no_action():
    assert find_action_spans("I don't know what to do.") == []
    assert find_action_spans("") == []
    assert find_action_spans("<action></action>") == []  # empty content, closed ⇒ nothing


def test_thinking_regions():
    assert thinking_regions("<think>a</think>b<think>c") == [(0, 16), (17, 25)]
    assert thinking_regions("a</think>b") == [(0, 9)]
    assert thinking_regions("no thinking") == []


def test_bad_text():
    with pytest.raises(ValueError, match="text must be a str"):
        find_action_spans(None)  # type: ignore[arg-type]


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
    assert find_action_spans(text) == [(28, 40)]
    # "go"/" to" inside the thinking are not action tokens; the tags are not; "go to", " desk 1" are
    expected = [False, False, False, False, False, True, True, False]
    assert action_mask_from_ids(ids, _decode_vocab(VOCAB)) == expected
    assert action_mask_from_ids(torch.tensor(ids), _decode_vocab(VOCAB)) == expected


def test_boundary_straddling_piece_and_eos():
    vocab = ["<action", ">go", " to desk 1", "</", "action>", ""]  # id 5: EOS decoded to "" (skipped special)
    decode = _decode_vocab(vocab)
    text, offsets = incremental_char_offsets([0, 1, 2, 3, 4, 5], decode)
    assert text == "<action>go to desk 1</action>"
    assert offsets == [(0, 7), (7, 10), (10, 20), (20, 22), (22, 29), (29, 29)]
    # ">go" straddles the tag end and the first action character ⇒ marked (§6.3); EOS is zero-width
    assert action_mask_from_ids([0, 1, 2, 3, 4, 5], decode) == [False, True, True, False, False, False]


def test_repeated_ids_and_thinking_fallback():
    vocab = ["<think>", "click[", "buy now", "]", "</think>"]
    decode = _decode_vocab(vocab)
    # click[buy now] appears in the thinking and again after it: only the second copy is marked
    ids = [0, 1, 2, 3, 4, 1, 2, 3]
    assert action_mask_from_ids(ids, decode) == [False, False, False, False, False, True, True, True]
    # only inside the thinking ⇒ nothing marked
    assert action_mask_from_ids([0, 1, 2, 3, 4], decode) == [False] * 5


def test_multibyte_character_split_over_byte_tokens():
    byte_vocab = [b"<action>", b"caf", b"\xc3", b"\xa9", b"</action>", b"<think>", b"</think>"]

    def decode(ids):
        return b"".join(byte_vocab[i] for i in ids).decode("utf-8", errors="replace")

    ids = [0, 1, 2, 3, 4]
    text, offsets = incremental_char_offsets(ids, decode)
    assert text == "<action>café</action>"
    # b"\xc3" alone decodes to U+FFFD: held back, then shares "é" = [11, 12) with b"\xa9"
    assert offsets == [(0, 8), (8, 11), (11, 12), (11, 12), (12, 21)]
    assert action_mask_from_ids(ids, decode) == [False, True, True, True, False]
    # the same character inside the thinking: neither byte is an action token
    assert action_mask_from_ids([5, 2, 3, 6, 0, 1, 4], decode) == [False] * 4 + [False, True, False]
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
    assert action_mask_from_ids([0, 1, 2, 3, 4], decode) == [False, True, True, True, False]


def test_linear_number_of_decode_calls():
    calls = []

    def decode(ids):
        calls.append(len(ids))
        return "".join(VOCAB[i] for i in ids)

    ids = list(range(len(VOCAB))) * 5
    text, offsets = incremental_char_offsets(ids, decode)
    assert len(calls) == len(ids) and len(offsets) == len(ids)
    assert text == "".join(VOCAB) * 5
    calls.clear()
    assert incremental_char_offsets([], decode) == ("", [])
    assert calls == []


def test_no_action_gives_all_false():
    assert action_mask_from_ids([0, 1, 2, 3], _decode_vocab(VOCAB)) == [False] * 4
