"""WebshopSuite end to end: every bundled goal is winnable, an official-schema fixture plays through the same
loader, the split does not leak, and the seam (prompts, projection, metrics, config) works."""

from __future__ import annotations

import pickle

import pytest
from gymnasium.utils.env_checker import check_env

from serl.envs.webshop.catalog import bundled_version
from serl.envs.webshop.prompts import MAX_HISTORY_PROMPT_CHARS
from serl.envs.webshop.suite import WebshopSuite
from serl.types import Trajectory
from tests.unit.test_webshop_engine import write_fixture

INFO_KEYS = {"admissible_commands", "available_actions", "won", "task", "task_type", "game", "score", "state", "noop"}


@pytest.fixture(scope="module")
def suite():
    return WebshopSuite(catalog="bundled")


def scripted_agent(env, index: int) -> tuple[float, dict]:
    """Search the goal's query, open the goal product (paging with Next >), click its options, buy."""
    env.reset(options={"game": f"goal:{index}"})
    goal = env.goal
    _, _, _, _, info = env.step(f"search[{goal.query}]")
    link = f"click[{goal.asin.lower()}]"
    while link not in info["admissible_commands"]:
        assert "click[next >]" in info["admissible_commands"] and len(env.engine.state.keywords) > 0
        _, _, _, _, info = env.step("click[next >]")
        assert env.engine.state.page_num <= 5, f"{goal.asin} not in the top 50 for {goal.query!r}"
    env.step(link)
    for value in goal.option_values():
        _, _, _, _, info = env.step(f"click[{value}]")
        assert not info["noop"]
    _, reward, terminated, _, info = env.step("click[buy now]")
    assert terminated and set(info) == INFO_KEYS
    return reward, info


def test_every_bundled_goal_is_won_by_a_scripted_agent(suite):
    cat = suite.catalog
    assert len(cat.goals) > suite.test_size and cat.version == bundled_version()
    env = suite.make_env(max_episode_steps=20)
    for i in range(len(cat.goals)):  # train and test goals alike
        reward, info = scripted_agent(env, i)
        assert reward == 10.0 and info["won"] and info["score"] == 1.0, (i, info["score"])


def test_expert_plan_wins_every_goal(suite):
    env = suite.make_env(max_episode_steps=20)
    for game in suite.pool("train") + suite.pool("test"):
        env.reset(options={"game": game})
        plan = suite.expert_plan(game)
        assert plan[0] == f"search[{env.goal.query}]" and plan[-1] == "click[buy now]"
        for action in plan:
            _, reward, terminated, _, info = env.step(action)
        assert terminated and info["won"] and reward == 10.0, game
    steps = suite.expert_steps("goal:7", max_detours=2, seed=3)
    assert [a for _, a in steps if a.startswith(("search", "click[buy"))] == [
        suite.expert_plan("goal:7")[0], "click[buy now]"]
    assert all(t and t.endswith(".") for t, _ in steps)


def test_split_does_not_leak(suite, tmp_path):
    train, test = suite.pool("train"), suite.pool("test")
    assert len(test) == 500 and len(train) == len(suite.catalog.goals) - 500 and not set(train) & set(test)
    assert test == [f"goal:{i}" for i in range(500)]  # SERL: validation = indices 0..499
    assert set(suite.train_games(2000, seed=5)) <= set(train)
    goals = suite.catalog.goals
    train_goals = {(goals[int(g[5:])].asin, goals[int(g[5:])].instruction_text) for g in train}
    assert not train_goals & {(goals[int(g[5:])].asin, goals[int(g[5:])].instruction_text) for g in test}
    # the permutation depends only on (seed, goals): another process, other pool caps or filters, same goals
    worker = pickle.loads(pickle.dumps(suite))
    assert worker._catalog is None  # env workers load their own copy
    other = WebshopSuite(catalog="bundled", train_pool=3, eval_pool=2, task_types=["food"], max_turns=2)
    for game in ("goal:0", "goal:499", "goal:500", f"goal:{len(goals) - 1}"):
        texts = {s.make_env().reset(options={"game": game})[1]["task"] for s in (suite, worker, other)}
        assert len(texts) == 1, game
    assert other.pool("test") and all(goals[int(g[5:])].category == "food" for g in other.pool("test"))
    assert len(other.pool("train")) == 3 and set(other.pool("train")) <= set(train)
    reseeded = WebshopSuite(catalog="bundled", seed=7)
    assert [g.instruction_text for g in reseeded.catalog.goals[:20]] != [g.instruction_text for g in goals[:20]]


def test_official_fixture_plays_through_the_same_loader(tmp_path, monkeypatch):
    root = write_fixture(tmp_path / "webshop")
    monkeypatch.setenv("WEBSHOP_DATA", str(root))
    ws = WebshopSuite(test_size=2, max_turns=8)  # catalog=auto finds $WEBSHOP_DATA
    assert ws.source == "official" and ws.describe()["source"] == "official"
    assert len(ws.catalog.goals) == 7 and len(ws.pool("test")) == 2 and len(ws.pool("train")) == 5
    env = ws.make_env()
    check_env(env, skip_render_check=True)
    for game in ws.pool("train") + ws.pool("test"):
        obs, info = env.reset(options={"game": game})
        assert obs == "'Search'" and set(info) == INFO_KEYS
        for action in ws.expert_plan(game):
            obs, reward, terminated, _, info = env.step(action)
        assert terminated and reward == 10.0 and info["score"] == 1.0
    human = WebshopSuite(data_root=str(root), catalog="official", human_goals=True, test_size=1)
    with pytest.raises(ValueError, match="leaves no training goal"):
        human.pool("train")  # one human goal: nothing left to train on
    with pytest.raises(FileNotFoundError, match="WEBSHOP_DATA"):
        WebshopSuite(data_root=str(tmp_path / "missing"), catalog="official")


def test_partial_purchase_scores_without_training_reward(suite):
    env = suite.make_env()
    game = next(f"goal:{i}" for i, g in enumerate(suite.catalog.goals) if len(g.option_values()) == 2)
    env.reset(options={"game": game})
    plan = suite.expert_plan(game)
    for action in plan[:-3] + ["click[buy now]"]:  # skip both option clicks
        _, reward, terminated, _, info = env.step(action)
    assert terminated and reward == 0.0 and not info["won"] and 0.0 < info["score"] < 1.0
    assert info["admissible_commands"] == ["search[<your query>]", "click[search]"]  # auto-reset page (faithful)


def test_prompts_projection_and_metrics(suite):
    env = suite.make_env()
    obs, info = env.reset(options={"game": "goal:1"})
    task = info["task"]
    p0 = suite.render_prompt(task, [], 0, obs, info["admissible_commands"])
    assert f"{task}." in p0 and "'Search'" in p0 and "[\n'search[<your query>]',\n'click[search]',\n]" in p0
    assert "<think> </think>" in p0 and "<action> </action>" in p0
    obs1, *_ = env.step(f"search[{env.goal.query}]")
    p1 = suite.render_prompt(task, [(obs, f"search[{env.goal.query}]")], 1, obs1, ["click[back to search]"])
    assert f"[Observation 1: ''Search'', Action 1: 'search[{env.goal.query}]']" in p1 and "step 2" in p1
    raw = env.page  # raw pages are formatted the same way
    assert suite.render_prompt(task, [], 0, raw, []) == suite.render_prompt(task, [], 0, obs1, [])
    huge = [("x" * MAX_HISTORY_PROMPT_CHARS, "click[a]")]
    assert "Prior to this step" not in suite.render_prompt(task, huge, 1, obs1, [])  # > 13,000 chars
    assert suite.project_action("<think>ok</think><action>Click[Buy Now]</action>") == ("click[buy now]", True)
    assert suite.project_action("I will click[buy now]") == ("i will click[buy now]"[-20:], False)

    def traj(won, score, tt):
        return Trajectory(group_id=0, traj_id=0, game="goal:0", task_type=tt, task="t", won=won, score=score)

    m = suite.success_metrics([traj(True, 1.0, "food"), traj(False, 0.5, "food"), traj(False, 0.0, "beauty")])
    assert m["success_rate"] == pytest.approx(1 / 3) and m["score"] == pytest.approx(0.5)
    assert m["food/success_rate"] == 0.5 and m["beauty/score"] == 0.0 and suite.success_metrics([]) == {}


def test_bad_values_fail_early():
    for kwargs, match in [({"catalog": "cloud"}, "allowed: auto, official, bundled"), ({"max_turns": 0}, "max_turns"),
                          ({"eval_split": "valid"}, "allowed: test"), ({"tagger": "nltk"}, "heuristic, spacy"),
                          ({"observation_format": "html"}, "raw, serl"), ({"train_pool": 0}, "train_pool")]:
        with pytest.raises(ValueError, match=match):
            WebshopSuite(**kwargs)


def test_config_builds_the_suite():
    from serl.build import validate
    from tests.helpers import compose_cfg

    built = validate(compose_cfg(["env=webshop", "env.task_types=null"]))
    ws = built["env"]
    assert isinstance(ws, WebshopSuite) and ws.response_format.fallback_chars == 20
    assert ws.response_format.bracket_verbs == ("search", "click")
    assert ws.max_turns >= 3 and len(ws.pool("test")) == 16 and len(ws.pool("train")) == 64


def test_task_types_and_eval_only_suites():
    from serl.envs.webshop.suite import BUNDLED_CATEGORIES

    assert sorted({g.category for g in WebshopSuite(catalog="bundled").catalog.goals}) == list(BUNDLED_CATEGORIES)
    with pytest.raises(ValueError, match="unknown task_types"):  # at construction: a config error
        WebshopSuite(catalog="bundled", task_types=["pick_and_place_simple"])
    ev = WebshopSuite(catalog="bundled", use_train_pool=False, test_size=5000, eval_pool=4)
    assert ev.pool("test") == ["goal:0", "goal:1", "goal:2", "goal:3"]
    assert ev.make_env().reset(options={"game": "goal:3"})[1]["game"] == "goal:3"
    with pytest.raises(ValueError, match="use_train_pool=False"):
        ev.pool("train")
