"""Expert demonstrations (serl.warmstart.demos, docs/design.md §5 "Warm start") on generated ALFWorld games.

The central check: a demonstration's prompt is byte-identical to the prompt the REAL RolloutWorker builds
at the same state. A scripted Generator replays the demonstrations' responses (tokenised with the tiny
tokenizer) through the worker on the same game; every Step.prompt must equal the demonstration's prompt,
every step must project to the expert action, and the rollout must win.
"""

from __future__ import annotations

import json

import pytest

try:  # fixtures live next to this module (tests/conftest.py is owned elsewhere)
    from tests.integration.conftest_alfworld import (  # noqa: F401
        alfworld_data_dir,
        alfworld_games,
        alfworld_synth_root,
    )
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from conftest_alfworld import alfworld_data_dir, alfworld_games, alfworld_synth_root  # noqa: F401

from serl.policy.models import chat_prompt_ids
from serl.rollout.base import Generation, RolloutWorker
from serl.envs.alfworld.demos import rationale, target_object, with_search_detours
from serl.types import Demonstration
from serl.warmstart.demos import collect_demonstrations, load_demonstrations, save_demonstrations
from serl.warmstart.sft import tokenize_demonstrations

# 4 expert steps, and 10 (more steps than history_length: the history window slides)
GAME_TYPES = ("pick_and_place_simple", "pick_two_obj_and_place")


@pytest.fixture(scope="module")
def suite():
    from serl.envs.alfworld.suite import AlfworldSuite

    s = AlfworldSuite(seed=0)
    assert s.source == "generated"
    return s


@pytest.fixture(scope="module")
def games(alfworld_games):
    return [str(alfworld_games[t]) for t in GAME_TYPES]


@pytest.fixture(scope="module")
def demos(suite, games) -> list[Demonstration]:
    return collect_demonstrations(suite, games)


class _ScriptedGenerator:
    """Generator that answers turn k with the k-th expert response, as token ids of the tiny tokenizer."""

    def __init__(self, tokenizer, responses: list[list[int]]):
        self.tokenizer = tokenizer
        self.responses = responses
        self.calls = 0

    def generate(self, prompts, max_new_tokens, temperature, top_p, seeds):
        assert len(prompts) == 1, "one episode at a time"
        ids = self.responses[self.calls]
        self.calls += 1
        assert len(ids) <= max_new_tokens
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return [Generation(ids=list(ids), logprobs=[0.0] * len(ids), text=text, finish_reason="stop")]

    def sync_weights(self, model):
        pass


def test_demonstrations_cover_every_expert_step(suite, games, demos):
    for game in games:
        plan = suite.expert_plan(game)
        mine = [d for d in demos if d.game == game]
        assert [d.step_id for d in mine] == list(range(len(plan)))
        assert [suite.response_format.project(d.response) for d in mine] == [(a, True) for a in plan]
        assert all(d.task_type in GAME_TYPES for d in mine)
    assert len(demos) == sum(len(suite.expert_plan(g)) for g in games)


@pytest.mark.parametrize("game_type", GAME_TYPES)
def test_prompts_match_the_real_rollout_byte_for_byte(tiny_policy, suite, games, demos, game_type):
    _, tok = tiny_policy
    game = games[GAME_TYPES.index(game_type)]
    mine = [d for d in demos if d.game == game]
    rows = tokenize_demonstrations(tok, mine)  # exactly what SFT trains on
    assert all(r[-1] == tok.eos_token_id for _, r in rows)
    generator = _ScriptedGenerator(tok, [r for _, r in rows])
    worker = RolloutWorker(generator, tok, suite, max_new_tokens=256, max_prompt_tokens=8192)
    (traj,) = worker.collect([game], group_size=1, seed=0, max_turns=len(mine) + 1).trajectories
    assert traj.won and traj.steps[-1].reward == 10.0
    assert traj.length == len(mine)
    for step, demo, (prompt_ids, _) in zip(traj.steps, mine, rows):
        assert step.prompt == demo.prompt  # byte for byte
        assert step.prompt_ids == prompt_ids == chat_prompt_ids(tok, demo.prompt)
        assert (step.action, step.valid) == suite.response_format.project(demo.response)
        assert step.valid
        assert step.action in step.admissible


def test_responses_are_the_template(demos):
    d = demos[0]
    assert d.response.startswith("<think>I go to ") and d.response.endswith("</action>")
    assert d.response.count("<think>") == d.response.count("</think>") == 1


def test_rationale_templates(suite):
    task = "put a clean mug in coffeemachine."
    assert rationale(task, "go to countertop 1") == "I go to countertop 1 to look for what my task needs."
    assert rationale(task, "go to sinkbasin 1", holding="mug 1") == "I have the mug 1, so I go to sinkbasin 1."
    assert rationale(task, "take mug 1 from countertop 1") == "The mug 1 I need is here, so I take it."
    assert rationale(task, "move mug 1 to coffeemachine 1") == (
        "I have the mug 1, and my task needs it in coffeemachine 1."
    )
    assert rationale(task, "clean mug 1 with sinkbasin 1") == (
        "My task needs the mug 1 clean, so I clean it with the sinkbasin 1."
    )
    assert rationale(task, "open fridge 1") == "The fridge 1 is closed, so I open it to see what is inside."
    assert "desklamp 1" in rationale(task, "use desklamp 1")
    assert rationale(task, "dance wildly") == "My task is to put a clean mug in coffeemachine. My next step is to dance wildly."
    assert rationale(task, "go to countertop 1") == rationale(task, "go to countertop 1")  # deterministic
    assert suite.response_format.compose(rationale(task, "look"), "look") == (
        "<think>I look around to see where I am and what is here.</think><action>look</action>"
    )


def test_jsonl_round_trip(tmp_path, demos):
    path = save_demonstrations(tmp_path / "sub" / "demos.jsonl", demos)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(demos)
    assert set(json.loads(lines[0])) == {"game", "task_type", "step_id", "prompt", "response"}
    assert load_demonstrations(path) == demos

    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + json.dumps({"game": "g", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: .*exactly the keys"):
        load_demonstrations(bad)


class _EditedPlanSuite:
    """The real suite with edited expert steps (everything else delegated)."""

    def __init__(self, suite, edit):
        self._suite, self._edit = suite, edit

    def __getattr__(self, name):
        return getattr(self._suite, name)

    def expert_steps(self, game, max_detours=0, seed=0):
        steps = self._suite.expert_steps(game, max_detours, seed)
        actions = self._edit([a for _t, a in steps])
        return [("I act.", a) for a in actions]


def test_bad_plans_raise(suite, games):
    game = games[0]
    with pytest.raises(RuntimeError, match="does not win"):
        collect_demonstrations(_EditedPlanSuite(suite, lambda plan: plan[:-1]), [game])
    with pytest.raises(ValueError, match="not admissible"):
        collect_demonstrations(_EditedPlanSuite(suite, lambda plan: ["fly to the moon"] + plan), [game])
    with pytest.raises(ValueError, match="plan too long"):
        collect_demonstrations(_EditedPlanSuite(suite, lambda plan: plan + ["look"]), [game])


def test_search_detours_keep_the_plan_winning_and_explain_themselves(suite, games):
    game = games[0]
    plan = suite.expert_plan(game)
    target = target_object(plan)
    assert target and not target[-1].isdigit()
    detoured, after_search = with_search_detours(suite, game, plan, n_detours=2, seed=3)
    added = [a for a in detoured if a not in plan]
    assert added and all(a.startswith(("go to ", "open ")) for a in added)
    # detour receptacles never occur in the expert plan, so the rest of the plan stays valid
    assert not any(a.split(" ", 2)[-1] in " | ".join(plan) for a in added if a.startswith("go to "))
    assert after_search and max(after_search) < len(detoured)
    # replaying the detoured plan through the real env still wins (collect_demonstrations raises otherwise)
    demos = collect_demonstrations(suite, [game], max_detours=2, seed=3)
    assert len(demos) >= len(plan)
    texts = [d.response for d in demos]
    assert any(f"There is no {target} here" in t for t in texts) or len(demos) == len(plan)
    assert any(f"My task needs a {target}" in t for t in texts)
