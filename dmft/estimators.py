"""Per-size estimates of a swept quantity and their leave-one-seed-out replicates, on arrays (pure numpy).

The input is Q[..., size, seed, entry] (leading dims: independent repetitions, e.g. synthetic sweeps in
`dmft.power`), NaN for a (size, seed) point that is left out (diverged). **Seed s is the same draw at every size**
(the N = 4 embedding is the first rows of N = 8's; docs/predictions.md, "The verdict rule"), so every estimate
here is computed with one set of seed weights for all sizes at once: the jackknife deletes seed s at every size
together (`jackknife_weights`), and the noise corrections use the covariance of one seed's values across sizes.

What is estimated per size n (units: the quantity's squared; "||.||^2" is the mean over entries of the square):

- `seed_variance`: v(n), the unbiased variance over seeds, mean over entries;
- `contrast_square`: for a linear combination sum_k w_k mu(n_k) of the true seed means, an unbiased estimate of
  its squared norm: ||sum_k w_k m_k||^2 minus the estimated variance of that combination of seed means (which
  uses the cross-size covariances: with shared draws, m_k and m_l are correlated);
- `bias_pairs`: the squared bias of the seed mean from successive sizes, without a limit estimate: for
  mu(n) = Q_oo + c n^-q, (mu(n_k+1) - mu(n_k)) / log(n_k+1 / n_k) = -q c n*^-q (1 + O(step^2)) at
  n* = sqrt(n_k n_k+1), exactly proportional to c n*^-q for sizes in a geometric progression; so the squared,
  noise-corrected successive differences per unit log size have the exponent -2q of the squared bias;
- `distance`: the mean-square distance of one seed from the limit estimate sum_k b_k m_k (largest size or
  Richardson weights), noise-corrected: contrast_square(e_i - b) + v(n_i), i.e. bias^2 + variance;
- `plateau`: v_inf / v(n_min), with v_inf from the least-squares fit v(n) = v_inf + c n^-p (p fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "KINDS",
    "Moments",
    "bias_pairs",
    "contrast_square",
    "distance",
    "jackknife_weights",
    "moments",
    "plateau",
    "plateau_local",
    "richardson_weights",
    "row_estimate",
    "seed_variance",
]


def jackknife_weights(seeds: int) -> np.ndarray:
    """(seeds + 1, seeds) weights: row 0 keeps every seed (the estimate), row i + 1 deletes seed i (at every size)."""
    w = np.ones((seeds + 1, seeds))
    w[1 + np.arange(seeds), np.arange(seeds)] = 0.0
    return w


def richardson_weights(sizes, order: float = 1.0) -> np.ndarray:
    """The weights b_k with Q_oo = sum_k b_k m_k of the least-squares fit m(n) = Q_oo + c n^-order over `sizes`
    (they sum to 1; dimensionless). ValueError with fewer than 2 distinct sizes."""
    x = np.asarray(sizes, dtype=float) ** -float(order)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"Richardson extrapolation needs at least 2 distinct sizes, got {list(sizes)}")
    xc = x - x.mean()
    return 1.0 / len(x) - x.mean() * xc / np.sum(xc**2)


@dataclass(frozen=True, eq=False)
class Moments:
    """First and second moments over seeds, per jackknife row J (row 0: every seed).

    mean (..., J, n, E): seed means; count (..., J, n): seeds behind them; cov (..., J, n, n): the covariance of
    one seed's values at sizes j and k (mean over entries, ddof 1, over the seeds present at both);
    cross (..., J, n, n): how many seeds are present at both."""

    mean: np.ndarray
    count: np.ndarray
    cov: np.ndarray
    cross: np.ndarray

    def mean_cov(self) -> np.ndarray:
        """(..., J, n, n): the estimated covariance of the seed means m_j and m_k (mean over entries)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.cov * self.cross / (self.count[..., :, None] * self.count[..., None, :])


def moments(q: np.ndarray, weights: np.ndarray) -> Moments:
    """Moments of Q[..., n, S, E] under seed weights (J, S) (0/1: `jackknife_weights`). A (size, seed) point is
    present when all its entries are finite. Values are centred on their overall mean per entry for the second
    moments (the covariances do not change; the differences stay accurate); the means are in the data's units."""
    q = np.asarray(q, dtype=float)
    w = np.asarray(weights, dtype=float)
    f = np.isfinite(q).all(axis=-1)  # (..., n, S)
    E = q.shape[-1]
    with np.errstate(invalid="ignore"):
        centre = np.nanmean(np.where(f[..., None], q, np.nan), axis=(-3, -2), keepdims=True)
    x = np.where(f[..., None], q - centre, 0.0)
    gram = np.einsum("...jse,...kse->...jks", x, x) / E  # (..., n, n, S): <x_js, x_ks>
    if f.all():  # nothing left out: one count per row
        N = w.sum(axis=1)  # (J,)
        P = np.einsum("Js,...jks->...Jjk", w, gram)
        with np.errstate(invalid="ignore", divide="ignore"):  # a row with 0 or 1 seed: NaN
            mean = np.einsum("Js,...nse->...Jne", w, x) / N[:, None, None]
            mm = np.einsum("...Jje,...Jke->...Jjk", mean, mean) / E
            cov = (P - N[:, None, None] * mm) / (N[:, None, None] - 1)
        shape = cov.shape[:-1]
        return Moments(
            mean + centre,
            np.broadcast_to(N[:, None], shape).copy(),
            cov,
            np.broadcast_to(N[:, None, None], cov.shape).copy(),
        )
    ff = f.astype(float)
    c = w[:, None, None, :] * ff[..., None, :, None, :] * ff[..., None, None, :, :]  # (..., J, n, n, S)
    N = c.sum(axis=-1)
    s_j = np.einsum("...Jjks,...jse->...Jjke", c, x)  # sums at j over seeds present at j and k
    s_k = np.einsum("...Jjks,...kse->...Jjke", c, x)
    P = np.einsum("...Jjks,...jks->...Jjk", c, gram)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = (P - np.einsum("...e,...e->...", s_j, s_k) / E / N) / (N - 1)
        count = np.einsum("...Jjj->...Jj", N)
        mean = np.einsum("...Jjje->...Jje", s_j) / count[..., None] + centre
    return Moments(mean, count, cov, N)


def seed_variance(m: Moments) -> np.ndarray:
    """(..., J, n): the unbiased seed variance per size, mean over entries (NaN with fewer than 2 seeds)."""
    return np.einsum("...jj->...j", m.cov)


def contrast_square(m: Moments, w: np.ndarray) -> np.ndarray:
    """(..., J, P): for contrasts w (P, n), the unbiased estimate of ||sum_k w_pk mu_k||^2 (mean over entries):
    the squared norm of the same combination of seed means minus its estimated variance."""
    w = np.asarray(w, dtype=float)
    comb = np.einsum("pn,...Jne->...Jpe", w, m.mean)
    noise = np.einsum("pj,...Jjk,pk->...Jp", w, np.nan_to_num(m.mean_cov()), w)
    return np.mean(comb**2, axis=-1) - noise


def bias_pairs(m: Moments, sizes) -> tuple[np.ndarray, np.ndarray]:
    """(x, B): x (n-1,) the geometric mean of each adjacent pair of sizes; B (..., J, n-1) the noise-corrected
    squared difference of the seed means per unit log size, ||m_k+1 - m_k||^2 / log(n_k+1/n_k)^2 (module
    docstring): q^2 times the squared bias at x for a bias c n^-q."""
    n = np.asarray(sizes, dtype=float)
    k = len(n)
    w = np.zeros((k - 1, k))
    step = np.log(n[1:] / n[:-1])
    w[np.arange(k - 1), np.arange(1, k)] = 1.0 / step
    w[np.arange(k - 1), np.arange(k - 1)] = -1.0 / step
    return np.sqrt(n[1:] * n[:-1]), contrast_square(m, w)


def distance(m: Moments, sizes, method: str = "largest", order: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(fitted, D): fitted (n,) bool, the sizes whose distance is fitted ("largest": all but the largest, whose
    distance from itself has no bias term; "richardson": all); D (..., J, n) the noise-corrected mean-square
    distance of one seed from the limit estimate sum_k b_k m_k: bias^2 (against the limit estimate's
    expectation) + v(n)."""
    k = len(sizes)
    if method == "largest":
        b = np.zeros(k)
        b[-1] = 1.0
        fitted = np.arange(k) < k - 1
    elif method == "richardson":
        b = richardson_weights(sizes, order)
        fitted = np.ones(k, dtype=bool)
    else:
        raise ValueError(f"method must be largest or richardson, got {method!r}")
    return fitted, contrast_square(m, np.eye(k) - b[None, :]) + seed_variance(m)


def plateau(v: np.ndarray, sizes, order: float = 1.0) -> np.ndarray:
    """(..., J): v_inf / v(n_min) for per-size variances v (..., J, n), v_inf from the least-squares fit
    v(n) = v_inf + c n^-order (Richardson weights applied to v). Near 0: the variance falls at least at that
    rate; near 1: it does not fall at all."""
    r = richardson_weights(sizes, order)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("n,...n->...", r, v) / v[..., 0]


def plateau_local(v: np.ndarray, sizes, order: float = 1.0) -> np.ndarray:
    """(..., n-1): the two-point estimates of v_inf / v(n_min) from each pair of adjacent sizes (the plateau
    row's local estimates, as local slopes are a slope row's), from the estimate row v (..., n)."""
    n = np.asarray(sizes, dtype=float)
    x = n ** -float(order)
    with np.errstate(invalid="ignore", divide="ignore"):
        v_inf = (v[..., :-1] * x[1:] - v[..., 1:] * x[:-1]) / (x[1:] - x[:-1])
        return v_inf / v[..., :1]


KINDS = ("mean", "variance", "bias", "distance", "plateau")


def row_estimate(
    m: Moments, sizes, kind: str, method: str = "largest", order: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): the per-size estimate of a row kind and where it sits, y (..., J, P), for `dmft.fit.fit_rows`
    (the plateau: y (..., J), a ratio, not a slope). kind: "mean" (the seed mean of a per-seed positive quantity,
    one entry), "variance" (`seed_variance`), "bias" (`bias_pairs`), "distance" (`distance`, method and order
    of the limit estimate; the fitted sizes only), "plateau" (`plateau` of the seed variance)."""
    n = np.asarray(sizes, dtype=float)
    if kind == "mean":
        return n, m.mean[..., 0]
    if kind == "variance":
        return n, seed_variance(m)
    if kind == "bias":
        return bias_pairs(m, n)
    if kind == "distance":
        fitted, d = distance(m, n, method, order)
        return n[fitted], d[..., fitted]
    if kind == "plateau":
        return n, plateau(seed_variance(m), n, order)
    raise ValueError(f"row kind must be one of {', '.join(KINDS)}, got {kind!r}")
