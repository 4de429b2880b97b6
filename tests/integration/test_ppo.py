"""PPO with a critic through the real trainer on the tiny model and generated ALFWorld games.

* ``algorithm=ppo``: the critic's values reach the estimator, the head learns, every ``critic/*`` metric is
  documented; a run killed after its first step resumes with the critic's head and AdamW state and its second step
  equals the uninterrupted run's;
* ``algorithm/critic=model`` trains a separate copy of the policy next to the policy;
* the config check: GAE without a critic, a critic without GAE (before any model loads).
"""

from __future__ import annotations

import pytest
import torch

from serl.build import ConfigError, build_trainer, validate
from tests.helpers import TINY_RUN, compose_cfg, documented_metric_patterns

PPO = [*TINY_RUN, "algorithm=ppo", "feedback=none"]


def _trainer(tmp_path, name, *overrides):
    return build_trainer(compose_cfg([*PPO, *overrides]), tmp_path / name)


def test_ppo_trains_its_critic_and_resumes_exactly(tmp_path):
    full = _trainer(tmp_path, "full", "steps=2")
    full.train()
    full.tracker.close()
    first, second = full.history
    assert first["critic/values_mean"] == 0.0  # the zero-initialised head
    assert second["critic/values_mean"] != 0.0  # trained after step 1 (the tiny model's steps are invalid: r' = -0.1)
    assert first["advantage/max"] > first["advantage/min"]  # GAE differs between steps of one episode
    patterns = documented_metric_patterns()
    assert not [n for n in first if not any(p.match(n) for p in patterns)]

    first_only = _trainer(tmp_path, "first", "steps=1")
    first_only.train()
    first_only.tracker.close()
    resumed = _trainer(tmp_path, "resumed", "steps=2", f"resume={tmp_path / 'first'}")
    resumed.train()
    resumed.tracker.close()
    assert len(resumed.history) == 1
    for key in ("critic/values_mean", "critic/value_loss", "critic/returns_mean", "actor/pg_loss", "rollout/tokens"):
        assert resumed.history[0][key] == pytest.approx(second[key], abs=1e-6), key
    for k, t in full.critic.state_tensors().items():
        assert torch.allclose(resumed.critic.state_tensors()[k], t, atol=1e-6), k
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_separate_critic_model_trains_next_to_the_policy(tmp_path):
    trainer = _trainer(tmp_path, "model", "steps=1", "algorithm/critic=model", "algorithm.critic.lr=1e-3")
    assert trainer.critic.trunk is not trainer.model
    policy = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trunk = {k: v.clone() for k, v in trainer.critic.trunk.state_dict().items()}
    trainer.train()
    trainer.tracker.close()
    assert any(not torch.equal(policy[k], v) for k, v in trainer.model.state_dict().items())
    assert any(not torch.equal(trunk[k], v) for k, v in trainer.critic.trunk.state_dict().items())


@pytest.mark.parametrize("overrides, message", [
    (["algorithm/critic=none"], "reads a critic's state values, but algorithm/critic is none"),
    (["algorithm=grpo", "algorithm/critic=head"], "never reads: set algorithm/critic=none"),
    (["algorithm.critic.trunk=both"], "trunk"),
])
def test_critic_config_errors_name_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg([*PPO, *overrides]))
