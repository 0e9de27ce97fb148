"""No code runs from a data or dataset file (issue 18, "Security").

A CIFAR-10 python batch is a pickle, and a pickle names the functions that rebuild it: a crafted `data_batch_1`
whose `__reduce__` returns `(os.system, ("touch MARKER",))` runs that command under plain `pickle.load`. Each
payload here writes a marker file in the test's own folder; every test asserts the marker was NOT created and
that the command refused the file with one line naming --data (or the config key), exit 2, before any output.
The same for a CIFAR-5M .npz holding a pickled object array and a .zarr store whose codec is numcodecs' pickle.
Real-format CIFAR-10 batches (as Python 2's cPickle wrote them, and at protocols 2 and 5 from Python 3) still load
through the restricted unpickler and give the same arrays as plain pickle."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from probes.experiment.data import DataError, load_task, read_cifar_batch
from probes.experiment.dataset import DatasetError, load
from probes.experiment.zarr_check import UnsafeStore, check_zarr_store

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--task", "vision", "--N", "2", "--H", "2", "--L", "1", "--batch-size", "2", "--probe-samples", "2"]
PLAIN = "only numpy arrays of numbers, dicts, lists, str, bytes and int are loaded"


# ------------------------------------------------------------------------------------------------ payloads


class Payload:
    """Pickles as a call of `func(*args)`: what an attacker's `__reduce__` returns."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    """Each creates `marker` when unpickled by plain pickle (the gadgets a pickle can name)."""
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, f"touch {shlex.quote(str(marker))}"),
        "builtins.exec": Payload(builtins.exec, touch),
        "builtins.eval": Payload(builtins.eval, touch),
        "subprocess.call": Payload(subprocess.call, ["touch", str(marker)]),
        "numpy runstring": Payload(
            __import__("numpy.testing._private.utils", fromlist=["runstring"]).runstring, touch, {}
        ),
    }


def batch(n: int, seed: int) -> dict:
    """A real-format CIFAR-10 batch of n images (keys and strings as Python 2 bytes)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"training batch {seed} of 5".encode(),
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"x_%d.png" % i for i in range(n)],
    }


def write_folder(folder: Path, train, test, protocol: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data_batch_1").write_bytes(pickle.dumps(train, protocol=protocol))
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=protocol))
    return folder


def evil_folder(tmp: Path, marker: Path, gadget: str = "os.system", where: str = "top", protocol: int = 2) -> Path:
    """A CIFAR-10 folder whose batches carry the payload: as the whole pickle ("top") or inside a real batch."""
    p = payloads(marker)[gadget]
    good = batch(4, 0)
    obj = p if where == "top" else {**good, b"labels": [p, *good[b"labels"][1:]]}
    return write_folder(tmp / "cifar", obj, obj, protocol)


def assert_refused(args: list, names: list[str], tmp: Path, marker: Path) -> str:
    """Exit 2, one stderr line naming each of `names`, nothing on stdout, no output of any kind, payload not run."""
    code, stdout, stderr = invoke(args, cwd=tmp)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr)
    assert all(n in lines[0] for n in names), (names, lines[0])
    assert stdout == "" and "Traceback" not in stderr
    assert not marker.exists(), "the payload ran"
    assert not (tmp / "runs").exists() and not list(tmp.rglob("*.parts")) and not list(tmp.rglob("*.nc"))
    return lines[0]


# ------------------------------------------------------------------------------------------------ CIFAR-10 pickles


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize(
    "gadget", ["os.system", "builtins.exec", "builtins.eval", "subprocess.call", "numpy runstring"]
)
def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, gadget, where, protocol):
    marker = tmp_path / "MARKER"
    folder = evil_folder(tmp_path, marker, gadget, where, protocol)
    with pytest.raises(DataError) as e:
        load_task("vision", str(folder))
    assert not marker.exists(), "the payload ran"
    msg = str(e.value)
    assert str(folder / "data_batch_1") in msg and "not a CIFAR-10 python batch (refused pickle global" in msg
    assert PLAIN in msg and "\n" not in msg
    # the proof that the payload is live: plain pickle runs it (a file in this test's folder, nothing else)
    pickle.loads((folder / "data_batch_1").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    "obj,what",
    [
        ({b"data": np.array([1, "x"], dtype=object)}, "an array of dtype object"),
        ({b"data": (1, 2)}, "a tuple"),
        ({b"data": 1.5}, "a float"),
        ({b"data": {3: b"x"}}, "a dict key of type int"),
        ({b"data": np.zeros(3, dtype=[("a", "u1"), ("b", "f4")])}, "an array of dtype"),
        ([1, 2], "a top-level list"),
    ],
)
def test_anything_but_plain_data_is_refused(tmp_path, obj, what):
    path = tmp_path / "data_batch_1"
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        with pytest.raises(DataError, match=f"refused {what}"):
            read_cifar_batch(path)


def test_many_references_to_one_list_are_checked_once(tmp_path):
    deep: list = [1]
    for _ in range(60):  # 2^60 paths through the references, 61 lists
        deep = [deep, deep]
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": deep}, protocol=2))
    assert read_cifar_batch(path)["data"] is not None


class _Py2Pickler(pickle._Pickler):
    """What Python 2's cPickle wrote at protocol 2 (the real CIFAR-10 files): strings and bytes as py2 `str`
    (BINSTRING, bytes when read with encoding="bytes"), numpy under `numpy.core`, dtype flags as ints 0 and 1."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _py2_str(self, b: bytes) -> None:
        self.write(
            (
                pickle.SHORT_BINSTRING + bytes([len(b)])
                if len(b) < 256
                else pickle.BINSTRING + len(b).to_bytes(4, "little")
            )
            + b
        )

    dispatch[bytes] = lambda self, b: self._py2_str(b)
    dispatch[str] = lambda self, s: self._py2_str(s.encode("latin-1"))

    def reducer_override(self, obj):
        if isinstance(obj, np.dtype):
            func, (spec, align, copy), state = obj.__reduce__()
            return func, (spec, int(align), int(copy)), state
        return NotImplemented


def py2_pickle(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and b"U\x04data" in data  # py2 str keys
    return data


@pytest.mark.parametrize("flavour", ["python2", "protocol2", "newest"])
def test_real_format_batches_load_as_plain_pickle_loads_them(tmp_path, flavour):
    dump = {
        "python2": py2_pickle,
        "protocol2": lambda o: pickle.dumps(o, protocol=2),
        "newest": lambda o: pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL),
    }[flavour]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {"data_batch_1": batch(20, 1), "data_batch_2": batch(20, 2), "test_batch": batch(20, 3)}
    for name, b in batches.items():
        (folder / name).write_bytes(dump(b))
    for name, b in batches.items():
        mine = read_cifar_batch(folder / name)
        plain = pickle.loads((folder / name).read_bytes(), encoding="bytes")
        assert sorted(mine) == ["batch_label", "data", "filenames", "labels"]
        for key, value in plain.items():
            got = mine[key.decode()]
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype == np.uint8 and np.array_equal(got, value) and got.shape == (20, 3072)
            else:
                assert got == value
        assert np.array_equal(mine["data"], b[b"data"]) and mine["labels"] == b[b"labels"]
    task = load_task("vision", str(folder))
    assert len(task.train) == 40 and len(task.heldout) == 20 and task.description.startswith("CIFAR-10")


# ------------------------------------------------------------------------------------------------ the commands


def test_run_refuses_the_payload_before_any_work(tmp_path):
    marker = tmp_path / "MARKER"
    folder = evil_folder(tmp_path, marker)
    line = assert_refused(
        ["run", *TINY, "--steps", "1", "--no-progress", "--data", folder, "--out", tmp_path / "r.nc"],
        ["--data", "data_batch_1", "refused pickle global posix.system", PLAIN],
        tmp_path,
        marker,
    )
    assert line.startswith("error: --data: ")


def test_run_in_a_subprocess_refuses_the_payload(tmp_path):
    marker = tmp_path / "MARKER"
    folder = evil_folder(tmp_path, marker, "subprocess.call", "nested")
    r = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "run", *TINY, "--steps", "1", "--no-progress", "--data", str(folder)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and r.stdout == "", r.stderr
    assert lines[0].startswith("error: --data: ") and "refused pickle global commands.call" in lines[0]  # py2 name
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_sweep_with_the_path_in_its_config_refuses_the_payload(tmp_path):
    marker = tmp_path / "MARKER"
    folder = evil_folder(tmp_path, marker, "builtins.exec")
    (tmp_path / "cfg.toml").write_text(f'[model]\ntask = "vision"\n[run]\ndata_path = {json.dumps(str(folder))}\n')
    assert_refused(
        [
            "sweep",
            "--H",
            "2",
            "--L",
            "1",
            "--values",
            "2,4,8",
            "--seeds",
            "1",
            "--steps",
            "1",
            "--workers",
            "1",
            "--config",
            tmp_path / "cfg.toml",
            "--out",
            tmp_path / "s.nc",
        ],
        ["[run] data_path in", "cfg.toml", "refused pickle global __builtin__.exec"],
        tmp_path,
        marker,
    )


def test_coord_with_two_workers_refuses_the_payload_in_the_main_process(tmp_path):
    marker = tmp_path / "MARKER"
    folder = evil_folder(tmp_path, marker)
    assert_refused(
        [
            "coord",
            *TINY,
            "--values",
            "2,4,8",
            "--seeds",
            "1",
            "--steps",
            "0,1",
            "--workers",
            "2",
            "--data",
            folder,
            "--out",
            tmp_path / "c.nc",
        ],
        ["--data", "refused pickle global"],
        tmp_path,
        marker,
    )


# ------------------------------------------------------------------------------------------------ CIFAR-5M .npz


def test_an_npz_with_a_pickled_object_array_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "cifar5m_part0.npz"
    labels = np.empty(50, dtype=object)
    labels[:] = [payloads(marker)["os.system"]] * 50
    np.savez(path, X=np.zeros((50, 32, 32, 3), np.uint8), Y=labels)  # numpy pickles the object array
    with pytest.raises(DataError, match="'Y' holds pickled Python objects; refused"):
        load_task("vision", str(path))
    assert not marker.exists()
    assert_refused(
        ["run", *TINY, "--steps", "1", "--no-progress", "--data", path, "--out", tmp_path / "r.nc"],
        ["--data", "cifar5m_part0.npz", "pickled Python objects"],
        tmp_path,
        marker,
    )


# ------------------------------------------------------------------------------------------------ zarr datasets


def pickle_zarr(path: Path, marker: Path, codec: str = "compressor") -> Path:
    """A zarr v2 store (consolidated, as xarray opens it) whose one array decodes its chunk with numcodecs' pickle,
    the chunk carrying the os.system payload (as a compressor after vlen-utf8, zarr 3.1 unpickles it)."""
    array = {
        "shape": [1],
        "chunks": [1],
        "dtype": "|O",
        "fill_value": None,
        "order": "C",
        "zarr_format": 2,
        "dimension_separator": ".",
        "filters": [{"id": "vlen-utf8"}],
        "compressor": None,
    }
    if codec == "compressor":
        array["compressor"] = {"id": "pickle", "protocol": 5}
    else:  # what numcodecs' Pickle object codec writes (zarr 2)
        array["filters"] = [{"id": "pickle", "protocol": 5}]
    attrs = {"_ARRAY_DIMENSIONS": ["x"]}
    (path / "a").mkdir(parents=True)
    (path / "a" / "0").write_bytes(pickle.dumps(payloads(marker)["os.system"]))
    for name, meta in ((".zgroup", {"zarr_format": 2}), (".zattrs", {}), ("a/.zarray", array), ("a/.zattrs", attrs)):
        (path / name).write_text(json.dumps(meta))
    (path / ".zmetadata").write_text(
        json.dumps(
            {
                "zarr_consolidated_format": 1,
                "metadata": {".zgroup": {"zarr_format": 2}, ".zattrs": {}, "a/.zarray": array, "a/.zattrs": attrs},
            }
        )
    )
    return path


@pytest.mark.parametrize("codec", ["compressor", "filter"])
def test_a_zarr_store_with_the_pickle_codec_is_refused_before_it_is_read(tmp_path, monkeypatch, codec):
    import numcodecs.pickles

    # numcodecs before 0.16 unpickled chunks unasked (pyproject allows zarr>=2.17 with them): do so here too
    monkeypatch.setattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True, raising=False)
    marker = tmp_path / "MARKER"
    store = pickle_zarr(tmp_path / "evil.zarr", marker, codec)
    with pytest.raises(DatasetError) as e:
        load(store)
    assert not marker.exists()
    assert str(store) in str(e.value) and "pickle" in str(e.value) and "compressors blosc" in str(e.value)
    for command in (["check", store], ["plot", store, "--out", tmp_path / "fig"]):
        assert_refused(command, [str(store), "refused", "pickle"], tmp_path, marker)


def test_the_pickle_zarr_refused_in_a_subprocess_that_allows_unpickling(tmp_path):
    marker = tmp_path / "MARKER"
    store = pickle_zarr(tmp_path / "evil.zarr", marker)
    env = {**os.environ, "NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE": "1"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "check", str(store)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and 'refused compressor "pickle"' in lines[0], r.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "meta,what",
    [
        ({"dtype": "<f8", "compressor": {"id": "pickle"}, "filters": None}, 'compressor "pickle"'),
        ({"dtype": "|O", "compressor": None, "filters": [{"id": "msgpack2"}]}, 'filter "msgpack2"'),
        ({"dtype": "<f8", "compressor": None, "filters": [{"id": "vlen-utf8"}]}, 'filter "vlen-utf8"'),
        ({"dtype": "|O", "compressor": None, "filters": [{"id": "vlen-utf8"}, {"id": "pickle"}]}, 'filter "vlen-utf8"'),
        ({"dtype": "|O", "compressor": None, "filters": [{"id": "vlen-bytes"}]}, 'filter "vlen-bytes"'),
        ({"dtype": "|O", "compressor": {"id": "pickle"}, "filters": [{"id": "vlen-utf8"}]}, 'compressor "pickle"'),
        ({"dtype": "|O", "compressor": None, "filters": None}, 'data type "|O"'),
        ({"dtype": [["a", "<f8"]], "compressor": None, "filters": None}, "data type"),
        ({"dtype": "<M8[ns]", "compressor": {"id": "zstd"}, "filters": None}, "data type"),
        ({"dtype": "<f8", "compressor": {"id": "someplugin"}, "filters": None}, 'compressor "someplugin"'),
    ],
)
def test_zarr_v2_metadata_outside_the_allow_list_is_refused(tmp_path, meta, what):
    (tmp_path / "s.zarr" / "a").mkdir(parents=True)
    (tmp_path / "s.zarr" / "a" / ".zarray").write_text(json.dumps({"shape": [1], "chunks": [1], **meta}))
    with pytest.raises(UnsafeStore, match="a/.zarray: refused " + what.replace("|", r"\|").replace("[", r"\[")):
        check_zarr_store(tmp_path / "s.zarr")


@pytest.mark.parametrize(
    "codecs,dtype,what",
    [
        ([{"name": "bytes"}, {"name": "numcodecs.pickle"}], "float64", 'codec "numcodecs.pickle"'),
        (
            [{"name": "sharding_indexed", "configuration": {"codecs": [{"name": "numcodecs.pickle"}]}}],
            "float64",
            'codec "numcodecs.pickle"',
        ),
        ([{"name": "vlen-utf8"}], "float64", 'codec "vlen-utf8"'),
        ([{"name": "vlen-utf8"}, {"name": "numcodecs.pickle"}], "string", 'codec "numcodecs.pickle"'),
        ([{"name": "bytes"}], "object", "data type"),
    ],
)
def test_zarr_v3_metadata_outside_the_allow_list_is_refused(tmp_path, codecs, dtype, what):
    (tmp_path / "s.zarr" / "a").mkdir(parents=True)
    node = {"zarr_format": 3, "node_type": "array", "data_type": dtype, "codecs": codecs}
    (tmp_path / "s.zarr" / "a" / "zarr.json").write_text(json.dumps(node))
    with pytest.raises(UnsafeStore, match="refused " + what):
        check_zarr_store(tmp_path / "s.zarr")
    group = {
        "zarr_format": 3,
        "node_type": "group",
        "consolidated_metadata": {"kind": "inline", "metadata": {"a": node}},
    }
    (tmp_path / "c.zarr").mkdir()
    (tmp_path / "c.zarr" / "zarr.json").write_text(json.dumps(group))
    with pytest.raises(UnsafeStore, match=r"zarr.json \(a\): refused " + what):
        check_zarr_store(tmp_path / "c.zarr")


def test_what_save_and_zarr_write_passes_the_check(tmp_path):
    """Our own .zarr (zarr v2, blosc, numbers, bool, fixed-width unicode and object strings as vlen-utf8) and the
    same dataset as zarr v3 (bytes, zstd, fixed_length_utf32, string) pass the check and load."""
    import xarray as xr

    from probes.experiment.dataset import save

    ds = xr.Dataset(
        {
            "f": ("x", np.arange(3.0)),
            "b": ("x", np.array([True, False, True])),
            "s": ("x", np.array(["a", "bc", "def"])),
            "y": ("x", np.array([b"a", b"b", b"c"])),
            "i": ("x", np.arange(3, dtype=np.int8)),
            "o": ("x", np.array(["p", "qr", "s"], dtype=object)),
        }
    )
    save(ds, tmp_path / "v2.zarr")
    check_zarr_store(tmp_path / "v2.zarr")
    ds.to_zarr(tmp_path / "v3.zarr", zarr_format=3, consolidated=True)
    check_zarr_store(tmp_path / "v3.zarr")
    for name in ("v2.zarr", "v3.zarr"):
        back = xr.open_zarr(tmp_path / name).load()
        assert all(np.array_equal(back[v].values.astype(ds[v].dtype), ds[v].values) for v in ds)
    assert json.loads((tmp_path / "v2.zarr" / "o" / ".zarray").read_text())["filters"] == [{"id": "vlen-utf8"}]
