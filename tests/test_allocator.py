"""The training loop's allocator settings (probes.experiment.allocator): on for the loop, free heap handed back
after it; results do not depend on them (tests/test_ensemble.py compares ensembles with separate runs)."""

from __future__ import annotations

import sys

import pytest

import probes.experiment.run as run_module
from probes.experiment.allocator import hand_back_freed_memory, reuse_freed_memory
from probes.experiment.config import make_run_config


def tiny_config():
    return make_run_config(
        model={"N": 4, "H": 2, "L": 1, "task": "lm", "seq_len": 8},
        run={"steps": 3, "batch_size": 2},
        probes={"enabled": False},
    )


@pytest.mark.parametrize("seeds", [None, [0, 1]], ids=["single", "ensemble"])
def test_the_training_loop_reuses_freed_memory_and_hands_it_back_after(monkeypatch, seeds):
    calls: list[str] = []
    monkeypatch.setattr(run_module, "reuse_freed_memory", lambda: calls.append("reuse") or True)
    monkeypatch.setattr(run_module, "hand_back_freed_memory", lambda: calls.append("hand back"))
    cfg = tiny_config()
    results = run_module.train_ensemble(cfg, seeds) if seeds else [run_module.train(cfg)]
    assert all(r.status == "ok" for r in results)
    assert calls == ["reuse", "hand back"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_the_settings_take_on_glibc_and_are_set_once():
    first = reuse_freed_memory()
    assert first is True, "mallopt refused the thresholds on this glibc"
    assert reuse_freed_memory() is first  # idempotent: set once per process
    hand_back_freed_memory()  # malloc_trim: callable any time
