"""Env hosting (serl/envs/hosting.py): an env that raises or hangs is recovered by replay or dropped, counted,
and never freezes the caller; the rollout worker drops a group left with fewer than two episodes."""

from __future__ import annotations

import time

import pytest

from serl.envs.hosting import EpisodeEnvs, Failure, InlineHost, ProcessHost
from tests.faults import CountdownSuite, Fault, FaultySuite


def _play(envs: EpisodeEnvs, episodes, turns: int):
    """Reset ``episodes`` [(id, game, seed)] and step every live one ``turns`` times with action 'a<turn>'."""
    out = {eid: [obs] for eid, (obs, _) in envs.reset(episodes).items()}
    for turn in range(turns):
        live = [e for e in out if e not in envs.dropped]
        for eid, (obs, *_rest) in envs.step({e: f"a{turn}" for e in live}).items():
            out[eid].append(obs)
    return out


CLEAN = {e: ["obs 0", "obs 1 after a0", "obs 2 after a1", "obs 3 after a2"] for e in ("x", "y")}


def test_inline_raise_is_recovered_by_replay(tmp_path):
    suite = FaultySuite(CountdownSuite(), (Fault("raise", at_step=2, game="g9", seed=1, marker_dir=str(tmp_path)),))
    envs = EpisodeEnvs(InlineHost(suite), max_steps=9, retries=1)
    out = _play(envs, [("x", "g9", 0), ("y", "g9", 1)], turns=3)
    assert out == CLEAN  # the replayed episode continues exactly where it failed
    assert envs.errors == 1 and envs.dropped == []


def test_inline_env_that_keeps_raising_is_dropped_with_its_game_named(tmp_path):
    suite = FaultySuite(CountdownSuite(), (Fault("raise", at_step=2, seed=1, times=0),))
    envs = EpisodeEnvs(InlineHost(suite), max_steps=9, retries=1)
    with pytest.warns(RuntimeWarning, match=r"env step failed for game g9 \(seed 1, after 1 actions\).*injected env fault"):
        out = _play(envs, [("x", "g9", 0), ("y", "g9", 1)], turns=3)
    assert out["x"] == CLEAN["x"] and envs.dropped == ["y"]
    assert envs.errors == 2  # the first failure, then the same failure again after one recovery


def test_reset_that_raises_is_retried(tmp_path):
    suite = FaultySuite(CountdownSuite(), (Fault("raise_on_reset", seed=0, marker_dir=str(tmp_path)),))
    envs = EpisodeEnvs(InlineHost(suite), max_steps=9, retries=1)
    assert _play(envs, [("x", "g9", 0)], turns=1) == {"x": ["obs 0", "obs 1 after a0"]}
    assert envs.errors == 1 and not envs.dropped


def test_process_host_survives_a_hang_and_replays_in_a_fresh_worker(tmp_path):
    suite = FaultySuite(CountdownSuite(), (Fault("hang", at_step=2, seed=1, marker_dir=str(tmp_path)),))
    host = ProcessHost(suite, processes=2, timeout_s=3.0, startup_timeout_s=30.0)
    try:
        envs = EpisodeEnvs(host, max_steps=9, retries=1)
        t0 = time.monotonic()
        out = _play(envs, [("x", "g9", 0), ("y", "g9", 1)], turns=3)
        assert out == CLEAN and envs.errors >= 1 and envs.dropped == []
        assert host.restarts >= 1 and time.monotonic() - t0 < 60  # one timeout, not the 1 h hang
    finally:
        host.close()


def test_process_host_drops_an_env_that_always_hangs(tmp_path):
    suite = FaultySuite(CountdownSuite(), (Fault("hang", at_step=1, seed=1, times=0),))
    host = ProcessHost(suite, processes=1, timeout_s=2.0, startup_timeout_s=30.0)
    try:
        envs = EpisodeEnvs(host, max_steps=9, retries=1)
        with pytest.warns(RuntimeWarning, match=r"game g9 \(seed 1.*timeout: no answer within 2 s"):
            out = _play(envs, [("x", "g9", 0), ("y", "g9", 1)], turns=2)
        assert envs.dropped == ["y"]
        # x shared the killed worker: its env was lost and recovered by replay, so it still finished
        assert out["x"] == CLEAN["x"][:3]
    finally:
        host.close()


def test_process_host_reports_a_dead_worker_as_a_crash():
    host = ProcessHost(CountdownSuite(), processes=1, timeout_s=10.0)
    try:
        (obs, info), = host.run([(1, "open", ("g3", 0, 5))])
        assert obs == "obs 0"
        host._workers[0].process.kill()
        host._workers[0].process.wait(5)
        (result,) = host.run([(1, "step", ("go",))])
        assert isinstance(result, Failure) and result.kind in ("crash", "lost")
        (again,) = host.run([(2, "open", ("g3", 0, 5))])  # a fresh worker takes over
        assert again[0] == "obs 0"
    finally:
        host.close()


def test_rollout_drops_a_group_left_with_one_episode(tmp_path):
    from serl.rollout.base import Generation, RolloutWorker

    class Scripted:
        def generate(self, prompts, max_new_tokens, temperature, top_p, seeds):
            return [Generation([5], [-0.1], "look", "stop") for _ in prompts]

        def sync_weights(self, model):
            pass

    class Tok:
        def apply_chat_template(self, messages, add_generation_prompt, tokenize, **kw):
            return [1, 2, 3]

    suite = FaultySuite(CountdownSuite(max_turns=3), (Fault("raise", at_step=1, game="g9", seed=1, times=0),))
    worker = RolloutWorker(Scripted(), Tok(), suite, max_new_tokens=4, env_retries=0)
    with pytest.warns(RuntimeWarning, match="game g9"):
        # game 0 (g9): episodes with seeds 0, 1; seed 1 always fails -> group 0 keeps one episode -> dropped
        rollout = worker.collect(["g9", "g2"], group_size=2, seed=0)
    assert [(t.group_id, t.traj_id) for t in rollout.trajectories] == [(1, 0), (1, 1)]
    assert rollout.stats["env_errors"] == 1
    assert rollout.stats["dropped_episodes"] == 2 and rollout.stats["dropped_groups"] == 1
