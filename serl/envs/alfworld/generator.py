"""Offline ALFWorld game generator (docs/alfworld_games.md §2–§4).

The official ALFWorld games are not in the alfworld wheel and cannot be downloaded here, so serl generates
playable games from what the wheel ships (docs/alfworld_games.md §1): the AI2-THOR receptacle poses and scene type
lists in ``alfworld/gen/layouts``, the object tables of ``alfworld.gen.constants``, the goal library
``alfworld.gen.goal_library.gdict`` and the PDDL domain + TWL2 grammar from ``alfworld.info``. Object
placements are random, so numbers measured on these games are not the benchmark's (docs/alfworld_games.md §6.1).

Public API: :func:`generate_games` ``(root, split, n, seed) -> list[Path]`` (sorted ``game.tw-pddl`` paths).

Algorithm (docs/alfworld_games.md §4.1 with the §4.4 requirements), per game index ``i`` of ``(split, seed)``:

* task type = ``TASK_TYPES[i % 6]`` (round-robin, §4.4-3);
* for attempt ``k = 0, 1, ...``: one ``random.Random`` seeded with the string
  ``"serl.alfworld.synth|v<VERSION>|<split>|<seed>|<i>|<k>"`` (string seeds are hashed with SHA-512, so
  the draws do not depend on ``PYTHONHASHSEED``) drives every choice: the scene among the split's floor
  plans that are valid for the task (room type from ``GOALS_VALID``, §4.4-3) and viable (the required
  appliance / lamp / candidate types exist), the task parameters, instance counts, placements, ids, the start
  pose and the task-sentence template (§4.4-1). Sets are always sorted before drawing.
* the candidate is checked with the Fast Downward planner (``policy_commands``) in a forked child process
  with a wall-clock limit and an address-space limit (§4.3); the attempt is rejected on any exception,
  timeout, crash, empty plan, plan longer than :data:`MAX_PLAN_LENGTH`, a goal already won at reset, or a
  plan that does not win when replayed (§4.4-5). The accepted plan is stored as ``walkthrough`` with
  ``solvable: true``.
* files are written to a temp dir and renamed into the official 5-part layout (§2.1, §4.4-7)
  ``<root>/json_2.1.1/<split>/<task>-<Obj>-<MRecep|None>-<Parent|Toggle>-<scene>/trial_synth_<seed>_<i:05d>/``.
  A game already on disk (same split, seed, index and generator version) is reused without planner work.

Splits: ``train`` and ``valid_seen`` draw from all floor plans except :data:`UNSEEN_FLOOR_PLANS`
(10, 219, 308, 424), which only ``valid_unseen`` uses (docs/alfworld_games.md §6.2-3).

Determinism: the same ``(split, seed, index)`` gives byte-identical ``game.tw-pddl`` and ``traj_data.json``
on any machine, *unless* a planner check hits the wall-clock limit on one machine and not on another
(the limit, 60 s, is generous — checks measured here took 0.6–13 s on a loaded 2-core machine — so this
is rare; memory-limit rejections are deterministic).

Parallelism: missing games are handed out one index at a time to at most 2 persistent worker subprocesses
(``python -m serl.envs.alfworld.generator --worker``); each worker forks its planner children. Workers are
fresh single-threaded interpreters, so forking them is safe whatever threads the caller runs, and, unlike a
``spawn`` pool, they never re-import the caller's ``__main__``.
"""

from __future__ import annotations

import collections
import functools
import json
import multiprocessing
import os
import random
import re
import selectors
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from serl.envs.alfworld import ensure_alfworld_data, import_alfworld

GENERATOR_VERSION = 1
SPLITS = ("train", "valid_seen", "valid_unseen")
# docs/alfworld_games.md §6.1/§6.2-3: ALFRED's unseen-validation floor plans, never used by train/valid_seen.
UNSEEN_FLOOR_PLANS = (10, 219, 308, 424)
# Order of alfworld's TASK_TYPES ids 1..6 (alfred_tw_env.TASK_TYPES); round-robin by game index.
TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
MAX_PLAN_LENGTH = 50  # §4.4-5: reject plans longer than about 50 commands
MAX_ATTEMPTS = 20  # per game index (§4.1-1 used 20·N attempts in total)
PLANNER_TIME_LIMIT_S = 60.0  # §4.3: wall-clock limit of one planner check (30–60 s recommended)
PLANNER_MEMORY_LIMIT_BYTES = 4 << 30  # §4.3: address-space budget of the planner child ("a few GB")
MAX_WORKERS = 2

# §4.1-5: receptacle types that can hold a lamp (no lamp type is in any VAL_RECEPTACLE_OBJECTS set).
LAMP_HOMES = ("CoffeeTable", "CounterTop", "Desk", "DiningTable", "Dresser", "Shelf", "SideTable", "TVStand")
# §4.1-6: the appliance each transformation task needs (domain: CleanObject/HeatObject/CoolObject).
APPLIANCE = {
    "pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
    "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
    "pick_cool_then_place_in_recep": ("Fridge", "Coolable"),
}
# §3.2: always declare the 5 type constants the domain uses without declaring them.
DOMAIN_RTYPES = ("FridgeType", "MicrowaveType", "SinkBasinType")
DOMAIN_OTYPES = ("ButterKnifeType", "KnifeType")
# §2.1: AlfredTWEnv silently skips any path containing these (case-sensitive) substrings.
FORBIDDEN_PATH_PARTS = ("movable", "Sliced")
# 5-part AI2-THOR ids: the type is the last part, the display prefix the first one (§3.1).
BASIN_PREFIX = {"SinkBasin": "Sink", "BathtubBasin": "Bathtub"}


class GenerationError(RuntimeError):
    """No acceptable game was found for one (split, seed, index) within MAX_ATTEMPTS attempts."""


# --------------------------------------------------------------------------------------------------
# Static inputs from the wheel


@dataclass(frozen=True)
class _Tables:
    """The alfworld tables the generator uses, with every set turned into a sorted tuple."""

    objects: frozenset[str]  # constants.OBJECTS
    fixed_receptacles: tuple[str, ...]  # VAL_RECEPTACLE_OBJECTS keys minus MOVABLE_RECEPTACLES
    movable_receptacles: frozenset[str]
    accepts: dict[str, frozenset[str]]  # receptacle type -> object types it accepts
    action_props: dict[str, frozenset[str]]  # "Heatable"... -> object types
    openable: frozenset[str]  # OPENABLE_CLASS_LIST
    room_of_task: dict[str, frozenset[str]]  # GOALS_VALID
    scene_type: dict[str, tuple[int, ...]]  # SCENE_TYPE
    goals: dict[str, dict[str, Any]]  # gdict entries of the 6 task types
    domain: str  # alfred.pddl text
    grammar: str  # alfred.twl2 text
    layouts: Path


@functools.lru_cache(maxsize=1)
def _tables() -> _Tables:
    ensure_alfworld_data()
    import alfworld.gen
    import alfworld.gen.constants as C
    import alfworld.info
    from alfworld.gen.goal_library import gdict

    fixed = tuple(sorted(set(C.VAL_RECEPTACLE_OBJECTS) - set(C.MOVABLE_RECEPTACLES)))
    return _Tables(
        objects=frozenset(C.OBJECTS),
        fixed_receptacles=fixed,
        movable_receptacles=frozenset(C.MOVABLE_RECEPTACLES),
        accepts={k: frozenset(v) for k, v in C.VAL_RECEPTACLE_OBJECTS.items()},
        action_props={k: frozenset(v) for k, v in C.VAL_ACTION_OBJECTS.items()},
        openable=frozenset(C.OPENABLE_CLASS_LIST),
        room_of_task={k: frozenset(v) for k, v in C.GOALS_VALID.items()},
        scene_type={k: tuple(v) for k, v in C.SCENE_TYPE.items()},
        goals={t: gdict[t] for t in TASK_TYPES},
        domain=Path(alfworld.info.ALFRED_PDDL_PATH).read_text(encoding="utf-8"),
        grammar=Path(alfworld.info.ALFRED_TWL2_PATH).read_text(encoding="utf-8"),
        layouts=Path(alfworld.gen.__file__).parent / "layouts",
    )


@dataclass(frozen=True)
class _Receptacle:
    rid: str  # AI2-THOR style id, e.g. "Cabinet|+00.68|+00.50|-02.20" or "Sink|...|SinkBasin"
    rtype: str
    pose: tuple[float, float, int, int]  # interaction pose (x, z, rotation_deg, horizon_deg)


@dataclass(frozen=True)
class _Scene:
    """One floor plan's static data (docs/alfworld_games.md §1 'layouts')."""

    num: int
    room: str
    types: tuple[str, ...]  # sorted objects.json
    receptacles: tuple[_Receptacle, ...]  # from openable.json, fixed receptacle types only, sorted by id
    missing_fixed: tuple[str, ...]  # fixed receptacle types in objects.json without openable entry (§4.1-3)
    points: tuple[tuple[float, float], ...]  # reachable agent positions (layout.npy)

    @property
    def receptacle_types(self) -> tuple[str, ...]:
        return tuple(sorted({r.rtype for r in self.receptacles} | set(self.missing_fixed)))


def _receptacle_type(rid: str) -> str:
    parts = rid.split("|")
    return parts[-1] if len(parts) == 5 else parts[0]


@functools.lru_cache(maxsize=None)
def _scene(num: int) -> _Scene:
    import numpy as np

    t = _tables()
    base = t.layouts / f"FloorPlan{num}"
    types = tuple(sorted(set(json.loads(Path(f"{base}-objects.json").read_text(encoding="utf-8")))))
    openable = json.loads(Path(f"{base}-openable.json").read_text(encoding="utf-8"))
    recs = []
    for key in sorted(openable):
        rtype = _receptacle_type(key)
        if rtype not in t.fixed_receptacles:
            continue
        x, z, rot, hor = openable[key]
        parts = key.split("|")
        rid = key
        if rtype in BASIN_PREFIX and parts[0] != BASIN_PREFIX[rtype]:
            # e.g. one "Bathtub|...|SinkBasin" entry: keep the display prefix consistent with the type (§3.1).
            rid = "|".join([BASIN_PREFIX[rtype], *parts[1:]])
        recs.append(_Receptacle(rid, rtype, (float(x), float(z), int(round(rot)), int(round(hor)))))
    present = {r.rtype for r in recs}
    missing = tuple(ty for ty in types if ty in t.fixed_receptacles and ty not in present)
    points = tuple((float(x), float(z)) for x, z in np.load(f"{base}-layout.npy")[:, :2].tolist())
    room = next(name for name, nums in sorted(t.scene_type.items()) if num in nums)
    return _Scene(num, room, types, tuple(sorted(recs, key=lambda r: r.rid)), missing, points)


@functools.lru_cache(maxsize=1)
def _all_floor_plans() -> tuple[int, ...]:
    t = _tables()
    nums = []
    for p in t.layouts.glob("FloorPlan*-openable.json"):
        m = re.fullmatch(r"FloorPlan(\d+)-openable\.json", p.name)
        if m:
            nums.append(int(m.group(1)))
    return tuple(sorted(nums))


def _split_floor_plans(split: str) -> tuple[int, ...]:
    plans = _all_floor_plans()
    if split == "valid_unseen":
        return tuple(n for n in plans if n in UNSEEN_FLOOR_PLANS)
    return tuple(n for n in plans if n not in UNSEEN_FLOOR_PLANS)


# --------------------------------------------------------------------------------------------------
# Task parameters (docs/alfworld_games.md §4.1-4..6)


@dataclass(frozen=True)
class _Params:
    obj: str
    recep: str = ""  # parent_target
    toggle: str = ""  # toggle_target (look tasks)


def _portable_types(scene: _Scene) -> tuple[str, ...]:
    """§4.1-4: scene types that fit a present receptacle type, are not fixed receptacles, are in OBJECTS."""
    t = _tables()
    rtypes = scene.receptacle_types
    out = []
    for ty in scene.types:
        if ty in t.fixed_receptacles or ty not in t.objects:
            continue
        if any(part in ty for part in FORBIDDEN_PATH_PARTS) or "basin" in ty.lower():
            continue
        if any(ty in t.accepts[r] for r in rtypes):
            out.append(ty)
    return tuple(out)


def _lamp_types(scene: _Scene) -> tuple[str, ...]:
    """§4.1-5: the scene's Toggleable types, placed only if a lamp home receptacle exists."""
    t = _tables()
    if not any(r in LAMP_HOMES for r in scene.receptacle_types):
        return ()
    return tuple(ty for ty in scene.types if ty in t.action_props["Toggleable"])


@functools.lru_cache(maxsize=None)
def _candidates(scene_num: int, task: str) -> tuple[_Params, ...]:
    """All task parameters valid in a scene (sorted; empty = the scene cannot host the task)."""
    t = _tables()
    scene = _scene(scene_num)
    if scene.room not in t.room_of_task[task]:
        return ()
    rtypes = scene.receptacle_types
    lamps = set(_lamp_types(scene))
    portable = [ty for ty in _portable_types(scene) if ty not in lamps]

    def receps_for(obj: str, exclude: str = "") -> list[str]:
        return [r for r in rtypes if obj in t.accepts[r] and r != exclude]

    out: list[_Params] = []
    if task == "look_at_obj_in_light":
        objs = [o for o in portable if o not in t.movable_receptacles]
        out = [_Params(obj=o, toggle=lamp) for lamp in sorted(lamps) for o in objs]
    elif task in APPLIANCE:
        appliance, prop = APPLIANCE[task]
        if appliance in rtypes:
            objs = [o for o in portable if o in t.action_props[prop]]
            out = [_Params(obj=o, recep=r) for o in objs for r in receps_for(o, exclude=appliance)]
    else:  # simple / two: the target objects must start outside every target-type receptacle (§4.4-2)
        out = [
            _Params(obj=o, recep=r)
            for o in portable
            for r in receps_for(o)
            if receps_for(o, exclude=r)
        ]
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _viable_scenes(split: str, task: str) -> tuple[int, ...]:
    return tuple(n for n in _split_floor_plans(split) if _candidates(n, task))


# --------------------------------------------------------------------------------------------------
# PDDL problem (docs/alfworld_games.md §3)


def mangle(thor_id: str) -> str:
    """AI2-THOR id -> PDDL id (§3.1): ``|``→``_bar_``, ``+``→``_plus_``, ``-``→``_minus_``, ``.``→``_dot_``."""
    out = thor_id
    for a, b in (("|", "_bar_"), ("+", "_plus_"), ("-", "_minus_"), (".", "_dot_"), (",", "_comma_")):
        out = out.replace(a, b)
    return out


def location_name(pose: tuple[float, float, int, int]) -> str:
    """Pose (x m, z m, rotation deg, horizon deg) -> ``loc_bar_<X>_bar_<Z>_bar_<R>_bar_<H>`` (§3.1)."""
    x, z, rot, hor = pose
    parts = (int(round(x / 0.25)), int(round(z / 0.25)), (int(round(rot / 90))) % 4, int(hor))
    return "loc" + "".join(f"_bar_{p}" if p >= 0 else f"_bar__minus_{-p}" for p in parts)


def _thor_id(prefix: str, x: float, y: float, z: float, suffix: str = "") -> str:
    tid = f"{prefix}|{x:+06.2f}|{y:+06.2f}|{z:+06.2f}"
    return f"{tid}|{suffix}" if suffix else tid


def _rid_coords(rid: str) -> tuple[float, float, float]:
    parts = rid.split("|")
    return float(parts[1]), float(parts[2]), float(parts[3])


@dataclass(frozen=True)
class Candidate:
    """One placement attempt: everything needed to write a game except the planner's walkthrough."""

    split: str
    seed: int
    index: int
    attempt: int
    task_type: str
    scene: int
    params: _Params
    task_sentence: str
    problem: str  # PDDL problem text

    @property
    def task_dir_name(self) -> str:
        """Official 5-part name ``<task>-<Obj>-<MRecep|None>-<Parent|Toggle>-<scene>`` (§2.1)."""
        parent = self.params.toggle or self.params.recep
        return f"{self.task_type}-{self.params.obj}-None-{parent}-{self.scene}"

    @property
    def trial_dir_name(self) -> str:
        return trial_dir_name(self.seed, self.index)

    def game_dict(self, walkthrough: list[str] | None, solvable: bool | None) -> dict[str, Any]:
        """The ``game.tw-pddl`` object (§2.2); ``generator`` is a documented extra key."""
        t = _tables()
        return {
            "pddl_domain": t.domain,
            "grammar": t.grammar.replace("UNKNOWN GOAL", self.task_sentence),
            "pddl_problem": self.problem,
            "solvable": solvable,
            "walkthrough": walkthrough,
            "generator": self.provenance(),
        }

    def traj_data(self) -> dict[str, Any]:
        """The ``traj_data.json`` object (§2.3) plus provenance."""
        return {
            "task_type": self.task_type,
            "pddl_params": {
                "object_target": self.params.obj,
                "parent_target": self.params.recep,
                "toggle_target": self.params.toggle,
                "mrecep_target": "",
                "object_sliced": False,
            },
            "scene": {"floor_plan": f"FloorPlan{self.scene}", "scene_num": self.scene},
            "task_id": self.trial_dir_name,
            "task_desc": self.task_sentence,
            "generator": self.provenance(),
        }

    def provenance(self) -> dict[str, Any]:
        return {
            "name": "serl.envs.alfworld.generator",
            "version": GENERATOR_VERSION,
            "split": self.split,
            "seed": self.seed,
            "index": self.index,
            "attempt": self.attempt,
        }


def trial_dir_name(seed: int, index: int) -> str:
    return f"trial_synth_{seed}_{index:05d}"


def attempt_rng(split: str, seed: int, index: int, attempt: int) -> random.Random:
    """The one RNG of an attempt (§4.4-1). String seeds are hashed with SHA-512: no PYTHONHASHSEED effect."""
    return random.Random(f"serl.alfworld.synth|v{GENERATOR_VERSION}|{split}|{seed}|{index}|{attempt}")


def build_candidate(split: str, seed: int, index: int, attempt: int = 0) -> Candidate:
    """Draw one placement for game ``index`` of ``(split, seed)`` (pure, ~ms; no planner).

    Raises ValueError on a bad split/seed/index, GenerationError if no floor plan of the split can host
    the task type.
    """
    _check_args(split, seed)
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    t = _tables()
    task = TASK_TYPES[index % len(TASK_TYPES)]
    scenes = _viable_scenes(split, task)
    if not scenes:
        raise GenerationError(f"no floor plan of split {split!r} can host task type {task!r}")
    rng = attempt_rng(split, seed, index, attempt)
    scene = _scene(rng.choice(scenes))
    params = rng.choice(_candidates(scene.num, task))

    # Receptacles: openable.json entries + synthesised missing fixed types (§4.1-2, §4.1-3).
    # A synthesised receptacle gets its own location when possible (re-drawn up to 20 times), so that it
    # does not silently share a pose with another receptacle.
    receptacles = list(scene.receptacles)
    used_ids = {r.rid for r in receptacles}
    used_locs = {location_name(r.pose) for r in receptacles}
    for rtype in scene.missing_fixed:
        # sinks and tubs keep the 5-part form "Sink|x|y|z|SinkBasin" (§3.1, pitfall §5.4-11)
        prefix, suffix = (BASIN_PREFIX[rtype], rtype) if rtype in BASIN_PREFIX else (rtype, "")
        for _ in range(4 if rtype == "StoveBurner" else 1):
            for _try in range(20):
                px, pz = rng.choice(scene.points)
                pose = (px, pz, rng.choice((0, 90, 180, 270)), 30)
                if location_name(pose) not in used_locs:
                    break
            while True:
                rid = _thor_id(
                    prefix, px + rng.uniform(-0.2, 0.2), rng.uniform(0.5, 1.5), pz + rng.uniform(-0.2, 0.2), suffix
                )
                if rid not in used_ids:  # §4.4-4: unique ids
                    break
            used_ids.add(rid)
            used_locs.add(location_name(pose))
            receptacles.append(_Receptacle(rid, rtype, pose))
    receptacles.sort(key=lambda r: r.rid)
    rtypes = sorted({r.rtype for r in receptacles})

    # Objects (§4.1-4, §4.1-5, §4.1-7). Each entry: (thor id, type, receptacle).
    lamps = _lamp_types(scene)
    portable = [ty for ty in _portable_types(scene) if ty not in lamps]
    objects: list[tuple[str, str, _Receptacle]] = []
    obj_ids: set[str] = set()

    def place(otype: str, rec: _Receptacle) -> None:
        rx, _, rz = _rid_coords(rec.rid)
        while True:
            oid = _thor_id(otype, rx + rng.uniform(-0.3, 0.3), rng.uniform(0.0, 2.0), rz + rng.uniform(-0.3, 0.3))
            if oid not in obj_ids:  # §4.4-4: unique ids, re-draw on collision
                break
        obj_ids.add(oid)
        objects.append((oid, otype, rec))

    homes = [r for r in receptacles if r.rtype in LAMP_HOMES]
    for lamp in lamps:
        place(lamp, rng.choice(homes))
    for otype in portable:
        is_target = otype == params.obj
        low = 2 if (is_target and task == "pick_two_obj_and_place") else 1
        count = rng.randint(low, 3)
        choices = [r for r in receptacles if otype in t.accepts[r.rtype]]
        if is_target and task in ("pick_and_place_simple", "pick_two_obj_and_place"):
            choices = [r for r in choices if r.rtype != params.recep]  # §4.4-2
        for _ in range(count):
            place(otype, rng.choice(choices))

    # Start pose (§4.1-8): a layout point, random rotation, horizon 30; never on a receptacle location.
    rec_locs = {location_name(r.pose) for r in receptacles}
    sx, sz = rng.choice(scene.points)
    start = location_name((sx, sz, rng.choice((0, 90, 180, 270)), 30))
    if start in rec_locs:
        start = location_name((sx, sz, 0, 15))

    # Task sentence (§3.5) with our own RNG (§4.4-1).
    template = rng.choice(list(t.goals[task]["templates"]))
    sentence = template.format(
        obj=params.obj.lower(), recep=params.recep.lower(), toggle=params.toggle.lower(), mrecep=""
    )

    problem = _problem_text(
        name=f"plan_synth_{split}_{seed}_{index}_{attempt}",
        task=task,
        params=params,
        receptacles=receptacles,
        rtypes=rtypes,
        objects=objects,
        portable=portable,
        lamps=lamps,
        start=start,
    )
    return Candidate(split, seed, index, attempt, task, scene.num, params, sentence, problem)


def _problem_text(
    *,
    name: str,
    task: str,
    params: _Params,
    receptacles: list[_Receptacle],
    rtypes: list[str],
    objects: list[tuple[str, str, _Receptacle]],
    portable: list[str],
    lamps: tuple[str, ...],
    start: str,
) -> str:
    """Assemble the PDDL problem (§3.2 objects, §3.3 init facts, §3.4 goal)."""
    t = _tables()
    otypes = sorted({f"{o}Type" for o in portable} | {f"{o}Type" for o in lamps} | set(DOMAIN_OTYPES))
    rtype_consts = sorted({f"{r}Type" for r in rtypes} | set(DOMAIN_RTYPES))
    objects = sorted(objects, key=lambda e: e[0])
    locations = sorted({location_name(r.pose) for r in receptacles} | {start})

    decl = ["agent1 - agent"]
    decl += [f"{c} - otype" for c in otypes]
    decl += [f"{c} - rtype" for c in rtype_consts]
    decl += [f"{mangle(oid)} - object" for oid, _, _ in objects]
    decl += [f"{mangle(r.rid)} - receptacle" for r in receptacles]
    decl += [f"{loc} - location" for loc in locations]

    init = [f"(atLocation agent1 {start})"]
    for r in receptacles:
        rid = mangle(r.rid)
        init.append(f"(receptacleType {rid} {r.rtype}Type)")
        init.append(f"(receptacleAtLocation {rid} {location_name(r.pose)})")
        if r.rtype in t.openable:
            init.append(f"(openable {rid})")
    props = (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable"), ("Sliceable", "sliceable"))
    for oid, otype, rec in objects:
        m = mangle(oid)
        init.append(f"(objectType {m} {otype}Type)")
        init.append(f"(inReceptacle {m} {mangle(rec.rid)})")
        init.append(f"(objectAtLocation {m} {location_name(rec.pose)})")
        if otype in lamps:
            init.append(f"(toggleable {m})")
            continue
        init.append(f"(pickupable {m})")
        for table, pred in props:
            if otype in t.action_props[table]:
                init.append(f"({pred} {m})")
        if otype in t.movable_receptacles:
            init.append(f"(isReceptacleObject {m})")
    for r in rtypes:
        for o in portable:
            if o in t.accepts[r]:
                init.append(f"(canContain {r}Type {o}Type)")

    goal = t.goals[task]["pddl"].format(obj=params.obj, recep=params.recep, toggle=params.toggle, mrecep="")
    goal = goal.replace("#", "-").strip()  # ends with the ')' that closes '(define' (§3.4)
    return (
        f"(define (problem {name})\n(:domain alfred)\n(:objects\n  "
        + "\n  ".join(decl)
        + "\n)\n(:init\n  "
        + "\n  ".join(init)
        + "\n)\n"
        + goal
        + "\n"
    )


# --------------------------------------------------------------------------------------------------
# Sandboxed planner check (docs/alfworld_games.md §4.1-10, §4.3)


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    value: Any = None  # the function's return value when ok
    error: str = ""  # "timeout", "crashed (exit code ...)", or the exception repr


def run_sandboxed(
    fn: Callable[..., Any], *args: Any, time_limit_s: float, memory_limit_bytes: int | None
) -> SandboxResult:
    """Run ``fn(*args)`` in a forked child with a wall-clock and an address-space limit (§4.3).

    The child's address space may grow by at most ``memory_limit_bytes`` beyond its size at fork time
    (``None``: no limit); past ``time_limit_s`` seconds it is killed.

    Forks: call it from a single-threaded process (the generator's worker subprocesses are). The return
    value is sent back through a pipe, so it must be picklable.
    """
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_sandbox_main, args=(send, fn, args, memory_limit_bytes, time_limit_s + 10), daemon=True
    )
    proc.start()
    send.close()  # so that a crashed child shows up as EOF
    try:
        if not recv.poll(time_limit_s):
            return SandboxResult(False, error=f"timeout after {time_limit_s:.0f} s")
        try:
            status, payload = recv.recv()
        except EOFError:
            proc.join(5)
            return SandboxResult(False, error=f"crashed (exit code {proc.exitcode})")
        return SandboxResult(True, value=payload) if status == "ok" else SandboxResult(False, error=payload)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()


def _sandbox_main(
    send: Any, fn: Callable[..., Any], args: tuple[Any, ...], memory_limit_bytes: int | None, cpu_limit_s: float
) -> None:
    import resource

    if memory_limit_bytes is not None:
        # The budget is on top of what the forked child already maps, so the limit does not depend on
        # how big the parent interpreter happens to be.
        limit = _address_space_bytes() + memory_limit_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Backstop if the parent dies without killing us: CPU time never exceeds wall time, so this limit only
    # ends a child whose parent is gone.
    cpu = int(cpu_limit_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    try:
        result = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 - any failure means "reject"
        result = ("error", f"{type(exc).__name__}: {exc}")
    try:
        send.send(result)
    finally:
        send.close()


def _address_space_bytes() -> int:
    """Current virtual size of this process (Linux ``/proc/self/statm``), 0 if unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def plan_game(game: dict[str, Any]) -> dict[str, Any]:
    """Load a game dict in the PDDL engine, plan, and replay the plan (runs inside the sandbox).

    Returns ``{"won_at_reset": bool, "plan": list[str], "replay_won": bool}``. Raises whatever the
    engine raises on an unsolvable problem (typically ``KeyError: 'val1'``, §4.3).
    """
    import_alfworld()  # also memoises the PDDL->SAS translation: load + reset translate once
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs.pddl import PddlEnv

    env = AlfredDemangler(
        PddlEnv(textworld.EnvInfos(policy_commands=True, admissible_commands=True, won=True)), shuffle=False
    )
    env.load(game)
    state = env.reset()
    won_at_reset = bool(state["won"])
    plan = [str(c) for c in (state["policy_commands"] or [])]
    replay_won = False
    if plan and not won_at_reset and len(plan) <= MAX_PLAN_LENGTH:
        env.request_infos.policy_commands = False  # no re-planning on every replay step
        for cmd in plan:
            state, _, done = env.step(cmd)
            if done:
                break
        replay_won = bool(state["won"])
    return {"won_at_reset": won_at_reset, "plan": plan, "replay_won": replay_won}


def check_candidate(
    cand: Candidate, time_limit_s: float = PLANNER_TIME_LIMIT_S, memory_limit_bytes: int = PLANNER_MEMORY_LIMIT_BYTES
) -> tuple[list[str] | None, str]:
    """Planner check of one candidate: ``(walkthrough, "")`` if accepted, else ``(None, reason)``."""
    res = run_sandboxed(
        plan_game, cand.game_dict(None, None), time_limit_s=time_limit_s, memory_limit_bytes=memory_limit_bytes
    )
    if not res.ok:
        return None, f"planner failed: {res.error}"
    out = res.value
    if out["won_at_reset"]:
        return None, "already won at reset"
    if not out["plan"]:
        return None, "empty plan"
    if len(out["plan"]) > MAX_PLAN_LENGTH:
        return None, f"plan too long ({len(out['plan'])} > {MAX_PLAN_LENGTH})"
    if not out["replay_won"]:
        return None, "plan replay did not win"
    return out["plan"], ""


# --------------------------------------------------------------------------------------------------
# Writing, caching, the public entry point


def _check_args(split: str, seed: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed splits: {', '.join(SPLITS)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def _split_dir(root: Path, split: str) -> Path:
    return root / "json_2.1.1" / split


def _cached_games(root: Path, split: str, seed: int) -> dict[int, Path]:
    """Index -> trial dir of the games of ``(split, seed)`` already on disk with the current version."""
    found: dict[int, Path] = {}
    split_dir = _split_dir(root, split)
    if not split_dir.is_dir():
        return found
    prefix = f"trial_synth_{seed}_"
    for trial in sorted(split_dir.glob(f"*/{prefix}*")):
        suffix = trial.name[len(prefix) :]
        if not suffix.isdigit() or not (trial / "game.tw-pddl").is_file():
            continue
        if _trial_version(trial) == GENERATOR_VERSION:
            found.setdefault(int(suffix), trial)
    return found


def _write_game(root: Path, cand: Candidate, walkthrough: list[str]) -> Path:
    """Write the game to a temp dir, then rename it into place (§4.4-7). Returns the trial dir."""
    final = _split_dir(root, cand.split) / cand.task_dir_name / cand.trial_dir_name
    for part in FORBIDDEN_PATH_PARTS:  # docs/alfworld_games.md §2.1
        if part in str(final):
            raise ValueError(f"game path {final} contains {part!r}, which AlfredTWEnv skips; use another root")
    tmp_root = root / ".tmp_synth"
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = tmp_root / f"{cand.trial_dir_name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        game = cand.game_dict(walkthrough, True)
        (tmp / "game.tw-pddl").write_text(json.dumps(game), encoding="utf-8")
        traj = json.dumps(cand.traj_data(), indent=2, sort_keys=True) + "\n"
        (tmp / "traj_data.json").write_text(traj, encoding="utf-8")
        (tmp / "initial_state.pddl").write_text(cand.problem, encoding="utf-8")
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "game.tw-pddl").is_file():
                raise
            # another process wrote the same game first: keep theirs (identical by determinism)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp_root.rmdir()  # only succeeds when no other writer is using it
        except OSError:
            pass
    return final


def generate_one(
    root: str | os.PathLike[str],
    split: str,
    seed: int,
    index: int,
    time_limit_s: float = PLANNER_TIME_LIMIT_S,
    memory_limit_bytes: int = PLANNER_MEMORY_LIMIT_BYTES,
) -> Path:
    """Generate (or reuse) game ``index`` of ``(split, seed)``; returns its ``game.tw-pddl`` path.

    Runs the planner in forked children: call it from a single-threaded process (see generate_games).
    """
    root = Path(root)
    _check_args(split, seed)
    cached = _cached_games(root, split, seed).get(index)
    if cached is not None:
        return cached / "game.tw-pddl"
    reasons = []
    for attempt in range(MAX_ATTEMPTS):
        cand = build_candidate(split, seed, index, attempt)
        walkthrough, reason = check_candidate(cand, time_limit_s, memory_limit_bytes)
        if walkthrough is not None:
            _remove_stale(root, split, seed, index)
            return _write_game(root, cand, walkthrough) / "game.tw-pddl"
        reasons.append(f"attempt {attempt} (FloorPlan{cand.scene}): {reason}")
    raise GenerationError(
        f"no solvable game for split={split!r} seed={seed} index={index} in {MAX_ATTEMPTS} attempts:\n"
        + "\n".join(reasons)
    )


def _trial_version(trial: Path) -> Any:
    try:
        return json.loads((trial / "traj_data.json").read_text(encoding="utf-8"))["generator"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_stale(root: Path, split: str, seed: int, index: int) -> None:
    """Remove trial dirs of the same (seed, index) written by another generator version (or broken)."""
    split_dir = _split_dir(root, split)
    if split_dir.is_dir():
        for trial in sorted(split_dir.glob(f"*/{trial_dir_name(seed, index)}")):
            if _trial_version(trial) != GENERATOR_VERSION or not (trial / "game.tw-pddl").is_file():
                shutil.rmtree(trial, ignore_errors=True)


def task_indices(n: int, task_types: Sequence[str] | None = None) -> list[int]:
    """The first ``n`` game indices whose task type (``TASK_TYPES[i % 6]``) is in ``task_types``
    (all indices ``0..n-1`` when ``task_types`` is None). A game's index fixes its task type and RNG key, so
    a pool restricted to some task types reuses the cached games of the full pool."""
    if task_types is None:
        return list(range(n))
    check_task_types(task_types)
    allowed = [i for i, t in enumerate(TASK_TYPES) if t in task_types]
    return [6 * (k // len(allowed)) + allowed[k % len(allowed)] for k in range(n)]


def check_task_types(task_types: Sequence[str]) -> None:
    """ValueError naming the bad entry and the six allowed ones; an empty list is an error too."""
    if isinstance(task_types, str) or not task_types:
        raise ValueError(f"task_types must be a non-empty list of task types, got {task_types!r}; allowed: {', '.join(TASK_TYPES)}")
    for t in task_types:
        if t not in TASK_TYPES:
            raise ValueError(f"unknown task type {t!r}; allowed: {', '.join(TASK_TYPES)}")


def generate_games(
    root: str | os.PathLike[str], split: str, n: int, seed: int, task_types: Sequence[str] | None = None
) -> list[Path]:
    """Generate (or reuse from disk) ``n`` games of ``(split, seed)`` under ``root``: indices ``0..n-1``, or
    the first ``n`` indices of the given task types (:func:`task_indices`).

    Args:
        root: output root; games go to ``<root>/json_2.1.1/<split>/<task dir>/trial_synth_<seed>_<i:05d>/``.
        split: one of ``train``, ``valid_seen``, ``valid_unseen``.
        n: number of games (>= 0). Task types are round-robin by index, so n=6 gives one of each.
        seed: int >= 0.
        task_types: restrict the pool to these task types (None: all six, round-robin).

    Returns:
        The ``game.tw-pddl`` paths, sorted.

    Games already on disk are reused without planner work. Missing ones are generated by at most
    :data:`MAX_WORKERS` worker subprocesses (``python -m serl.envs.alfworld.generator --worker``): fresh
    single-threaded interpreters that fork the sandboxed planner children safely whatever the caller's
    threads, and that never re-import the caller's ``__main__`` (unlike a ``spawn`` pool).
    """
    _check_args(split, seed)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    root = Path(root).expanduser().absolute()
    for part in FORBIDDEN_PATH_PARTS:  # §2.1: AlfredTWEnv would silently skip every game under this root
        if part in str(root):
            raise ValueError(f"root {root} contains {part!r}, which AlfredTWEnv skips; use another root")
    ensure_alfworld_data()
    indices = task_indices(n, task_types)
    cached = _cached_games(root, split, seed)
    paths = {i: cached[i] / "game.tw-pddl" for i in indices if i in cached}
    missing = [i for i in indices if i not in paths]
    if missing:
        paths.update(_run_workers(root, split, seed, missing, min(MAX_WORKERS, len(missing))))
    return sorted(paths.values())


def _run_workers(root: Path, split: str, seed: int, indices: list[int], workers: int) -> dict[int, Path]:
    """Hand ``indices`` one at a time to ``workers`` persistent worker subprocesses (line protocol)."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[3])  # the directory that contains serl/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "serl.envs.alfworld.generator", "--worker", str(root), split, str(seed)]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        for _ in range(workers)
    ]
    pending = collections.deque(indices)
    busy: dict[subprocess.Popen[str], int] = {}
    idle = list(procs)
    results: dict[int, Path] = {}
    sel = selectors.DefaultSelector()
    try:
        for proc in procs:
            sel.register(proc.stdout, selectors.EVENT_READ, proc)  # type: ignore[arg-type]
        while pending or busy:
            while idle and pending:
                proc, index = idle.pop(), pending.popleft()
                proc.stdin.write(f"{index}\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                busy[proc] = index
            for key, _ in sel.select():
                proc = key.data
                line = proc.stdout.readline()
                if not line:
                    raise GenerationError(
                        f"generator worker exited (code {proc.wait()}) while generating index {busy.get(proc)} "
                        f"of split={split!r} seed={seed}; see its stderr above"
                    )
                index_s, status, payload = line.rstrip("\n").split("\t", 2)
                if status != "ok":
                    raise GenerationError(payload.replace("\\n", "\n"))
                results[int(index_s)] = Path(payload)
                del busy[proc]
                idle.append(proc)
    finally:
        sel.close()
        for proc in procs:
            try:
                proc.stdin.close()  # type: ignore[union-attr]  # EOF: the worker exits
            except OSError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
    return results


def _worker_main(root: str, split: str, seed: int) -> None:
    """Worker loop: read one index per line from stdin, answer ``index\tok\tpath`` or ``index\terror\tmsg``."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (Python or C level) goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    ensure_alfworld_data()
    for line in sys.stdin:
        if not line.strip():
            continue
        index = int(line)
        try:
            out = f"ok\t{generate_one(root, split, seed, index)}"
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
            out = "error\t" + f"{type(exc).__name__}: {exc}".replace("\n", "\\n")
        proto.write(f"{index}\t{out}\n")
        proto.flush()


def _main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m serl.envs.alfworld.generator ROOT SPLIT N SEED`` (and the internal ``--worker``)."""
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        _, root, split, seed = argv
        _worker_main(root, split, int(seed))
        return
    ap = argparse.ArgumentParser(description="Generate offline ALFWorld games (docs/alfworld_games.md §4).")
    ap.add_argument("root")
    ap.add_argument("split", choices=SPLITS)
    ap.add_argument("n", type=int)
    ap.add_argument("seed", type=int)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    paths = generate_games(a.root, a.split, a.n, a.seed)
    for p in paths:
        print(p)
    print(f"{len(paths)} games in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    _main()
