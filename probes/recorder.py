"""The probe recorder: one extra forward pass on a fixed probe batch per probe step (docs/design.md, "Probes").

At each probe step it records, on the device, then moves everything to the host in one transfer:
- residual-stream kernels K = h h^T / d at every depth l = 0..L (0 = embedding, l = after block l):
  pooled over tokens (sample x sample), token x token for probe sample 0 ("spatial"), and for the LM the
  last token x samples;
- attention variables A = N^-alpha_A q k^T per layer and head, before the softmax (recomputed, fused attention
  never returns them): variance over heads (unbiased, ddof = 1) and mean over heads, each averaged over the
  unmasked (s, s') pairs and the probe samples; the same for A(t) - A(0) and for softmax(A); and the raw
  per-head values at a few fixed (sample, s, s') points;
- coordinate sizes (the muP coordinate check): RMS of h at every depth; per block, the RMS of q, k, v, A,
  softmax(A), the unscaled attention-branch output, the MLP hidden pre-activation and output and the stream h
  after the block (A and softmax(A) over the unmasked (s, s') pairs), and of the embedding output h^0 and the
  raw logits f(theta_t); each also as the RMS of its change since the first probe step (step 0);
- weight movement ||W(t) - W(0)||_F / ||W(0)||_F per layer and weight kind, and for embed, pos, readout.
No statistic calls .item(); probe passes run under no_grad outside any compiled region.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from parametrizations.transformer import LWSTransformer

BLOCK_WEIGHTS = ("q", "k", "v", "o", "mlp_in", "mlp_out")
IO_WEIGHTS = ("embed", "pos", "readout")
# per-block coordinate-check sites (dataset dim "site") and the input/output ones (dim "io_site")
SITES = ("q", "k", "v", "A", "softmax_A", "attn_out", "mlp_hidden", "mlp_out", "h")
IO_SITES = ("embed", "logits")
_TAP = {"softmax_A": "P"}          # site name -> key in the model's taps


@dataclass(frozen=True)
class ProbeConfig:
    """enabled: record probes at all. every: probe every k steps (schedule "every"), or n_log log-spaced steps
    (schedule "log"), or exactly the steps in `at` (schedule "at"); step 0 and the last step are always
    included. n_samples: probe batch size; seed: the probe batch is `heldout.fixed(n_samples, seed)`, identical across scales and init seeds.
    n_points: raw per-head A values recorded at this many fixed (sample, s, s') points."""

    enabled: bool = True
    schedule: str = "every"
    every: int = 10
    n_log: int = 20
    n_samples: int = 32
    seed: int = 0
    n_points: int = 4
    at: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.schedule not in ("every", "log", "at"):
            raise ValueError(f"probe schedule must be 'every', 'log' or 'at', got {self.schedule!r}")
        if self.schedule == "at" and not self.at:
            raise ValueError("probe schedule 'at' needs a list of steps (probes.at)")
        if self.at is not None and any(int(s) < 0 for s in self.at):
            raise ValueError(f"probe steps must be >= 0, got {list(self.at)}")
        for name in ("every", "n_log", "n_samples", "n_points"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"probe {name} must be a positive integer, got {getattr(self, name)}")

    def steps(self, total: int) -> list[int]:
        """Sorted probe steps in [0, total], always with 0 and total."""
        if self.schedule == "every":
            s = set(range(0, total + 1, self.every))
        elif self.schedule == "at":
            s = {int(v) for v in self.at if int(v) <= total}
        else:
            s = set(np.unique(np.round(np.logspace(0, np.log10(max(total, 1)), self.n_log)).astype(int)).tolist())
        return sorted(s | {0, total})

    def to_dict(self) -> dict:
        return asdict(self)


def probe_points(n_samples: int, S: int, n_points: int, causal: bool) -> np.ndarray:
    """Fixed (sample, s, s') points, (n_points, 3) int: spread over samples and query positions, s' <= s."""
    pts = []
    for i in range(n_points):
        sample = i % n_samples
        s = S - 1 - (i * S) // (2 * n_points) if S > 1 else 0
        s_ = (i * 7) % (s + 1) if causal else (i * 7 + 1) % S
        pts.append((sample, s, s_))
    return np.asarray(pts, dtype=np.int64)


class ProbeRecorder:
    """Records probes of one run. Call `record(step, model)` at each probe step; `arrays()` returns the stacked
    numpy arrays (first axis = probe step) and `coords()` the per-layer coordinates."""

    def __init__(self, model: LWSTransformer, x_probe: torch.Tensor, cfg: ProbeConfig,
                 model0: LWSTransformer | None = None):
        self.cfg = cfg
        self.x = x_probe
        self.causal = model.cfg.task == "lm"
        self.d = model.cfg.d_model
        self.heads = list(model.shapes.heads)
        self.H_max = max(self.heads)
        S = x_probe.shape[1]
        self.S = S
        self.valid = torch.ones(S, S, dtype=torch.bool, device=x_probe.device)
        if self.causal:
            self.valid = self.valid.tril()
        self.valid_idx = self.valid.flatten().nonzero().squeeze(1)
        self.points = probe_points(x_probe.shape[0], S, cfg.n_points, self.causal)
        # W(0): the frozen initial copy's weights when the run keeps one (centre="copy"), else a clone
        initial = model0 if model0 is not None else model
        self.w0 = {name: p.detach() if model0 is not None else p.detach().clone()
                   for name, p in initial.named_parameters()}
        self.taps0: list[dict] | None = None      # per-block taps at the first probe step (step 0)
        self.io0: dict[str, torch.Tensor] = {}     # h^0 and the logits at step 0
        self.steps: list[int] = []
        self.records: list[dict[str, np.ndarray]] = []

    @torch.no_grad()
    def _forward(self, model: LWSTransformer) -> tuple[torch.Tensor, list[dict], torch.Tensor]:
        """(h^0 (P, S, d), per-block taps, logits f(theta) of the probe batch)."""
        h0 = model.embed_tokens(self.x)
        taps: list[dict] = []
        logits = model(self.x, taps)
        return h0, taps, logits

    def _rms(self, site: str, t: torch.Tensor) -> torch.Tensor:
        """RMS of a tap; A and softmax(A) (P, H, S, S) over the unmasked (s, s') pairs only."""
        if site in ("A", "softmax_A"):
            t = t.flatten(2).index_select(2, self.valid_idx)
        return t.float().pow(2).mean().sqrt()

    def _masked_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of t (P, S, S) over samples and the unmasked (s, s') pairs."""
        return t.flatten(1).index_select(1, self.valid_idx).mean()

    @torch.no_grad()
    def stats(self, model: LWSTransformer) -> dict[str, torch.Tensor]:
        """All probe statistics at the current weights, as device tensors (no host sync)."""
        h0, taps, logits = self._forward(model)
        if self.taps0 is None:
            self.taps0 = [{s: t[_TAP.get(s, s)] for s in SITES} for t in taps]
            self.io0 = {"embed": h0, "logits": logits}
        hs = [h0] + [t["h"] for t in taps]                           # L+1 x (P, S, d)
        out: dict[str, torch.Tensor] = {}
        pooled = torch.stack([h.mean(1) for h in hs])               # (L+1, P, d)
        out["kernel_pooled"] = pooled @ pooled.transpose(1, 2) / self.d          # (L+1, P, P)
        spatial = torch.stack([h[0] for h in hs])                   # (L+1, S, d)
        out["kernel_spatial"] = spatial @ spatial.transpose(1, 2) / self.d       # (L+1, S, S)
        if self.causal:
            last = torch.stack([h[:, -1] for h in hs])              # (L+1, P, d)
            out["kernel_last_token"] = last @ last.transpose(1, 2) / self.d      # (L+1, P, P)
        out["h_rms"] = torch.stack([h.pow(2).mean().sqrt() for h in hs])
        stats = {k: [] for k in ("attn_var_heads", "attn_mean_heads", "dA_var_heads", "dA_mean_heads",
                                 "attn_prob_var_heads", "attn_prob_mean_heads")}
        raw, brms, bdrms = [], [], []
        pi = torch.as_tensor(self.points, device=self.x.device)
        for t, t0, H_l in zip(taps, self.taps0, self.heads):
            # masked (s, s') pairs hold -inf in A and NaN in A - A(0); _masked_mean drops them
            A = t["A"]                                              # (P, H_l, S, S), -inf above the diagonal (LM)
            for name, q in (("attn", A), ("dA", A - t0["A"]), ("attn_prob", t["P"])):
                m = q.mean(dim=1)                                   # (P, S, S), mean over heads
                # unbiased variance over heads from the second moment (torch.var over a middle dim is slow on CPU)
                v = (q.pow(2).mean(dim=1) - m.pow(2)) * (H_l / (H_l - 1)) if H_l > 1 else torch.full_like(m, float("nan"))
                stats[f"{name}_var_heads"].append(self._masked_mean(v))
                stats[f"{name}_mean_heads"].append(self._masked_mean(m))
            vals = A[pi[:, 0], :, pi[:, 1], pi[:, 2]]               # (n_points, H_l)
            raw.append(torch.nn.functional.pad(vals, (0, self.H_max - H_l), value=float("nan")))
            brms.append(torch.stack([self._rms(s, t[_TAP.get(s, s)]) for s in SITES]))
            bdrms.append(torch.stack([self._rms(s, t[_TAP.get(s, s)] - t0[s]) for s in SITES]))
        out.update({k: torch.stack(v) for k, v in stats.items()})   # (L,)
        out["attn_raw"] = torch.stack(raw)                          # (L, n_points, H_max)
        out["coord_rms"] = torch.stack(brms)                        # (L, site)
        out["coord_update_rms"] = torch.stack(bdrms)                # (L, site)
        io = {"embed": h0, "logits": logits}
        out["io_rms"] = torch.stack([self._rms(s, io[s]) for s in IO_SITES])                    # (io_site,)
        out["io_update_rms"] = torch.stack([self._rms(s, io[s] - self.io0[s]) for s in IO_SITES])  # (io_site,)
        params = dict(model.named_parameters())

        def moved(name: str) -> torch.Tensor:
            w0 = self.w0[name]
            return (params[name].detach() - w0).norm() / w0.norm()

        zero = torch.zeros((), device=self.x.device)
        out["weight_movement"] = torch.stack([
            torch.stack([moved(f"blocks.{i}.{w}.weight") for w in BLOCK_WEIGHTS]) for i in range(len(taps))])
        out["io_movement"] = torch.stack([moved(f"{w}.weight") if f"{w}.weight" in params else zero for w in IO_WEIGHTS])
        return out

    def record(self, step: int, model: LWSTransformer) -> None:
        """Compute the statistics and move them to the host in one transfer."""
        stats = self.stats(model)
        flat = torch.cat([t.reshape(-1).float() for t in stats.values()]).cpu().numpy()   # one transfer
        rec, i = {}, 0
        for name, t in stats.items():
            n = t.numel()
            rec[name] = flat[i:i + n].reshape(tuple(t.shape))
            i += n
        self.steps.append(step)
        self.records.append(rec)

    def arrays(self) -> dict[str, np.ndarray]:
        """{name: array (n_probe_steps, ...)} for every recorded statistic."""
        return {k: np.stack([r[k] for r in self.records]) for k in self.records[0]} if self.records else {}
