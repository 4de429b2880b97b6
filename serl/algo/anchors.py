"""Anchor grouping: pure functions, standard library only.

An *anchor* is a set of step samples of one GRPO group that start from the same state; anchor-level
insertion (``serl.insertion.anchor``) shows the teacher every action tried from that state.

Reference behaviour (docs/reference.md §4.2, ``PC :: _build_anchor_groups``):

* :func:`group_by_observation` — exact string equality of the anchor value (the raw current observation).
  This is what the reference does by default; it pools every no-op step of a group (ALFWorld answers every
  failed command with the same sentence) together regardless of the true state (§10.14).
* :func:`group_by_similarity` — the reference's ``anchor_enable_similarity`` option: greedy
  first-representative clustering, each item joining the first existing cluster whose representative (its
  first member) has ``difflib.SequenceMatcher(None, item, representative).ratio() >= threshold`` on the
  stripped texts, else opening a new cluster; a blank or whitespace-only item is similar to nothing, so it
  is always a cluster of its own (``PC :: _anchors_are_similar`` compares ``normalize_optional_text`` of both,
  which is None for blank text). Order-dependent by construction; the caller passes items in (step_id,
  trajectory index) order, as the reference visits records in (step_id, batch index) order.

Both return one anchor id per item; ids are consecutive integers in order of first appearance.

What the values are (the raw observation, or the env's state, ``Step.state``) is ``serl.insertion.anchor``'s
choice; the candidate-action text of a member is the env's response format's
(:meth:`serl.envs.response.ThinkActionFormat.candidate_action`, docs/reference.md §4.3).

Deviations from the reference: none in behaviour. ``group_by_similarity`` short-cuts equality of the
stripped, non-blank texts (ratio 1.0 anyway) and uses difflib's quick upper bounds before computing the full
ratio, which changes cost, not results.
"""

from __future__ import annotations

import difflib
from typing import Hashable, Sequence


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


def indent_block(label: str, content: str) -> list[str]:
    """``  <label>: <content>`` for one-line content; else ``  <label>:`` then each line indented by 4."""
    lines = content.splitlines()
    if len(lines) == 1:
        return [f"  {label}: {lines[0]}"]
    return [f"  {label}:"] + [f"    {line}" for line in lines]
