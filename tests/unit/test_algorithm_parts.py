"""The algorithm's parts as the config builds them: the GRPO estimator over step columns, the PPO-clip loss
and the SERL / identity transforms over a micro-batch's inputs, and the step columns themselves.

Each part is checked against the pure function it wraps (the functions' own tests hold the hand-derived
numbers) and on a small hand-derived example.
"""

from __future__ import annotations

import pytest
import torch

from serl.algo.advantages import GRPO, grpo_advantages, step_scores, trajectory_grpo_advantages
from serl.algo.loss import PPOClip, ppo_clip_loss
from serl.algo.reweight import NoReweight, SerlReweight, serl_reweight
from serl.batch import step_columns
from serl.types import LossInputs, Step, StepColumns, Trajectory
from tests.helpers import make_columns


def columns(episode_rewards, valid, groups, trajs, steps=None) -> StepColumns:
    return make_columns(groups, trajs, episode_rewards, valid=valid, steps=steps)


# ------------------------------------------------------------------------------------------ estimator
def test_grpo_estimator_hand_derived():
    # one group: a won trajectory of 1 step (score 10) and a lost one of 2 steps, one of them invalid (-0.1, 0)
    cols = columns([10.0, 0.0, 0.0], [True, False, True], [0, 0, 0], [0, 1, 1], [0, 0, 1])
    scores = [10.0, -0.1, 0.0]
    mu = sum(scores) / 3
    sd = (sum((s - mu) ** 2 for s in scores) / 2) ** 0.5
    assert GRPO()(cols).tolist() == pytest.approx([(s - mu) / (sd + 1e-6) for s in scores], rel=1e-6)
    # trajectory level, mean values: trajectory values 10 and -0.05
    tv = [10.0, -0.05]
    mu_t, sd_t = sum(tv) / 2, ((tv[0] - tv[1]) ** 2 / 2) ** 0.5
    got = GRPO(level="trajectory")(cols).tolist()
    assert got == pytest.approx([(s - mu_t) / (sd_t + 1e-6) for s in scores], rel=1e-6)


@pytest.mark.parametrize("level, value, norm", [("cross_step", "mean", True), ("trajectory", "first", False), ("trajectory", "mean", True)])
def test_grpo_estimator_is_the_functions(level, value, norm):
    g = torch.Generator().manual_seed(0)
    n = 40
    groups = torch.randint(0, 4, (n,), generator=g)
    trajs = torch.randint(0, 3, (n,), generator=g)
    won = torch.rand(n, generator=g) < 0.3
    rewards = 10.0 * won.float()
    valid = torch.rand(n, generator=g) < 0.8
    cols = columns(rewards.tolist(), valid.tolist(), groups.tolist(), trajs.tolist())
    scores = step_scores(rewards, valid, invalid_penalty=0.1)
    if level == "cross_step":
        want = grpo_advantages(scores, groups, norm_by_std=norm)
    else:
        want = trajectory_grpo_advantages(scores, groups, trajs, norm_by_std=norm, traj_value=value)
    assert torch.equal(GRPO(level=level, trajectory_value=value, norm_by_std=norm)(cols), want)


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"level": "episode"}, "cross_step, trajectory"), ({"trajectory_value": "last"}, "mean, first"),
     ({"invalid_penalty": -1.0}, "invalid_penalty"), ({"eps": float("nan")}, "eps")],
)
def test_grpo_estimator_refuses_bad_knobs(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GRPO(**kwargs)


# ------------------------------------------------------------------------------------ loss, transforms
def inputs(lam: float = 0.5, has_context=(True, False)) -> LossInputs:
    g = torch.Generator().manual_seed(1)
    n, t = 2, 4
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    return LossInputs(
        logprobs=(-1.0 - torch.rand(n, t, generator=g)).requires_grad_(True),
        old_logprobs=-1.0 - torch.rand(n, t, generator=g),
        advantages=torch.tensor([[1.5], [-0.7]]) * mask,
        response_mask=mask,
        action_mask=torch.tensor([[0.0, 1, 1, 0], [0, 1, 0, 0]]),
        teacher_logprobs=-0.5 - torch.rand(n, t, generator=g),
        has_context=torch.tensor(has_context),
        entropy=torch.rand(n, t, generator=g),
        lam=lam,
    )


def test_ppo_clip_is_the_function_and_asks_for_entropy_only_with_a_bonus():
    x = inputs()
    loss, stats = PPOClip(clip_high=0.28, entropy_coef=0.01)(x)
    want, want_stats = ppo_clip_loss(
        x.logprobs, x.old_logprobs, x.advantages, x.response_mask, clip_high=0.28, entropy=x.entropy, entropy_coef=0.01
    )
    assert torch.equal(loss, want) and stats == want_stats
    assert PPOClip().uses_entropy and not PPOClip(entropy_coef=0.0).uses_entropy
    with pytest.raises(ValueError, match="clip_low must be a float in \\[0, 1\\), got 1.0"):
        PPOClip(clip_low=1.0)
    with pytest.raises(ValueError, match="clip_c must be a finite float > 1"):
        PPOClip(clip_c=1.0)


def test_serl_reweight_is_the_function_with_the_chosen_student_logprob():
    x = inputs()
    for choice, student in (("old", x.old_logprobs), ("current", x.logprobs.detach())):
        got, stats = SerlReweight(weight_clip=0.2, student_logprob=choice)(x)
        want, want_stats = serl_reweight(
            x.advantages, student, x.teacher_logprobs, x.response_mask, x.action_mask, x.has_context, lam=0.5, weight_clip=0.2
        )
        assert torch.equal(got, want) and stats == want_stats
    # row 0 (context, A = 1.5): its two action tokens move; row 1 (no context) keeps A
    got, _ = SerlReweight()(x)
    assert not torch.equal(got[0, 1:3], x.advantages[0, 1:3]) and torch.equal(got[1], x.advantages[1])


def test_serl_reweight_is_the_identity_at_lambda_zero_or_without_context_and_none_always():
    for x in (inputs(lam=0.0), inputs(has_context=(False, False))):
        got, stats = SerlReweight()(x)
        assert got is x.advantages and stats == {}
    x = inputs()
    got, stats = NoReweight()(x)
    assert got is x.advantages and stats == {}
    assert SerlReweight.uses_teacher and not NoReweight.uses_teacher


# --------------------------------------------------------------------------------------------- columns
def _step(i: int, state: str, reward: float = 0.0, valid: bool = True, truncated: bool = False) -> Step:
    return Step(
        step_id=i, observation=f"obs {state}", prompt="", admissible=(), prompt_ids=[1], response_ids=[5] * (i + 2),
        response_logprobs=[-1.0] * (i + 2), response_text="", action="", valid=valid, feedback="", next_prompt="",
        reward=reward, done=False, state=state, truncated=truncated,
    )


def test_step_columns_hand_derived():
    # group 0: trajectory 0 visits states a, b; trajectory 1 visits a, c, a (won). group 1: one trajectory, state a.
    t00 = Trajectory(group_id=0, traj_id=0, game="g", task_type="", task="", steps=[_step(0, "a"), _step(1, "b", valid=False)])
    t01 = Trajectory(group_id=0, traj_id=1, game="g", task_type="", task="",
                     steps=[_step(0, "a"), _step(1, "c", truncated=True), _step(2, "a", reward=10.0)], won=True)
    t10 = Trajectory(group_id=1, traj_id=0, game="h", task_type="", task="", steps=[_step(0, "a")])
    cols = step_columns([t00, t01, t10])
    assert cols.group_ids.tolist() == [0, 0, 0, 0, 0, 1]
    assert cols.traj_ids.tolist() == [0, 0, 1, 1, 1, 0]
    assert cols.step_ids.tolist() == [0, 1, 0, 1, 2, 0]
    assert cols.episode_rewards.tolist() == [0.0, 0.0, 10.0, 10.0, 10.0, 0.0]
    assert cols.step_rewards.tolist() == [0.0, 0.0, 0.0, 0.0, 10.0, 0.0]
    assert cols.valid.tolist() == [True, False, True, True, True, True]
    # within group 0: a -> 0, b -> 1, c -> 2 (a state met twice is one anchor); group 1's a is a new id
    assert cols.anchor_ids.tolist() == [0, 1, 0, 2, 0, 3]
    assert cols.response_lengths.tolist() == [2, 3, 2, 3, 4, 2]
    assert cols.truncated.tolist() == [False, False, False, True, False, False]
    assert len(cols) == 6
