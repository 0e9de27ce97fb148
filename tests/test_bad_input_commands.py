"""Bad input to the commands besides `run` (issue 18, defects 4 and 7-11): `coord --csv`, `bench`, `plot` on valid but
odd data, `check FOLDER`, `reproduce` and `variants`. Every refusal is one stderr line `error: ...` naming the option
or file, exit status 2, nothing printed before it, no traceback and nothing left behind; it comes before any work.

The CLI runs in this process (`helpers.invoke`). The odd datasets of `plot` and `check` are made from a real tiny
sweep and run written by the CLI, changed, and saved through `probes.experiment.dataset.save` (so their checksums match)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke, watchdog

from probes.experiment.dataset import load, save
from probes.grid.reproduce import PRESETS

# bench's documented bounds (`dmft-probe bench --help`)
MAX_STEPS, MAX_REPEATS, MAX_ENSEMBLE = 10000, 100, 64
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
TINY = ["--task", "vision", "--N", "2", "--H", "2", "--L", "1", "--batch-size", "2"]


def files_in(folder: Path) -> set[str]:
    """Every file and folder under `folder`, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_refused(args: list, names, cwd: Path, seconds: int = 60) -> str:
    """Exit 2, exactly one stderr line starting with "error: " that names every one of `names`, nothing on stdout,
    no traceback, and no file or folder created or removed under `cwd`. Returns the line."""
    before = files_in(cwd)
    with watchdog(seconds):
        code, stdout, stderr = invoke(args, cwd=cwd)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, (args, code, stdout, stderr)
    assert len(lines) == 1, (args, stderr)
    assert lines[0].startswith("error: "), lines[0]
    for name in [names] if isinstance(names, str) else names:
        assert str(name) in lines[0], (name, lines[0])
    assert stdout == "", stdout
    assert "Traceback" not in stderr
    assert files_in(cwd) == before, files_in(cwd) ^ before
    return lines[0]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A tiny trained sweep along N (2, 4, 8 x 2 seeds, 2 steps, probes at every step) and a tiny run, both written
    by the CLI."""
    root = tmp_path_factory.mktemp("real")
    code, _, err = invoke(
        [
            "sweep",
            *TINY,
            "--axis",
            "N",
            "--values",
            "2,4,8",
            "--seeds",
            "2",
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
    code, _, err = invoke(
        [
            "run",
            *TINY,
            "--steps",
            "2",
            "--probe-every",
            "1",
            "--probe-samples",
            "4",
            "--no-progress",
            "--out",
            root / "run.nc",
        ],
        cwd=root,
    )
    assert code == 0, err
    return {"sweep": root / "sweep.nc", "run": root / "run.nc"}


def edited(src: Path, dst: Path, config=None, data=None, attrs=None) -> Path:
    """A copy of the dataset `src` saved to `dst` by probes.experiment.dataset.save (fresh checksums): config(dict) edits the
    config attribute, data(array) -> array is applied to every floating-point data variable, attrs(dict) edits
    the attributes."""
    ds = load(src).load()
    if config is not None:
        cfg = json.loads(ds.attrs["config"])
        config(cfg)
        ds.attrs["config"] = json.dumps(cfg)
    if data is not None:
        for v in list(ds.data_vars):
            if np.issubdtype(ds[v].dtype, np.floating):
                ds[v] = ds[v].copy(data=data(ds[v].values))
    if attrs is not None:
        attrs(ds.attrs)
    return save(ds, dst)


# ------------------------------------------------------------------------------------------------ 4. coord --csv


@pytest.mark.parametrize(
    "where, why",
    [
        ("missing/c.csv", "does not exist"),
        ("afolder", "is a folder"),
        ("fifo.csv", "not a regular file"),
        ("/dev/full", "not a regular file"),
        ("", "not a file name"),
    ],
)
def test_coord_refuses_a_bad_csv_before_any_training(tmp_path, where, why):
    """--csv was checked after all training: a missing folder or /dev/full left c.nc and its parts, a FIFO hung."""
    (tmp_path / "afolder").mkdir()
    os.mkfifo(tmp_path / "fifo.csv")
    csv = where if where.startswith("/") or not where else tmp_path / where
    assert_refused(
        [
            "coord",
            *TINY,
            "--values",
            "2,4,8",
            "--seeds",
            "2",
            "--steps",
            "0,1",
            "--workers",
            "1",
            "--out",
            tmp_path / "c.nc",
            "--csv",
            csv,
        ],
        ["--csv", why],
        tmp_path,
    )


# ------------------------------------------------------------------------------------------------ 7. bench


@pytest.mark.parametrize(
    "args, names",
    [
        (["--sizes", ""], ["--sizes", "empty"]),
        (["--sizes", ","], ["--sizes", "empty"]),
        (["--sizes", "default,huge"], ["--sizes", "huge"]),
        (["--steps", "0"], "--steps"),
        (["--steps", str(MAX_STEPS + 1)], ["--steps", str(MAX_STEPS)]),
        (["--repeats", "0"], "--repeats"),
        (["--repeats", "1000000000"], ["--repeats", str(MAX_REPEATS)]),
        (["--ensemble", "0"], "--ensemble"),
        (["--ensemble", "1000000000"], ["--ensemble", str(MAX_ENSEMBLE)]),
        (["--threads", "0"], "--threads"),
        (["--threads", "100000"], "--threads"),
        (["--threads", str(CPUS + 1)], ["--threads", str(CPUS)]),
        (["--device", "gpu"], "--device"),
    ],
)
def test_bench_bounds_every_option_and_names_it(tmp_path, args, names):
    """`bench --sizes ""` crashed with StopIteration, --repeats 1000000000 ran without bound, --ensemble 1000000000
    and --threads 100000 crashed, and no message named its flag."""
    assert_refused(["bench", "--quick", *args], names, tmp_path, seconds=30)


def test_bench_help_states_the_bounds():
    code, out, _ = invoke(["bench", "--help"])
    assert code == 0
    for bound in (str(MAX_STEPS), str(MAX_REPEATS), str(MAX_ENSEMBLE), "CPUs"):
        assert bound in out, bound


# ------------------------------------------------------------------------------------------------ 8. plot, odd data


def assert_plotted(dataset: Path, out: Path) -> list[str]:
    """`plot DATASET --out OUT` exits 0 with nothing on stderr, prints one existing figure per path line, leaves no
    temporary folder next to OUT; returns the stdout lines that are notes."""
    code, stdout, stderr = invoke(["plot", dataset, "--out", out], cwd=out.parent)
    assert code == 0, stderr
    assert stderr == "", stderr
    lines = stdout.splitlines()
    notes = [ln for ln in lines if ln.startswith("note: ")]
    figures = [Path(ln) for ln in lines if not ln.startswith("note: ")]
    assert figures and all(f.parent == out and f.is_file() for f in figures), lines
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in figures)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
    return notes


def test_plot_a_huge_alpha_is_a_note_not_an_overflow(tmp_path, real):
    """alpha_A = 1e308 makes the predicted exponent 1 - 2 alpha_A = -inf: an OverflowError traceback before."""

    def huge(cfg):
        cfg["param"]["alpha_A"] = 1e308

    path = edited(real["sweep"], tmp_path / "huge.nc", config=huge, attrs=lambda a: a.update(alpha_A=1e308))
    notes = assert_plotted(path, tmp_path / "fig")
    assert all(len(n.split(":")) >= 3 for n in notes), notes  # "note: <figure>: <what>"


def test_plot_all_zero_data_draws_what_it_can_and_notes_the_rest(tmp_path, real):
    """All-zero data gave "Data cannot be log-scaled" naming no file and left a partial figure folder."""
    path = edited(real["sweep"], tmp_path / "zero.nc", data=np.zeros_like)
    notes = assert_plotted(path, tmp_path / "fig")
    assert all(n.split(":")[1].strip() for n in notes), notes  # each note names its figure
    assert not any("Warning" in n for n in notes), notes
    assert "note: exponents: drawn on linear axes (no positive values for a log scale)" in notes
    assert (tmp_path / "fig" / "exponents.png").is_file() and (tmp_path / "fig" / "verdicts.png").is_file()


def test_plot_warnings_become_notes(tmp_path, real):
    """A run with a huge alpha_A: scipy's divide-by-zero RuntimeWarning and plot_dataset's own UserWarning reached
    stderr raw ("cli.py:589: UserWarning")."""
    path = edited(
        real["run"],
        tmp_path / "run.nc",
        config=lambda c: c["param"].update(alpha_A=1e300),
        attrs=lambda a: a.update(alpha_A=1e300),
    )
    notes = assert_plotted(path, tmp_path / "fig")
    assert any(n.startswith("note: attention_density: ") for n in notes), notes


def test_plot_replaces_figures_in_an_existing_folder_and_keeps_other_files(tmp_path, real):
    out = tmp_path / "fig"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    (out / "loss.png").write_bytes(b"old")
    code, stdout, stderr = invoke(["plot", real["run"], "--out", out], cwd=tmp_path)
    assert code == 0 and stderr == "", stderr
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_plot_error_names_the_dataset_and_leaves_no_folder(tmp_path, real):
    """A dataset that loads but is neither a run nor a sweep along one axis (N and H both dimensions, no
    sweep_axis attribute)."""
    ds = load(real["sweep"]).load().expand_dims(H=[2])
    del ds.attrs["sweep_axis"]
    path = save(ds, tmp_path / "two_axes.nc")
    assert_refused(["plot", path, "--out", tmp_path / "fig"], "two_axes.nc", tmp_path)


# ------------------------------------------------------------------------------------------------ 9. check FOLDER


@pytest.mark.parametrize("bad", ["junk", "noparam", "two_sizes"])
def test_check_folder_validates_every_file_before_printing(tmp_path, real, bad):
    """`check FOLDER` printed "checking a_good.nc" before failing on the folder's bad file."""
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copy(real["sweep"], folder / "a_good.nc")
    if bad == "junk":
        (folder / "b_bad.nc").write_bytes(b"not a dataset" * 100)
    elif bad == "noparam":
        edited(real["sweep"], folder / "b_bad.nc", config=lambda c: c.pop("param"))
    else:
        save(load(real["sweep"]).load().isel(N=[0, 1]), folder / "b_bad.nc")
    assert_refused(["check", folder, "--mc-heads", "16"], "b_bad.nc", tmp_path)


# ------------------------------------------------------------------------------------------------ 10-11. reproduce


def later(kind: str) -> str:
    """The name of the last job of the smoke preset of this kind (so earlier jobs would train before it)."""
    return [j.name for j in PRESETS["smoke"].jobs if j.kind == kind][-1]


@pytest.mark.parametrize(
    "case",
    ["junk lr grid", "junk sweep", "junk manifest", "other grid", "lr grid as sweep", "stray junk", "verdicts folder"],
)
def test_reproduce_checks_every_output_before_any_training(tmp_path, real, case):
    """`r/lr-N-mup.nc` holding junk was refused after 108 s of training five sweeps: every output that exists is
    now checked first (a loadable dataset of the job's kind and grid, a store that can resume)."""
    out = tmp_path / "r"
    out.mkdir()
    if case == "junk lr grid":
        bad = out / f"{later('lr_grid')}.nc"
        bad.write_bytes(b"junk" * 100)
    elif case == "junk sweep":
        bad = out / f"{later('sweep')}.nc"
        bad.write_bytes(b"junk" * 100)
    elif case == "junk manifest":
        (out / f"{later('sweep')}.nc.parts").mkdir()
        bad = out / f"{later('sweep')}.nc.parts" / "manifest.json"
        bad.write_text("{not json")
    elif case == "other grid":  # a real sweep along N, but 2, 4, 8 x 2 seeds of another setting
        bad = out / "N-mup-sqrt.nc"
        shutil.copy(real["sweep"], bad)
    elif case == "lr grid as sweep":
        bad = out / f"{later('lr_grid')}.nc"
        shutil.copy(real["sweep"], bad)
    elif case == "stray junk":  # not a job's output, but the verdict table reads every dataset
        bad = out / "zz-mine.nc"
        bad.write_bytes(b"junk" * 100)
    else:  # the table is written at the end, over a file
        bad = out / "verdicts.md"
        bad.mkdir()
    assert_refused(["reproduce", "--preset", "smoke", "--out", out], ["--out", bad.name], tmp_path)


@pytest.mark.parametrize("command", ["reproduce", "variants", "plot"])
def test_an_empty_out_is_refused(tmp_path, real, command):
    """`variants --out ""` and `reproduce --out ""` wrote into the current folder (so did `plot --out ""`)."""
    args = {
        "reproduce": ["reproduce", "--preset", "smoke"],
        "variants": ["variants", "--quick"],
        "plot": ["plot", real["run"]],
    }[command]
    assert_refused([*args, "--out", ""], "--out", tmp_path)
    assert_refused([*args, "--out", "  "], "--out", tmp_path)
    assert_refused([*args, "--out", "a" * 300], ["--out", "too long"], tmp_path)  # was a raw "[Errno 36]"


@pytest.mark.parametrize("command", ["check", "plot"])
def test_an_empty_dataset_is_refused(tmp_path, command):
    """`check ""` read the current folder (typer turns "" into Path(".")) and its error named "." (found by
    tests/test_fuzz_commands.py); the argument is checked as typed."""
    assert_refused([command, ""], ["DATASET", "empty path"], tmp_path)


@pytest.mark.parametrize("command", ["reproduce", "variants"])
def test_an_out_that_cannot_be_made_is_refused(tmp_path, command):
    """--out under a file (and, as a user other than root, under a read-only folder: a raw [Errno 30] before)."""
    (tmp_path / "afile").write_text("x")
    args = ["reproduce", "--preset", "smoke"] if command == "reproduce" else ["variants", "--quick"]
    assert_refused([*args, "--out", tmp_path / "afile" / "sub"], ["--out", "afile"], tmp_path)
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            assert_refused([*args, "--out", ro / "sub"], ["--out", "not writable"], tmp_path)
        finally:
            ro.chmod(0o755)


def test_variants_checks_every_cell_store_before_opening_any(tmp_path):
    """A later cell's store with an unreadable manifest is refused before the earlier cells' stores are made."""
    out = tmp_path / "vt"
    parts = out / "coord-laurel-adam-N.nc.parts"
    parts.mkdir(parents=True)
    (parts / "manifest.json").write_text("[1, 2")
    assert_refused(
        [
            "variants",
            "--quick",
            "--variants",
            "paper,laurel",
            "--axes",
            "N",
            "--optimizers",
            "adam",
            "--workers",
            "1",
            "--out",
            out,
        ],
        ["--out", "coord-laurel-adam-N.nc.parts"],
        tmp_path,
    )
