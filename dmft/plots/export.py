"""Writing figures: save_figure and plot_dataset (every figure that applies to a dataset)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._style import FORMATS, _figure_of, _is_trained, _subplots, _sweep_axis_of
from .densities import attention_density
from .exponents import verdict_figure
from .kernels import kernel_panels
from .training import _coord_over_steps, coord_check_panels, loss_curves
from .verdicts import verdict_rows_figure

# What drawing odd but valid data can raise (a non-finite exponent, no positive value, an empty selection): the
# figure is skipped with a note. OSError (a full disk) and MemoryError stop plot_dataset.
FIGURE_ERRORS = (ValueError, ArithmeticError, TypeError, KeyError, IndexError)
LINEAR_NOTE = "drawn on linear axes (no positive values for a log scale)"


def save_figure(fig: Figure | Axes, path) -> Path:
    """Write `fig` (a Figure, or the Figure of an Axes) to `path` as PNG or PDF (by suffix), dpi 150, tight
    bounding box; create the folder; close the figure. Returns the Path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"{path}: figure format must be png or pdf, got {path.suffix or 'no suffix'!r}")
    figure = _figure_of(fig) if isinstance(fig, Axes) else fig
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, format=fmt, dpi=150, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def linear_where_no_positive(fig: Figure) -> bool:
    """Switch every log axis of `fig` that has no positive data to a linear scale (matplotlib cannot draw such an
    axis: "Data cannot be log-scaled"). Returns True when any axis was switched."""
    switched = False
    for ax in fig.axes:
        for axis, set_scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
            minpos = axis.get_minpos()
            if axis.get_scale() == "log" and not (0 < minpos < float("inf")):
                set_scale("linear")
                switched = True
    return switched


class _NoteHandler(logging.Handler):
    """Collects matplotlib's log records (e.g. "posx and posy should be finite values") as notes."""

    def __init__(self, notes: list[str]):
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(f"warning: {record.getMessage().splitlines()[0]}")


@contextlib.contextmanager
def notes_from_warnings(notes: list[str]) -> Iterator[None]:
    """Inside: Python warnings (numpy's RuntimeWarning, matplotlib's UserWarning, ...) and matplotlib's logged
    warnings are appended to `notes` as plain one-line texts ("warning: divide by zero encountered in divide")
    instead of reaching stderr."""
    log = logging.getLogger("matplotlib")
    handler, propagate = _NoteHandler(notes), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                notes += [
                    f"warning: {str(w.message).splitlines()[0] if str(w.message) else w.category.__name__}"
                    for w in caught
                ]
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def draw_figure(make: Callable[[], Figure | Axes], path: Path) -> tuple[Path | None, list[str]]:
    """Draw one figure with make() and save it to `path` (`save_figure`). A log axis without positive data is
    drawn linear; an error of FIGURE_ERRORS skips the figure. Returns (the path, or None when skipped; the
    notes: what was changed or skipped and every warning raised, each once), and closes every figure it opened."""
    before = set(plt.get_fignums())
    notes: list[str] = []
    written: Path | None = None
    with notes_from_warnings(notes):
        try:
            made = make()
            fig = _figure_of(made) if isinstance(made, Axes) else made
            if linear_where_no_positive(fig):
                notes.append(LINEAR_NOTE)
            written = save_figure(fig, path)
        except FIGURE_ERRORS as e:
            text = str(e).splitlines()[0] if str(e) else ""
            notes.append(f"not drawn ({type(e).__name__}{': ' + text if text else ''})")
        finally:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
    return written, list(dict.fromkeys(notes))


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of `path` that exists (the current folder for a relative path with none)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(".")


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A temporary folder (`.tmp-*`) next to `out_dir` (in its nearest existing ancestor) to write into; when the
    block ends without an error its files are moved into `out_dir` (the folder itself is renamed into place when
    `out_dir` does not exist yet; files of an existing `out_dir` with other names are kept). On an error, or when
    nothing was written, the temporary folder is removed and `out_dir` is left as it was."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_existing_ancestor(out_dir)))
    try:
        yield tmp
        files = sorted(tmp.iterdir())
        if files and not out_dir.exists():
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, out_dir)
        elif files:
            for f in files:
                os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_attention_figure(ds: xr.Dataset) -> Figure:
    """One run: A at step 0 pooled over layers, fixed points and heads, against the law at the run's N."""
    x = ds.attn_raw.isel(step=0).values.ravel()
    N = int(ds["N"])
    ax = attention_density(
        x,
        N,
        float(ds.attrs["alpha_A"]),
        title=rf"$A(0)$ over heads, layers and points, $N = {N}$, "
        rf"$\alpha_A = {float(ds.attrs['alpha_A']):g}$",
    )
    return _figure_of(ax)


def _sweep_attention_figure(ds: xr.Dataset, axis: str, rows: Callable[[], dict] | None = None) -> Figure:
    """Sweep: A(0) over heads at probe point 0 (pooled over layers and seeds) for the smallest and largest size,
    each panel's KS p-value `dmft.check.p3_ks_pvalues`'s (the one P3's row quotes), and P3's verdict in the title
    as `dmft-probe check` prints it (rows: `_rows_of`'s memo)."""
    from ..check import p3_ks_pvalues, read_run_attrs
    from ..measure import attn_raw_init, with_seed_dim

    samples = attn_raw_init(with_seed_dim(ds), axis)
    sizes = sorted(samples)
    chosen = [sizes[0], sizes[-1]] if len(sizes) > 1 else sizes
    fig, axes = _subplots(len(chosen), len(chosen), panel=(4.8, 3.7))
    a = read_run_attrs(ds)
    pvals = p3_ks_pvalues(ds, axis, a)
    for ax, s in zip(axes, chosen):
        N = int(s) if axis == "N" else int(a["N"])
        attention_density(
            samples[s],
            N,
            float(a["alpha_A"]),
            ax=ax,
            pvalue=pvals.get(s, float("nan")),
            title=rf"${axis} = {int(s)}$"
            + ("" if axis == "N" else rf", $N = {N}$")
            + rf", $\alpha_A = {float(a['alpha_A']):g}$",
        )
    title = r"$A(0)$ over heads at one point (layers and seeds pooled)"
    try:
        p3 = [v for v in (rows() if rows else {"rows": []})["rows"] if v.key == "P3"]
    except ValueError as e:  # the dataset has no rows (e.g. fewer than 3 sizes): say why
        title += f"\nP3: not measured ({str(e).splitlines()[0]})"
    else:
        for v in p3:
            title += f"\n{v.key} {v.row}: {v.mark} {v.outcome} ({v.measured()})"
    fig.suptitle(title, fontsize="medium")
    return fig


def _rows_of(ds: xr.Dataset, axis: str) -> Callable[[], dict]:
    """A memo: called, it returns {"rows": `dmft.rows.dataset_verdicts(ds)`, "limit": the H -> oo kernels of P4
    (H sweeps) or None}, computed once for every figure of `plot_dataset` (the rows `dmft-probe check` prints)."""
    memo: dict = {}

    def get() -> dict:
        if not memo:
            from ..check import MC_HEADS, kernel_limit
            from ..rows import dataset_verdicts

            limit = kernel_limit(ds, None, MC_HEADS) if axis == "H" else None
            memo.update(limit=limit, rows=dataset_verdicts(ds, n_heads_mc=MC_HEADS, kernel_limit=limit))
        return memo

    return get


def _verdicts_figure(ds: xr.Dataset, axis: str, rows: Callable[[], dict]) -> Figure:
    """Every row of the dataset with its verdict (`verdict_rows_figure`), titled with the sweep's setting."""
    from ..check import read_run_attrs

    a = read_run_attrs(ds)
    return verdict_rows_figure(
        rows()["rows"],
        title=f"{a['name']} (alpha_A = {a['alpha_A']:g}, alpha_L = "
        f"{a['alpha_L']:g}), sweep over {axis}, "
        f"{'trained' if a['trained'] else 'at initialisation'}",
    )


def _run_coord_figure(ds: xr.Dataset) -> Figure:
    """One run: coordinate sizes and weight movement against step (2 x 2 panels)."""
    names = [q for q in ("h_rms", "coord_update_rms", "io_update_rms", "weight_movement") if q in ds]
    fig, axes = _subplots(len(names), 2, panel=(5.0, 3.5))
    for q, ax in zip(names, axes):
        _coord_over_steps(ds, q, ax)
        ax.set_title(q, fontsize="medium")
    return fig


def plot_dataset(ds: xr.Dataset, out_dir, fmt: str = "png", note: Callable[[str], None] | None = None) -> list[Path]:
    """Write every figure that applies to a run or sweep dataset into `out_dir`; returns the paths written.

    Single run: loss.<fmt>, kernels.<fmt> (pooled) and kernels_spatial.<fmt>, attention_density.<fmt> (attn_raw
    at step 0, pooled), coord_rms_over_steps.<fmt> (coordinate sizes against step: one run has no size axis, so
    this is not a coordinate check). Sweep: verdicts.<fmt> (every row of `dmft.rows.dataset_verdicts` with its
    verdict, `verdict_rows_figure`), exponents.<fmt> (`verdict_figure`, the slope rows' panels), kernels.<fmt>, kernels_spatial.<fmt>, loss.<fmt> and coord_check.<fmt> when trained,
    attention_density.<fmt> (smallest and largest size at step 0). Figures that need probes are skipped when the
    dataset has none. Odd data (`draw_figure`): a log axis without positive values is drawn linear, a figure that
    cannot be drawn is skipped; each such change and every warning raised while drawing goes to note(line), one
    line "<figure>: <what>" each (default: warnings.warn). The figures are written into a temporary folder and
    moved into `out_dir` (created) only when all are done (`staged_folder`): never a partial folder.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be png or pdf, got {fmt!r}")
    out_dir = Path(out_dir)
    say = note or (lambda line: warnings.warn(line, stacklevel=3))
    jobs = figure_jobs(ds)
    written, notes = [], []
    with staged_folder(out_dir) as tmp:
        for name, make in jobs:
            path, lines = draw_figure(make, tmp / f"{name}.{fmt}")
            notes += [f"{name}: {line}" for line in lines]
            if path is not None:
                written.append(out_dir / path.name)
    for line in notes:
        say(line)
    return written


def figure_jobs(ds: xr.Dataset) -> list[tuple[str, Callable[[], Figure | Axes]]]:
    """(name, make) of every figure that applies to `ds` (plot_dataset's list), in order."""
    axis = _sweep_axis_of(ds)
    probes = "kernel_pooled" in ds
    jobs: list[tuple[str, Callable[[], Figure | Axes]]] = []
    if axis is None:
        jobs.append(("loss", lambda: loss_curves(ds)))
        if probes:
            jobs += [
                ("kernels", lambda: kernel_panels(ds, "kernel_pooled")),
                ("kernels_spatial", lambda: kernel_panels(ds, "kernel_spatial")),
                ("attention_density", lambda: _run_attention_figure(ds)),
                ("coord_rms_over_steps", lambda: _run_coord_figure(ds)),
            ]
    else:
        trained = _is_trained(ds)
        rows = _rows_of(ds, axis)  # one list of rows for every figure: the rows check prints
        if probes:
            jobs.append(("verdicts", lambda: _verdicts_figure(ds, axis, rows)))
            jobs.append(("exponents", lambda: verdict_figure(ds, rows()["rows"], limit=rows()["limit"])))
            jobs += [
                ("kernels", lambda: kernel_panels(ds, "kernel_pooled")),
                ("kernels_spatial", lambda: kernel_panels(ds, "kernel_spatial")),
            ]
        if trained:
            jobs.append(("loss", lambda: loss_curves(ds, axis=axis)))
            if probes:
                jobs.append(("coord_check", lambda: coord_check_panels(ds, axis=axis)))
        if probes:
            jobs.append(("attention_density", lambda: _sweep_attention_figure(ds, axis, rows)))
    return jobs
