"""Feedback sources: the privileged hindsight sections of the teacher prompt (docs/reference.md §3).

One module per source; every source is a :class:`FeedbackSource` (pure text function over one GRPO group,
see ``base``). Options (``conf/feedback/<name>.yaml`` instantiates the class with keyword arguments):

=============  =============================  ==================================================
name           class                          content
=============  =============================  ==================================================
none           :class:`NoFeedback`            nothing; ``enabled=False`` ⇒ plain GRPO, no teacher
immediate      :class:`ImmediateFeedback`     raw env response to the action (reference default)
state_diff     :class:`StateDiffFeedback`     unit diff of the observation before/after (beyond ref.)
next_obs       :class:`NextObservation`       the full next student prompt (§3.1)
future         :class:`FutureTrajectory`      the rest of the step's own trajectory (§3.4)
success        :class:`SuccessfulTrajectory`  the first other won trajectory of the group (§3.4)
current        :class:`CurrentTrajectory`     the step's trajectory before it (beyond ref., §10.15)
judge          :class:`TrajectoryJudge`       an LLM critic's verdict on the trajectory (§3.6)
=============  =============================  ==================================================

Combinations (``combine``): :class:`AllOf` (the reference's "and" modes) and :class:`FirstAvailable` (its
"or" mode), composed in ``conf/feedback/<a>_and_<b>.yaml`` / ``<a>_or_<b>.yaml`` (§3.5).

``judge_success`` is :class:`TrajectoryJudge` with ``with_success_reference=True``.

Feedback modules import only ``serl.types``, ``serl.algo`` and the standard library.
"""

from serl.feedback.base import FeedbackSource
from serl.feedback.combine import AllOf, FirstAvailable
from serl.feedback.current import CurrentTrajectory
from serl.feedback.future import FutureTrajectory
from serl.feedback.immediate import ImmediateFeedback
from serl.feedback.judge import TrajectoryJudge
from serl.feedback.next_obs import NextObservation
from serl.feedback.none import NoFeedback
from serl.feedback.state_diff import NO_CHANGE, StateDiffFeedback
from serl.feedback.success import SuccessfulTrajectory

__all__ = [
    "NO_CHANGE",
    "AllOf",
    "CurrentTrajectory",
    "FeedbackSource",
    "FirstAvailable",
    "FutureTrajectory",
    "ImmediateFeedback",
    "NextObservation",
    "NoFeedback",
    "StateDiffFeedback",
    "SuccessfulTrajectory",
    "TrajectoryJudge",
]
