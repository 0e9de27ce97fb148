"""dmft.power and `dmft-probe plan`: power before data, by simulation through the real estimators and rule.

What plan's numbers mean is tested against independent simulations in tests/test_verdict_rule.py; here: the rows
it plans per axis, the seeds search, the noise it measures on a sweep (a synthetic one with known correlations,
and a real tiny one written by the CLI), and bad input (one `error:` line naming the option, exit 2)."""

import numpy as np
import pytest
from helpers import invoke

from dmft import power, synthetic

SIZES = [4.0, 8.0, 16.0, 32.0]
TINY = ["--task", "vision", "--N", "2", "--H", "2", "--L", "1", "--batch-size", "2"]


def test_rows_follow_the_parametrization():
    """The rows of each axis and their hypotheses come from dmft.predictions: P1 (N, H) or P10 (L) at init; the
    trained rate (P5, P6, conv-L) as a seed-variance rate, a bias rate and a plateau test; SP has no trained rate."""
    rows = {r.kind: r for r in power.rows_for("N", 1.0, 1.0, False)}
    assert rows["slope"].prediction[1] == -1.0 and rows["slope"].alternatives[0][1] == 0.0
    assert rows["variance"].prediction == ("P6", -1.0) and rows["variance"].alternatives[0][1] == 0.0
    assert rows["bias"].prediction[1] == -2.0 and rows["plateau"].prediction[0] == "converges"
    sqrt = {r.kind: r for r in power.rows_for("N", 0.5, 1.0, False)}
    assert sqrt["variance"].prediction == ("P6", 0.0) and sqrt["variance"].alternatives[0][1] == -1.0
    assert sqrt["plateau"].prediction[0] == "plateau"
    assert [r.kind for r in power.rows_for("L", 1.0, 0.5, False)] == ["slope", "variance", "bias", "plateau"]
    assert power.rows_for("L", 1.0, 0.5, False)[1].prediction == ("conv-L", 0.0)
    assert [r.kind for r in power.rows_for("N", 0.5, 0.0, True)] == ["slope"]


def test_plan_at_the_preset_geometry_and_the_seeds_it_needs():
    """Sizes 4..32, 6 seeds, the default noise: every row's false-consistent rate is <= 0.05, and no row reaches
    power 0.8 at 4 sizes (the band from 3 local slopes is about the interval's width, so more seeds shrink both:
    measured 0.52 for the per-seed slope, 0.30 for the seed variance); one more size (4..64) reaches it with 6 and
    12 seeds. An independent simulation at the seeds found has power >= 0.7."""
    plans = power.plan("N", SIZES, 6, power.Noise(), 1.0, 1.0, reps=400)
    for p in plans:
        assert all(f <= 0.05 for f in p.false_consistent.values()), p
        assert p.power < 0.8 and p.searched
    slope, variance = plans[0], plans[1]
    assert slope.seeds_needed is None and variance.seeds_needed is None
    wider, need = variance.wider_needs[0]
    assert wider == (4.0, 8.0, 16.0, 32.0, 64.0) and need is not None
    again = power.row_power(variance.row, wider, need, power.Noise(), reps=400, seed=77)
    assert again.power >= 0.7, again
    text = "\n".join(power.lines(plans))
    assert "P6 seed variance" in text and f"{need} with sizes 4, 8, 16, 32, 64" in text


def test_noise_from_a_sweep_recovers_its_correlations():
    """A synthetic sweep with 48 seeds, 32 entries correlated 0.3 and draws correlated 0.6 across sizes: the
    measured correlations are within 0.1 of the truth, and a bias of 2 seed sds at the smallest size reads as 1-3."""
    t = synthetic.Truth(rate=-1.0, bias=4.0, rho_entries=0.3, rho_sizes=0.6)
    ds = synthetic.to_dataset(synthetic.sweep(t, SIZES, 48, 32, np.random.default_rng(0)), SIZES)
    n = power.noise_from(ds)
    assert n.entries == 32 and abs(n.rho_entries - 0.3) < 0.1 and abs(n.rho_sizes - 0.6) < 0.1, n
    assert 1.0 < n.bias < 3.0, n
    assert n.source == "measured: probe_outputs at step 10"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    code, _, err = invoke(
        [
            "sweep",
            *TINY,
            "--axis",
            "H",
            "--values",
            "1,2,4",
            "--seeds",
            "3",
            "--steps",
            "2",
            "--probe-every",
            "1",
            "--workers",
            "1",
            "--out",
            root / "sweep.nc",
        ],
        cwd=root,
    )
    assert code == 0, err
    return root / "sweep.nc"


def test_plan_from_a_real_sweep(tiny, tmp_path):
    """plan --from reads the sweep's axis, sizes, seeds and parametrization, measures its noise, and prints the
    plan; options given on the command line replace what it measured. Nothing is written."""
    code, out, err = invoke(["plan", "--from", tiny, "--reps", "200"], cwd=tmp_path)
    assert code == 0 and err == "", err
    assert "along H = 1, 2, 4, 3 seeds" in out and "measured: probe_outputs at step 2" in out
    assert "P5 seed variance" in out and "P5 plateau" in out
    code, out, _ = invoke(["plan", "--from", tiny, "--reps", "200", "--seeds", "8", "--rho-sizes", "0.2"], cwd=tmp_path)
    assert code == 0 and "8 seeds" in out and "correlation across sizes 0.20" in out and "given: rho_sizes" in out
    assert list(tmp_path.iterdir()) == []


def test_plan_is_deterministic():
    args = ["plan", "--axis", "L", "--sizes", "1,2,4,8", "--seeds", "4", "--reps", "200", "--param", "depth-sqrt"]
    a, b = invoke(args), invoke(args)
    assert a == b and a[0] == 0
    row = next(line for line in a[1].splitlines() if line.startswith("conv-L seed variance"))
    assert row.split()[4:7] == ["+0", "vs", "-1"] and "plateau vs converges" in a[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--axis", "X"], "--axis must be N, H or L"),
        (["--sizes", "4,8"], "--sizes must be at least 3 increasing positive sizes, got 4, 8"),
        (["--sizes", "4,x,8"], "--sizes must be a comma-separated list of integers"),
        (["--sizes", "8,4,2"], "--sizes must be at least 3 increasing"),
        (["--seeds", "1"], "--seeds must be an integer in [2, 64]"),
        (["--reps", "10"], "--reps must be an integer in [100, 100000]"),
        (["--band", "-0.1"], "--band must be a number >= 0"),
        (["--rho-entries", "1"], "--rho-entries must be in [0, 1)"),
        (["--cv", "0"], "--cv must be in (0, 10]"),
        (["--bias", "-1"], "--bias must be in [0, 100]"),
        (["--entries", "0"], "--entries must be a positive integer"),
        (["--param", "nope"], "--param: preset must be one of"),
        (["--step", "3"], "--step and --quantity need --from"),
        (["--from", "missing.nc"], "--from: no such file or folder missing.nc"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(args, message, tmp_path):
    code, out, err = invoke(["plan", *args], cwd=tmp_path)
    assert code == 2 and out == "", out
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_about_the_dataset_names_it(tiny, tmp_path):
    code, out, err = invoke(["plan", "--from", tiny, "--quantity", "kernel_last_token"], cwd=tmp_path)
    assert code == 2 and out == "" and err.startswith("error: --from: kernel_last_token is recorded for the LM"), err
    code, out, err = invoke(["plan", "--from", tiny, "--step", "7"], cwd=tmp_path)
    assert code == 2 and out == "" and err.startswith("error: --step: step 7 is not a probe step"), err
    (tmp_path / "junk.nc").write_text("not a dataset")
    code, out, err = invoke(["plan", "--from", tmp_path / "junk.nc"], cwd=tmp_path)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
