"""No orphans (issue 18, defect 12): when the process that runs a local pool is killed with SIGKILL, its worker
processes and the multiprocessing resource tracker exit too, instead of going on with their jobs (and writing
parts) for minutes. A real parent process runs `probes.grid.executors.LocalPool` with two jobs that would sleep for
ten minutes; only the parent is killed. Linux only: the processes are found through /proc."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 30.0  # generous: the workers poll their parent every 0.5 s

PARENT = '''
import sys, time
from pathlib import Path

from probes.grid.executors import LocalPool


def sleep_long(job):
    """The job: say it started (a file), then sleep for ten minutes."""
    Path(sys.argv[1], f"started-{job}").touch()
    time.sleep(600)


if __name__ == "__main__":
    LocalPool(2, threads=None).run(sleep_long, [0, 1], lambda job: None, lambda job, result, error: None)
'''

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="finds the processes through /proc (Linux); watch_parent itself is portable",
)


def stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state letter, start time in clock ticks) of a process from /proc/<pid>/stat; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def children(pid: int) -> dict[tuple[int, int], str]:
    """The live child processes of pid: {(pid, start time): command line}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        s = stat(int(entry.name))
        if s is None or s[0] != pid or s[1] in "ZX":
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[(int(entry.name), s[2])] = cmd
    return found


def alive(proc: tuple[int, int]) -> bool:
    """Whether the process (pid, start time) still runs (a zombie has exited; a reused pid is another process)."""
    s = stat(proc[0])
    return s is not None and s[1] not in "ZX" and s[2] == proc[1]


def test_killing_the_parent_ends_its_workers_and_the_resource_tracker(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    log = (tmp_path / "parent.log").open("w")
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    procs: dict[tuple[int, int], str] = {}
    try:
        deadline = time.monotonic() + 120  # two Python processes start (slowly on a busy machine)
        while len(list(tmp_path.glob("started-*"))) < 2:
            assert parent.poll() is None, (tmp_path / "parent.log").read_text()
            assert time.monotonic() < deadline, "the two jobs did not start"
            time.sleep(0.2)
        procs = children(parent.pid)
        workers = [p for p, cmd in procs.items() if "spawn_main" in cmd]
        trackers = [p for p, cmd in procs.items() if "resource_tracker" in cmd]
        assert len(workers) == 2 and len(trackers) == 1, procs

        parent.send_signal(signal.SIGKILL)  # the parent only
        parent.wait()
        deadline = time.monotonic() + DEADLINE_S
        while any(alive(p) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [procs[p] for p in procs if alive(p)] == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for p in procs:  # a failing run must not leave them behind either
            if alive(p):
                os.kill(p[0], signal.SIGKILL)
        log.close()
