"""Executors (probes.executors): the local process pool runs every job with at most `workers` in flight, reports a
job that raises or whose worker dies and goes on; the options are checked up front (one line naming the option,
exit 2, also for --executor ray without ray); a sweep on Ray gives the dataset of the local executor, bit for bit."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probes.executors import (RAY_MISSING, InProcess, JobError, LocalPool, RayTasks, check_executor,
                              check_reachable, default_workers, make_executor)

ROOT = Path(__file__).resolve().parents[1]


def square_or_fail(job):
    """A job function for the pool: must be importable by name in a spawned worker."""
    if job == "raise":
        raise KeyError("no such job")
    if job == "die":
        os._exit(3)                                       # the worker process dies
    return job * job


def run_all(executor, jobs):
    """Run jobs on executor; returns (events in order, results by job, errors by job, most jobs in flight)."""
    events, results, errors, flying = [], {}, {}, [0, 0]

    def on_start(job):
        events.append(("start", job))
        flying[0] += 1
        flying[1] = max(flying)

    def on_done(job, result, error):
        events.append(("done", job))
        flying[0] -= 1
        if error is None:
            results[job] = result
        else:
            assert isinstance(error, JobError)
            errors[job] = error.line

    executor.run(square_or_fail, jobs, on_start, on_done)
    return events, results, errors, flying[1]


def test_the_local_pool_runs_every_job_and_reports_one_that_raises():
    events, results, errors, most = run_all(LocalPool(2, threads=None), [1, 2, "raise", 3, 4])
    assert results == {1: 1, 2: 4, 3: 9, 4: 16}
    assert errors == {"raise": "KeyError: 'no such job'"}
    assert most == 2                                       # never more jobs handed out than workers
    for job in (1, 2, "raise", 3, 4):
        assert events.index(("start", job)) < events.index(("done", job))


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
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_executor_ray_without_ray_is_one_line_and_exit_2(tmp_path):
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])}
    r = cli("sweep", "--values", "2,4,8", "--init-only", "--executor", "ray", "--out", str(tmp_path / "s.nc"),
            cwd=tmp_path, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {RAY_MISSING}"]
    assert not (tmp_path / "s.nc.parts").exists()


def test_a_sweep_on_ray_equals_the_local_sweep(tmp_path):
    """A real local Ray instance (2 CPUs, started by the command) runs the grid as tasks; the merged dataset is the
    local executor's bit for bit (after the provenance attributes)."""
    pytest.importorskip("ray")
    import xarray as xr

    from probes.config import make_run_config
    from probes.dataset import load
    from probes.sweep import run_sweep

    cfg = make_run_config(model={"H": 2, "L": 1, "task": "vision", "axis": "N"}, run={"steps": 20})
    local = run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "local.nc")
    out = tmp_path / "ray.nc"
    r = cli("sweep", "--axis", "N", "--values", "2,4,8", "--seeds", "2", "--task", "vision", "--H", "2", "--L", "1",
            "--steps", "20", "--executor", "ray", "--ray-cpus", "2", "--out", str(out), cwd=tmp_path)
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
    check_reachable("auto")                                  # left to Ray
