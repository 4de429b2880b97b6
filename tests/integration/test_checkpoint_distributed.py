"""serl.checkpoint under torch.distributed: FSDP2 (``fully_shard``) ranks save one DCP folder per step.

Two gloo processes on the CPU (``torch.multiprocessing`` spawn) train a small model sharded per block + root
(a tied weight, a frozen layer, parameters that split unevenly over the ranks and one whose rank-1 shard is
empty), take AdamW steps and save with :func:`serl.checkpoint.save_training_state`; next to it they write the
full (gathered) parameters, optimizer state and teacher for comparison. The repo's tiny HF model with a LoRA
adapter is saved the same way. Then:

* the DCP folder loads in one process without a process group (``load_checkpoint`` and
  ``restore_training_state`` into a plain model): equal tensors, rank 0's RNG, and one more AdamW step gives
  the parameters of the uninterrupted two-rank run (and of three restored FSDP ranks, below);
* the DCP folder restores into three fresh FSDP ranks (resharding 2 -> 3; ranks 0 and 1 get their own RNG
  back, rank 2 rank 0's), and a safetensors checkpoint written by one process restores into three FSDP ranks;
* a LoRA run saves only its adapter, which loads without FSDP (as ``build_policy`` loads a run) and into
  three FSDP ranks;
* a failing writer, a failing ``os.replace`` and a non-finite shard on one rank make every rank raise and
  leave the previous ``last.dcp`` loadable with no temp folder behind; keep_last prunes old step folders;
* ``checkpoint_path`` and ``check_resume`` find ``last.dcp`` (also as a pointer file) and read its step.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from omegaconf import OmegaConf
from safetensors import safe_open

from serl.checkpoint import (
    CHECKPOINT_NAME,
    DCP_CHECKPOINT_NAME,
    checkpoint_path,
    checkpoint_step,
    load_checkpoint,
    restore_training_state,
    save_training_state,
)
from serl.policy.models import trainable_parameters

WORLD = 2  # ranks of the saving run
RESTORE_WORLD = 3  # ranks restoring it: DCP reshards 2 -> 3, rank 2 takes rank 0's RNG
TOL = dict(rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------- the model
class Net(torch.nn.Module):
    """Embedding tied to the output head, a frozen layer, two blocks (5 and 6 rows: uneven over 2 or 3 ranks) and
    a 1-element scale (the other ranks' shards of it are empty)."""

    def __init__(self, seed: int, hidden: int = 5):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(10, 6)
        self.frozen = torch.nn.Linear(6, 6)
        self.frozen.requires_grad_(False)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(6, hidden), torch.nn.Linear(hidden, 6)])
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.head = torch.nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.frozen(self.emb(tokens))
        h = self.blocks[1](torch.tanh(self.blocks[0](h))) * self.scale
        return self.head(h)


def _fresh_net(seed: int, hidden: int = 5) -> Net:
    """The run's model before a restore: the frozen layer as the run has it (it comes from the config, not the
    checkpoint), every trainable parameter different."""
    model = Net(seed=0, hidden=hidden)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.copy_(torch.randn_like(p))
    return model


def _optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    # as serl.learner.Learner builds it: the trainable parameters in model.parameters() order
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, betas=(0.9, 0.95),
                             weight_decay=0.1)


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    """One AdamW step on a batch that is the same on every rank (FSDP averages equal gradients: the step
    equals one process's)."""
    tokens = torch.randint(0, 10, (4, 6), generator=torch.Generator().manual_seed(seed))
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, 10), tokens[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _snapshot(model, opt, teacher) -> dict:
    """Full (gathered: a collective) trainable parameters, AdamW state by name and teacher, on the CPU."""
    params = trainable_parameters(model)
    return {
        "model": {n: _full(p.detach()).clone() for n, p in params.items()},
        "optim": {n: {k: _full(v).clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()}
                  for n, p in params.items()},
        "teacher": {n: _full(t).clone() for n, t in teacher.items()},
    }


def _assert_snapshot(got: dict, want: dict, where: str) -> None:
    for part in ("model", "teacher"):
        assert sorted(got[part]) == sorted(want[part]), (where, part)
        for n in want[part]:
            torch.testing.assert_close(got[part][n], want[part][n], rtol=0, atol=0, msg=f"{where}: {part} {n}")
    assert sorted(got["optim"]) == sorted(want["optim"]), where
    for n in want["optim"]:
        for k, v in want["optim"][n].items():
            torch.testing.assert_close(got["optim"][n][k], v, rtol=0, atol=0, msg=f"{where}: optim {n} {k}")


def _draws() -> list:
    """What the restored python, numpy and torch generators give next."""
    return [random.random(), float(np.random.rand()), torch.rand(3).tolist()]


def _seed_rank(rank: int) -> None:
    random.seed(100 + rank), np.random.seed(100 + rank), torch.manual_seed(100 + rank)


# ------------------------------------------------------------------------------------- the workers
def _worker(rank: int, world: int, port: int, job: str, tmp: str) -> None:
    """One of the gloo ranks: init the process group, run ``job``, tear it down."""
    import faulthandler
    import warnings

    import torch.distributed as dist

    faulthandler.enable(all_threads=True)  # a crash in native code (gloo) shows where each thread was
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                      HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        {"save": _save_job, "restore": _restore_job}[job](rank, Path(tmp))
        _LORA_JOBS[job](rank, Path(tmp))
    finally:
        dist.destroy_process_group()
    # torch 2.13 + gloo on the CPU: now and then (~1 run in 30) a process aborts while the interpreter exits
    # ("terminate called without an active exception"), after its work and destroy_process_group are done;
    # a successful rank therefore leaves without that teardown (an exception above still reaches spawn)
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


def _fsdp_net(seed: int | None):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = Net(seed=0) if seed is None else _fresh_net(seed)
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _teacher_of(model) -> dict:
    return {n: p.detach() * 0.5 + 0.25 for n, p in trainable_parameters(model).items()}


def _expect_failure(fn, kind) -> str:
    try:
        fn()
    except kind as e:
        return f"{type(e).__name__}: {e}"
    raise AssertionError(f"expected {kind.__name__}")


def _save_job(rank: int, tmp: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.checkpoint import FileSystemWriter

    ckdir = tmp / "run" / "checkpoints"
    model = _fsdp_net(seed=None)
    opt = _optimizer(model)
    # before the first step the optimizer has no state; saving must not create one (DSD would, by a step)
    save_training_state(tmp / "fresh", step=0, model=model, optimizer=opt, teacher=None, extra={})
    stateless_after_save = not opt.state
    _step(model, opt, seed=1)
    save_training_state(ckdir, step=1, model=model, optimizer=opt, teacher=_teacher_of(model), extra={}, keep_last=2)

    _step(model, opt, seed=2)
    teacher = _teacher_of(model)
    _seed_rank(rank)  # rank-specific generators, so each rank must get its own back
    last = save_training_state(ckdir, step=2, model=model, optimizer=opt, teacher=teacher,
                               extra={"run_dir": "somewhere", "pair": (1, 2)}, keep_last=2)
    observed: dict = {"last": str(last), "draws": _draws(), "stateless_after_save": stateless_after_save}
    ref = _snapshot(model, opt, teacher)
    _step(model, opt, seed=3)
    ref["after_step_3"] = {n: _full(p.detach()).clone() for n, p in trainable_parameters(model).items()}
    if rank == 0:
        torch.save(ref, tmp / "ref_step2.pt")

    # (c) failures: a writer that fails on rank 1 only (full disk), a failing os.replace of last.dcp on rank 0
    # only, a non-finite shard on rank 1 only; every rank must raise and last.dcp stay at step 2
    def save3():
        save_training_state(ckdir, step=3, model=model, optimizer=opt, teacher=_teacher_of(model), extra={},
                            keep_last=2)

    def listing():
        return sorted(p.name for p in ckdir.iterdir())

    real_write = FileSystemWriter.write_data

    def disk_full(self, plan, planner):
        raise OSError(errno.ENOSPC, "No space left on device")

    if rank == 1:
        FileSystemWriter.write_data = disk_full
    observed["writer"] = _expect_failure(save3, OSError)
    FileSystemWriter.write_data = real_write
    dist.barrier()
    observed["after_writer"] = [listing(), os.readlink(ckdir / DCP_CHECKPOINT_NAME)]

    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(DCP_CHECKPOINT_NAME):
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real_replace(src, dst)

    if rank == 0:
        os.replace = failing_replace
    observed["replace"] = _expect_failure(save3, OSError)
    os.replace = real_replace
    dist.barrier()
    observed["after_replace"] = [listing(), os.readlink(ckdir / DCP_CHECKPOINT_NAME)]

    shard = model.blocks[1].weight.to_local()
    kept = shard.clone()
    if rank == 1:
        with torch.no_grad():
            shard[0, 0] = float("inf")
    observed["non_finite"] = _expect_failure(save3, FloatingPointError)
    with torch.no_grad():
        shard.copy_(kept)
    dist.barrier()
    observed["after_non_finite"] = [listing(), os.readlink(ckdir / DCP_CHECKPOINT_NAME)]

    save3()  # now it works: step 3 (written before by the failed repoint) is replaced, step 1 pruned
    observed["after_success"] = [listing(), os.readlink(ckdir / DCP_CHECKPOINT_NAME)]
    (tmp / f"observed_{rank}.json").write_text(json.dumps(observed))


def _restore_job(rank: int, tmp: Path) -> None:
    ref = torch.load(tmp / "ref_step2.pt", weights_only=False)
    rank0_draws = json.loads((tmp / "observed_0.json").read_text())["draws"]
    saved_draws = json.loads((tmp / f"observed_{rank}.json").read_text())["draws"] if rank < WORLD else rank0_draws
    sources = [
        (tmp / "run" / "checkpoints" / "step_000002.dcp", saved_draws),  # N=2 -> M=3: a saved rank's own RNG
        (tmp / "single" / "checkpoints", rank0_draws),  # a safetensors file of one process -> 3 FSDP ranks
    ]
    for i, (source, draws) in enumerate(sources):
        model = _fsdp_net(seed=7 + i)  # other weights than the saved ones
        opt = _optimizer(model)
        if i == 1:
            _step(model, opt, seed=11)  # an optimizer that has state already (a resumed run's is fresh)
        teacher = {n: torch.zeros_like(p) for n, p in trainable_parameters(model).items()}
        _seed_rank(50 + rank)
        step, extra = restore_training_state(source, model=model, optimizer=opt, teacher=teacher)
        assert (step, extra) == (2, {"run_dir": "somewhere", "pair": (1, 2)}), (source, step, extra)
        assert _draws() == draws, (source, rank)
        _assert_snapshot(_snapshot(model, opt, teacher), ref, f"rank {rank} restored from {source}")
        _step(model, opt, seed=3)
        for n, p in trainable_parameters(model).items():
            torch.testing.assert_close(_full(p.detach()), ref["after_step_3"][n], **TOL, msg=f"{source}: {n}")


# ------------------------------------------------------------ the repo's tiny HF model with a LoRA adapter
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def _lora_policy(model_dir: str, seed: int, fsdp: bool):
    """The tiny Qwen2 (tied embeddings) with a LoRA adapter whose init depends on ``seed``; under FSDP2 sharded
    per decoder layer + root (frozen base weights and the adapter in the same groups)."""
    from serl.policy.models import load_policy

    torch.manual_seed(seed)
    model, _ = load_policy(model_dir, lora=LORA)
    if fsdp:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for layer in model.base_model.model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def _lora_step(model, opt, seed: int) -> None:
    ids = torch.randint(0, 200, (2, 8), generator=torch.Generator().manual_seed(seed))
    opt.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()


def _lora_save_job(rank: int, tmp: Path) -> None:
    model_dir = (tmp / "tiny_model_dir").read_text()
    model = _lora_policy(model_dir, seed=0, fsdp=True)
    opt = _optimizer(model)
    _lora_step(model, opt, seed=1)
    teacher = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
    _lora_step(model, opt, seed=2)
    save_training_state(tmp / "lora" / "checkpoints", step=2, model=model, optimizer=opt, teacher=teacher,
                        extra={"lora": True})
    ref = _snapshot(model, opt, teacher)
    if rank == 0:
        torch.save(ref, tmp / "lora_ref.pt")


def _lora_restore_job(rank: int, tmp: Path) -> None:
    model_dir = (tmp / "tiny_model_dir").read_text()
    model = _lora_policy(model_dir, seed=5, fsdp=True)  # another adapter init
    opt = _optimizer(model)
    teacher = {n: torch.zeros_like(p) for n, p in trainable_parameters(model).items()}
    assert restore_training_state(tmp / "lora", model=model, optimizer=opt, teacher=teacher) == (2, {"lora": True})
    _assert_snapshot(_snapshot(model, opt, teacher), torch.load(tmp / "lora_ref.pt", weights_only=False),
                     f"rank {rank}: LoRA")


_LORA_JOBS = {"save": _lora_save_job, "restore": _lora_restore_job}


def _spawn(job: str, tmp: Path, world: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_worker, args=(world, port, job, str(tmp)), nprocs=world, start_method="spawn", join=True)


# -------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model_dir) -> Path:
    """Two FSDP ranks' run (DCP step folders 2 and 3, the references), a safetensors checkpoint of the same
    step-2 state written by one process from the DCP folder, and a LoRA run of the tiny HF model."""
    tmp = tmp_path_factory.mktemp("dcp")
    (tmp / "tiny_model_dir").write_text(str(tiny_model_dir))
    _spawn("save", tmp, WORLD)
    model = _fresh_net(seed=3)
    opt = _optimizer(model)
    teacher = {n: torch.zeros_like(p) for n, p in trainable_parameters(model).items()}
    restore_training_state(tmp / "run" / "checkpoints" / "step_000002.dcp", model=model, optimizer=opt, teacher=teacher)
    save_training_state(tmp / "single" / "checkpoints", step=2, model=model, optimizer=opt, teacher=teacher,
                        extra={"run_dir": "somewhere", "pair": (1, 2)})
    return tmp


def test_dcp_folder_loads_in_one_process_without_a_process_group(saved):
    import torch.distributed as dist

    assert not dist.is_initialized()
    ref = torch.load(saved / "ref_step2.pt", weights_only=False)
    rank0_draws = json.loads((saved / "observed_0.json").read_text())["draws"]
    folder = saved / "run" / "checkpoints" / "step_000002.dcp"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "meta.json", "rng_rank0.safetensors", "rng_rank1.safetensors"
    ]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 2 and meta["has_teacher"] is True

    # load_checkpoint: full tensors of the trainable parameters only (no frozen layer, the tied weight once)
    state = load_checkpoint(folder, with_optimizer=True)
    assert state.step == 2 and state.extra == {"run_dir": "somewhere", "pair": (1, 2)}
    assert sorted(state.model) == ["blocks.0.bias", "blocks.0.weight", "blocks.1.bias", "blocks.1.weight",
                                   "emb.weight", "scale"]
    _assert_snapshot({"model": state.model, "teacher": state.teacher, "optim": state.optimizer["state"]}, ref,
                     "load_checkpoint")
    assert state.optimizer["param_groups"][0]["betas"] == (0.9, 0.95)
    assert load_checkpoint(folder).optimizer == {}

    # restore into a plain model: equal tensors, rank 0's RNG; the next step matches the uninterrupted run's
    model = _fresh_net(seed=4)
    frozen = model.frozen.weight.clone()
    opt = _optimizer(model)
    teacher = {n: torch.zeros_like(p) for n, p in trainable_parameters(model).items()}
    snapshot_tensors = dict(teacher)
    step, extra = restore_training_state(folder, model=model, optimizer=opt, teacher=teacher)
    assert (step, extra) == (2, {"run_dir": "somewhere", "pair": (1, 2)})
    assert _draws() == rank0_draws
    _assert_snapshot(_snapshot(model, opt, teacher), ref, "one process")
    assert all(teacher[n] is snapshot_tensors[n] for n in teacher)  # in place
    assert torch.equal(model.frozen.weight, frozen) and model.head.weight is model.emb.weight
    _step(model, opt, seed=3)
    for n, p in trainable_parameters(model).items():
        torch.testing.assert_close(p.detach(), ref["after_step_3"][n], **TOL, msg=n)


def test_an_optimizer_saved_before_its_first_step_restores_without_state(saved):
    assert all(json.loads((saved / f"observed_{r}.json").read_text())["stateless_after_save"] for r in range(WORLD))
    model = _fresh_net(seed=6)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.5, betas=(0.5, 0.5))
    _step(model, opt, seed=1)
    assert restore_training_state(saved / "fresh", model=model, optimizer=opt, teacher=None) == (0, {})
    assert not opt.state and opt.param_groups[0]["lr"] == 1e-2 and opt.param_groups[0]["betas"] == (0.9, 0.95)
    for n, p in trainable_parameters(Net(seed=0)).items():
        assert torch.equal(trainable_parameters(model)[n], p), n


def test_the_single_process_checkpoint_is_todays_safetensors_file(saved):
    path = checkpoint_path(saved / "single")
    assert path == saved / "single" / "checkpoints" / CHECKPOINT_NAME
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == "serl-checkpoint" and "optimizer/5/exp_avg" in f.keys()
    ref = torch.load(saved / "ref_step2.pt", weights_only=False)
    state = load_checkpoint(path)
    for n, t in ref["model"].items():
        assert torch.equal(state.model[n], t), n


def test_restore_into_three_fsdp_ranks_from_dcp_and_from_safetensors(saved):
    _spawn("restore", saved, RESTORE_WORLD)  # the assertions run in the ranks


def test_a_failed_or_refused_save_keeps_last_dcp_and_leaves_no_temp_folder(saved):
    for rank in range(WORLD):
        seen = json.loads((saved / f"observed_{rank}.json").read_text())
        assert seen["last"] == str(saved / "run" / "checkpoints" / DCP_CHECKPOINT_NAME)
        assert "could not write checkpoint" in seen["writer"] and "No space left on device" in seen["writer"]
        assert "still holds the previous checkpoint" in seen["writer"]
        assert "Input/output error" in seen["replace"]
        assert "refusing to save the checkpoint of training step 3" in seen["non_finite"]
        assert "blocks.1.weight has 1 non-finite value(s)" in seen["non_finite"] and "rank 1" in seen["non_finite"]
        assert seen["after_writer"] == [["last.dcp", "step_000001.dcp", "step_000002.dcp"], "step_000002.dcp"]
        # the failed repoint had renamed step 3 into place already; last.dcp still says step 2
        after_replace = [["last.dcp", "step_000001.dcp", "step_000002.dcp", "step_000003.dcp"], "step_000002.dcp"]
        assert seen["after_replace"] == after_replace and seen["after_non_finite"] == after_replace
        assert seen["after_success"] == [["last.dcp", "step_000002.dcp", "step_000003.dcp"], "step_000003.dcp"]
    assert load_checkpoint(saved / "run").step == 3


def test_checkpoint_path_and_check_resume_find_last_dcp(saved, tmp_path):
    from serl.resume import ResumeError, check_resume, run_dir_of
    from tests.helpers import TINY_RUN, compose_cfg

    run = tmp_path / "run"
    shutil.copytree(saved / "run", run, symlinks=True)
    last = run / "checkpoints" / DCP_CHECKPOINT_NAME
    assert last.is_symlink()
    for form in (run, run / "checkpoints", last):
        assert checkpoint_path(form) == last
        assert run_dir_of(str(form), "new") == str(run)
    step2 = run / "checkpoints" / "step_000002.dcp"
    assert checkpoint_path(step2) == step2 and checkpoint_step(step2) == 2 and checkpoint_step(run) == 3
    assert run_dir_of(str(step2), "new") == str(run)

    OmegaConf.save(compose_cfg([*TINY_RUN, "steps=3"]), run / "config.yaml", resolve=True)
    info = check_resume(compose_cfg([*TINY_RUN, "steps=5", f"resume={run}"]))
    assert info["resume_checkpoint_step"] == 3 and info["resumed_from"] == str(last)
    with pytest.raises(ResumeError, match="steps=2 is below the checkpoint's step 3"):
        check_resume(compose_cfg([*TINY_RUN, "steps=2", f"resume={run}"]))

    # where symlinks cannot be made, last.dcp is a pointer file holding the step folder's name
    last.unlink()
    last.write_text("step_000002.dcp\n")
    assert checkpoint_path(run) == last and checkpoint_step(run) == 2 and load_checkpoint(run).step == 2

    # a run resumed with one process: its newer last.safetensors wins over the older last.dcp
    model = Net(seed=1)
    save_training_state(run / "checkpoints", step=4, model=model, optimizer=_optimizer(model), teacher=None)
    assert checkpoint_path(run) == run / "checkpoints" / CHECKPOINT_NAME and checkpoint_step(run) == 4

    # an incomplete folder is named
    (run / "checkpoints" / CHECKPOINT_NAME).unlink()
    (step2 / "meta.json").unlink()
    with pytest.raises(ResumeError, match=f"checkpoint {last} is incomplete or damaged"):
        check_resume(compose_cfg([*TINY_RUN, "steps=5", f"resume={run}"]))


def test_a_dcp_checkpoint_of_another_model_is_refused_naming_it(saved):
    folder = saved / "run" / "checkpoints" / "step_000002.dcp"
    wider = _fresh_net(seed=0, hidden=4)
    with pytest.raises(ValueError, match="different model or LoRA setting") as e:
        restore_training_state(folder, model=wider, optimizer=_optimizer(wider), teacher=None)
    assert str(folder) in str(e.value) and "blocks.0.weight" in str(e.value)
    model = Net(seed=0)
    with pytest.raises(ValueError, match="the teacher snapshot") as e:
        restore_training_state(folder, model=model, optimizer=None, teacher={"emb.weight": torch.zeros(10, 6)})
    assert str(folder) in str(e.value)


def test_a_lora_run_saves_only_its_adapter_and_loads_without_fsdp(saved):
    from serl.checkpoint import load_trainable

    ref = torch.load(saved / "lora_ref.pt", weights_only=False)
    path = checkpoint_path(saved / "lora")
    state = load_checkpoint(path)
    assert state.step == 2 and state.extra == {"lora": True}
    assert sorted(state.model) == sorted(ref["model"]) and len(state.model) == 8
    assert all(".lora_A." in n or ".lora_B." in n for n in state.model)  # no frozen base weight
    # as serl.build.build_policy loads a run's weights, and as a one-process resume restores it
    model_dir = (saved / "tiny_model_dir").read_text()
    plain = _lora_policy(model_dir, seed=9, fsdp=False)
    load_trainable(plain, state.model, path)
    for n, p in trainable_parameters(plain).items():
        assert torch.equal(p, ref["model"][n]), n
    plain = _lora_policy(model_dir, seed=9, fsdp=False)
    opt = _optimizer(plain)
    teacher = {n: torch.zeros_like(p) for n, p in trainable_parameters(plain).items()}
    assert restore_training_state(path, model=plain, optimizer=opt, teacher=teacher) == (2, {"lora": True})
    _assert_snapshot(_snapshot(plain, opt, teacher), ref, "LoRA in one process")
