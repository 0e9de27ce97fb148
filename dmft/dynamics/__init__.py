"""The DMFT of full-batch SGD training in the mean-field limit d = N*H -> oo (docs/dmft-dynamics.md).

`solve(Problem, SolverConfig)` returns a `Solution`; `solution_dataset` turns it into an xarray Dataset with the
probe datasets' variable names and units. The solver reads only the parametrization's numbers
(`parametrizations.spec`, `parametrizations.optim`): it never builds or calls the finite network.
"""

from .setup import LN_EPS, Problem, Rates, check_solvable, mean_field_rates
from .solver import Solution, SolverConfig, solve

__all__ = ["LN_EPS", "Problem", "Rates", "Solution", "SolverConfig", "check_solvable", "mean_field_rates", "solve"]

# submodules reached as attributes (`dmft.dynamics.finite`), imported on first use: `finite` trains the finite
# networks (probes), so importing the solver stays free of model code
_LAZY = ("against", "distance", "finite", "output", "sites")


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return importlib.import_module(f"{__name__}.{name}")
