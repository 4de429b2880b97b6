"""Evaluation on held-out games (serl/evaluation.py, scripts/eval.py, ``eval_every`` in training).

* the entry point evaluates the tiny model on two generated games and writes eval.json, metrics.jsonl and
  a summary; bad values fail before any model loads;
* ``evaluate`` plays the first n games of the sorted eval pool exactly once each, none from the training
  pool, at the evaluation's temperature, and leaves the worker and the global RNG as it found them;
* the generated train and eval pools are disjoint in game files and in the RNG keys the games come from;
* a training checkpoint is evaluated with its own weights;
* the trainer with ``eval_every=1`` logs ``eval/*`` at every step without changing the training itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from serl.build import build_policy, build_suite, build_trainer, build_worker
from serl.evaluation import evaluate
from tests.helpers import ROOT, TINY_RUN, compose_cfg, documented_metric_patterns

EVAL_KEYS = (
    "eval/success_rate",
    "eval/valid_action_ratio",
    "eval/episode_length_mean",
    "eval/n_games",
    "eval/tokens_per_s",
    "time/eval_s",
)
TINY_EVAL = ["model=tiny", "n_games=2", "max_turns=2", "rollout.max_new_tokens=8", "logger=jsonl"]


def _eval_script(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_entry_point_writes_eval_json_and_rejects_bad_values(tmp_path):
    run_dir = tmp_path / "eval"
    out = _eval_script(*TINY_EVAL, f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-4000:]

    record = json.loads((run_dir / "eval.json").read_text())
    assert {"run_name", "model", "settings", "choices", "env", "metrics", "games"} <= set(record)
    assert record["model"]["model_path"].endswith("tiny-qwen2-h32-seed0") and record["model"]["checkpoint"] is None
    assert record["settings"] == {
        "seed": 0, "n_games": 2, "temperature": 0.4, "max_turns": 2, "max_new_tokens": 8, "top_p": 1.0
    }
    assert record["choices"] == {"env": "alfworld", "model": "tiny", "rollout": "hf", "logger": "jsonl"}
    m, games = record["metrics"], record["games"]
    for key in EVAL_KEYS:
        assert key in m, key
    assert m["eval/n_games"] == 2 and len(games) == 2
    for g in games:
        assert set(g) == {"game", "task_type", "task", "won", "length", "valid_ratio"}
        assert "/valid_seen/" in g["game"] and 1 <= g["length"] <= 2
        assert f"eval/{g['task_type']}/success_rate" in m
    assert m["eval/success_rate"] == sum(g["won"] for g in games) / 2
    assert m["eval/episode_length_mean"] == sum(g["length"] for g in games) / 2

    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 1 and logged[0]["step"] == 0 and logged[0]["eval/n_games"] == 2
    assert json.loads((run_dir / "summary.json").read_text())["eval/success_rate"] == m["eval/success_rate"]
    assert "success rate" in out.stdout and str(run_dir / "eval.json") in out.stdout

    bad = _eval_script(*TINY_EVAL, "temperature=-0.1", f"hydra.run.dir={tmp_path / 'bad1'}")
    assert bad.returncode == 2 and "temperature=-0.1" in bad.stderr and "0 = greedy" in bad.stderr
    bad = _eval_script(*TINY_EVAL, "n_games=3", "env.eval_pool=2", f"hydra.run.dir={tmp_path / 'bad2'}")
    assert bad.returncode == 2 and "env.eval_pool" in bad.stderr
    assert not (tmp_path / "bad2" / "eval.json").exists()


class _Recorder:
    """Records the game of every env reset and the temperature of every generation call."""

    def __init__(self, suite, worker, monkeypatch):
        self.games: list[str] = []
        self.temperatures: list[float] = []
        make_env, generate = suite.make_env, worker.generator.generate

        def recording_make_env(*args, **kwargs):
            env = make_env(*args, **kwargs)
            reset = env.reset

            def recording_reset(*a, **k):
                self.games.append(k["options"]["game"])
                return reset(*a, **k)

            env.reset = recording_reset
            return env

        def recording_generate(prompts, max_new_tokens, temperature, top_p, seeds):
            self.temperatures.append(temperature)
            return generate(prompts, max_new_tokens, temperature, top_p, seeds)

        monkeypatch.setattr(suite, "make_env", recording_make_env)
        monkeypatch.setattr(worker.generator, "generate", recording_generate)


def _tiny_worker(*overrides):
    # envs in this process, so the recorder below sees every reset
    cfg = compose_cfg([*TINY_RUN, "env.eval_pool=2", "env_workers.processes=0", *overrides])
    suite = build_suite(cfg)
    model, tokenizer, source = build_policy(cfg)
    return cfg, suite, build_worker(cfg, model, tokenizer, suite, source.path)


def test_evaluate_plays_each_held_out_game_once(monkeypatch):
    cfg, suite, worker = _tiny_worker()
    rec = _Recorder(suite, worker, monkeypatch)
    eval_pool = sorted(suite.pool(suite.eval_split))
    rng_before = torch.get_rng_state()

    result = evaluate(worker, suite, n_games=2, seed=5, temperature=0.4, max_turns=2)

    assert rec.games == eval_pool[:2] and len(set(rec.games)) == 2  # each game once, sorted pool order
    assert not set(rec.games) & set(suite.pool("train"))
    assert [g.game for g in result.games] == rec.games
    assert rec.temperatures and set(rec.temperatures) == {0.4}
    assert worker.temperature == float(cfg.rollout.temperature) == 0.7  # the worker is unchanged (CPU preset)
    assert torch.equal(torch.get_rng_state(), rng_before)  # training's RNG stream is not disturbed
    for key in EVAL_KEYS:
        assert key in result.metrics, key
    assert result.metrics["eval/n_games"] == 2.0

    # greedy decoding is deterministic: the same episodes again
    first = evaluate(worker, suite, n_games=1, seed=0, temperature=0.0, max_turns=2)
    again = evaluate(worker, suite, n_games=1, seed=1, temperature=0.0, max_turns=2)
    assert first.games == again.games and rec.temperatures[-1] == 0.0

    with pytest.raises(ValueError, match=r"n_games=3 exceeds the 2 games.*env\.eval_pool"):
        evaluate(worker, suite, n_games=3, seed=0, temperature=0.4, max_turns=2)


def test_generated_train_and_eval_pools_are_disjoint_in_files_and_rng_keys():
    """Generated game ``i`` of ``(split, seed)`` is drawn by one RNG per attempt k, seeded with the string
    ``serl.alfworld.synth|v<VERSION>|<split>|<seed>|<i>|<k>`` (generator.attempt_rng). Every game file
    records that key; the split is part of it, so no training game shares its key with an eval game."""
    from serl.envs.alfworld.generator import build_candidate

    cfg = compose_cfg([*TINY_RUN, "env.eval_pool=2"])
    suite = build_suite(cfg)
    assert suite.source == "generated" and suite.eval_split == "valid_seen"
    pools = {"train": suite.pool("train"), suite.eval_split: suite.pool(suite.eval_split)}
    assert not set(pools["train"]) & set(pools[suite.eval_split])

    keys: dict[str, set[tuple]] = {}
    for split, games in pools.items():
        keys[split] = set()
        for path in games:
            game = json.loads(open(path).read())
            p = game["generator"]
            assert p["split"] == split and p["seed"] == int(cfg.env.seed)
            # the key reproduces the game: it is the only source of the game's randomness
            cand = build_candidate(p["split"], p["seed"], p["index"], p["attempt"])
            assert cand.problem == game["pddl_problem"]
            keys[split].add((p["version"], p["split"], p["seed"], p["index"], p["attempt"]))
        assert len(keys[split]) == len(games)
    assert not keys["train"] & keys[suite.eval_split]


def test_training_checkpoint_is_evaluated_with_its_weights(tmp_path):
    trainer = build_trainer(compose_cfg([*TINY_RUN, "steps=1", "logger=none"]), tmp_path / "run")
    trainer.train()
    trainer.tracker.close()

    cfg = compose_cfg(["model=smollm2-135m", f"model.path={tmp_path / 'run'}"])  # base model from the run
    model, _, source = build_policy(cfg)
    assert source.checkpoint == str(tmp_path / "run" / "checkpoints" / "last.safetensors") and source.checkpoint_step == 1
    assert source.path.endswith("tiny-qwen2-h32-seed0")
    trained = trainer.model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k]), k


def test_trainer_evaluates_every_step_without_changing_training(tmp_path):
    common = [*TINY_RUN, "steps=2", "eval.max_turns=2"]
    trainer = build_trainer(compose_cfg([*common, "eval_every=1", "eval.at_start=true"]), tmp_path / "eval")
    trainer.train()
    trainer.tracker.close()

    logged = [json.loads(x) for x in (tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged] == [0, 1, 2]  # step 0: the initial policy (eval.at_start)
    assert "actor/loss" not in logged[0] and logged[0]["eval/n_games"] == 1.0
    logged = logged[1:]
    for line in logged:
        assert "eval/success_rate" in line and line["eval/n_games"] == 1.0 and "actor/loss" in line
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["last_eval_step"] == 2 and summary["last/eval/success_rate"] == logged[-1]["eval/success_rate"]
    for step in (0, 1, 2):
        record = json.loads((tmp_path / "eval" / "evals" / f"step_{step:06d}.json").read_text())
        assert record["step"] == step and len(record["games"]) == 1
        assert record["settings"] == {"n_games": 1, "temperature": 0.4, "max_turns": 2, "seed": 0}
    patterns = documented_metric_patterns()
    undocumented = [n for n in logged[0] if n != "step" and not any(p.match(n) for p in patterns)]
    assert not undocumented, undocumented

    # every eval_every-th step and the last one
    trainer.s.eval_every, trainer.s.steps = 2, 5
    due = []
    for step in range(1, 6):
        trainer.step = step
        due.append(trainer._eval_due())
    assert due == [False, True, False, True, True]

    # the same run without evaluation trains identically
    plain = build_trainer(compose_cfg([*common, "eval_every=0"]), tmp_path / "plain")
    plain.train()
    plain.tracker.close()
    assert "eval/success_rate" not in plain.history[-1] and plain.history[-1].get("time/eval_s") is None
    for key in ("rollout/tokens", "episode/reward/mean", "actor/loss", "actor/pg_loss"):
        assert plain.history[-1][key] == pytest.approx(trainer.history[-1][key], abs=1e-6), key
    for (k, a), b in zip(plain.model.state_dict().items(), trainer.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
