"""Turn a training step's records into the estimator's :class:`~serl.types.StepColumns` and the learner's
padded :class:`~serl.types.TrainBatch`.

Per step sample ``i`` (docs/reference.md §1.4–1.5, §6): the GRPO advantage ``A_i`` is broadcast over every
response token; the action-token mask comes from the generated ids themselves (docs/design.md §4, fixes §10.9) and marks,
by the env's response format, the command the env executed (``serl``) or the reference's action spans (``reference``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from serl.algo.anchors import group_by_observation
from serl.envs.response import ThinkActionFormat
from serl.policy.logprobs import pad_prompt_response
from serl.types import Step, StepColumns, TrainBatch, Trajectory


def step_columns(trajectories: Sequence[Trajectory], values: torch.Tensor | None = None) -> StepColumns:
    """The step samples of ``trajectories`` as columns, rows in the trainer's order (every trajectory's
    steps in step order, trajectories in the given order); ``values`` ``[N]`` are the critic's, in that order.

    ``anchor_ids``: within each group, the steps' ``state`` (the state the action was taken from; the
    observation for an env without one) grouped by equality (:func:`serl.algo.anchors.group_by_observation`,
    the grouping of ``insertion.key=state_change``), offset so that ids of different groups differ.
    """
    rows = [(t, s) for t in trajectories for s in t.steps]
    if values is not None and tuple(values.shape) != (len(rows),):
        raise ValueError(f"values must be [N={len(rows)}], one per step sample, got shape {tuple(values.shape)}")
    anchor_of: dict[tuple[int, int, int], int] = {}
    by_group: dict[int, list[tuple[Trajectory, Step]]] = {}
    for t, s in rows:
        by_group.setdefault(t.group_id, []).append((t, s))
    offset = 0
    for members in by_group.values():
        ids = group_by_observation([s.state or s.observation for _, s in members])
        for (t, s), a in zip(members, ids):
            anchor_of[(t.group_id, t.traj_id, s.step_id)] = offset + a
        offset += max(ids) + 1
    long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return StepColumns(
        group_ids=long([t.group_id for t, _ in rows]),
        traj_ids=long([t.traj_id for t, _ in rows]),
        step_ids=long([s.step_id for _, s in rows]),
        episode_rewards=torch.tensor([t.episode_reward for t, _ in rows], dtype=torch.float32),
        step_rewards=torch.tensor([s.reward for _, s in rows], dtype=torch.float32),
        valid=torch.tensor([s.valid for _, s in rows], dtype=torch.bool),
        anchor_ids=long([anchor_of[(t.group_id, t.traj_id, s.step_id)] for t, s in rows]),
        response_lengths=long([len(s.response_ids) for _, s in rows]),
        truncated=torch.tensor([s.truncated for _, s in rows], dtype=torch.bool),
        values=values,
    )


def action_masks(
    steps: Sequence[Step],
    decode: Callable[[Sequence[int]], str],
    response_format: ThinkActionFormat | None = None,
) -> list[list[bool]]:
    """Executable-action token flags per step (``len(s.response_ids)`` booleans each), from the generated ids.

    ``response_format.action_mask`` (the env's; default: the ``serl`` rules): in ``serl`` mode the tokens of the
    command the env executed and nothing for invalid responses; in ``reference`` mode the reference's action
    spans (docs/reference.md §6.2).
    """
    fmt = response_format if response_format is not None else ThinkActionFormat()
    return [fmt.action_mask(s.response_ids, decode) for s in steps]


def collate(
    steps: Sequence[Step],
    advantages: torch.Tensor,
    masks: Sequence[Sequence[bool]],
    pad_id: int,
    teacher_logprobs: torch.Tensor | None = None,
    has_context: torch.Tensor | None = None,
) -> TrainBatch:
    """Pad N steps into a TrainBatch.

    ``advantages [N]`` per step sample; ``masks`` per-step action flags (len = response length);
    ``teacher_logprobs [N, T]`` and ``has_context [N]`` from the teacher (zeros / False when absent).
    """
    n = len(steps)
    if advantages.shape != (n,):
        raise ValueError(f"advantages must have shape [{n}], got {tuple(advantages.shape)}")
    input_ids, attention_mask, response_mask = pad_prompt_response(
        [s.prompt_ids for s in steps], [s.response_ids for s in steps], pad_id
    )
    t = response_mask.shape[1]
    old = torch.zeros(n, t)
    act = torch.zeros(n, t)
    for i, (s, m) in enumerate(zip(steps, masks)):
        if len(m) != len(s.response_ids) or len(s.response_logprobs) != len(s.response_ids):
            raise ValueError(f"step {i}: response ids, log-probs and action mask lengths differ")
        old[i, : len(s.response_ids)] = torch.tensor(s.response_logprobs, dtype=torch.float32)
        act[i, : len(m)] = torch.tensor(m, dtype=torch.float32)
    response_mask = response_mask.float()
    if teacher_logprobs is None:
        teacher_logprobs = torch.zeros(n, t)
    if has_context is None:
        has_context = torch.zeros(n, dtype=torch.bool)
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        action_mask=act * response_mask,
        old_logprobs=old * response_mask,
        teacher_logprobs=teacher_logprobs[:, :t] * response_mask,
        has_context=has_context,
        advantages=advantages[:, None].float() * response_mask,
        truncated=torch.tensor([s.truncated for s in steps], dtype=torch.bool),
    )
