"""The residual-stream gradient kernel of a full-batch run (`probes.experiment.run`, batch "full"), taken from the training
step's own backward pass: no extra forward or backward, nothing re-implemented.

At optimizer step t = 0..T-1, with Loss the mean training loss over the P samples that the step differentiates
(the exact loss the update uses, with the run's centring of the outputs) and h_l (P, S, d) the residual stream at
depth l = 0..L (0 = the embedding output incl. positions, l = after block l: the same h's whose token means give
kernel_pooled),
    e_l(mu, s) = -gamma0 * d * dLoss/dh_l(mu, s)     (a d-vector; gamma0 = the parametrization's gamma0, d = N*H)
    ebar_l(mu) = sum_s e_l(mu, s)                     (sum over tokens: the gradient of a token-shared shift)
    kernel_grad[t, l, mu, nu] = ebar_l(mu) . ebar_l(nu) / d        (units 1)
which is what the DMFT solver computes for the same samples (docs/dmft-dynamics.md). In a seed ensemble the
members' losses are summed before the backward, so each member's stream gets its own member's gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from parametrizations.transformer import LWSTransformer


class StreamGradients:
    """Collects dLoss/dh_l of every training backward of `model` while `attached`, and returns the gradient kernels.

    Forward hooks on the blocks put a tensor hook on each stream state that requires a gradient (the input of
    block 0 is h_0, the output of block l is h_l; probe and held-out passes run under no_grad and are skipped);
    in the backward each tensor hook keeps the token sum of its state's gradient, (E, P, d) in float32, so no
    (P, S, d) tensor outlives the step. The hooks see the total gradient of the state (every use of it)."""

    def __init__(self, model: LWSTransformer, gamma0: float):
        self.model = model
        self.d = model.cfg.d_model
        self.scale = float(gamma0) * self.d  # e = -gamma0 d dLoss/dh
        self.sums: list[torch.Tensor | None] = [None] * (len(model.blocks) + 1)

    def _watch(self, depth: int, h: torch.Tensor) -> None:
        """Register the gradient hook of stream state h_depth (only on a state of a forward with autograd)."""
        if h.requires_grad:
            h.register_hook(lambda g: self._keep(depth, g))

    def _keep(self, depth: int, g: torch.Tensor) -> None:
        self.sums[depth] = g.detach().float().sum(-2)  # dLoss/dh summed over tokens: (E, P, d) or (P, d)

    @contextlib.contextmanager
    def attached(self) -> Iterator[StreamGradients]:
        """Hook the model's blocks for the duration of the context (the training loop); removed on exit."""
        blocks = list(self.model.blocks)
        handles = [blocks[0].register_forward_pre_hook(lambda m, args: self._watch(0, args[0]))]
        handles += [
            blk.register_forward_hook(lambda m, args, out, depth=depth: self._watch(depth, out))
            for depth, blk in enumerate(blocks, 1)
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def kernels(self) -> torch.Tensor:
        """The gradient kernels of the last backward, (E, L+1, P, P) on the device (E = 1 for a single model),
        units 1: ebar_l(mu) . ebar_l(nu) / d with ebar_l(mu) = -gamma0 d sum_s dLoss/dh_l(mu, s). Clears what it
        read, so a missing backward raises RuntimeError instead of repeating the previous step."""
        sums = [s for s in self.sums if s is not None]
        if len(sums) < len(self.sums):
            raise RuntimeError("no stream gradient: kernels() needs a training backward since the last call")
        ebar = -self.scale * torch.stack(sums, -3)  # (E, L+1, P, d) or (L+1, P, d)
        if self.model.ensemble is None:
            ebar = ebar.unsqueeze(0)  # (1, L+1, P, d)
        self.sums = [None] * len(self.sums)
        return ebar @ ebar.transpose(-1, -2) / self.d  # (E, L+1, P, P)
