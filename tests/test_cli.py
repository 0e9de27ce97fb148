"""The CLI end to end, in subprocesses: a real run writes a dataset; bad input exits 2 with one line."""

import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from probes.experiment.dataset import load

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_run_writes_a_dataset_xarray_can_open(tmp_path):
    out = tmp_path / "run.nc"
    r = cli("run", "--scale", "4", "--steps", "20", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"dataset: {out}" in r.stdout
    ds = xr.open_dataset(out)
    assert int(ds.N) == 4 and ds.attrs["axis"] == "N" and ds.attrs["parametrization"] == "mup"
    assert ds.sizes["train_step"] == 20 and list(ds.step.values) == [0, 10, 20]
    assert float(ds.heldout_loss[-1]) < float(ds.heldout_loss[0])  # it learned something
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temporary files left
    load(out)  # passes the schema check


def test_run_on_vision_with_config_file_and_overrides(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[model]\nN = 4\nH = 2\nL = 3\ntask = "vision"\n[param]\npreset = "mup-sqrt"\n'
        '[optim]\nname = "sgd-momentum"\neta0 = 0.05\n[run]\nsteps = 5\n[probes]\nevery = 5\n'
    )
    out = tmp_path / "v.nc"
    r = cli("run", "--config", str(conf), "--axis", "H", "--scale", "4", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    ds = load(out)
    assert (int(ds.N), int(ds.H), int(ds.L)) == (4, 4, 3)
    assert ds.attrs["task"] == "vision" and ds.attrs["optimizer"] == "sgd-momentum" and ds.attrs["alpha_A"] == 0.5


def test_describe_prints_every_parameter():
    r = cli("describe", "--N", "8", "--H", "2", "--L", "2", "--optimizer", "sgd", "--gamma0", "0.5")
    assert r.returncode == 0, r.stderr
    for name in ("embed.weight", "pos.weight", "blocks.1.q.weight", "blocks.1.mlp_out.weight", "readout.weight"):
        assert name in r.stdout
    # SGD readout multiplier (L/L0)^-(alpha_L-1/2)/(gamma0 d) = 2^-0.5 / (0.5 * 16)
    row = next(line for line in r.stdout.splitlines() if "readout.weight" in line)
    assert f"{2**-0.5 / 8:.4g}" in row


BAD = [
    (["run", "--param", "mu-p"], "--param"),
    (["run", "--N", "8", "--H", "4", "--d-model", "30"], "--d-model"),
    (["run", "--N", "0"], "N must be a positive integer"),
    (["run", "--scale", "-2"], "--scale"),
    (["run", "--L", "abc"], "--L"),
    (["run", "--data", "/nonexistent/cifar"], "--data"),
    (["run", "--out", "{tmp}/afile/run.nc"], "--out"),
    (["run", "--out", "{tmp}/run.txt"], "--out"),
    (["run", "--optimizer", "lion"], "optimizer"),
    (["run", "--axis", "Q", "--scale", "2"], "--axis"),
    (["run", "--lws", "pyramid"], "--lws"),
    (["run", "--config", "{tmp}/missing.toml"], "--config"),
    (["run", "--eta0", "-1"], "eta0"),
    (["describe", "--task", "speech"], "task"),
    (["run", "--alpha-A", "0"], "alpha_A"),
    (["run", "--gamma0", "nan"], "gamma0"),
    (["run", "--centre", "middle"], "centre"),
    (["run", "--optimizer", "adam", "--weight-decay", "0.1"], "adamw"),
    (["coord", "--values", "4,8"], "at least 3"),
    (["coord", "--steps", "0,x"], "--steps"),
    (["coord", "--axis", "Q"], "--axis"),
]


@pytest.mark.parametrize("args,names", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(tmp_path, args, names):
    (tmp_path / "afile").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    extra = {"run": ["--no-progress"], "describe": ["--N", "8"], "coord": ["--N", "4"]}[args[0]]
    r = cli(*args, *extra, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and names in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


def test_sweep_is_resumable_and_check_prints_verdicts(tmp_path):
    out = tmp_path / "s.nc"
    args = ("sweep", "--axis", "N", "--values", "4,8,16", "--seeds", "2", "--init-only", "--out", str(out))
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    parts = sorted((tmp_path / "s.nc.parts").glob("*.nc"))  # beside manifest.json
    assert len(parts) == 6
    parts[0].unlink()  # lost point
    parts[1].write_bytes(parts[1].read_bytes()[:100])  # corrupt leftover
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("already done, skipped") == 4
    assert r.stderr.count(": ok (") == 2
    ds = load(out)
    assert ds.sizes["N"] == 3 and ds.sizes["seed"] == 2
    r = cli("check", str(out), "--csv", str(tmp_path / "v.csv"))
    assert r.returncode == 0, r.stderr
    assert "P1" in r.stdout and "Var_h A(0)" in r.stdout and "primary rows:" in r.stdout
    assert (tmp_path / "v.csv").read_text().startswith("key,")


def test_check_names_a_bad_dataset(tmp_path):
    (tmp_path / "x.nc").write_text("not netcdf")
    r = cli("check", str(tmp_path / "x.nc"))
    assert r.returncode == 2 and "x.nc" in r.stderr and "Traceback" not in r.stderr
    r = cli("sweep", "--values", "4,8", "--init-only", "--out", str(tmp_path / "y.nc"))
    assert r.returncode == 2 and "at least 3" in r.stderr


def test_a_diverging_run_stops_with_a_clear_status(tmp_path):
    """A real float32 overflow, far from the edge: SP + SGD on the default model (LM, N=16, H=4, L=2, seed 0, 40
    steps) stays finite up to eta0 = 1e2 and diverges from 1e3 on (measured on an AMD EPYC, eta0 in decades;
    at step 20 at 1e3, step 1 at 1e25), so eta0 = 1e25 is 22 orders of magnitude past the edge."""
    out = tmp_path / "div.nc"
    r = cli(
        "run",
        "--param",
        "sp",
        "--optimizer",
        "sgd",
        "--eta0",
        "1e25",
        "--steps",
        "40",
        "--no-progress",
        "--out",
        str(out),
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "diverged at step" in r.stderr
    ds = load(out)  # what was finished is kept, and says so
    assert ds.attrs["status"] == "diverged" and 0 <= ds.attrs["diverged_at"] < 40
    assert ds.sizes["train_step"] < 40


def test_coord_command_prints_verdicts_writes_a_dataset_and_plots(tmp_path):
    """`dmft-probe coord` end to end (small): the knobs on the command line land in the dataset, the verdict table
    names every site with the logits, and `plot` draws the coordinate-check panels."""
    out = tmp_path / "c.nc"
    r = cli(
        "coord",
        "--axis",
        "H",
        "--values",
        "2,4,8",
        "--steps",
        "0,2",
        "--seeds",
        "2",
        "--N",
        "4",
        "--L",
        "1",
        "--task",
        "vision",
        "--alpha-A",
        "0.75",
        "--alpha-L",
        "0.5",
        "--L0",
        "2",
        "--centre",
        "zero_readout",
        "--probe-samples",
        "8",
        "--out",
        str(out),
        "--csv",
        str(tmp_path / "c.csv"),
    )
    assert r.returncode == 0, r.stderr
    for site in ("embed", "q", "k", "v", "A", "softmax_A", "attn_out", "mlp_hidden", "mlp_out", "h", "logits"):
        assert any(line.split()[1:3] == [site, "init"] for line in r.stdout.splitlines()), site
    assert "VERDICT:" in r.stdout and f"dataset: {out}" in r.stdout
    ds = load(out)
    assert list(ds.step.values) == [0, 2] and ds.sizes["H"] == 3 and ds.sizes["seed"] == 2
    assert (ds.attrs["alpha_A"], ds.attrs["alpha_L"]) == (0.75, 0.5)
    import json

    param = json.loads(ds.attrs["config"])["param"]
    assert (
        param["L0"] == 2
        and param["centre"] == "zero_readout"
        and param["name"] == "mup-alpha_A0.75-alpha_L0.5-zero_readout"
    )
    assert (tmp_path / "c.csv").read_text().startswith("key,row,quantity,axis,setting,estimator,estimate,lo,hi,band")
    r = cli("plot", str(out), "--out", str(tmp_path / "fig"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fig" / "coord_check.png").stat().st_size > 10_000


def test_sweep_takes_the_exponents_on_the_command_line(tmp_path):
    """The issue's example: an init-only sweep at alpha_A = 0.75, then check: P1 predicts N^(1-2*0.75) = N^-0.5."""
    out = tmp_path / "s.nc"
    r = cli(
        "sweep",
        "--axis",
        "N",
        "--values",
        "4,8,16",
        "--seeds",
        "2",
        "--init-only",
        "--alpha-A",
        "0.75",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    r = cli("check", str(out))
    assert r.returncode == 0, r.stderr
    p1 = next(line for line in r.stdout.splitlines() if line.lstrip("*").startswith("P1"))
    assert "-0.5" in p1, p1
