"""ALFWorld's state for serl: a few lines rendered from the engine's symbolic facts (serl/envs/alfworld/state.py)."""

from __future__ import annotations

from types import SimpleNamespace

from serl.envs.alfworld.state import MIDDLE_OF_ROOM, fact_tuples, render_state

# A kitchen corner: the agent at countertop 1 (loc 3), a closed drawer 1 at loc 4 holding a pen, an open fridge
# elsewhere, plus static facts that must not show (types, what can hold what).
STATIC = [
    ("receptacleatlocation", ("countertop 1", "loc 3")),
    ("receptacleatlocation", ("drawer 1", "loc 4")),
    ("receptacleatlocation", ("fridge 1", "loc 9")),
    ("openable", ("drawer 1",)),
    ("openable", ("fridge 1",)),
    ("objecttype", ("mug 1", "mugtype")),
    ("cancontain", ("countertoptype", "mugtype")),
    ("pickupable", ("mug 1",)),
    ("inreceptacle", ("pen 1", "drawer 1")),
    ("opened", ("fridge 1",)),
    ("checked", ("countertop 1",)),
]


def at(loc: str) -> list:
    return [("atlocation", ("agent1", loc))]


def test_start_is_the_middle_of_the_room():
    assert render_state(STATIC + at("loc 0")) == f"{MIDDLE_OF_ROOM}\nYou hold nothing\nfridge 1 is open"


def test_what_the_agent_sees_at_its_receptacle():
    facts = STATIC + at("loc 3") + [("inreceptacle", ("plate 10", "countertop 1")), ("inreceptacle", ("plate 2", "countertop 1")),
                                    ("inreceptacle", ("mug 1", "countertop 1"))]
    # natural order: plate 2 before plate 10; a closed drawer elsewhere is not seen
    assert render_state(facts) == (
        "You are at countertop 1\n"
        "You hold nothing\n"
        "At countertop 1 you see: mug 1, plate 2, plate 10\n"
        "fridge 1 is open"
    )


def test_closed_receptacle_hides_its_contents_and_opening_shows_them():
    closed = render_state(STATIC + at("loc 4"))
    assert closed == "You are at drawer 1\nYou hold nothing\ndrawer 1 is closed\nfridge 1 is open"
    opened = render_state(STATIC + at("loc 4") + [("opened", ("drawer 1",))])
    assert opened == (
        "You are at drawer 1\nYou hold nothing\nAt drawer 1 you see: pen 1\ndrawer 1 is open\nfridge 1 is open"
    )


def test_holding_properties_and_nesting():
    facts = STATIC + at("loc 9") + [("holds", ("agent1", "mug 1")), ("ishot", ("mug 1",)), ("isclean", ("mug 1",)),
                                    ("inreceptacleobject", ("spoon 1", "mug 1"))]
    assert render_state(facts) == (
        "You are at fridge 1\n"
        "You hold mug 1\n"
        "fridge 1 is empty\n"
        "fridge 1 is open\n"
        "mug 1 is clean\n"
        "mug 1 is hot\n"
        "spoon 1 is in mug 1"
    )


def test_fact_tuples_strip_textworld_names():
    prop = SimpleNamespace(name="atLocation", arguments=[SimpleNamespace(name="agent1 "), SimpleNamespace(name="loc 5")])
    assert fact_tuples([prop]) == [("atlocation", ("agent1", "loc 5"))]
