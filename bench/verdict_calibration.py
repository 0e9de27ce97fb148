"""Calibration of the slope intervals and the choice of the band (docs/predictions.md, "The verdict rule").

    python bench/verdict_calibration.py coverage [REPS]    # coverage of 95% intervals: jackknife-t vs bootstrap
    python bench/verdict_calibration.py band [REPS]        # consistent / refuted / underpowered rates per band formula

Synthetic sweeps (`dmft.synthetic`) at the cpu preset's geometry: sizes 4, 8, 16, 32, 6 seeds, 32 entries,
entries correlated (rho_entries), one seed's draws correlated across sizes (rho_sizes), seeded.
"""

import sys
import time

import numpy as np

from dmft import estimators as est
from dmft import fit, synthetic, verdict

SIZES = np.array([4.0, 8.0, 16.0, 32.0])


def rows(q: np.ndarray, weights: np.ndarray, sizes=SIZES) -> dict:
    """Per-size estimates (..., J, P) of every row kind, and their x positions."""
    m = est.moments(q, weights)
    v = est.seed_variance(m)
    xb, b = est.bias_pairs(m, sizes)
    fl, dl = est.distance(m, sizes, "largest")
    fr, dr = est.distance(m, sizes, "richardson")
    return {
        "variance": (sizes, v),
        "bias": (xb, b),
        "dist-largest": (sizes[fl], dl[..., fl]),
        "dist-richardson": (sizes[fr], dr[..., fr]),
        "plateau": (None, est.plateau(v, sizes)),
    }


def truths(t: synthetic.Truth, sizes=SIZES) -> dict:
    """The population slope (LS slope of log E[estimate]) of each row, and the plateau ratio's target."""
    v = synthetic.variance(t, sizes)
    n = sizes
    step = np.log(n[1:] / n[:-1])
    mu = t.bias * n**-t.bias_order
    b = ((mu[1:] - mu[:-1]) / step) ** 2
    xb = np.sqrt(n[1:] * n[:-1])
    out = {"variance": fit.loglog_rows(n, v)[0], "bias": fit.loglog_rows(xb, b)[0] if t.bias else np.nan}
    dl = (mu[:-1] - mu[-1]) ** 2 + v[:-1]
    out["dist-largest"] = fit.loglog_rows(n[:-1], dl)[0]
    r = est.richardson_weights(n)
    dr = (mu - r @ mu) ** 2 + v
    out["dist-richardson"] = fit.loglog_rows(n, dr)[0]
    out["plateau"] = (r @ v) / v[0]
    return out


def coverage(reps: int) -> None:
    cases = [
        ("var n^-1, c=3", synthetic.Truth(rate=-1, bias=3, rho_entries=0.3, rho_sizes=0.5)),
        ("var n^-1, c=1", synthetic.Truth(rate=-1, bias=1, rho_entries=0.3, rho_sizes=0.5)),
        ("var n^-1, c=3, rho .6/.8", synthetic.Truth(rate=-1, bias=3, rho_entries=0.6, rho_sizes=0.8)),
        ("var n^-1, c=3, rho .1/0", synthetic.Truth(rate=-1, bias=3, rho_entries=0.1, rho_sizes=0.0)),
        ("var n^-.5, c=3", synthetic.Truth(rate=-0.5, bias=3, rho_entries=0.3, rho_sizes=0.5)),
        ("plateau .1, c=3", synthetic.Truth(rate=-1, plateau=0.1, bias=3, rho_entries=0.3, rho_sizes=0.5)),
    ]
    S, E = 6, 32
    for name, t in cases:
        rng = np.random.default_rng(1)
        q = synthetic.sweep(t, SIZES, S, E, rng, reps=reps)
        target = truths(t)
        r = rows(q, est.jackknife_weights(S))
        line = [f"{name:26s}"]
        for k, (x, y) in r.items():
            if k == "plateau":
                lo, hi = fit.jackknife_interval(y[..., 0], y[..., 1:], 0.95)
                e = y[..., 0]
            else:
                f = fit.fit_rows(x, y)
                lo, hi, e = f.lo, f.hi, f.slope
            tv = target[k]
            ok = np.isfinite(e)
            cov = np.mean((lo[ok] <= tv) & (tv <= hi[ok]))
            line.append(
                f"{k} {cov:.3f} ({ok.mean():.2f} res, sd {np.nanstd(e):.2f}, hw {np.nanmedian(hi - lo) / 2:.2f})"
            )
        print(" | ".join(line), flush=True)


def boot_coverage(reps: int, B: int = 1000) -> None:
    """The joint percentile bootstrap on the same cases (slow: reps in chunks)."""
    t = synthetic.Truth(rate=-1, bias=3, rho_entries=0.3, rho_sizes=0.5)
    S, E = 6, 32
    rng = np.random.default_rng(1)
    q = synthetic.sweep(t, SIZES, S, E, rng, reps=reps)
    target = truths(t)
    brng = np.random.default_rng(2)
    hits = {k: [] for k in target}
    for i in range(0, reps, 25):
        w = np.vstack([np.ones((1, S)), brng.multinomial(S, np.full(S, 1 / S), size=B)])
        r = rows(q[i : i + 25], w)
        for k, (x, y) in r.items():
            if k == "plateau":
                bs = y[..., 1:]  # the bootstrap rows; row 0 is the point estimate
            else:
                bs = fit.loglog_rows(x, y)[0][..., 1:]
            lo, hi = np.nanquantile(bs, 0.025, axis=-1), np.nanquantile(bs, 0.975, axis=-1)
            hits[k] += list((lo <= target[k]) & (target[k] <= hi))
    print("joint percentile bootstrap:", {k: round(float(np.mean(v)), 3) for k, v in hits.items()})


# ---- the band -------------------------------------------------------------------------------------------------

BANDS = {
    "max |local - global|": lambda s, loc: np.max(np.abs(loc - s[..., None]), axis=-1),
    "rms (local - global)": lambda s, loc: np.sqrt(np.mean((loc - s[..., None]) ** 2, axis=-1)),
    "half range of local": lambda s, loc: (np.max(loc, axis=-1) - np.min(loc, axis=-1)) / 2,
    "|last local - global|": lambda s, loc: np.abs(loc[..., -1] - s),
    "0.25 fixed": lambda s, loc: np.full(s.shape, 0.25),
}
SCENARIOS = {
    "rate -1": synthetic.Truth(rate=-1, bias=1),
    "rate -1/2": synthetic.Truth(rate=-0.5, bias=1),
    "rate 0": synthetic.Truth(rate=0, bias=1),
    "plateau 0.1": synthetic.Truth(rate=-1, plateau=0.1, bias=1),
    "bias c=3": synthetic.Truth(rate=-1, bias=3),
}
# (row, prediction, alternatives): slopes of the seed variance, of the distance ("largest") and of the squared bias
SLOPE_ROWS = [
    ("variance", -1.0, (0.0,)),
    ("variance", 0.0, (-1.0,)),
    ("variance", -1.0, (-0.5,)),
    ("dist-largest", -1.0, (0.0,)),
    ("bias", -2.0, (-1.0,)),
]


def outcomes(lo, hi, band, pred, alts) -> np.ndarray:
    """The rule (`dmft.verdict.decide`) per repetition: counts of consistent, refuted, underpowered, not measured."""
    out = []
    for a, b, w in zip(lo, hi, band):
        w = float(w) if np.isfinite(w) else np.inf
        region = verdict.Region("pred", pred - w, pred + w)
        others = [verdict.Region("alt", x - w, x + w) for x in alts]
        out.append(verdict.decide(float(a), float(b), region, others))
    return np.array([np.mean(np.array(out) == o) for o in verdict.OUTCOMES])


def band(reps: int, E: int = 16, rho_e: float = 0.3, rho_n: float = 0.5, S: int = 6) -> None:
    for name, t0 in SCENARIOS.items():
        t = synthetic.Truth(**{**t0.__dict__, "rho_entries": rho_e, "rho_sizes": rho_n})
        q = synthetic.sweep(t, SIZES, S, E, np.random.default_rng(5), reps=reps)
        r = rows(q, est.jackknife_weights(S))
        print(
            f"== {name} (true variance slope {truths(t)['variance']:+.2f}, distance {truths(t)['dist-largest']:+.2f})"
        )
        for row, pred, alts in SLOPE_ROWS:
            x, y = r[row]
            f = fit.fit_rows(x, y)
            cells = []
            for bname, bf in BANDS.items():
                o = outcomes(f.lo, f.hi, bf(f.slope, f.local), pred, alts)
                cells.append(f"{bname[:12]} {o[0]:.2f}/{o[1]:.2f}/{o[2]:.2f}")
            print(f"  {row:12s} {pred:+g} vs {alts}: " + " | ".join(cells), flush=True)


def band_plateau(reps: int, E: int = 16, rho_e: float = 0.3, rho_n: float = 0.5, S: int = 6) -> None:
    """The plateau row v_inf / v(n_min): band from the two-point estimates of adjacent sizes."""
    for name, t0 in SCENARIOS.items():
        t = synthetic.Truth(**{**t0.__dict__, "rho_entries": rho_e, "rho_sizes": rho_n})
        q = synthetic.sweep(t, SIZES, S, E, np.random.default_rng(5), reps=reps)
        m = est.moments(q, est.jackknife_weights(S))
        v = est.seed_variance(m)
        p = est.plateau(v, SIZES)
        lo, hi = fit.jackknife_interval(p[..., 0], p[..., 1:], 0.95)
        loc = np.stack(
            [
                est.plateau(v[..., 0, k : k + 2], SIZES[k : k + 2]) * v[..., 0, k] / v[..., 0, 0]
                for k in range(len(SIZES) - 1)
            ],
            axis=-1,
        )
        bands = {
            "max |local - global|": np.max(
                np.abs(
                    loc
                    - p[
                        ...,
                        :1,
                    ]
                ),
                axis=-1,
            ),
            "rms": np.sqrt(np.mean((loc - p[..., :1]) ** 2, axis=-1)),
            "0.1 fixed": np.full(reps, 0.1),
        }
        cells = []
        for bname, b in bands.items():
            o1 = outcomes_plateau(lo, hi, b, plateau_pred=True)
            o2 = outcomes_plateau(lo, hi, b, plateau_pred=False)
            cells.append(
                f"{bname[:10]} plateau {o1[0]:.2f}/{o1[1]:.2f}/{o1[2]:.2f} zero {o2[0]:.2f}/{o2[1]:.2f}/{o2[2]:.2f}"
            )
        print(
            f"{name:12s} ratio {truths(t)['plateau']:.2f} est {np.mean(p[..., 0]):.2f}: " + " | ".join(cells),
            flush=True,
        )


def outcomes_plateau(lo, hi, band, plateau_pred: bool) -> np.ndarray:
    out = []
    for a, b, w in zip(lo, hi, band):
        zero = verdict.Region("v_inf = 0", -w, w)
        above = verdict.above("plateau", w)
        pred, alt = (above, zero) if plateau_pred else (zero, above)
        out.append(verdict.decide(float(a), float(b), pred, [alt]))
    return np.array([np.mean(np.array(out) == o) for o in verdict.OUTCOMES])


if __name__ == "__main__":
    what = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    t0 = time.time()
    {"coverage": coverage, "boot": boot_coverage, "band": band, "plateau": band_plateau}[what](reps)
    print(f"{time.time() - t0:.0f} s")
