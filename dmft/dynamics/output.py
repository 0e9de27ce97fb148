"""The solution as an xarray Dataset with the probe datasets' variable names, dims and units (docs/design.md,
"Datasets"), so that check, plot and the notebooks read a solution and a finite full-batch run alike.

The names, long names and units are those of `probes.experiment.dataset` (BASE_VARS here mirrors its `base_dataset`,
`PROBE_VARS` and `FULL_BATCH_VARS`; tests/test_dynamics.py checks that they agree): the solver does not import
probes."""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from .solver import Solution

# name: (dims, long_name, units); units None: the loss's units
VARS = {
    "train_loss": (("train_step",), "training loss on the incoming batch, before the update", None),
    "heldout_loss": (("step",), "loss on the fixed held-out batch", None),
    "grad_norm": (("step",), "global gradient norm: not defined in the limit (NaN)", "1"),
    "kernel_pooled": (("step", "depth", "sample", "sample_"), "residual-stream kernel pooled over tokens, h.h'/d", "1"),
    "probe_outputs": (
        ("step", "sample", "output"),
        "outputs the loss sees on the probe batch, f(theta_t) - "
        "f(theta_0) (f(theta_t) unless centre = copy): class logits, or the LM's last-token logits "
        "over the vocab",
        "1",
    ),
    "test_outputs": (
        ("step", "test_sample", "output"),
        "outputs the loss sees on the fixed held-out batch, f(theta_t) - f(theta_0) (f(theta_t) unless centre = copy)",
        "1",
    ),
    "train_labels": (("sample",), "class label of each training sample (the probe samples of a full-batch run)", "1"),
    "test_labels": (("test_sample",), "class label of each held-out sample", "1"),
    "probe_inputs": (("sample", "token", "feature"), "probe batch: standardised patches", "1"),
    "kernel_grad": (
        ("train_step", "depth", "sample", "sample_"),
        "residual-stream gradient kernel over the "
        "training samples, e.e'/d with e = -gamma0 d dLoss/dh summed over tokens",
        "1",
    ),
    "normaliser": (
        ("step", "position", "sample", "token"),
        "LayerNorm normaliser sqrt(h.h/d + eps) of each token of "
        "the training samples at each stream position (0: embedding; 2l - 1, 2l: after the attention and "
        "MLP branch of block l)",
        "1",
    ),
    "attn_limit": (
        ("step", "layer", "sample", "token", "token_"),
        "A = N^-alpha_A q.k of the training samples, the same for every head in the limit (N -> oo at alpha_A = 1)",
        "1",
    ),
}


def _var(name: str, data, loss_units: str) -> tuple:
    dims, long_name, units = VARS[name]
    return dims, np.asarray(data), {"long_name": long_name, "units": loss_units if units is None else units}


def solution_dataset(sol: Solution, attrs: dict | None = None) -> xr.Dataset:
    """The Dataset of a solution; `attrs` (e.g. the run attrs of the configuration it was solved for, with its
    `config` JSON) come first, then the solver's own: kind "dmft_dynamics", the limit, the solver settings
    (solver_*), the final self-consistency residual and the iterations."""
    prob, p = sol.problem, sol.params
    T, P, L, S = prob.steps, prob.P, prob.L, prob.S
    units = "nats" if prob.loss == "ce" else "1"
    ftr, fte = (x.detach().cpu().numpy() for x in sol.outputs())
    ltr, lte = (x.detach().cpu().numpy() for x in sol.losses())
    data = {
        "train_loss": _var("train_loss", ltr[:T], units),
        "heldout_loss": _var("heldout_loss", lte, units),
        "grad_norm": _var("grad_norm", np.full(T + 1, math.nan), units),
        "kernel_pooled": _var("kernel_pooled", p["kernel_pooled"].permute(1, 0, 2, 3).cpu().numpy(), units),
        "probe_outputs": _var("probe_outputs", ftr, units),
        "test_outputs": _var("test_outputs", fte, units),
        "train_labels": _var("train_labels", np.asarray(prob.y_train, dtype=np.int64), units),
        "test_labels": _var("test_labels", np.asarray(prob.y_test, dtype=np.int64), units),
        "kernel_grad": _var("kernel_grad", p["kernel_grad"].permute(1, 0, 2, 3).cpu().numpy(), units),
        "probe_inputs": _var("probe_inputs", prob.tokens(prob.x_train).astype(np.float32), units),
        "normaliser": _var(
            "normaliser",
            p["sigma"][:, :, : P * S].reshape(2 * L + 1, T + 1, P, S).permute(1, 0, 2, 3).cpu().numpy(),
            units,
        ),
        "status": (
            (),
            np.int8(0),
            {
                "long_name": "run status: 0 ok, 1 diverged",
                "units": "1",
                "flag_values": np.asarray([0, 1], dtype=np.int8),
                "flag_meanings": "ok diverged",
            },
        ),
        "diverged_at": (
            (),
            np.int64(-1),
            {
                "long_name": "optimizer step whose weights gave the first NaN/inf loss or probe (-1: did not diverge)",
                "units": "steps",
            },
        ),
    }
    if S > 1:
        data["attn_limit"] = _var("attn_limit", p["attn"][:, :, :P].permute(1, 0, 2, 3, 4).cpu().numpy(), units)
    coords = {
        "step": ("step", np.arange(T + 1, dtype=np.int64), {"long_name": "optimizer steps taken", "units": "steps"}),
        "train_step": ("train_step", np.arange(T, dtype=np.int64), {"long_name": "optimizer step", "units": "steps"}),
        "depth": ("depth", np.arange(L + 1), {"long_name": "residual stream h^l: 0 = embedding, l = after block l"}),
        "position": (
            "position",
            np.arange(2 * L + 1),
            {"long_name": "stream position: 0 = embedding, 2l-1 / 2l = after the attention / MLP branch of block l"},
        ),
        "sample": ("sample", np.arange(P), {"long_name": "probe sample"}),
        "sample_": ("sample_", np.arange(P), {"long_name": "probe sample"}),
        "token": ("token", np.arange(S), {"long_name": "token / patch position"}),
        "token_": ("token_", np.arange(S), {"long_name": "token / patch position"}),
        "layer": ("layer", np.arange(L), {"long_name": "block"}),
        "test_sample": ("test_sample", np.arange(prob.M - P), {"long_name": "held-out sample"}),
        "output": (
            "output",
            np.arange(prob.n_classes),
            {"long_name": "output index: class, or vocab entry of the LM's last token"},
        ),
        "L": ((), L, {"long_name": "depth (blocks)"}),
    }
    out = dict(attrs or {})
    out.update(
        {
            "title": "dmft-probe DMFT solution (d = N*H -> oo)",
            "kind": "dmft_dynamics",
            "probes": 0,
            "limit": (
                "mean field, d = N*H -> oo at fixed gamma0, beta0, L; one token; full-batch SGD"
                if S == 1
                else f"mean field, N -> oo at fixed H, alpha_A = 1, gamma0, beta0, L; {S} tokens; full-batch SGD"
            ),
            "residual": float(sol.residual),
            "iterations": int(sol.iterations),
            "converged": int(sol.converged),
            "solver_wall_s": float(sol.wall_s),
            "loss": prob.loss,
            **{
                f"solver_{k}": (json.dumps(v) if isinstance(v, (bool, type(None))) else v)
                for k, v in sol.config.to_dict().items()
            },
        }
    )
    return xr.Dataset(data, coords=coords, attrs=out)
