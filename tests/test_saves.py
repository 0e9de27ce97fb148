"""Saving and loading datasets safely: nothing overwritten silently, failed saves exit 2 and leave no temporary
file, stale temporaries of killed saves are removed, corruption is detected (per-variable checksums), and
paths of the wrong kind (a FIFO, a file where a .zarr folder goes) are refused before any work.

Real files in tmp_path; the only injected fault is ENOSPC at the one os.write that puts netCDF bytes on disk.
A real write failure is also produced without mocks, through the file-size limit (RLIMIT_FSIZE: EFBIG), and
through a tiny tmpfs when this machine lets the tests mount one."""

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import probes.experiment.dataset as dsmod
from probes.experiment.dataset import DatasetError, cleanup_stale_temps, combine_runs, load, run_dataset, save
from probes.experiment.out_paths import prepare_out_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--steps", "2", "--N", "2", "--H", "2", "--L", "1", "--seq-len", "8", "--no-progress")
HEADER = " steps on "  # the line `run` prints just before training starts


def cli(*args: str, cwd: Path = ROOT, pre: str = "", **kw) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; `pre` is Python run first in that process (the ENOSPC injection)."""
    argv = [sys.executable, str(ROOT / "cli.py"), *args]
    if pre:
        code = (
            f"import sys, runpy\nsys.path.insert(0, {str(ROOT)!r})\n{pre}\n"
            f"sys.argv = [{str(ROOT / 'cli.py')!r}, *{list(args)!r}]\n"
            f"runpy.run_path({str(ROOT / 'cli.py')!r}, run_name='__main__')"
        )
        argv = [sys.executable, "-c", code]
    return subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in r.stderr, r.stderr
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@pytest.fixture(scope="module")
def run_ds():
    """A small real run dataset (2 steps, probes on)."""
    from tests.test_probes import tiny

    return run_dataset(tiny(steps=2))


# ---- nothing overwritten silently -----------------------------------------------------------------------------


def test_existing_out_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "run.nc"
    r = cli("run", *TINY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    before = out.read_bytes()
    t0 = time.perf_counter()
    r = cli("run", *TINY, "--out", str(out))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--out" in lines[0] and "--overwrite" in lines[0], r.stderr
    assert HEADER not in r.stderr  # refused before training
    assert out.read_bytes() == before
    r = cli("run", *TINY, "--seed", "1", "--out", str(out), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() != before and int(load(out).seed) == 1
    assert temps(tmp_path) == []
    print(f"refusal took {time.perf_counter() - t0:.1f} s")


@pytest.mark.parametrize("command", ["sweep", "coord"])
def test_sweep_and_coord_refuse_an_existing_out_without_parts(tmp_path, command):
    out = tmp_path / "m.nc"
    out.write_bytes(b"an older result")
    args = (command, "--values", "2,4,8", "--seeds", "1", "--N", "2", "--L", "1", "--out", str(out))
    r = cli(*args)
    assert r.returncode == 2 and len(error_lines(r)) == 1, r.stderr
    assert "--out" in error_lines(r)[0] and "--overwrite" in error_lines(r)[0]
    assert out.read_bytes() == b"an older result" and not (tmp_path / "m.nc.parts").exists()


def test_prepare_out_path_rules(tmp_path):
    out = tmp_path / "a.nc"
    assert prepare_out_path(out) == out  # absent: fine
    out.write_text("x")
    with pytest.raises(ValueError, match="--out.*exists.*--overwrite"):
        prepare_out_path(out)
    assert prepare_out_path(out, overwrite=True) == out
    assert prepare_out_path(out, resuming=True) == out  # a sweep rewrites it from its parts
    assert prepare_out_path(tmp_path / "new" / "deeper" / "b.nc").parent.is_dir()  # missing parents are made
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="--out.*afile.*not a folder"):
        prepare_out_path(tmp_path / "afile" / "c.nc")


# ---- the wrong kind of path, refused before any work ---------------------------------------------------------


def test_zarr_out_that_is_a_file_is_refused_before_training(tmp_path):
    out = tmp_path / "x.zarr"
    out.write_text("a regular file")
    r = cli("run", *TINY, "--out", str(out), "--overwrite")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--out" in lines[0] and "x.zarr is a file" in lines[0] and "folder" in lines[0], r.stderr
    assert HEADER not in r.stderr  # refused before training
    with pytest.raises(ValueError, match="--out.*x.zarr is a file; a .zarr output is a folder"):
        prepare_out_path(out)  # the kind is named, not only "exists"
    assert out.read_text() == "a regular file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]  # no temporary folder


def test_wrong_kinds_of_out_path(tmp_path):
    (tmp_path / "d.nc").mkdir()
    with pytest.raises(ValueError, match="--out.*d.nc is a folder"):
        prepare_out_path(tmp_path / "d.nc", overwrite=True)
    fifo = tmp_path / "f.nc"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="--out.*FIFO"):
        prepare_out_path(fifo, overwrite=True)
    with pytest.raises(DatasetError, match="f.nc.*cannot write"):  # save refuses it too, without blocking
        save(xr.Dataset({"a": ("x", [1.0])}), fifo)
    (tmp_path / "z.zarr").write_text("x")
    with pytest.raises(DatasetError, match="z.zarr.*not a folder"):
        save(xr.Dataset({"a": ("x", [1.0])}), tmp_path / "z.zarr")
    assert temps(tmp_path) == []


# ---- failed saves: exit 2, one line, no temporary file --------------------------------------------------------


def full_disk_write():
    """An os.write for probes.experiment.dataset._os_write: the first call writes half its bytes, the next raises ENOSPC."""
    calls = []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, bytes(data[: max(1, len(data) // 2)]))

    write.calls = calls
    return write


def test_disk_full_during_save_raises_and_leaves_no_temp(tmp_path, run_ds, monkeypatch):
    out = save(run_ds, tmp_path / "run.nc")
    before = out.read_bytes()
    write = full_disk_write()
    monkeypatch.setattr(dsmod, "_os_write", write)
    with pytest.raises(DatasetError, match=r"run.nc: cannot write: No space left on device"):
        save(run_ds, out)
    assert len(write.calls) == 2  # it failed mid-write
    assert out.read_bytes() == before  # the old dataset is intact
    assert temps(tmp_path) == []


def test_disk_full_in_the_cli_exits_2_with_one_line(tmp_path):
    out = tmp_path / "run.nc"
    r = cli(
        "run",
        *TINY,
        "--out",
        str(out),
        pre="import tests.test_saves as t, probes.experiment.dataset as d; d._os_write = t.full_disk_write()",
    )
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = error_lines(r)
    assert len(lines) == 1 and lines[0].endswith("run.nc: cannot write: No space left on device"), r.stderr
    assert list(tmp_path.iterdir()) == []


def _fsize_limit(limit: int):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def test_a_real_write_failure_exits_2_without_a_crash(tmp_path):
    """No mocks: the file-size limit makes the kernel refuse the write (EFBIG), as a full disk would. Before
    the fix this path printed the error and then died with SIGSEGV (exit 139) at interpreter exit."""
    out = tmp_path / "run.nc"
    r = cli(
        "run",
        *TINY,
        "--out",
        str(out),
        preexec_fn=_fsize_limit(16 * 1024),
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = error_lines(r)
    assert len(lines) == 1 and "run.nc: cannot write: File too large" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=False, capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def test_a_really_full_disk_exits_2_without_a_crash(tiny_tmpfs):
    (tiny_tmpfs / "filler").write_bytes(b"\0" * (256 - 24) * 1024)  # leave about 24 KiB
    r = cli("run", *TINY, "--out", str(tiny_tmpfs / "run.nc"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = error_lines(r)
    assert len(lines) == 1 and "run.nc: cannot write: No space left on device" in lines[0], r.stderr
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["filler"]


def test_failed_zarr_save_removes_its_temporary_folder(tmp_path, run_ds):
    bad = run_ds.copy()
    bad.attrs["not_serialisable"] = object()  # zarr refuses it after the folder exists
    with pytest.raises(DatasetError, match="x.zarr: cannot write"):
        save(bad, tmp_path / "x.zarr")
    assert list(tmp_path.iterdir()) == []
    save(run_ds, tmp_path / "x.zarr")  # a good one; then replace it
    save(run_ds.assign_attrs(title="second"), tmp_path / "x.zarr")
    assert load(tmp_path / "x.zarr").attrs["title"] == "second"
    with pytest.raises(DatasetError):
        save(bad, tmp_path / "x.zarr")
    assert load(tmp_path / "x.zarr").attrs["title"] == "second"  # a failed replace keeps the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]


# ---- stale temporaries of killed saves ------------------------------------------------------------------------


def test_stale_temps_are_removed_and_fresh_ones_kept(tmp_path):
    old = time.time() - 3600
    stale_nc = tmp_path / ".tmp-k1ll3d00.nc"
    stale_nc.write_bytes(b"")  # what SIGKILL during a save leaves
    stale_zarr = tmp_path / ".tmp-k1ll3d01.zarr"
    (stale_zarr / "a").mkdir(parents=True)
    (stale_zarr / "a" / "0").write_bytes(b"x")
    for p in (stale_zarr / "a" / "0", stale_zarr / "a", stale_zarr, stale_nc):
        os.utime(p, (old, old))
    fresh = tmp_path / ".tmp-inflight.nc"  # another worker's save, in flight
    fresh.write_bytes(b"partial")
    others = [tmp_path / "run.nc", tmp_path / ".tmp-notes.txt", tmp_path / "tmp-x.nc", tmp_path / ".tmp-.nc"]
    for p in others:
        p.write_text("keep")
        os.utime(p, (old, old))
    prepare_out_path(tmp_path / "out.nc")
    assert not stale_nc.exists() and not stale_zarr.exists()
    assert fresh.exists() and all(p.exists() for p in others)
    assert cleanup_stale_temps(tmp_path, max_age_s=0) == [fresh]
    assert cleanup_stale_temps(tmp_path / "absent") == []
    stale_nc.write_bytes(b"")
    os.utime(stale_nc, (old, old))
    save(xr.Dataset({"a": ("x", [1.0])}), tmp_path / "next.nc")  # the next save in the folder, too
    assert not stale_nc.exists() and temps(tmp_path) == [".tmp-.nc", ".tmp-notes.txt"]  # decoys kept


# ---- corruption is detected ------------------------------------------------------------------------------------


def test_zeroed_middle_of_a_file_fails_load(tmp_path, run_ds):
    out = save(run_ds, tmp_path / "run.nc")
    size = out.stat().st_size
    with open(out, "r+b") as f:
        f.seek(size // 2 - 2048)
        f.write(b"\0" * 4096)
    with pytest.raises(DatasetError, match="run.nc"):
        load(out)


def test_checksum_catches_changed_data_that_hdf5_reads_fine(tmp_path, run_ds):
    out = save(run_ds, tmp_path / "run.nc")
    raw = out.read_bytes()
    values = np.ascontiguousarray(run_ds.kernel_pooled.values).tobytes()
    at = raw.find(values)
    assert at > 0 and raw.find(values, at + 1) < 0  # stored once, contiguous
    flipped = bytearray(raw)
    flipped[at + len(values) // 2] ^= 0x01  # one bit of one value
    out.write_bytes(bytes(flipped))
    with pytest.raises(DatasetError, match="run.nc: variable kernel_pooled is corrupt"):
        load(out)
    assert xr.open_dataset(out, engine="h5netcdf").kernel_pooled.shape == run_ds.kernel_pooled.shape


def test_truncated_file_fails_load(tmp_path, run_ds):
    out = save(run_ds, tmp_path / "run.nc")
    for keep in (out.stat().st_size - 1024, 512, 0):
        with open(out, "r+b") as f:
            f.truncate(keep)
        with pytest.raises(DatasetError, match="run.nc"):
            load(out)


def test_checksums_round_trip_and_old_files_still_load(tmp_path, run_ds):
    for name in ("run.nc", "run.zarr"):
        back = load(save(run_ds, tmp_path / name))
        assert not any("checksum" in v.attrs for v in back.variables.values())  # stripped in memory
    on_disk = xr.open_dataset(tmp_path / "run.nc", engine="h5netcdf")
    assert on_disk.heldout_loss.attrs["checksum"].startswith("crc32:")
    assert on_disk.site.attrs["checksum"].startswith("crc32:")  # coordinates too
    on_disk.close()
    run_ds.to_netcdf(tmp_path / "old.nc", engine="h5netcdf")  # written before checksums existed
    assert int(load(tmp_path / "old.nc").N) == int(run_ds.N)


def test_combined_runs_get_fresh_checksums(tmp_path, run_ds):
    a = load(save(run_ds, tmp_path / "a.nc"))
    b = load(save(run_ds.assign_coords(seed=1), tmp_path / "b.nc"))
    both = combine_runs([a, b], "seed")
    assert load(save(both, tmp_path / "both.nc")).sizes["seed"] == 2
    # datasets opened by hand still carry their checksums; a concat copies the first run's; save replaces them
    raw = [xr.open_dataset(tmp_path / n, engine="h5netcdf").load() for n in ("a.nc", "b.nc")]
    assert "checksum" in raw[0].heldout_loss.attrs
    assert load(save(combine_runs(raw, "seed"), tmp_path / "both2.nc")).sizes["seed"] == 2


def test_nan_payloads_and_strings_checksum_stably(tmp_path, run_ds):
    ds = run_ds.copy()
    neg_nan = np.frombuffer(np.uint64(0xFFF8000000000000).tobytes(), dtype=np.float64)[0]
    loss = ds.heldout_loss.values.copy()
    loss[0] = neg_nan
    ds["heldout_loss"] = ds.heldout_loss.copy(data=loss)
    ds["note"] = ((), "some text", {"long_name": "a string variable", "units": "1"})
    ds["names"] = (("name",), np.array(["a", "bc"], dtype=object), {"long_name": "object strings", "units": "1"})
    ds["raw"] = (("name",), np.array([b"a", b"bc"]), {"long_name": "byte strings", "units": "1"})
    for name in ("n.nc", "n.zarr"):
        back = load(save(ds, tmp_path / name))
        assert np.isnan(back.heldout_loss.values[0]) and str(back.note.values) == "some text"
        assert [str(v) for v in back.names.values] == ["a", "bc"]


# ---- load never blocks on a FIFO -------------------------------------------------------------------------------


def test_load_refuses_a_fifo_quickly(tmp_path):
    """In a subprocess with a timeout: opening a FIFO with h5py blocks forever (holding h5py's lock, so a
    thread could not be abandoned either)."""
    fifo = tmp_path / "pipe.nc"
    os.mkfifo(fifo)
    code = (
        "import sys, time; from probes.experiment.dataset import load, DatasetError\n"
        "t = time.perf_counter()\n"
        "try:\n    load(sys.argv[1])\nexcept DatasetError as e:\n"
        "    print(f'{time.perf_counter() - t:.3f}', e)"
    )
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, str(fifo)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("load() blocked on a FIFO")
    assert r.returncode == 0, r.stderr
    took, message = r.stdout.strip().split(" ", 1)
    assert float(took) < 1.0 and "pipe.nc: not a regular file" in message, r.stdout
    z = tmp_path / "f.zarr"
    z.write_text("x")
    with pytest.raises(DatasetError, match="f.zarr: not a folder"):
        load(z)


def test_a_combined_l_sweep_with_nan_padded_integer_coordinates_round_trips(tmp_path):
    """n_heads and d_ff are integers per run; combining L = 1 and L = 2 pads them with NaN. Saving must keep the
    NaN (not cast it to a garbage integer, which the checksum would then reject on load)."""
    from probes.experiment.config import make_run_config
    from probes.experiment.dataset import combine_runs, load, run_dataset, save
    from probes.experiment.run import train

    runs = [
        run_dataset(
            train(
                make_run_config(
                    model={"N": 2, "H": 2, "L": L, "task": "vision"},
                    run={"steps": 1, "batch_size": 2},
                    probes={"n_samples": 2, "every": 1},
                )
            )
        )
        for L in (1, 2)
    ]
    for ds in runs:  # as a sweep does: the parts come back from disk
        save(ds, tmp_path / f"L{int(ds.L)}.nc")
    merged = combine_runs([load(tmp_path / f"L{L}.nc") for L in (1, 2)], "L")
    save(merged, tmp_path / "m.nc")
    back = load(tmp_path / "m.nc")
    assert np.isnan(back.n_heads.sel(L=1).values[1]) and back.n_heads.sel(L=2).values.tolist() == [2, 2]


# ---- the one atomic writer (probes.experiment.atomic): datasets, store manifests and the command line's tables --


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path):
    from probes.experiment.atomic import TEMP_PREFIX, write_atomic

    path = tmp_path / "table.csv"
    path.write_text("old\n")

    def half_then_fail(tmp):
        tmp.write_text("new, but only ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    seen = []
    write_atomic(path, lambda tmp: (seen.append(tmp.name), tmp.write_text("new\n")))
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    assert seen[0].startswith(TEMP_PREFIX) and seen[0].endswith(".csv")  # next to it, a name cleanup knows
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
