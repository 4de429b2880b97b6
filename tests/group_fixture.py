"""The hand-written GRPO group shared by the feedback and insertion tests (one ALFWorld-like game).

    traj 0 (won, return 10): ROOM -go to countertop 1-> COUNTER -take mug 1-> PICK_MUG -go to desk 1-> DESK
                              -move mug 1 to desk 1-> PUT (reward 10, last step)
    traj 1 (return 0): ROOM -go to countertop 1-> COUNTER -take plate 2-> PICK_PLATE -take mug 1-> NOTHING
                              -go to desk 1-> DESK (last step)
    traj 2 (return 0): ROOM -go to drawer 1-> DRAWER -(no tags) "I should open drawer 1"-> NOTHING
                              -go to desk 1-> DESK (last step)
    traj 3 (return 0): ROOM -go to countertop 1 (an <action> inside the thinking says drawer)-> COUNTER
                              -examine countertop 1-> EXAMINED -(empty action)-> "  " (blank, artificial; last)

One success (traj 0), repeated observations (ROOM ×4, COUNTER ×3), two "Nothing happens." steps in two
different true states ((1,3) at the countertop holding the plate, (2,2) at the closed drawer), last steps.
Step prompts are ``PROMPT[<observation>]`` and next prompts ``PROMPT[<feedback>]``. ``noop`` marks the steps the
env answered "Nothing happens." and ``state`` / ``next_state`` are filled the way the rollout fills them for an
env without a state description (:func:`replay_states`).
"""

from __future__ import annotations

from serl.rollout.base import env_state
from serl.types import Step, Trajectory

ROOM = (
    "-= Welcome to TextWorld, ALFRED! =-\n\n"
    "You are in the middle of a room. Looking quickly around you, you see a countertop 1, a desk 1, "
    "and a drawer 1.\n\n"
    "Your task is to: put a mug in desk."
)
COUNTER = "You arrive at countertop 1. On the countertop 1, you see a mug 1, and a plate 2."
PICK_MUG = "You pick up the mug 1 from the countertop 1."
PICK_PLATE = "You pick up the plate 2 from the countertop 1."
DESK = "You arrive at desk 1. On the desk 1, you see a pen 1."
PUT = "You move the mug 1 to the desk 1."
DRAWER = "You arrive at drawer 1. The drawer 1 is closed."
EXAMINED = "On the countertop 1, you see a mug 1, and a plate 2."
NOTHING = "Nothing happens."

def act(a: str) -> str:
    return f"<think>I reason about it.</think>\n<action>{a}</action>"


def mk_step(step_id: int, obs: str, response: str, feedback: str, reward: float = 0.0, done: bool = False) -> Step:
    return Step(
        step_id=step_id,
        observation=obs,
        prompt=f"PROMPT[{obs}]",
        admissible=("look", "inventory"),
        prompt_ids=[1, 2, 3],
        response_ids=[4, 5],
        response_logprobs=[-0.1, -0.2],
        response_text=response,
        action=response[-30:].lower(),
        valid="<action>" in response,
        feedback=feedback,
        next_prompt=f"PROMPT[{feedback}]",
        reward=reward,
        done=done,
    )


def replay_states(steps: list[Step]) -> list[Step]:
    """Set ``noop`` (the env answered :data:`NOTHING`), ``state`` and ``next_state`` of consecutive steps as
    :class:`serl.rollout.base.RolloutWorker` records them for an env that reports no ``info["state"]``."""
    state = None
    for s in steps:
        s.noop = s.feedback.strip() == NOTHING
        s.state = env_state({}, s.observation, None) if state is None else state
        s.next_state = state = env_state({"noop": s.noop}, s.feedback, s.state)
    return steps


def make_group() -> list[Trajectory]:
    def traj(i: int, steps: list[Step], won: bool = False) -> Trajectory:
        return Trajectory(group_id=7, traj_id=i, game="game-1", task_type="pick_and_place_simple",
                          task="put a mug in desk", steps=replay_states(steps), won=won)

    t0 = traj(0, [
        mk_step(0, ROOM, act("go to countertop 1"), COUNTER),
        mk_step(1, COUNTER, act("take mug 1 from countertop 1"), PICK_MUG),
        mk_step(2, PICK_MUG, act("go to desk 1"), DESK),
        mk_step(3, DESK, act("move mug 1 to desk 1"), PUT, reward=10.0, done=True),
    ], won=True)
    t1 = traj(1, [
        mk_step(0, ROOM, act("go to countertop 1"), COUNTER),
        mk_step(1, COUNTER, act("take plate 2 from countertop 1"), PICK_PLATE),
        mk_step(2, PICK_PLATE, act("take mug 1 from countertop 1"), NOTHING),
        mk_step(3, NOTHING, act("go to desk 1"), DESK, done=True),
    ])
    t2 = traj(2, [
        mk_step(0, ROOM, act("go to drawer 1"), DRAWER),
        mk_step(1, DRAWER, "I should  open drawer 1", NOTHING),
        mk_step(2, NOTHING, act("go to desk 1"), DESK, done=True),
    ])
    t3 = traj(3, [
        mk_step(0, ROOM, "<think>Maybe go to drawer 1? No.</think>\n<action>Go to  Countertop 1</action>", COUNTER),
        mk_step(1, COUNTER, act("examine countertop 1"), EXAMINED),
        mk_step(2, EXAMINED, "<think>stuck</think>\n<action>\n</action>", "  ", done=True),
    ])
    return [t0, t1, t2, t3]
