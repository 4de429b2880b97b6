"""PPO's critic (serl/critic.py) on the tiny model: the batched last-token features against one prompt at a time,
the head trained towards its targets without touching the policy, the separate trunk, and its state through a
checkpoint (a resumed critic continues exactly; a checkpoint without one, or with another kind, is refused)."""

from __future__ import annotations

import pytest
import torch

from serl.checkpoint import restore_training_state, save_training_state
from serl.critic import NoCritic, ValueCritic
from serl.policy.logprobs import last_hidden_states
from serl.types import Step
from tests.helpers import make_columns

PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15], [16, 17, 18, 19, 20, 21, 22]]


def steps(prompts=PROMPTS) -> list[Step]:
    return [Step(step_id=0, observation="", prompt="", admissible=(), prompt_ids=p, response_ids=[1],
                 response_logprobs=[0.0], response_text="", action="", valid=True, feedback="", next_prompt="",
                 reward=0.0, done=True) for p in prompts]


class Targets:
    """An estimator stand-in: fixed value targets."""

    def __init__(self, targets):
        self.targets = torch.tensor(targets)

    def value_targets(self, cols):
        return self.targets


def columns(values):
    n = len(values)
    return make_columns([0] * n, list(range(n)), [0.0] * n, values=values.tolist())


def test_last_hidden_states_match_one_prompt_at_a_time(tiny_policy):
    model, tok = tiny_policy
    batched = last_hidden_states(model, PROMPTS, tok.pad_token_id, micro_batch_size=3)
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):
            alone = model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0, -1]
            assert torch.allclose(batched[i], alone.float(), atol=1e-5), i


def test_head_learns_the_targets_and_leaves_the_policy_alone(tiny_policy):
    model, tok = tiny_policy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    critic = ValueCritic(model, tok.pad_token_id, trunk="policy", lr=0.05, epochs=20, value_clip=None)
    targets = Targets([1.0, -1.0, 2.0, 0.5])
    v0 = critic.values(steps())
    assert v0.tolist() == [0.0] * 4  # zero-initialised head
    m1 = critic.update(columns(v0), targets)
    v1 = critic.values(steps())
    m2 = critic.update(columns(v1), targets)
    assert m2["critic/value_loss"] < m1["critic/value_loss"]
    assert float((v1 - targets.targets).abs().mean()) < float((v0 - targets.targets).abs().mean())
    assert set(m1) == {"critic/value_loss", "critic/value_clipfrac", "critic/value_error", "critic/values_mean",
                       "critic/returns_mean", "critic/explained_variance", "critic/grad_norm"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError, match="values first"):
        critic.update(columns(v1), targets)  # the states of that values() call were used


def test_separate_trunk_trains_a_copy(tiny_policy):
    model, tok = tiny_policy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    critic = ValueCritic(model, tok.pad_token_id, trunk="separate", lr=1e-3, epochs=2, micro_batch_size=3)
    assert critic.trunk is not model
    copy_before = {k: v.clone() for k, v in critic.trunk.state_dict().items()}
    v = critic.values(steps())
    critic.update(columns(v), Targets([1.0, -1.0, 2.0, 0.5]))
    assert any(not torch.equal(copy_before[k], p) for k, p in critic.trunk.state_dict().items())
    assert all(torch.equal(before[k], p) for k, p in model.state_dict().items())


def test_critic_state_through_a_checkpoint_continues_exactly(tiny_policy, tmp_path):
    model, tok = tiny_policy
    targets = Targets([1.0, -1.0, 2.0, 0.5])
    make = lambda: ValueCritic(model, tok.pad_token_id, lr=0.05, epochs=3)  # noqa: E731
    a = make()
    a.update(columns(a.values(steps())), targets)
    lin = torch.nn.Linear(2, 1)  # a stand-in policy: the checkpoint's model part is not under test here
    opt = torch.optim.AdamW(lin.parameters())
    save_training_state(tmp_path / "ckpt", step=1, model=lin, optimizer=opt, teacher=None, critic=a.state_tensors())
    save_training_state(tmp_path / "plain", step=1, model=lin, optimizer=opt, teacher=None)

    b = make()
    restore_training_state(tmp_path / "ckpt", model=lin, optimizer=opt, teacher=None, critic=b.load_state_tensors)
    va, vb = a.values(steps()), b.values(steps())
    assert torch.equal(va, vb)
    ma, mb = a.update(columns(va), targets), b.update(columns(vb), targets)  # AdamW's moments came along
    assert ma == mb and torch.equal(a.values(steps()), b.values(steps()))

    with pytest.raises(ValueError, match="holds no critic state"):
        restore_training_state(tmp_path / "plain", model=lin, optimizer=opt, teacher=None, critic=make().load_state_tensors)
    other = ValueCritic(model, tok.pad_token_id, trunk="separate")
    with pytest.raises(ValueError, match="does not match this run's"):
        restore_training_state(tmp_path / "ckpt", model=lin, optimizer=opt, teacher=None, critic=other.load_state_tensors)


def test_no_critic_is_inert():
    none = NoCritic(model=None, pad_id=0)
    assert not none.enabled and none.values(steps()) is None and none.state_tensors() is None
    assert none.update(make_columns([0], [0], [0.0]), object()) == {}
