"""Bad input, everywhere (issue 10, item 4): every command and config key is validated before any work starts.
Bad input gives one line on stderr naming the option (--gamma0) or config key ([param] gamma0), exit status 2,
nothing printed before it, no traceback and no output file. The CLI is called in-process (fast), the way
`cli.App.__call__` runs it; any exception escaping it is a traceback, i.e. a failure here.

The last test fuzzes the CLI with hypothesis (500 generated argument sets and config files, deterministic) and
prints how many cases exited 0, 1 (a genuine divergence, dataset written) and 2 (`pytest -s` shows it)."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import xarray as xr
from helpers import invoke, watchdog

import probes.experiment.run
from parametrizations.checks import ConfigError
from parametrizations.optim import OptimConfig
from parametrizations.spec import Parametrization, get_preset
from parametrizations.transformer import ModelConfig
from probes.experiment.config import check_fits, make_run_config, memory_parts, read_config_file
from probes.experiment.data import load_task
from probes.experiment.dataset import combine_runs, run_dataset, save
from probes.experiment.run import RunConfig, resolve_device, train
from probes.hooks.recorder import ProbeConfig

# Tiny runs: each valid one finishes in well under a second.
TINY = [
    "--N",
    "2",
    "--H",
    "2",
    "--L",
    "1",
    "--seq-len",
    "8",
    "--batch-size",
    "2",
    "--no-progress",
    "--probe-samples",
    "2",
    "--steps",
    "1",
]


@pytest.fixture(autouse=True, scope="module")
def cached_tasks():
    """Load each data set once for this module (the stdlib corpus takes ~1 s to read)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(probes.experiment.run, "load_task", functools.lru_cache(maxsize=None)(load_task))
    yield
    mp.undo()


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


def assert_refused(args: list[str], names, tmp: Path, out: Path | None = None) -> str:
    """Exit 2, exactly one line on stderr ("error: ...") naming every one of `names`, nothing on stdout, no
    output file and no temporary file left. Returns the line."""
    code, stdout, stderr = invoke(args, cwd=tmp)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, (args, code, stderr)
    assert len(lines) == 1, (args, stderr)
    assert lines[0].startswith("error: "), lines[0]
    for name in [names] if isinstance(names, str) else names:
        assert name in lines[0], (name, lines[0])
    assert stdout == "", stdout
    assert "Traceback" not in stderr
    if out is not None:
        assert not out.exists()
    assert not (tmp / "runs").exists()
    assert not leftovers(tmp)
    return lines[0]


def write_config(tmp: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ --device


@pytest.mark.parametrize("device", ["gpu", "CPU", "mps", "", "cuda:x", "cpu:0", " cpu", "cuda:99"])
def test_device_must_be_one_torch_can_use(tmp_path, device):
    line = assert_refused(
        ["run", *TINY, "--device", device, "--out", tmp_path / "r.nc"], "--device", tmp_path, tmp_path / "r.nc"
    )
    if device != "cuda:99":
        assert "cpu, cuda, cuda:N, auto" in line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_before_any_work(tmp_path):
    line = assert_refused(["run", *TINY, "--device", "cuda", "--out", tmp_path / "r.nc"], "--device", tmp_path)
    assert "CUDA is not available" in line
    assert_refused(["run", *TINY, "--precision", "tf32", "--out", tmp_path / "r.nc"], ["--precision", "CUDA"], tmp_path)


def test_resolve_device_names_the_choices():
    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type in ("cpu", "cuda")
    for bad in ("gpu", "CPU", "mps", "", None, "cuda:-1"):
        with pytest.raises(ConfigError, match="device"):
            resolve_device(bad)
    import torch

    with pytest.raises(ConfigError, match="device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ConfigError, match="device"):
        RunConfig(device="gpu")


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cpu_and_auto_run(tmp_path, device):
    code, stdout, stderr = invoke(["run", *TINY, "--device", device, "--out", tmp_path / "r.nc"], cwd=tmp_path)
    assert code == 0, stderr
    assert (tmp_path / "r.nc").exists()


# ------------------------------------------------------------------------------------------------ sizes and memory


@pytest.mark.parametrize(
    "args,names",
    [
        (["--N", "1000000000"], "--N"),
        (["--H", "1000000000"], "--H"),
        (["--L", "1000000000"], "--L"),
        (["--seq-len", "1000000000"], "--seq-len"),
        (["--steps", "1000000000"], "--steps"),
        (["--batch-size", "1000000000"], "--batch-size"),
        (["--probe-samples", "1000000"], "--probe-samples"),
        (["--probe-every", "1000000000"], "--probe-every"),
        (["--probe-log", "1000000000"], "--probe-log"),
        (["--scale", "1000000000"], "--scale"),
        (["--seed", "-1"], "--seed"),
        (["--N", "65536", "--H", "64"], ["--N 65536", "--H 64", "memory", "available"]),  # under the caps
        (["--steps", "100000000", "--probe-every", "1"], ["--steps", "memory"]),  # the probe records
        (["--seq-len", "60000", "--batch-size", "1000"], ["--seq-len 60000", "--batch-size 1000", "memory"]),
    ],
)
def test_sizes_that_cannot_fit_are_refused_up_front(tmp_path, args, names, monkeypatch):
    """Refused, not attempted: building a model would fail the test (no wall-time assertion)."""
    import probes.experiment.run

    def no_model(*a, **k):
        raise AssertionError("run built a model before refusing the sizes")

    monkeypatch.setattr(probes.experiment.run, "build_model", no_model)
    out = tmp_path / "r.nc"
    assert_refused(["run", "--no-progress", *args, "--out", out], names, tmp_path, out)


def test_describe_refuses_a_model_that_cannot_fit(tmp_path):
    line = assert_refused(["describe", "--N", "100000"], ["--N 100000", "memory"], tmp_path)
    assert "TiB" in line or "GiB" in line


def test_check_fits_is_callable_on_a_grid_point():
    """The function a sweep calls on its largest grid point before any work (no origins: names the flags)."""
    cfg = make_run_config(None, model={"N": 4, "H": 2, "L": 1}, run={"steps": 2})
    check_fits(cfg)  # fits
    big = replace(cfg, model=replace(cfg.model, N=1 << 20, H=1 << 10))
    with pytest.raises(ValueError, match=r"--N 1048576, --H 1024.*memory"):
        check_fits(big)
    parts = memory_parts(cfg)
    assert all(b >= 0 for b, _, _ in parts.values()) and sum(b for b, _, _ in parts.values()) < 1 << 30
    with pytest.raises(ValueError, match="--gamma0"):
        check_fits(replace(cfg, param=replace(cfg.param, gamma0=1e-200)))


# ------------------------------------------------------------------------------------------------ --steps 0


def test_run_with_zero_steps_writes_its_dataset_and_a_summary(tmp_path):
    out = tmp_path / "r.nc"
    code, stdout, stderr = invoke(["run", *TINY[:-2], "--steps", "0", "--out", out], cwd=tmp_path)
    assert code == 0, stderr
    assert "no training steps" in stdout and f"dataset: {out}" in stdout
    ds = xr.open_dataset(out)
    assert ds.sizes["train_step"] == 0 and list(ds.step.values) == [0]
    code, stdout, stderr = invoke(
        ["run", *TINY[:-2], "--steps", "0", "--no-probes", "--out", tmp_path / "q.nc"], cwd=tmp_path
    )
    assert code == 0, stderr


# ------------------------------------------------------------------------------------------------ float options


@pytest.mark.parametrize("flag", ["--gamma0", "--beta0", "--L0", "--eta0", "--alpha-L", "--alpha-A", "--weight-decay"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_float_options_must_be_finite(tmp_path, flag, value):
    extra = ["--optimizer", "adamw"] if flag == "--weight-decay" else []
    assert_refused(["run", *TINY, *extra, flag, value, "--out", tmp_path / "r.nc"], flag, tmp_path)


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--gamma0", "0"),
        ("--gamma0", "-1"),
        ("--beta0", "0"),
        ("--beta0", "-2"),
        ("--L0", "0"),
        ("--L0", "-1"),
        ("--alpha-A", "0"),
        ("--alpha-A", "2.5"),
        ("--alpha-L", "-0.5"),
        ("--alpha-L", "3"),
        ("--eta0", "0"),
        ("--weight-decay", "-1"),
    ],
)
def test_float_options_must_be_in_range(tmp_path, flag, value):
    extra = ["--optimizer", "adamw"] if flag == "--weight-decay" else []
    assert_refused(["run", *TINY, *extra, flag, value, "--out", tmp_path / "r.nc"], flag, tmp_path)


@pytest.mark.parametrize(
    "args,names",
    [
        (["--gamma0", "1e200", "--optimizer", "sgd"], ["--gamma0 1e+200", "learning rate"]),  # gamma0^2 overflows
        (["--gamma0", "1e200"], ["--gamma0 1e+200", "learning rate"]),
        (["--gamma0", "1e-200"], ["--gamma0 1e-200"]),  # readout multiplier
        (["--L0", "1e-300"], ["--L0 1e-300"]),
        (["--eta0", "1e300", "--optimizer", "sgd"], ["--eta0 1e+300", "learning rate"]),
        (["--beta0", "1e300"], ["--beta0 1e+300", "branch multiplier"]),
    ],
)
def test_derived_multipliers_and_learning_rate_must_be_usable(tmp_path, args, names):
    assert_refused(["run", *TINY, *args, "--out", tmp_path / "r.nc"], names, tmp_path)


def test_describe_refuses_what_run_refuses(tmp_path):
    assert_refused(["describe", "--N", "4", "--gamma0", "1e200", "--optimizer", "sgd"], "--gamma0", tmp_path)
    assert_refused(["describe", "--N", "4", "--beta0", "nan"], "--beta0", tmp_path)


# ------------------------------------------------------------------------------------------------ config files


CONFIG_CASES = [
    # (file text, suffix, names in the message)
    ("[model]\nN = [4]\n", ".toml", ["[model] N", "integer"]),
    ("[model]\nN = 4.0\nL = 1e9\n", ".toml", ["[model] L", "10000"]),
    ('[param]\nalpha_A = "abc"\n', ".toml", ["[param] alpha_A", "number"]),
    ("[run]\nsteps = 2.5\n", ".toml", ["[run] steps", "integer"]),
    ("[param]\nalpha_A = true\n", ".toml", ["[param] alpha_A", "number"]),
    ("[run]\nseed = 1.5\n", ".toml", ["[run] seed", "integer"]),
    ('[probes]\nenabled = "no"\n', ".toml", ["[probes] enabled", "true or false"]),
    ('[model]\nN = "4"\n', ".toml", ["[model] N", "integer"]),
    ("[model]\nN = 1.5\n", ".toml", ["[model] N", "integer"]),
    ("[model]\nlws_base_H = 0\n", ".toml", ["[model] lws_base_H"]),
    ('[model]\nlws_heads = [1, "a"]\nlws = "explicit"\nlws_d_ff = [4]\n', ".toml", ["[model] lws_heads"]),
    ("[model]\nffn_mult = inf\n", ".toml", ["[model] ffn_mult"]),
    ("[optim]\neps0 = -1\n", ".toml", ["[optim] eps0"]),
    ("[optim]\neps0 = nan\n", ".toml", ["[optim] eps0"]),
    ('[optim]\nname = "adamw"\nweight_decay = nan\n', ".toml", ["[optim] weight_decay"]),
    ('[optim]\nname = "adamw"\nweight_decay = inf\n', ".toml", ["[optim] weight_decay"]),
    ("[optim]\nbetas = [0.9, 1.5]\n", ".toml", ["[optim] betas"]),
    ("[optim]\nmomentum = 1\n", ".toml", ["[optim] momentum"]),
    ("[param]\nalpha_L = nan\n", ".toml", ["[param] alpha_L"]),
    ("[param]\nalpha_L = inf\n", ".toml", ["[param] alpha_L"]),
    ("[param]\nL0 = nan\n", ".toml", ["[param] L0"]),
    ("[param]\nL0 = 0\n", ".toml", ["[param] L0"]),
    ('[param]\ngamma0 = 1e200\n[optim]\nname = "sgd"\n', ".toml", ["[param] gamma0"]),
    ("[probes]\nn_points = 10000000\n", ".toml", ["[probes] n_points"]),
    ("[probes]\nn_samples = 10000000\n", ".toml", ["[probes] n_samples"]),
    ("[model]\nN = 0\n[run]\nsteps = 0\n", ".toml", ["[model] N in"]),
    ('[model]\nH = "4"\n', ".toml", ["[model] H"]),  # a file's types are checked where the CLI overrides them
    ('[probes]\nschedule = "at"\n', ".toml", ["[probes] at"]),
    ('[probes]\nat = [1, -2]\nschedule = "at"\n', ".toml", ["[probes] at"]),
    ("[run]\nheldout_batch = 0\n", ".toml", ["[run] heldout_batch"]),
    ("[run]\npatch = 0\n", ".toml", ["[run] patch"]),
    ('[run]\ndata_path = ""\n', ".toml", ["[run] data_path"]),
    ('[run]\ndevice = "gpu"\n', ".toml", ["[run] device"]),
    ("[run]\ncompile = 1\n", ".toml", ["[run] compile"]),
    ("[model]\nN = 4\n[model.extra]\nx = 1\n", ".toml", ["--config", "extra"]),
    ("model = 3\n", ".toml", ["--config", "[model]", "table"]),
    ("[modle]\nN = 4\n", ".toml", ["--config", "unknown section"]),
    ("[model]\nNN = 4\n", ".toml", ["--config", "unknown key", "NN"]),
    ("[model\nN = 4\n", ".toml", ["--config", "not valid TOML"]),
    ("[1, 2]", ".json", ["--config", "table of sections", "list"]),
    ('"model"', ".json", ["--config", "table of sections", "str"]),
    ("null", ".json", ["--config", "table of sections"]),
    ('{"model": {"N": NaN}}', ".json", ["[model] N"]),
    ('{"param": {"gamma0": NaN}}', ".json", ["[param] gamma0", "finite"]),
    ('{"param": {"gamma0": null}}', ".json", ["[param] gamma0"]),
    ('{"model": [1]}', ".json", ["--config", "[model]", "table"]),
    ('{"model": {"N": 4}', ".json", ["--config", "not valid JSON"]),
    ('{"model": {"N": 1e999}}', ".json", ["[model] N"]),
    ("[" * 100000, ".json", ["--config", "not valid JSON"]),
]


@pytest.mark.parametrize("text,suffix,names", CONFIG_CASES, ids=[c[0][:40] for c in CONFIG_CASES])
def test_config_files_are_validated_key_by_key(tmp_path, text, suffix, names):
    conf = write_config(tmp_path, text, "c" + suffix)
    base = ["--no-progress", "--steps", "1", "--H", "2", "--seq-len", "8", "--batch-size", "2"]
    assert_refused(["run", *base, "--config", conf, "--out", tmp_path / "r.nc"], names, tmp_path, tmp_path / "r.nc")


def test_config_values_of_the_right_kind_are_accepted(tmp_path):
    """Integral floats for ints, ints for floats, lists for tuples: what a JSON or TOML writer may emit."""
    conf = write_config(
        tmp_path,
        '{"model": {"N": 2.0, "task": "vision"}, "param": {"gamma0": 1, "alpha_A": 1},'
        ' "optim": {"betas": [0.9, 0.99], "eps0": 0}, "probes": {"at": [0, 1],'
        ' "schedule": "at", "enabled": true}}',
        "c.json",
    )
    cfg = make_run_config(str(conf))
    assert cfg.model.N == 2 and isinstance(cfg.model.N, int) and cfg.param.gamma0 == 1.0
    assert cfg.optim.betas == (0.9, 0.99) and cfg.probes.at == (0, 1)


def test_config_file_paths(tmp_path):
    (tmp_path / "folder.toml").mkdir()
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "big.toml").write_text("# " + "x" * (2 << 20))
    for path, names in (
        ("folder.toml", "folder"),
        ("fifo.toml", "not a regular file"),
        ("missing.toml", "no such"),
        ("bin.toml", "UTF-8"),
        ("big.toml", "at most"),
    ):
        with watchdog(30):
            assert_refused(["run", *TINY, "--config", tmp_path / path], ["--config", names], tmp_path)
    assert_refused(["run", *TINY, "--config", ""], ["--config", "empty"], tmp_path)
    with pytest.raises(ValueError, match="--config"):
        read_config_file(tmp_path / "fifo.toml")


def test_data_paths(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "empty").mkdir()
    (tmp_path / "short.bin").write_bytes(b"\x00\x01" * 5)
    for data, names in (
        ("fifo", "not a regular file"),
        ("missing", "no such"),
        ("empty", "train.bin"),
        ("short.bin", "seq_len + 1"),
        ("", "empty"),
    ):
        with watchdog(30):
            assert_refused(
                ["run", *TINY, "--data", tmp_path / data if data else "", "--out", tmp_path / "r.nc"],
                ["--data", names],
                tmp_path,
            )
    assert_refused(["run", *TINY, "--task", "vision", "--data", tmp_path / "empty"], ["--data", "CIFAR"], tmp_path)


def test_default_data_limits(tmp_path):
    assert_refused(
        ["run", *TINY[:-4], "--task", "vision", "--probe-samples", "2000"], ["--probe-samples", "1024"], tmp_path
    )
    conf = write_config(tmp_path, "[run]\npatch = 3\n")
    assert_refused(["run", *TINY, "--task", "vision", "--config", conf], ["[run] patch"], tmp_path)
    assert_refused(["run", *TINY[:6], "--seq-len", "100000"], ["--seq-len", "65536"], tmp_path)


# ------------------------------------------------------------------------------------------------ the dataclasses


def test_dataclasses_check_their_own_fields():
    """Used directly (notebooks, sweeps), the config dataclasses name the field."""
    for make, key in (
        (lambda: ModelConfig(N="4"), "N"),
        (lambda: ModelConfig(N=True), "N"),
        (lambda: ModelConfig(lws_base_H=0), "lws_base_H"),
        (lambda: ModelConfig(L=10**9), "L"),
        (lambda: Parametrization(gamma0=math.inf), "gamma0"),
        (lambda: Parametrization(alpha_L=math.nan), "alpha_L"),
        (lambda: get_preset("mup", alpha_A="abc"), "alpha_A"),
        (lambda: OptimConfig(eps0=-1.0), "eps0"),
        (lambda: OptimConfig(weight_decay=math.nan), "weight_decay"),
        (lambda: OptimConfig(betas=(0.9,)), "betas"),
        (lambda: ProbeConfig(enabled="no"), "enabled"),
        (lambda: ProbeConfig(n_points=10**7), "n_points"),
        (lambda: RunConfig(steps=2.5), "steps"),
        (lambda: RunConfig(seed=-1), "seed"),
        (lambda: RunConfig(steps=10**9), "steps"),
    ):
        with pytest.raises(ConfigError) as e:
            make()
        assert e.value.key == key and str(e.value).startswith(key), str(e.value)


# ------------------------------------------------------------------------------------------------ check and plot


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A tiny init-only sweep along N (3 sizes x 2 seeds), a single run, and corrupt variants of them."""
    root = tmp_path_factory.mktemp("datasets")
    cfg = make_run_config(
        None,
        model={"N": 2, "H": 2, "L": 1, "task": "vision"},
        run={"steps": 0, "batch_size": 2},
        probes={"n_samples": 4},
    )
    per_value = []
    for N in (2, 4, 8):
        runs = [run_dataset(train(replace(cfg, seed=s, model=replace(cfg.model, N=N)))) for s in (0, 1)]
        per_value.append(combine_runs(runs, "seed"))
    sweep = combine_runs(per_value, "N")
    sweep.attrs["init_only"] = 1
    paths = {
        "sweep": save(sweep, root / "sweep.nc"),
        "run": save(run_dataset(train(replace(cfg, steps=1))), root / "run.nc"),
        "two_sizes": save(combine_runs(per_value[:2], "N"), root / "two.nc"),
    }
    raw = paths["sweep"].read_bytes()
    (root / "truncated.nc").write_bytes(raw[: len(raw) // 2])
    (root / "garbage.nc").write_bytes(os.urandom(4096))
    (root / "empty.nc").write_bytes(b"")
    (root / "text.nc").write_text("not netcdf")
    for name, edit in (
        ("noparam", lambda c: c.pop("param")),
        ("nomodel", lambda c: c.pop("model")),
        ("badparam", lambda c: c["param"].update(alpha_A="x")),
    ):
        ds = sweep.copy()
        conf = json.loads(ds.attrs["config"])
        edit(conf)
        ds.attrs["config"] = json.dumps(conf)
        paths[name] = save(ds, root / f"{name}.nc")
    ds = sweep.copy()
    ds.attrs["config"] = "not json"
    paths["badjson"] = save(ds, root / "badjson.nc")
    (root / "folder").mkdir()
    os.mkfifo(root / "fifo.nc")
    for name in ("truncated", "garbage", "empty", "text", "folder"):
        paths[name] = root / (name if name == "folder" else f"{name}.nc")
    paths["fifo"], paths["missing"] = root / "fifo.nc", root / "missing.nc"
    return paths


@pytest.mark.parametrize(
    "which",
    [
        "noparam",
        "nomodel",
        "badparam",
        "badjson",
        "truncated",
        "garbage",
        "empty",
        "text",
        "folder",
        "fifo",
        "missing",
        "two_sizes",
        "run",
    ],
)
@pytest.mark.parametrize("command", ["check", "plot"])
def test_check_and_plot_refuse_bad_datasets(tmp_path, datasets, which, command):
    if command == "plot" and which in ("two_sizes", "run"):
        pytest.skip("a valid run or small sweep plots")
    extra = ["--mc-heads", "16"] if command == "check" else ["--out", tmp_path / "fig"]
    with watchdog(30):
        assert_refused([command, datasets[which], *extra], str(datasets[which].name), tmp_path)
    assert not (tmp_path / "fig").exists()


@pytest.mark.parametrize("value", ["1000000000000", "0", "-5", "10000001"])
def test_check_bounds_mc_heads(tmp_path, datasets, value, monkeypatch):
    """The bound is checked before any work: the check itself would fail the test if it started (no wall-time
    assertion, which a loaded machine can break)."""
    import dmft.check
    import dmft.report

    def no_work(*args, **kwargs):
        raise AssertionError("check started its work before refusing --mc-heads")

    monkeypatch.setattr(dmft.check, "check", no_work)
    monkeypatch.setattr(dmft.report, "folder_verdicts", no_work)
    with watchdog(30):
        assert_refused(["check", datasets["sweep"], "--mc-heads", value], "--mc-heads", tmp_path)


def test_check_refuses_bad_output_paths_before_any_work(tmp_path, datasets):
    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "dir.csv").mkdir()
    for opt, path, names in (
        ("--csv", tmp_path / "fifo.csv", "not a regular file"),
        ("--csv", tmp_path / "dir.csv", "folder"),
        ("--csv", tmp_path / "no" / "v.csv", "does not exist"),
        ("--nc", tmp_path / "dir.csv", "folder"),
    ):
        with watchdog(30):
            assert_refused(["check", datasets["sweep"], "--mc-heads", "16", opt, path], [opt, names], tmp_path)


def test_check_writes_its_tables_whole(tmp_path, datasets):
    code, stdout, stderr = invoke(
        ["check", datasets["sweep"], "--mc-heads", "16", "--csv", tmp_path / "v.csv", "--nc", tmp_path / "v.nc"],
        cwd=tmp_path,
    )
    assert code == 0, stderr
    assert (tmp_path / "v.csv").read_text().startswith("key,") and xr.open_dataset(tmp_path / "v.nc").sizes["row_index"]
    assert not leftovers(tmp_path)


# ------------------------------------------------------------------------------------------------ the fuzz

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from probes.experiment.config import SECTION_KEYS  # noqa: E402

INT_OPTS = [
    "--N",
    "--H",
    "--L",
    "--seq-len",
    "--batch-size",
    "--steps",
    "--seed",
    "--probe-every",
    "--probe-log",
    "--probe-samples",
    "--scale",
    "--d-model",
]
FLOAT_OPTS = ["--gamma0", "--beta0", "--alpha-A", "--alpha-L", "--L0", "--eta0", "--weight-decay"]
CHOICE_OPTS = {
    "--device": ["cpu", "auto", "gpu", "CPU", "mps", "", "cuda", "cuda:0", "cuda:99", "cpu:0"],
    "--task": ["lm", "vision", "speech", ""],
    "--lws": ["isotropic", "openelm", "crown", "framed", "reverse", "vanilla", "pyramid", "", "explicit"],
    "--param": ["mup", "sp", "mup-sqrt", "depth-sqrt", "mu-p", ""],
    "--centre": ["copy", "zero_readout", "none", "middle", ""],
    "--optimizer": ["sgd", "sgd-momentum", "adam", "adamw", "lion", ""],
    "--precision": ["fp32", "bf16", "tf32", "fp64", ""],
    "--axis": ["N", "H", "L", "Q", ""],
}
FLAGS = ["--probes", "--no-probes", "--bogus-flag", "--progress"]
DESCRIBE_OPTS = {
    "--N",
    "--H",
    "--L",
    "--seq-len",
    "--scale",
    "--gamma0",
    "--beta0",
    "--alpha-A",
    "--alpha-L",
    "--L0",
    "--eta0",
    "--weight-decay",
    "--task",
    "--lws",
    "--param",
    "--centre",
    "--optimizer",
    "--axis",
}
# path kinds, made in each case's folder: see `materialise`
IN_PATHS = ["missing", "folder", "text", "fifo", "empty", "tokens.bin", "afile/x"]
OUT_PATHS = ["out.nc", "out.txt", "folder", "fifo.nc", "afile/x.nc", "nested/deeper/x.nc", "x.zarr", "text", ""]
DATASETS = [
    "sweep",
    "run",
    "two_sizes",
    "noparam",
    "nomodel",
    "badparam",
    "badjson",
    "truncated",
    "garbage",
    "empty",
    "text",
    "folder",
    "fifo",
    "missing",
]

ints = st.one_of(
    st.integers(-2, 6).map(str),
    st.sampled_from(["1000000000", "1000000000000", str(2**63), "-1000000000"]),
    st.sampled_from(["", "abc", "1.5", "nan", "1e3", "0x10", " 4"]),
)
floats = st.one_of(
    st.sampled_from(
        ["nan", "inf", "-inf", "0", "-1", "1e200", "1e-200", "1e400", "abc", "", "0.5", "1", "2.5", "1e-3", "1e6", "-0"]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
KEYS = sorted((s, k) for s, ks in SECTION_KEYS.items() for k in ks) + [("model", "bogus"), ("nosuch", "N")]
config_values = st.one_of(
    st.integers(-3, 8),
    st.sampled_from([10**9, 10**13, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=4),
    st.lists(st.integers(-1, 5), max_size=3),
    st.none(),
    st.sampled_from(
        [
            "lm",
            "vision",
            "mup",
            "sp",
            "adam",
            "sgd",
            "adamw",
            "cpu",
            "auto",
            "gpu",
            "every",
            "log",
            "at",
            "copy",
            "none",
            "isotropic",
            "explicit",
            "fp32",
            "bf16",
            "N",
            "H",
            ".",
        ]
    ),
)
configs = st.tuples(
    st.sampled_from(["toml", "toml", "json", "json", "json-list", "garbage", "truncated"]),
    st.lists(st.tuples(st.sampled_from(KEYS), config_values), max_size=4),
    st.binary(max_size=40),
)


@st.composite
def cases(draw):
    """(command, args with placeholders): `materialise` turns the placeholders into paths in a fresh folder."""
    command = draw(st.sampled_from(["run", "run", "run", "run", "describe", "describe", "check", "check", "plot"]))
    if command in ("check", "plot"):
        # plotting a whole sweep takes seconds (test_plots covers it); plot gets a run and the bad datasets
        args = [command, ("dataset", draw(st.sampled_from(DATASETS if command == "check" else DATASETS[1:])))]
        if command == "check":
            args += (
                ["--mc-heads", draw(st.one_of(st.just("16"), ints))] if draw(st.booleans()) else ["--mc-heads", "16"]
            )
            for opt in ("--csv", "--nc"):
                if draw(st.integers(0, 3)) == 0:
                    args += [opt, ("out", draw(st.sampled_from(OUT_PATHS + ["v.csv"])))]
        else:
            args += ["--out", ("out", draw(st.sampled_from(["fig", "fig", "text", "fifo.nc", "afile/fig"])))]
            if draw(st.booleans()):
                args += ["--format", draw(st.sampled_from(["png", "pdf", "PNG", "svg", ""]))]
        return command, args
    opts = {"--N": "2", "--H": "2", "--L": "1", "--seq-len": "8", "--task": draw(st.sampled_from(["lm", "vision"]))}
    if command == "run":
        opts.update(
            {
                "--batch-size": "2",
                "--probe-samples": "2",
                "--steps": str(draw(st.integers(0, 3))),
                "--out": ("out", "out.nc"),
            }
        )
    flags = []
    if command == "run":  # half the runs without probes: writing the probes' 40 variables is most of a run
        flags = ["--no-progress"] + (["--no-probes"] if draw(st.booleans()) else [])
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["int", "float", "float", "choice", "flag", "in", "out", "config", "config"]))
        if kind == "int":
            opts[draw(st.sampled_from(INT_OPTS))] = draw(ints)
        elif kind == "float":
            opts[draw(st.sampled_from(FLOAT_OPTS))] = draw(floats)
        elif kind == "choice":
            opt = draw(st.sampled_from(sorted(CHOICE_OPTS)))
            opts[opt] = draw(st.sampled_from(CHOICE_OPTS[opt]))
        elif kind == "flag":
            flags.append(draw(st.sampled_from(FLAGS)))
        elif kind == "in":
            opts[draw(st.sampled_from(["--data", "--config"]))] = ("in", draw(st.sampled_from(IN_PATHS)))
        elif kind == "out":
            opts["--out"] = ("out", draw(st.sampled_from(OUT_PATHS)))
        else:
            opts["--config"] = ("config", draw(configs))
    if command == "describe":
        opts = {k: v for k, v in opts.items() if k in DESCRIBE_OPTS or draw(st.integers(0, 9)) == 0}
    args = [command]
    for k, v in opts.items():
        args += [k, v]
    return command, args + flags


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def write_generated_config(tmp: Path, spec) -> Path:
    fmt, entries, junk = spec
    data: dict = {}
    for (section, key), value in entries:
        if (section, key) == ("run", "compile") and value is True:
            value = 1  # torch.compile on the CPU takes ~40 s: keep it a type error
        data.setdefault(section, {})[key] = value
    if fmt == "toml":
        text = "".join(
            f"[{json.dumps(s)}]\n"
            + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in kv.items() if v is not None)
            for s, kv in data.items()
        )
        path = tmp / "gen.toml"
        path.write_text(text)
    elif fmt in ("json", "json-list", "truncated"):
        text = json.dumps(list(data.items()) if fmt == "json-list" else data)
        path = tmp / "gen.json"
        path.write_text(text[: len(text) // 2] if fmt == "truncated" else text)
    else:
        path = tmp / ("gen.toml" if len(junk) % 2 else "gen.json")
        path.write_bytes(junk)
    return path


def materialise(args, tmp: Path, datasets: dict) -> tuple[list[str], Path | None]:
    """The argument list with real paths in `tmp` (a fresh folder with a file, a folder, a FIFO, a token file),
    and the output file the command may create."""
    (tmp / "folder").mkdir()
    (tmp / "afile").write_text("a file, not a folder")
    (tmp / "text").write_text("some text\n")
    os.mkfifo(tmp / "fifo")
    os.mkfifo(tmp / "fifo.nc")
    (tmp / "tokens.bin").write_bytes(bytes(range(200)) * 100)
    out, real = None, []
    for a in args:
        if isinstance(a, tuple):
            kind, spec = a
            if kind == "dataset":
                a = str(datasets[spec])
            elif kind == "config":
                a = str(write_generated_config(tmp, spec))
            else:
                a = str(tmp / spec) if spec else ""
                if kind == "out" and spec and not (tmp / spec).exists():
                    out = tmp / spec
        real.append(a)
    return real, out


def test_fuzz_the_cli(datasets):
    """Over generated CLI arguments and config files: exit 0, 2, or 1 only for a genuine divergence with its
    dataset written; never a traceback; never a partial output file; exit 2 is one line naming what is wrong,
    with nothing printed before it."""
    counts: Counter = Counter()
    t0 = time.perf_counter()

    @settings(max_examples=500, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(cases())
    def one(case):
        command, args = case
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            real, out = materialise(args, tmp, datasets)
            # a hang detector, not a time limit: a valid plot case renders figures, which on a loaded 2-core machine
            # (a niced CI run beside other jobs) once took over 60 s
            with watchdog(300):
                code, stdout, stderr = invoke(real, cwd=tmp)
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            assert code in (0, 1, 2), (real, code, stderr)
            assert "Traceback" not in stderr, (real, stderr)
            assert not leftovers(tmp) and not leftovers(datasets["sweep"].parent), real
            if code == 2:
                assert len(lines) == 1 and lines[0].startswith("error: "), (real, stderr)
                named = r"--[A-Za-z][\w-]*|\[(model|param|optim|run|probes)\]|DATASET|" + re.escape(
                    str(datasets["sweep"].parent)
                )
                assert re.search(named, lines[0]), (real, lines[0])  # names the option, key or dataset
                assert stdout == "", (real, stdout)
                assert out is None or not out.exists(), (real, stderr)
                assert not (tmp / "runs").exists(), real
            if code == 1:
                assert command == "run" and "diverged" in stderr and out is not None and out.exists(), (real, stderr)
            counts[(command, code)] += 1

    one()
    by_code = Counter()
    for (_, code), n in counts.items():
        by_code[code] += n
    print(
        f"\nfuzz: {sum(counts.values())} cases in {time.perf_counter() - t0:.1f} s; exit 0: {by_code[0]}, "
        f"exit 1 (diverged): {by_code[1]}, exit 2: {by_code[2]}; by command {dict(sorted(counts.items()))}"
    )


def test_a_sweep_refuses_a_grid_point_that_cannot_fit_before_any_work(tmp_path):
    from probes.grid.sweep import run_sweep

    cfg = make_run_config(model={"H": 1000}, run={"steps": 2})
    with pytest.raises(ValueError, match="memory"):
        run_sweep(cfg, "N", [2, 4, 10**5], 1, tmp_path / "s.nc")
    assert not (tmp_path / "s.nc.parts").exists() and not (tmp_path / "s.nc").exists()
