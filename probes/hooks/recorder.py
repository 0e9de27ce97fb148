"""The probe recorder: one extra forward pass on a fixed probe batch per probe step (docs/design.md, "Probes").

At each probe step it records, on the device, then moves everything to the host in one transfer:
- residual-stream kernels K = h h^T / d at every depth l = 0..L (0 = embedding, l = after block l):
  pooled over tokens (sample x sample), token x token for probe sample 0 ("spatial"), and for the LM the
  last token x samples;
- attention variables A = N^-alpha_A q k^T per layer and head, before the softmax (recomputed from q and k,
  fused attention never returns them; `probes.hooks.head_stats` streams over heads, a Triton kernel on CUDA, so the
  (samples, H, S, S) tensor is never built there): variance over heads (unbiased, ddof = 1) and mean over
  heads, each averaged over the unmasked (s, s') pairs and the probe samples; the same for A(t) - A(0) and for
  softmax(A); and the raw per-head values at a few fixed (sample, s, s') points;
- coordinate sizes (the muP coordinate check): RMS of h at every depth; per block, the RMS of q, k, v, A,
  softmax(A), the unscaled attention-branch output, the MLP hidden pre-activation and output and the stream h
  after the block (A and softmax(A) over the unmasked (s, s') pairs), and of the embedding output h^0 and the
  raw logits f(theta_t); each also as the RMS of its change since the first probe step (step 0);
- weight movement ||W(t) - W(0)||_F / ||W(0)||_F per layer and weight kind, and for embed, pos, readout;
- the outputs the loss sees on the probe batch (`probe_outputs`): f(theta_t) - f(theta_0) with the frozen initial
  copy (centre "copy"), f(theta_t) otherwise; per sample and class, for the LM the last token's logits only.
No statistic calls .item(); probe passes run under no_grad outside any compiled region. A seed ensemble is
probed in the same pass: every statistic has a leading member dim, split per member by `member(e)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import torch

from parametrizations.checks import ConfigError, check_bool, check_choice, check_int, check_int_list
from parametrizations.transformer import Block, LWSTransformer
from probes.hooks.head_stats import head_stats

BLOCK_WEIGHTS = ("q", "k", "v", "o", "mlp_in", "mlp_out")
IO_WEIGHTS = ("embed", "pos", "readout")
# per-block coordinate-check sites (dataset dim "site") and the input/output ones (dim "io_site")
SITES = ("q", "k", "v", "A", "softmax_A", "attn_out", "mlp_hidden", "mlp_out", "h")
IO_SITES = ("embed", "logits")
# bounds of the probe settings (memory is checked by probes.experiment.config.check_fits)
MAX_STEP = 10**8  # a probe step (and a run's steps)
MAX_PROBE_STEPS = 100_000  # n_log, len(at)
MAX_PROBE_SAMPLES = 4096  # n_samples: the probe pass holds (samples x samples) kernels per depth
MAX_PROBE_POINTS = 4096  # n_points of attn_raw
MAX_SEED = 2**62


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
        check_bool("enabled", self.enabled)
        check_choice("schedule", self.schedule, ("every", "log", "at"))
        check_int("every", self.every, 1, MAX_STEP)
        check_int("n_log", self.n_log, 1, MAX_PROBE_STEPS)
        check_int("n_samples", self.n_samples, 1, MAX_PROBE_SAMPLES)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("n_points", self.n_points, 1, MAX_PROBE_POINTS)
        if self.at is not None and (len(self.at) if isinstance(self.at, (tuple, list)) else True):
            check_int_list("at", self.at, 0, MAX_STEP, max_len=MAX_PROBE_STEPS)
        if self.schedule == "at" and not self.at:
            raise ConfigError("at", "must list the probe steps for probe schedule 'at'")

    def n_steps(self, total: int) -> int:
        """len(self.steps(total)) without building the list (an upper bound for schedule "log")."""
        if self.schedule == "every":
            return total // self.every + 1 + (total % self.every != 0)
        if self.schedule == "at":
            assert self.at is not None  # checked in __post_init__
            return min(len(self.at), total + 1) + 2
        return min(self.n_log, total + 1) + 2

    def steps(self, total: int) -> list[int]:
        """Sorted probe steps in [0, total], always with 0 and total."""
        if self.schedule == "every":
            s = set(range(0, total + 1, self.every))
        elif self.schedule == "at":
            assert self.at is not None  # checked in __post_init__
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


def _rms(t: torch.Tensor) -> torch.Tensor:
    """RMS over every dim but the leading member dim: (E, ...) -> (E,)."""
    return t.float().pow(2).flatten(1).mean(1).sqrt()


class ProbeRecorder:
    """Records probes of one run or of a seed ensemble (every statistic carries a leading member dim E, 1 for a
    single model). Call `record(step, model)` at each probe step; `arrays(member)` returns the stacked numpy
    arrays of one member (first axis = probe step); `member(e)` is that member's view for `probes.experiment.dataset`."""

    def __init__(
        self, model: LWSTransformer, x_probe: torch.Tensor, cfg: ProbeConfig, model0: LWSTransformer | None = None
    ):
        self.cfg = cfg
        self.x = x_probe
        self.causal = model.cfg.task == "lm"
        self.d = model.cfg.d_model
        self.ensembled = model.ensemble is not None
        self.E = model.ensemble or 1
        self.heads = list(model.shapes.heads)
        self.scales = [blk.attn_scale for blk in cast(Iterable[Block], model.blocks)]
        self.H_max = max(self.heads)
        S = x_probe.shape[1]
        self.S = S
        valid = torch.ones(S, S, dtype=torch.bool, device=x_probe.device)
        if self.causal:
            valid = valid.tril()
        self.valid_idx = valid.flatten().nonzero().squeeze(1)
        self.points = probe_points(x_probe.shape[0], S, cfg.n_points, self.causal)
        self._pts = torch.as_tensor(self.points, device=x_probe.device)
        # W(0): the frozen initial copy's weights when the run keeps one (centre="copy"), else a clone
        initial = model0 if model0 is not None else model
        self.w0 = {
            name: self._lead(p.detach() if model0 is not None else p.detach().clone())
            for name, p in initial.named_parameters()
        }
        self.model0 = model0
        self.f0: torch.Tensor | None = None  # f(theta_0) on the probe batch (E, P, C or V), when model0 is kept
        self.taps0: list[dict] | None = None  # per-block taps at the first probe step (step 0)
        self.io0: dict[str, torch.Tensor] = {}  # h^0 and the logits at step 0
        self.steps: list[int] = []
        self.records: list[dict[str, np.ndarray]] = []

    def _lead(self, t: torch.Tensor) -> torch.Tensor:
        """t with the leading member dim (a view): (E, ...) as is in an ensemble, (1, ...) for a single model."""
        return t if self.ensembled else t.unsqueeze(0)

    @torch.no_grad()
    def _forward(self, model: LWSTransformer) -> tuple[torch.Tensor, list[dict], torch.Tensor]:
        """(h^0 (E, P, S, d), per-block taps (E, ...), logits f(theta) (E, P, ...)) of the probe batch."""
        h0 = model.embed_tokens(self.x)
        taps: list[dict] = []
        logits = model(self.x, taps)
        taps = [{k: self._lead(v) for k, v in t.items()} for t in taps]
        return self._lead(h0), taps, self._lead(logits)

    def _masked_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of t (E, P, S, S) over samples and the unmasked (s, s') pairs -> (E,)."""
        return t.flatten(2).index_select(2, self.valid_idx).flatten(1).mean(1)

    def _raw_points(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
        """A = scale q.k at the fixed (sample, s, s') points, (E, n_points, H_l), from q, k (E, P, H_l, S, N)."""
        pi = self._pts
        qs = q.permute(1, 3, 0, 2, 4)[pi[:, 0], pi[:, 1]]  # (n_points, E, H_l, N)
        ks = k.permute(1, 3, 0, 2, 4)[pi[:, 0], pi[:, 2]]  # (n_points, E, H_l, N)
        return (scale * (qs * ks).sum(-1)).transpose(0, 1)  # (E, n_points, H_l)

    @torch.no_grad()
    def stats(self, model: LWSTransformer) -> dict[str, torch.Tensor]:
        """All probe statistics at the current weights, as device tensors with a leading member dim (no host sync)."""
        h0, taps, logits = self._forward(model)
        if self.taps0 is None:
            self.taps0 = taps
            self.io0 = {"embed": h0, "logits": logits}
        E, P = self.E, self.x.shape[0]
        hs = [h0] + [t["h"] for t in taps]  # L+1 x (E, P, S, d)
        out: dict[str, torch.Tensor] = {}
        pooled = torch.stack([h.mean(2) for h in hs], 1)  # (E, L+1, P, d)
        out["kernel_pooled"] = pooled @ pooled.transpose(-1, -2) / self.d  # (E, L+1, P, P)
        spatial = torch.stack([h[:, 0] for h in hs], 1)  # (E, L+1, S, d)
        out["kernel_spatial"] = spatial @ spatial.transpose(-1, -2) / self.d  # (E, L+1, S, S)
        if self.causal:
            last = torch.stack([h[:, :, -1] for h in hs], 1)  # (E, L+1, P, d)
            out["kernel_last_token"] = last @ last.transpose(-1, -2) / self.d  # (E, L+1, P, P)
        out["h_rms"] = torch.stack([_rms(h) for h in hs], 1)  # (E, L+1)
        stats: dict[str, list[torch.Tensor]] = {
            k: []
            for k in (
                "attn_var_heads",
                "attn_mean_heads",
                "dA_var_heads",
                "dA_mean_heads",
                "attn_prob_var_heads",
                "attn_prob_mean_heads",
            )
        }
        raw, brms, bdrms = [], [], []
        for t, t0, H_l, scale in zip(taps, self.taps0, self.heads, self.scales):
            # mean and M2 over heads of A, softmax(A) and their changes since step 0, per (sample, s, s'),
            # streamed over heads (Triton on CUDA; docs/design.md)
            hs_ = head_stats(
                t["q"].flatten(0, 1),
                t["k"].flatten(0, 1),
                scale,
                self.causal,
                t0["q"].flatten(0, 1),
                t0["k"].flatten(0, 1),
            )  # each (E*P, S, S)
            mom = {k: (m.view(E, P, self.S, self.S), m2.view(E, P, self.S, self.S)) for k, (m, m2) in hs_.items()}
            for name, key in (("attn", "A"), ("dA", "dA"), ("attn_prob", "P")):
                m, m2 = mom[key]
                v = m2 / (H_l - 1) if H_l > 1 else torch.full_like(m, float("nan"))  # unbiased (ddof = 1)
                stats[f"{name}_var_heads"].append(self._masked_mean(v))
                stats[f"{name}_mean_heads"].append(self._masked_mean(m))
            # RMS over heads and unmasked pairs: mean_h x^2 = M2 / H + mean^2
            sq = {k: (m2 / H_l + m.pow(2)) for k, (m, m2) in mom.items()}
            site_rms = {"A": self._masked_mean(sq["A"]).sqrt(), "softmax_A": self._masked_mean(sq["P"]).sqrt()}
            site_drms = {"A": self._masked_mean(sq["dA"]).sqrt(), "softmax_A": self._masked_mean(sq["dP"]).sqrt()}
            vals = self._raw_points(t["q"], t["k"], scale)  # (E, n_points, H_l)
            raw.append(torch.nn.functional.pad(vals, (0, self.H_max - H_l), value=float("nan")))
            brms.append(torch.stack([site_rms[s] if s in site_rms else _rms(t[s]) for s in SITES], 1))
            bdrms.append(torch.stack([site_drms[s] if s in site_drms else _rms(t[s] - t0[s]) for s in SITES], 1))
        out.update({k: torch.stack(v, 1) for k, v in stats.items()})  # (E, L)
        out["attn_raw"] = torch.stack(raw, 1)  # (E, L, n_points, H_max)
        out["coord_rms"] = torch.stack(brms, 1)  # (E, L, site)
        out["coord_update_rms"] = torch.stack(bdrms, 1)  # (E, L, site)
        io = {"embed": h0, "logits": logits}
        out["io_rms"] = torch.stack([_rms(io[s]) for s in IO_SITES], 1)  # (E, io_site)
        out["io_update_rms"] = torch.stack([_rms(io[s] - self.io0[s]) for s in IO_SITES], 1)  # (E, io_site)
        params = dict(model.named_parameters())

        def moved(name: str) -> torch.Tensor:
            w, w0 = self._lead(params[name].detach()), self.w0[name]
            return (w - w0).flatten(1).norm(dim=1) / w0.flatten(1).norm(dim=1)  # (E,)

        zero = torch.zeros(E, device=self.x.device)
        out["weight_movement"] = torch.stack(
            [torch.stack([moved(f"blocks.{i}.{w}.weight") for w in BLOCK_WEIGHTS], 1) for i in range(len(taps))], 1
        )
        out["io_movement"] = torch.stack(
            [moved(f"{w}.weight") if f"{w}.weight" in params else zero for w in IO_WEIGHTS], 1
        )
        out["probe_outputs"] = self.centred_outputs(logits)
        return out

    @torch.no_grad()
    def centred_outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """What the loss sees on the probe batch (`probes.experiment.run.centred_loss`): f(theta_t) - f(theta_0) when the run
        keeps the frozen initial copy model0 (centre "copy"; f(theta_0) is computed once and kept), else f(theta_t)
        itself (centre "zero_readout", whose f(theta_0) is 0, or "none"). logits: f(theta_t) (E, P, C) for an image
        task or (E, P, T, V) for the LM. Returns (E, P, C), or the LM's last token (E, P, V); units: logits."""

        def last(f: torch.Tensor) -> torch.Tensor:
            return f[:, :, -1] if self.causal else f  # LM: (E, P, T, V) -> (E, P, V)

        if self.model0 is None:
            return last(logits)
        if self.f0 is None:
            self.f0 = last(self._lead(self.model0(self.x)))
        return last(logits) - self.f0

    def record(self, step: int, model: LWSTransformer) -> None:
        """Compute the statistics and move them to the host in one transfer."""
        stats = self.stats(model)
        flat = torch.cat([t.reshape(-1).float() for t in stats.values()]).cpu().numpy()  # one transfer
        rec, i = {}, 0
        for name, t in stats.items():
            n = t.numel()
            rec[name] = flat[i : i + n].reshape(tuple(t.shape))  # (E, ...)
            i += n
        self.steps.append(step)
        self.records.append(rec)

    def arrays(self, member: int = 0, n_steps: int | None = None) -> dict[str, np.ndarray]:
        """{name: array (n_probe_steps, ...)} of one member, over the first n_steps probe steps (all by default)."""
        recs = self.records[:n_steps]
        return {k: np.stack([r[k][member] for r in recs]) for k in recs[0]} if recs else {}

    def member(self, e: int, n_steps: int | None = None) -> MemberProbes:
        """Member e's probes (the first n_steps probe steps), for `probes.experiment.dataset.probe_dataset`."""
        return MemberProbes(self, e, len(self.steps) if n_steps is None else n_steps)


class MemberProbes:
    """One member's view of a ProbeRecorder: steps, records, arrays(), and the probe batch (x, S, points)."""

    def __init__(self, rec: ProbeRecorder, e: int, n_steps: int):
        self._rec, self._e, self._n = rec, e, n_steps
        self.x, self.S, self.points = rec.x, rec.S, rec.points
        self.steps = rec.steps[:n_steps]
        self.records = rec.records[:n_steps]

    def arrays(self) -> dict[str, np.ndarray]:
        return self._rec.arrays(self._e, self._n)
