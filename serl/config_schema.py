"""The typed schema of serl's Hydra configs (``conf/train.yaml``, ``conf/eval.yaml``, ``conf/sft.yaml``).

One rule set, checked before any model or game loads (:func:`serl.build.validate` and friends call
:func:`check_config` on the resolved config):

* **Plain sections** (top-level knobs, ``model``, ``rollout``, ``algorithm``, ``eval``,
  ``teacher_log``, ``logger``, SFT knobs) are pydantic models below: unknown keys are errors, booleans are
  ``true``/``false`` only, integers are integers (no floats, no booleans, at most :data:`INT_MAX`), floats
  are finite numbers, strings are non-empty strings, lists have their length, and every range lives next
  to its key (``Int(ge=1)``, ``Float(gt=0, le=1)``).
* **Group options with a ``_target_``** (env, decay, feedback, insertion, and the parts of a feedback
  combination) carry no schema here: their allowed keys and types come from the target constructor's
  signature and type hints (``float`` = finite number, ``int`` = integer, ``bool`` = true/false, ``str`` =
  non-empty string, ``X | None``, ``Sequence[X]``, ...), then the constructor runs and checks its own ranges
  (λ0 in [0, 1], anchor keys ...). A new option is one module + one YAML; nothing here changes.
* **Nodes with ``_partial_: true``** (``learner``, ``teacher``: their constructors need the policy model) are
  checked the same way from the signature, whose hints carry the ranges (:mod:`serl.knobs`), and come back
  as ``functools.partial`` objects that :mod:`serl.build` completes once the model is loaded.
* **Cross-key rules** (vLLM installed and its budget, SFT batch sizes, ``resume`` exists, extra LoRA keys)
  are the ``_check_*`` functions at the end.

Every failure is a :class:`ConfigError` with a one-line message that names the key, the bad value and the
allowed values, e.g. ``steps='abc' is invalid: must be an integer >= 1`` or ``decay=linear: lambda0 must
be a float in [0, 1], got 1.5 (key: decay.lambda0)``.
"""

import collections.abc as cabc
import contextlib
import difflib
import functools
import importlib
import inspect
import logging
import os
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional, Union

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, InstanceOf, Strict, TypeAdapter
from pydantic import ValidationError

from serl.knobs import Count, PrivilegedTemplate

__all__ = ["ConfigError", "INT_MAX", "check_config", "SCHEMAS"]

INT_MAX = 2**31 - 1  # every integer knob is a count, a size or a seed: larger values are typos


class ConfigError(ValueError):
    """A config value outside its allowed range or set (one line: key, value, allowed values)."""


# --------------------------------------------------------------------------------------- field types
@dataclass(frozen=True)
class Note:
    """What a special value means, shown after the rule in error messages (e.g. ``0: never``)."""

    text: str


@dataclass(frozen=True)
class Rule:
    """The allowed values in words, when the type alone does not say it (patterns, templates)."""

    text: str


@dataclass(frozen=True)
class _OptionMarker:
    """Marks a field holding a ``_target_`` group option (checked from the target's signature)."""


def _bounds(ge=None, gt=None, le=None, lt=None) -> list:
    """The annotated-types constraints for the bounds that are given."""
    return [kind(v) for kind, v in ((Ge, ge), (Gt, gt), (Le, le), (Lt, lt)) if v is not None]


def Int(ge: int | None = None, gt: int | None = None, note: str | None = None) -> Any:
    """An integer (not a float, not a boolean) in ``[ge, INT_MAX]`` / ``(gt, INT_MAX]``."""
    return Annotated[(int, Strict(), *_bounds(ge=ge, gt=gt), Le(INT_MAX), *([Note(note)] if note else []))]


def Float(ge=None, gt=None, le=None, lt=None, note: str | None = None) -> Any:
    """A finite number (an integer is fine, a boolean is not) within the given bounds."""
    return Annotated[(float, Strict(), AllowInfNan(False), *_bounds(ge, gt, le, lt), *([Note(note)] if note else []))]


Str = Annotated[str, Strict(), MinLen(1)]
Bool = Annotated[bool, Strict()]
Option = Annotated[dict, _OptionMarker(), Rule("a group option (a mapping with _target_)")]

Device = Annotated[
    str, Strict(), Field(pattern=r"^(cpu|cuda(:[0-9]+)?)$"), Rule("cpu, cuda or cuda:<index>")
]


_SEQUENCES = {list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection,
              cabc.Set, cabc.Iterator}
_MAPPINGS = {dict, cabc.Mapping, cabc.MutableMapping}


def translate(hint: Any) -> Any:
    """A constructor's type hint as a strict pydantic type (see the module docstring)."""
    if hint is inspect.Parameter.empty or hint is Any:
        return Any
    if hint is None or hint is type(None):
        return type(None)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return Annotated[(translate(args[0]), *args[1:])]
    if hint is bool:
        return Bool
    if hint is int:
        return Annotated[int, Strict(), Ge(-INT_MAX), Le(INT_MAX)]
    if hint is float:
        return Float()
    if hint is str:
        return Str
    if origin in (Union, types.UnionType):
        return Union[tuple(translate(a) for a in args)]
    if origin is Literal:
        return hint
    if origin is tuple and args and args[-1] is not Ellipsis:
        return tuple[tuple(translate(a) for a in args)]
    if origin in _SEQUENCES or hint in _SEQUENCES:
        return list[translate(args[0])] if args else list
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return dict[translate(args[0]), translate(args[1])] if args else dict
    if any(isinstance(t, type) and issubclass(t, os.PathLike) for t in (hint, origin)):
        return Str  # a path is written as a string in YAML
    if isinstance(hint, type) and hint.__module__ != "builtins":
        return InstanceOf[hint]
    return Any


class Section(BaseModel):
    """A config mapping: unknown keys are errors; values are checked, never converted."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# ---------------------------------------------------------------------------------- shared sections
class LoraSection(BaseModel):
    """``peft.LoraConfig`` keyword arguments: the four serl uses are typed here; any other must be a
    ``LoraConfig`` field (checked against peft in :func:`_check_lora_extras`)."""

    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True)

    # defaults are peft's; only the YAML's own keys reach peft (serl.policy.models.apply_lora)
    r: Int(ge=1, note="adapter rank") = 8
    lora_alpha: Float(gt=0, note="scaling alpha; update scale alpha / r") = 8
    lora_dropout: Float(ge=0, lt=1) = 0.0
    target_modules: Optional[Union[Str, Annotated[list[Str], MinLen(1)]]] = None  # a string is a peft regex
    alpha: Optional[Float(gt=0, note="alias of lora_alpha")] = None
    dropout: Optional[Float(ge=0, lt=1, note="alias of lora_dropout")] = None


class ModelSection(Section):
    name: Str
    path: Annotated[Str, Note("a model name (smollm2-135m, tiny), an HF folder, a hub id or a serl run")]
    dtype: Literal["auto", "float32", "bfloat16"]
    gradient_checkpointing: Bool
    lora: Optional[LoraSection] = None


class HFRollout(Section):
    name: Literal["hf"]
    max_new_tokens: Int(ge=1)
    temperature: Float(gt=0, note="sampling temperature of rollouts and of every log-prob")
    top_p: Float(gt=0, le=1)
    max_prompt_tokens: Int(ge=1)


class VLLMRollout(HFRollout):
    name: Literal["vllm"]
    max_model_len: Int(ge=1, note=">= rollout.max_prompt_tokens + rollout.max_new_tokens")
    enforce_eager: Bool
    tensor_parallel_size: Int(ge=1)
    gpu_memory_utilization: Float(gt=0, le=1)
    kv_cache_gb: Int(ge=1, note="a whole number of GiB, VLLM_CPU_KVCACHE_SPACE")
    sleep: Bool = False


Rollout = Annotated[Union[HFRollout, VLLMRollout], Field(discriminator="name")]


class EnvWorkersSection(Section):
    processes: Int(ge=0, note="0: in this process")
    timeout_s: Float(gt=0, note="seconds before an env call without an answer kills its worker")
    retries: Int(ge=0, note="0: the first env failure drops the episode")


class DistributedSection(Section):
    """FSDP2 under torchrun (serl.distributed.shard_model); ignored by a single process."""

    mixed_precision: Literal["auto", "fp32", "bf16"]
    reshard_after_forward: Bool


class LoggerSection(Section):
    name: Str
    wandb: Bool
    project: Str
    entity: Optional[Str] = None
    group: Optional[Str] = None
    mode: Literal["auto", "online", "offline", "disabled"]


# ------------------------------------------------------------------------------- training sections
class AlgorithmSection(Section):
    name: Str
    # the algorithm's parts (conf/algorithm/<part>/): built from their constructors' signatures like any group option
    advantage: Option
    loss: Option
    reweight: Option
    sampling: Option
    critic: Option
    response_format: Literal["serl", "reference"] = "serl"
    # the teacher's knobs: conf/train.yaml's `teacher` node passes them on (${algorithm.<key>}); their rules are
    # the constructor's (serl.knobs), checked here where they are set
    teacher_sync_interval: translate(Count)
    teacher_max_prompt_tokens: translate(Count)
    privileged_template: translate(PrivilegedTemplate)


class EvalKnobs(Section):
    """``n_games``, ``temperature``, ``max_turns`` of an evaluation (``eval.*`` in training, top level in
    ``conf/eval.yaml``)."""

    n_games: Int(ge=1, note="games played once each")
    temperature: Float(ge=0, note="0 = greedy; the reference validates at 0.4, docs/reference.md §8.4")
    max_turns: Int(ge=1, note="episode cap in env steps")


Seed = Int(ge=0)
TorchThreads = Int(ge=0, note="0: leave torch's default")


class EvalSection(EvalKnobs):
    seed: Seed
    at_start: Bool


class TeacherLogSection(Section):
    every: Int(ge=0, note="0: never dump")
    max_samples: Int(ge=1)
    max_chars: Int(ge=0, note="0: no truncation")


class RunConfig(Section):
    """The keys training and evaluation share: where the policy runs, the env and its workers, the logger."""

    seed: Seed
    env_workers: EnvWorkersSection
    device: Device
    torch_threads: TorchThreads
    run_name: Str
    env: Option
    model: ModelSection
    rollout: Rollout
    logger: LoggerSection


class TrainConfig(RunConfig):
    """``conf/train.yaml`` (scripts/train.py)."""

    steps: Int(ge=1)
    n_tasks: Int(ge=1)
    group_size: Int(ge=2, note="GRPO compares the rollouts of a group")
    resume: Optional[Str] = None
    resume_allow_changes: Bool = False
    skip_completed: Bool = False
    save_every: Int(ge=0, note="0: only after the last step")
    keep_last: Int(ge=1, note="step checkpoints kept, the newest N")
    eval_every: Int(ge=0, note="0: never evaluate")
    distributed: DistributedSection
    algorithm: AlgorithmSection
    feedback: Option
    insertion: Option
    decay: Option
    learner: Option
    teacher: Option
    eval: EvalSection
    teacher_log: TeacherLogSection


class EvalConfig(EvalKnobs, RunConfig):
    """``conf/eval.yaml`` (scripts/eval.py)."""


class SFTConfig(Section):
    """``conf/sft.yaml`` (scripts/sft.py)."""

    seed: Seed
    n_games: Int(ge=1)
    max_detours: Int(ge=0)
    epochs: Int(ge=1)
    lr: Float(gt=0)
    batch_size: Int(ge=1)
    micro_batch_size: Int(ge=1, note="<= batch_size")
    max_steps: Optional[Int(ge=1)] = None
    weight_decay: Float(ge=0)
    grad_clip: Float(gt=0)
    lora: Optional[LoraSection] = None
    demos_path: Str
    output_dir: Str
    adapter_dir: Optional[Str] = None
    device: Device
    torch_threads: TorchThreads
    progress: Bool
    run_name: Str
    env: Option
    model: ModelSection
    logger: LoggerSection


SCHEMAS: dict[str, type[BaseModel]] = {"train": TrainConfig, "eval": EvalConfig, "sft": SFTConfig}

Origin = Callable[[str], Optional[str]]  # key -> its raw interpolation ("${env.eval_pool}") or None


# ------------------------------------------------------------------------------------ rules in words
def _meta_of(tp: Any, meta: tuple = ()) -> tuple[Any, list]:
    meta = list(meta)
    while typing.get_origin(tp) is Annotated:
        base, *more = typing.get_args(tp)
        tp, meta = base, [*more, *meta]
    return tp, meta


def _bounds_text(meta: list) -> str:
    lo = next(((">=", m.ge) for m in meta if isinstance(m, Ge) and m.ge != -INT_MAX), None)
    lo = lo or next(((">", m.gt) for m in meta if isinstance(m, Gt)), None)
    hi = next((("<=", m.le) for m in meta if isinstance(m, Le) and m.le != INT_MAX), None)
    hi = hi or next((("<", m.lt) for m in meta if isinstance(m, Lt)), None)
    if lo and hi:
        return f"in {'[' if lo[0] == '>=' else '('}{lo[1]}, {hi[1]}{']' if hi[0] == '<=' else ')'}"
    if lo or hi:
        op, v = lo or hi
        return f"{op} {v}"
    return ""


def _note(meta: list) -> str:
    return next((f" ({m.text})" for m in meta if isinstance(m, Note)), "")


def describe(tp: Any, meta: tuple = (), with_note: bool = True) -> str:
    """The allowed values of a type (with its constraints) in words: ``an integer >= 1``."""
    tp, meta = _meta_of(tp, meta)
    rule = next((m.text for m in meta if isinstance(m, Rule)), None)
    note = _note(meta) if with_note else ""
    if rule is not None:
        return rule + note
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bounds = _bounds_text(meta)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        text = " or ".join(describe(a) for a in members)
        return ("null or " if len(members) < len(args) else "") + text + note
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args) + note
    if tp is bool:
        return "true or false" + note
    if tp is int:
        return "an integer" + (f" {bounds}" if bounds else "") + note
    if tp is float:
        return "a finite number" + (f" {bounds}" if bounds else "") + note
    if tp is str:
        return ("a non-empty string" if any(isinstance(m, MinLen) and m.min_length >= 1 for m in meta) else "a string") + note
    if origin is tuple and args and args[-1] is not Ellipsis:
        items = {describe(a) for a in args}
        each = items.pop() if len(items) == 1 else " / ".join(describe(a) for a in args)
        return f"a list of {len(args)} items (each {each})" + note
    if origin in (list, tuple):
        size = " non-empty" if any(isinstance(m, MinLen) and m.min_length >= 1 for m in meta) else ""
        return f"a{size} list (each item {describe(args[0]) if args else 'any value'})" + note
    if origin is dict:
        return f"a mapping (each value {describe(args[1]) if args else 'any value'})" + note
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"a mapping with the keys {', '.join(tp.model_fields)}" + note
    if tp is dict:
        return "a mapping" + note
    if tp is list:
        return "a list" + note
    if isinstance(tp, type):
        return f"a {tp.__name__} option (a mapping with _target_)" + note
    return "any value" + note


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _rule_for_error(tp: Any, meta: tuple, error: dict) -> str:
    """``must be ...`` text: only the bounds for a range error on a number of the right type."""
    base, m = _meta_of(tp, meta)
    if error["type"] in _RANGE_ERRORS:
        limits = list((error.get("ctx") or {}).values())
        if any(type(v) is int and abs(v) == INT_MAX for v in limits):
            return f"{describe(tp, meta)}, at most {INT_MAX} in size (integer knobs are counts, sizes and seeds)"
        if base in (int, float) and _bounds_text(m):
            return _bounds_text(m) + _note(m)
    text = describe(tp, meta)
    detail = (error.get("ctx") or {}).get("error")
    if error["type"] == "value_error" and detail:
        text += f"; {detail}"
    return text


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + "..."


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _closest(word: str, allowed: list[str]) -> list[str]:
    return difflib.get_close_matches(word, allowed, n=1, cutoff=0.6)


def _lookup(data: Any, keys: list[str]) -> Any:
    for k in keys:
        data = data.get(k) if isinstance(data, dict) else None
    return data


def _from(origin: Origin | None, key: str) -> str:
    raw = origin(key) if origin is not None else None
    return f" (its value comes from {raw})" if raw else ""


# ------------------------------------------------------------------------- plain sections: messages
def _inner(tp: Any) -> Any:
    """The model class (or ``{tag: class}`` of a tagged union of models) a field holds, else None."""
    tp, _ = _meta_of(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        members = [_meta_of(a)[0] for a in typing.get_args(tp) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) == 1 and len(members) == 1:
            return models[0]
        if models and len(models) == len(members) and all("name" in m.model_fields for m in models):
            return {typing.get_args(m.model_fields["name"].annotation)[0]: m for m in models}
    return None


def _format_error(schema: type[BaseModel], error: dict, data: dict, origin: Origin | None) -> str:
    loc = list(error["loc"])
    keys: list[str] = []
    model: Any = schema
    field = None
    inside = False  # the error is about an item of the key's value (a list entry), not the key itself
    for part in loc:
        if isinstance(part, int) or model is None:
            inside = True
            break
        if isinstance(model, dict):  # a tagged union: the tag is not a key
            model = model.get(part)
            continue
        if part not in model.model_fields:
            keys.append(str(part))
            break
        field = model.model_fields[part]
        keys.append(part)
        model = _inner(field.annotation)
    key = ".".join(keys)
    etype = error["type"]
    if etype == "extra_forbidden":
        parent = ".".join(keys[:-1])
        allowed = list(model.model_fields) if isinstance(model, type) else []
        close = _closest(keys[-1], allowed)
        hint = f" (did you mean {'.'.join([*keys[:-1], close[0]])}?)" if close else ""
        where = f" of {parent}" if parent else ""
        return f"{key} is not a known key{hint}; allowed keys{where}: {', '.join(allowed)}"
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        tags = ", ".join(model) if isinstance(model, dict) else "?"
        name = _lookup(data, [*keys, "name"])
        return f"{key}.name={_show(name)} is invalid: must be one of {tags}{_from(origin, key + '.name')}"
    value = _lookup(data, keys)
    rule = _rule_for_error(field.annotation, tuple(field.metadata), error) if field is not None else error["msg"]
    if etype == "missing" and not inside:
        return f"{key} is missing: must be {rule}"
    return f"{key}={_show(value)} is invalid: must be {rule}{_from(origin, key)}"


# ------------------------------------------------------------- group options: from the signatures
def locate(path: str) -> Any:
    """The object a dotted ``_target_`` names (``package.module.Class``)."""
    if not isinstance(path, str) or not path or not all(p.isidentifier() for p in path.split(".")):
        raise ImportError(f"{path!r} is not a dotted path")
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    return importlib.import_module(path)


@dataclass
class _Signature:
    params: dict[str, inspect.Parameter]
    types: dict[str, Any]
    adapters: dict[str, TypeAdapter]
    var_kwargs: bool


_SIGNATURES: dict[Any, _Signature] = {}


def _signature(target: Any) -> _Signature:
    if target not in _SIGNATURES:
        sig = inspect.signature(target)
        init = target.__init__ if isinstance(target, type) else target
        try:
            hints = typing.get_type_hints(init, include_extras=True)  # keep the ranges (serl.knobs)
        except Exception:  # an unresolvable hint: check that parameter's type in the constructor only
            hints = {}
        params = {n: p for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        tps = {n: translate(hints.get(n, p.annotation if not isinstance(p.annotation, str) else Any))
               for n, p in params.items()}
        _SIGNATURES[target] = _Signature(
            params=params,
            types=tps,
            adapters={n: TypeAdapter(t) for n, t in tps.items()},
            var_kwargs=any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()),
        )
    return _SIGNATURES[target]


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _quiet(module: str):
    """Construction during validation is a dry run: its INFO logs would repeat when the run builds it."""
    logger = logging.getLogger(module)
    logger.addFilter(_below_warning)  # a filter, not setLevel: that clears every logger's cache each call
    try:
        yield
    finally:
        logger.removeFilter(_below_warning)


def _is_option(value: Any) -> bool:
    return isinstance(value, dict) and "_target_" in value


def _attribute(message: str, kwargs: dict[str, Any]) -> str | None:
    """The argument a constructor's error message is about: its name in the message, else its value."""
    best: tuple[int, str] | None = None
    for name in kwargs:
        m = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), name)
    if best:
        return best[1]
    for name, value in kwargs.items():
        items = value if isinstance(value, (list, tuple)) else list(value.values()) if isinstance(value, dict) else [value]
        for v in [value, *items]:
            text = repr(v)
            if len(text) >= 3 and text in message:
                return name
    return None


def build_option(node: dict, path: str, label: str, origin: Origin | None = None) -> Any:
    """Check a ``_target_`` option against its constructor's signature, then construct it.

    ``path`` is its dotted key (``feedback.parts.success``), ``label`` the top-level ``group=option`` that
    prefixes every message. Nested options (any mapping with ``_target_``) are built first, depth first.
    With ``_partial_: true`` the values are checked against the signature's type hints (which carry the
    ranges, :mod:`serl.knobs`) and a ``functools.partial`` is returned: the caller supplies the missing
    arguments (the policy model, its tokenizer) once they exist.
    """
    target_path = node.get("_target_")
    partial = node.get("_partial_", False)
    if not isinstance(partial, bool):
        raise ConfigError(f"{label}: _partial_ must be true or false, got {_show(partial)} (key: {path}._partial_)")
    try:
        target = locate(target_path)
        sig = _signature(target)
    except Exception as e:
        raise ConfigError(_one_line(
            f"{label}: _target_ must be an importable class or function, got {_show(target_path)} "
            f"({type(e).__name__}: {e}) (key: {path}._target_)"
        )) from None
    name = node.get("name", "")
    if "name" in node and "name" not in sig.params and not (isinstance(name, str) and name):
        raise ConfigError(f"{label}: name must be a non-empty string (the option's label), got {_show(name)} "
                          f"(key: {path}.name)")
    kwargs: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("_target_", "_partial_") or (key == "name" and "name" not in sig.params):
            continue
        if key not in sig.params and not sig.var_kwargs:
            allowed = [n for n, p in sig.params.items() if not partial or p.default is not inspect.Parameter.empty]
            close = _closest(key, allowed)
            hint = f" (did you mean {path}.{close[0]}?)" if close else ""
            raise ConfigError(_one_line(
                f"{label}: {path}.{key} is not an argument of {target_path}{hint}; allowed: "
                f"{', '.join(allowed) or 'none'}"
            ))
        if _is_option(value):
            value = build_option(value, f"{path}.{key}", label, origin)
        elif isinstance(value, dict):
            value = {k: build_option(v, f"{path}.{key}.{k}", label, origin) if _is_option(v) else v
                     for k, v in value.items()}
        elif isinstance(value, list):
            value = [build_option(v, f"{path}.{key}.{i}", label, origin) if _is_option(v) else v
                     for i, v in enumerate(value)]
        kwargs[key] = value
    for pname, p in sig.params.items():
        if p.default is inspect.Parameter.empty and pname not in kwargs and not partial:
            raise ConfigError(_one_line(
                f"{label}: {path}.{pname} is missing: {pname} must be {describe(sig.types[pname])}"
            ))
    for key, value in kwargs.items():
        if key in sig.adapters:
            try:
                sig.adapters[key].validate_python(value)
            except ValidationError as e:
                rule = _rule_for_error(sig.types[key], (), e.errors()[0])
                raise ConfigError(_one_line(
                    f"{label}: {key} must be {rule}, got {_show(value)} (key: {path}.{key}){_from(origin, f'{path}.{key}')}"
                )) from None
    if partial:
        return functools.partial(target, **kwargs)
    try:
        with _quiet(getattr(target, "__module__", "") or ""):
            return target(**kwargs)
    except Exception as e:
        about = _attribute(str(e), kwargs)
        where = f" (key: {path}.{about}){_from(origin, f'{path}.{about}')}" if about else f" (key: {path})"
        raise ConfigError(_one_line(f"{label}: {e}{where}")) from None


# ------------------------------------------------------------------------------------ cross-key rules
def _fail(key: str, value: Any, rule: str) -> None:
    raise ConfigError(_one_line(f"{key}={_show(value)} is invalid: {rule}"))


_LORA_FIELDS: Optional[dict[str, tuple[Any, TypeAdapter]]] = None


def _check_lora_extras(lora: LoraSection | None, key: str) -> None:
    """Keys beyond the typed four must be ``peft.LoraConfig`` fields of the right type (peft is imported
    only when such a key is present)."""
    global _LORA_FIELDS
    if lora is None or not lora.model_extra:
        return
    if _LORA_FIELDS is None:
        import dataclasses

        from peft import LoraConfig

        hints = typing.get_type_hints(LoraConfig)
        _LORA_FIELDS = {}
        for f in dataclasses.fields(LoraConfig):
            tp = translate(hints.get(f.name, Any))
            _LORA_FIELDS[f.name] = (tp, TypeAdapter(tp))
    for name, value in lora.model_extra.items():
        if name not in _LORA_FIELDS:
            allowed = sorted({*LoraSection.model_fields, *_LORA_FIELDS})
            close = _closest(name, allowed)
            hint = f" (did you mean {key}.{close[0]}?)" if close else ""
            raise ConfigError(f"{key}.{name} is not a known key{hint}; allowed keys of {key}: peft LoraConfig "
                              f"options ({', '.join(LoraSection.model_fields)}, ...)")
        tp, adapter = _LORA_FIELDS[name]
        try:
            adapter.validate_python(value)
        except ValidationError as e:
            _fail(f"{key}.{name}", value, f"must be {_rule_for_error(tp, (), e.errors()[0])} (peft LoraConfig.{name})")


def _check_rollout(c: TrainConfig | EvalConfig) -> None:
    r = c.rollout
    if r.name != "vllm":
        return
    from serl.policy.vllm_engine import INSTALL_HINT, vllm_available

    if not vllm_available():
        _fail("rollout", "vllm", INSTALL_HINT)
    if r.top_p != 1:
        _fail("rollout.top_p", r.top_p, "must be 1 with rollout=vllm (vLLM reports log-probs of the top-p-truncated "
              "distribution, the learner recomputes untruncated ones; the reference samples with top_p = 1)")
    budget = r.max_prompt_tokens + r.max_new_tokens
    if r.max_model_len < budget:
        _fail("rollout.max_model_len", r.max_model_len,
              f"must be >= rollout.max_prompt_tokens + rollout.max_new_tokens = {budget}")


def _check_train(c: TrainConfig, data: dict) -> None:
    _check_lora_extras(c.model.lora, "model.lora")
    if c.resume is not None:
        from serl.checkpoint import checkpoint_path

        try:
            checkpoint_path(os.path.expanduser(c.resume))
        except FileNotFoundError:
            _fail("resume", c.resume, "must be null or a run folder, its checkpoints/ folder or a checkpoint file "
                  "(last.safetensors / last.pt); none found there")
    _check_rollout(c)


def _check_eval(c: EvalConfig, data: dict) -> None:
    _check_lora_extras(c.model.lora, "model.lora")
    _check_rollout(c)


def _check_sft(c: SFTConfig, data: dict) -> None:
    _check_lora_extras(c.lora, "lora")
    if c.micro_batch_size > c.batch_size:
        _fail("micro_batch_size", c.micro_batch_size, f"must be <= batch_size={c.batch_size}")
    if c.model.lora is not None:
        _fail("model.lora", data["model"]["lora"],
              "must be null for SFT: set the adapter with the top-level `lora` knob (lora=null: full fine-tuning)")
    if c.adapter_dir is not None and c.lora is None:
        _fail("adapter_dir", c.adapter_dir,
              "needs LoRA training (lora=null fine-tunes the full weights: there is no adapter to export)")
    if c.model.dtype == "auto":
        _fail("model.dtype", c.model.dtype, "must be one of float32, bfloat16 for SFT")


_CROSS: dict[str, Callable[[Any, dict], None]] = {"train": _check_train, "eval": _check_eval, "sft": _check_sft}


# ---------------------------------------------------------------------------------------------- entry
def check_config(kind: str, data: dict, origin: Origin | None = None) -> dict[str, Any]:
    """Check a resolved config (plain dicts and lists) of ``kind`` (``train``, ``eval``, ``sft``); return the
    group options built on the way (``{group: object}``). Raises :class:`ConfigError`."""
    schema = SCHEMAS[kind]
    if not isinstance(data, dict):
        raise ConfigError(f"the {kind} config must be a mapping, got {type(data).__name__}")
    try:
        parsed = schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(_format_error(schema, e.errors()[0], data, origin))) from None
    built = _build_options(schema, data, "", origin)
    _CROSS[kind](parsed, data)
    if kind == "train":
        _check_critic(built)
    return built


def _check_critic(built: dict[str, Any]) -> None:
    """An estimator that reads a critic's values (``uses_critic``, PPO's GAE) needs one, and a critic is trained
    only for such an estimator."""
    estimator, critic = built["algorithm.advantage"], built["algorithm.critic"]
    needs = bool(getattr(estimator, "uses_critic", False))
    has = bool(getattr(getattr(critic, "func", critic), "enabled", False))
    name = type(estimator).__name__
    if needs and not has:
        raise ConfigError(f"algorithm/advantage={name} reads a critic's state values, but algorithm/critic is none: "
                          "set algorithm/critic=head (a head on the policy) or algorithm/critic=model (algorithm=ppo does)")
    if has and not needs:
        raise ConfigError(f"algorithm/critic trains a value function that algorithm/advantage={name} never reads: "
                          "set algorithm/critic=none, or algorithm/advantage=gae")


def _build_options(schema: type, data: dict, prefix: str, origin: Origin | None) -> dict[str, Any]:
    """Build every group option of ``schema`` in ``data``, also those inside its sections (``algorithm.loss``);
    keyed by dotted path. The label of a nested one is its Hydra group, ``algorithm/loss=<its _target_>``."""
    built: dict[str, Any] = {}
    for group, field in schema.model_fields.items():
        path = f"{prefix}{group}"
        if any(isinstance(m, _OptionMarker) for m in field.metadata):
            node = data[group]
            if not _is_option(node):
                raise ConfigError(f"{path} is invalid: must be a group option (a mapping with _target_)")
            target = node.get("_target_")
            name = node.get("name") or (target.rsplit(".", 1)[-1] if prefix and isinstance(target, str) else None)
            label = f"{path.replace('.', '/')}={name}" if isinstance(name, str) and name else path
            built[path] = build_option(node, path, label, origin)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, Section) and isinstance(data.get(group), dict):
            built.update(_build_options(field.annotation, data[group], f"{path}.", origin))
    return built
