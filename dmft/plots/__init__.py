"""Figures of run and sweep datasets, in the paper's symbols (Bordelon, Chaudhry & Pehlevan, NeurIPS 2024).

Every public function draws with matplotlib/seaborn and returns the Figure or Axes it drew; nothing is shown
and no backend is chosen here (a headless machine falls back to Agg; the CLI forces it). Functions that take
`ax=None` draw on a new figure when no axes are given. Nothing here builds a model: the inputs are datasets
written by `probes.experiment.dataset` (one run) or `probes.grid.sweep` (a grid along N, H or L and seeds) and the theory side
of `dmft` (fits, verdicts, the law of A).

    exponent_plot        log2-log2 scatter of a quantity vs size, with the fitted slope and predicted exponents
    verdict_figure       one exponent_plot per slope row of `dmft.rows.dataset_verdicts`
    verdict_rows_figure  every row of a dataset with its verdict (the one `dmft-probe check` prints)
    kernel_grid          heat maps of kernels on one colour scale (the paper's Fig. 6b-c / 7b-c)
    kernel_panels        kernels at the first and last probe step, per size (sweep) or for one run
    attention_density    histogram of A over heads against the variance-gamma law and its Gaussian limit
    loss_curves          held-out loss vs step, one line per size
    lr_transfer          final loss vs eta0, one line per size (muP learning-rate transfer)
    coord_check_panels   muP coordinate check: coordinate sizes vs size, one panel per probe step
    convergence_plot     trained distance from the size -> oo limit vs size (dmft.convergence), fit and prediction
    rate_by_step_plot    the fitted convergence slope and its CI at every probe step
    seed_variance_plot   seed-to-seed variance of a trained quantity vs size, fit and prediction
    save_figure          write PNG/PDF and close
    plot_dataset         every figure that applies to a dataset, written to a folder
"""

from __future__ import annotations

from .convergence import convergence_plot, rate_by_step_plot, seed_variance_plot
from .densities import attention_density
from .exponents import exponent_plot, verdict_figure
from .export import plot_dataset, save_figure
from .kernels import kernel_grid, kernel_panels
from .training import coord_check_panels, loss_curves, lr_transfer
from .verdicts import verdict_rows_figure

__all__ = [
    "exponent_plot",
    "verdict_figure",
    "verdict_rows_figure",
    "kernel_grid",
    "kernel_panels",
    "attention_density",
    "loss_curves",
    "lr_transfer",
    "coord_check_panels",
    "save_figure",
    "plot_dataset",
    "convergence_plot",
    "rate_by_step_plot",
    "seed_variance_plot",
]
