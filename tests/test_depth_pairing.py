"""conv-L by a paired design: keyed initialisation (the embedding, positions and readout of a seed are one draw at
every depth and width; blocks are keyed by seed and layer), io groups of seeds in a sweep (`--io-seeds`), and the
depth exponents of `dmft.depth` (variance over block draws, paired squared bias)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import invoke

from dmft.depth import bias_exponent, block_variance_rate, depth_rates, io_groups, paired_bias_rate
from parametrizations.spec import get_preset
from parametrizations.transformer import ModelConfig, build_model
from probes.experiment.dataset import load

IO = ("embed", "pos", "readout")
BLOCK = ("q", "k", "v", "o", "mlp_in", "mlp_out")


def model(L: int, seed: int = 3, preset: str = "depth-sqrt", N: int = 4, task: str = "vision", **kw):
    cfg = ModelConfig(N=N, H=2, L=L, task=task, seq_len=6, d_in=12, vocab_size=11, n_classes=5)
    return build_model(cfg, get_preset(preset), "adam", seed, **kw)


def unit(module) -> torch.Tensor:
    """The weight divided by its init std: the standard normals it was drawn as."""
    return module.weight.detach() / module.init_std


# ---- keyed initialisation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["vision", "lm"])
def test_a_seeds_embedding_positions_and_readout_are_one_draw_at_every_depth(task):
    """depth-sqrt (alpha_L = 1/2) scales the io init std with L, so the weights differ by that scale only."""
    shallow, deep, other = model(1, task=task), model(5, task=task), model(5, seed=4, task=task)
    for name in IO:
        a, b = getattr(shallow, name), getattr(deep, name)
        assert a.init_std != pytest.approx(b.init_std)  # the scale does depend on L here
        torch.testing.assert_close(unit(a), unit(b), rtol=1e-6, atol=0)
        assert not torch.allclose(unit(b), unit(getattr(other, name)))  # and on the seed
    for name in BLOCK:  # block 0 is the same draw at both depths
        torch.testing.assert_close(
            unit(getattr(shallow.blocks[0], name)), unit(getattr(deep.blocks[0], name)), rtol=1e-6, atol=0
        )


def test_the_io_seed_keys_the_io_weights_and_the_seed_the_blocks():
    paired, io_twin, block_twin = model(3, seed=7, io_seed=1), model(3, seed=1), model(3, seed=7)
    for name in IO:
        assert torch.equal(getattr(paired, name).weight, getattr(io_twin, name).weight)
    for l in range(3):
        for name in BLOCK:
            assert torch.equal(getattr(paired.blocks[l], name).weight, getattr(block_twin.blocks[l], name).weight)
    assert not torch.equal(paired.readout.weight, block_twin.readout.weight)


@pytest.mark.parametrize("task", ["vision", "lm"])
def test_a_narrower_models_io_weights_are_the_leading_coordinates_of_a_wider_ones(task):
    narrow, wide = model(2, N=4, task=task), model(2, N=8, task=task)
    for name in IO:
        a, b = unit(getattr(narrow, name)), unit(getattr(wide, name))
        d_dim = 0 if name == "embed" and task == "vision" else 1  # the dim along the residual width
        torch.testing.assert_close(a, b.narrow(d_dim, 0, a.shape[d_dim]), rtol=1e-6, atol=0)


def test_ensemble_members_with_io_seeds_are_their_separate_models():
    cfg = ModelConfig(N=4, H=2, L=2, task="lm", seq_len=6, vocab_size=11)
    p = get_preset("mup")
    ens = build_model(cfg, p, "adam", [4, 5, 6], ensemble=3, io_seed=[0, 1, 0])
    for e, (seed, io) in enumerate([(4, 0), (5, 1), (6, 0)]):
        for w, w_alone in zip(ens.member(e).parameters(), build_model(cfg, p, "adam", seed, io_seed=io).parameters()):
            assert torch.equal(w, w_alone)
    assert torch.equal(ens.readout.weight[0], ens.readout.weight[2])
    assert not torch.equal(ens.blocks[0].q.weight[0], ens.blocks[0].q.weight[2])


# ---- the variance over block draws ------------------------------------------------------------------------------


def paired_init_sweep(preset: str, depths: list[int], groups: int, draws: int) -> xr.Dataset:
    """A paired depth sweep at initialisation, laid out as `dmft-probe sweep` writes it: the logits f(theta_0) of
    real models (N = 4, H = 2, vision) on a fixed batch, dims (L, seed, step, sample, output), io_seed along seed
    (seed s in io group s mod `groups`, `draws` block draws each). One seed ensemble per depth."""
    x = torch.randn(6, 16, 12, generator=torch.Generator().manual_seed(123))
    seeds = list(range(groups * draws))
    io = [s % groups for s in seeds]
    outputs = []
    for L in depths:
        cfg = ModelConfig(N=4, H=2, L=L, task="vision", seq_len=16, d_in=12, n_classes=10)
        m = build_model(cfg, get_preset(preset), "adam", seeds, ensemble=len(seeds), io_seed=io)
        with torch.no_grad():
            outputs.append(m(x).numpy())  # (seed, sample, output)
    f = np.stack(outputs)[:, :, None]
    return xr.Dataset(
        {"probe_outputs": (("L", "seed", "step", "sample", "output"), f)},
        coords={"L": depths, "seed": seeds, "io_seed": ("seed", io), "step": [0]},
    )


@pytest.mark.parametrize("preset,predicted", [("mup", -1.0), ("depth-sqrt", 0.0)])
def test_the_variance_over_block_draws_falls_as_1_over_L_at_alpha_L_1_and_is_flat_at_one_half(preset, predicted):
    """Init only, 4 io groups x 8 block draws, L = 2..16. Measured over 10 independent seed sets (seeds and io
    seeds offset by 100 k, k = 0..9): slope -0.99 (sd 0.06, range -1.06..-0.92) for mup (alpha_L = 1), +0.03 (sd
    0.06, range -0.05..+0.12) for depth-sqrt (alpha_L = 1/2); the tolerance 0.4 is over 6 sd, and the two bands
    do not meet. Unpaired (every seed its own io draw) the mup slope is only -0.18..-0.30."""
    ds = paired_init_sweep(preset, [2, 4, 8, 16], groups=4, draws=8)
    r = block_variance_rate(ds, n_boot=500)
    assert (r.n_sizes, r.n_io, r.n_draws, r.n_seeds) == (4, 4, 8, 32) and r.reason == ""
    assert abs(r.estimate - predicted) < 0.4, r
    assert r.lo <= r.estimate <= r.hi and len(r.local) == 3


# ---- the paired squared bias (synthetic: a known truth) ---------------------------------------------------------


def synthetic_paired(depths: list[int], groups: int, draws: int, c: float, noise: float, seed: int = 0) -> xr.Dataset:
    """Q(L, s) = a_g + c b_g / L + noise * z(L, s) / sqrt(L) per entry (4 entries): the block-draw mean of io group g
    has an O(1/L) bias, so the paired squared bias is c^2 b_g^2 (1/L - 1/L_ref)^2 exactly."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(groups, 4)), rng.normal(size=(groups, 4))
    seeds = np.arange(groups * draws)
    io = seeds % groups
    Ls = np.asarray(depths, dtype=float)
    q = (
        a[io][None]
        + c * b[io][None] / Ls[:, None, None]
        + noise * rng.normal(size=(len(Ls), len(seeds), 4)) / np.sqrt(Ls)[:, None, None]
    )
    return xr.Dataset(
        {"probe_outputs": (("L", "seed", "step", "sample", "output"), q[:, :, None, :, None])},
        coords={"L": depths, "seed": seeds, "io_seed": ("seed", io), "step": [5]},
    )


def test_the_paired_squared_bias_recovers_the_euler_exponent_minus_2():
    """A bias c/L seen through the deepest model: (1/L - 1/16)^2 has a plain log-log slope of -2.59 over L = 1..8,
    the form c^2 (L^-q - 16^-q)^2 gives back -2q = -2. Noise 0.1 against c = 1, 8 io groups x 6 draws: measured
    over data seeds 0-9, -2.01 (sd 0.036, range -2.04..-1.95), so 0.25 is about 7 sd."""
    r = paired_bias_rate(synthetic_paired([1, 2, 4, 8, 16], 8, 6, c=1.0, noise=0.1), n_boot=500)
    assert r.reference == 16 and r.sizes == (1, 2, 4, 8) and r.step == 5
    assert abs(r.estimate + 2) < 0.25, r
    assert np.polyfit(np.log(r.sizes), np.log(r.values), 1)[0] < -2.3  # the plain slope is steeper
    assert r.lo <= r.estimate <= r.hi


def test_the_paired_noise_correction_is_unbiased_when_depths_share_their_draws():
    """Q(L, s) = a_g + b_g / L + u_s + 0.3 v(L, s): the part u_s is shared by a seed's models at every depth (its
    io weights and first blocks), so the mean of the paired differences has noise 0.3^2 * 2 / B, while the two
    means have 1.09 / B each; the true squared bias is mean(b^2) (1/L - 1/8)^2. 1000 io groups x 4 draws:
    estimate / truth measured over data seeds 0-7 at 0.99-1.01 (L = 1), 0.99-1.04 (L = 2), 0.84-1.05 (L = 4);
    0.35 is about 4 sd at L = 4. Uncorrected the ratio is about 3.9 at L = 4; subtracting the variances of the two
    means (unpaired) makes it negative."""
    rng = np.random.default_rng(0)
    G, B, depths = 1000, 4, np.array([1.0, 2.0, 4.0, 8.0])
    a, b = rng.normal(size=(G, 4)), rng.normal(size=(G, 4))
    io = np.arange(G * B) % G
    q = (
        a[io][None]
        + b[io][None] / depths[:, None, None]
        + rng.normal(size=(G * B, 4))[None]
        + 0.3 * rng.normal(size=(len(depths), G * B, 4))
    )
    ds = xr.Dataset(
        {"probe_outputs": (("L", "seed", "step", "sample", "output"), q[:, :, None, :, None])},
        coords={"L": depths.astype(int), "seed": np.arange(G * B), "io_seed": ("seed", io), "step": [0]},
    )
    truth = np.mean(b**2) * (1 / depths[:-1] - 1 / 8) ** 2
    ratio = np.array(paired_bias_rate(ds, n_boot=100).values) / truth
    assert np.all(np.abs(ratio - 1) < 0.35), ratio


def test_bias_exponent_is_exact_on_the_model_form():
    sizes, ref = np.array([1.0, 2.0, 4.0, 8.0]), 32.0
    for q in (0.5, 1.0, 2.0):
        values = 3.0 * (sizes**-q - ref**-q) ** 2
        assert bias_exponent(sizes, values, ref) == pytest.approx(-2 * q, abs=0.005)


def test_both_rates_come_per_probe_step_from_one_call():
    ds = xr.concat(
        [synthetic_paired([1, 2, 4, 8], 4, 4, 1.0, 0.3, seed=s).assign_coords(step=[t]) for s, t in ((0, 0), (1, 10))],
        dim="step",
    )
    out = depth_rates(ds, n_boot=200)
    assert [s.step for s in out] == [0, 10]
    assert all(s.variance.n_sizes == 4 and s.bias.n_sizes == 3 for s in out)


def test_a_sweep_without_io_groups_is_refused_with_a_reason():
    ds = synthetic_paired([1, 2, 4], 4, 1, 1.0, 0.3)  # every seed its own io seed
    with pytest.raises(ValueError, match="no io seed has 2 seeds.*--io-seeds"):
        depth_rates(ds)
    with pytest.raises(ValueError, match="no io_seed coordinate"):
        depth_rates(ds.drop_vars("io_seed"))
    assert io_groups(synthetic_paired([1, 2, 4], 2, 3, 1.0, 0.3)) == {0: [0, 2, 4], 1: [1, 3, 5]}


# ---- the sweep: --io-seeds, the io_seed coordinate, the store's config ------------------------------------------

SWEEP = [
    "sweep",
    "--axis",
    "L",
    "--values",
    "1,2,3",
    "--seeds",
    "3",
    "--init-only",
    "--task",
    "vision",
    "--N",
    "2",
    "--H",
    "2",
    "--centre",
    "none",
    "--workers",
    "1",
]


def test_a_paired_sweep_records_io_seeds_and_another_assignment_is_a_different_sweep(tmp_path: Path):
    out = tmp_path / "paired.nc"
    code, _, err = invoke([*SWEEP, "--io-seeds", "2", "--out", out], cwd=tmp_path)
    assert code == 0, err
    ds = load(out)
    assert ds["io_seed"].dims == ("seed",) and list(ds["io_seed"].values) == [0, 1, 0]
    r = block_variance_rate(ds, n_boot=200)  # io seed 0 has 2 block draws, io seed 1 one (left out)
    assert (r.n_io, r.n_draws, r.n_seeds, r.sizes) == (1, 2, 2, (1, 2, 3)) and np.isfinite(r.values).all()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, stdout, err = invoke([*SWEEP, "--io-seeds", "0", "--out", out], cwd=tmp_path)
    lines = err.strip().splitlines()
    assert code == 2 and stdout == "" and len(lines) == 1, err
    assert lines[0].startswith("error: --out") and "io_seeds" in lines[0] and "2 -> 0" in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_negative_io_seeds_is_one_error_line_and_no_output(tmp_path: Path):
    code, stdout, err = invoke([*SWEEP, "--io-seeds", "-1"], cwd=tmp_path)
    assert code == 2 and stdout == "" and err.strip().startswith("error: --io-seeds"), err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
