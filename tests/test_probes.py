"""Probes: every recorded quantity against an independent computation, no effect on training, dataset I/O."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parametrizations.transformer import build_model
from probes.experiment.config import make_run_config
from probes.experiment.dataset import DatasetError, combine_runs, load, run_dataset, save
from probes.experiment.run import train


def tiny(task="lm", preset="mup-sqrt", steps=4, probes=True, **model):
    m = {"N": 4, "H": 3, "L": 2, "task": task, "seq_len": 6, **model}
    cfg = make_run_config(
        model=m,
        param={"preset": preset},
        optim={"name": "adam", "eta0": 0.2},
        run={"steps": steps, "batch_size": 8},
        probes={"enabled": probes, "every": 1, "n_samples": 5, "n_points": 3},
    )
    return train(cfg)


def by_hand(model, x):
    """Residual streams h^0..h^L and per-layer A (P, H, S, S) computed from the weights, without the taps path."""
    cfg = model.cfg
    N, d = cfg.N, cfg.d_model
    with torch.no_grad():
        h = model.embed_tokens(x)
        hs, As = [h], []
        for blk in model.blocks:
            u = F.layer_norm(h, (d,), eps=1e-6)
            B, S, _ = u.shape
            q = blk.q.mult * u @ blk.q.weight.T  # (B, S, H*N)
            k = blk.k.mult * u @ blk.k.weight.T
            q = q.view(B, S, blk.H, N).transpose(1, 2)  # (B, H, S, N)
            k = k.view(B, S, blk.H, N).transpose(1, 2)
            As.append(N**-model.p.alpha_A * q @ k.transpose(-1, -2))
            h = blk(h)  # the fused (SDPA) path
            hs.append(h)
    return hs, As


@pytest.mark.parametrize("task", ["lm", "vision"])
def test_recorded_quantities_equal_direct_computation(task):
    res = tiny(task)
    ds = run_dataset(res)
    model, rec = res.model, res.extra["recorder"]
    x = rec.x
    d = model.cfg.d_model
    hs, As = by_hand(model, x)
    last = ds.isel(step=-1)
    for l, h in enumerate(hs):
        pooled = h.mean(1)
        np.testing.assert_allclose(
            last.kernel_pooled.sel(depth=l), (pooled @ pooled.T / d).numpy(), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(last.kernel_spatial.sel(depth=l), (h[0] @ h[0].T / d).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(last.h_rms.sel(depth=l), h.pow(2).mean().sqrt().item(), rtol=1e-4)
        if task == "lm":
            lt = h[:, -1]
            np.testing.assert_allclose(
                last.kernel_last_token.sel(depth=l), (lt @ lt.T / d).numpy(), rtol=1e-4, atol=1e-5
            )
    S = x.shape[1]
    valid = torch.ones(S, S, dtype=torch.bool)
    if task == "lm":
        valid = valid.tril()
    model0 = build_model(model.cfg, model.p, "adam", seed=res.config.seed)
    _, As0 = by_hand(model0, x)
    for l, (A, A0) in enumerate(zip(As, As0)):
        var = torch.var(A, dim=1)[:, valid].mean().item()  # unbiased variance over heads
        np.testing.assert_allclose(last.attn_var_heads.sel(layer=l), var, rtol=1e-3)
        np.testing.assert_allclose(
            last.attn_mean_heads.sel(layer=l), A.mean(1)[:, valid].mean().item(), rtol=1e-3, atol=1e-6
        )
        dA = A - A0
        np.testing.assert_allclose(
            last.dA_var_heads.sel(layer=l), torch.var(dA, dim=1)[:, valid].mean().item(), rtol=1e-3
        )
        P = torch.softmax(A.masked_fill(~valid, float("-inf")), dim=-1)
        np.testing.assert_allclose(
            last.attn_prob_var_heads.sel(layer=l), torch.var(P, dim=1)[:, valid].mean().item(), rtol=1e-3
        )
        for i in range(ds.sizes["point"]):
            p = ds.isel(point=i)
            want = A[int(p.point_sample), :, int(p.point_s), int(p.point_s_)].numpy()
            np.testing.assert_allclose(last.attn_raw.sel(layer=l).isel(point=i), want, rtol=1e-4, atol=1e-6)
    # weight movement by hand, against the initial weights rebuilt from the seed
    w0 = dict(model0.named_parameters())
    for l in range(model.cfg.L):
        for kind in ("q", "k", "v", "o", "mlp_in", "mlp_out"):
            name = f"blocks.{l}.{kind}.weight"
            W = dict(model.named_parameters())[name]
            want = ((W - w0[name]).norm() / w0[name].norm()).item()
            np.testing.assert_allclose(last.weight_movement.sel(layer=l, weight=kind), want, rtol=1e-4)
            assert want > 0
    want = ((model.readout.weight - model0.readout.weight).norm() / model0.readout.weight.norm()).item()
    np.testing.assert_allclose(last.io_movement.sel(io="readout"), want, rtol=1e-4)
    # step 0: nothing has moved yet
    first = ds.isel(step=0)
    assert float(first.weight_movement.max()) == 0 and float(first.dA_var_heads.max()) == 0
    assert float(first.coord_update_rms.max()) == 0 and float(last.coord_update_rms.min()) > 0
    assert float(first.io_update_rms.max()) == 0 and float(last.io_update_rms.min()) > 0


def test_probes_do_not_change_training():
    on, off = tiny(probes=True, steps=6), tiny(probes=False, steps=6)
    assert on.train_loss == off.train_loss
    assert on.heldout_loss == off.heldout_loss
    for a, b in zip(on.model.parameters(), off.model.parameters()):
        assert torch.equal(a, b)


def test_lws_layers_pad_heads_with_nan():
    res = tiny(lws="explicit", lws_heads=(3, 1), lws_d_ff=(8, 16), H=3)
    ds = run_dataset(res)
    assert list(ds.n_heads.values) == [3, 1] and list(ds.d_ff.values) == [8, 16]
    raw = ds.attn_raw.isel(step=-1)
    assert np.isfinite(raw.sel(layer=0)).all() and np.isnan(raw.sel(layer=1, head=[1, 2])).all()
    assert np.isfinite(raw.sel(layer=1, head=0)).all()
    assert np.isnan(ds.attn_var_heads.sel(layer=1)).all()  # one head: no variance over heads


def test_probe_schedule_always_has_first_and_last_step():
    from probes.hooks.recorder import ProbeConfig

    assert ProbeConfig(every=7).steps(20) == [0, 7, 14, 20]
    log = ProbeConfig(schedule="log", n_log=5).steps(1000)
    assert log[0] == 0 and log[-1] == 1000 and len(log) >= 5 and all(b > a for a, b in zip(log, log[1:]))


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_dataset_round_trip(tmp_path, suffix):
    ds = run_dataset(tiny())
    path = save(ds, tmp_path / f"run{suffix}")
    back = load(path)
    for v in ds.data_vars:
        np.testing.assert_array_equal(back[v].values, ds[v].values)
        assert back[v].attrs["units"] == ds[v].attrs["units"]
    assert back.attrs["config"] == ds.attrs["config"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"run{suffix}"]


def test_two_scales_combine_along_the_axis(tmp_path):
    a = run_dataset(tiny(N=4))
    b = run_dataset(tiny(N=8))
    both = combine_runs([b, a], "N")
    assert list(both.N.values) == [4, 8]
    assert both.attn_var_heads.dims == ("N", "step", "layer")
    np.testing.assert_array_equal(both.attn_var_heads.sel(N=8).values, b.attn_var_heads.values)
    save(both, tmp_path / "sweep.nc")
    assert load(tmp_path / "sweep.nc").sizes["N"] == 2
    hs = combine_runs([run_dataset(tiny(H=2)), run_dataset(tiny(H=3))], "H")
    assert hs.sizes["head"] == 3 and np.isnan(hs.attn_raw.sel(H=2, head=2)).all()


def test_corrupt_and_incomplete_files_are_named(tmp_path):
    ds = run_dataset(tiny(steps=2))
    good = save(ds, tmp_path / "good.nc")
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DatasetError, match="corrupt.nc"):
        load(corrupt)
    with pytest.raises(DatasetError, match="no such file"):
        load(tmp_path / "absent.nc")
    save(ds.drop_vars("heldout_loss"), tmp_path / "partial.nc")
    with pytest.raises(DatasetError, match="partial.nc.*heldout_loss"):
        load(tmp_path / "partial.nc")
    save(ds.drop_vars("kernel_pooled"), tmp_path / "noprobe.nc")
    with pytest.raises(DatasetError, match="kernel_pooled"):
        load(tmp_path / "noprobe.nc")
    (tmp_path / "text.nc").write_text("hello")
    with pytest.raises(DatasetError, match="text.nc"):
        load(tmp_path / "text.nc")


def test_p1_constant_at_init():
    """Var over heads of A(0) = N^(1-2 alpha_A) exactly in expectation (LN'd inputs have |u|^2 = d)."""
    for preset, alpha in (("mup", 1.0), ("mup-sqrt", 0.5)):
        res = tiny(preset=preset, steps=1, H=64, N=8)
        v = float(run_dataset(res).attn_var_heads.isel(step=0).mean())
        want = 8 ** (1 - 2 * alpha)
        # average of 2 layers x 5 samples x 21 pairs of a 64-head variance: relative s.e. about 5%
        assert v == pytest.approx(want, rel=0.2), (preset, v, want)


def centred_by_hand(model, model0, x, lm):
    """f(theta_t) - f(theta_0) on x (f(theta_t) when model0 is None), as centred_loss forms it; LM: last token."""
    with torch.no_grad():
        f = model(x) - (model0(x) if model0 is not None else 0)
    return (f[:, -1] if lm else f).numpy()


@pytest.mark.parametrize(
    "task,centre",
    [("lm", "copy"), ("vision", "copy"), ("digits", "copy"), ("vision", "zero_readout"), ("vision", "none")],
)
def test_probe_outputs_are_what_the_loss_sees(task, centre):
    from probes.experiment.run import centred_loss

    m = {"N": 4, "H": 3, "L": 2, "task": task, "seq_len": 6}
    cfg = make_run_config(
        model=m,
        param={"preset": "mup-sqrt", "centre": centre},
        optim={"name": "adam", "eta0": 0.2},
        run={"steps": 4, "batch_size": 8},
        probes={"every": 2, "n_samples": 5, "n_points": 3},
    )
    res = train(cfg)
    ds = run_dataset(res)
    model, x = res.model, res.extra["recorder"].x
    out = ds.probe_outputs
    C = 256 if task == "lm" else 10
    assert out.dims == ("step", "sample", "output") and out.shape == (3, 5, C)
    assert list(ds.output.values) == list(range(C)) and out.attrs["units"] == "1"
    # the initial model rebuilt from the seed: f(theta_0) (zero_readout: exactly 0; none: not removed)
    model0 = build_model(model.cfg, model.p, "adam", seed=res.config.seed) if centre == "copy" else None
    want = centred_by_hand(model, model0, x, task == "lm")
    np.testing.assert_allclose(out.isel(step=-1).values, want, rtol=1e-5, atol=1e-6)
    assert float(np.abs(want).max()) > 1e-3  # the outputs have moved
    first = out.isel(step=0).values
    if centre == "none":
        init = build_model(model.cfg, model.p, "adam", seed=res.config.seed)
        np.testing.assert_allclose(first, centred_by_hand(init, None, x, False), rtol=1e-5, atol=1e-6)
    else:
        assert np.abs(first).max() == 0  # centred: f(theta_0) - f(theta_0)
    if task != "lm":  # the cross-entropy of the recorded outputs is the centred loss of the probe batch
        y = torch.arange(5) % C
        loss = centred_loss(model, model0, x, y).item()
        assert F.cross_entropy(torch.from_numpy(out.isel(step=-1).values), y).item() == pytest.approx(loss, rel=1e-5)


def test_probe_outputs_of_a_seed_ensemble_are_each_members_own():
    from probes.experiment.run import train_ensemble

    cfg = make_run_config(
        model={"N": 4, "H": 2, "L": 1, "task": "vision"},
        optim={"name": "adam", "eta0": 0.2},
        run={"steps": 3, "batch_size": 8},
        probes={"every": 3, "n_samples": 4, "n_points": 2},
    )
    results = train_ensemble(cfg, [0, 5])
    outs = []
    for res in results:
        ds = run_dataset(res)
        model0 = build_model(res.model.cfg, res.model.p, "adam", seed=res.config.seed)
        want = centred_by_hand(res.model, model0, res.extra["recorder"].x, False)
        np.testing.assert_allclose(ds.probe_outputs.isel(step=-1).values, want, rtol=1e-4, atol=1e-6)
        outs.append(want)
    assert not np.allclose(outs[0], outs[1])  # two different members


@pytest.mark.parametrize("task", ["lm", "vision"])
def test_batched_layers_and_cached_reference_change_nothing(task, monkeypatch):
    """The recorder computes the head statistics and coordinate RMS of the layers of one shape together and keeps
    A(0), P(0) from step 0; one layer at a time with A(0), P(0) recomputed from q0, k0 must give every array bit
    for bit (LWS layers of 3, 1, 3 heads: two shape groups, not in layer order)."""
    import probes.hooks.recorder as recorder
    from probes.hooks.recorder import SITES

    model = dict(lws="explicit", lws_heads=(3, 1, 3), lws_d_ff=(8, 16, 8), H=3, L=3)
    batched = tiny(task, **model).extra["recorder"]
    assert batched.groups == [[0, 2], [1]] and batched.ref is not None
    monkeypatch.setattr(recorder, "LAYER_BATCH_BYTES", 1)  # one layer per group
    monkeypatch.setattr(recorder, "REF_CACHE_BYTES", 0)  # A(0), P(0) from q0, k0 at every probe step
    single = tiny(task, **model).extra["recorder"]
    assert single.groups == [[0], [2], [1]] and single.ref is None
    a, b = batched.arrays(), single.arrays()
    assert a.keys() == b.keys()
    # layer order: the one-head layer 1 has no variance over heads, and the stream RMS per block equals h_rms
    assert np.isnan(a["attn_var_heads"][:, 1]).all() and np.isfinite(a["attn_var_heads"][:, [0, 2]]).all()
    np.testing.assert_array_equal(a["coord_rms"][:, :, SITES.index("h")], a["h_rms"][:, 1:])
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
