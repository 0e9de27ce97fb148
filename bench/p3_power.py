"""How well two estimators of P3 (docs/predictions.md, P3) tell variance-gamma(N) from a Gaussian, on exact samples.

    python bench/p3_power.py N n reps        e.g. python bench/p3_power.py 4 48 200

Draws `reps` samples of n exact variance-gamma(N) values (alpha_A = 1) and reports how often each 95% interval
calls variance-gamma better ("confirmed") or worse ("refuted"):
- the old estimator: Kolmogorov-Smirnov distance to variance-gamma minus that to the Gaussian of the same
  variance, percentile bootstrap (400 resamples);
- `dmft.check`'s: the mean log-likelihood ratio with a t interval (here every value is its own cluster).
Also prints KL(VG || Gauss), the expected log-likelihood ratio per value, by quadrature.
"""

import sys

import numpy as np
from scipy import integrate, stats

from dmft.solvers import attention_law


def ks_distances(x: np.ndarray, cdfs: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """KS distances of the resamples idx (B, n) of sorted samples x to each cdf evaluated at x: (B, len(cdfs))."""
    idx = np.sort(idx, axis=1)
    n = idx.shape[1]
    up, down = np.arange(1, n + 1) / n, np.arange(n) / n
    return np.stack([np.max(np.maximum(up - F[idx], F[idx] - down), axis=1) for F in cdfs], axis=1)


def main(N: int, n: int, reps: int) -> None:
    law = attention_law(N, 1.0)
    g = stats.norm(scale=law.std())
    s = 8 * law.std()
    kl = integrate.quad(
        lambda a: float(law.pdf(np.array([a]))[0]) * (np.log(law.pdf(np.array([a]))[0]) - g.logpdf(a)),
        -s,
        s,
        points=[0.0],
        limit=200,
    )[0]
    rng = np.random.default_rng(1)
    counts = dict(ks_conf=0, ks_ref=0, llr_conf=0, llr_ref=0)
    t = stats.t.ppf(0.975, n - 1)
    for _ in range(reps):
        x = np.sort(law.scale * (rng.standard_normal((n, N)) * rng.standard_normal((n, N))).sum(1))
        cdfs = [law.cdf(x), g.cdf(x)]
        boot = np.diff(ks_distances(x, cdfs, rng.integers(0, n, (400, n)))[:, ::-1], axis=1)[:, 0]
        lo, hi = np.quantile(boot, [0.025, 0.975])  # D(VG) - D(Gauss): < 0 when VG fits better
        counts["ks_conf"] += hi < 0
        counts["ks_ref"] += lo > 0
        l = np.log(law.pdf(x)) - g.logpdf(x)
        m, se = l.mean(), l.std(ddof=1) / np.sqrt(n)
        counts["llr_conf"] += m - t * se > 0
        counts["llr_ref"] += m + t * se < 0
    f = {k: v / reps for k, v in counts.items()}
    print(
        f"N={N} n={n} reps={reps}: KL(VG||Gauss) = {kl:.4g} nats; KS difference: confirmed {f['ks_conf']:.3f}, "
        f"refuted {f['ks_ref']:.3f}; log-likelihood ratio: confirmed {f['llr_conf']:.3f}, refuted {f['llr_ref']:.3f}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
