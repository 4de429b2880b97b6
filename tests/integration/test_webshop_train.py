"""`env=webshop` through the real entry point: 2 SERL steps (state-diff feedback, anchor insertion) on the tiny
model and the bundled catalog, logging WebShop's metrics (docs/webshop.md)."""

from __future__ import annotations

import json
import subprocess
import sys

from serl.envs.webshop.suite import WebshopSuite
from serl.feedback.state_diff import NO_CHANGE, StateDiffFeedback
from serl.types import Step, Trajectory
from tests.helpers import ROOT, TINY_RUN


def test_webshop_two_steps_state_diff_anchor(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            *TINY_RUN,
            "env=webshop",
            "steps=2",
            "feedback=state_diff",
            "insertion=anchor",
            "insertion.key=state_change",
            "rollout.max_new_tokens=24",
            "eval_every=2",
            "eval.n_games=1",
            "eval.max_turns=2",
            "teacher_log.every=1",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if "actor/loss" in x]
    assert [x["step"] for x in train] == [1, 2]
    for key in ("episode/success_rate", "episode/score", "serl/lambda", "episode/valid_action_ratio"):
        assert key in train[0], key
    assert 0.0 <= train[0]["episode/score"] <= 1.0
    assert any("eval/score" in x for x in lines), "the evaluation logs WebShop's task score"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is True and summary["choices"]["env"] == "webshop"
    # the teacher pass ran with the state-diff source (the tiny model fails every goal, so no sample has an
    # advantage to reweight and no context is built; the page diffs themselves are checked below)
    records = [json.loads(x) for p in sorted(run_dir.glob("teacher/step_*.jsonl")) for x in p.read_text().splitlines()]
    assert records and all(r["sources"] == ["anchor", "state_diff"] for r in records)


def test_webshop_state_diff_shows_the_page_change():
    # the env's state (the page) through the seam: a search turns the search page into a results page, an
    # option click adds the selection line, and an invalid click is the env's no-op
    suite = WebshopSuite(train_pool=4, eval_pool=1)
    game = suite.pool("train")[0]
    plan = suite.expert_plan(game)
    env = suite.make_env(max_episode_steps=len(plan) + 2)
    _obs, info = env.reset(options={"game": game})
    steps = []
    for action in [plan[0], "click[no such button]", *plan[1:-1]]:
        state = info["state"]
        obs, _r, _t, _u, info = env.step(action)
        steps.append(Step(len(steps), "", "", (), [0], [1], [0.0], "", action, True, obs, "", 0.0, False,
                          state=state, next_state=info["state"], noop=info["noop"]))
    group = [Trajectory(0, 0, game, "", "", steps)]
    fb = StateDiffFeedback()
    search = fb(group, 0, 0)
    assert search.startswith("- ") and "+ " in search and "[SEP]" not in search  # page units, removed then added
    assert fb(group, 0, 1) == NO_CHANGE and steps[1].noop  # the invalid click changed nothing
    option_steps = [i for i, s in enumerate(steps) if s.action not in plan[:2] and i > 1]
    for i in option_steps[1:]:  # after opening the product: each option click shows the selection it made
        assert "+ Selected options:" in fb(group, 0, i) or "Selected options" in fb(group, 0, i)
