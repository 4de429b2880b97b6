"""Action projection and format validity (docs/reference.md §8.3).

The policy answers in the format ``<think>...</think><action>...</action>`` (docs/reference.md §6.1). The
projection turns that free text into the command the environment receives and a validity flag that the
trainer uses for the invalid-action penalty (−0.1 on the step's score, docs/reference.md §1.4).

``mode="serl"`` (default) reads the response with :func:`serl.algo.masks.parse_response`, the same
definition the action-token mask uses, so the mask marks exactly the characters of the command sent here:

1. action = the stripped, lower-cased content of the first ``<action>`` and the first ``</action>`` after
   it (tags in any ASCII case); valid;
2. if there is no such block, or the action has a character outside ``charset`` (printable ASCII for
   ALFWorld, :data:`ALFWORLD_CHARSET`): the env receives the last ``fallback_chars`` characters of the
   lower-cased response (30 for ALFWorld, 20 for WebShop) with every character outside ``charset`` dropped,
   invalid — the env then answers with its no-op (ALFWorld's failed-command message, an unchanged page);
3. invalid as well if ``<think>`` or ``</think>`` is missing, or if the response contains a CJK character
   (the action of rule 1 is still sent, as in the reference).

``mode="reference"`` is the authors' projection, literally (:func:`reference_projection`).

Admissibility is *not* checked here: a well-formed but inadmissible command is valid (no penalty) and
simply gets the env's no-op answer (docs/reference.md §8.3).

Deviations of ``"serl"`` from the reference (docs/differences.md): an action with a
character outside the charset (newline, tab, NUL, emoji, accented or CJK letter) is invalid and never
reaches the env (the reference sends it verbatim as a valid command, and sends the fallback tail
unfiltered); a ``</action>`` before the first ``<action>`` does not close it (the reference then extracts the
empty string and calls it valid); ``<think>`` tags match in any ASCII case; CJK covers kana, Hangul and the
ideograph extensions, not only U+4E00–U+9FFF.
"""

from __future__ import annotations

import re
from collections.abc import Container

from serl.algo.masks import (
    ACTION_CLOSE,
    ACTION_OPEN,
    MODES,
    PRINTABLE_ASCII,
    check_response_format,
    THINK_CLOSE,
    THINK_OPEN,
    contains_cjk,
    parse_response,
)

__all__ = [
    "ACTION_OPEN",
    "ACTION_CLOSE",
    "THINK_OPEN",
    "THINK_CLOSE",
    "ALFWORLD_CHARSET",
    "contains_cjk",
    "project_action",
    "reference_projection",
]

#: Characters an ALFWorld command may contain: printable ASCII (U+0020–U+007E).
ALFWORLD_CHARSET = PRINTABLE_ASCII

# The reference's CJK check (docs/reference.md §8.3: U+4E00–U+9FFF only).
_REFERENCE_CJK = re.compile("[\u4e00-\u9fff]")


def _check_args(response: object, fallback_chars: object) -> None:
    if not isinstance(response, str):
        raise TypeError(f"response must be str, got {type(response).__name__}")
    if not isinstance(fallback_chars, int) or isinstance(fallback_chars, bool) or fallback_chars < 0:
        raise ValueError(f"fallback_chars must be an int >= 0, got {fallback_chars!r}")


def reference_projection(response: str, fallback_chars: int) -> tuple[str, bool]:
    """The authors' projection, literally (docs/reference.md §8.3, ``alfworld_projection``).

    Lower-case the whole response; action = the text between the first ``<action>`` and the first
    ``</action>`` of the lower-cased text, stripped (empty when the closing tag comes first), valid; if
    either tag is missing, the last ``fallback_chars`` characters of the lower-cased response, invalid.
    Invalid as well when ``<think>`` or ``</think>`` is missing or a character in U+4E00–U+9FFF occurs.

    As docs/reference.md §8.3 states (from the reference's env package), the think tags and the CJK range are
    tested on the ORIGINAL (not lower-cased) response, so ``<THINK>`` does
    not count, and only U+4E00–U+9FFF counts as CJK.
    """
    _check_args(response, fallback_chars)
    text = response.lower()
    start = text.find(ACTION_OPEN)
    end = text.find(ACTION_CLOSE)
    if start == -1 or end == -1:
        action = text[-fallback_chars:] if fallback_chars > 0 else ""
        valid = False
    else:
        action = text[start + len(ACTION_OPEN) : end].strip()
        valid = True
    if response.find(THINK_OPEN) == -1 or response.find(THINK_CLOSE) == -1:
        valid = False
    if _REFERENCE_CJK.search(response) is not None:
        valid = False
    return action, valid


def project_action(
    response: str,
    fallback_chars: int,
    *,
    mode: str = "serl",
    charset: Container[str] | None = ALFWORLD_CHARSET,
) -> tuple[str, bool]:
    """Map a raw policy response to ``(env_action, valid)`` (docs/reference.md §8.3; module docstring).

    Args:
        response: the decoded response text of one step.
        fallback_chars: how many trailing characters the env receives when there is no executable action
            (30 for ALFWorld, 20 for WebShop). Must be >= 0.
        mode: ``"serl"`` (one definition with the action-token mask) or ``"reference"``.
        charset: characters an env command may contain (``"serl"`` only); ``None`` allows all. The mask
            must be computed with the same set (``serl.algo.masks.action_mask_from_ids(..., charset=...)``).

    Returns:
        ``(action, valid)``: ``action`` is lower-case text; ``valid`` is the format-validity flag.
    """
    _check_args(response, fallback_chars)
    check_response_format(mode)
    if mode == "reference":
        return reference_projection(response, fallback_chars)
    parsed = parse_response(response, charset)
    if parsed.action is not None:  # rules 1 and 3
        return parsed.action, parsed.valid
    tail = response.lower()[-fallback_chars:] if fallback_chars > 0 else ""  # rule 2
    if charset is not None:
        tail = "".join(ch for ch in tail if ch in charset)
    return tail, False
