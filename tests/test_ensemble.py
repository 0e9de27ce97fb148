"""Seed ensembles reproduce separate runs: initialisation, losses and every probe variable, per seed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import probes.experiment.run as run_module
from parametrizations.spec import get_preset
from parametrizations.transformer import ModelConfig, build_model
from probes.experiment.config import make_run_config
from probes.experiment.dataset import run_dataset
from probes.experiment.ensemble import (
    ENSEMBLE_BUDGET_BYTES,
    ENSEMBLE_MAX_MEMBERS,
    group_size,
    member_bytes,
    plan_groups,
    resolve_mode,
    train_seeds,
)
from probes.experiment.run import train, train_ensemble


def config(task: str = "lm", steps: int = 12, **model):
    return make_run_config(
        model={"N": 8, "H": 3, "L": 2, "task": task, "seq_len": 12, **model},
        run={"steps": steps, "batch_size": 6},
        probes={"every": 4, "n_samples": 5},
    )


def assert_same_run(a, b) -> None:
    """Every float variable of the two runs' datasets agrees to float32 round-off: relative 1e-4, or 1e-5 of the
    variable's largest entry (batched matmuls sum in another order; measured worst 2e-6 of the largest entry)."""
    da, db = run_dataset(a), run_dataset(b)
    assert a.status == b.status and a.steps_done == b.steps_done and a.log_steps == b.log_steps
    assert set(da.data_vars) == set(db.data_vars)
    for v in db.data_vars:
        if db[v].dtype.kind != "f":
            continue
        x, y = da[v].values, db[v].values
        scale = np.nanmax(np.abs(y)) if np.isfinite(y).any() else 1.0
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5 * scale + 1e-12, err_msg=v)


@pytest.mark.parametrize(
    "task,optimizer,model",
    [
        ("lm", "adam", {}),
        ("vision", "sgd-momentum", {}),
        ("vision", "adamw", {"lws": "explicit", "lws_heads": (3, 1), "lws_d_ff": (8, 20)}),  # ragged LWS heads
    ],
)
def test_an_ensemble_reproduces_separate_runs(task, optimizer, model):
    cfg = replace(config(task, **model), optim=replace(config().optim, name=optimizer))
    seeds = [0, 3, 7]
    ens = train_ensemble(cfg, seeds)
    assert [r.config.seed for r in ens] == seeds
    for seed, r in zip(seeds, ens):
        alone = train(replace(cfg, seed=seed))
        assert_same_run(r, alone)
        assert r.extra["ensemble"] == 3
        for w, w_alone in zip(r.model.parameters(), alone.model.parameters()):  # final weights, member view
            torch.testing.assert_close(w, w_alone, rtol=1e-4, atol=1e-6)


def test_members_are_initialised_exactly_as_separate_models():
    cfg = ModelConfig(N=4, H=2, L=2, task="lm", seq_len=8, vocab_size=11)
    p = get_preset("mup")
    ens = build_model(cfg, p, "adam", [5, 2], ensemble=2)
    for e, seed in enumerate([5, 2]):
        for w, w_alone in zip(ens.member(e).parameters(), build_model(cfg, p, "adam", seed).parameters()):
            assert torch.equal(w, w_alone)
    assert not torch.equal(ens.readout.weight[0], ens.readout.weight[1])
    with pytest.raises(ValueError, match="needs 2 seeds"):
        build_model(cfg, p, "adam", [1, 2, 3], ensemble=2)


def test_a_diverging_member_stops_alone(monkeypatch):
    """A member whose weights hold inf diverges at once; the other members are untouched by it (NaN never
    crosses members) and equal their separate runs."""
    real = run_module.build_model

    def poisoned(*args, **kwargs):
        model = real(*args, **kwargs)
        if model.ensemble:
            with torch.no_grad():
                model.readout.weight[1, 0, 0] = float("inf")
        return model

    cfg = config("vision")
    monkeypatch.setattr(run_module, "build_model", poisoned)
    ens = train_ensemble(cfg, [0, 1, 2])
    monkeypatch.setattr(run_module, "build_model", real)
    assert [r.status for r in ens] == ["ok", "diverged", "ok"]
    assert ens[1].steps_done == 0 and ens[1].log_steps == [] and ens[1].extra["recorder"].steps == []
    for e in (0, 2):
        assert_same_run(ens[e], train(replace(cfg, seed=e)))


def test_the_grouping_is_a_rule_of_the_config_not_the_free_memory(monkeypatch):
    """All seeds together, at most ENSEMBLE_MAX_MEMBERS and ENSEMBLE_BUDGET_BYTES of member_bytes per group: the
    same groups whether the machine has 64 GiB or just enough free for the largest group."""
    cfg = config(steps=3)
    seeds = list(range(40))
    per_member = member_bytes(cfg)
    assert 0 < per_member and ENSEMBLE_MAX_MEMBERS * per_member < ENSEMBLE_BUDGET_BYTES  # a tiny model
    want = [tuple(range(0, 16)), tuple(range(16, 32)), tuple(range(32, 40))]
    warned: list[str] = []
    for free in (64 << 30, 2 * ENSEMBLE_MAX_MEMBERS * per_member):
        monkeypatch.setattr("probes.experiment.ensemble.free_bytes", lambda device, free=free: free)
        assert plan_groups(cfg, seeds, "auto", warned.append) == want
        assert plan_groups(cfg, [3, 1, 2], "auto", warned.append) == [(3, 1, 2)]  # in the order given
        assert plan_groups(cfg, seeds[:3], "off", warned.append) == [(0,), (1,), (2,)]
    assert warned == []
    assert group_size(cfg, 5) == 5 and group_size(cfg, 100) == ENSEMBLE_MAX_MEMBERS
    monkeypatch.setattr(
        "probes.experiment.ensemble.ENSEMBLE_BUDGET_BYTES", 3 * per_member
    )  # the budget, from the config
    assert group_size(cfg, 100) == 3 and plan_groups(cfg, [0, 1, 2, 3, 4], "auto", warned.append) == [(0, 1, 2), (3, 4)]
    assert warned == []


def test_free_memory_only_caps_a_group_and_says_so(monkeypatch):
    cfg = config(steps=3)
    monkeypatch.setattr(
        "probes.experiment.ensemble.free_bytes", lambda device: 4 * member_bytes(cfg)
    )  # half of it: 2 members
    warned: list[str] = []
    assert plan_groups(cfg, [0, 1, 2], "auto", warned.append) == [(0, 1), (2,)]
    assert len(warned) == 1 and warned[0].startswith("warning:") and "groups of 2" in warned[0]
    assert "3 seeds" in warned[0] and "N=8" in warned[0]
    results = train_seeds(cfg, [0, 1, 2], "auto", warn=warned.append)  # groups of 2, then 1
    assert [r.config.seed for r in results] == [0, 1, 2]
    assert [r.extra["ensemble"] for r in results] == [2, 2, 0]
    with pytest.raises(ValueError, match="--ensemble"):
        train_seeds(cfg, [0, 1], "fast")


def test_the_default_mode_is_the_environment_variable_else_auto(monkeypatch):
    monkeypatch.delenv("DMFT_PROBE_ENSEMBLE", raising=False)
    assert resolve_mode(None) == "auto" and resolve_mode("off") == "off"
    monkeypatch.setenv("DMFT_PROBE_ENSEMBLE", "off")
    assert resolve_mode(None) == "off" and resolve_mode("auto") == "auto"  # an explicit mode wins
    assert plan_groups(config(steps=3), [0, 1], None) == [(0,), (1,)]
    monkeypatch.setenv("DMFT_PROBE_ENSEMBLE", "sometimes")
    with pytest.raises(ValueError, match="^DMFT_PROBE_ENSEMBLE must be one of auto, off, got 'sometimes'$"):
        resolve_mode(None)
    with pytest.raises(ValueError, match="^--ensemble must be one of auto, off, got 'fast'$"):
        resolve_mode("fast")


def test_fused_attention_must_use_the_configured_scale(monkeypatch):
    """The run refuses fused attention that silently replaces N^-alpha_A (here: SDPA's default N^-1/2 under
    alpha_A = 1, what a dropped `scale` argument would give)."""
    real = torch.nn.functional.scaled_dot_product_attention

    def default_scale(q, k, v, is_causal=False, scale=None):
        return real(q, k, v, is_causal=is_causal)

    monkeypatch.setattr(run_module.F, "scaled_dot_product_attention", default_scale)
    with pytest.raises(RuntimeError, match="scale N\\^-alpha_A"):
        train(config(steps=1))


def test_precision_is_opt_in_and_checked():
    with pytest.raises(ValueError, match="precision"):
        replace(config(), precision="fp16")
    with pytest.raises(ValueError, match="tf32 needs a CUDA device"):
        train(replace(config(steps=1), precision="tf32"))
    bf16 = train(replace(config(steps=4), precision="bf16"))
    fp32 = train(config(steps=4))
    assert bf16.status == "ok" and bf16.train_loss != fp32.train_loss  # it really ran in bf16
    np.testing.assert_allclose(bf16.train_loss, fp32.train_loss, rtol=2e-2)


def test_a_sweep_with_ensembles_writes_the_datasets_of_a_sequential_sweep(tmp_path):
    from probes.experiment.dataset import SEED_VARS
    from probes.grid.sweep import run_sweep

    cfg = config("vision", steps=4)
    auto = run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "auto.nc", ensemble="auto")
    off = run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "off.nc", ensemble="off")
    assert auto.sizes == off.sizes
    for v in off.data_vars:
        # the seed variances are differences of nearly equal float32 losses (one float32 step apart between
        # ensemble and sequential runs moves them by ~5e-4 relative); their inputs are compared here already
        if off[v].dtype.kind == "f" and v not in SEED_VARS:
            scale = float(np.nanmax(np.abs(off[v].values))) if np.isfinite(off[v].values).any() else 1.0
            np.testing.assert_allclose(auto[v].values, off[v].values, rtol=1e-4, atol=1e-5 * scale + 1e-12, err_msg=v)
