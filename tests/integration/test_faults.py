"""Faults injected into a real training run (tiny model, real ALFWorld engine in env worker processes):

* an env step that raises and one that hangs: the step finishes, the failures are counted, nothing is lost;
* an update that makes the weights non-finite (what ``learner.lr=inf`` does): a clean stop naming the step,
  the previous checkpoint and metrics intact.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from serl.build import build_trainer
from serl.checkpoint import load_checkpoint
from tests.faults import Fault, FaultySuite
from tests.helpers import TINY_RUN, compose_cfg


def _trainer(tmp_path, *overrides):
    cfg = compose_cfg([*TINY_RUN, "group_size=3", *overrides])
    return build_trainer(cfg, tmp_path / "run")


def test_env_raise_and_hang_do_not_stop_training(tmp_path):
    trainer = _trainer(tmp_path, "steps=1", "env_workers.timeout_s=5", "env_workers.processes=1")
    markers = tmp_path / "markers"
    markers.mkdir()
    # seeds of step 0: 1_000_003 * seed + i*group_size + j = 0, 1, 2 (seed 0): one raise, one hang, once each
    faults = (Fault("raise", at_step=1, seed=1, marker_dir=str(markers)), Fault("hang", at_step=1, seed=2, marker_dir=str(markers)))
    trainer.worker.host.suite = FaultySuite(trainer.suite, faults)  # workers start on first use, with this suite
    try:
        with _no_drop_warning():
            summary = trainer.train()
    finally:
        trainer.worker.close()
        trainer.tracker.close()
    assert summary["completed"] and summary["steps_completed"] == 1
    m = trainer.history[-1]
    assert m["rollout/env_errors"] >= 2  # the raise, the hang (and envs lost with the killed worker)
    assert m["rollout/dropped_episodes"] == 0 and m["rollout/dropped_groups"] == 0
    assert m["episode/step_samples"] >= 3  # all three episodes were played
    assert sorted(p.name for p in markers.iterdir()) == ["hang-1-None-2-0", "raise-1-None-1-0"]


class _no_drop_warning:
    """Recovered failures drop nothing, so no 'episode dropped' warning may appear."""

    def __enter__(self):
        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        dropped = [str(w.message) for w in self.records if "episode dropped" in str(w.message)]
        assert not dropped, dropped
        return False


def test_non_finite_update_stops_cleanly_and_keeps_the_last_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, "steps=2", "env_workers.processes=0")
    trainer.s.steps = 1
    trainer.train()  # step 1: a good checkpoint
    good = load_checkpoint(tmp_path / "run")
    for group in trainer.learner.optimizer.param_groups:
        group["lr"] = float("inf")  # what learner.lr=inf did before validation refused it
    trainer.s.steps = 2
    with pytest.raises(FloatingPointError, match="the policy after training step 2 .*non-finite"):
        trainer.train()
    trainer.tracker.close(ok=False)
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1]
    kept = load_checkpoint(tmp_path / "run")
    assert kept.step == 1 and all(torch.equal(kept.model[k], v) for k, v in good.model.items())
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.safetensors", "step_000001.safetensors"]
