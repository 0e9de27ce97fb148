"""Helpers shared by test files (not tests): the CLI run in this process, and a test file re-run as a script under
Triton's CPU interpreter. Test files import it as `helpers` (pytest puts tests/ on sys.path; so does running a
test file as a script)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

import cli

ROOT = Path(__file__).resolve().parents[1]


class Hang(BaseException):
    """Raised by `watchdog`; a BaseException, so that no `except Exception` in the command under test swallows it
    (the bench caught a TimeoutError as a failed row and went on running)."""


@contextlib.contextmanager
def watchdog(seconds: int):
    """Fail (Hang) instead of hanging, e.g. on a FIFO opened for reading or writing, or on an unbounded loop."""

    def on_alarm(signum, frame):
        raise Hang(f"no answer in {seconds} s: the command hangs")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def invoke(args: list, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the CLI in this process as `dmft-probe ARGS` would (through cli.App.__call__, which turns usage errors
    into one line): (exit status, stdout, stderr). An exception other than SystemExit propagates: that is a
    traceback."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.app([str(a) for a in args], prog_name="dmft-probe")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def interpreter_outputs(script: str, path: Path) -> dict:
    """Run the test file `script` as a script with TRITON_INTERPRET=1 (read when `@triton.jit` functions are
    defined, so it must be set before the kernels' module is imported: hence a fresh process); the script saves
    its Triton outputs to `path` with torch.save. Returns what it saved; fails the test when the run fails."""
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": pythonpath}
    proc = subprocess.run(
        [sys.executable, script, str(path)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout}\n{proc.stderr}"
    return torch.load(path)
