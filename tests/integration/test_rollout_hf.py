"""RolloutWorker + HFGenerator on the tiny model (docs/reference.md §1.3).

A scripted toy suite checks the loop's bookkeeping exactly (no ghost steps, history, next_prompt, stats,
per-episode env and sampling seeds); the real ALFWorld suite (generated games, real TextWorld engine) checks
the records end to end. Sampling is batch-invariant: a prompt's sample is the same alone or among other,
longer prompts, and collecting the games in shards (``first_group``) gives the trajectories of one call.
"""

from __future__ import annotations

import math
from typing import Sequence

import gymnasium as gym
import pytest

from serl.envs.response import ThinkActionFormat
from serl.policy.models import chat_prompt_ids
from serl.rollout.base import Generation, RolloutWorker, episode_seed
from serl.rollout.hf import HFGenerator


class _CountdownEnv(gym.Env):
    """Text env: the game id 'g<k>' ends (won) after k steps, whatever the actions are."""

    def __init__(self):
        self.k = self.t = 0
        self.closed = False
        self.seed = None

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.t, self.seed = int(options["game"][1:]), 0, seed
        return "obs 0", self._info(False)

    def _info(self, won):
        return {
            "admissible_commands": [f"go to desk {self.t + 1}", "look"],
            "won": won,
            "task": f"count to {self.k}",
            "task_type": "count",
            "game": f"g{self.k}",
        }

    def step(self, action):
        self.t += 1
        won = self.t >= self.k
        return f"obs {self.t} after {action}", 10.0 * won, won, False, self._info(won)

    def close(self):
        self.closed = True


class _ToySuite:
    name = "toy"
    history_length = 2
    response_format = ThinkActionFormat(charset="any")  # an untagged response: its last 30 characters, invalid

    def __init__(self, max_turns: int):
        self.max_turns = max_turns
        self.envs: list[_CountdownEnv] = []

    def make_env(self, max_episode_steps=None):
        self.envs.append(_CountdownEnv())
        return self.envs[-1]

    def render_prompt(self, task, history: Sequence[tuple[str, str]], step_id, observation, admissible):
        hist = " | ".join(f"[{o} -> {a}]" for o, a in history)
        return f"Task: {task}. Step {step_id}. History: {hist}. Now: {observation}. Options: {list(admissible)}"

    def train_games(self, n, seed):
        return [f"g{i + 1}" for i in range(n)]

    def success_metrics(self, trajectories):
        return {"success_rate": sum(t.won for t in trajectories) / max(1, len(trajectories))}


class _RecordingGenerator:
    """Wraps a generator and records the batch sizes and seeds it is called with."""

    def __init__(self, inner):
        self.inner, self.batches, self.seeds = inner, [], []

    def generate(self, prompts, max_new_tokens, temperature, top_p, seeds):
        self.batches.append(len(prompts))
        self.seeds.append(list(seeds))
        return self.inner.generate(prompts, max_new_tokens, temperature, top_p, seeds)

    def sync_weights(self, model):
        self.inner.sync_weights(model)


def test_rollout_bookkeeping_on_toy_suite(tiny_policy):
    model, tok = tiny_policy
    suite = _ToySuite(max_turns=3)
    gen = _RecordingGenerator(HFGenerator(model, tok))
    worker = RolloutWorker(gen, tok, suite, max_new_tokens=6, temperature=1.0)
    seen = []
    rollout = worker.collect(["g1", "g5"], group_size=2, seed=0, progress=lambda d, n: seen.append((d, n)))
    trajs = rollout.trajectories
    assert [(t.group_id, t.traj_id, t.game) for t in trajs] == [(0, 0, "g1"), (0, 1, "g1"), (1, 0, "g5"), (1, 1, "g5")]
    # game g1 ends after 1 step (no ghost steps afterwards); g5 is cut at max_turns=3
    assert [t.length for t in trajs] == [1, 1, 3, 3]
    assert [t.won for t in trajs] == [True, True, False, False]
    assert trajs[0].steps[0].done and trajs[0].steps[0].reward == 10.0 and trajs[0].episode_reward == 10.0
    assert gen.batches == [4, 2, 2]  # one batched call per turn over the active episodes
    # per-episode seeds: env seed + e, sampling seed episode_seed(seed, e, turn) of global episode e = g·G + j
    assert sorted(env.seed for env in suite.envs) == [0, 1, 2, 3]
    assert gen.seeds[0] == [episode_seed(0, e, 0) for e in range(4)]
    assert gen.seeds[1:] == [[episode_seed(0, e, t) for e in (2, 3)] for t in (1, 2)]  # g5's episodes
    assert seen[-1] == (4, 4)
    assert all(env.closed for env in suite.envs) and len(suite.envs) == 4
    t = trajs[2]
    for k, s in enumerate(t.steps):
        assert s.step_id == k
        assert s.prompt_ids == chat_prompt_ids(tok, s.prompt)
        assert s.observation == (f"obs {k} after {t.steps[k - 1].action}" if k else "obs 0")
        assert s.feedback == f"obs {k + 1} after {s.action}"
        assert s.admissible == (f"go to desk {k + 1}", "look")
        assert len(s.response_ids) == len(s.response_logprobs) >= 1
        assert s.action == s.response_text.lower()[-30:] and s.valid is False
        assert not s.done and s.reward == 0.0
    assert t.steps[1].prompt == t.steps[0].next_prompt and t.steps[2].prompt == t.steps[1].next_prompt
    # history window H=2: step 2 shows the (observation, action) pairs of steps 0 and 1
    assert f"[obs 0 -> {t.steps[0].action}]" in t.steps[2].prompt
    assert f"[obs 1 after {t.steps[0].action} -> {t.steps[1].action}]" in t.steps[2].prompt
    # next_prompt of the last step: step 3, history = steps 1 and 2 only (window H=2)
    assert "Step 3." in t.steps[2].next_prompt and "[obs 0 ->" not in t.steps[2].next_prompt
    stats = rollout.stats
    assert stats["env_errors"] == stats["dropped_episodes"] == stats["dropped_groups"] == 0
    assert stats["tokens_generated"] == sum(len(s.response_ids) for tr in trajs for s in tr.steps)
    assert stats["generate_s"] > 0 and stats["env_s"] >= 0


def test_rollout_same_seed_same_trajectories(tiny_policy):
    model, tok = tiny_policy
    worker = RolloutWorker(HFGenerator(model, tok), tok, _ToySuite(max_turns=2), max_new_tokens=5)
    a = worker.collect(["g3"], group_size=2, seed=11).trajectories
    b = worker.collect(["g3"], group_size=2, seed=11).trajectories
    assert [[s.response_ids for s in t.steps] for t in a] == [[s.response_ids for s in t.steps] for t in b]


def _rollout_key(trajs):
    """What must not depend on how the games were split: ids, games, actions, sampled ids, rewards."""
    return [
        (t.group_id, t.traj_id, t.game, [(s.action, s.response_ids, s.prompt_ids, s.reward, s.done) for s in t.steps])
        for t in trajs
    ]


def _assert_same_rollouts(parts, whole):
    assert _rollout_key(parts) == _rollout_key(whole)
    for a, b in zip(parts, whole):
        for x, y in zip(a.steps, b.steps):
            assert max((abs(p - q) for p, q in zip(x.response_logprobs, y.response_logprobs)), default=0.0) < 1e-5


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_hf_sample_is_batch_invariant(tiny_policy, top_p):
    """A prompt's sample depends on its ids and seed only: the same alone and among other, longer prompts
    (left padding, other seeds, another position), and another seed gives another sample."""
    model, tok = tiny_policy
    gen = HFGenerator(model, tok)
    p = chat_prompt_ids(tok, "go to countertop 1")
    longer = [chat_prompt_ids(tok, "You arrive at fridge 1. The fridge 1 is closed. " * k) for k in (2, 5)]
    assert all(len(q) > len(p) for q in longer)
    (alone,) = gen.generate([p], 16, temperature=1.0, top_p=top_p, seeds=[42])
    batch = gen.generate([longer[0], p, longer[1], p], 16, temperature=1.0, top_p=top_p, seeds=[7, 42, 8, 43])
    assert batch[1].ids == alone.ids
    assert max(abs(a - b) for a, b in zip(batch[1].logprobs, alone.logprobs)) < 1e-5
    assert batch[3].ids != alone.ids  # the same prompt with another seed
    swapped = gen.generate([p, longer[1]], 16, temperature=1.0, top_p=top_p, seeds=[42, 8])
    assert swapped[0].ids == alone.ids and swapped[1].ids == batch[2].ids


def test_sharded_collect_equals_one_collect_on_toy_suite(tiny_policy):
    """Games of different lengths (the active batch shrinks differently per shard): shards with
    ``first_group`` give the single call's trajectories, group ids and env seeds."""
    model, tok = tiny_policy
    games, G = ["g2", "g4", "g1", "g3"], 2
    suite = _ToySuite(max_turns=3)
    worker = RolloutWorker(HFGenerator(model, tok), tok, suite, max_new_tokens=6, temperature=1.0)
    whole = worker.collect(games, G, seed=5)
    seeds_whole = sorted(env.seed for env in suite.envs)
    suite.envs.clear()
    first = worker.collect(games[:1], G, seed=5)
    rest = worker.collect(games[1:], G, seed=5, first_group=1)
    assert sorted(env.seed for env in suite.envs) == seeds_whole == list(range(5, 5 + len(games) * G))
    assert [t.group_id for t in rest.trajectories] == [1, 1, 2, 2, 3, 3]
    _assert_same_rollouts(first.trajectories + rest.trajectories, whole.trajectories)
    assert rest.stats["dropped_groups"] == rest.stats["dropped_episodes"] == 0
    with pytest.raises(ValueError, match="first_group"):
        worker.collect(games, G, seed=5, first_group=-1)


def test_rollout_refuses_long_prompts(tiny_policy):
    model, tok = tiny_policy
    suite = _ToySuite(max_turns=2)
    worker = RolloutWorker(HFGenerator(model, tok), tok, suite, max_new_tokens=4, max_prompt_tokens=10)
    with pytest.raises(ValueError, match="max_prompt_tokens=10"):
        worker.collect(["g2"], group_size=1, seed=0)


def test_generation_record():
    g = Generation(ids=[1, 2], logprobs=[-0.5, -0.1], text="ab", finish_reason="length")
    assert len(g.ids) == len(g.logprobs)


# -- the real ALFWorld suite ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def alfworld_suite():
    """The real ALFWorld suite on one generated training game.

    Data root and game cache come from the test session (tests/conftest.py: ``ALFWORLD_DATA`` is an empty
    folder, so games are generated offline under ``$SERL_CACHE``, and reused by later runs).
    """
    from serl.envs.alfworld.suite import AlfworldSuite

    suite = AlfworldSuite(max_turns=3, train_pool=1, eval_pool=1, seed=0)
    assert suite.source == "generated"
    return suite


def test_rollout_on_real_alfworld(tiny_policy, alfworld_suite):
    model, tok = tiny_policy
    suite = alfworld_suite
    games = suite.train_games(1, seed=0)
    worker = RolloutWorker(HFGenerator(model, tok), tok, suite, max_new_tokens=24, max_prompt_tokens=8192)
    rollout = worker.collect(games, group_size=2, seed=0)
    trajs = rollout.trajectories
    assert [(t.group_id, t.traj_id) for t in trajs] == [(0, 0), (0, 1)]
    for t in trajs:
        assert t.game and t.task and t.task_type
        assert 1 <= t.length <= 3
        for k, s in enumerate(t.steps):
            assert s.step_id == k
            assert len(s.prompt_ids) > 0 and s.prompt_ids == chat_prompt_ids(tok, s.prompt)
            assert 1 <= len(s.response_ids) <= 24 and len(s.response_logprobs) == len(s.response_ids)
            assert all(math.isfinite(x) and x <= 0 for x in s.response_logprobs)
            assert s.response_text == tok.decode(s.response_ids, skip_special_tokens=True)
            assert (s.action, s.valid) == suite.response_format.project(s.response_text)
            assert s.admissible and s.observation and s.feedback
            assert t.task in s.prompt
            if k < t.length - 1:
                assert not s.done  # only the last step of an episode can end it
            if k > 0:
                prev = t.steps[k - 1]
                assert s.prompt == prev.next_prompt  # next_prompt of step t is the prompt of step t+1
                assert s.observation == prev.feedback
                assert prev.action in s.prompt  # the history shows the previous action
        assert t.won == any(s.reward > 0 for s in t.steps)
    assert rollout.stats["tokens_generated"] == sum(len(s.response_ids) for t in trajs for s in t.steps)


def test_sharded_collect_equals_one_collect_on_real_alfworld(tiny_policy, alfworld_suite):
    """``collect(games[:2]) + collect(games[2:4], first_group=2) == collect(games[:4])`` on real ALFWorld:
    group ids, actions, response ids (log-probs within 1e-5)."""
    model, tok = tiny_policy
    suite = alfworld_suite
    games, G = suite.train_games(4, seed=0), 2
    worker = RolloutWorker(HFGenerator(model, tok), tok, suite, max_new_tokens=16, max_prompt_tokens=8192)
    whole = worker.collect(games[:4], G, seed=3)
    first = worker.collect(games[:2], G, seed=3)
    second = worker.collect(games[2:4], G, seed=3, first_group=2)
    assert [(t.group_id, t.traj_id) for t in second.trajectories] == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert [(t.group_id, t.traj_id) for t in whole.trajectories] == [(g, j) for g in range(4) for j in range(G)]
    _assert_same_rollouts(first.trajectories + second.trajectories, whole.trajectories)
    assert sum(len(t.steps) for t in whole.trajectories) > len(whole.trajectories)  # several turns played
