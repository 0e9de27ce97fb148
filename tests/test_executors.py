"""Executors (probes.grid.executors): the local process pool runs every unit with at most `workers` in flight, reports a
unit that raises or whose worker dies and goes on; the options are checked up front (one line naming the option,
exit 2, also for --executor ray without ray); every Ray address is checked before anything is printed or written
(its form, `auto` resolved as Ray does, a TCP connection and a gRPC handshake, the Ray Client for ray://); a sweep
on Ray gives the dataset of the local executor, bit for bit."""

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import invoke

from probes.grid.executors import (
    RAY_MISSING,
    InProcess,
    LocalPool,
    RayTasks,
    UnitError,
    check_executor,
    check_reachable,
    default_workers,
    make_executor,
    ray_address_file,
)

ROOT = Path(__file__).resolve().parents[1]


def square_or_fail(unit):
    """A unit function for the pool: must be importable by name in a spawned worker."""
    if unit == "raise":
        raise KeyError("no such unit")
    if unit == "die":
        os._exit(3)  # the worker process dies
    return unit * unit


def run_all(executor, units):
    """Run units on executor; returns (events in order, results by unit, errors by unit, most units in flight)."""
    events, results, errors, flying = [], {}, {}, [0, 0]

    def on_start(unit):
        events.append(("start", unit))
        flying[0] += 1
        flying[1] = max(flying)

    def on_done(unit, result, error):
        events.append(("done", unit))
        flying[0] -= 1
        if error is None:
            results[unit] = result
        else:
            assert isinstance(error, UnitError)
            errors[unit] = error.line

    executor.run(square_or_fail, units, on_start, on_done)
    return events, results, errors, flying[1]


def test_the_local_pool_runs_every_job_and_reports_one_that_raises():
    events, results, errors, most = run_all(LocalPool(2, threads=None), [1, 2, "raise", 3, 4])
    assert results == {1: 1, 2: 4, 3: 9, 4: 16}
    assert errors == {"raise": "KeyError: 'no such unit'"}
    assert most == 2  # never more units handed out than workers
    for unit in (1, 2, "raise", 3, 4):
        assert events.index(("start", unit)) < events.index(("done", unit))


def test_a_dead_worker_fails_its_job_and_the_pool_goes_on():
    _, results, errors, _ = run_all(LocalPool(1, threads=None), [1, "die", 2])
    assert results == {1: 1, 2: 4}
    assert list(errors) == ["die"] and "worker process died" in errors["die"]


def test_in_process_runs_in_order():
    events, results, errors, most = run_all(InProcess(), [3, "raise", 2])
    assert [e for e in events if e[0] == "start"] == [("start", 3), ("start", "raise"), ("start", 2)]
    assert results == {3: 9, 2: 4} and most == 1 and "KeyError" in errors["raise"]


def test_make_executor_fills_the_machine_and_never_exceeds_the_jobs():
    assert isinstance(make_executor("local", 1, n_jobs=9), InProcess)
    assert isinstance(make_executor("local", 4, n_jobs=1), InProcess)
    pool = make_executor("local", 4, n_jobs=3)
    assert isinstance(pool, LocalPool) and (pool.workers, pool.threads) == (3, 1)
    auto = make_executor("local", None, n_jobs=1000)
    expected = default_workers(1)
    assert (isinstance(auto, InProcess) and expected == 1) or auto.workers == expected


BAD = [
    (dict(kind="slurm"), "--executor"),
    (dict(kind="local", workers=0), "--workers"),
    (dict(kind="local", ray_address="auto"), "--ray-address"),
    (dict(kind="local", ray_cpus=2), "--ray-cpus"),
    (dict(kind="local", gpus_per_task=0.5), "--gpus-per-task"),
    (dict(kind="ray", workers=2), "--workers"),
    (dict(kind="ray", ray_cpus=0), "--ray-cpus"),
    (dict(kind="ray", ray_cpus=2, ray_address="auto"), "--ray-cpus"),
    (dict(kind="ray", gpus_per_task=-1.0), "--gpus-per-task"),
]


@pytest.mark.parametrize("options,flag", BAD, ids=[f for _, f in BAD])
def test_bad_executor_options_name_the_option(options, flag):
    with pytest.raises(ValueError, match=flag):
        check_executor(**options)


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def test_executor_ray_without_ray_is_one_line_and_exit_2(tmp_path):
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])}
    r = cli(
        "sweep",
        "--values",
        "2,4,8",
        "--init-only",
        "--executor",
        "ray",
        "--out",
        str(tmp_path / "s.nc"),
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {RAY_MISSING}"]
    assert not (tmp_path / "s.nc.parts").exists()


def test_a_sweep_on_ray_equals_the_local_sweep(tmp_path):
    """A real local Ray instance (2 CPUs, started by the command) runs the grid as tasks; the merged dataset is the
    local executor's bit for bit (after the provenance attributes). The address file of a `ray start` cluster that
    has gone is on the machine: without --ray-address the command starts its own instance all the same (Ray's
    default would connect to that address). The Ray folder is short: Ray's socket paths must fit in 107 bytes."""
    pytest.importorskip("ray")
    import shutil
    import tempfile

    import xarray as xr

    from probes.experiment.config import make_run_config
    from probes.experiment.dataset import load
    from probes.grid.sweep import run_sweep

    cfg = make_run_config(model={"H": 2, "L": 1, "task": "vision", "axis": "N"}, run={"steps": 20})
    local = run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "local.nc")
    out = tmp_path / "ray.nc"
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
    try:
        r = cli(
            "sweep",
            "--axis",
            "N",
            "--values",
            "2,4,8",
            "--seeds",
            "2",
            "--task",
            "vision",
            "--H",
            "2",
            "--L",
            "1",
            "--steps",
            "20",
            "--executor",
            "ray",
            "--ray-cpus",
            "2",
            "--out",
            str(out),
            cwd=tmp_path,
            env=env,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    assert "as Ray tasks on a local Ray instance (2 CPUs)" in r.stderr and r.stderr.count(": ok (") == 6
    provenance = ("wall_s", "git_revision", "package_version", "torch_version", "python_version", "device")
    a, b = load(out), local
    for ds in (a, b):
        for k in provenance:
            ds.attrs.pop(k, None)
    xr.testing.assert_identical(a, b)


def test_ray_tasks_describe_where_they_run():
    assert RayTasks(num_cpus=2).describe() == "as Ray tasks on a local Ray instance (2 CPUs)"
    assert "0.25 GPU per task" in RayTasks(address="auto", gpus_per_task=0.25).describe()


def test_an_unreachable_ray_address_is_one_line_not_minutes_of_retries():
    with pytest.raises(ValueError, match="--ray-address 127.0.0.1:1: no Ray cluster answers there"):
        check_reachable("127.0.0.1:1", timeout_s=2)


@pytest.fixture
def no_ray_cluster(tmp_path, monkeypatch) -> Path:
    """No RAY_ADDRESS and an empty Ray temp folder (RAY_TMPDIR): `auto` finds nothing. Returns the address file
    `ray start` would write."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    return ray_address_file()


class Server:
    """A real TCP server on 127.0.0.1 that answers each connection with `reply` (then closes it); `port`."""

    def __init__(self, reply: bytes):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


HTTP2_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # what a gRPC server (Ray's GCS) sends first


@pytest.fixture
def grpc_like():
    """A server whose first frame is an HTTP/2 SETTINGS frame, as Ray's GCS and client server (gRPC) send."""
    server = Server(HTTP2_SETTINGS)
    yield server
    server.close()


def test_ray_address_file_is_where_ray_records_its_cluster(no_ray_cluster):
    utils = pytest.importorskip("ray._common.utils")
    if not hasattr(utils, "get_ray_address_file"):
        pytest.skip("this ray version keeps the address file elsewhere")
    assert str(no_ray_cluster) == utils.get_ray_address_file(None)


def test_auto_without_a_cluster_is_refused(no_ray_cluster):
    with pytest.raises(
        ValueError,
        match=r"^--ray-address auto: no running Ray cluster found on this machine "
        r"\(RAY_ADDRESS is not set and .*ray_current_cluster does not exist\); "
        r"start one with `ray start --head`",
    ):
        check_reachable("auto", timeout_s=2)


def test_auto_follows_ray_address_then_the_address_file(no_ray_cluster, grpc_like, monkeypatch):
    no_ray_cluster.parent.mkdir(parents=True)
    no_ray_cluster.write_text(f"127.0.0.1:{grpc_like.port}\n")
    assert check_reachable("auto", timeout_s=5) == f"127.0.0.1:{grpc_like.port}"
    no_ray_cluster.write_text("127.0.0.1:1")  # a cluster that has gone: refused, saying where from
    with pytest.raises(
        ValueError,
        match=r"--ray-address auto \(127.0.0.1:1 from .*ray_current_cluster\): no Ray "
        r"cluster answers there",
    ):
        check_reachable("auto", timeout_s=2)
    monkeypatch.setenv("RAY_ADDRESS", f"localhost:{grpc_like.port}")  # RAY_ADDRESS comes first
    assert check_reachable("auto", timeout_s=5) == f"localhost:{grpc_like.port}"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # the dashboard (units API) address
    with pytest.raises(
        ValueError,
        match=r"--ray-address auto: RAY_ADDRESS holds 'http://127.0.0.1:8265', not "
        r"host:port or ray://host:port",
    ):
        check_reachable("auto", timeout_s=2)


def test_a_port_that_is_not_a_ray_cluster_is_refused(grpc_like):
    """Something listens, but it is not gRPC (a web server such as the dashboard, or one that hangs up): Ray would
    retry for minutes; refused at once. A server that answers like gRPC passes."""
    assert check_reachable(f"127.0.0.1:{grpc_like.port}", timeout_s=5) == f"127.0.0.1:{grpc_like.port}"
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    hangs_up = Server(b"")
    try:
        for port in (web.server_address[1], hangs_up.port):
            with pytest.raises(
                ValueError,
                match=rf"^--ray-address 127.0.0.1:{port}: something listens there but "
                r"it is not a Ray cluster \(.*\); give the head's GCS port",
            ):
                check_reachable(f"127.0.0.1:{port}", timeout_s=5)
    finally:
        web.shutdown()
        web.server_close()
        hangs_up.close()


BAD_ADDRESSES = [
    "localhost",
    "foo:bar",
    "",
    " ",
    "ray://",
    "ray://localhost",
    "http://127.0.0.1:8265",
    "127.0.0.1:0",
    "127.0.0.1:70000",
    "127.0.0.1:6379/x",
    "a b:6379",
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_an_address_of_another_form_is_refused(address):
    with pytest.raises(ValueError, match=r"^--ray-address must be host:port, ray://host:port or auto, got "):
        check_executor("ray", ray_address=address)


def test_a_ray_url_without_the_ray_client_is_refused_up_front(tmp_path, grpc_like, monkeypatch):
    """ray:// goes through the Ray Client (the grpc package, `ray[client]`); without it ray.init would fail only
    after the sweep had started. `import grpc` fails here whatever is installed (None in sys.modules)."""
    monkeypatch.setitem(sys.modules, "grpc", None)
    address = f"ray://127.0.0.1:{grpc_like.port}"
    code, out, err = invoke(
        ["sweep", "--values", "2,4,8", "--init-only", "--executor", "ray", "--ray-address", address, "--out", "s.nc"],
        cwd=tmp_path,
    )
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"error: --ray-address {address}: a ray:// address needs the Ray Client (the grpc "
        "package): pip install 'ray[client]'"
    ]
    assert list(tmp_path.iterdir()) == []


def test_without_an_address_ray_address_in_the_environment_is_refused(monkeypatch):
    """No --ray-address starts a local instance; Ray would connect to RAY_ADDRESS instead (and refuse --ray-cpus)."""
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with pytest.raises(
        ValueError,
        match=r"^--executor ray without --ray-address starts a local Ray instance, but "
        r"RAY_ADDRESS is set \('10.0.0.1:6379'\): pass --ray-address auto",
    ):
        check_executor("ray")


COMMANDS = {
    "sweep": [
        "sweep",
        "--values",
        "2,4,8",
        "--seeds",
        "1",
        "--task",
        "vision",
        "--H",
        "2",
        "--L",
        "1",
        "--steps",
        "1",
        "--out",
        "o.nc",
    ],
    "coord": [
        "coord",
        "--values",
        "2,4,8",
        "--seeds",
        "1",
        "--task",
        "vision",
        "--H",
        "2",
        "--L",
        "1",
        "--steps",
        "0,1",
        "--out",
        "o.nc",
    ],
    "variants": ["variants", "--quick", "--variants", "paper", "--axes", "N", "--optimizers", "sgd", "--out", "o"],
}
CLI_CASES = [("sweep", a) for a in ["auto", "localhost", "foo:bar", "", "ray://127.0.0.1:1", "127.0.0.1:1"]] + [
    ("coord", "auto"),
    ("coord", "localhost"),
    ("variants", "auto"),
    ("variants", "ray://127.0.0.1:1"),
]


@pytest.mark.parametrize("command,address", CLI_CASES, ids=[f"{c}-{a!r}" for c, a in CLI_CASES])
def test_a_bad_ray_address_stops_the_command_before_anything_is_printed_or_written(
    command, address, tmp_path, no_ray_cluster
):
    code, out, err = invoke([*COMMANDS[command], "--executor", "ray", "--ray-address", address], cwd=tmp_path)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: --ray-address"), err
    assert list(tmp_path.iterdir()) == []  # no store, no dataset, no runs/ folder


def test_a_cluster_that_refuses_this_driver_stops_the_command_before_anything_is_printed_or_written(
    tmp_path, grpc_like
):
    """The address passes every check, but ray.init fails (here: the cluster wants Ray's auth token and there is
    none, which Ray finds before it sends anything). The command joins the cluster while it checks its options, so
    the failure is one line, exit 2, with no header, no store and no dataset."""
    pytest.importorskip(
        "ray._private.authentication.authentication_token_setup",
        reason="a Ray without token authentication (RAY_AUTH_MODE)",
    )
    home = tmp_path / "home"
    home.mkdir()
    drop = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"RAY_AUTH_MODE": "token", "HOME": str(home)}
    address = f"127.0.0.1:{grpc_like.port}"
    r = cli(
        "sweep",
        "--values",
        "2,4,8",
        "--seeds",
        "1",
        "--task",
        "vision",
        "--H",
        "2",
        "--L",
        "1",
        "--steps",
        "1",
        "--executor",
        "ray",
        "--ray-address",
        address,
        "--out",
        "o.nc",
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --ray-address {address}: cannot connect ("), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
