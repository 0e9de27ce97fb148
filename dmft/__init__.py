"""Predictions, verdicts and figures: what the finite networks of `probes` are compared with (docs/predictions.md).

The face of the package, loaded lazily (a name's module is imported on first use):
- verdicts of a sweep dataset: `check_sweep` (every registry row the sweep measures; `dmft-probe check`),
  `verdict_lines` (the table), `read_run_attrs` (the parametrization a dataset was made with), `kernel_limit` (the
  H -> oo kernels a sweep's init kernels are compared with);
- the coordinate check: `coord_verdicts`, `coord_lines`, `coord_dataset` (`dmft-probe coord`), and
  `coord_check_model` (the same check of your own model, docs/own-model.md);
- fits and the verdict rule: `slope_fit`, `decide`;
- the analysis modules, for deeper cells: `measure`, `fit`, `predictions`, `verdict`, `convergence`, `compare`,
  `transfer`, `report`, `solvers`, `plots` (figures), `dynamics` (the DMFT solver, docs/dmft-dynamics.md).

    from dmft import check_sweep, verdict_lines
    print("\\n".join(verdict_lines(check_sweep(ds))))

`check_sweep` is `dmft.check.check` (the name `check` is the module's).
"""

from __future__ import annotations

import importlib

# name -> (module, attribute); attribute None: the module itself
_FACE: dict[str, tuple[str, str | None]] = {
    "check_sweep": ("check", "check"),
    "verdict_lines": ("check", "verdict_lines"),
    "read_run_attrs": ("check", "read_run_attrs"),
    "kernel_limit": ("check", "kernel_limit"),
    "coord_verdicts": ("coord", "coord_verdicts"),
    "coord_lines": ("coord", "coord_lines"),
    "coord_dataset": ("coord", "coord_dataset"),
    "coord_check_model": ("own_coord", "coord_check_model"),
    "slope_fit": ("fit", "slope_fit"),
    "decide": ("verdict", "decide"),
    **{
        m: (m, None)
        for m in (
            "measure",
            "fit",
            "predictions",
            "verdict",
            "convergence",
            "compare",
            "transfer",
            "report",
            "solvers",
            "plots",
            "dynamics",
        )
    },
}
__all__ = [
    "check_sweep",
    "compare",
    "convergence",
    "coord_check_model",
    "coord_dataset",
    "coord_lines",
    "coord_verdicts",
    "decide",
    "dynamics",
    "fit",
    "kernel_limit",
    "measure",
    "plots",
    "predictions",
    "report",
    "read_run_attrs",
    "slope_fit",
    "solvers",
    "transfer",
    "verdict",
    "verdict_lines",
]


def __getattr__(name: str):
    """The face's names, each imported from its module on first use (PEP 562)."""
    if name not in _FACE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _FACE[name]
    mod = importlib.import_module(f"{__name__}.{module}")
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
