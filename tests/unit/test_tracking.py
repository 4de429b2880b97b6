"""Trackers: metrics.jsonl rewinds to a resumed checkpoint's step; W&B honours WANDB_MODE and falls back to
offline when an online init fails."""

from __future__ import annotations

import json

import pytest

from serl.tracking import JsonlTracker, WandbTracker, wandb_mode


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_rewind_keeps_each_step_once_and_drops_a_cut_line(tmp_path):
    t = JsonlTracker(tmp_path)
    for step in (0, 1, 2, 3):
        t.log({"x": float(step)}, step=step)
    t.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "x": 4.')  # a kill in the middle of a line
    resumed = JsonlTracker(tmp_path)
    resumed.rewind(2)  # the checkpoint holds step 2: steps 3 and 4 are redone
    resumed.log({"x": 30.0}, step=3)
    resumed.close()
    assert _steps(tmp_path / "metrics.jsonl") == [0, 1, 2, 3]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["x"] == 30.0


def test_wandb_mode_honours_wandb_mode_env(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled"
    assert wandb_mode("offline") == "offline"  # an explicit logger.mode wins
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes' is not one of online, offline, disabled"):
        wandb_mode("auto")
    with pytest.raises(ValueError, match="logger.mode='maybe'"):
        wandb_mode("maybe")


def test_failed_online_init_falls_back_to_offline_with_one_warning(tmp_path, monkeypatch):
    import wandb

    real_init = wandb.init
    modes = []

    def init(*args, mode=None, **kwargs):
        modes.append(mode)
        if mode == "online":
            raise wandb.errors.CommError("could not reach api.wandb.ai")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    with pytest.warns(RuntimeWarning, match="W&B online init failed .*could not reach.* logging offline") as record:
        tracker = WandbTracker(tmp_path, project="serl-test", name="fallback", config={"a": 1}, mode="online")
    try:
        assert modes == ["online", "offline"] and tracker.mode == "offline"
        assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
        tracker.log({"x": 1.0}, step=1)
    finally:
        tracker.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
