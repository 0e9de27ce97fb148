"""The sweep store (probes.grid.store) through the command line: a sweep killed with SIGKILL mid-run resumes to the dataset
of an uninterrupted sweep, bit for bit (in this process and with a pool of 2 workers); a corrupt part is named and
redone; a changed setting is refused before any work; a longer --values trains only the new points; a point whose
worker raises is marked failed while the others go on.

The reference is the same sweep run uninterrupted in the test process (`run_sweep`, one torch thread, as the CLI
subprocesses and pool workers use)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from probes.experiment.config import make_run_config
from probes.experiment.dataset import load
from probes.grid.store import MANIFEST, parts_dir
from probes.grid.sweep import SweepFailed, run_sweep

ROOT = Path(__file__).resolve().parents[1]
STEPS = 60
GRID = ["--axis", "N", "--values", "2,4,8", "--seeds", "2", "--task", "vision", "--H", "2", "--L", "1"]
# Attributes that say when, where and how fast a part was made, not what it holds (combine_runs keeps an attribute
# only where every part agrees, so these can differ between two sweeps of the same grid).
PROVENANCE = ("wall_s", "git_revision", "package_version", "torch_version", "python_version", "device")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def sweep_args(out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return ["sweep", *GRID, "--steps", str(steps), "--out", str(out), *extra]


def content(ds: xr.Dataset) -> xr.Dataset:
    """The dataset without its provenance attributes."""
    ds = ds.copy()
    for a in PROVENANCE:
        ds.attrs.pop(a, None)
    return ds


def statuses(out: Path) -> dict[str, str]:
    try:
        points = json.loads((parts_dir(out) / MANIFEST).read_text())["points"]
    except (FileNotFoundError, ValueError):
        return {}
    return {name: p["status"] for name, p in points.items()}


def temporaries(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob(".tmp-*")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, xr.Dataset]:
    """The uninterrupted sweep (its output path and merged dataset), run in this process."""
    out = tmp_path_factory.mktemp("reference") / "ref.nc"
    cfg = make_run_config(model={"H": 2, "L": 1, "task": "vision", "axis": "N"}, run={"steps": STEPS})
    return out, run_sweep(cfg, "N", [2, 4, 8], 2, out)


def copy_store(reference: tuple[Path, xr.Dataset], out: Path) -> None:
    shutil.copytree(parts_dir(reference[0]), parts_dir(out))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sweep_killed_mid_run_resumes_to_the_uninterrupted_dataset(tmp_path, reference, workers):
    out = tmp_path / "s.nc"
    args = sweep_args(out, "--workers", workers)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not {"done", "running"} <= set(statuses(out).values()):
            assert proc.poll() is None, "the sweep ended before it could be killed mid-run"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its pool workers
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    at_kill = statuses(out)
    assert "running" in at_kill.values() and not out.exists()
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    n_done = sum(s == "done" for s in at_kill.values())
    assert r.stderr.count("already done, skipped") == n_done
    assert r.stderr.count(": ok (") == 6 - n_done
    xr.testing.assert_identical(content(load(out)), content(reference[1]))
    assert set(statuses(out).values()) == {"done"}
    assert temporaries(tmp_path) == []


def test_corrupt_parts_are_named_and_redone(tmp_path, reference):
    """One part truncated to half its bytes, another with 4 KiB zeroed in the middle, and a temporary file that a
    killed save left: both parts are named in a warning and retrained, the temporary file is removed."""
    out = tmp_path / "s.nc"
    copy_store(reference, out)
    truncated, zeroed = parts_dir(out) / "N4-seed1.nc", parts_dir(out) / "N8-seed0.nc"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    data = bytearray(zeroed.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)
    zeroed.write_bytes(bytes(data))
    (parts_dir(out) / ".tmp-killedsave.nc").write_bytes(b"half a file")
    r = cli(*sweep_args(out, "--workers", "1"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "N4-seed1.nc" in warnings[0] and "N8-seed0.nc" in warnings[1], r.stderr
    assert r.stderr.count("already done, skipped") == 4
    assert "N=4 seed=1: ok (" in r.stderr and "N=8 seed=0: ok (" in r.stderr
    # retrained in the seed groups recorded in the manifest: the uninterrupted sweep, bit for bit
    xr.testing.assert_identical(content(load(out)), content(reference[1]))
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize(
    "change,setting",
    [(["--steps", str(STEPS + 1)], "steps"), (["--param", "mup-sqrt"], "param.name")],
    ids=["--steps", "--param"],
)
def test_a_changed_setting_is_refused_before_any_work(tmp_path, reference, change, setting):
    out = tmp_path / "s.nc"
    copy_store(reference, out)
    before = {p.name: p.read_bytes() for p in parts_dir(out).iterdir()}
    args = sweep_args(out, "--workers", "1")
    if change[0] == "--steps":
        args[args.index("--steps") + 1] = change[1]
    else:
        args += change
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --out") and setting in lines[0], r.stderr
    old, new = (str(STEPS), str(STEPS + 1)) if setting == "steps" else ('"mup"', '"mup-sqrt"')
    assert f"{old} -> {new}" in lines[0]
    assert f"{setting} ({change[0]})" in lines[0]  # the flag, from the option table
    assert {p.name: p.read_bytes() for p in parts_dir(out).iterdir()} == before  # nothing trained or written
    assert not out.exists()


def test_more_values_train_only_the_new_points(tmp_path, reference):
    out = tmp_path / "s.nc"
    copy_store(reference, out)
    args = sweep_args(out, "--workers", "1")
    args[args.index("--values") + 1] = "2,4,8,16"
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("already done, skipped") == 6
    trained = [line for line in r.stderr.splitlines() if ": ok (" in line]
    assert [line.split(":")[0] for line in trained] == ["N=16 seed=0", "N=16 seed=1"]
    ds = load(out)
    assert list(ds.N.values) == [2, 4, 8, 16]
    xr.testing.assert_identical(
        content(ds.sel(N=[2, 4, 8])).drop_vars("config_json"), content(reference[1]).drop_vars("config_json")
    )
    manifest = json.loads((parts_dir(out) / MANIFEST).read_text())
    assert manifest["values"] == [2, 4, 8, 16] and manifest["seeds"] == [0, 1]


def test_a_failing_point_is_marked_failed_and_the_others_go_on(tmp_path, monkeypatch):
    """A unit whose worker raises: its points are failed with the message, the other units finish, nothing is
    merged; the same sweep again redoes only the failed points."""
    import probes.grid.sweep as sweep

    real = sweep.train_group

    def flaky(cfg, seeds):
        if cfg.model.N == 4:
            raise RuntimeError("out of cheese\nsecond line")
        return real(cfg, seeds)

    cfg = make_run_config(model={"H": 2, "L": 1, "task": "vision"})
    out = tmp_path / "f.nc"
    said: list[str] = []
    monkeypatch.setattr(sweep, "train_group", flaky)
    with pytest.raises(SweepFailed, match="2 of 6 points failed"):
        run_sweep(cfg, "N", [2, 4, 8], 2, out, init_only=True, on_point=said.append)
    assert statuses(out) == {
        "N2-seed0": "done",
        "N2-seed1": "done",
        "N4-seed0": "failed",
        "N4-seed1": "failed",
        "N8-seed0": "done",
        "N8-seed1": "done",
    }
    point = json.loads((parts_dir(out) / MANIFEST).read_text())["points"]["N4-seed0"]
    assert point["message"] == "RuntimeError: out of cheese" and "Traceback" in point["detail"]
    assert "N=4 seed=0: failed: RuntimeError: out of cheese" in said
    assert not out.exists()
    monkeypatch.setattr(sweep, "train_group", real)
    said.clear()
    ds = run_sweep(cfg, "N", [2, 4, 8], 2, out, init_only=True, on_point=said.append)
    assert sum("already done" in m for m in said) == 4 and sum(": ok (" in m for m in said) == 2
    assert ds.sizes["N"] == 3 and set(statuses(out).values()) == {"done"}


# ---- seed-to-seed variances of the merged sweep (probes.experiment.dataset.seed_variances) ---------------------------------


def seed_var_by_hand(a, seed_axis: int = 1):
    """numpy: variance over seeds (ddof 1) of the finite values, NaN below 2 finite seeds."""
    import warnings

    import numpy as np

    a = np.where(np.isfinite(a), a, np.nan)
    n = np.isfinite(a).sum(seed_axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fewer than 2 finite seeds
        v = np.nanvar(a, axis=seed_axis, ddof=1)
    return np.where(n >= 2, v, np.nan)


def test_seed_variances_of_a_real_sweep_and_its_extension(tmp_path):
    """output_seed_var / loss_seed_var equal numpy on the merged probe_outputs / heldout_loss; extending the sweep
    by a seed recomputes them from all parts; the saved file's checksums verify."""
    import numpy as np

    cfg = make_run_config(
        model={"H": 2, "L": 1, "task": "vision", "axis": "N"},
        run={"steps": 4, "batch_size": 8},
        probes={"every": 2, "n_samples": 4, "n_points": 2},
    )
    out = tmp_path / "v.nc"
    two = run_sweep(cfg, "N", [2, 4, 8], 2, out)
    three = run_sweep(cfg, "N", [2, 4, 8], 3, out)  # extends the store by seed 2
    for ds, seeds in ((two, 2), (three, 3)):
        assert ds.sizes["seed"] == seeds
        assert ds.output_seed_var.dims == ("N", "step") and ds.loss_seed_var.dims == ("N", "step")
        assert ds.output_seed_var.attrs["units"] == "1" and ds.loss_seed_var.attrs["units"] == "nats^2"
        outputs = ds.probe_outputs.transpose("N", "seed", "step", "sample", "output").values
        want = seed_var_by_hand(outputs).mean(axis=(-2, -1))  # (N, step)
        np.testing.assert_allclose(ds.output_seed_var.values, want, rtol=1e-10, atol=0)
        np.testing.assert_allclose(
            ds.loss_seed_var.values,
            seed_var_by_hand(ds.heldout_loss.transpose("N", "seed", "step").values),
            rtol=1e-10,
            atol=0,
        )
        assert (ds.output_seed_var.isel(step=0) == 0).all()  # centred outputs start at 0 for every seed
        assert (ds.output_seed_var.isel(step=-1) > 0).all() and (ds.loss_seed_var.isel(step=-1) > 0).all()
    assert not np.allclose(two.output_seed_var.values, three.output_seed_var.values)  # recomputed, not kept
    back = load(out)  # checksums verify
    xr.testing.assert_identical(back.output_seed_var, three.output_seed_var)
    xr.testing.assert_identical(back.loss_seed_var, three.loss_seed_var)


def test_seed_variances_leave_diverged_seeds_out(tmp_path, monkeypatch):
    """Real runs, one of three seeds diverging at N=4 and two at N=8, merged as a sweep merges them: each
    (N, step) uses the seeds still finite there, and is NaN where fewer than 2 are. The divergence is built, not
    found at a measured edge: every run trains at eta0 = 1e-2, and the test hook DMFT_PROBE_INJECT_NONFINITE
    (probes.experiment.faults) turns the training loss of step 5 of the diverging seeds NaN. Margin, measured on an AMD EPYC
    with this config (eta0 in decades): SP + SGD first diverges on its own at 1e3 (N=8) and 1e5 (N=4), 5 orders
    of magnitude above 1e-2."""
    import numpy as np

    from probes.experiment.dataset import combine_runs, run_dataset, seed_variances
    from probes.experiment.faults import ENV
    from probes.experiment.run import train

    def point(N: int, seed: int, eta0: float):
        cfg = make_run_config(
            model={"N": N, "H": 2, "L": 1, "task": "vision"},
            param={"preset": "sp"},
            optim={"name": "sgd", "eta0": eta0},
            run={"steps": 10, "batch_size": 8, "heldout_batch": 16, "seed": seed},
            probes={"every": 2, "n_samples": 4, "n_points": 2},
        )
        return run_dataset(train(cfg))

    AT = 5  # not a log step (every 2): found at log step 6
    monkeypatch.setenv(ENV, f"N=4,seed=2@{AT};N=8,seed=1@{AT};N=8,seed=2@{AT}")
    merged = combine_runs([combine_runs([point(N, s, 1e-2) for s in range(3)], "seed") for N in (4, 8)], "N")
    assert merged.status.values.tolist() == [[0, 0, 1], [0, 1, 1]]
    assert merged.diverged_at.values.tolist() == [[-1, -1, AT], [-1, AT, AT]]
    at = int(merged.diverged_at.sel(N=4, seed=2))
    merged = merged.copy(deep=True)
    merged["probe_outputs"].loc[dict(N=4, seed=0, step=0, sample=0, output=0)] = np.inf  # inf counts as missing
    sv = seed_variances(merged, "N")
    outputs = merged.probe_outputs.transpose("N", "seed", "step", "sample", "output").values
    np.testing.assert_allclose(sv.output_seed_var.values, seed_var_by_hand(outputs).mean(axis=(-2, -1)), rtol=1e-10)
    losses = merged.heldout_loss.transpose("N", "seed", "step").values
    np.testing.assert_allclose(sv.loss_seed_var.values, seed_var_by_hand(losses), rtol=1e-10)
    late = merged.step.values >= at
    assert late.any() and (~late).any()
    # N=4 after the divergence: the two finite seeds only; before it: all three
    np.testing.assert_allclose(
        sv.loss_seed_var.sel(N=4).values[late], np.var(losses[0, :2][:, late], axis=0, ddof=1), rtol=1e-12
    )
    np.testing.assert_allclose(
        sv.loss_seed_var.sel(N=4).values[~late], np.var(losses[0][:, ~late], axis=0, ddof=1), rtol=1e-12
    )
    assert np.isfinite(sv.output_seed_var.sel(N=4)).all()
    # N=8 after the divergence: one finite seed, no variance
    assert np.isnan(sv.loss_seed_var.sel(N=8).values[late]).all()
    assert np.isnan(sv.output_seed_var.sel(N=8).values[late]).all()
    assert np.isfinite(sv.loss_seed_var.sel(N=8).values[~late]).all()
    assert not seed_variances(merged.isel(seed=[0]), "N").data_vars  # one seed: nothing


def test_in_process_parts_are_taken_as_written_and_equal_to_reading_them_back(tmp_path, reference, monkeypatch):
    """An in-process worker hands the store the dataset it saved (`PointResult.written`), so the store does not
    read each part back; the merged dataset must be the one of a sweep whose store reads every part (a result that
    crossed a process boundary: pickling drops `written`), and a part changed on disk after its write is read, not
    taken as written."""
    import pickle

    from probes.grid import store as store_mod
    from probes.grid import sweep as sweep_mod

    reads: list[Path] = []
    real_load = store_mod.load
    monkeypatch.setattr(store_mod, "load", lambda p: reads.append(Path(p)) or real_load(p))
    cfg = make_run_config(model={"H": 2, "L": 1, "task": "vision", "axis": "N"}, run={"steps": STEPS})
    held = run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "held.nc")
    assert reads == []  # every part taken as written: none read back while recording
    xr.testing.assert_identical(content(held), content(reference[1]))

    real_run_unit = sweep_mod.run_unit

    def across_processes(unit):  # what a pool or Ray worker's results look like when they arrive
        results = [pickle.loads(pickle.dumps(r)) for r in real_run_unit(unit)]
        assert all(r.written is None for r in results)
        return results

    monkeypatch.setattr(sweep_mod, "run_unit", across_processes)
    read_back = run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "read.nc")
    assert len(reads) == 6  # every part read back
    xr.testing.assert_identical(content(read_back), content(held))
    xr.testing.assert_identical(content(load(tmp_path / "read.nc")), content(load(tmp_path / "held.nc")))

    # a part whose bytes changed after the worker wrote them is read (and here refused), not taken as written
    monkeypatch.setattr(sweep_mod, "run_unit", real_run_unit)
    out = tmp_path / "changed.nc"

    def tamper(unit):
        results = real_run_unit(unit)
        for p in unit.parts:
            if p:
                Path(p).write_bytes(b"not a dataset")
        return results

    monkeypatch.setattr(sweep_mod, "run_unit", tamper)
    reads.clear()
    with pytest.raises(SweepFailed):
        run_sweep(cfg, "N", [2, 4, 8], 2, out)
    assert len(reads) == 6 and set(statuses(out).values()) == {"failed"}
