"""Records that cross module boundaries.

Every record type of serl exists here once. ``types`` imports only the standard library and torch.

Data flow (docs/design.md §1): the rollout worker produces :class:`Trajectory` objects made of :class:`Step`
records; insertion + feedback turn each step into a :class:`TeacherContext`; the trainer collates the
steps, their advantages, action masks and teacher log-probs into one :class:`TrainBatch` for the learner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Step:
    """One environment step of one episode: the sample GRPO trains on (docs/reference.md §1.3).

    ``prompt`` is the student's single user message, rebuilt fresh every step by the env's prompt template
    (task, last H observation/action pairs, current observation, admissible actions, format instruction).
    ``prompt_ids`` are the chat-templated ids the policy actually saw; ``response_ids`` the ids it sampled
    and ``response_logprobs`` their behaviour log-probs (same length as ``response_ids``).
    """

    step_id: int  # 0-based index within the trajectory
    observation: str  # raw env observation of the current state (the reference's anchor_obs)
    prompt: str  # student user-message text
    admissible: tuple[str, ...]  # admissible commands in the current state
    prompt_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float]
    response_text: str
    action: str  # what the env received after projection (docs/reference.md §8.3)
    valid: bool  # format validity (tags present, no CJK), docs/reference.md §8.3
    feedback: str  # raw env response to the action ("immediate feedback", §3.1)
    next_prompt: str  # the student prompt of the next state (the reference's next_observation, §3.1)
    reward: float  # env reward received on this step (10 on the winning step in ALFWorld)
    done: bool  # episode ended on this step
    # The env's own view of the state (info["state"], serl/envs/base.py): ALFWorld's symbolic facts, a WebShop
    # page. ``state`` is the state the action was taken from, ``next_state`` the one it led to; an env without
    # a state description uses the observation (the state before, after a no-op). ``noop``: the env answered
    # the action as changing nothing (info["noop"]). Defaults only for steps built by hand in tests.
    state: str = ""
    next_state: str = ""
    noop: bool = False
    truncated: bool = False  # the response was cut by max_new_tokens before an eos (finish_reason "length")


@dataclass
class Trajectory:
    """One episode. The ``group_size`` trajectories sharing ``group_id`` played the same game."""

    group_id: int  # GRPO group (same game, same training step)
    traj_id: int  # index of the trajectory inside its group
    game: str  # game identifier (e.g. path of the game file)
    task_type: str  # e.g. "pick_and_place_simple"
    task: str  # task sentence, e.g. "put a mug in desk"
    steps: list[Step] = field(default_factory=list)
    won: bool = False
    score: float = 0.0  # the env's task score of the episode, in [0, 1] (info["score"]; else 1.0 if won)

    @property
    def episode_reward(self) -> float:
        """Sum of env rewards (10·won in ALFWorld, docs/reference.md §1.4)."""
        return float(sum(s.reward for s in self.steps))

    @property
    def length(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class Demonstration:
    """One expert step rendered exactly as the student sees it: the warm-start (SFT) training sample.

    ``prompt`` is the student's user message (same template, history and admissible actions as a rollout
    step); ``response`` the target text in the reference format ``<think>…</think><action>…</action>``.
    """

    game: str
    task_type: str
    step_id: int
    prompt: str
    response: str


@dataclass(frozen=True)
class TeacherContext:
    """Privileged hindsight sections for one step (docs/reference.md §3.2).

    A section is ``"<title>\\n<content>"``; ``sections`` keeps ``(title, content)`` pairs with non-empty
    content only. ``sources`` names the feedback sources that contributed (for the per-source metrics of
    §5.3); ``anchor_size`` is the size of the step's anchor group under anchor insertion, else ``None``, and
    ``anchor_actions`` the number of distinct candidate actions in it (the reference's
    ``serl/anchor_action_count_mean``).
    """

    sections: tuple[tuple[str, str], ...] = ()
    sources: tuple[str, ...] = ()
    anchor_size: int | None = None
    anchor_actions: int | None = None

    @property
    def has_context(self) -> bool:
        return len(self.sections) > 0

    @property
    def text(self) -> str:
        """Sections joined by a blank line (the reference's ``privileged_context``)."""
        return "\n\n".join(f"{title}\n{content}" for title, content in self.sections)


@dataclass
class TrainBatch:
    """Padded tensors of N step samples (prompt left-padded to P, response right-padded to T).

    Layout as in veRL: ``input_ids[:, P:]`` are the response tokens, so the logits at positions
    ``P-1 .. P+T-2`` score them.
    """

    input_ids: torch.Tensor  # [N, P+T] long
    attention_mask: torch.Tensor  # [N, P+T] long (1 = real token)
    response_mask: torch.Tensor  # [N, T] float (1 = sampled response token)
    action_mask: torch.Tensor  # [N, T] float (1 = executable action token, docs/reference.md §6)
    old_logprobs: torch.Tensor  # [N, T] float, behaviour log-probs
    teacher_logprobs: torch.Tensor  # [N, T] float, 0 where the row has no context
    has_context: torch.Tensor  # [N] bool, the reference's serl_mask
    advantages: torch.Tensor  # [N, T] float, GRPO advantage broadcast over response tokens
    truncated: torch.Tensor | None = None  # [N] bool, response cut by max_new_tokens (None: no row was)

    @property
    def n_response(self) -> int:
        return self.response_mask.shape[1]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | slice) -> "TrainBatch":
        """Rows ``index`` of every tensor (micro-batching)."""
        return TrainBatch(**{k: None if (v := getattr(self, k)) is None else v[index] for k in self.__dataclass_fields__})


@dataclass(frozen=True)
class StepColumns:
    """One training step's samples as columns, one row per step sample, in the trainer's order ``[N]``:
    what an advantage estimator reads (``algorithm.advantage``, serl/algo/; built by
    :func:`serl.batch.step_columns`).

    A trajectory is the pair ``(group_ids, traj_ids)``; its rows are in step order. ``anchor_ids`` label the
    state a step was taken from within its group: two rows of one group with equal ids started from the same
    env state (``Step.state``, grouped exactly like ``insertion.key=state_change``), so a state met twice in one
    trajectory is one anchor too; ids of different groups never coincide.
    """

    group_ids: torch.Tensor  # [N] long, GRPO group (the group_size rollouts of one game)
    traj_ids: torch.Tensor  # [N] long, trajectory within its group
    step_ids: torch.Tensor  # [N] long, 0-based turn within its trajectory
    episode_rewards: torch.Tensor  # [N] float, outcome reward of the row's trajectory (10·won in ALFWorld)
    step_rewards: torch.Tensor  # [N] float, the env reward received on this step
    valid: torch.Tensor  # [N] bool, format validity of the response (docs/reference.md §8.3)
    anchor_ids: torch.Tensor  # [N] long, same id = same group and same state before the step
    response_lengths: torch.Tensor  # [N] long, sampled response tokens
    truncated: torch.Tensor  # [N] bool, the response was cut by max_new_tokens (no eos)
    values: torch.Tensor | None = None  # [N] float, the critic's V(s_t) of each row (algorithm.critic); None: no critic

    def __len__(self) -> int:
        return self.group_ids.shape[0]


@dataclass
class LossInputs:
    """Per-token tensors of one micro-batch, ``[N, T]`` over the response tokens: what a policy loss reads
    (``algorithm.loss``, serl/algo/). ``advantages`` are the estimator's, broadcast over each response and
    already passed through the algorithm's reweighting (``algorithm.reweight``)."""

    logprobs: torch.Tensor  # [N, T] current-policy log-probs of the sampled tokens (carries the gradient)
    old_logprobs: torch.Tensor  # [N, T] behaviour log-probs
    advantages: torch.Tensor  # [N, T] per-token advantages (constants)
    response_mask: torch.Tensor  # [N, T] float, 1 = sampled response token
    action_mask: torch.Tensor  # [N, T] float, 1 = executable action token (docs/reference.md §6)
    teacher_logprobs: torch.Tensor  # [N, T] the teacher's log-probs of the same tokens; 0 where no context
    has_context: torch.Tensor  # [N] bool, the row's teacher saw a privileged context
    entropy: torch.Tensor | None = None  # [N, T] token entropies, when the loss asks for them (uses_entropy)
    lam: float = 0.0  # the teacher mixing coefficient λ of this step (docs/reference.md §5.1)
    truncated: torch.Tensor | None = None  # [N] bool, the response was cut by max_new_tokens (None: none was)
