"""A short end-of-run summary of a run dataset, for the CLI."""

from __future__ import annotations

import numpy as np
import xarray as xr


def summary_lines(ds: xr.Dataset) -> list[str]:
    """Final losses, per-layer variance over heads of A (first and last probe step) and the relative change
    of the pooled residual kernel at the last depth, ||K(t) - K(0)||_F / ||K(0)||_F. A run of 0 steps (probes
    at initialisation only) has no training loss: its line gives the held-out loss at step 0."""
    wall = float(ds.attrs.get("wall_s", np.nan))
    held = f"held-out loss {float(ds.heldout_loss[-1]):.4f} nats" if ds.sizes.get("step", 0) else "no held-out loss"
    if ds.sizes.get("train_step", 0):
        lines = [f"final train loss {float(ds.train_loss[-1]):.4f}, {held} (step {int(ds.step[-1])}, {wall:.1f} s)"]
    else:
        lines = [f"no training steps (probes at initialisation only): {held} at step 0 ({wall:.1f} s)"]
    if not int(ds.attrs.get("probes", 0)) or not ds.sizes.get("step", 0):
        return lines
    v0, v1 = ds.attn_var_heads.isel(step=0).values, ds.attn_var_heads.isel(step=-1).values
    per_layer = ", ".join(f"{a:.3g}->{b:.3g}" for a, b in zip(v0, v1))
    lines.append(f"Var over heads of A per layer (step 0 -> last): {per_layer}")
    K = ds.kernel_pooled.isel(depth=-1)
    K0, K1 = K.isel(step=0).values, K.isel(step=-1).values
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.linalg.norm(K1 - K0) / np.linalg.norm(K0)
    lines.append(
        f"pooled kernel change at the last layer ||K(t)-K(0)||/||K(0)|| = {change:.3g}; "
        f"weight movement (mean over layers, q/k) = {float(ds.weight_movement.isel(step=-1).sel(weight=['q', 'k']).mean()):.3g}"
    )
    return lines
