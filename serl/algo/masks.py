"""Response format, executable-action spans and the action-token mask. Standard library only, linear time.

The policy answers ``<think>…</think><action>…</action>`` (docs/reference.md §6.1). This module is the one place
that reads that format; the projection (:mod:`serl.envs.projection`), the action-token mask and the
candidate-action text / think removal (:mod:`serl.algo.anchors`) all call it, so they cannot disagree.

Two modes (``mode="serl" | "reference"``, :data:`MODES`):

* ``"serl"`` (default) — one definition, :func:`parse_response`: the executed action is the stripped content
  of the first ``<action>`` and the first ``</action>`` after it (tags in any ASCII case, no attributes); the
  response is valid iff that block exists, every character of the action lies in the env's character set
  (``charset``, default :data:`PRINTABLE_ASCII` for ALFWorld commands), ``<think>`` and ``</think>`` both
  occur, and there is no CJK character (docs/reference.md §8.3 plus the charset rule). The mask
  (:func:`find_action_spans`) marks exactly the characters of that action, and only when the response is
  valid: an invalid response has no action tokens, so its row stays plain GRPO (§6.2 rule 4).
* ``"reference"`` — the authors' span detection, kept as pure functions so ``algorithm=serl_reference`` can
  use it (:func:`reference_action_spans`, docs/reference.md §6.2), and their think removal (§3.2) and
  candidate-action tag (§4.3) (:func:`remove_thinking`, :func:`first_action_block`).

Offsets (:func:`incremental_char_offsets`) come from the generated ids in both modes (docs/design.md §4, fixing
docs/reference.md §10.9); :func:`action_token_mask` applies the §6.3 overlap rule; :func:`action_mask_from_ids`
composes them.

Linear time
-----------
Nothing here backtracks: tags are found once each with fixed-length regexes (``finditer`` over literal tags
is linear), and the non-greedy ``X(.*?)Y`` patterns of the reference are replayed by pairing each opening
occurrence with the first closing occurrence after it (``bisect`` over the sorted closing positions). A
response of 10,000 tags costs milliseconds, not the ~50 s the backtracking regexes took. Offsets decode a
bounded window of ids per token instead of every growing prefix (see :func:`incremental_char_offsets`).

Deviations of ``"serl"`` from the reference (docs/differences.md)
------------------------------------------------------------------------------------
* The mask marks only the action the env executes (the projection's action, §8.3), and only for valid
  responses. The reference marks every action-like span (§6.2): ``<action …>`` with attributes,
  ``[action>``, bare ``action>``, several blocks, an unclosed tag to the end of the text, and any
  ``verb[…]`` command of the env's ``bracket_verbs`` (WebShop's ``search``/``click``) even inside the
  thinking (§10.10) — also in invalid responses, whose env action was the fallback tail (so it reweighted
  tokens the env never executed).
* An action with a character outside ``charset`` (printable ASCII for ALFWorld: no newline, tab, NUL, emoji,
  accented or CJK letter) is invalid; the reference sends it to the env verbatim as a valid command.
* ``</action>`` must follow ``<action>`` (the reference pairs the first ``</action>`` anywhere with the first
  ``<action>``, giving an empty but valid action when the closing tag comes first).
* Tags match in any ASCII case only (``re.ASCII``): the reference lower-cases with Unicode rules, under which
  e.g. U+212A KELVIN SIGN reads as ``k``. Think removal in ``"serl"`` is ASCII-case-insensitive like every
  other tag; the reference's is case-sensitive (§3.2).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

__all__ = [
    "MODES",
    "PRINTABLE_ASCII",
    "THINK_OPEN",
    "THINK_CLOSE",
    "ACTION_OPEN",
    "ACTION_CLOSE",
    "ParsedResponse",
    "parse_response",
    "contains_cjk",
    "first_action_block",
    "remove_thinking",
    "reference_action_spans",
    "find_action_spans",
    "incremental_char_offsets",
    "action_token_mask",
    "action_mask_from_ids",
]

MODES = ("serl", "reference")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ACTION_OPEN, ACTION_CLOSE = "<action>", "</action>"

#: ALFWorld commands' character set: printable ASCII, U+0020 (space) to U+007E (``~``). A suite whose commands
#: use other characters passes its own set as ``charset``; ``None`` allows every character.
PRINTABLE_ASCII: frozenset[str] = frozenset(chr(c) for c in range(0x20, 0x7F))

# "CJK characters" (docs/reference.md §8.3), serl's reading: CJK unified ideographs and extension A,
# compatibility ideographs, Japanese kana and Korean Hangul syllables / jamo. (The reference's own check,
# U+4E00–U+9FFF only, is serl.envs.projection's reference mode.)
_CJK = re.compile(
    "["
    "\u1100-\u11ff"  # Hangul jamo
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30ff"  # Katakana
    "\u3130-\u318f"  # Hangul compatibility jamo
    "\u3400-\u4dbf"  # CJK unified ideographs extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "]"
)

# ------------------------------------------------------------------ tag scanners (fixed length: linear)
_SERL_FLAGS = re.IGNORECASE | re.ASCII  # any ASCII case; no Unicode case folding
_REF_FLAGS = re.IGNORECASE | re.DOTALL  # the reference's span patterns (§6.2) and candidate tag (§4.3)

_SERL_ACTION_OPEN = re.compile(re.escape(ACTION_OPEN), _SERL_FLAGS)
_SERL_ACTION_CLOSE = re.compile(re.escape(ACTION_CLOSE), _SERL_FLAGS)
_SERL_THINK_OPEN = re.compile(re.escape(THINK_OPEN), _SERL_FLAGS)
_SERL_THINK_CLOSE = re.compile(re.escape(THINK_CLOSE), _SERL_FLAGS)

# §4.3: the candidate-action tag is r"<action>(.*?)</action>" with IGNORECASE | DOTALL.
_REF_ACTION_OPEN = re.compile(re.escape(ACTION_OPEN), _REF_FLAGS)
_REF_ACTION_CLOSE = re.compile(re.escape(ACTION_CLOSE), _REF_FLAGS)
# §3.2: think removal r"<think>.*?</think>\s*" is case-SENSITIVE (DOTALL only).
_REF_THINK_OPEN = re.compile(re.escape(THINK_OPEN))
_REF_THINK_CLOSE = re.compile(re.escape(THINK_CLOSE))
_TRAILING_SPACE = re.compile(r"\s*")  # "\s*" after a removed thinking block (Unicode whitespace)

# §6.2 rule 1, the reference's three patterns, replayed as (opening token, content start offset):
#   r"<action\b[^>]*>(.*?)</action>"   content starts after the first ">" at or after the opening's end
#   r"\[action>(.*?)</action>\]?"       content starts after "[action>"; an optional "]" is consumed
#   r"action>(.*?)</action>"            content starts after "action>"
# all IGNORECASE | DOTALL, non-greedy. Rule 2: r"<action\b[^>]*>(.*)$" (search: the FIRST opening tag).
# Rule 3: r"(?:search|click)\[[^\]\n]*\]" (IGNORECASE; no newline inside the brackets), anywhere in the text;
# the verbs are the env's (``bracket_verbs``; WebShop's search/click), so nothing here names an environment.
# The fixed-length opening tokens below carry the same flags, so they match exactly the characters the
# reference's patterns match (e.g. "<ACTION", "<actıon" with a dotless i under Unicode IGNORECASE).
_REF_P1_OPEN = re.compile(r"<action\b", _REF_FLAGS)
_REF_P2_OPEN = re.compile(r"\[action>", _REF_FLAGS)
_REF_P3_OPEN = re.compile(r"action>", _REF_FLAGS)
_GT = re.compile(">")
_WEB_STOP = re.compile(r"[\]\n]")

_REPLACEMENT_CHAR = "\ufffd"
_CONTEXT_TOKENS = 4  # committed tokens of left context kept in the decode window
_MAX_PENDING = 16  # longest run of U+FFFD-ending tokens held back (a UTF-8 character needs at most 3)


def _check_text(text: object, name: str = "text") -> None:
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a str, got {type(text).__name__}")


def check_response_format(mode: object) -> str:
    """``mode`` if it is one of :data:`MODES` (the response-format rules: serl's or the reference's), else a
    ``ValueError`` naming the allowed ones."""
    if mode not in MODES:
        raise ValueError(f"response_format must be one of {', '.join(MODES)}, got {mode!r}")
    return str(mode)


_check_mode = check_response_format


def _check_charset(charset: object) -> None:
    if charset is not None and not isinstance(charset, Container):
        raise TypeError(f"charset must be a container of characters or None, got {type(charset).__name__}")


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


def _next_finder(text: str, pattern: re.Pattern[str]) -> Callable[[int], int]:
    """``find(i)``: start of the first match of ``pattern`` at or after ``i`` (-1 if none).

    Queries must come with non-decreasing ``i``; a cached answer is reused while it is still ahead, so the
    text is scanned once in total.
    """
    last = [-2]  # -2: nothing cached yet

    def find(i: int) -> int:
        r = last[0]
        if r == -1 or r >= i:
            return r
        m = pattern.search(text, i)
        last[0] = m.start() if m is not None else -1
        return last[0]

    return find


def contains_cjk(text: str) -> bool:
    """True if ``text`` has at least one CJK character (serl's ranges, module constant ``_CJK``)."""
    return _CJK.search(text) is not None


# ------------------------------------------------------------------ shared tag rules


def first_action_block(text: str, mode: str = "serl") -> tuple[int, int] | None:
    """Content span ``[start, end)`` of the first ``<action>`` and the first ``</action>`` after it; ``None``.

    Tags are literal, without attributes. ``"serl"``: any ASCII case; ``"reference"``: the §4.3 candidate
    pattern ``<action>(.*?)</action>`` (Unicode IGNORECASE). A first opening tag with no closing tag after it
    means no block at all (no later opening tag can have one either). Content is not stripped.
    """
    _check_text(text)
    _check_mode(mode)
    rx_open, rx_close = (
        (_SERL_ACTION_OPEN, _SERL_ACTION_CLOSE) if mode == "serl" else (_REF_ACTION_OPEN, _REF_ACTION_CLOSE)
    )
    opening = rx_open.search(text)
    if opening is None:
        return None
    closing = rx_close.search(text, opening.end())
    if closing is None:
        return None
    return opening.end(), closing.start()


def remove_thinking(text: str, mode: str = "serl") -> str:
    """Remove every ``<think>…</think>`` block and the whitespace after it (docs/reference.md §3.2).

    The reference's ``re.sub(r"<think>.*?</think>\\s*", "", text, flags=re.DOTALL)`` replayed in linear time:
    each ``<think>`` not already removed is paired with the first ``</think>`` after it; the block and the
    following (Unicode) whitespace go; an unclosed ``<think>`` stays. Tags: case-sensitive in
    ``"reference"`` (as §3.2's pattern has no IGNORECASE), any ASCII case in ``"serl"``.
    """
    _check_text(text)
    _check_mode(mode)
    rx_open, rx_close = (_SERL_THINK_OPEN, _SERL_THINK_CLOSE) if mode == "serl" else (_REF_THINK_OPEN, _REF_THINK_CLOSE)
    closes = [m.start() for m in rx_close.finditer(text)]
    pieces: list[str] = []
    pos = 0  # end of the last removed block: the text resumes here
    ci = 0
    for m in rx_open.finditer(text):
        if m.start() < pos:  # inside a removed block
            continue
        ci = bisect.bisect_left(closes, m.end(), ci)
        if ci == len(closes):  # no "</think>" after this opening: none after any later one either
            break
        end = _TRAILING_SPACE.match(text, closes[ci] + len(THINK_CLOSE)).end()
        pieces.append(text[pos : m.start()])
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


# ------------------------------------------------------------------ serl: one definition


@dataclass(frozen=True)
class ParsedResponse:
    """What the env executes for one response, and whether the response is valid (``mode="serl"``).

    * ``action`` — the executed command: the stripped, lower-cased content of the first
      ``<action>…</action>`` block; ``None`` when there is no such block or its content has a character
      outside the charset (the projection then sends its fallback, :mod:`serl.envs.projection`).
    * ``span`` — ``[start, end)`` of that content in the ORIGINAL text (``text[start:end].lower() ==
      action``); ``None`` exactly when ``action`` is.
    * ``valid`` — format validity (docs/reference.md §8.3): ``problems`` is empty.
    * ``problems`` — what makes it invalid, in this order: ``"no_action_block"``, ``"charset"``,
      ``"no_think"``, ``"cjk"``. A response can have an executed action and still be invalid
      (``"no_think"`` / ``"cjk"``: the reference executes the action and penalises the step).
    """

    action: str | None
    span: tuple[int, int] | None
    valid: bool
    problems: tuple[str, ...]


def parse_response(text: str, charset: Container[str] | None = PRINTABLE_ASCII) -> ParsedResponse:
    """Parse one decoded response: the single definition of the format behind projection, mask and candidates.

    Rules (docs/reference.md §8.3 with serl's charset rule; module docstring for the deviations):

    1. the action block: the first ``<action>`` and the first ``</action>`` after it, any ASCII case;
       missing ⇒ ``"no_action_block"``;
    2. the action: the block's content stripped of (Unicode) whitespace, lower-cased; a character outside
       ``charset`` in it (before or after lower-casing) ⇒ ``"charset"`` and no executed action;
    3. ``<think>`` and ``</think>`` must each occur somewhere (any ASCII case), else ``"no_think"``;
    4. any CJK character anywhere ⇒ ``"cjk"``.

    Args:
        text: the decoded response of one step.
        charset: the characters an env command may contain (default :data:`PRINTABLE_ASCII`); ``None``
            allows any character.
    """
    _check_text(text)
    _check_charset(charset)
    problems: list[str] = []
    action: str | None = None
    span: tuple[int, int] | None = None
    block = first_action_block(text, "serl")  # rule 1
    if block is None:
        problems.append("no_action_block")
    else:
        inner = text[block[0] : block[1]]  # rule 2: strip, then lower-case (lower-casing keeps whitespace)
        start = block[0] + (len(inner) - len(inner.lstrip()))
        end = block[1] - (len(inner) - len(inner.rstrip()))
        raw = text[start:end] if end > start else ""
        lowered = raw.lower()
        if charset is not None and any(ch not in charset for ch in raw + lowered):
            problems.append("charset")
        else:
            action, span = lowered, (start, start + len(raw))
    if _SERL_THINK_OPEN.search(text) is None or _SERL_THINK_CLOSE.search(text) is None:  # rule 3
        problems.append("no_think")
    if contains_cjk(text):  # rule 4
        problems.append("cjk")
    return ParsedResponse(action=action, span=span, valid=not problems, problems=tuple(problems))


# ------------------------------------------------------------------ reference spans (§6.2)


def _paired_spans(
    text: str,
    opening: re.Pattern[str],
    content_start: Callable[[re.Match[str]], int],
    closes: list[int],
    optional_suffix: str = "",
) -> list[tuple[int, int]]:
    """Content spans of the matches ``finditer`` returns for a non-greedy ``OPEN(.*?)</action>`` pattern.

    ``opening`` finds the fixed-length start of the pattern, ``content_start(m)`` where the content of an
    opening found at ``m`` starts (-1: the opening can never complete), ``closes`` the sorted starts of
    ``</action>``. The leftmost opening at or after the previous match's end takes the first ``</action>``
    that starts at or after its content; if there is none, no later opening has one either, so the scan
    stops. The next match is searched from the closing tag's end (plus ``optional_suffix`` when it follows,
    like ``\\]?``). One ``search`` per match: the text is scanned once.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    ci = 0
    while True:
        m = opening.search(text, pos)
        if m is None:
            break
        content = content_start(m)
        if content < 0:
            break
        ci = bisect.bisect_left(closes, content, ci)
        if ci == len(closes):
            break
        spans.append((content, closes[ci]))
        pos = closes[ci] + len(ACTION_CLOSE)
        if optional_suffix and text.startswith(optional_suffix, pos):
            pos += len(optional_suffix)
    return spans


def _bracket_opening(verbs: Sequence[str]) -> re.Pattern[str] | None:
    """``(?:verb1|verb2)\\[`` (IGNORECASE) for the env's bracket verbs, or None when it has none."""
    if isinstance(verbs, str):
        raise ValueError(f"bracket_verbs must be a sequence of verbs, got the string {verbs!r}")
    if not verbs:
        return None
    return re.compile("(?:" + "|".join(re.escape(v) for v in verbs) + r")\[", re.IGNORECASE)


def reference_action_spans(text: str, bracket_verbs: Sequence[str] = ()) -> list[tuple[int, int]]:
    """Action spans exactly as the reference finds them (docs/reference.md §6.2, ``RT :: _find_action_spans``).

    1. the non-empty contents of all matches of ``<action\\b[^>]*>(.*?)</action>``,
       ``\\[action>(.*?)</action>\\]?`` and ``action>(.*?)</action>`` (IGNORECASE, DOTALL), sorted and merged
       (touching spans merge);
    2. if none: the FIRST ``<action\\b[^>]*>`` ⇒ from after it to the end of the text (if non-empty);
    3. if none: every ``verb[…]`` of ``bracket_verbs`` (the reference's ``search[…]`` / ``click[…]``; no
       ``]`` or newline inside the brackets), whole match, anywhere — including inside the thinking (§10.10);
    4. if none: ``[]``.

    Same result as those regexes, in linear time (module docstring).
    """
    _check_text(text)
    closes = [m.start() for m in _REF_ACTION_CLOSE.finditer(text)]
    spans: list[tuple[int, int]] = []
    if closes:  # §6.2 rule 1
        next_gt = _next_finder(text, _GT)

        def after_first_gt(m: re.Match[str]) -> int:  # r"<action\b[^>]*>": content after the first ">"
            gt = next_gt(m.end())
            return gt + 1 if gt != -1 else -1

        spans += _paired_spans(text, _REF_P1_OPEN, after_first_gt, closes)
        spans += _paired_spans(text, _REF_P2_OPEN, _match_end, closes, "]")
        spans += _paired_spans(text, _REF_P3_OPEN, _match_end, closes)
        merged = _merge(spans)  # drops empty contents
        if merged:
            return merged
    # §6.2 rule 2: the first opening tag (re.search), content to the end of the text
    first = _REF_P1_OPEN.search(text)
    if first is not None:
        gt = text.find(">", first.end())
        if gt != -1 and gt + 1 < len(text):
            return [(gt + 1, len(text))]
    # §6.2 rule 3: verb[...] anywhere; the bracket content may not hold "]" or a newline
    opening = _bracket_opening(bracket_verbs)
    web: list[tuple[int, int]] = []
    pos = 0
    while opening is not None:
        m = opening.search(text, pos)
        if m is None:
            break
        stop = _WEB_STOP.search(text, m.end())
        if stop is None:  # neither "]" nor a newline ahead: no later opening can match either
            break
        if stop.group() == "]":
            web.append((m.start(), stop.end()))
        # after a match, or a newline: every opening that starts before `stop` meets the same stop
        pos = stop.end()
    return _merge(web)  # §6.2 rule 4: empty ⇒ no action tokens


def _match_end(m: re.Match[str]) -> int:
    return m.end()


def find_action_spans(
    text: str,
    mode: str = "serl",
    charset: Container[str] | None = PRINTABLE_ASCII,
    bracket_verbs: Sequence[str] = (),
) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the executable action in ``text`` — what the mask marks.

    ``"serl"``: ``[parse_response(text, charset).span]`` when the response is valid and the action is
    non-empty, else ``[]`` (module docstring). ``"reference"``: :func:`reference_action_spans` with the env's
    ``bracket_verbs`` (``charset`` unused; ``bracket_verbs`` unused in ``"serl"``).
    """
    _check_text(text)
    _check_mode(mode)
    if mode == "reference":
        return reference_action_spans(text, bracket_verbs)
    parsed = parse_response(text, charset)
    if not parsed.valid or parsed.span is None or parsed.span[1] <= parsed.span[0]:
        return []  # §6.2 rule 4: no action tokens, the row stays plain GRPO
    return [parsed.span]


# ------------------------------------------------------------------ token offsets (§6.3, docs/design.md §4)


def _common_prefix_len(a: str, b: str) -> int:
    if b.startswith(a):
        return len(a)
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix_len(a: str, b: str, limit: int) -> int:
    i = 0
    while i < limit and a[-1 - i] == b[-1 - i]:
        i += 1
    return i


def _realign(offsets: list[tuple[int, int]], old: str, new: str) -> list[tuple[int, int]]:
    """Map intervals of ``old`` onto ``new`` that differs from it in one middle region.

    Characters of the common prefix keep their position, those of the common suffix shift by
    ``len(new) - len(old)``; a boundary inside the differing region goes to that region's edge in ``new``.
    """
    p = _common_prefix_len(old, new)
    s = _common_suffix_len(old, new, min(len(old), len(new)) - p)
    old_tail, new_tail, shift = len(old) - s, len(new) - s, len(new) - len(old)

    def start(x: int) -> int:
        return x if x <= p else (x + shift if x >= old_tail else p)

    def end(x: int) -> int:
        return x if x <= p else (x + shift if x >= old_tail else new_tail)

    out = []
    for a, b in offsets:
        a2, b2 = start(a), end(b)
        out.append((a2, max(a2, b2)))
    return out


def incremental_char_offsets(
    ids: Sequence[int], decode: Callable[[Sequence[int]], str]
) -> tuple[str, list[tuple[int, int]]]:
    """Decoded text of ``ids`` and, per id, the character interval ``[s, e)`` it added (docs/reference.md §6.3).

    Token ``k``'s interval runs from the first character in which the decoded text after token ``k`` differs
    from the text after the previous committed token, to the end of the text after token ``k``. Tokens
    whose text ends in U+FFFD (a multi-byte character split over byte-level tokens) are held back and share
    the interval of the token that completes the character (at most 16 in a row; a longer run is committed
    as it is). Intervals are clamped to the final text, which is ``decode(ids)``.

    Bounded window, as incremental detokenizers do: instead of decoding every growing prefix (quadratic),
    token ``k`` decodes ``ids[start:k + 1]`` and compares it with the cached ``decode(ids[start:read])``, where
    ``read`` ends the committed tokens and ``start`` trails it by 4 to 8 committed tokens (a committed
    boundary, so never inside a character). The left context keeps a SentencePiece decoder's leading-space
    rule and clean-up rewrites such as ``" 's" -> "'s"`` identical to a full decode; the result equals the
    growing-prefix definition whenever decoding is stable under added left context (byte-level BPE,
    SentencePiece), and also when a decoder prepends context-dependent text to every call (recognised when
    the window slides). About ``len(ids) * 1.25 + 1`` decode calls of at most ~25 ids each, plus one full
    decode that checks the assembled text; if a decoder still disagrees, intervals are re-aligned onto the
    full decode through the common prefix and suffix (approximate inside the region that differs).

    Args:
        ids: generated token ids (list, tuple, or 1-D tensor).
        decode: maps a list of ids to text, e.g. ``lambda x: tok.decode(x, skip_special_tokens=True)``.

    Returns:
        ``(text, offsets)`` with ``text == decode(ids)`` and ``len(offsets) == len(ids)``.
    """
    id_list = [int(i) for i in ids]
    n = len(id_list)
    if n == 0:
        return "", []
    offsets: list[tuple[int, int]] = []
    frozen: list[str] = []  # committed text before the window
    frozen_len = 0
    start = 0  # window start (a committed boundary)
    window = ""  # decode(id_list[start:read])
    lead = 0  # leading characters of `window` that are not text (a decoder's context-dependent prefix)
    boundaries = [0]  # committed boundaries >= start (token indices)
    pending = 0  # held-back tokens at the end of `offsets`
    exact = True
    for k in range(n):
        current = decode(id_list[start : k + 1])
        if not isinstance(current, str):
            raise ValueError(f"decode must return str, got {type(current).__name__}")
        if current.endswith(_REPLACEMENT_CHAR) and k < n - 1 and pending < _MAX_PENDING:
            offsets.append((0, 0))  # provisional, set when the split character completes
            pending += 1
            continue
        # §6.3 (docs/design.md §4): the characters this token added (from the first rewritten one, if any)
        base = frozen_len - lead
        cp = len(window) if current.startswith(window) else _common_prefix_len(window, current)
        interval = (base + max(lead, cp), base + max(lead, len(current))) if lead else (base + cp, base + len(current))
        if pending:
            for j in range(k - pending, k):
                offsets[j] = interval
            pending = 0
        offsets.append(interval)
        window = current
        read = k + 1
        boundaries.append(read)
        if read - start >= 2 * _CONTEXT_TOKENS:  # slide the window to a boundary >= 4 tokens back
            i = bisect.bisect_right(boundaries, read - _CONTEXT_TOKENS) - 1
            new_start = boundaries[i]
            if new_start > start:
                tail = decode(id_list[new_start:read])
                cut = len(window) - len(tail)
                split = offsets[new_start][0] - base  # where token new_start's text begins in `window`
                if window.endswith(tail) and cut >= lead:  # stable under left context (the usual case)
                    new_lead = 0
                elif lead <= split <= len(window) and tail.endswith(window[split:]):
                    cut, new_lead = split, len(tail) - (len(window) - split)  # the decoder adds a prefix
                else:  # neither: re-aligned onto the full decode at the end
                    cut, new_lead, exact = max(lead, cut), 0, False
                frozen.append(window[lead:cut])
                frozen_len += cut - lead
                window, start, lead = tail, new_start, new_lead
                del boundaries[:i]
    text = "".join(frozen) + window[lead:]
    full = decode(id_list)
    if not isinstance(full, str):
        raise ValueError(f"decode must return str, got {type(full).__name__}")
    if full != text:
        exact = False
    if not exact:
        offsets = _realign(offsets, text, full)
    length = len(full)
    if any(e > length for _, e in offsets):  # a later rewrite shortened the text
        offsets = [(min(s, length), min(e, length)) for s, e in offsets]
    return full, offsets


def action_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Per token: does ``[s, e)`` strictly overlap a span (``s < span_end and e > span_start``, §6.3)?

    Zero-width (or inverted) intervals are never marked; a token straddling a tag's ``>`` and the first
    action character counts. ``spans`` need not be sorted or merged.
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


def action_mask_from_ids(
    ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
    mode: str = "serl",
    charset: Container[str] | None = PRINTABLE_ASCII,
    bracket_verbs: Sequence[str] = (),
) -> list[bool]:
    """Action-token flags of generated ``ids`` (``len(ids)`` booleans): offsets → spans → overlap test.

    ``mode="serl"``: the tokens overlapping the action the env executes, none for an invalid response
    (``charset`` must be the one the env's projection uses); ``mode="reference"``: the §6.2 spans.
    """
    _check_mode(mode)
    text, offsets = incremental_char_offsets(ids, decode)
    return action_token_mask(offsets, find_action_spans(text, mode, charset, bracket_verbs))
