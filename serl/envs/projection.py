"""Action projection and format validity (SERL_REFERENCE §8.3).

The policy answers in the format ``<think>...</think><action>...</action>`` (SERL_REFERENCE §6.1). The
projection turns that free text into the command the environment receives and a validity flag that the
trainer uses for the invalid-action penalty (−0.1 on the step's score, SERL_REFERENCE §1.4):

1. lower-case the whole response;
2. action = the text between the first ``<action>`` and the first ``</action>``, stripped; valid;
3. if either tag is missing: action = the last ``fallback_chars`` characters of the lower-cased response
   (30 for ALFWorld, 20 for WebShop), invalid — the env then answers "Nothing happens." / no-op;
4. invalid as well if ``<think>`` or ``</think>`` is missing, or if the response contains CJK characters.

Admissibility is *not* checked here: a well-formed but inadmissible command is valid (no penalty) and
simply gets "Nothing happens." from the env (SERL_REFERENCE §8.3).

Two literal consequences of rule 2, kept on purpose because they are what the reference does: when the
first ``</action>`` comes before the first ``<action>`` the extracted action is the empty string (still
valid), and tags are matched on the lower-cased text, so ``<ACTION>`` counts as ``<action>``.
"""

from __future__ import annotations

import re

ACTION_OPEN = "<action>"
ACTION_CLOSE = "</action>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# "CJK characters" (SERL_REFERENCE §8.3): CJK unified ideographs and extension A, compatibility ideographs,
# Japanese kana and Korean Hangul syllables / jamo. The reference's own regex covers at least U+4E00–U+9FFF.
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


def contains_cjk(text: str) -> bool:
    """True if ``text`` has at least one CJK character (ranges above)."""
    return _CJK.search(text) is not None


def project_action(response: str, fallback_chars: int) -> tuple[str, bool]:
    """Map a raw policy response to ``(env_action, valid)`` exactly as SERL_REFERENCE §8.3.

    Args:
        response: the decoded response text of one step.
        fallback_chars: how many trailing characters the env receives when an action tag is missing
            (30 for ALFWorld, 20 for WebShop). Must be >= 0.

    Returns:
        ``(action, valid)``: ``action`` is lower-case text; ``valid`` is the format-validity flag.
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be str, got {type(response).__name__}")
    if not isinstance(fallback_chars, int) or isinstance(fallback_chars, bool) or fallback_chars < 0:
        raise ValueError(f"fallback_chars must be an int >= 0, got {fallback_chars!r}")

    text = response.lower()  # rule 1
    start = text.find(ACTION_OPEN)
    end = text.find(ACTION_CLOSE)
    if start == -1 or end == -1:  # rule 3
        action = text[-fallback_chars:] if fallback_chars > 0 else ""
        valid = False
    else:  # rule 2 (empty when the first closing tag precedes the first opening tag)
        action = text[start + len(ACTION_OPEN) : end].strip()
        valid = True
    if text.find(THINK_OPEN) == -1 or text.find(THINK_CLOSE) == -1:  # rule 4
        valid = False
    if contains_cjk(text):  # rule 4
        valid = False
    return action, valid
