"""Property test of config validation: every leaf key of every composed config gets generated bad values.

For each config (train, eval, sft) composed with its defaults and with each option of each group, every leaf
key under test is set in turn to values that are wrong for most keys ('abc', 'maybe', '', nan, ±inf, -1, 0,
1.5, [1, 2], {a: 1}, a huge integer, booleans for numbers, numbers for booleans, null ...). The oracle below
is written from the YAML comments, independently of serl/config_schema.py: it says which of those values are
documented-legal for a key (0 for ``save_every``, null for ``resume``, any string for ``model.path`` ...).

Every case must end in exactly one of:
* a clean :class:`ConfigError`: one line, naming the key (or the ``${key}`` its value comes from), when the
  oracle calls the value wrong;
* acceptance, when the oracle calls it legal.
Any other exception, a wrong value accepted, or a legal value refused fails the test.

Values are set on the composed config (as ``key=value`` on the command line would); a fixed-seed sample is
also run through Hydra's own override parser to show that path gives the same verdicts.
"""

from __future__ import annotations

import functools
import math
import random
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from serl.build import ConfigError, validate, validate_eval, validate_sft
from serl.policy.vllm_engine import vllm_available
from tests.helpers import CONF

VALIDATORS = {"train": validate, "eval": validate_eval, "sft": validate_sft}
# conf/sft.yaml's paths interpolate ${hydra:runtime.output_dir}, which exists only inside a Hydra run
SFT_PATHS = ["demos_path=/tmp/serl-prop/demos.jsonl", "output_dir=/tmp/serl-prop/model"]
BASE = {"train": [], "eval": [], "sft": SFT_PATHS}
GROUPS = {  # the groups each primary config composes (its defaults list)
    "train": ["algorithm", "decay", "env", "experiment", "feedback", "insertion", "logger", "model", "rollout"],
    "eval": ["env", "logger", "model", "rollout"],
    "sft": ["env", "logger", "model"],
}

# ----------------------------------------------------------------------------------------------- oracle
# Keys are written as in the config; "parts.<name>." of a feedback combination is dropped (a part is the
# option of that name), and "key@option" applies only when the key's group option is `option`.

# 0 is documented-legal (a "0: ..." / "0 = ..." meaning, or a range that starts at 0)
ZERO_OK = {
    "seed", "save_every", "eval_every", "torch_threads", "eval.seed", "eval.temperature", "temperature",
    "teacher_log.every", "teacher_log.max_chars", "env_workers.processes", "env_workers.retries", "env.seed",
    "env.history_length", "algorithm.advantage.invalid_penalty", "algorithm.loss.clip_low", "algorithm.loss.clip_high",
    "algorithm.loss.entropy_coef", "algorithm.reweight.weight_clip", "learner.weight_decay",
    "algorithm.advantage.gamma", "algorithm.advantage.lam", "algorithm.advantage.step_weight", "algorithm.advantage.eps", "algorithm.loss.coef",
    "algorithm.loss.base.clip_low", "algorithm.loss.base.clip_high", "algorithm.loss.base.entropy_coef", "feedback.max_steps",
    "feedback.temperature", "feedback.retries", "decay.lambda0", "decay.factor", "decay.horizon@linear",
    "model.lora.lora_dropout", "lora.lora_dropout", "max_detours", "weight_decay",
    *(f"{g}.response_format.fallback_chars" for g in ("env", "feedback", "insertion")),  # the env's response format
}
NULL_OK = {  # null is documented-legal
    "resume", "logger.entity", "logger.group", "env.data_root", "env.cache_dir", "env.task_types", "insertion.similarity",
    "max_steps", "adapter_dir", "model.lora", "lora", "decay.horizon@exponential", "decay.horizon@step",
    "model.lora.target_modules", "lora.target_modules", "algorithm.loss.base", "algorithm.critic.value_clip",
}
NULL_KIND = {  # the kind of a key whose default is null
    "resume": "str", "logger.entity": "str", "logger.group": "str", "env.data_root": "str", "env.cache_dir": "str",
    "env.task_types": "list", "insertion.similarity": "float", "max_steps": "int", "adapter_dir": "str",
    "model.lora": "dict", "algorithm.loss.base": "dict",
}
KIND = {  # keys whose YAML default is an integer but which take any number
    "feedback.timeout": "float", "model.lora.lora_alpha": "float", "lora.lora_alpha": "float",
}
AT_MOST_ONE = {  # ranges that end at 1 (1.5 and 1e20 are wrong)
    "rollout.top_p", "rollout.gpu_memory_utilization", "algorithm.loss.clip_low", "algorithm.advantage.gamma", "algorithm.advantage.lam", "decay.lambda0", "decay.factor",
    "insertion.similarity", "model.lora.lora_dropout", "lora.lora_dropout",
}
BELOW_ONE = {"algorithm.loss.clip_low", "algorithm.loss.base.clip_low", "insertion.similarity", "model.lora.lora_dropout", "lora.lora_dropout"}  # 1 is wrong
ABOVE_ONE = {"algorithm.loss.clip_c", "algorithm.loss.base.clip_c"}  # dual-clip bound > 1
MIN_TWO = {"group_size"}  # GRPO needs >= 2 rollouts per group
FREE_STR = {  # any non-empty string is legal (names, labels, paths, model ids)
    "run_name", "model.name", "model.path", "logger.name", "logger.project", "logger.entity", "logger.group", "algorithm.name",
    "env.name", "env.data_root", "env.cache_dir", "decay.name", "feedback.name", "insertion.name",
    "feedback.model", "feedback.api_key_env", "demos_path", "output_dir", "adapter_dir",
}
BRACKET_VERBS = {f"{g}.response_format.bracket_verbs" for g in ("env", "feedback", "insertion")}  # lower-case words
STR_LISTS = {"model.lora.target_modules", "lora.target_modules", *BRACKET_VERBS}  # lists of strings ("abc" is legal)
EMPTY_LIST_OK = BRACKET_VERBS
STR_OR_LIST = {"model.lora.target_modules", "lora.target_modules"}  # peft also takes one string (a regex)


def _norm(key: str) -> str:
    parts = key.split(".")
    while "parts" in parts:
        i = parts.index("parts")
        del parts[i : i + 2]
    return ".".join(parts)


def _in(table: set, key: str, option: str | None) -> bool:
    return key in table or (option is not None and f"{key}@{option}" in table)


def _kind(key: str, default: Any) -> str:
    if key in KIND:
        return KIND[key]
    if default is None:
        assert key in NULL_KIND, f"{key} defaults to null: add its kind to NULL_KIND (and NULL_OK if null is legal)"
        return NULL_KIND[key]
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict")):
        if isinstance(default, t):
            return name
    raise AssertionError(f"{key}: unexpected default {default!r}")


HUGE = 10**20
NAN, INF = float("nan"), float("inf")


def candidates(key: str, kind: str) -> list[Any]:
    """Generated values: wrong types, non-finite numbers, out-of-range numbers, empty and odd containers."""
    common = ["", NAN, [1, 2], {"a": 1}, None]
    if kind == "int":
        extra = [1] if key in MIN_TWO else []
        return ["abc", "maybe", *common, INF, -INF, 1.5, True, False, HUGE, -1, 0, *extra]
    if kind == "float":
        extra = [1.0] if key in BELOW_ONE | ABOVE_ONE else []
        return ["abc", *common, INF, -INF, True, False, -1, 0, 1.5, HUGE, *extra]
    if kind == "bool":
        return ["maybe", "abc", *common, 0, 1, 2]
    if kind == "str":
        return ["abc", *common, 5, 1.5, True]
    if kind == "list":
        return ["abc", *common, 5, True, [], ["abc"], [0.9], [0.9, 0.999, 0.5]]
    if kind == "dict":
        return ["abc", *common, 5, True]
    raise AssertionError(kind)


def legal(key: str, option: str | None, kind: str, value: Any) -> bool:
    """The oracle: is ``value`` documented-legal for ``key`` (normalized) in the option ``option``?"""
    if value is None:
        return _in(NULL_OK, key, option)
    if kind == "int":
        return type(value) is int and value == 0 and _in(ZERO_OK, key, option)
    if kind == "float":
        if type(value) not in (int, float) or not math.isfinite(value):
            return False
        low_ok = value > 1 if key in ABOVE_ONE else value >= 0 if _in(ZERO_OK, key, option) else value > 0
        high_ok = value < 1 if key in BELOW_ONE else value <= 1 if key in AT_MOST_ONE else True
        return low_ok and high_ok
    if kind == "str":
        return value == "abc" and _in(FREE_STR, key, option)
    if kind == "list":
        if key in STR_OR_LIST and value == "abc":
            return True
        if value == []:
            return key in EMPTY_LIST_OK
        return value == ["abc"] and key in STR_LISTS
    return False  # bool and dict keys: every generated value is wrong


# ---------------------------------------------------------------------------------------------- contexts
def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config, overrides=[*BASE[config], *overrides])


def _leaves(node: Any, prefix: str = ""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def _get(node: Any, key: str) -> Any:
    for k in key.split("."):
        node = node[k]
    return node


@functools.cache
def contexts() -> tuple:
    """(config, overrides, composed config, keys under test): the defaults with every key, then each non-default option of each
    group with the keys it brings (its group's keys; for an experiment, the keys whose value it changes)."""
    out = []
    for config, groups in GROUPS.items():
        default = _compose(config, [])
        data = OmegaConf.to_container(default, resolve=True)
        out.append((config, (), default, [k for k, _ in _leaves(data)]))
        defaults = dict(_leaves(data))
        for group in groups:
            for path in sorted((CONF / group).glob("*.yaml")):
                option = path.stem
                if group != "experiment" and data[group].get("name") == option:
                    continue  # the default choice: covered above
                cfg = _compose(config, [f"{group}={option}"])
                leaves = dict(_leaves(OmegaConf.to_container(cfg, resolve=True)))
                if group == "experiment":
                    keys = [k for k, v in leaves.items() if k not in defaults or defaults[k] != v]
                else:
                    keys = [k for k in leaves if k.split(".")[0] == group]
                # resolved: interpolation chains are exercised with the defaults above; here it saves ~2/3 of the time
                resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
                out.append((config, (f"{group}={option}",), resolved, keys))
    return tuple(out)


def _option_of(data: dict, key: str) -> str | None:
    head = key.split(".")[0]
    node = data.get(head)
    return node.get("name") if isinstance(node, dict) and "_target_" in node else None


def _outcome(config: str, cfg) -> str | None:
    try:
        VALIDATORS[config](cfg)
    except ConfigError as e:
        return str(e)
    return None


def test_every_leaf_key_refuses_bad_values_cleanly_and_accepts_documented_ones():
    tried = errors = accepted = 0
    problems: list[str] = []
    for config, overrides, cfg, keys in contexts():
        raw = OmegaConf.to_container(cfg, resolve=False)
        data = OmegaConf.to_container(cfg, resolve=True)
        base_error = _outcome(config, cfg)  # rollout=vllm without vLLM, sft with a LoRA model: invalid as composed
        if base_error is None or "rollout=vllm needs vLLM" in base_error or "must be null for SFT" in base_error:
            pass
        else:
            problems.append(f"{config} {overrides}: the composed config itself fails: {base_error}")
            continue
        for key in keys:
            norm = _norm(key)
            option = _option_of(data, key)
            default = _get(data, key)
            kind = _kind(norm, default)
            for value in candidates(norm, kind):
                tried += 1
                OmegaConf.update(cfg, key, value, merge=False)
                try:
                    message = _outcome(config, cfg)
                except Exception as e:  # noqa: BLE001 - the property: nothing but ConfigError
                    problems.append(f"{config} {overrides} {key}={value!r}: {type(e).__name__}: {e}")
                    continue
                finally:
                    OmegaConf.update(cfg, key, _get(raw, key), merge=False)
                expect_ok = legal(norm, option, kind, value)
                case = f"{config} {' '.join(overrides)} {key}={value!r}"
                if message is None:
                    accepted += 1
                    if not expect_ok:
                        problems.append(f"{case}: accepted, but the value is wrong for the key")
                    continue
                errors += 1
                if "\n" in message:
                    problems.append(f"{case}: message is not one line: {message!r}")
                if expect_ok:  # refused only for the reason the composed config is refused
                    if base_error is None or message.split("=")[0] != base_error.split("=")[0]:
                        problems.append(f"{case}: refused, but the value is documented-legal: {message}")
                elif key not in message:
                    problems.append(f"{case}: the message does not name the key: {message}")
        assert OmegaConf.to_container(cfg, resolve=False) == raw  # every key was restored
    print(f"\nconfig property test: {tried} cases, {errors} clean ConfigErrors, {accepted} legal values accepted")
    assert not problems, f"{len(problems)} of {tried} cases failed:\n" + "\n".join(problems[:60])
    assert tried > 3000 and errors > 2500 and accepted > 50  # the generator did not silently shrink


OVERRIDE_TEXT = {  # how a generated value is written on the command line
    "": "''", "abc": "abc", "maybe": "maybe", 1.5: "1.5", 5: "5", 2: "2", 1: "1", 0: "0", -1: "-1", HUGE: str(HUGE),
}


def _as_override(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if value in (INF, -INF):
        return "inf" if value > 0 else "-inf"
    if value == [1, 2]:
        return "[1,2]"
    if value == {"a": 1}:
        return "{a:1}"
    if isinstance(value, (int, float, str)) and value in OVERRIDE_TEXT and type(value) is not bool:
        return OVERRIDE_TEXT[value]
    return None


def test_a_sample_through_hydras_override_parser_gives_the_same_verdicts():
    rng = random.Random(0)
    cases = []
    for config, overrides, cfg, keys in contexts():
        if overrides:
            continue
        data = OmegaConf.to_container(cfg, resolve=True)
        for key in keys:
            kind = _kind(_norm(key), _get(data, key))
            for value in candidates(_norm(key), kind):
                text = _as_override(value)
                if text is not None:
                    cases.append((config, key, kind, value, text))
    sample = rng.sample(cases, 16)
    for config, key, kind, value, text in sample:
        cfg = _compose(config, [f"{key}={text}"])
        message = _outcome(config, cfg)
        if legal(_norm(key), None, kind, value):
            assert message is None, (key, text, message)
        else:
            assert message is not None and "\n" not in message and key in message, (key, text, message)


@pytest.mark.parametrize("config", sorted(GROUPS))
def test_the_oracle_knows_every_null_default(config):
    data = OmegaConf.to_container(_compose(config, []), resolve=True)
    for key, value in _leaves(data):
        _kind(_norm(key), value)  # raises with the key to classify


def test_vllm_contexts_check_types_even_without_vllm():
    if vllm_available():
        pytest.skip("vLLM installed: the property test covers rollout=vllm as a valid context")
    cfg = _compose("train", ["rollout=vllm", "rollout.kv_cache_gb=abc"])
    with pytest.raises(ConfigError, match=r"rollout.kv_cache_gb='abc' is invalid: must be an integer >= 1"):
        validate(cfg)

