"""Executable-action token mask: which response tokens are the action. Standard library only.

SERL reweights the advantage only on the tokens of the executable action (SERL_REFERENCE §6). Three steps:

1. :func:`find_action_spans` — character spans of the action in the decoded response (§6.2):

   1. all non-empty contents of ``<action …>X</action>``, ``[action>X</action>]`` and bare
      ``action>X</action>`` (case-insensitive, dot-all, non-greedy), sorted and merged;
   2. if none: an unclosed ``<action…>`` ⇒ from after the tag to the end of the text (truncated response);
   3. if none: every ``search[…]`` / ``click[…]`` substring (the whole match) — **outside the thinking only**
      (DESIGN §4, deviation below);
   4. if none: no span (the row stays plain GRPO).

2. :func:`incremental_char_offsets` — for every generated id, the interval of characters it added to the
   decoded text when decoding growing prefixes (§6.3's fallback; DESIGN §4 makes it the primary method, so
   the mask is computed from the generated ids themselves, never from a re-tokenisation).

3. :func:`action_token_mask` — a token is an action token iff its interval ``[s, e)`` strictly overlaps a
   span: ``s < span_end and e > span_start`` (§6.3); a token straddling ``>`` and the first action character
   counts; zero-width tokens (e.g. special tokens decoded to "") never count.

:func:`action_mask_from_ids` composes the three.

Deviations from the reference
-----------------------------
* Rule 3 (``search[…]``/``click[…]`` fallback) only looks outside the thinking (DESIGN §4, fixing §10.10):
  outside every ``<think>…</think>`` block, outside an unclosed ``<think>`` (to the end of the text), and —
  for responses whose chat template put ``<think>`` in the prompt — outside the text before an orphan
  ``</think>`` (from the previous thinking block's end, or the start of the text). A match is searched
  within one outside segment, so it never straddles thinking.
* Rule 2 takes the **last** ``<action…>`` opening tag that has no ``</action>`` after it (the reference's
  description does not say which; the last one never extends a mention inside the thinking to the end).
* Rules 1–2 are otherwise as in the reference: an ``<action>`` mention inside the thinking still yields a
  span (§10.10 second half; DESIGN keeps it).
* Offsets come from incremental decoding of the generated ids (fixing §10.9). Tokens whose prefix decode
  ends in an incomplete character (U+FFFD, a multi-byte character split over byte-level tokens) are grouped
  with the following tokens until the character completes; every token of the group gets the interval of
  the group's characters. If decoding a longer prefix rewrites earlier characters (tokenizer clean-up), the
  token's interval starts at the first changed character.
"""

from __future__ import annotations

import bisect
import re
from typing import Callable, Sequence

__all__ = [
    "find_action_spans",
    "incremental_char_offsets",
    "action_token_mask",
    "action_mask_from_ids",
    "thinking_regions",
]

_FLAGS = re.IGNORECASE | re.DOTALL
# §6.2 rule 1: the three patterns; group 1 is the content (tags excluded)
_ACTION_PATTERNS = (
    re.compile(r"<action\b[^>]*>(.*?)</action>", _FLAGS),  # proper <action …>X</action>
    re.compile(r"\[action>(.*?)</action>\]", _FLAGS),  # malformed [action>X</action>]
    re.compile(r"action>(.*?)</action>", _FLAGS),  # bare action>X</action>
)
_ACTION_OPEN = re.compile(r"<action\b[^>]*>", _FLAGS)  # §6.2 rule 2
_ACTION_CLOSE = re.compile(r"</action>", _FLAGS)
_WEBSHOP_ACTION = re.compile(r"(?:search|click)\[[^\]]*\]", _FLAGS)  # §6.2 rule 3 (full match)
_THINK_TAG = re.compile(r"<(/?)think\b[^>]*>", _FLAGS)

_REPLACEMENT_CHAR = "\ufffd"


def _merge(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or touching non-empty ``[start, end)`` spans."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in spans if e > s):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def thinking_regions(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the thinking in ``text``, tags included, sorted and merged.

    A ``<think>`` opens a region closed by the next ``</think>``; an unclosed ``<think>`` runs to the end of
    the text; an orphan ``</think>`` closes a region that began at the end of the previous region (or at the
    start of the text). Nested ``<think>`` tags inside a region are ignored.
    """
    regions: list[tuple[int, int]] = []
    open_at: int | None = None
    for m in _THINK_TAG.finditer(text):
        if m.group(1) == "":  # opening tag
            if open_at is None:
                open_at = m.start()
        elif open_at is not None:  # closing tag of an open block
            regions.append((open_at, m.end()))
            open_at = None
        else:  # orphan closing tag: the thinking started after the previous region
            regions.append((regions[-1][1] if regions else 0, m.end()))
    if open_at is not None:
        regions.append((open_at, len(text)))
    return _merge(regions)


def find_action_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the executable action in ``text`` (SERL_REFERENCE §6.2).

    Returns the sorted, merged spans of the first rule that finds anything (see the module docstring);
    content only (tags excluded) for rules 1–2, the whole ``search[…]``/``click[…]`` match for rule 3;
    ``[]`` if no rule applies.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    # §6.2 rule 1: non-empty inner spans of all three patterns, sorted and merged
    spans = [m.span(1) for pattern in _ACTION_PATTERNS for m in pattern.finditer(text) if m.end(1) > m.start(1)]
    if spans:
        return _merge(spans)
    # §6.2 rule 2: unclosed <action…> ⇒ after the opening tag to the end of the text
    openings = list(_ACTION_OPEN.finditer(text))
    if openings:
        last = openings[-1]
        if _ACTION_CLOSE.search(text, last.end()) is None and last.end() < len(text):
            return [(last.end(), len(text))]
    # §6.2 rule 3 (DESIGN §4: outside the thinking only): search[…] / click[…] substrings
    spans = []
    cursor = 0
    for think_start, think_end in thinking_regions(text) + [(len(text), len(text))]:
        for m in _WEBSHOP_ACTION.finditer(text, cursor, think_start):
            spans.append(m.span())
        cursor = think_end
    return _merge(spans)  # §6.2 rule 4: empty ⇒ no action tokens


def _common_prefix_len(a: str, b: str) -> int:
    if b.startswith(a):
        return len(a)
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def incremental_char_offsets(
    ids: Sequence[int], decode: Callable[[Sequence[int]], str]
) -> tuple[str, list[tuple[int, int]]]:
    """Decoded text of ``ids`` and, per id, the character interval ``[s, e)`` it added (SERL_REFERENCE §6.3).

    Decodes the prefixes ``ids[:1], ids[:2], …, ids[:n]`` — exactly ``n = len(ids)`` calls to ``decode``
    (none for empty ``ids``); the text is the last prefix's decode. Token ``k``'s interval runs from the first
    character in which prefix ``k`` differs from the previous committed prefix to the end of prefix ``k``.
    Tokens whose prefix ends in U+FFFD (an incomplete multi-byte character) are held back and share the
    interval of the token that completes the character (see the module docstring). Intervals are clamped to
    the final text.

    Args:
        ids: generated token ids (list, tuple, or 1-D tensor).
        decode: maps a list of ids to text, e.g. ``lambda x: tok.decode(x, skip_special_tokens=True)``.

    Returns:
        ``(text, offsets)`` with ``len(offsets) == len(ids)``.
    """
    id_list = [int(i) for i in ids]
    n = len(id_list)
    offsets: list[tuple[int, int]] = []
    committed = ""
    pending = 0  # number of held-back tokens at the end of `offsets`
    for k in range(n):
        current = decode(id_list[: k + 1])
        if not isinstance(current, str):
            raise ValueError(f"decode must return str, got {type(current).__name__}")
        if current.endswith(_REPLACEMENT_CHAR) and k < n - 1:
            offsets.append((0, 0))  # provisional span, set when the split character completes
            pending += 1
            continue
        interval = (_common_prefix_len(committed, current), len(current))  # §6.3: growth of the decoded string
        for j in range(k - pending, k):
            offsets[j] = interval
        pending = 0
        offsets.append(interval)
        committed = current
    length = len(committed)
    return committed, [(min(s, length), min(e, length)) for s, e in offsets]


def action_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Per token: does ``[s, e)`` strictly overlap a span (``s < span_end and e > span_start``, §6.3)?

    Zero-width (or inverted) intervals are never marked. ``spans`` need not be sorted or merged.
    """
    merged = _merge(spans)
    ends = [end for _, end in merged]  # increasing, since merged spans are disjoint and sorted
    mask: list[bool] = []
    for s, e in offsets:
        if e <= s:
            mask.append(False)
            continue
        i = bisect.bisect_right(ends, s)  # first span with span_end > s
        mask.append(i < len(merged) and merged[i][0] < e)  # §6.3: s < span_end and e > span_start
    return mask


def action_mask_from_ids(ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> list[bool]:
    """Action-token mask of generated ``ids``: incremental offsets → spans of the text → overlap test."""
    text, offsets = incremental_char_offsets(ids, decode)
    return action_token_mask(offsets, find_action_spans(text))
