"""The one progress helper: a line on stderr with the count done, the elapsed time and an ETA, used by training
(`probes.experiment.run.train`), sweeps and coordinate checks (`probes.grid.sweep.Sweep.run`), learning-rate grids
(`probes.grid.lr_grid`), `dmft-probe reproduce` (`probes.grid.reproduce.run_preset`) and `dmft-probe check`
(`dmft.check.check`).

    with Progress("sweep", total=12, unit="points") as bar:
        for ...:
            bar.advance(1, info="N=16 seed=2: done")
            say = bar.wrap(print_to_stderr)      # messages printed between redraws of the bar

On a terminal the line is redrawn in place; elsewhere (a log file, a pipe, a test) nothing is shown unless asked.
Whether a bar shows: `enabled=False` never; otherwise the environment variable DMFT_PROBE_PROGRESS decides when set
("0": never, "1": always, a non-terminal stderr included, one line per update, at most one a second), else whether
stderr is a terminal. The ETA is elapsed / done * (total - done), counted from the first update of this bar (work
finished before it, e.g. the points a resumed sweep had done, is passed as `done` and not timed).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

__all__ = ["ENV", "Progress", "format_duration", "progress_wanted"]

ENV = "DMFT_PROBE_PROGRESS"
REDRAW_S = 0.2  # a terminal's line is redrawn at most this often
LOG_S = 1.0  # a forced line on a non-terminal is written at most this often
BAR_WIDTH = 20


def progress_wanted(enabled: bool | None = None, stream: TextIO | None = None) -> bool:
    """Whether a bar shows (module docstring): False when `enabled` is False or DMFT_PROBE_PROGRESS is "0"; True
    when DMFT_PROBE_PROGRESS is "1"; else whether `stream` (default stderr) is a terminal."""
    if enabled is False:
        return False
    env = os.environ.get(ENV, "").strip()
    if env == "0":
        return False
    if env == "1":
        return True
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """seconds as m:ss, or h:mm:ss from an hour on ("?" when not finite or negative)."""
    if not seconds >= 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress line (module docstring) over `total` items of `unit` labelled `label`; `done` items are finished
    already. A context manager; `close()` ends the line. Does nothing when it does not show."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "",
        done: int = 0,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ):
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.done = self._start_done = min(int(done), self.total)
        self.info = ""
        self.stream = stream or sys.stderr
        self.shown = progress_wanted(enabled, self.stream)
        self._tty = self.shown and _isatty(self.stream)
        self._t0 = time.monotonic()
        self._last = -float("inf")
        self._drawn = False
        self._closed = False
        self._final_written = False
        if self._tty:
            self._draw()

    # ---- reading ------------------------------------------------------------------------------------------------

    def eta_s(self) -> float:
        """Seconds left at the rate of this bar so far (NaN before the first item is done here)."""
        timed = self.done - self._start_done
        if timed <= 0:
            return float("nan") if self.done < self.total else 0.0
        return (time.monotonic() - self._t0) / timed * (self.total - self.done)

    def line(self) -> str:
        """The text of the bar now: label, done/total, a bar, the percentage, elapsed time, ETA and the info."""
        frac = self.done / self.total if self.total else 1.0
        fill = int(round(frac * BAR_WIDTH))
        unit = f" {self.unit}" if self.unit else ""
        elapsed = format_duration(time.monotonic() - self._t0)
        text = (
            f"{self.label} {self.done}/{self.total}{unit} [{'#' * fill}{'.' * (BAR_WIDTH - fill)}] "
            f"{100 * frac:3.0f}%  {elapsed} elapsed, ETA {format_duration(self.eta_s())}"
        )
        return f"{text}  {self.info}" if self.info else text

    # ---- updating -----------------------------------------------------------------------------------------------

    def advance(self, n: int = 1, info: str | None = None) -> None:
        """Count n more items done (and set the info text shown after the ETA)."""
        self.done = min(self.done + int(n), self.total)
        if info is not None:
            self.info = info
        self._maybe_draw(force=self.done >= self.total)

    def iter(self, items: Iterable[T], info: Callable[[T], str] | None = None) -> Iterator[T]:
        """The items, each counted done once the loop body has run on it (info(item): the text shown while it
        runs); the bar is closed when the loop ends, by exhaustion, break or an exception."""
        try:
            for item in items:
                if info is not None:
                    self.set_info(info(item))
                yield item
                self.advance(1)
        finally:
            self.close()

    def skip(self, n: int) -> None:
        """Count n items done that took no time here (finished before, e.g. by an earlier, resumed run): they are
        left out of the rate the ETA is computed from."""
        n = max(0, min(int(n), self.total - self.done))
        self.done += n
        self._start_done += n

    def set_info(self, info: str) -> None:
        """Set the info text shown after the ETA."""
        self.info = info
        self._maybe_draw()

    def wrap(self, say: Callable[[str], object] | None) -> Callable[[str], None]:
        """say(msg), with the bar's line cleared before and redrawn after (so messages and the bar do not mix);
        a no-op function when `say` is None."""

        def wrapped(msg: str) -> None:
            if say is None:
                return
            self._clear()
            say(msg)
            if self._tty and not self._closed:
                self._draw()

        return wrapped

    def close(self) -> None:
        """End the line (a terminal's bar stays, with its last state)."""
        if self._closed:
            return
        self._closed = True
        if self.shown:
            if self._tty:
                self._draw()
                self._write("\n")
            elif not self._final_written and self.done > self._start_done:
                self._write(self.line() + "\n")  # the last state, unless written already
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- drawing ------------------------------------------------------------------------------------------------

    def _maybe_draw(self, force: bool = False) -> None:
        if not self.shown or self._closed:
            return
        now = time.monotonic()
        if self._tty:
            if force or now - self._last >= REDRAW_S:
                self._draw()
        elif force or now - self._last >= LOG_S:
            self._write(self.line() + "\n")
            self._last = now
            self._final_written = force

    def _draw(self) -> None:
        self._write("\r\033[K" + self.line())
        self._drawn = True
        self._last = time.monotonic()

    def _clear(self) -> None:
        if self._tty and self._drawn:
            self._write("\r\033[K")
            self._drawn = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr: progress is never worth a crash
            self.shown = False


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
