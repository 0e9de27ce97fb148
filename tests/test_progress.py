"""The one progress helper (probes.experiment.progress): a line with an ETA on stderr, shown on a terminal or when
DMFT_PROBE_PROGRESS=1, never on a pipe otherwise; real `sweep` and `check` commands print it when it is forced on
and print no bar when stderr is not a terminal."""

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from probes.experiment.progress import ENV, Progress, format_duration, progress_wanted

ROOT = Path(__file__).resolve().parents[1]
ETA = re.compile(r"ETA \d+:\d\d")


def cli(*args: str, cwd: Path, progress: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k != ENV}
    if progress is not None:
        env[ENV] = progress
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_no_bar_unless_forced(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    pipe = io.StringIO()
    with Progress("work", 3, unit="items", stream=pipe) as bar:
        for _ in range(3):
            bar.advance(1, info="x")
    assert not bar.shown and pipe.getvalue() == ""
    monkeypatch.setenv(ENV, "1")
    with Progress("work", 3, unit="items", stream=pipe) as bar:
        for _ in bar.iter(range(3)):
            pass
    lines = pipe.getvalue().splitlines()
    assert lines and lines[-1].startswith("work 3/3 items") and all(ETA.search(line) for line in lines[1:])
    assert progress_wanted(False, pipe) is False  # asked to be quiet: quiet even when forced


def test_a_terminal_gets_a_bar_redrawn_in_place_and_messages_between(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    tty = Tty()
    with Progress("sweep", 4, unit="points", done=2, stream=tty) as bar:
        say = bar.wrap(lambda msg: tty.write(msg + "\n"))
        say("N=8 seed=0: ok")
        bar.advance(2, info="N=8")
    text = tty.getvalue()
    assert "\r\033[K" in text and "N=8 seed=0: ok\n" in text and text.endswith("\n")
    assert "sweep 4/4 points" in text and ETA.search(text)
    monkeypatch.setenv(ENV, "0")
    assert not Progress("sweep", 4, stream=Tty()).shown  # DMFT_PROBE_PROGRESS=0: quiet on a terminal too


def test_the_eta_counts_only_work_timed_here():
    bar = Progress("x", 10, done=4, enabled=False)
    assert bar.eta_s() != bar.eta_s()  # NaN: nothing done here yet (4 were done before)
    bar.skip(2)
    assert bar.done == 6 and bar.eta_s() != bar.eta_s()
    bar.advance(1)
    assert bar.eta_s() >= 0


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0:00"), (59.4, "0:59"), (61, "1:01"), (3725, "1:02:05"), (float("nan"), "?"), (float("inf"), "?"), (-1, "?")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_sweep_and_check_print_an_eta_when_forced_and_no_bar_on_a_pipe(tmp_path):
    out = tmp_path / "s.nc"
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
        "--init-only",
        "--out",
        str(out),
        cwd=tmp_path,
        progress="1",
    )
    assert r.returncode == 0, r.stderr
    bars = [line for line in r.stderr.splitlines() if line.startswith("sweep ") and " points [" in line]
    assert bars and bars[-1].startswith("sweep 6/6 points") and all(ETA.search(line) for line in bars)
    assert "ETA" not in r.stdout  # progress goes to stderr only
    r = cli("check", str(out), cwd=tmp_path, progress="1")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^check (\d+)/\1 rows .*ETA 0:00", r.stderr, re.M), r.stderr
    r = cli("check", str(out), cwd=tmp_path, progress=None)  # stderr is a pipe: no bar
    assert r.returncode == 0, r.stderr
    assert "ETA" not in r.stderr and "rows [" not in r.stderr
