"""An environment's response format: the one definition every part of serl reads a policy response with.

The policy answers ``<think>…</think><action>…</action>`` (docs/reference.md §6.1). What that means for an
environment — which characters a command may hold, how much of an unparseable response the env still
receives, and (in the reference's rules) which bracket commands count as action spans — is the suite's, so
the suite owns one :class:`ThinkActionFormat` (``suite.response_format``, built from ``env.response_format``
in ``conf/env/*.yaml``) and every consumer asks it:

* :meth:`~ThinkActionFormat.project` — the command the env receives and the validity flag (rollout; §8.3,
  :func:`serl.envs.projection.project_action`);
* :meth:`~ThinkActionFormat.action_mask` / :meth:`~ThinkActionFormat.action_spans` — the executable-action
  tokens the teacher weight applies to (trainer; §6, :mod:`serl.algo.masks`);
* :meth:`~ThinkActionFormat.strip_thinking` — the response as feedback and the teacher show it (§3.2);
* :meth:`~ThinkActionFormat.candidate_action` — an anchor member's action text (insertion; §4.3);
* :meth:`~ThinkActionFormat.compose` — a demonstration's response (warm start).

The text scanning itself is :mod:`serl.algo.masks` (pure, linear time); this class only fixes its arguments
once per environment, so projection, mask, anchors and demonstrations cannot disagree.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Container, Sequence

from serl.algo.masks import (
    ACTION_CLOSE,
    ACTION_OPEN,
    PRINTABLE_ASCII,
    THINK_CLOSE,
    THINK_OPEN,
    action_mask_from_ids,
    check_response_format,
    find_action_spans,
    first_action_block,
    remove_thinking,
)
from serl.envs.projection import project_action

EMPTY_ACTION = "(empty action)"  # candidate text of a response with no action at all (docs/reference.md §4.3)

#: Named character sets a command may use (``charset`` knob).
CHARSETS: dict[str, frozenset[str] | None] = {
    "printable_ascii": PRINTABLE_ASCII,  # U+0020–U+007E: ALFWorld and WebShop commands
    "any": None,  # every character
}

_VERB_CHARS = frozenset(string.ascii_lowercase + "_")


class ThinkActionFormat:
    """``<think>reasoning</think><action>command</action>`` for one environment (module docstring).

    Args:
        mode: ``serl`` (one definition: the mask marks exactly the executed command, docs/differences.md) or
            ``reference`` (the authors' rules, docs/reference.md §3.2, §4.3, §6.2, §8.3); usually
            ``${algorithm.response_format}``.
        charset: characters a command may contain (:data:`CHARSETS`): a command with any other character is
            invalid and never reaches the env (``serl`` mode).
        fallback_chars: how many trailing characters of a response without an action block the env still
            receives (as an invalid action): ALFWorld 30, WebShop 20 (docs/reference.md §8.3).
        bracket_verbs: verbs whose ``verb[...]`` commands the reference marks as action spans anywhere in a
            response that has no action tag (docs/reference.md §6.2 rule 3: ``search``, ``click`` for
            WebShop); ``reference`` mode only.
    """

    def __init__(
        self,
        mode: str = "serl",
        charset: str = "printable_ascii",
        fallback_chars: int = 30,
        bracket_verbs: Sequence[str] = (),
    ) -> None:
        self.mode = check_response_format(mode)
        if charset not in CHARSETS:
            raise ValueError(f"charset must be one of {', '.join(CHARSETS)}, got {charset!r}")
        self.charset_name = charset
        self.charset: Container[str] | None = CHARSETS[charset]
        if not isinstance(fallback_chars, int) or isinstance(fallback_chars, bool) or fallback_chars < 0:
            raise ValueError(f"fallback_chars must be an int >= 0, got {fallback_chars!r}")
        self.fallback_chars = fallback_chars
        if isinstance(bracket_verbs, str):
            raise ValueError(f"bracket_verbs must be a list of verbs, got the string {bracket_verbs!r}")
        verbs = tuple(str(v) for v in bracket_verbs)
        bad = [v for v in verbs if not v or not set(v) <= _VERB_CHARS]
        if bad:
            raise ValueError(f"bracket_verbs must be lower-case words (a-z, _), got {bad}")
        self.bracket_verbs = verbs

    # -- reading a response ------------------------------------------------------------------------
    def project(self, response: str) -> tuple[str, bool]:
        """``(command the env receives, format validity)`` (docs/reference.md §8.3)."""
        return project_action(response, self.fallback_chars, mode=self.mode, charset=self.charset)

    def strip_thinking(self, text: str) -> str:
        """``text`` without its ``<think>…</think>`` blocks and the whitespace after each (§3.2)."""
        return remove_thinking(text, self.mode)

    def action_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans ``[start, end)`` of the executable action (§6.2; :func:`serl.algo.masks.find_action_spans`)."""
        return find_action_spans(text, self.mode, self.charset, self.bracket_verbs)

    def action_mask(self, ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> list[bool]:
        """Action-token flags of generated ``ids`` (``[T]`` booleans, §6.3)."""
        return action_mask_from_ids(ids, decode, self.mode, self.charset, self.bracket_verbs)

    def candidate_action(self, response: str, remove_thinking: bool = True) -> str:
        """Normalised candidate-action text of one response (docs/reference.md §4.3).

        The content of the action block, whitespace runs collapsed to one space, stripped and lower-cased;
        the (think-stripped, when ``remove_thinking``) response normalised the same way when there is no
        complete action tag; :data:`EMPTY_ACTION` when the result is empty. The block is
        :func:`serl.algo.masks.first_action_block`: the first ``<action>`` and the first ``</action>`` after it.

        * ``serl``: the block of the whole response, the one :meth:`project` executes, so the candidate is
          the env's action even when the policy wrote it inside ``<think>`` (docs/differences.md).
        * ``reference``: the block of the think-stripped response (§4.3), which is not the executed one when
          the first block lies inside the thinking.

        >>> ThinkActionFormat().candidate_action("<think>hm</think><action>  Go to\\n Desk 1 </action>")
        'go to desk 1'
        >>> ThinkActionFormat().candidate_action("<think>so <action>open drawer 1</action></think>")
        'open drawer 1'
        """
        stripped = self.strip_thinking(response) if remove_thinking else response
        text = response if self.mode == "serl" else stripped
        block = first_action_block(text, self.mode)
        text = stripped if block is None else text[block[0] : block[1]]
        return " ".join(text.split()).lower() or EMPTY_ACTION

    # -- writing one ---------------------------------------------------------------------------------
    def compose(self, thought: str, action: str) -> str:
        """The response that states ``thought`` and executes ``action`` (a demonstration's answer)."""
        return f"{THINK_OPEN}{thought}{THINK_CLOSE}{ACTION_OPEN}{action}{ACTION_CLOSE}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThinkActionFormat) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        return (
            f"ThinkActionFormat(mode={self.mode!r}, charset={self.charset_name!r}, "
            f"fallback_chars={self.fallback_chars}, bracket_verbs={list(self.bracket_verbs)!r})"
        )
