"""What an ALFWorld *state* is for serl: a few lines rendered from the engine's symbolic facts.

TextWorld reports the PDDL facts that hold after every command (``EnvInfos(facts=True)``; the predicates of
alfworld's ``alfred.pddl``). Most of them are static (object and receptacle types, what can hold what, where
each receptacle stands) or bookkeeping (``checked``, ``wasInReceptacle``). :func:`render_state` keeps what
the agent can act on and writes it as one line per fact, in a fixed order:

1. ``You are at <receptacle>`` — from ``atLocation(agent, loc)`` and ``receptacleAtLocation(r, loc)``
   (``You are in the middle of the room`` where no receptacle stands, the start);
2. ``You hold <object>`` per ``holds(agent, o)``, or ``You hold nothing``;
3. for each receptacle at the agent's location: ``<r> is closed`` (``openable`` and not ``opened``), else what
   it sees there: ``At <r> you see: <objects>`` (``inReceptacle(o, r)``, naturally sorted) or ``<r> is empty``;
4. ``<r> is open`` for every ``opened`` receptacle (elsewhere ones included: an open fridge stays open);
5. object properties ``<o> is clean | hot | cool | sliced | on | toggled`` (``isClean`` …) and
   ``<inner> is in <outer>`` (``inReceptacleObject``).

So a move changes the location line and what is seen (``- You are at countertop 1`` / ``+ You are at cabinet 1``
/ ``+ cabinet 1 is closed``), a ``take`` the holding and the contents lines — the few facts
``feedback=state_diff`` shows and ``insertion.key=state_change`` pools by (docs/design.md §4). Pure
functions of ``(predicate, arguments)`` pairs; :func:`fact_tuples` converts TextWorld propositions.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

Fact = tuple[str, tuple[str, ...]]  # (lower-case predicate, argument names), e.g. ("holds", ("agent1", "mug 1"))

MIDDLE_OF_ROOM = "You are in the middle of the room"
#: unary object properties shown, predicate -> adjective
PROPERTIES = {"isclean": "clean", "ishot": "hot", "iscool": "cool", "issliced": "sliced", "ison": "on", "istoggled": "toggled"}


def fact_tuples(propositions: Iterable[Any]) -> list[Fact]:
    """TextWorld propositions (``.name``, ``.arguments[i].name``) as :data:`Fact` pairs, names stripped."""
    return [(str(p.name).lower(), tuple(str(a.name).strip() for a in p.arguments)) for p in propositions]


def _natural(name: str) -> tuple[Any, ...]:
    """Sort key that puts ``cabinet 2`` before ``cabinet 10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def render_state(facts: Iterable[Fact]) -> str:
    """The state lines of ``facts`` (module docstring), joined by newlines.

    >>> print(render_state([("atlocation", ("agent1", "loc 3")), ("receptacleatlocation", ("drawer 1", "loc 3")),
    ...                     ("openable", ("drawer 1",)), ("inreceptacle", ("pen 1", "drawer 1"))]))
    You are at drawer 1
    You hold nothing
    drawer 1 is closed
    """
    by_pred: dict[str, list[tuple[str, ...]]] = {}
    for name, args in facts:
        by_pred.setdefault(name, []).append(args)
    at = {args[-1] for args in by_pred.get("atlocation", [])}
    here = sorted({r for r, loc in by_pred.get("receptacleatlocation", []) if loc in at}, key=_natural)
    openable = {args[0] for args in by_pred.get("openable", [])}
    opened = {args[0] for args in by_pred.get("opened", [])}
    contents: dict[str, list[str]] = {}
    for obj, rec in by_pred.get("inreceptacle", []):
        contents.setdefault(rec, []).append(obj)

    lines = [f"You are at {', '.join(here)}" if here else MIDDLE_OF_ROOM]
    held = sorted({args[-1] for args in by_pred.get("holds", [])}, key=_natural)
    lines += [f"You hold {o}" for o in held] or ["You hold nothing"]
    for rec in here:
        if rec in openable and rec not in opened:
            lines.append(f"{rec} is closed")
        elif contents.get(rec):
            lines.append(f"At {rec} you see: {', '.join(sorted(contents[rec], key=_natural))}")
        else:
            lines.append(f"{rec} is empty")
    lines += [f"{rec} is open" for rec in sorted(opened, key=_natural)]
    props = [(o, adj) for pred, adj in PROPERTIES.items() for (o, *_) in by_pred.get(pred, [])]
    lines += [f"{o} is {adj}" for o, adj in sorted(props, key=lambda p: (_natural(p[0]), p[1]))]
    inner = sorted(by_pred.get("inreceptacleobject", []), key=lambda a: tuple(map(_natural, a)))
    lines += [f"{a[0]} is in {a[1]}" for a in inner]
    return "\n".join(lines)
