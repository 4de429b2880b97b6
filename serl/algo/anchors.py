"""Anchor grouping and candidate-action text: pure functions, standard library only.

An *anchor* is a set of step samples of one GRPO group that start from the same state; anchor-level
insertion (``serl.insertion.anchor``) shows the teacher every action tried from that state.

Reference behaviour (docs/reference.md §4.2, ``PC :: _build_anchor_groups``):

* :func:`group_by_observation` — exact string equality of the anchor value (the raw current observation).
  This is what the reference does by default; it pools every ALFWorld "Nothing happens." step of a group
  together regardless of the true location (§10.14).
* :func:`group_by_similarity` — the reference's ``anchor_enable_similarity`` option: greedy
  first-representative clustering, each item joining the first existing cluster whose representative (its
  first member) has ``difflib.SequenceMatcher(None, item, representative).ratio() >= threshold`` on the
  stripped texts, else opening a new cluster; a blank or whitespace-only item is similar to nothing, so it
  is always a cluster of its own (``PC :: _anchors_are_similar`` compares ``normalize_optional_text`` of both,
  which is None for blank text). Order-dependent by construction; the caller passes items in (step_id,
  trajectory index) order, as the reference visits records in (step_id, batch index) order.

Both return one anchor id per item; ids are consecutive integers in order of first appearance.

State-change anchor values (beyond the reference, docs/design.md §4, docs/reference.md §10.14):
:func:`effective_observations` maps each step of one trajectory to the observation of the state its action
was taken from — its own observation, except that a no-op response (ALFWorld's "Nothing happens.") says
nothing about the state, so the walk goes back to the most recent earlier observation that is a state.
``serl.insertion.anchor`` (``key="state_change"``) groups by it and ``serl.feedback.state_diff`` diffs
against it (one definition for both).

Candidate-action text (docs/reference.md §4.3, ``PC :: _normalize_candidate_action_text``; think removal
§3.2, ``RT :: _remove_thinking_trace``): :func:`strip_thinking` and :func:`candidate_action`. They live
here, not in ``serl.insertion``, so that later feedback sources that render responses (success / future
trajectories) can share them without importing the insertion package. Both read tags with the shared
rules of :mod:`serl.algo.masks` (linear time); ``mode="serl"`` matches the think tags in any ASCII case,
``mode="reference"`` case-sensitively as the reference's think removal does (docs/differences.md).

Deviations from the reference: none in behaviour. ``group_by_similarity`` short-cuts equality of the
stripped, non-blank texts (ratio 1.0 anyway) and uses difflib's quick upper bounds before computing the full
ratio, which changes cost, not results.
"""

from __future__ import annotations

import difflib
from typing import Hashable, Iterable, Sequence

from serl.algo.masks import first_action_block
from serl.algo.masks import remove_thinking as _remove_thinking

EMPTY_ACTION = "(empty action)"
#: ALFWorld's answer to an unknown or inadmissible command (docs/reference.md §3.1): not a state.
DEFAULT_NOOP_MESSAGES = ("Nothing happens.",)


def group_by_observation(observations: Sequence[Hashable]) -> list[int]:
    """Anchor id per item: items with equal values share an id; ids in order of first appearance.

    >>> group_by_observation(["a", "b", "a", "c", "b"])
    [0, 1, 0, 2, 1]
    """
    ids: dict[Hashable, int] = {}
    return [ids.setdefault(obs, len(ids)) for obs in observations]


def group_by_similarity(observations: Sequence[str], threshold: float) -> list[int]:
    """Greedy first-representative clustering by difflib ratio (docs/reference.md §4.2).

    Items are visited in the given order. An item joins the *first* existing cluster (in creation order)
    whose representative — the cluster's first member — satisfies
    ``difflib.SequenceMatcher(None, item.strip(), representative.strip()).ratio() >= threshold``; otherwise
    it founds a new cluster and becomes its representative. The argument order is the reference's (the
    ratio is not symmetric: ``("aba", "babba")`` gives 0.75, ``("babba", "aba")`` 0.5). A blank or
    whitespace-only item (or representative) is similar to nothing: it founds its own cluster, which nothing
    joins (§4.2, ``PC :: _anchors_are_similar``). Representatives never change, so membership is not
    transitive and the result depends on the order (e.g. with items ``B, A, C`` where A~B and B~C but not
    A~C, all three join B's cluster, while the order ``A, C, B`` gives two clusters).

    ``threshold`` must lie in (0, 1) (the reference's rule; 0.95 is its default).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"similarity threshold must be in (0, 1), got {threshold!r}")
    representatives: list[str | None] = []  # stripped text; None for blank (similar to nothing)
    ids: list[int] = []
    for raw in observations:
        obs = raw.strip() or None  # §4.2: normalize_optional_text — stripped, None when blank
        for cid, rep in enumerate(representatives):
            if obs is None or rep is None:
                continue  # PC :: _anchors_are_similar: a blank side is never similar
            if rep == obs:
                ids.append(cid)
                break
            matcher = difflib.SequenceMatcher(None, obs, rep)  # §4.2: SequenceMatcher(None, a=item, b=rep)
            # real_quick_ratio >= quick_ratio >= ratio: cheap upper bounds reject most pairs early.
            if (
                matcher.real_quick_ratio() >= threshold
                and matcher.quick_ratio() >= threshold
                and matcher.ratio() >= threshold
            ):
                ids.append(cid)
                break
        else:
            ids.append(len(representatives))
            representatives.append(obs)
    return ids


def is_state(observation: str, noop_messages: Iterable[str] = DEFAULT_NOOP_MESSAGES) -> bool:
    """True when ``observation`` describes a state: not blank and, stripped, not one of ``noop_messages``."""
    text = observation.strip()
    return bool(text) and text not in {m.strip() for m in noop_messages}


def effective_observations(
    observations: Sequence[str], noop_messages: Iterable[str] = DEFAULT_NOOP_MESSAGES
) -> list[str]:
    """Per step of one trajectory, the observation of the state its action was taken from.

    ``observations[t]`` is the raw observation step ``t`` acted on. Result ``[t]`` is the most recent
    ``observations[k]``, ``k <= t``, that :func:`is_state` (not blank, not a no-op message, compared
    stripped); ``observations[t]`` itself when there is none. An unchanged page (WebShop invalid action)
    is an ordinary observation and stays as it is.

    >>> effective_observations(["room", "desk", "Nothing happens.", " ", "desk"])
    ['room', 'desk', 'desk', 'desk', 'desk']
    >>> effective_observations(["Nothing happens.", "room"])
    ['Nothing happens.', 'room']
    """
    noop = tuple(noop_messages)
    out: list[str] = []
    last: str | None = None
    for obs in observations:
        if is_state(obs, noop):
            last = obs
        out.append(obs if last is None else last)
    return out


def strip_thinking(text: str, mode: str = "serl") -> str:
    """Remove every ``<think>…</think>`` block and the whitespace that follows it (docs/reference.md §3.2).

    :func:`serl.algo.masks.remove_thinking` (linear time): tags in any ASCII case (``mode="serl"``) or
    case-sensitive as in the reference (``mode="reference"``); an unclosed ``<think>`` is left as it is.

    >>> strip_thinking("<think>go left?</think>\\n <action>go to desk 1</action>")
    '<action>go to desk 1</action>'
    """
    return _remove_thinking(text, mode)


def candidate_action(response: str, remove_thinking: bool = True, mode: str = "serl") -> str:
    """Normalised candidate-action text of one response (docs/reference.md §4.3).

    The content of the action block, whitespace runs collapsed to one space, stripped and lower-cased; the
    (think-stripped, when ``remove_thinking``) response normalised the same way when there is no complete
    action tag; ``"(empty action)"`` when the result is empty. The block is
    :func:`serl.algo.masks.first_action_block`: the first ``<action>`` and the first ``</action>`` after it.

    * ``"serl"``: the block of the whole response, the one the projection executes, so the candidate is the
      env's action even when the policy wrote it inside ``<think>`` (docs/differences.md); tags in any ASCII
      case.
    * ``"reference"``: the block of the think-stripped response (docs/reference.md §4.3), which is not the
      executed one when the first block lies inside the thinking; Unicode case-insensitive action tag,
      case-sensitive think tags.

    >>> candidate_action("<think>hm</think><action>  Go to\\n Desk 1 </action>")
    'go to desk 1'
    >>> candidate_action("<think>so <action>open drawer 1</action></think>")
    'open drawer 1'
    """
    stripped = strip_thinking(response, mode) if remove_thinking else response
    text = response if mode == "serl" else stripped
    block = first_action_block(text, mode)
    if block is None:
        text = stripped
    else:
        text = text[block[0] : block[1]]
    text = " ".join(text.split()).lower()
    return text or EMPTY_ACTION


def indent_block(label: str, content: str) -> list[str]:
    """``  <label>: <content>`` for one-line content; else ``  <label>:`` then each line indented by 4."""
    lines = content.splitlines()
    if len(lines) == 1:
        return [f"  {label}: {lines[0]}"]
    return [f"  {label}:"] + [f"    {line}" for line in lines]
