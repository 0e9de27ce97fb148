"""The sample-and-iterate DMFT solver of full-batch SGD training in the mean-field limit d = N*H -> oo, stage 1
(one token per sample): docs/dmft-dynamics.md derives every line below; the equation tags (S1)-(S9), (H1)-(H4)
refer to it.

Sites: the residual stream (exact, linear), and per branch k = 1..2L the hidden layer (odd k: the attention
branch W_O W_V, linear and exact; even k: the GELU MLP, Monte Carlo). Order parameters, over forward indices
a = (t, mu) (F = (T+1) M of them, training samples mu < P first, then test samples) and backward indices
b = (s, nu) (B = T P, training samples only):
  sigma[k](t, mu)   LayerNorm normaliser of the stream h_k, sqrt(H_k(a, a) + eps)          k = 0..2L
  Phi[k] (F, F)     kernel of u_k = h_{k-1} / sigma_{k-1}, the input of branch k
  Psi[k] (F, F)     kernel of psi(z_k), the hidden activation of branch k
  G[k] (B, B)       kernel of the backward field e_k at stream position k
  Gz[k] (B, B)      kernel of the hidden backward field gz_k
  A_in[k] (F, B), A_out[k] (F, B), B_in[k] (B, Ftr), B_out[k] (B, Ftr)   response functions (Ftr: training a)
  kappa[k](s, nu), kappa_out(s, nu)   LayerNorm projections E[u e] of the backward pass
  f (T+1, M, C)     the centred outputs; Delta = -dLoss/df from them
One sweep runs every site through t = 0..T in causal order. With `params` None (the causal, Gauss-Seidel sweep)
each order parameter is used as soon as this sweep has estimated it; given `params` (the Jacobi sweep of the
iteration) every site uses those and the sweep returns fresh estimates of all of them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields, replace

import torch

from .setup import LN_EPS, Problem
from .sites import ExactSite, MonteCarloSite, gelu, gelu_prime

INITS = ("causal", "zero")
LN_NORMALISERS = ("exact", "frozen", "none")
# the command-line options of the settings `dmft-probe solve` exposes (messages name them)
FLAGS = {"n_samples": "--samples", "seed": "--solver-seed", "damping": "--damping", "max_iter": "--max-iter",
         "tol": "--tol"}


class SolverDiverged(RuntimeError):
    """The solution turned non-finite (the learning rate is beyond the stable range of this problem)."""


@dataclass(frozen=True)
class SolverConfig:
    """Controls of the solver.

    n_samples: Monte Carlo samples of each MLP hidden site; seed: their draws. damping: the iteration's step,
    new = (1 - damping) old + damping fresh, in (0, 1]. max_iter: Jacobi iterations after the initial guess;
    tol: stop when the self-consistency residual (max over order parameters of max |fresh - old| / max |old|) is
    below it. init: "causal" (the initial guess is the causal sweep, already self-consistent up to round-off for a
    fixed draw) or "zero" (all order parameters zero, unit normalisers: the plain iteration from scratch, which
    converges in at most as many iterations as the causal chain has links). resample: a fresh Monte Carlo draw at
    every iteration (the damped iteration then averages draws). rtol: relative eigenvalue cut of the causal
    Gaussian sampler; ridge: relative eigenvalue cut of the response regressions. dtype: "float64" (default) or
    "float32"; device: a torch device string. exact_linear: the linear sites of the attention branches are solved
    exactly (default); False samples them like the MLP sites (a check of the Monte Carlo machinery).
    responses, ln_normaliser, ln_projection: the terms of the equations. responses False drops the response
    functions; ln_normaliser "frozen" keeps every LayerNorm normaliser at its value at t = 0 (instead of "exact",
    sigma(t) from the current kernel), "none" drops it (u = h); ln_projection False drops the LayerNorm projection
    of the backward pass (kappa = 0). The defaults are the equations; the others exist to show that the finite
    networks converge to the full equations and to nothing else (tests/test_dynamics_convergence.py); a dataset
    records them."""

    n_samples: int = 20000
    seed: int = 0
    damping: float = 1.0
    max_iter: int = 3
    tol: float = 1e-8
    init: str = "causal"
    resample: bool = False
    rtol: float = 1e-12
    ridge: float = 1e-10
    dtype: str = "float64"
    device: str = "cpu"
    exact_linear: bool = True
    responses: bool = True
    ln_normaliser: str = "exact"
    ln_projection: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, what: str):
            flag = FLAGS.get(name, f"SolverConfig.{name}")
            raise ValueError(f"{flag} must be {what}, got {getattr(self, name)!r}")

        for name, lo in (("n_samples", 2), ("max_iter", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                bad(name, f"an integer >= {lo}")
        if not isinstance(self.damping, (int, float)) or not 0 < self.damping <= 1:
            bad("damping", "a number in (0, 1]")
        for name in ("tol", "rtol", "ridge"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                bad(name, "a finite number >= 0")
        if self.init not in INITS:
            bad("init", f"one of {', '.join(INITS)}")
        if self.dtype not in ("float64", "float32"):
            bad("dtype", "float64 or float32")
        if self.ln_normaliser not in LN_NORMALISERS:
            bad("ln_normaliser", f"one of {', '.join(LN_NORMALISERS)}")
        for name in ("resample", "exact_linear", "responses", "ln_projection"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "true or false")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------------------------------- order parameters
SYMMETRIC = ("Phi", "Psi", "G", "Gz", "Phi_out")
ITERATED = ("sigma", "Phi", "Psi", "G", "Gz", "A_in", "A_out", "B_in", "B_out", "kappa", "kappa_out", "Phi_out", "f")


def zero_params(prob: Problem, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Every order parameter at zero (sigma at one), with its shape (module docstring)."""
    T, M, P, C, K = prob.steps, prob.M, prob.P, prob.n_classes, 2 * prob.L
    F, B, Ftr = (T + 1) * M, T * P, (T + 1) * P

    def z(*shape):
        return torch.zeros(*shape, dtype=dtype, device=device)

    return {"sigma": torch.ones(K + 1, T + 1, M, dtype=dtype, device=device), "Phi": z(K, F, F), "Psi": z(K, F, F),
            "G": z(K, B, B), "Gz": z(K, B, B), "A_in": z(K, F, B), "A_out": z(K, F, B), "B_in": z(K, B, Ftr),
            "B_out": z(K, B, Ftr), "kappa": z(K, T, P), "kappa_out": z(T, P), "Phi_out": z(F, F),
            "f": z(T + 1, M, C), "kernel_pooled": z(prob.L + 1, T + 1, P, P)}


def residual(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> float:
    """max over the iterated order parameters of max|new - old| / max|old| (0 / 0 counts as 0)."""
    worst = 0.0
    for k in ITERATED:
        scale = float(old[k].abs().max()) if old[k].numel() else 0.0
        diff = float((new[k] - old[k]).abs().max()) if old[k].numel() else 0.0
        if diff > 0:
            worst = max(worst, diff / scale if scale > 0 else math.inf)
    return worst


def train_cols(row: torch.Tensor, t_end: int, M: int, P: int) -> torch.Tensor:
    """The columns (s, nu) with s < t_end, nu < P (training samples) of a row over forward indices s*M + mu:
    (m, t_end*P), column s*P + nu."""
    return row[:, :t_end * M].reshape(row.shape[0], t_end, M)[:, :, :P].reshape(row.shape[0], t_end * P)


def loss_and_delta(f: torch.Tensor, y: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over the samples, Delta = -dLoss/df (n, C)) of outputs f (n, C) against labels y (n,):
    cross-entropy, or 0.5 * squared error to the one-hot label."""
    onehot = torch.nn.functional.one_hot(y, f.shape[1]).to(f.dtype)
    n = f.shape[0]
    if kind == "mse":
        return 0.5 * ((f - onehot) ** 2).sum(1).mean(), -(f - onehot) / n
    logp = torch.log_softmax(f, 1)
    return -(logp * onehot).sum(1).mean(), -(logp.exp() - onehot) / n


# ------------------------------------------------------------------------------------------------------- sweep
class Sweep:
    """One sweep of every single site over t = 0..T (module docstring). `used` is what the sites read: the
    estimates of this sweep (params None) or `params`; `fresh` collects this sweep's estimates."""

    def __init__(self, prob: Problem, cfg: SolverConfig, params: dict[str, torch.Tensor] | None, draw: int):
        self.prob, self.cfg = prob, cfg
        self.dtype = getattr(torch, cfg.dtype)
        self.device = torch.device(cfg.device)
        self.fresh = zero_params(prob, self.dtype, self.device)
        self.used = self.fresh if params is None else params
        r = prob.rates
        T, M, P, C, K = prob.steps, prob.M, prob.P, prob.n_classes, 2 * prob.L
        self.T, self.M, self.P, self.C, self.K = T, M, P, C, K
        gram = torch.as_tensor(prob.input_gram(), dtype=self.dtype, device=self.device)
        self.K0 = r.s_embed * gram + r.s_pos                             # (S1): Cov h_0(0)
        self.Kupd = (r.c_embed * gram + r.c_pos)[:, :P]                  # (S1): the embedding and position update
        self.y = torch.as_tensor(prob.y_train, dtype=torch.long, device=self.device)
        self.y_test = torch.as_tensor(prob.y_test, dtype=torch.long, device=self.device)
        fams = [("h0", 1, M), ("w0", 1, C)]
        for k in range(1, K + 1):
            fams += [(f"uo{k}", T + 1, M), (f"ri{k}", T, P)]
        self.stream = ExactSite(fams, self._stream_cov, self.dtype, self.device)
        self.hidden = {}
        for k in range(1, K + 1):
            hf = [("ui", T + 1, M), ("ro", T, P)]
            if k % 2 and cfg.exact_linear:            # attention branch: linear, exact
                self.hidden[k] = ExactSite(hf, lambda name, k=k: self._hidden_cov(k, name), self.dtype, self.device)
            else:
                seed = cfg.seed * 7919 + k + (draw * 104729 if cfg.resample else 0)
                self.hidden[k] = MonteCarloSite(cfg.n_samples, hf, seed, cfg.rtol, cfg.ridge, self.dtype, self.device)

    # -- the covariances the exact sites read ------------------------------------------------------------------
    def _stream_cov(self, name: str) -> torch.Tensor:
        if name == "h0":
            return self.K0
        if name == "w0":
            return self.prob.rates.sigma_w2 * torch.eye(self.C, dtype=self.dtype, device=self.device)
        k = int(name[2:])
        return self.used["Psi"][k - 1] if name.startswith("uo") else self.used["Gz"][k - 1]

    def _hidden_cov(self, k: int, name: str) -> torch.Tensor:
        return self.used["Phi"][k - 1] if name == "ui" else self.used["G"][k - 1]

    # -- order parameters ------------------------------------------------------------------------------------------
    def take(self, name: str, index, value: torch.Tensor) -> torch.Tensor:
        """Store this sweep's estimate `value` of params[name][index]; return the value the sites use."""
        self.fresh[name][index] = value
        return self.used[name][index]

    def take_row(self, name: str, k: int | None, t: int, m: int, row: torch.Tensor) -> torch.Tensor:
        """A symmetric kernel's block row t (m, (t+1) m) and its transpose; returns the used row."""
        mat = self.fresh[name] if k is None else self.fresh[name][k]
        lo, hi = t * m, (t + 1) * m
        mat[lo:hi, :hi] = row
        mat[:hi, lo:hi] = row.T
        used = self.used[name] if k is None else self.used[name][k]
        return used[lo:hi, :hi]

    # -- the sweep -------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, torch.Tensor]:
        """Every site through t = 0..T; returns this sweep's estimates of every order parameter."""
        s, T, M, P, C, K = self.stream, self.T, self.M, self.P, self.C, self.K
        self.u = [None] + [s.zeros(T + 1, M) for _ in range(K + 1)]       # u[k], k = 1..K; u[K+1] = u_out
        self.e = [s.zeros(T, P) for _ in range(K + 1)]                      # e[k] at stream position k
        self.z = {k: h.zeros(T + 1, M) for k, h in self.hidden.items()}
        self.psi = {k: h.zeros(T + 1, M) for k, h in self.hidden.items()}
        self.gz = {k: h.zeros(T, P) for k, h in self.hidden.items()}
        self.delta = torch.zeros(T, P, C, dtype=self.dtype, device=self.device)
        self.w_acc = s.zeros(C)                                           # sum_s u_out(s) Delta(s), (S7)
        for t in range(T + 1):
            self.forward(t)
            if t < T:
                self.backward(t)
        # the sites and fields live for one sweep: drop them now (the exact sites' covariance callbacks refer back
        # to this sweep, a cycle that would keep every Monte Carlo sample alive until the cyclic collector runs)
        self.stream = self.hidden = self.u = self.e = self.z = self.psi = self.gz = None
        return self.fresh

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=self.dtype, device=self.device)

    def _sigma(self, k: int, t: int, h: torch.Tensor) -> torch.Tensor:
        """sigma_k(t) from the stream h_k(t) (S2); 1 with ln_normalise off."""
        est = (self.stream.mean_pairs(h, h) + LN_EPS).sqrt()
        if self.cfg.ln_normaliser == "none":
            est = torch.ones_like(est)
        elif self.cfg.ln_normaliser == "frozen" and t > 0:
            est = self.fresh["sigma"][k, 0].clone()
        if not torch.isfinite(est).all():
            raise SolverDiverged(f"the DMFT solution is not finite at step {t} (the LayerNorm normalisers); a "
                                 f"smaller --eta0 keeps it stable")
        return self.take("sigma", (k, t), est)

    def forward(self, t: int) -> None:
        """Forward fields of every site at time t, over training and test samples, then the outputs f(t)."""
        s, r, M, P, g0 = self.stream, self.prob.rates, self.M, self.P, self.prob.rates.gamma0
        h = s.source("h0", 0)                                             # (S1)
        if t:
            h = h + g0 * self.e[0][:, :t].sum(1) @ self.Kupd.T
        self.fresh["kernel_pooled"][0, t] = s.mean_outer(h[:, :P], h[:, :P])
        sigma = self._sigma(0, t, h)
        for k in range(1, self.K + 1):
            kind = "attn" if k % 2 else "mlp"
            u = h / sigma                                                 # (S2)
            self.u[k][:, t] = u
            phi_row = self.take_row("Phi", k - 1, t, M, s.mean_outer(u, self.u[k][:, :t + 1].reshape(s.rows, -1)))
            a_in = self._response("A_in", (k - 1, slice(t * M, (t + 1) * M), slice(0, t * P)),
                                  s.response(u, f"ri{k}", t, P))
            psi_row, a_out = self.hidden_forward(k, t, kind, phi_row, a_in)
            gamma = a_out + g0 * r.c_out[kind] * r.b * train_cols(psi_row, t, M, P)          # (S3)
            a = s.source(f"uo{k}", t) + self.e[k][:, :t].reshape(s.rows, -1) @ gamma.T
            h = h + r.b * a
            sigma = self._sigma(k, t, h)
            if k % 2 == 0:
                self.fresh["kernel_pooled"][k // 2, t] = s.mean_outer(h[:, :P], h[:, :P])   # H_{2l} on training
        u_out = h / sigma
        self.u[self.K + 1][:, t] = u_out
        phi_out = self.take_row("Phi_out", None, t, M, s.mean_outer(u_out, self.u[self.K + 1][:, :t + 1]
                                                                    .reshape(s.rows, -1)))
        w_coef = s.coefficients(u_out, "w0")                              # (C, M): d u_out / d w0
        f = r.sigma_w2 / g0 * w_coef.T                                    # (S8)
        if t:
            f = f + r.c_read * train_cols(phi_out, t, M, P) @ self.delta[:t].reshape(t * P, self.C)
        if not torch.isfinite(f).all():
            raise SolverDiverged(f"the DMFT solution is not finite at step {t} (the outputs); a smaller --eta0 "
                                 f"keeps it stable")
        f = self.take("f", t, f)
        if t < self.T:
            self.delta[t] = loss_and_delta(f[:P], self.y, self.prob.loss)[1]

    def _response(self, name: str, index, value: torch.Tensor) -> torch.Tensor:
        """A response function's block (zero when the responses are switched off)."""
        if not self.cfg.responses:
            value = torch.zeros_like(value)
        return self.take(name, index, value)

    def hidden_forward(self, k: int, t: int, kind: str, phi_row: torch.Tensor, a_in: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden site of branch k at time t (H1): z = ui + sum (A_in + gamma0 c_in b Phi) gz, psi(z); returns
        (the used Psi row t, the used A_out block (t, <t))."""
        hs, r, M, P, g0 = self.hidden[k], self.prob.rates, self.M, self.P, self.prob.rates.gamma0
        ui = hs.source("ui", t, phi_row)
        gamma = a_in + g0 * r.c_in[kind] * r.b * train_cols(phi_row, t, M, P)
        z = ui + self.gz[k][:, :t].reshape(hs.rows, -1) @ gamma.T
        psi = z if kind == "attn" else gelu(z)
        self.z[k][:, t], self.psi[k][:, t] = z, psi
        psi_row = self.take_row("Psi", k - 1, t, M, hs.mean_outer(psi, self.psi[k][:, :t + 1].reshape(hs.rows, -1)))
        cv = None if kind == "attn" else gelu(ui)
        a_out = self._response("A_out", (k - 1, slice(t * M, (t + 1) * M), slice(0, t * P)),
                               hs.response(psi, "ro", t, P, cv))
        return psi_row, a_out

    def backward(self, t: int) -> None:
        """Backward fields at time t (training samples), from the readout down to the embedding."""
        s, r, P, g0, K = self.stream, self.prob.rates, self.P, self.prob.rates.gamma0, self.K
        u_out = self.u[K + 1][:, t, :P]
        if t:
            self.w_acc = self.w_acc + self.u[K + 1][:, t - 1, :P] @ self.delta[t - 1]
        w = s.source("w0", 0) + g0 * r.c_read * self.w_acc                 # (S7)
        e_out = w @ self.delta[t].T                                        # (rows, P)
        kap = s.mean_pairs(u_out, e_out) if self.cfg.ln_projection else self._zeros(P)
        kap = self.take("kappa_out", t, kap)
        sig = self.used["sigma"][K, t, :P]
        e = (e_out - u_out * kap) / sig                                    # (S6)
        self.e[K][:, t] = e
        for k in range(K, 0, -1):
            kind = "attn" if k % 2 else "mlp"
            g_row = self.take_row("G", k - 1, t, P, s.mean_outer(e, self.e[k][:, :t + 1].reshape(s.rows, -1)))
            b_out = self._response("B_out", (k - 1, slice(t * P, (t + 1) * P), slice(0, (t + 1) * P)),
                                   s.response(e, f"uo{k}", t + 1, P))
            gz_row, b_in = self.hidden_backward(k, t, kind, g_row, b_out)
            u = self.u[k]
            zeta = (s.source(f"ri{k}", t) + u[:, :t + 1, :P].reshape(s.rows, -1) @ b_in.T
                    + g0 * r.c_in[kind] * r.b * u[:, :t, :P].reshape(s.rows, -1) @ gz_row[:, :t * P].T)   # (S5)
            kap = s.mean_pairs(u[:, t, :P], zeta) if self.cfg.ln_projection else self._zeros(P)
            kap = self.take("kappa", (k - 1, t), kap)
            sig = self.used["sigma"][k - 1, t, :P]
            e = e + r.b / sig * (zeta - u[:, t, :P] * kap)                    # (S6)
            self.e[k - 1][:, t] = e

    def hidden_backward(self, k: int, t: int, kind: str, g_row: torch.Tensor, b_out: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden site of branch k at time t (H2, H3): xi = ro + sum B_out psi + gamma0 c_out b sum G psi,
        gz = psi'(z) xi; returns (the used Gz row t, the used B_in block (t, <=t))."""
        hs, r, P, g0 = self.hidden[k], self.prob.rates, self.P, self.prob.rates.gamma0
        ro = hs.source("ro", t, g_row)
        psi = self.psi[k][:, :t + 1, :P]
        xi = (ro + psi.reshape(hs.rows, -1) @ b_out.T
              + g0 * r.c_out[kind] * r.b * psi[:, :t].reshape(hs.rows, -1) @ g_row[:, :t * P].T)
        if kind == "attn":
            gz, cv = xi, None
        else:
            gz = gelu_prime(self.z[k][:, t, :P]) * xi
            cv = gelu_prime(hs.gauss["ui"].samples[:, t, :P]) * ro
        self.gz[k][:, t] = gz
        gz_row = self.take_row("Gz", k - 1, t, P, hs.mean_outer(gz, self.gz[k][:, :t + 1].reshape(hs.rows, -1)))
        b_in = self._response("B_in", (k - 1, slice(t * P, (t + 1) * P), slice(0, (t + 1) * P)),
                              hs.response(gz, "ui", t + 1, P, cv))
        return gz_row, b_in


# ------------------------------------------------------------------------------------------------------- solve
@dataclass
class Solution:
    """What `solve` returns: params (the order parameters, module docstring), the training and test losses and
    outputs derived from them, and the iteration's record."""

    params: dict[str, torch.Tensor]
    residuals: list[float]
    converged: bool
    iterations: int
    wall_s: float
    config: SolverConfig
    problem: Problem
    extra: dict = field(default_factory=dict)

    @property
    def residual(self) -> float:
        return self.residuals[-1] if self.residuals else math.inf

    def outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(training outputs (T+1, P, C), test outputs (T+1, P_test, C))."""
        f = self.params["f"]
        return f[:, :self.problem.P], f[:, self.problem.P:]

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss (T+1,), test loss (T+1,)) of the outputs."""
        ftr, fte = self.outputs()
        y = torch.as_tensor(self.problem.y_train, dtype=torch.long)
        yt = torch.as_tensor(self.problem.y_test, dtype=torch.long)
        tr = torch.stack([loss_and_delta(ftr[t].cpu(), y, self.problem.loss)[0] for t in range(len(ftr))])
        te = torch.stack([loss_and_delta(fte[t].cpu(), yt, self.problem.loss)[0] for t in range(len(fte))]) \
            if len(yt) else torch.full((len(ftr),), math.nan, dtype=ftr.dtype)
        return tr, te


def solve(prob: Problem, cfg: SolverConfig | None = None, progress=None) -> Solution:
    """Solve the DMFT of `prob` (docs/dmft-dynamics.md): the initial guess (cfg.init), then damped Jacobi sweeps
    until the self-consistency residual is below cfg.tol or cfg.max_iter sweeps were made. progress(i, residual)
    is called after every iteration when given."""
    cfg = cfg or SolverConfig()
    t0 = time.perf_counter()
    if cfg.init == "causal":
        params = Sweep(prob, cfg, None, 0).run()
    else:
        params = zero_params(prob, getattr(torch, cfg.dtype), torch.device(cfg.device))
    residuals: list[float] = []
    converged = False
    for i in range(1, cfg.max_iter + 1):
        fresh = Sweep(prob, cfg, params, i).run()
        residuals.append(residual(params, fresh))
        a = cfg.damping
        params = fresh if a == 1.0 else {k: (1 - a) * params[k] + a * fresh[k] for k in params}
        if progress is not None:
            progress(i, residuals[-1])
        if residuals[-1] <= cfg.tol:
            converged = True
            break
    return Solution(params, residuals, converged, len(residuals), time.perf_counter() - t0, cfg, prob)
