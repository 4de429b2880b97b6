"""kill -9 at random points of a real training run, then resume (scripts/reliability.py): every step is logged
exactly once and the run ends bit-identical to an uninterrupted one. The quick version runs by default (the
moment that used to log a step twice: between its metrics line and its checkpoint); the 20-kill version is
marked slow."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROOT


def _reliability(tmp_path, *args):
    import importlib.util

    spec = importlib.util.spec_from_file_location("reliability", ROOT / "scripts" / "reliability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "record.json"
    code = module.main([*args, "--out", str(tmp_path / "work"), "--json", str(out)])
    return code, json.loads(out.read_text())


def test_a_kill_between_log_line_and_checkpoint_logs_the_step_once(tmp_path):
    code, record = _reliability(tmp_path, "--kills", "1", "--steps", "2", "--moments", "after_metrics_line")
    assert code == 0 and record["pass"], record
    assert len(record["kills"]) == 1 and all(r["problems"] == [] for r in record["runs"])


@pytest.mark.slow
def test_twenty_random_kills(tmp_path):
    code, record = _reliability(tmp_path, "--kills", "20", "--steps", "3")
    assert code == 0 and record["pass"], record
    assert len(record["kills"]) == 20
