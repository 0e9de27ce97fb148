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
from probes.hooks.head_stats import HAS_TRITON, head_stats, head_stats_torch, reference_logits, stacked

BLOCK_WEIGHTS = ("q", "k", "v", "o", "mlp_in", "mlp_out")
IO_WEIGHTS = ("embed", "pos", "readout")
# per-block coordinate-check sites (dataset dim "site") and the input/output ones (dim "io_site")
SITES = ("q", "k", "v", "A", "softmax_A", "attn_out", "mlp_hidden", "mlp_out", "h")
IO_SITES = ("embed", "logits")
# the taps stacked per group of layers of one shape, and the per-layer statistics (E, L, ...) built from them
PER_LAYER = ("q", "k", "v", "attn_out", "mlp_hidden", "mlp_out", "h")
LAYER_STATS = (
    "attn_var_heads",
    "attn_mean_heads",
    "dA_var_heads",
    "dA_mean_heads",
    "attn_prob_var_heads",
    "attn_prob_mean_heads",
    "attn_raw",
    "coord_rms",
    "coord_update_rms",
)
# A(0), P(0) of the probe batch are kept from step 0 (torch fallback of head_stats) when they fit in this
REF_CACHE_BYTES = 64 << 20
# the head statistics of the layers of one shape are computed together, in chunks of at most this many bytes of
# (E, P, H_l, S, S) float32 per tensor (the torch fallback holds about four such tensors at once)
LAYER_BATCH_BYTES = 16 << 20
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


def _rms(t: torch.Tensor, lead: int = 1) -> torch.Tensor:
    """RMS over every dim but the `lead` leading ones: (E, ...) -> (E,), or e.g. (G, E, ...) -> (G, E)."""
    return t.float().pow(2).flatten(lead).mean(lead).sqrt()


def _rms_(t: torch.Tensor, lead: int = 1) -> torch.Tensor:
    """`_rms(t, lead)` of a float32 tensor t that is not needed any more: squares t in place (no temporary)."""
    return t.pow_(2).flatten(lead).mean(lead).sqrt() if t.dtype == torch.float32 else _rms(t, lead)


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
        self.stacked0: list[dict[str, torch.Tensor]] | None = None  # per layer group, the taps at step 0
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

    def _start(self, h0: torch.Tensor, taps: list[dict], logits: torch.Tensor) -> None:
        """Keep what depends only on theta_0 on the (fixed) probe batch, from the first probe pass (step 0): the
        taps and h^0, logits; the layers grouped by tap shapes (one batched computation per group); per group
        the stacked taps (the references of the update RMS) and, for the torch fallback of `head_stats` when
        they fit in REF_CACHE_BYTES, A(0) and P(0) (so they are not recomputed from q0, k0 at every probe step)."""
        self.io0 = {"embed": h0, "logits": logits}
        by_key: dict[tuple, list[int]] = {}
        for i, (t, scale) in enumerate(zip(taps, self.scales)):
            by_key.setdefault((tuple((s, tuple(v.shape)) for s, v in t.items()), scale), []).append(i)
        self.groups = []  # layers of one tap shape, at most LAYER_BATCH_BYTES of (E, P, H_l, S, S) float32 each
        for layers in by_key.values():
            per_layer = 4 * taps[layers[0]]["q"].shape[:-1].numel() * self.S
            n = max(1, LAYER_BATCH_BYTES // per_layer)
            self.groups += [layers[i : i + n] for i in range(0, len(layers), n)]
        order = [i for g in self.groups for i in g]  # layers in group order
        self._unorder = None if order == sorted(order) else torch.as_tensor(order, device=self.x.device).argsort()
        self.stacked0 = [self._stack(taps, g) for g in self.groups]
        ref_bytes = sum(
            2 * 4 * st["q"].shape[:-1].numel() * self.S for st in self.stacked0
        )  # A0, P0: float32 (G, E, P, H_l, S, S) per group
        self.ref = None
        if not (self.x.is_cuda and HAS_TRITON) and ref_bytes <= REF_CACHE_BYTES:
            self.ref = [
                reference_logits(st["q"].flatten(0, 2), st["k"].flatten(0, 2), self.scales[g[0]], self.causal)
                for st, g in zip(self.stacked0, self.groups)
            ]
        self.w0_norm = {name: w0.flatten(1).norm(dim=1) for name, w0 in self.w0.items()}  # (E,)

    @staticmethod
    def _stack(taps: list[dict], layers: list[int]) -> dict[str, torch.Tensor]:
        """The taps of `layers` (one shape group) stacked: {site: (G, E, P, ...)} for the sites of PER_LAYER."""
        return {s: torch.stack([taps[i][s] for i in layers]) for s in PER_LAYER}

    def _group_stats(self, j: int, st: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Head statistics, raw A points and per-site RMS (and RMS of the change since step 0) of shape group j,
        from its stacked taps st {site: (G, E, P, ...)}. Returns {name: (G, E, ...)} tensors."""
        layers, E, P, S = self.groups[j], self.E, self.x.shape[0], self.S
        assert self.stacked0 is not None  # set by _start at the first probe step
        G, H_l, scale, st0 = len(layers), self.heads[layers[0]], self.scales[layers[0]], self.stacked0[j]
        q, k = st["q"].flatten(0, 2), st["k"].flatten(0, 2)  # (G*E*P, H_l, S, N)
        # mean and M2 over heads of A, softmax(A) and their changes since step 0, per (sample, s, s'), streamed
        # over heads on CUDA (Triton; docs/design.md); on the torch fallback A(0), P(0) are kept from step 0
        if self.ref is not None:
            mom = head_stats_torch(q, k, scale, self.causal, ref=self.ref[j])
        else:
            mom = head_stats(q, k, scale, self.causal, st0["q"].flatten(0, 2), st0["k"].flatten(0, 2))
        pairs = stacked(mom).view(4, 2, G, E, P, S * S)  # (stat, mean or M2, G, E, P, pairs)
        if self.causal:
            pairs = pairs.index_select(-1, self.valid_idx)  # (4, 2, G, E, P, unmasked pairs)
        m, m2 = pairs[:, 0], pairs[:, 1]  # mean and M2 over heads of A, P, dA, dP: (4, G, E, P, pairs)
        var = m2[:3] / (H_l - 1) if H_l > 1 else torch.full_like(m[:3], float("nan"))  # unbiased (ddof = 1)
        sq = m2 / H_l + m.pow(2)  # mean over heads of x^2 = M2 / H + mean^2

        def means(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(-2).mean(-1)  # mean over samples and unmasked pairs: (n, G, E, P, pairs) -> (n, G, E)

        var_m, mean_m, sq_m = means(var), means(m[:3]), means(sq)
        out = {}
        for i, key in enumerate(("A", "P", "dA")):  # STAT_NAMES order
            name = {"A": "attn", "P": "attn_prob", "dA": "dA"}[key]
            out[f"{name}_var_heads"], out[f"{name}_mean_heads"] = var_m[i], mean_m[i]
        rms = sq_m.sqrt()  # RMS over heads and unmasked pairs of A, P, dA, dP: (4, G, E)
        site_rms = {"A": rms[0], "softmax_A": rms[1]}
        site_drms = {"A": rms[2], "softmax_A": rms[3]}
        pi = self._pts
        qs = st["q"].permute(2, 4, 0, 1, 3, 5)[pi[:, 0], pi[:, 1]]  # (n_points, G, E, H_l, N)
        ks = st["k"].permute(2, 4, 0, 1, 3, 5)[pi[:, 0], pi[:, 2]]  # (n_points, G, E, H_l, N)
        vals = (scale * (qs * ks).sum(-1)).permute(1, 2, 0, 3)  # (G, E, n_points, H_l)
        out["attn_raw"] = torch.nn.functional.pad(vals, (0, self.H_max - H_l), value=float("nan"))
        for s in PER_LAYER:  # the change first: _rms_ squares the stacked copy st[s] in place
            site_drms[s] = _rms_(st[s] - st0[s], 2)
            site_rms[s] = _rms_(st[s], 2)
        out["coord_rms"] = torch.stack([site_rms[s] for s in SITES], 2)  # (G, E, site)
        out["coord_update_rms"] = torch.stack([site_drms[s] for s in SITES], 2)  # (G, E, site)
        return out

    @torch.no_grad()
    def stats(self, model: LWSTransformer) -> dict[str, torch.Tensor]:
        """All probe statistics at the current weights, as device tensors with a leading member dim (no host sync).
        One forward pass of the probe batch; the statistics are computed batched over depths (the kernels) and
        over the layers of one tap shape (head statistics, coordinate RMS)."""
        h0, taps, logits = self._forward(model)
        if self.stacked0 is None:
            self._start(h0, taps, logits)
        E = self.E
        hs = torch.stack([h0] + [t["h"] for t in taps], 1)  # (E, L+1, P, S, d)
        out: dict[str, torch.Tensor] = {}
        pooled = hs.mean(3)  # (E, L+1, P, d)
        out["kernel_pooled"] = pooled @ pooled.transpose(-1, -2) / self.d  # (E, L+1, P, P)
        spatial = hs[:, :, 0]  # (E, L+1, S, d)
        out["kernel_spatial"] = spatial @ spatial.transpose(-1, -2) / self.d  # (E, L+1, S, S)
        if self.causal:
            last = hs[:, :, :, -1]  # (E, L+1, P, d)
            out["kernel_last_token"] = last @ last.transpose(-1, -2) / self.d  # (E, L+1, P, P)
        out["h_rms"] = _rms(hs, 2)  # (E, L+1)
        groups = [self._group_stats(j, self._stack(taps, g)) for j, g in enumerate(self.groups)]
        for name in LAYER_STATS:  # (G, E, ...) per group -> (E, L, ...) in layer order
            t = torch.cat([g[name] for g in groups]) if len(groups) > 1 else groups[0][name]
            if self._unorder is not None:
                t = t.index_select(0, self._unorder)
            out[name] = t.movedim(0, 1)
        io = {"embed": h0, "logits": logits}
        out["io_rms"] = torch.stack([_rms(io[s]) for s in IO_SITES], 1)  # (E, io_site)
        out["io_update_rms"] = torch.stack([_rms(io[s] - self.io0[s]) for s in IO_SITES], 1)  # (E, io_site)
        params = dict(model.named_parameters())

        def moved(name: str) -> torch.Tensor:
            w, w0 = self._lead(params[name].detach()), self.w0[name]
            return (w - w0).flatten(1).norm(dim=1) / self.w0_norm[name]  # (E,)

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
