"""dmft.solvers against exact integrals and against the model at init (P1, P3, P4, P5 of docs/predictions.md)."""

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from dmft.fit import slope_fit
from dmft.solvers import (
    attention_kernel,
    attention_law,
    embedding_kernel,
    gaussian_limit,
    infinite_head_kernels,
    layer_norm_kernel,
    mlp_kernel,
)
from parametrizations.spec import Parametrization, get_preset
from parametrizations.transformer import ModelConfig, build_model, layer_norm
from probes.experiment.data import stdlib_corpus, synthetic_vision

S = 16


@pytest.fixture(scope="module")
def vision_x():
    return synthetic_vision().heldout.fixed(6, seed=0)[0]


@pytest.fixture(scope="module")
def lm_x():
    return stdlib_corpus(seq_len=S).heldout.fixed(6, seed=0)[0]


# ------------------------------------------------------------------------------------------- law of A (P1, P3)
@pytest.mark.parametrize("N", [1, 2, 3, 16])
@pytest.mark.parametrize("alpha_A", [0.5, 1.0])
def test_variance_gamma_pdf_normalised_variance_and_cdf(N, alpha_A):
    law = attention_law(N, alpha_A)
    brk = [law.scale * b for b in (1e-8, 1e-3, 1.0, 10.0)]  # K_0 log singularity at 0 for N = 1
    pieces = list(zip([0] + brk, brk + [np.inf]))
    mass = 2 * sum(integrate.quad(law.pdf, lo, hi, limit=400)[0] for lo, hi in pieces)
    var = 2 * sum(integrate.quad(lambda a: a * a * law.pdf(a), lo, hi, limit=400)[0] for lo, hi in pieces)
    assert abs(mass - 1) < 1e-6
    assert var == pytest.approx(N ** (1 - 2 * alpha_A), rel=1e-6) and law.var() == pytest.approx(N ** (1 - 2 * alpha_A))
    a = law.std() * np.array([-4.0, -1.0, -0.1, 1e-3, 0.3, 1.0, 2.5])
    ref = np.array([0.5 + np.sign(v) * integrate.quad(law.pdf, 0, abs(v), limit=400, epsabs=1e-13)[0] for v in a])
    np.testing.assert_allclose(law.cdf(a), ref, atol=1e-8)
    np.testing.assert_allclose(law.cdf(-a), 1 - law.cdf(a), atol=1e-12)
    x = law.rvs(20000, rng=N)
    assert law.ks_test(x)[1] > 1e-4  # uniform under the right law: fails by chance 1 in 10^4, no edge
    assert np.var(x) == pytest.approx(law.var(), rel=0.05)
    hist, edges = np.histogram(x, bins=np.linspace(-2, 2, 21) * law.std())
    expected = len(x) * np.diff(law.cdf(edges))
    assert np.all(np.abs(hist - expected) < 5 * np.sqrt(expected) + 5)


def test_closed_form_special_cases_and_gaussian_limit():
    np.testing.assert_allclose(attention_law(1, 1.0).pdf([0.5, 2.0]), special.k0([0.5, 2.0]) / np.pi, rtol=1e-12)
    a = np.array([0.5, 2.0])
    np.testing.assert_allclose(attention_law(2, 1.0, c=2.0).pdf(a), np.exp(-a) / 2, rtol=1e-12)  # scale 1: Laplace
    np.testing.assert_allclose(attention_law(1000, 0.5).pdf([0.0, 1.0]), stats.norm.pdf([0.0, 1.0]), rtol=2e-3)
    assert attention_law(4, 0.5, c=3.0).var() == pytest.approx(9.0)
    assert gaussian_limit(64, 1.0).std() == pytest.approx(64**-0.5)
    assert gaussian_limit(64, 0.5, c=2.0).std() == pytest.approx(2.0)
    grid = np.linspace(-5, 5, 201)
    sup = {N: np.max(np.abs(attention_law(N, 0.5).cdf(grid) - gaussian_limit(N, 0.5).cdf(grid))) for N in (1, 16)}
    assert sup[16] < 0.015 < 0.05 < sup[1]  # CLT in N (Fig. 3c): measured 0.0086 and 0.107
    x1 = attention_law(1, 0.5).rvs(20000, rng=0)
    assert stats.kstest(x1, gaussian_limit(1, 0.5).cdf).pvalue < 1e-6


def model_attention_samples(N, preset, d=1024, seeds=None):
    """A over heads at init from the model's taps, H = d / N heads per model, one (sample, s, s') per seed.

    Pooling positions is legitimate because, given LN (|u_s|^2 = d), q_s and k_s' are independent N(0, I_N) for
    every (sample, s, s') (W_Q, W_K independent, even s = s'), so every position has the same VG marginal. Two
    positions of the SAME head are dependent (correlation Phi_u(s1,s2) Phi_u(s1',s2') through shared W_Q, W_K rows),
    which would make the i.i.d. KS p-value optimistic; we therefore take each position from a different model
    (seed), so the pooled heads are exactly i.i.d.
    """
    x = synthetic_vision().heldout.fixed(4, seed=0)[0]
    H = d // N
    out = []
    for seed in range(seeds or max(2, 2048 // H)):
        cfg = ModelConfig(N=N, H=H, L=1, task="vision", seq_len=S, d_in=x.shape[-1])
        m = build_model(cfg, get_preset(preset), "adam", seed)
        taps = []
        with torch.no_grad():
            m(x, taps, attention_maps=True)
        out.append(taps[0]["A"][seed % 4, :, (3 * seed) % S, (5 * seed + 1) % S].double().numpy())  # (H,)
    return np.concatenate(out)


@pytest.mark.parametrize("preset", ["mup-sqrt", "mup"])
def test_model_attention_variables_follow_the_variance_gamma_law(preset):
    alpha_A = get_preset(preset).alpha_A
    samples = {N: model_attention_samples(N, preset) for N in (1, 2, 16)}
    # Under the right law the KS p-value is uniform, so p > ALPHA fails by chance once in 10^4 draws, not at an edge.
    # Measured (mup, N = 16, 2048 heads): over 20 independent redraws the least p was 0.0042 (a 0.01 threshold sat at
    # the edge); the 20 pooled (40960 heads) gave p 0.28 and excess kurtosis 0.391 against the law's 6/16 = 0.375.
    ALPHA = 1e-4
    for N, a in samples.items():
        assert attention_law(N, alpha_A).ks_test(a)[1] > ALPHA, N
        rel_sd = np.sqrt((2 + 6 / N) / len(a))  # sd of a sample variance, excess kurtosis 6/N (VG law)
        assert np.var(a) == pytest.approx(N ** (1 - 2 * alpha_A), rel=4 * rel_sd)  # P1

    # power at the same ALPHA: a law of the wrong N with the right variance (only the shape differs) is rejected.
    # Measured p: N = 1 heads against the N = 2 law 3e-8; N = 2 heads against the N = 1 law 7e-7.
    def same_variance(n_law: int, N: int):
        return attention_law(n_law, alpha_A, c=float(np.sqrt((N / n_law) ** (1 - 2 * alpha_A))))

    assert same_variance(2, 1).ks_test(samples[1])[1] < ALPHA
    assert same_variance(1, 2).ks_test(samples[2])[1] < ALPHA
    a1 = samples[1] * (16 ** (alpha_A - 0.5))  # rescaled to the N = 16 variance, so only the shape differs
    assert attention_law(16, alpha_A).ks_test(a1)[1] < ALPHA
    assert stats.kstest(a1, gaussian_limit(16, alpha_A).cdf).pvalue < ALPHA


# ------------------------------------------------------------------------------------- kernel recursion pieces
def test_mlp_kernel_quadrature_and_embedding_kernel(vision_x):
    def gelu(z):
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))

    e2 = integrate.quad(lambda z: gelu(z) ** 2 * stats.norm.pdf(z), -np.inf, np.inf)[0]
    e1 = integrate.quad(lambda z: gelu(z) * stats.norm.pdf(z), -np.inf, np.inf)[0]
    K = mlp_kernel(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose([K[0, 0], K[0, 1], K[0, 2]], [e2, e2, e1**2], rtol=1e-9)
    x = vision_x.numpy().astype(np.float64)
    for preset in ("mup", "sp"):
        Phi = embedding_kernel(x, "vision", get_preset(preset), N=4).reshape(6, S, 6, S)
        np.testing.assert_allclose(Phi[1, 2, 3, 2], x[1, 2] @ x[3, 2] / x.shape[-1] + 1, rtol=1e-12)
        np.testing.assert_allclose(Phi[1, 2, 3, 5], x[1, 2] @ x[3, 5] / x.shape[-1], rtol=1e-12)
    np.testing.assert_allclose(np.diag(layer_norm_kernel(Phi.reshape(96, 96))), 1, atol=1e-5)


def attention_head_contributions(N, preset, task, x, d=2048):
    """The model's realised Phi_u = u u^T/d at layer 1 and its per-head p_h Phi_u p_h^T, (H, P*S, P*S)."""
    m = build_model(ModelConfig(N=N, H=d // N, L=1, task=task, seq_len=S, d_in=48), get_preset(preset), "adam", 0)
    taps = []
    with torch.no_grad():
        u = layer_norm(m.embed_tokens(x)).double()
        m(x, taps, attention_maps=True)
    P = x.shape[0]
    Pu = u.reshape(P * S, d) @ u.reshape(P * S, d).T / d  # (P*S, P*S)
    p = taps[0]["P"].double().transpose(0, 1)  # (H, P, S, S)
    per = torch.einsum("hxsa,xayb,hytb->hxsyt", p, Pu.reshape(P, S, P, S), p).reshape(p.shape[0], P * S, P * S)
    return Pu.numpy(), per.numpy()


@pytest.mark.parametrize(
    "N,preset,task", [(1, "mup-sqrt", "vision"), (4, "mup-sqrt", "vision"), (4, "mup", "vision"), (4, "mup-sqrt", "lm")]
)
def test_attention_expectation_matches_model_heads_exactly(N, preset, task, vision_x, lm_x):
    """P5 head by head: given the realised u, each model head's q, k coordinates are exactly GP(0, u u^T/d), so the
    head average of p Phi_u p^T is an unbiased H-sample estimate of the solver's K_attn(Phi_u) at ANY d: the mean
    squared z-score is ~1 for the right law and >> 1 for a wrong one (uniform attention: N -> oo at alpha_A = 1)."""
    x = (vision_x if task == "vision" else lm_x)[:3]
    Pu, per = attention_head_contributions(N, preset, task, x)
    H, n_mc = len(per), 8192
    # per-entry standard error of (network head average - solver Monte Carlo): both average i.i.d. heads of one law
    se = per.std(0, ddof=1) * np.sqrt(1 / H + 1 / n_mc)
    knet, ok = per.mean(0), se > 1e-9

    def z2(**kw):
        K = attention_kernel(Pu, 3, S, causal=task == "lm", n_heads_mc=n_mc, gen=torch.Generator().manual_seed(1), **kw)
        return np.mean(((knet - K) / np.where(ok, se, 1))[ok] ** 2)

    assert z2(N=N, alpha_A=get_preset(preset).alpha_A, mode="finite_N") < 1.6  # measured 0.93-1.19
    assert z2(N=N, alpha_A=1.0, mode="N_inf") > 8  # measured 14-40


# --------------------------------------------------------------------------- P4: finite H -> solver, MSE ~ 1/H
def network_kernels(model, x):
    """kernel_pooled, kernel_spatial, kernel_last_token at depths 0..L, exactly as probes.hooks.recorder computes them."""
    taps = []
    with torch.no_grad():
        h0 = model.embed_tokens(x)
        model(x, taps)
    hs = torch.stack([h0] + [t["h"] for t in taps]).double()  # (L+1, P, S, d)
    d = hs.shape[-1]
    pooled, last = hs.mean(2), hs[:, :, -1]
    gram = lambda h: h @ h.transpose(1, 2) / d  # noqa: E731
    return gram(pooled), gram(hs[:, 0]), gram(last)


@pytest.mark.parametrize("task,preset", [("vision", "mup-sqrt"), ("vision", "mup"), ("lm", "mup-sqrt"), ("lm", "mup")])
def test_finite_head_kernels_converge_to_solver_at_rate_one_over_H(task, preset, vision_x, lm_x):
    """P4 (Fig. 3a): mean over seeds of the MSE(network kernels, solver) over all entries and depths ~ H^-1.

    Measured slopes (16 seeds, H = 2..64, 95% bootstrap CI over seeds, resampled independently per H):
      vision mup-sqrt -1.01 [-1.05, -0.97], vision mup -1.01 [-1.04, -0.97],
      lm mup-sqrt -1.06 [-1.12, -0.99], lm mup -1.06 [-1.12, -0.99].
    The CI half-width is <= 0.07, so the +-0.2 tolerance is ~3x the seed noise. NOTE: at beta0 = 1 the MSE is
    dominated by fluctuations the attention law barely affects (alpha_A = 1/2 vs 1 limits differ by 0.002 RMS,
    the H = 64 deviation is 0.13 RMS); the law itself is tested head by head above.
    """
    p, x, N, L = get_preset(preset), (vision_x if task == "vision" else lm_x), 4, 2
    kw = dict(task=task, N=N, L=L, alpha_A=p.alpha_A, alpha_L=p.alpha_L, beta0=p.beta0, n_heads_mc=4096)
    ds = infinite_head_kernels(x.numpy(), seed=0, **kw)
    names = ["kernel_pooled", "kernel_spatial"] + (["kernel_last_token"] if task == "lm" else [])
    limit = [ds[n].values for n in names]
    Hs, seeds = [2, 4, 8, 16, 32, 64], range(16)
    mse = np.empty((len(Hs), len(seeds)))
    for i, H in enumerate(Hs):
        for j, seed in enumerate(seeds):
            m = build_model(ModelConfig(N=N, H=H, L=L, task=task, seq_len=S, d_in=48), p, "adam", seed)
            net = network_kernels(m, x)
            mse[i, j] = np.mean(np.concatenate([(net[k].numpy() - lim).ravel() for k, lim in enumerate(limit)]) ** 2)
    slope = slope_fit(Hs, mse).slope
    assert abs(slope + 1) < 0.2, (slope, mse.mean(1))
    # the Monte Carlo error of the solver is negligible against the finite-H deviation at the largest H
    ds1 = infinite_head_kernels(x.numpy(), seed=1, **kw)
    mc_mse = np.mean(np.concatenate([(ds[n].values - ds1[n].values).ravel() for n in names]) ** 2) / 2
    assert mc_mse < 1e-4 * mse[-1].mean()  # measured 1e-7 to 5e-6 of it
    assert ds.kernel_pooled.dims == ("depth", "sample", "sample_") and ds.attrs["N"] == N and ds.sizes["depth"] == L + 1


# ------------------------------------------------------------------------------------ N_inf mode and validation
@pytest.mark.parametrize("alpha_A,Ns,shrink", [(1.0, (1, 4, 16, 64), 0.05), (0.5, (1, 4, 16), 0.2)])
def test_finite_N_solver_approaches_N_inf(alpha_A, Ns, shrink, vision_x):
    """RMS(K_attn(N) - K_attn(N -> oo)) falls with N: alpha_A = 1 like 1/N (measured 0.0138, 0.0032, 0.00075, 0.00019),
    alpha_A = 1/2 (measured 0.0069, 0.0025, 0.00078) down to the Monte Carlo floor (~3e-4 at 8192 heads)."""
    Pu = layer_norm_kernel(embedding_kernel(vision_x[:2].numpy(), "vision", Parametrization(), N=1))
    K = {
        N: attention_kernel(
            Pu,
            2,
            S,
            N=N,
            alpha_A=alpha_A,
            causal=False,
            mode="finite_N",
            n_heads_mc=8192,
            gen=torch.Generator().manual_seed(2),
        )
        for N in Ns
    }
    Kinf = attention_kernel(
        Pu,
        2,
        S,
        N=1,
        alpha_A=alpha_A,
        causal=False,
        mode="N_inf",
        n_heads_mc=8192,
        gen=torch.Generator().manual_seed(0),
    )
    dev = [np.sqrt(np.mean((K[N] - Kinf) ** 2)) for N in Ns]
    assert all(b < a for a, b in zip(dev, dev[1:])), dev
    assert dev[-1] < shrink * dev[0], dev
    ds = infinite_head_kernels(vision_x[:2].numpy(), task="vision", N=1, L=1, alpha_A=1.0, mode="N_inf")
    assert ds.attrs["mode"] == "N_inf" and np.all(np.isfinite(ds.kernel_pooled))


def test_invalid_inputs_raise(vision_x, lm_x):
    x, tok = vision_x.numpy(), lm_x.numpy()
    base = dict(task="vision", N=4, L=1, alpha_A=0.5, n_heads_mc=16)
    bad = [
        (dict(base, task="audio"), "task"),
        (dict(base, mode="N_big"), "mode"),
        (dict(base, N=0), "N"),
        (dict(base, L=0), "L"),
        (dict(base, mode="N_inf", alpha_A=0.75), "supports alpha_A"),
        (dict(base, d_ff_ratio=0), "d_ff_ratio"),
        (dict(base, alpha_L=-1.0), "alpha_L"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            infinite_head_kernels(x, **kw)
    with pytest.raises(ValueError, match="shape"):
        infinite_head_kernels(tok, **base)
    with pytest.raises(ValueError, match="integer token"):
        infinite_head_kernels(x[..., 0], **dict(base, task="lm"))
    for args in [(0, 1.0), (2.5, 1.0), (4, 0.0), (4, -1.0)]:
        with pytest.raises(ValueError):
            attention_law(*args)
    with pytest.raises(ValueError, match="c must"):
        attention_law(4, 1.0, c=0.0)
