"""Feedback sources: the privileged hindsight sections of the teacher prompt (SERL_REFERENCE §3).

One module per source; every source is a :class:`FeedbackSource` (pure text function over one GRPO group,
see ``base``). Options (``conf/feedback/<name>.yaml`` instantiates the class with keyword arguments):

=============  ==========================  =====================================================
name           class                       content
=============  ==========================  =====================================================
none           :class:`NoFeedback`         nothing; ``enabled=False`` ⇒ plain GRPO, no teacher
immediate      :class:`ImmediateFeedback`  raw env response to the action (reference default)
state_diff     :class:`StateDiffFeedback`  unit diff of the observation before/after (beyond ref.)
=============  ==========================  =====================================================

Feedback modules import only ``serl.types``, ``serl.algo`` and the standard library.
"""

from serl.feedback.base import FeedbackSource
from serl.feedback.immediate import ImmediateFeedback
from serl.feedback.none import NoFeedback
from serl.feedback.state_diff import NO_CHANGE, StateDiffFeedback

#: option name → class (the ``name`` attribute of each class); extended as sources are added.
FEEDBACK_SOURCES: dict[str, type[FeedbackSource]] = {
    cls.name: cls for cls in (NoFeedback, ImmediateFeedback, StateDiffFeedback)
}

__all__ = [
    "FEEDBACK_SOURCES",
    "NO_CHANGE",
    "FeedbackSource",
    "ImmediateFeedback",
    "NoFeedback",
    "StateDiffFeedback",
]
