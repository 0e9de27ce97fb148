"""Where the units of a sweep run: in this process, in a local process pool, or as Ray tasks.

An executor calls `fn(unit)` for every unit and reports back in this process: `on_start(unit)` when the unit is handed to
a worker, `on_done(unit, result, error)` when it returns, where error is None or a `UnitError` saying why it failed
(`line`: one line; `detail`: the traceback, when fn raised); the other units go on either way. For the pool and Ray, `fn` must be a
module-level function and the units plain picklable data. (A unit of a sweep is a `probes.grid.sweep.Unit`: one
seed group of one size.)

- `InProcess`: one unit after another in this process (torch keeps its own thread count).
- `LocalPool(workers)`: a `concurrent.futures.ProcessPoolExecutor` with the "spawn" start method (never fork: torch
  holds threads and locks), at most `workers` units in flight, each worker limited to `threads` torch threads. A
  worker that dies (killed, out of memory) fails the units in flight and the pool is started afresh. A worker exits
  when the process that started it dies, even by SIGKILL (`watch_parent`): no orphan goes on writing parts.
- `RayTasks`: one Ray task per unit, declaring `num_cpus=1` and `num_gpus=gpus_per_task` (a fraction shares a GPU);
  connects to `address` or starts a local instance with `num_cpus` CPUs; a failure to do either is a ValueError
  (one line). `check_reachable` turns --ray-address (host:port, ray://host:port or auto) into the address to
  connect to, refusing one that no Ray cluster answers at before any work; `connect_ray` joins it (the CLI does so
  while it checks its options, so a cluster that refuses this process stops the command before any output).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

from parametrizations.checks import one_of_error

EXECUTORS = ("local", "ray")
RAY_MISSING = "--executor ray needs the ray package: pip install -e '.[ray]'"

Unit = Any
OnStart = Callable[[Unit], None]
OnDone = Callable[[Unit, Any, "UnitError | None"], None]


class UnitError(RuntimeError):
    """A unit's exception as plain text (picklable whatever the original was): `line`, one line naming the
    exception, and `detail`, its traceback."""

    def __init__(self, line: str, detail: str = ""):
        super().__init__(line)
        self.line, self.detail = line, detail

    def __reduce__(self):
        return UnitError, (self.line, self.detail)


def error_line(e: BaseException) -> str:
    """One line for an exception: 'Type: first line of its message'."""
    if isinstance(e, UnitError):
        return e.line
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def call_unit(fn: Callable[[Unit], Any], unit: Unit, threads: int | None = None) -> Any:
    """Run fn(unit) in a worker with `threads` torch threads (None: leave torch's setting); returns fn's result, or
    raises UnitError (the exception as text, so any exception crosses a process boundary)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        return fn(unit)
    except Exception as e:
        raise UnitError(error_line(e), traceback.format_exc()) from None


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a Slurm allocation), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(threads_per_worker: int = 1) -> int:
    """Workers that fill this machine when each uses `threads_per_worker` torch threads."""
    return max(1, cpu_count() // max(1, threads_per_worker))


class Executor(Protocol):
    def describe(self) -> str:
        """One phrase saying where the units run (for the progress header)."""

    def run(self, fn: Callable[[Unit], Any], units: Sequence[Unit], on_start: OnStart, on_done: OnDone) -> None:
        """Run fn on every unit, calling on_start / on_done in this process (see the module docstring)."""


class InProcess:
    """Jobs one after another in this process (no pool): torch keeps the thread count it has."""

    def describe(self) -> str:
        return "in this process"

    def run(self, fn, units, on_start, on_done) -> None:
        for unit in units:
            on_start(unit)
            try:
                result = call_unit(fn, unit)
            except UnitError as e:
                on_done(unit, None, e)
            else:
                on_done(unit, result, None)


WORKER_DIED = "a worker process died (killed, or out of memory?) while this ran"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5


def set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG); returns whether it was set
    (False off Linux or without a usable libc). The signal follows the parent *thread* that started this process:
    LocalPool starts its workers from the thread that runs `LocalPool.run`, which outlives them (the pool is shut
    down before `run` returns)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_orphaned(parent_pid: int) -> None:
    """Loop of the watchdog thread: os._exit(1) as soon as this process's parent is no longer parent_pid."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def watch_parent(parent_pid: int | None) -> None:
    """Pool initializer: make this worker exit when its parent dies. parent_pid: the pid that started it (None: the
    parent it has now, as with forkserver). Sets the parent-death signal where Linux has one and always starts a
    daemon thread that polls os.getppid() every PARENT_POLL_S s; exits at once if the parent is already gone."""
    parent = os.getppid() if parent_pid is None else parent_pid
    set_parent_death_signal()
    if os.getppid() != parent:  # the parent died before the signal was set
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="watch-parent", daemon=True).start()


class LocalPool:
    """A process pool on this machine ("spawn" start method), `workers` units at a time, `threads` torch threads
    per worker."""

    def __init__(self, workers: int, threads: int | None = 1, start_method: str = "spawn"):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start method must be spawn or forkserver (never fork with torch), got {start_method!r}")
        self.workers, self.threads, self.start_method = workers, threads, start_method

    def describe(self) -> str:
        threads = (
            "torch's default threads"
            if self.threads is None
            else f"{self.threads} torch thread{'s' if self.threads > 1 else ''}"
        )
        return f"on a local pool of {self.workers} workers x {threads}"

    def _pool(self) -> ProcessPoolExecutor:
        """A new pool whose workers exit when this process dies (watch_parent; with forkserver their parent is the
        fork server, which exits when this process does)."""
        parent = os.getpid() if self.start_method == "spawn" else None
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context(self.start_method),
            initializer=watch_parent,
            initargs=(parent,),
        )

    def run(self, fn, units, on_start, on_done) -> None:
        todo = list(units)[::-1]  # pop() takes them in order
        in_flight: dict[Future, Unit] = {}
        pool = None
        clean = False
        try:
            while todo or in_flight:
                if pool is None:
                    pool = self._pool()
                while todo and len(in_flight) < self.workers:
                    unit = todo.pop()
                    in_flight[pool.submit(call_unit, fn, unit, self.threads)] = unit
                    on_start(unit)
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    unit = in_flight.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        on_done(unit, None, UnitError(WORKER_DIED))
                    except UnitError as e:
                        on_done(unit, None, e)
                    except Exception as e:  # e.g. a result that could not be pickled
                        on_done(unit, None, UnitError(error_line(e)))
                    else:
                        on_done(unit, result, None)
                if broken:  # every unit in flight is lost with the pool
                    for unit in in_flight.values():
                        on_done(unit, None, UnitError(WORKER_DIED))
                    in_flight.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = None
            clean = True
        finally:
            if pool is not None:
                if not clean:  # interrupted: do not wait for the units in flight
                    for p in list((getattr(pool, "_processes", None) or {}).values()):
                        p.terminate()
                pool.shutdown(wait=clean, cancel_futures=True)


class RayTasks:
    """One Ray task per unit (num_cpus=1, num_gpus=gpus_per_task), on the cluster at `address` or on a local
    instance started here with `num_cpus` CPUs (None: all of this machine's)."""

    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, gpus_per_task: float = 0.0, threads: int = 1
    ):
        self.address, self.num_cpus, self.gpus_per_task, self.threads = address, num_cpus, gpus_per_task, threads

    def describe(self) -> str:
        where = (
            f"the Ray cluster at {self.address}"
            if self.address
            else f"a local Ray instance ({self.num_cpus or cpu_count()} CPUs)"
        )
        gpus = f", {self.gpus_per_task:g} GPU per task" if self.gpus_per_task else ""
        return f"as Ray tasks on {where}{gpus}"

    def _join(self) -> bool:
        """Join the cluster at `address`, or start a local instance, unless this process is in a Ray session
        already; returns whether it did so now (and so shuts it down at the end). ValueError (one line) when not."""
        import ray

        if ray.is_initialized():
            return False
        if self.address:
            return connect_ray(check_reachable(self.address))
        try:  # "local": never the cluster of RAY_ADDRESS or of `ray start`; the results are small
            ray.init(
                address="local",
                num_cpus=self.num_cpus or cpu_count(),
                include_dashboard=False,
                logging_level="ERROR",
                object_store_memory=100 * 2**20,
            )
        except Exception as e:
            raise ValueError(f"--executor ray: cannot start a local Ray instance ({error_line(e)})") from None
        return True

    def run(self, fn, units, on_start, on_done) -> None:
        import ray

        started = self._join()
        task = ray.remote(num_cpus=1, num_gpus=self.gpus_per_task)(call_unit)
        refs: dict[Any, Unit] = {}
        try:
            for unit in units:
                refs[task.remote(fn, unit, self.threads)] = unit
                on_start(unit)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    unit = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # RayTaskError wraps our UnitError as its cause
                        cause = getattr(e, "cause", None) or e
                        on_done(unit, None, cause if isinstance(cause, UnitError) else UnitError(error_line(cause)))
                    else:
                        on_done(unit, result, None)
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


RAY_FORMS = "host:port, ray://host:port or auto"
RAY_ADDRESS_RE = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")
RAY_CLIENT_MISSING = "a ray:// address needs the Ray Client (the grpc package): pip install 'ray[client]'"
NOT_RAY = "give the head's GCS port (6379 by default) or ray://head:10001, not the dashboard's 8265"
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame
HTTP2_SETTINGS = 4


def _shown(text: str, limit: int = 200) -> str:
    """repr(text), cut to `limit` characters (an option's value in a one-line message)."""
    r = repr(text)
    return r if len(r) <= limit else r[:limit] + "..."


def split_ray_address(address: str) -> tuple[str, int] | None:
    """(host, port) of "host:port" or "ray://host:port" (an IPv6 host in brackets); None for any other text or a
    port outside 1-65535."""
    m = RAY_ADDRESS_RE.fullmatch(address)
    if m is None or not 0 < int(m.group(2)) < 65536:
        return None
    return m.group(1).strip("[]"), int(m.group(2))


def ray_address_file() -> Path:
    """Where `ray start` records the address of the cluster it started, as Ray 2 finds it
    (ray._common.utils.get_ray_address_file): <RAY_TMPDIR, else TMPDIR on Linux, else /tmp>/ray/ray_current_cluster."""
    if "RAY_TMPDIR" in os.environ:
        tmp = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        tmp = os.environ["TMPDIR"]
    elif sys.platform.startswith(("linux", "darwin")):
        tmp = "/tmp"
    else:
        tmp = tempfile.gettempdir()
    return Path(tmp, "ray", "ray_current_cluster")


def find_ray_address() -> tuple[str, str]:
    """What --ray-address auto stands for, as Ray resolves it: RAY_ADDRESS when set (and not "auto"), else the
    address in ray_address_file(). Returns (address, where it came from); ValueError (one line) when neither
    holds one. Ray's last resort, any raylet process found on this machine, is left out: it may be another
    program's private instance."""
    env = os.environ.get("RAY_ADDRESS", "")
    if env and env != "auto":
        return env, "RAY_ADDRESS"
    path = ray_address_file()
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--ray-address auto: cannot read {path} ({error_line(e)})") from None
    if not text:
        raise ValueError(
            f"--ray-address auto: no running Ray cluster found on this machine (RAY_ADDRESS is not set "
            f"and {path} does not exist); start one with `ray start --head` or leave --ray-address "
            "out to start a local instance"
        )
    return text, str(path)


def ray_client_available() -> bool:
    """Whether ray:// addresses can be used: Ray's Client needs the grpc package (ray[client])."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


def grpc_answer(host: str, port: int, timeout_s: float) -> str | None:
    """None when host:port answers an HTTP/2 client preface with a SETTINGS frame, as gRPC servers do (Ray's GCS
    and its client server); else why not, one phrase. OSError when nothing accepts a TCP connection. With
    RAY_USE_TLS set the ports speak TLS: only the TCP connection is checked."""
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return None
        try:
            conn.sendall(HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    return "it closed the connection" if not head else "it does not speak HTTP/2"
                head += chunk
        except OSError as e:
            return f"no gRPC handshake: {error_line(e)}"
    if head[3] != HTTP2_SETTINGS or int.from_bytes(head[5:9], "big") != 0:
        return "it does not speak HTTP/2 (gRPC)"
    return None


def check_reachable(address: str, timeout_s: float = 10.0) -> str:
    """The address to give ray.init for --ray-address `address`: host:port and ray://host:port as they are, auto
    resolved as Ray does (find_ray_address). ValueError (one line naming --ray-address) for any other form, a
    ray:// address without the Ray Client, or an address where no Ray cluster answers within timeout_s: nothing
    accepts a TCP connection (Ray itself would retry for minutes), or what does is not gRPC (grpc_answer)."""
    label = address
    if address == "auto":
        address, source = find_ray_address()
        label = f"auto ({address} from {source})"
        if split_ray_address(address) is None:
            raise ValueError(f"--ray-address auto: {source} holds {_shown(address)}, not host:port or ray://host:port")
    parts = split_ray_address(address)
    if parts is None:
        raise ValueError(f"--ray-address must be {RAY_FORMS}, got {_shown(address)}")
    if address.startswith("ray://") and not ray_client_available():
        raise ValueError(f"--ray-address {label}: {RAY_CLIENT_MISSING}")
    try:
        why = grpc_answer(*parts, timeout_s)
    except OSError as e:
        raise ValueError(f"--ray-address {label}: no Ray cluster answers there ({error_line(e)})") from None
    if why is not None:
        raise ValueError(
            f"--ray-address {label}: something listens there but it is not a Ray cluster ({why}); {NOT_RAY}"
        )
    return address


def connect_ray(address: str) -> bool:
    """Join the Ray cluster at `address` (checked by check_reachable) unless this process is in a Ray session
    already; returns whether it joined now. ValueError (one line naming --ray-address) when Ray refuses, e.g. a
    cluster of another Ray version, or one that wants an auth token this machine does not have."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level="ERROR")
    except Exception as e:
        raise ValueError(f"--ray-address {address}: cannot connect ({error_line(e)})") from None
    return True


def ray_available() -> bool:
    """Whether the ray package can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def check_executor(
    kind: str,
    workers: int | None = None,
    ray_address: str | None = None,
    ray_cpus: int | None = None,
    gpus_per_task: float | None = None,
) -> str | None:
    """ValueError (one line naming the option) for executor options that do not go together or are out of range,
    for --executor ray without the ray package, and for a Ray address no cluster answers at (check_reachable);
    checked before any work. Returns the address Ray will connect to (None: start a local instance)."""
    if kind not in EXECUTORS:
        raise one_of_error("--executor", kind, EXECUTORS)
    if kind == "local":
        for flag, value in (
            ("--ray-address", ray_address),
            ("--ray-cpus", ray_cpus),
            ("--gpus-per-task", gpus_per_task),
        ):
            if value is not None:
                raise ValueError(f"{flag} applies to --executor ray only")
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        return None
    if workers is not None:
        raise ValueError("--workers applies to --executor local only (Ray runs one task per free CPU)")
    if ray_cpus is not None and ray_cpus < 1:
        raise ValueError(f"--ray-cpus must be >= 1, got {ray_cpus}")
    if ray_cpus is not None and ray_address is not None:
        raise ValueError("--ray-cpus sizes a local Ray instance; with --ray-address the cluster's resources apply")
    if gpus_per_task is not None and not gpus_per_task >= 0:
        raise ValueError(f"--gpus-per-task must be >= 0, got {gpus_per_task}")
    if not ray_available():
        raise ValueError(RAY_MISSING)
    if ray_address is not None:
        return check_reachable(ray_address)
    if os.environ.get("RAY_ADDRESS"):
        raise ValueError(
            f"--executor ray without --ray-address starts a local Ray instance, but RAY_ADDRESS is set "
            f"({_shown(os.environ['RAY_ADDRESS'])}): pass --ray-address auto to run on that cluster, "
            "or unset RAY_ADDRESS"
        )
    return None


def make_executor(
    kind: str = "local",
    workers: int | None = None,
    n_jobs: int | None = None,
    ray_address: str | None = None,
    ray_cpus: int | None = None,
    gpus_per_task: float | None = None,
) -> Executor:
    """The executor for the options (checked by check_executor). Local: `workers` (default: one per CPU, one
    torch thread each), never more than `n_jobs`; one worker runs in this process (InProcess)."""
    address = check_executor(kind, workers, ray_address, ray_cpus, gpus_per_task)
    if kind == "ray":
        return RayTasks(address, ray_cpus, float(gpus_per_task or 0.0), threads=1)
    k = workers if workers is not None else default_workers(1)
    if n_jobs is not None:
        k = min(k, max(1, n_jobs))
    return InProcess() if k <= 1 else LocalPool(k, threads=1)
