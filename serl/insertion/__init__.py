"""Insertion granularity: which teacher context each step gets (docs/reference.md §4).

=========  ========================  ======================================================
name       class                     context of a step
=========  ========================  ======================================================
step       :class:`StepInsertion`    the feedback source's section for that step (§4.1)
anchor     :class:`AnchorInsertion`  actions tried from the same state (§4.2–§4.3): table or pairs
=========  ========================  ======================================================

``conf/insertion/<name>.yaml`` instantiates the class with keyword arguments. Insertion modules import only
``serl.types``, ``serl.algo`` and the standard library.
"""

from serl.insertion.anchor import ANCHOR_KEYS, CANDIDATES_TITLE, LAYOUTS, AnchorInsertion
from serl.insertion.base import FeedbackLike, Insertion
from serl.insertion.step import StepInsertion

__all__ = [
    "ANCHOR_KEYS",
    "CANDIDATES_TITLE",
    "LAYOUTS",
    "AnchorInsertion",
    "FeedbackLike",
    "Insertion",
    "StepInsertion",
]
