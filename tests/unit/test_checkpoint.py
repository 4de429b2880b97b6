"""serl.checkpoint: a safetensors file with the trainable weights, optimizer state, teacher snapshot and RNG.

* a round trip gives the optimizer state back bit for bit and restores python, numpy and torch RNG;
* a run resumed from the file continues bit-identically to the uninterrupted one;
* only ``requires_grad`` parameters are saved (frozen layers and duplicate tied weights are not);
* a failing write (full disk) leaves the previous file intact and no temp file behind;
* a checkpoint of another model is refused with an error naming the file;
* a legacy ``last.pt`` (torch.save of full state dicts) still loads.
"""

from __future__ import annotations

import errno
import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open

import serl.checkpoint as ckpt
from serl.checkpoint import (
    CHECKPOINT_NAME,
    TrainingState,
    checkpoint_path,
    load_checkpoint,
    load_trainable,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trainable_state,
)


def _model(seed: int = 0, freeze_first: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
    if freeze_first:
        m[0].requires_grad_(False)
    return m


def _optimizer(m: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, betas=(0.9, 0.95))


def _train(m: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> list[float]:
    """Steps whose inputs come from all three RNGs, so a resumed run only matches if every RNG is restored."""
    losses = []
    for _ in range(steps):
        x = torch.randn(5, 4) * random.uniform(0.5, 1.5) + float(np.random.rand())
        loss = m(x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _state(m: torch.nn.Module, opt: torch.optim.Optimizer, step: int, teacher=None) -> TrainingState:
    return TrainingState(
        step=step,
        model=trainable_state(m),
        optimizer=opt.state_dict(),
        teacher=teacher,
        rng=rng_state(),
        extra={"run_dir": "somewhere", "pair": (1, 2)},
    )


def _assert_equal(a, b, where="") -> None:
    """Exact equality of nested optimizer state dicts (tensors bitwise, tuples stay tuples; key order aside)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def test_round_trip_restores_optimizer_bitwise_and_rng(tmp_path):
    m = _model()
    opt = _optimizer(m)
    _train(m, opt, 3)
    teacher = {k: v + 1 for k, v in trainable_state(m).items()}
    path = save_checkpoint(tmp_path / "checkpoints", _state(m, opt, 3, teacher))
    assert path == tmp_path / "checkpoints" / CHECKPOINT_NAME
    expected = (random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3))

    state = load_checkpoint(tmp_path)
    assert state.step == 3 and state.extra == {"run_dir": "somewhere", "pair": (1, 2)}
    _assert_equal(opt.state_dict(), state.optimizer)
    assert set(state.model) == {n for n, _ in m.named_parameters()}
    for n, p in m.named_parameters():
        assert torch.equal(state.model[n], p.detach()) and torch.equal(state.teacher[n], p.detach() + 1)

    random.random(), np.random.rand(), torch.rand(7)  # move every generator on
    set_rng_state(state.rng)
    got = (random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])

    fresh_opt = _optimizer(m)
    fresh_opt.load_state_dict(state.optimizer)  # a real torch.optim state dict
    _assert_equal(opt.state_dict(), fresh_opt.state_dict())


def test_python_rng_with_a_cached_gauss_round_trips(tmp_path):
    m = _model()
    random.seed(0), np.random.seed(0)
    random.gauss(0, 1)  # leaves gauss_next set
    np.random.randn()  # leaves numpy's cached gaussian set
    save_checkpoint(tmp_path, _state(m, _optimizer(m), 0))
    expected = (random.gauss(0, 1), np.random.randn())
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state.rng["python"][2] is not None and state.rng["numpy"][3] == 1
    set_rng_state(state.rng)
    assert (random.gauss(0, 1), np.random.randn()) == expected


def test_resumed_training_is_bit_identical(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    full = _model(seed=3)
    full_opt = _optimizer(full)
    _train(full, full_opt, 2)
    save_checkpoint(tmp_path, _state(full, full_opt, 2))
    full_losses = _train(full, full_opt, 3)

    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # a new process: other RNG, fresh weights
    resumed = _model(seed=4)
    resumed_opt = _optimizer(resumed)
    state = load_checkpoint(tmp_path)
    load_trainable(resumed, state.model, checkpoint_path(tmp_path))
    resumed_opt.load_state_dict(state.optimizer)
    set_rng_state(state.rng)
    assert _train(resumed, resumed_opt, 3) == full_losses
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    _assert_equal(full_opt.state_dict(), resumed_opt.state_dict())


def test_only_trainable_parameters_are_saved(tmp_path):
    m = _model(freeze_first=True)
    opt = _optimizer(m)
    _train(m, opt, 1)
    path = save_checkpoint(tmp_path, _state(m, opt, 1))
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert {k for k in keys if k.startswith("model/")} == {"model/2.weight", "model/2.bias", "model/3.weight", "model/3.bias"}
    assert not any(k.startswith("teacher/") for k in keys)
    assert {k for k in keys if k.startswith("optimizer/")} == {
        f"optimizer/{i}/{s}" for i in range(4) for s in ("step", "exp_avg", "exp_avg_sq")
    }
    assert {"rng/torch", "rng/numpy"} <= keys
    assert meta["step"] == "1" and json.loads(meta["has_teacher"]) is False
    assert load_checkpoint(path).teacher is None

    # the frozen layer keeps the new model's own weights; the trainable ones come from the file
    other = _model(seed=5, freeze_first=True)
    load_trainable(other, load_checkpoint(path).model, path)
    assert torch.equal(other[2].weight, m[2].weight) and not torch.equal(other[0].weight, m[0].weight)


def test_tied_weights_are_saved_once_and_restored_in_both_places(tmp_path):
    m = _model()
    m[3] = torch.nn.Linear(8, 8)
    m[3].weight = m[2].weight  # tied: one parameter under two module names
    names = [n for n, _ in m.named_parameters()]
    assert "3.weight" not in names and "3.weight" in m.state_dict()
    path = save_checkpoint(tmp_path, _state(m, _optimizer(m), 0))
    state = load_checkpoint(path)
    assert set(state.model) == set(names)

    other = _model(seed=7)
    other[3] = torch.nn.Linear(8, 8)
    other[3].weight = other[2].weight
    load_trainable(other, state.model, path)
    assert torch.equal(other[3].weight, m[2].weight) and other[3].weight is other[2].weight


def test_shared_storage_is_written_as_separate_tensors(tmp_path):
    m = _model()
    state = _state(m, _optimizer(m), 0)
    state.teacher = dict(state.model)  # the very same tensors as the model part
    path = save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(path)
    for n, t in loaded.model.items():
        assert torch.equal(loaded.teacher[n], t)


def test_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    m = _model()
    opt = _optimizer(m)
    _train(m, opt, 1)
    path = save_checkpoint(tmp_path, _state(m, opt, 1))
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")  # the write gets half way
        raise OSError(errno.ENOSPC, "No space left on device")

    _train(m, opt, 1)
    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, _state(m, opt, 2))
    assert path.read_bytes() == before and load_checkpoint(path).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, "step_000001.safetensors"]


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(tmp_path):
    m = _model()
    path = save_checkpoint(tmp_path, _state(m, _optimizer(m), 0))
    state = load_checkpoint(path)

    other_names = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    with pytest.raises(ValueError, match="different model or LoRA setting") as e:
        load_trainable(other_names, state.model, path)
    assert str(path) in str(e.value) and "unexpected" in str(e.value) and "3.weight" in str(e.value)

    frozen = _model(freeze_first=True)  # a LoRA-like setting: fewer trainable parameters
    with pytest.raises(ValueError, match="different model or LoRA setting") as e:
        load_trainable(frozen, state.model, path)
    assert str(path) in str(e.value)

    wider = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8), torch.nn.Linear(8, 3)
    )
    with pytest.raises(ValueError, match="shapes differ") as e:
        load_trainable(wider, state.model, path)
    assert str(path) in str(e.value) and "0.weight" in str(e.value)


def test_checkpoint_path_accepts_run_folder_checkpoints_folder_or_file(tmp_path):
    m = _model()
    path = save_checkpoint(tmp_path / "run" / "checkpoints", _state(m, _optimizer(m), 0))
    for p in (tmp_path / "run", tmp_path / "run" / "checkpoints", path):
        assert checkpoint_path(p) == path
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        checkpoint_path(tmp_path / "nothing")


def test_a_damaged_file_is_reported_with_its_name(tmp_path):
    bad = tmp_path / CHECKPOINT_NAME
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=str(bad)):
        load_checkpoint(tmp_path)


def test_legacy_last_pt_still_loads(tmp_path):
    m = _model()
    opt = _optimizer(m)
    _train(m, opt, 2)
    legacy = tmp_path / "checkpoints" / "last.pt"
    legacy.parent.mkdir()
    payload = {
        "step": 2,
        "model": dict(m.state_dict()),
        "optimizer": opt.state_dict(),
        "teacher": {k: v.clone() for k, v in m.state_dict().items()},
        "rng": rng_state(),
        "extra": {"run_dir": "old"},
    }
    torch.save(payload, legacy)
    assert checkpoint_path(tmp_path) == legacy
    state = load_checkpoint(tmp_path)
    assert state.step == 2 and state.extra == {"run_dir": "old"}

    other = _model(seed=9, freeze_first=True)  # a full state dict, frozen entries included
    load_trainable(other, state.model, legacy)
    for (n, a), b in zip(m.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), n
    other_opt = torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.9, 0.95))
    other_opt.load_state_dict(state.optimizer)
    set_rng_state(state.rng)
    with pytest.raises(ValueError, match=str(legacy)):
        load_trainable(torch.nn.Linear(4, 3), state.model, legacy)


def test_keep_last_keeps_the_newest_step_files_and_last_is_the_newest(tmp_path):
    m = _model()
    opt = _optimizer(m)
    for step in (1, 2, 3, 4):
        _train(m, opt, 1)
        last = save_checkpoint(tmp_path, _state(m, opt, step), keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, "step_000003.safetensors", "step_000004.safetensors"]
    assert last.read_bytes() == (tmp_path / "step_000004.safetensors").read_bytes()
    assert load_checkpoint(tmp_path).step == 4 and load_checkpoint(tmp_path / "step_000003.safetensors").step == 3
    with pytest.raises(ValueError, match="keep_last must be an int >= 1, got 0"):
        save_checkpoint(tmp_path, _state(m, opt, 5), keep_last=0)


def test_non_finite_weights_are_refused_and_the_previous_checkpoint_stays(tmp_path):
    m = _model()
    opt = _optimizer(m)
    _train(m, opt, 1)
    path = save_checkpoint(tmp_path, _state(m, opt, 1))
    before = path.read_bytes()
    with torch.no_grad():
        next(p for p in m.parameters() if p.requires_grad).fill_(float("inf"))  # what lr=inf does
    with pytest.raises(FloatingPointError, match=r"refusing to save the checkpoint of training step 2: .* non-finite"):
        save_checkpoint(tmp_path, _state(m, opt, 2))
    assert path.read_bytes() == before and load_checkpoint(tmp_path).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, "step_000001.safetensors"]


def test_check_writable_names_a_read_only_folder(tmp_path):
    from serl.checkpoint import check_writable

    check_writable(tmp_path / "run" / "checkpoints")  # created
    assert (tmp_path / "run" / "checkpoints").is_dir() and not list((tmp_path / "run" / "checkpoints").iterdir())
    blocked = tmp_path / "a_file"  # a folder that cannot be made (root ignores permission bits, not this)
    blocked.write_text("x")
    with pytest.raises(OSError, match=f"checkpoint folder {blocked / 'checkpoints'} is not writable"):
        check_writable(blocked / "checkpoints")
