"""The sample-and-iterate DMFT solver of full-batch SGD training in the mean-field limit: d = N*H -> oo with one
token per sample (stage 1), N -> oo at fixed H with S > 1 tokens at alpha_A = 1 (stage 2). docs/dmft-dynamics.md
derives every line below; the equation tags (S1)-(S9), (H1)-(H4) and (A1)-(A5) refer to it.

Sites: the residual stream (exact, linear), and per branch k = 1..2L the hidden layer (odd k: the attention branch,
linear given the deterministic attention variables A(t) and exact: W_O W_V at one token, W_O softmax(A) W_V with
q = W_Q u, k = W_K u at S > 1; even k: the GELU MLP, Monte Carlo). Order parameters, over forward indices
a = (t, mu, s) (F = (T+1) M S of them, training samples mu < P first, then test samples; token s of sample mu at
mu*S + s) and backward indices b = (t, nu, s) (B = T P S, training samples only):
  sigma[k](t, mu s) LayerNorm normaliser of the stream h_k, sqrt(H_k(a, a) + eps)          k = 0..2L
  Phi[k] (F, F)     kernel of u_k = h_{k-1} / sigma_{k-1}, the input of branch k
  Psi[k] (F, F)     kernel of psi_k, the hidden activation of branch k (the attention's softmax-mixed values)
  G[k] (B, B)       kernel of the backward field e_k at stream position k
  Gz[k] (B, B)      kernel of the hidden backward field gz_k (W_V's for attention)
  A_in[k] (F, B), A_out[k] (F, B), B_in[k] (B, Ftr), B_out[k] (B, Ftr)   response functions (Ftr: training a)
  kappa[k](t, nu s), kappa_out(t, nu s)   LayerNorm projections E[u e] of the backward pass
  Phi_out ((T+1) M, (T+1) M)   kernel of the readout's input, the token mean of LN(h_2L)
  f (T+1, M, C)     the centred outputs; Delta = -dLoss/df from them
  S > 1, per block l: Gz_q, Gz_k, A_in_q, A_in_k, B_in_q, B_in_k (the W_Q, W_K roles), attn (T+1, M, S, S) the
  attention variables A(t) (A1), attn_D (T, P, S, S) the attention gradient D(t) (A4)
One sweep runs every site through t = 0..T in causal order. With `params` None (the causal, Gauss-Seidel sweep)
each order parameter is used as soon as this sweep has estimated it; given `params` (the Jacobi sweep of the
iteration) every site uses those and the sweep returns fresh estimates of all of them.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, fields

import torch

from .setup import LN_EPS, Problem
from .sites import ExactSite, MonteCarloSite, gelu, gelu_prime

INITS = ("causal", "zero")
LN_NORMALISERS = ("exact", "frozen", "none")
ATTENTION = ("learned", "frozen")
# the command-line options of the settings `dmft-probe solve` exposes (messages name them)
FLAGS = {
    "n_samples": "--samples",
    "seed": "--solver-seed",
    "damping": "--damping",
    "max_iter": "--max-iter",
    "tol": "--tol",
}


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
    of the backward pass (kappa = 0); attention "frozen" keeps every A(t) at its value 0 at t = 0 (uniform
    attention; with S > 1 tokens). The defaults are the equations; the others exist to show that the finite
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
    attention: str = "learned"

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
        if self.attention not in ATTENTION:
            bad("attention", f"one of {', '.join(ATTENTION)}")
        if self.ln_normaliser not in LN_NORMALISERS:
            bad("ln_normaliser", f"one of {', '.join(LN_NORMALISERS)}")
        for name in ("resample", "exact_linear", "responses", "ln_projection"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "true or false")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------------------------------- order parameters
SYMMETRIC = ("Phi", "Psi", "G", "Gz", "Gz_q", "Gz_k", "Phi_out")
ITERATED = (
    "sigma",
    "Phi",
    "Psi",
    "G",
    "Gz",
    "A_in",
    "A_out",
    "B_in",
    "B_out",
    "kappa",
    "kappa_out",
    "Phi_out",
    "f",
    "Gz_q",
    "Gz_k",
    "A_in_q",
    "A_in_k",
    "B_in_q",
    "B_in_k",
    "attn",
    "attn_D",
)
# the input roles of a branch: (role, suffix of its order parameters and source families); attention with more
# than one token has three (W_Q, W_K, W_V), everything else one
ROLES_ONE = (("in", ""),)
ROLES_QKV = (("in", ""), ("q", "_q"), ("k", "_k"))


def zero_params(prob: Problem, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Every order parameter at zero (sigma at one), with its shape (module docstring). Token-level indices run
    over (sample, token) pairs, mu*S + s; the W_Q, W_K order parameters and the attention variables have a
    leading dimension of L blocks when S > 1, of 0 otherwise."""
    T, M, P, C, K, S = prob.steps, prob.M, prob.P, prob.n_classes, 2 * prob.L, prob.S
    F, B, Ftr = (T + 1) * M * S, T * P * S, (T + 1) * P * S
    Lq = prob.L if S > 1 else 0

    def z(*shape):
        return torch.zeros(*shape, dtype=dtype, device=device)

    return {
        "sigma": torch.ones(K + 1, T + 1, M * S, dtype=dtype, device=device),
        "Phi": z(K, F, F),
        "Psi": z(K, F, F),
        "G": z(K, B, B),
        "Gz": z(K, B, B),
        "A_in": z(K, F, B),
        "A_out": z(K, F, B),
        "B_in": z(K, B, Ftr),
        "B_out": z(K, B, Ftr),
        "kappa": z(K, T, P * S),
        "kappa_out": z(T, P * S),
        "Phi_out": z((T + 1) * M, (T + 1) * M),
        "f": z(T + 1, M, C),
        "kernel_pooled": z(prob.L + 1, T + 1, P, P),
        "kernel_grad": z(prob.L + 1, T, P, P),
        "Gz_q": z(Lq, B, B),
        "Gz_k": z(Lq, B, B),
        "A_in_q": z(Lq, F, B),
        "A_in_k": z(Lq, F, B),
        "B_in_q": z(Lq, B, Ftr),
        "B_in_k": z(Lq, B, Ftr),
        "attn": z(Lq, T + 1, M, S, S),
        "attn_D": z(Lq, T, P, S, S),
    }


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
    return row[:, : t_end * M].reshape(row.shape[0], t_end, M)[:, :, :P].reshape(row.shape[0], t_end * P)


def sample_blocks(X: torch.Tensor, n: int, S: int) -> torch.Tensor:
    """The (sample, sample) diagonal blocks of a token-level matrix X (n S, n S), index mu*S + s: (n, S, S)."""
    return torch.diagonal(X.reshape(n, S, n, S), dim1=0, dim2=2).permute(2, 0, 1)


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
    estimates of this sweep (params None) or `params`; `fresh` collects this sweep's estimates.

    Stream and hidden fields are indexed by tokens: Mt = M S forward tokens (mu*S + s, training samples first) and
    Pt = P S training tokens; with S = 1 tokens are samples (stage 1)."""

    def __init__(self, prob: Problem, cfg: SolverConfig, params: dict[str, torch.Tensor] | None, draw: int):
        self.prob, self.cfg = prob, cfg
        self.dtype = getattr(torch, cfg.dtype)
        self.device = torch.device(cfg.device)
        self.fresh = zero_params(prob, self.dtype, self.device)
        self.used = self.fresh if params is None else params
        r = prob.rates
        T, M, P, C, K, S = prob.steps, prob.M, prob.P, prob.n_classes, 2 * prob.L, prob.S
        self.T, self.M, self.P, self.C, self.K, self.S = T, M, P, C, K, S
        self.Mt, self.Pt = M * S, P * S
        Mt, Pt = self.Mt, self.Pt
        gram = torch.as_tensor(prob.input_gram(), dtype=self.dtype, device=self.device)  # (Mt, Mt)
        same_pos = torch.eye(S, dtype=self.dtype, device=self.device).repeat(M, M)  # delta_(s, s')
        self.K0 = r.s_embed * gram + r.s_pos * same_pos  # (S1): Cov h_0(0), token-level
        self.Kupd = (r.c_embed * gram + r.c_pos * same_pos)[:, :Pt]  # (S1): the embedding and position update
        self.y = torch.as_tensor(prob.y_train, dtype=torch.long, device=self.device)
        self.y_test = torch.as_tensor(prob.y_test, dtype=torch.long, device=self.device)
        self.c_role = {"q": r.c_qk, "k": r.c_qk} if r.c_qk is not None else {}  # W_Q, W_K: only when S > 1
        fams = [("h0", 1, Mt), ("w0", 1, C)]
        for k in range(1, K + 1):
            fams += [(f"uo{k}", T + 1, Mt)] + [(f"ri{k}{sfx[1:]}", T, Pt) for _, sfx in self.roles(k)]
        self.stream = ExactSite(fams, self._stream_cov, self.dtype, self.device)
        self.hidden: dict[int, ExactSite | MonteCarloSite] = {}
        for k in range(1, K + 1):
            hf = [("ui", T + 1, Mt), ("ro", T, Pt)] + [(f"ui{sfx[1:]}", T + 1, Mt) for _, sfx in self.roles(k)[1:]]
            if k % 2 and cfg.exact_linear:  # attention branch: linear given A(t), exact
                self.hidden[k] = ExactSite(hf, functools.partial(self._hidden_cov, k), self.dtype, self.device)
            else:
                seed = cfg.seed * 7919 + k + (draw * 104729 if cfg.resample else 0)
                self.hidden[k] = MonteCarloSite(cfg.n_samples, hf, seed, cfg.rtol, cfg.ridge, self.dtype, self.device)

    def roles(self, k: int) -> tuple[tuple[str, str], ...]:
        """The input roles of branch k: (role, suffix); W_Q and W_K only for attention with S > 1."""
        return ROLES_QKV if (k % 2 and self.S > 1) else ROLES_ONE

    def op(self, name: str, sfx: str, k: int) -> tuple[str, int]:
        """(order parameter name, first index) of `name` for the role with suffix sfx in branch k: the W_V / MLP
        role is indexed by branch, W_Q and W_K by block."""
        return (name + sfx, (k - 1) // 2) if sfx else (name, k - 1)

    # -- the covariances the exact sites read ------------------------------------------------------------------
    def _stream_cov(self, name: str) -> torch.Tensor:
        if name == "h0":
            return self.K0
        if name == "w0":
            return self.prob.rates.sigma_w2 * torch.eye(self.C, dtype=self.dtype, device=self.device)
        if name.startswith("uo"):
            return self.used["Psi"][int(name[2:]) - 1]
        sfx = "_" + name[-1] if name[-1] in "qk" else ""
        key, i = self.op("Gz", sfx, int(name[2:].rstrip("qk")))
        return self.used[key][i]

    def _hidden_cov(self, k: int, name: str) -> torch.Tensor:
        return self.used["G"][k - 1] if name == "ro" else self.used["Phi"][k - 1]

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
        Mt, Pt = self.Mt, self.Pt
        self.u = [s.zeros(0)] + [s.zeros(T + 1, Mt) for _ in range(K + 1)]  # u[k], k = 1..K; u[K+1]: LN(h_2L)
        self.u_out = s.zeros(T + 1, M)  # the readout's input, mean over tokens
        self.e = [s.zeros(T, Pt) for _ in range(K + 1)]  # e[k] at stream position k
        # hidden fields per branch: the branch input z (W_V u for attention), psi (the value mixed by softmax(A)
        # for attention, gelu(z) for the MLP) and gz; attention with S > 1 also q, k and their backward fields
        self.z = {k: h.zeros(T + 1, Mt) for k, h in self.hidden.items()}
        self.psi = {k: h.zeros(T + 1, Mt) for k, h in self.hidden.items()}
        self.gz = {(k, sfx): h.zeros(T, Pt) for k, h in self.hidden.items() for _, sfx in self.roles(k)}
        self.qk = {(k, sfx): h.zeros(T + 1, Mt) for k, h in self.hidden.items() for _, sfx in self.roles(k)[1:]}
        self.delta = torch.zeros(T, P, C, dtype=self.dtype, device=self.device)
        self.w_acc = s.zeros(C)  # sum_s u_out(s) Delta(s), (S7)
        for t in range(T + 1):
            self.forward(t)
            if t < T:
                self.backward(t)
        # the sites and fields live for one sweep: drop them now (the exact sites' covariance callbacks refer back
        # to this sweep, a cycle that would keep every Monte Carlo sample alive until the cyclic collector runs)
        del self.stream, self.hidden, self.u, self.u_out, self.e, self.z, self.psi, self.gz, self.qk
        return self.fresh

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=self.dtype, device=self.device)

    def _pooled(self, X: torch.Tensor, n: int) -> torch.Tensor:
        """The mean over tokens of a token-level field X (rows, n S): (rows, n)."""
        return X.reshape(X.shape[0], n, self.S).mean(-1)

    def _sigma(self, k: int, t: int, h: torch.Tensor) -> torch.Tensor:
        """sigma_k(t) from the stream h_k(t) (S2); 1 with ln_normalise off."""
        est = (self.stream.mean_pairs(h, h) + LN_EPS).sqrt()
        if self.cfg.ln_normaliser == "none":
            est = torch.ones_like(est)
        elif self.cfg.ln_normaliser == "frozen" and t > 0:
            est = self.fresh["sigma"][k, 0].clone()
        if not torch.isfinite(est).all():
            raise SolverDiverged(
                f"the DMFT solution is not finite at step {t} (the LayerNorm normalisers); a "
                f"smaller --eta0 keeps it stable"
            )
        return self.take("sigma", (k, t), est)

    def _pooled_kernel(self, name: str, depth: int, t: int, X: torch.Tensor) -> None:
        """kernel_pooled / kernel_grad at (depth, t): E[Xbar Xbar'] over the training samples, Xbar the token mean
        (features) or the token sum (gradients) of X (rows, Pt)."""
        Xb = self._pooled(X, self.P) * (self.S if name == "kernel_grad" else 1)
        self.fresh[name][depth, t] = self.stream.mean_outer(Xb, Xb)

    def forward(self, t: int) -> None:
        """Forward fields of every site at time t, over training and test samples, then the outputs f(t)."""
        s, r, M, P, g0 = self.stream, self.prob.rates, self.M, self.P, self.prob.rates.gamma0
        Mt, Pt = self.Mt, self.Pt
        h = s.source("h0", 0)  # (S1)
        if t:
            h = h + g0 * self.e[0][:, :t].sum(1) @ self.Kupd.T
        self._pooled_kernel("kernel_pooled", 0, t, h[:, :Pt])
        sigma = self._sigma(0, t, h)
        for k in range(1, self.K + 1):
            kind = "attn" if k % 2 else "mlp"
            u = h / sigma  # (S2)
            self.u[k][:, t] = u
            phi_row = self.take_row("Phi", k - 1, t, Mt, s.mean_outer(u, self.u[k][:, : t + 1].reshape(s.rows, -1)))
            a_in = {}
            for _, sfx in self.roles(k):
                key, i = self.op("A_in", sfx, k)
                a_in[sfx] = self._response(
                    key, (i, slice(t * Mt, (t + 1) * Mt), slice(0, t * Pt)), s.response(u, f"ri{k}{sfx[1:]}", t, Pt)
                )
            psi_row, a_out = self.hidden_forward(k, t, kind, phi_row, a_in)
            gamma = a_out + g0 * r.c_out[kind] * r.b * train_cols(psi_row, t, Mt, Pt)  # (S3)
            a = s.source(f"uo{k}", t) + self.e[k][:, :t].reshape(s.rows, -1) @ gamma.T
            h = h + r.b * a
            sigma = self._sigma(k, t, h)
            if k % 2 == 0:
                self._pooled_kernel("kernel_pooled", k // 2, t, h[:, :Pt])  # H_{2l} on training
        self.u[self.K + 1][:, t] = h / sigma
        u_out = self._pooled(h / sigma, M)  # (S2): LN per token, mean over tokens
        self.u_out[:, t] = u_out
        phi_out = self.take_row("Phi_out", None, t, M, s.mean_outer(u_out, self.u_out[:, : t + 1].reshape(s.rows, -1)))
        w_coef = s.coefficients(u_out, "w0")  # (C, M): d u_out / d w0
        f = r.sigma_w2 / g0 * w_coef.T  # (S8)
        if t:
            f = f + r.c_read * train_cols(phi_out, t, M, P) @ self.delta[:t].reshape(t * P, self.C)
        if not torch.isfinite(f).all():
            raise SolverDiverged(
                f"the DMFT solution is not finite at step {t} (the outputs); a smaller --eta0 keeps it stable"
            )
        f = self.take("f", t, f)
        if t < self.T:
            self.delta[t] = loss_and_delta(f[:P], self.y, self.prob.loss)[1]

    def _response(self, name: str, index, value: torch.Tensor) -> torch.Tensor:
        """A response function's block (zero when the responses are switched off)."""
        if not self.cfg.responses:
            value = torch.zeros_like(value)
        return self.take(name, index, value)

    def _input_field(
        self, k: int, t: int, sfx: str, kind: str, phi_row: torch.Tensor, a_in: torch.Tensor
    ) -> torch.Tensor:
        """(H1) for one input role: its source + sum_{s<t} (A_in + gamma0 c b Phi) g(s), at time t (rows, Mt)."""
        hs, r, g0 = self.hidden[k], self.prob.rates, self.prob.rates.gamma0
        src = hs.source("ui" + sfx[1:], t, phi_row)
        c = r.c_in[kind] if not sfx else self.c_role[sfx[1:]]
        gamma = a_in + g0 * c * r.b * train_cols(phi_row, t, self.Mt, self.Pt)
        return src + self.gz[k, sfx][:, :t].reshape(hs.rows, -1) @ gamma.T

    def _softmax(self, k: int, t: int, n: int) -> torch.Tensor:
        """softmax over keys of the used A(t) of branch k's block on the first n samples: (n, S, S)."""
        return torch.softmax(self.used["attn"][(k - 1) // 2, t, :n], dim=-1)

    def hidden_forward(
        self, k: int, t: int, kind: str, phi_row: torch.Tensor, a_in: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden site of branch k at time t (H1): z = ui + sum (A_in + gamma0 c_in b Phi) gz, psi(z); with
        S > 1 tokens the attention branch also has q, k (the same form), A(t) = E[q k^T] per sample (A1) and
        psi = softmax(A) z (A2). Returns (the used Psi row t, the used A_out block (t, <t))."""
        hs, M, Mt, Pt, S = self.hidden[k], self.M, self.Mt, self.Pt, self.S
        z = self._input_field(k, t, "", kind, phi_row, a_in[""])
        self.z[k][:, t] = z
        if kind == "mlp":
            psi = gelu(z)
        elif S == 1:
            psi = z  # one key: softmax(A) = 1
        else:
            q, kk = (self._input_field(k, t, sfx, kind, phi_row, a_in[sfx]) for sfx in ("_q", "_k"))
            self.qk[k, "_q"][:, t], self.qk[k, "_k"][:, t] = q, kk
            A = sample_blocks(hs.mean_outer(q, kk), M, S)  # (A1): (M, S, S), A[mu, s, s']
            if self.cfg.attention == "frozen":
                A = torch.zeros_like(A)
            self.take("attn", ((k - 1) // 2, t), A)
            p = self._softmax(k, t, M)  # (M, S, S)
            psi = torch.einsum("rmj,msj->rms", z.reshape(hs.rows, M, S), p).reshape(hs.rows, Mt)  # (A2)
        self.psi[k][:, t] = psi
        psi_row = self.take_row("Psi", k - 1, t, Mt, hs.mean_outer(psi, self.psi[k][:, : t + 1].reshape(hs.rows, -1)))
        cv = gelu(hs.gauss["ui"].samples[:, t]) if kind == "mlp" and isinstance(hs, MonteCarloSite) else None
        a_out = self._response(
            "A_out", (k - 1, slice(t * Mt, (t + 1) * Mt), slice(0, t * Pt)), hs.response(psi, "ro", t, Pt, cv)
        )
        return psi_row, a_out

    def backward(self, t: int) -> None:
        """Backward fields at time t (training samples), from the readout down to the embedding."""
        s, r, P, g0, K, S = self.stream, self.prob.rates, self.P, self.prob.rates.gamma0, self.K, self.S
        Pt = self.Pt
        u_tok = self.u[K + 1][:, t, :Pt]  # LN(h_2L) per training token
        if t:
            self.w_acc = self.w_acc + self.u_out[:, t - 1, :P] @ self.delta[t - 1]
        w = s.source("w0", 0) + g0 * r.c_read * self.w_acc  # (S7)
        e_out = (w @ self.delta[t].T).repeat_interleave(S, dim=1)  # (rows, Pt): e_out of each token's sample
        kap = s.mean_pairs(u_tok, e_out) if self.cfg.ln_projection else self._zeros(Pt)
        kap = self.take("kappa_out", t, kap)
        sig = self.used["sigma"][K, t, :Pt]
        e = (e_out - u_tok * kap) / (S * sig)  # (S6): the token mean, then LN per token
        self.e[K][:, t] = e
        self._pooled_kernel("kernel_grad", self.prob.L, t, e)
        for k in range(K, 0, -1):
            kind = "attn" if k % 2 else "mlp"
            g_row = self.take_row("G", k - 1, t, Pt, s.mean_outer(e, self.e[k][:, : t + 1].reshape(s.rows, -1)))
            b_out = self._response(
                "B_out",
                (k - 1, slice(t * Pt, (t + 1) * Pt), slice(0, (t + 1) * Pt)),
                s.response(e, f"uo{k}", t + 1, Pt),
            )
            rows = self.hidden_backward(k, t, kind, g_row, b_out)
            u = self.u[k]
            zeta = s.zeros(Pt)
            for (role, sfx), (gz_row, b_in) in zip(self.roles(k), rows):
                c = r.c_in[kind] if not sfx else self.c_role[role]
                zeta = zeta + (
                    s.source(f"ri{k}{sfx[1:]}", t)
                    + u[:, : t + 1, :Pt].reshape(s.rows, -1) @ b_in.T
                    + g0 * c * r.b * u[:, :t, :Pt].reshape(s.rows, -1) @ gz_row[:, : t * Pt].T
                )  # (S5)
            kap = s.mean_pairs(u[:, t, :Pt], zeta) if self.cfg.ln_projection else self._zeros(Pt)
            kap = self.take("kappa", (k - 1, t), kap)
            sig = self.used["sigma"][k - 1, t, :Pt]
            e = e + r.b / sig * (zeta - u[:, t, :Pt] * kap)  # (S6)
            self.e[k - 1][:, t] = e
            if k % 2:
                self._pooled_kernel("kernel_grad", (k - 1) // 2, t, e)

    def hidden_backward(
        self, k: int, t: int, kind: str, g_row: torch.Tensor, b_out: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The hidden site of branch k at time t (H2, H3): xi = ro + sum B_out psi + gamma0 c_out b sum G psi, and
        the backward field of each input role: gz = psi'(z) xi (MLP), xi (attention, one token), and with S > 1
        (A3)-(A5): g_v = softmax(A)^T xi, D = softmax(A) * E[xi (v - psi)], g_q = D k, g_k = D^T q. Returns per
        role (in `roles(k)` order) (the used Gz row t, the used B_in block (t, <=t))."""
        hs, r, P, Pt, S, g0 = self.hidden[k], self.prob.rates, self.P, self.Pt, self.S, self.prob.rates.gamma0
        ro = hs.source("ro", t, g_row)
        psi = self.psi[k][:, : t + 1, :Pt]
        xi = (
            ro
            + psi.reshape(hs.rows, -1) @ b_out.T
            + g0 * r.c_out[kind] * r.b * psi[:, :t].reshape(hs.rows, -1) @ g_row[:, : t * Pt].T
        )
        cv = None
        if kind == "mlp":
            grads = {"": gelu_prime(self.z[k][:, t, :Pt]) * xi}
            if isinstance(hs, MonteCarloSite):
                cv = gelu_prime(hs.gauss["ui"].samples[:, t, :Pt]) * ro
        elif S == 1:
            grads = {"": xi}
        else:
            p = self._softmax(k, t, P)  # (P, S, S)
            n = hs.rows
            v, o = self.z[k][:, t, :Pt], self.psi[k][:, t, :Pt]
            q, kk = self.qk[k, "_q"][:, t, :Pt], self.qk[k, "_k"][:, t, :Pt]
            # (A4): E[xi(s) (v(s') - psi(s))] per sample, then D = softmax(A) * it, (P, S, S)
            corr = sample_blocks(hs.mean_outer(xi, v), P, S) - hs.mean_pairs(xi, o).reshape(P, S, 1)
            D = self.take("attn_D", ((k - 1) // 2, t), p * corr)
            x3, q3, k3 = (X.reshape(n, P, S) for X in (xi, q, kk))  # (rows, P, S)
            grads = {
                "": torch.einsum("rns,nsj->rnj", x3, p).reshape(n, Pt),  # (A3): g_v = softmax(A)^T xi
                "_q": torch.einsum("rnj,nsj->rns", k3, D).reshape(n, Pt),  # (A5): g_q = D k
                "_k": torch.einsum("rns,nsj->rnj", q3, D).reshape(n, Pt),
            }  # (A5): g_k = D^T q
        out = []
        for _role, sfx in self.roles(k):
            g = grads[sfx]
            self.gz[k, sfx][:, t] = g
            key, i = self.op("Gz", sfx, k)
            gz_row = self.take_row(key, i, t, Pt, hs.mean_outer(g, self.gz[k, sfx][:, : t + 1].reshape(hs.rows, -1)))
            key, i = self.op("B_in", sfx, k)
            b_in = self._response(
                key,
                (i, slice(t * Pt, (t + 1) * Pt), slice(0, (t + 1) * Pt)),
                hs.response(g, "ui" + sfx[1:], t + 1, Pt, cv if not sfx else None),
            )
            out.append((gz_row, b_in))
        return out


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
        return f[:, : self.problem.P], f[:, self.problem.P :]

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss (T+1,), test loss (T+1,)) of the outputs."""
        ftr, fte = self.outputs()
        y = torch.as_tensor(self.problem.y_train, dtype=torch.long)
        yt = torch.as_tensor(self.problem.y_test, dtype=torch.long)
        tr = torch.stack([loss_and_delta(ftr[t].cpu(), y, self.problem.loss)[0] for t in range(len(ftr))])
        te = (
            torch.stack([loss_and_delta(fte[t].cpu(), yt, self.problem.loss)[0] for t in range(len(fte))])
            if len(yt)
            else torch.full((len(ftr),), math.nan, dtype=ftr.dtype)
        )
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
