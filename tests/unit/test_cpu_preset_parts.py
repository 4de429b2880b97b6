"""Pieces of the CPU preset: task-type pools of the generated ALFWorld games, the ``dtype: auto`` choice and
the study's curve aggregation."""

from __future__ import annotations

import pytest

from serl.envs.alfworld.generator import TASK_TYPES, task_indices
from serl.plots import study_curves
from serl.policy.models import cpu_has_native_bf16, resolve_dtype


def test_task_indices_keep_the_round_robin_index_of_each_game():
    # TASK_TYPES[i % 6]: pick_and_place_simple is index 0 mod 6, look_at_obj_in_light 1 mod 6
    assert task_indices(4) == [0, 1, 2, 3]
    assert task_indices(5, ["pick_and_place_simple", "look_at_obj_in_light"]) == [0, 1, 6, 7, 12]
    assert task_indices(3, ["pick_two_obj_and_place"]) == [5, 11, 17]
    assert [TASK_TYPES[i % 6] for i in task_indices(4, ["pick_cool_then_place_in_recep"])] == [
        "pick_cool_then_place_in_recep"
    ] * 4


@pytest.mark.parametrize("bad", [["pick_the_mug"], [], "pick_and_place_simple"])
def test_bad_task_types_name_the_allowed_ones(bad):
    with pytest.raises(ValueError, match="pick_and_place_simple, look_at_obj_in_light"):
        task_indices(2, bad)


def test_bad_task_type_in_the_config_is_a_config_error_before_any_game_or_model():
    from serl.build import ConfigError, build_suite
    from tests.helpers import compose_cfg

    with pytest.raises(ConfigError, match="unknown task type 'pick_the_mug'"):
        build_suite(compose_cfg(["env.task_types=[pick_the_mug]"]))


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_native_bf16("flags : sse avx2 amx_bf16\n")
    assert not cpu_has_native_bf16("flags : sse avx2 avx512f\n")
    assert not cpu_has_native_bf16("")


def test_resolve_dtype(monkeypatch):
    import serl.policy.models as models

    assert resolve_dtype("float32") == "float32" and resolve_dtype("bfloat16") == "bfloat16"
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    assert resolve_dtype("auto", "cpu") == "float32"
    with pytest.raises(ValueError, match="auto"):
        resolve_dtype("float16")


def test_study_curves_mean_min_max_per_step():
    runs = {
        "GRPO": [
            [{"step": 0, "eval/success_rate": 0.25}, {"step": 1, "episode/success_rate": 0.5}, {"step": 4, "eval/success_rate": 0.5}],
            [{"step": 0, "eval/success_rate": 0.0}, {"step": 4, "eval/success_rate": 0.25}],
        ]
    }
    assert study_curves(runs, "eval/success_rate") == {
        "GRPO": [(0, 0.125, 0.0, 0.25, 2), (4, 0.375, 0.25, 0.5, 2)]
    }
    assert study_curves(runs, "episode/success_rate") == {"GRPO": [(1, 0.5, 0.5, 0.5, 1)]}


def test_mixed_group_fraction_counts_groups_with_a_win_and_a_loss():
    from serl.metrics import mixed_group_fraction
    from serl.types import Trajectory

    def group(*wins):
        return [Trajectory(group_id=0, traj_id=j, game="g", task_type="t", task="x", won=w) for j, w in enumerate(wins)]

    # mixed, all lost, all won, mixed -> 2 of 4
    groups = [group(True, False, False), group(False, False), group(True, True), group(False, True)]
    assert mixed_group_fraction(groups) == 0.5
    assert mixed_group_fraction([group(False, False, False)]) == 0.0
    assert mixed_group_fraction([]) == 0.0
