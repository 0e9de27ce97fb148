"""dmft.plots: every public function draws non-empty axes with the paper's symbols; plot_dataset and the CLI's
`plot` write figure files. Tiny seeded datasets (a 4-step LM run, a 2-step vision N sweep, an init-only H sweep)
are made once per module; one torch thread while they train keeps the module well under a minute."""

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dmft import plots
from dmft.check import check
from dmft.fit import slope_fit
from probes.experiment.config import make_run_config
from probes.experiment.dataset import run_dataset, save
from probes.experiment.run import train
from probes.grid.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def tiny_config(task="vision", steps=2, **model):
    m = {"N": 4, "H": 2, "L": 2, "task": task, "seq_len": 8, **model}
    return make_run_config(
        model=m,
        param={"preset": "mup"},
        optim={"name": "adam", "eta0": 0.1},
        run={"steps": steps, "batch_size": 8, "heldout_batch": 8},
        probes={"every": 1, "n_samples": 6, "n_points": 4},
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """{'run': LM run (4 steps), 'sweep': vision N in 2,4,8 x 2 seeds (2 steps), 'H': init-only H in 2,4,8}."""
    tmp = tmp_path_factory.mktemp("plots")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = run_dataset(train(tiny_config("lm", steps=4)))
        sweep = run_sweep(tiny_config(), "N", [2, 4, 8], 2, tmp / "sweep.nc")
        H = run_sweep(tiny_config(), "H", [2, 4, 8], 2, tmp / "H.nc", init_only=True)
    finally:
        torch.set_num_threads(threads)
    save(run, tmp / "run.nc")
    yield {"run": run, "sweep": sweep, "H": H, "dir": tmp}
    plt.close("all")


def axes_with_data(fig: Figure) -> list[Axes]:
    """Axes (colour bars excluded) that hold lines, collections or images."""
    return [
        ax
        for ax in fig.axes
        if ax.get_label() != "<colorbar>" and (ax.lines or ax.collections or ax.images or ax.patches)
    ]


def legend_texts(ax: Axes) -> list[str]:
    leg = ax.get_legend()
    assert leg is not None, "no legend"
    return [t.get_text() for t in leg.get_texts()]


# ----------------------------------------------------------------------------------------------- exponent_plot
def test_exponent_plot_draws_seeds_means_fit_band_and_hypotheses():
    rng = np.random.default_rng(0)
    sizes = np.array([4, 8, 16, 32])
    values = sizes[:, None] ** -1.0 * np.exp(0.05 * rng.standard_normal((4, 3)))
    fit = slope_fit(sizes, values)
    ax = plots.exponent_plot(
        sizes, values, fit, {"CLT": -1.0, "caption": -2.0}, axis="N", ylabel=r"$\mathrm{Var}_h[A]$"
    )
    assert isinstance(ax, Axes)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "$N$" and r"\mathrm{Var}_h[A]" in ax.get_ylabel()
    texts = legend_texts(ax)
    assert f"fit: slope {fit.slope:+.2f} [{fit.lo:+.2f}, {fit.hi:+.2f}]" in texts
    assert "predicted $N^{-1}$ (CLT)" in texts and "predicted $N^{-2}$ (caption)" in texts
    assert len(ax.collections) >= 2  # per-seed scatter and the interval band
    assert len(ax.lines) == 4  # means, fit, two hypotheses
    means, fitted = ax.lines[0], ax.lines[1]
    np.testing.assert_allclose(means.get_ydata(), values.mean(axis=1))
    np.testing.assert_allclose(fitted.get_ydata()[0], fit.constant * 4.0**fit.slope)
    clt = ax.lines[2]  # anchored at the first mean, slope -1
    np.testing.assert_allclose(clt.get_ydata()[-1], values[0].mean() * (32 / 4) ** -1.0)


def test_exponent_plot_float_prediction_on_given_axes_and_bad_values():
    fig, ax = plt.subplots()
    out = plots.exponent_plot([1, 2, 4], [1.0, np.nan, 0.25], predicted=0.5, axis="H", label="run", ax=ax)
    assert out is ax
    assert ax.get_xlabel() == "$H$"
    assert "predicted $H^{1/2}$" in legend_texts(ax) and "run" in legend_texts(ax)
    assert len(ax.lines[0].get_xdata()) == 2  # the NaN size is not drawn
    with pytest.raises(ValueError, match="rows"):
        plots.exponent_plot([1, 2, 4], [1.0, 2.0])
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- verdict_figure
def test_verdict_figure_one_panel_per_slope_verdict(data):
    verdicts = check(data["sweep"], n_heads_mc=256)
    fig = plots.verdict_figure(data["sweep"], verdicts)
    slope_verdicts = [v for v in verdicts if v.key != "P3"]
    assert isinstance(fig, Figure)
    axes = axes_with_data(fig)
    assert len(axes) == len(slope_verdicts) >= 5  # P1, three P2, coord
    titles = [ax.get_title() for ax in axes]
    for v in slope_verdicts:
        assert any(t.startswith(f"{v.key} {v.quantity}: ") for t in titles), (v.key, titles)
    p1 = axes[titles.index(next(t for t in titles if t.startswith("P1")))]
    assert r"\mathrm{Var}_h[A(0)]" in p1.get_ylabel() and p1.get_xlabel() == "$N$"
    assert any(t.startswith("fit: slope") for t in legend_texts(p1))
    p2 = next(ax for ax in axes if ax.get_title().startswith("P2 attn_var_trained"))
    assert {"predicted $N^{-2}$ (caption)", "predicted $N^{-1}$ (CLT)"} <= set(legend_texts(p2))
    assert "P3 attn_raw_init" in fig.get_suptitle() and r"$\alpha_A$" in fig.get_suptitle()
    plt.close(fig)


def test_verdict_figure_draws_the_p4_kernel_panel(data):
    fig = plots.verdict_figure(data["H"], n_heads_mc=256)  # the solver's Monte Carlo, small for the test
    p4 = [ax for ax in axes_with_data(fig) if ax.get_title().startswith("P4 kernel_mse_init")]
    assert len(p4) == 1
    assert r"\Phi" in p4[0].get_ylabel() and p4[0].get_xlabel() == "$H$"
    assert "predicted $H^{-1}$" in legend_texts(p4[0])
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- kernels
def test_kernel_grid_shares_one_colour_scale():
    a = xr.DataArray(np.eye(5), dims=("sample", "sample_"), name="kernel_pooled")
    b = xr.DataArray(3 * np.ones((5, 5)), dims=("sample", "sample_"), name="kernel_pooled")
    fig = plots.kernel_grid({"N=4, step 0": a, "N=4, step 10": b}, title="pooled")
    ims = [im for ax in fig.axes for im in ax.images]
    assert len(ims) == 2 and {im.get_clim() for im in ims} == {(0.0, 3.0)}
    panels = axes_with_data(fig)
    assert [ax.get_title() for ax in panels] == ["N=4, step 0", "N=4, step 10"]
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert "$x$" in panels[0].get_ylabel() and "$x'$" in panels[0].get_xlabel()
    assert fig.get_suptitle() == "pooled"
    plt.close(fig)
    fig = plots.kernel_grid({"a": a, "b": b}, share="panel")
    assert [ax.images[0].get_clim() for ax in axes_with_data(fig)] == [(0.0, 1.0), (0.0, 3.0)]
    plt.close(fig)
    with pytest.raises(ValueError, match="expected 2"):
        plots.kernel_grid({"a": xr.DataArray(np.ones(3))})


def test_kernel_panels_sweep_rows_steps_columns_sizes(data):
    fig = plots.kernel_panels(data["sweep"])
    titles = [ax.get_title() for ax in axes_with_data(fig)]
    assert titles == [f"N={n}, step {s}" for s in (0, 2) for n in (2, 4, 8)]
    panels = axes_with_data(fig)
    assert all(ax.images[0].get_array().size == 36 for ax in panels)  # 6 x 6 probe samples
    clims = [ax.images[0].get_clim() for ax in panels]
    assert len(set(clims[:3])) == 1 and len(set(clims[3:])) == 1  # one scale per step row
    assert r"\Phi^\ell" in fig.get_suptitle()
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 2
    plt.close(fig)


def test_kernel_panels_run_first_and_last_step(data):
    fig = plots.kernel_panels(data["run"], kind="kernel_spatial", depth=0)
    assert [ax.get_title() for ax in axes_with_data(fig)] == ["step 0", "step 4"]
    assert "$s$" in axes_with_data(fig)[0].get_ylabel()
    plt.close(fig)


# ------------------------------------------------------------------------------------------ attention_density
def test_attention_density_histogram_laws_and_ks_pvalue():
    from dmft.solvers import attention_law

    x = attention_law(4, 1.0).rvs(400, rng=1)
    ax = plots.attention_density(x, 4, 1.0)
    assert ax.patches and len(ax.lines) == 2
    texts = legend_texts(ax)
    assert any(t.startswith("variance-gamma (KS p = ") for t in texts)
    assert any("Gaussian" in t for t in texts)
    assert r"\alpha_A" in ax.get_xlabel() and "$N = 4$" in ax.get_title()
    heights = np.array([p.get_height() for p in ax.patches])
    widths = np.array([p.get_width() for p in ax.patches])
    assert abs((heights * widths).sum() - 1) < 1e-6  # a density
    plt.close(ax.figure)


# ---------------------------------------------------------------------------------------------------- losses
def test_loss_curves_sweep_and_run(data):
    fig = plots.loss_curves(data["sweep"])
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.collections  # one line per N, seed bands
    assert ax.get_legend().get_title().get_text() == "$N$" and legend_texts(ax) == ["2", "4", "8"]
    assert "loss" in ax.get_ylabel() and "$t$" in ax.get_xlabel()
    plt.close(fig)
    fig = plots.loss_curves(data["run"])
    assert "held-out" in legend_texts(fig.axes[0]) and fig.axes[0].lines
    plt.close(fig)
    with pytest.raises(ValueError, match="no dimension"):
        plots.loss_curves(data["run"], axis="N")


def test_lr_transfer_marks_the_best_eta0_and_skips_diverged():
    eta = np.array([0.01, 0.03, 0.1, 0.3])
    base = np.array([[2.0, 1.5, 1.2, np.nan], [2.1, 1.1, 1.3, np.inf]])  # (N, eta0)
    losses = xr.DataArray(np.stack([base, base + 0.01]), dims=("seed", "N", "eta0"), coords={"eta0": eta, "N": [8, 16]})
    ax = plots.lr_transfer(losses, axis="N")
    curves = [ln for ln in ax.lines if ln.get_marker() == "o"]
    stars = [ln for ln in ax.lines if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert len(curves) == 2 and all(len(c.get_xdata()) == 3 for c in curves)  # diverged eta0 = 0.3 skipped
    assert sorted(float(s.get_xdata()[0]) for s in stars) == [0.03, 0.1]
    assert ax.get_xscale() == "log" and r"\eta_0" in ax.get_xlabel()
    assert ax.get_legend().get_title().get_text() == "$N$"
    plt.close(ax.figure)


# ---------------------------------------------------------------------------------------------- coord check
def test_coord_check_panels_sweep(data):
    fig = plots.coord_check_panels(data["sweep"])
    axes = axes_with_data(fig)
    titles = [ax.get_title() for ax in axes]
    # top row: values at steps 0, 1, 2; bottom row: changes at steps 1, 2 (step 0's change is zero: no panel)
    assert titles == [
        "value, step $t = 0$",
        "value, step $t = 1$",
        "value, step $t = 2$",
        "change since step 0, step $t = 1$",
        "change since step 0, step $t = 2$",
    ], titles
    sites = ("embed", "q", "k", "v", "A", "softmax_A", "attn_out", "mlp_hidden", "mlp_out", "h", "logits")
    for ax in axes:
        assert len([ln for ln in ax.lines if len(ln.get_xdata())]) == len(sites)  # one line per site
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_xlabel() == "$N$"
        assert ax.xaxis.get_scale() == "log" and ax.xaxis._scale.base == 2
        texts = legend_texts(ax)
        assert any(t.startswith("logits (") for t in texts) and any(t.startswith("attn_out (") for t in texts)
    assert axes[0].get_ylabel() == "RMS" and "change" in axes[3].get_ylabel()
    plt.close(fig)


def test_coord_check_panels_run_over_steps(data):
    fig = plots.coord_check_panels(data["run"])
    axes = axes_with_data(fig)
    assert [ax.get_title() for ax in axes] == ["value", "change since step 0"]
    assert "logits" in legend_texts(axes[0]) and axes[0].get_xlabel() == "step $t$"
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- output
def test_save_figure_png_pdf_and_bad_suffix(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    p = plots.save_figure(fig, tmp_path / "sub" / "a.png")
    assert p.read_bytes()[:8] == PNG and not plt.fignum_exists(fig.number)
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    assert plots.save_figure(ax, tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="png or pdf"):
        plots.save_figure(plt.figure(), tmp_path / "a.jpg")
    plt.close("all")


def test_plot_dataset_writes_pngs_for_a_run_and_a_sweep(data, tmp_path):
    paths = plots.plot_dataset(data["run"], tmp_path / "run")
    assert sorted(p.name for p in paths) == sorted(
        ["loss.png", "kernels.png", "kernels_spatial.png", "attention_density.png", "coord_rms_over_steps.png"]
    )
    paths += plots.plot_dataset(data["sweep"], tmp_path / "sweep")
    assert {"verdicts.png", "kernels.png", "loss.png", "coord_check.png", "attention_density.png"} <= {
        p.name for p in paths[5:]
    }
    for p in paths:
        assert p.stat().st_size > 5000 and p.read_bytes()[:8] == PNG, p
    assert plt.get_fignums() == []  # every figure closed
    with pytest.raises(ValueError, match="png or pdf"):
        plots.plot_dataset(data["run"], tmp_path / "x", fmt="svg")


# ------------------------------------------------------------------------------------------------------- CLI
def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_cli_plot_writes_figures_next_to_the_dataset(data):
    r = cli("plot", str(data["dir"] / "run.nc"), "--format", "pdf")
    assert r.returncode == 0, r.stderr
    out = data["dir"] / "run-figures"
    written = [Path(line) for line in r.stdout.splitlines()]
    assert len(written) == 5 and all(p.parent == out and p.suffix == ".pdf" and p.stat().st_size > 0 for p in written)


@pytest.mark.parametrize(
    "args,needle", [(["/nonexistent/run.nc"], "no such file"), (["RUN", "--format", "jpg"], "--format")]
)
def test_cli_plot_bad_input_one_line_exit_2(data, args, needle):
    args = [str(data["dir"] / "run.nc") if a == "RUN" else a for a in args]
    r = cli("plot", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr


# ---------------------------------------------------------------------------------------- convergence rates
def synthetic_sweep(sizes=(2, 4, 8, 16), seeds=6, steps=(0, 5, 10), axis="H", gen=0) -> xr.Dataset:
    """probe_outputs = Q_oo + 0.3 c/n + n^-1/2 z (z standard normal) and a held-out loss of the same form, on
    `sizes` x `seeds` x `steps`; outputs are 0 at step 0 (f - f0 at init), so step 0 has no slope."""
    rng = np.random.default_rng(gen)
    n = np.asarray(sizes, dtype=float)[:, None, None, None, None]
    q = (
        rng.normal(size=(4, 3))
        + 0.3 * rng.normal(size=(4, 3)) / n
        + n**-0.5 * rng.normal(size=(len(sizes), seeds, len(steps), 4, 3))
    )
    q[:, :, 0] = 0.0
    loss = 1.0 + 0.5 / n[..., 0, 0] + n[..., 0, 0] ** -0.5 * rng.normal(size=(len(sizes), seeds, len(steps)))
    coords = {axis: np.asarray(sizes), "seed": np.arange(seeds), "step": np.asarray(steps)}
    return xr.Dataset(
        {
            "probe_outputs": ((axis, "seed", "step", "sample", "output"), q, {"units": "1"}),
            "heldout_loss": ((axis, "seed", "step"), loss, {"units": "nats"}),
        },
        coords=coords,
        attrs={"sweep_axis": axis, "task": "vision"},
    )


def test_convergence_plot_seeds_means_floor_fit_band_and_prediction():
    from dmft import convergence as cv
    from dmft.predictions import trained_rate

    r = cv.convergence_rate(synthetic_sweep(), "probe_outputs", method="largest", n_boot=300)
    ax = plots.convergence_plot(r, predicted=trained_rate(1.0, 1.0, False, "H"))  # a Prediction: H^-1
    assert isinstance(ax, Axes) and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "$H$"
    assert "probe_outputs" in ax.get_ylabel() and r"H\to\infty" in ax.get_ylabel()
    assert "probe_outputs" in ax.get_title() and "largest size (H = 16)" in ax.get_title()
    texts = legend_texts(ax)
    assert f"fit: slope {r.slope:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}] (95% CI)" in texts
    assert "predicted $H^{-1}$" in texts
    assert len(ax.collections) == 2  # per-seed scatter and the interval band
    assert len(ax.lines) == 4  # seed mean, seed mean - floor, fit, prediction
    mean, fitted, fit, pred = ax.lines
    # the largest size is the limit itself: only the sizes below it are drawn
    np.testing.assert_array_equal(mean.get_xdata(), [2, 4, 8])
    np.testing.assert_allclose(mean.get_ydata(), r.mean_distance.sel(step=10, H=[2, 4, 8]).values)
    np.testing.assert_allclose(fitted.get_ydata(), r.fitted_distance.sel(step=10, H=[2, 4, 8]).values)
    assert np.all(fitted.get_ydata() < mean.get_ydata())  # the floor is subtracted
    x, y = fit.get_xdata(), fit.get_ydata()
    np.testing.assert_allclose(y, np.exp(r.intercept) * x**r.slope)
    px, py = pred.get_xdata(), pred.get_ydata()
    np.testing.assert_allclose(np.log(py[-1] / py[0]) / np.log(px[-1] / px[0]), -1.0)
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == 3 * 6 and set(np.asarray(offsets)[:, 0]) == {2.0, 4.0, 8.0}
    ax.figure.canvas.draw()  # the mathtext labels parse
    plt.close(ax.figure)


def test_convergence_plot_richardson_uncorrected_draws_every_size_on_given_axes():
    from dmft import convergence as cv

    ds = synthetic_sweep()
    fig, ax = plt.subplots()
    r = cv.convergence_rate(ds, "heldout_loss", method="richardson", corrected=False, n_boot=200)
    out = plots.convergence_plot(r, ax=ax, predicted={"CLT": -1.0, "bias": -2.0}, label="Richardson")
    assert out is ax
    texts = legend_texts(ax)
    assert "Richardson: seed mean" in texts and not any("floor" in t for t in texts)
    assert "predicted $H^{-1}$ (CLT)" in texts and "predicted $H^{-2}$ (bias)" in texts
    assert len(ax.lines) == 4  # seed mean, fit, two hypotheses
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [2, 4, 8, 16])
    assert "heldout_loss" in ax.get_ylabel() and "Richardson" in ax.get_title()
    fig.canvas.draw()
    plt.close(fig)


def test_rate_by_step_plot_slopes_intervals_and_horizontal_prediction():
    from dmft import convergence as cv

    ds = synthetic_sweep()
    a = cv.convergence_rate(ds, "probe_outputs", method="largest", n_boot=200)
    b = cv.convergence_rate(ds, "probe_outputs", method="richardson", n_boot=200)
    ax = plots.rate_by_step_plot(a, predicted=-1.0)
    assert plots.rate_by_step_plot(b, ax=ax) is ax
    assert ax.get_xlabel() == "probe step" and "$H$" in ax.get_ylabel() and "probe_outputs" in ax.get_ylabel()
    assert "probe_outputs" in ax.get_title()
    texts = legend_texts(ax)
    assert texts == ["largest (95% CI)", "predicted $H^{-1}$", "richardson (95% CI)"]
    slopes = [ln for ln in ax.lines if ln.get_label().endswith("(95% CI)")]
    assert len(slopes) == 2
    # step 0 (outputs identically 0) is not fitted and not drawn
    np.testing.assert_allclose(slopes[0].get_xdata(), [5, 10])
    np.testing.assert_allclose(slopes[0].get_ydata(), a.slope_by_step.sel(step=[5, 10]).values)
    pred = next(ln for ln in ax.lines if ln.get_label().startswith("predicted"))
    assert set(np.asarray(pred.get_ydata(), dtype=float)) == {-1.0}
    assert len(ax.collections) == 2  # one set of interval bars per rate
    ax.figure.canvas.draw()
    plt.close(ax.figure)


def test_seed_variance_plot_points_fit_band_prediction_and_unfitted_step():
    from dmft import convergence as cv

    ds = synthetic_sweep(axis="N")
    r = cv.seed_variance_rate(ds, "probe_outputs", n_boot=300)
    ax = plots.seed_variance_plot(r, predicted=-1.0)
    assert ax.get_xlabel() == "$N$" and "probe_outputs" in ax.get_ylabel() and "seed" in ax.get_ylabel()
    texts = legend_texts(ax)
    assert "seed variance (6 seeds)" in texts and "predicted $N^{-1}$" in texts
    assert f"fit: slope {r.slope:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}] (95% CI)" in texts
    assert len(ax.lines) == 3 and len(ax.collections) == 1  # points, fit, prediction; the band
    np.testing.assert_allclose(ax.lines[0].get_ydata(), r.variance.sel(step=10).values)
    # step 0 is not fitted (every output is 0): the points are absent and the reason is written on the panel
    r0 = cv.seed_variance_rate(ds, "probe_outputs", step=0, n_boot=50)
    ax0 = plots.seed_variance_plot(r0, predicted=0.0)
    assert any(t.get_text().startswith("not fitted:") for t in ax0.texts)
    # by step, two quantities on one panel: the y label names both; a SeedVarianceRate has no method
    loss = cv.seed_variance_rate(ds, "heldout_loss", n_boot=300)
    axs = plots.rate_by_step_plot(r, predicted=-1.0, label="outputs")
    plots.rate_by_step_plot(loss, ax=axs, label="loss")
    assert "probe_outputs, heldout_loss" in axs.get_ylabel() and "seed variance" in axs.get_title()
    assert legend_texts(axs) == ["outputs (95% CI)", "predicted $N^{-1}$", "loss (95% CI)"]
    for a in (ax, ax0, axs):
        a.figure.canvas.draw()
    plt.close("all")


def test_every_convergence_quantity_has_a_symbol_whose_labels_render():
    from dmft.convergence import CONVERGENCE_QUANTITIES
    from dmft.plots.convergence import QUANTITY_SYMBOLS

    assert set(QUANTITY_SYMBOLS) == set(CONVERGENCE_QUANTITIES)
    fig, ax = plt.subplots()
    for sym in QUANTITY_SYMBOLS.values():  # the label forms of convergence_plot and seed_variance_plot
        ax.set_ylabel(rf"$\langle ({{{sym}}} - {{{sym}}}_{{H\to\infty}})^2 \rangle$")
        ax.set_xlabel(rf"$\mathrm{{Var}}_{{\mathrm{{seed}}}}[{sym}]$")
        fig.canvas.draw()
    plt.close(fig)


def test_convergence_plots_on_a_real_sweep(data):
    """The tiny 2-seed vision N sweep: Richardson (3 sizes suffice); with 2 seeds an interval may be unbounded,
    which the by-step panel draws to its edge."""
    from dmft import convergence as cv

    r = cv.convergence_rate(data["sweep"], "kernel_pooled", method="richardson", n_boot=200)
    fig, axes = plt.subplots(1, 3)
    plots.convergence_plot(r, ax=axes[0], predicted=-1.0)
    plots.rate_by_step_plot(r, ax=axes[1], predicted=-1.0)
    plots.seed_variance_plot(cv.seed_variance_rate(data["sweep"], "heldout_loss", n_boot=200), ax=axes[2])
    for ax in axes:
        assert ax.lines and "$N$" in ax.get_xlabel() + ax.get_ylabel()
    assert "kernel_pooled" in axes[0].get_ylabel() and "heldout_loss" in axes[2].get_ylabel()
    fig.canvas.draw()
    plt.close(fig)
