"""The coordinate check of the block variants (docs/variants.md): OpenELM, nGPT, LAUREL and TokenFormer, each under
its own parametrization (preset mup, Adam, eta0 0.05), have a width limit (every site at init and after 10 steps
along N), O(1) coordinates at init along H and L, and a wrong parametrization of each is flagged. Plus: the
paper's block is unchanged by the variant code.

The user-facing path, as tests/test_coord_check.py: `probes.grid.sweep.run_sweep` with the coord probe schedule writes a
real sweep dataset and `dmft.coord.coord_verdicts` judges it by the one verdict rule (2 seeds unless a test says
otherwise; 95% joint-jackknife interval, band from the local slopes). "Off" below is a refuted row; a wrong
parametrization must be refuted at one of its sites; a correct one must have no refuted judged row. Seeded, CPU, in
this process (so `monkeypatch` reaches the sweeps). Base N=8, H=4, L=2, task vision, batch 32, 16 probe samples.

Measured with the old rule's settings (2026-12-01; the slopes and intervals quoted are the old per-size seed
bootstrap's): `dmft-probe coord --variant V --task vision --N 8 --H 4 --L 2 --seeds 2
--probe-samples 16 --optimizer adam --eta0 0.05 --batch-size 32 --workers 1` with `--axis N --values 4,8,16,32
--steps 0,10`, `--axis H --values 2,8,32 --steps 0` or `--axis L --values 1,4,16 --steps 0`; the tied LM adds
`--task lm --seq-len 16 --values 8,16,32,64`, LAUREL along L `--axis L --values 1,2,4,8 --steps 0,10`; the wrong
parametrizations are the monkeypatched sweeps of the tests below (`dmft.coord.coord_lines(rows)` prints their
table). Worst judged |slope - expected| (slope [95% CI]):
  along N, init and change at step 10: openelm 0.15 (logits change -0.15 [-0.31, +0.03]), ngpt 0.09 (logits init
    -0.41 [-0.44, -0.38] vs -1/2), laurel 0.23 (mlp_hidden change +0.23 [+0.13, +0.33]; mlp_out +0.20 [+0.08,
    +0.33], h -0.19 [-0.42, +0.18]), tokenformer 0.07 (logits change -0.07, attn_out init -0.07). The logits'
    change at step 10 is >= 0.09 (RMS) for every variant.
  at init along H = 2, 8, 32: openelm 0.04 (attn_out), ngpt 0.07 (logits -0.43 vs -1/2), laurel 0.06 (logits),
    tokenformer 0.02 (h). Along L = 1, 4, 16: openelm 0.08 (logits), laurel 0.07 (attn_out), tokenformer 0.04
    (h); nGPT's logits -0.34 [-0.39, -0.30], expected 0: an expected failure (`INIT_CASES`).
  the tied LM (openelm, N = 8..64, d = 32..256): 0.11 (logits init -0.39, A change -0.39, both vs -1/2). At N =
    4..32 it fails: v change +0.19 [+0.16, +0.22], attn_out +0.31 [+0.27, +0.35] at step 10, all from the d = 16
    point (v change RMS 0.48, 0.73, 0.72, 0.75, 0.70 at N = 4..64: flat from N = 8); untied at 4..32: +0.05,
    +0.09. Hence the LM sizes 8..64.
  LAUREL along L = 1, 2, 4, 8: 0.25 (attn_out change +0.25 [+0.13, +0.36]; q, k +0.18, A +0.16); W_q, W_k 0.02.
The wrong parametrizations, offending slopes (expected):
  openelm, tied readout with the embedding's multiplier (LM, N = 8..64): logits init +0.61 [+0.61, +0.61] (-1/2),
    logits change +0.74 [+0.71, +0.77] (0), embed change -0.21 (0);
  ngpt, unit-norm readout rows: logits init +0.09 [+0.06, +0.12] (-1/2), change +0.26 [+0.23, +0.29] (0);
  laurel along L, B A x without the branch multiplier: k change +0.58 [+0.55, +0.61], q +0.56, A +0.50, v +0.47,
    attn_out +0.38, mlp_hidden +0.34, mlp_out +0.27 (0);
  laurel along L, RW/PA residual scalars without l^-alpha_L: h change +3.02 [+1.41, +3.37] (0);
  tokenformer, Pattention scores over their L2 norm: mlp_out init -0.51 [-0.51, -0.50], change -0.56 [-0.66, -0.44]
    (0).
Time: 2 min 0 s to 2 min 16 s wall, 1 min 54 s to 2 min 0 s CPU for the file on a shared 2-core machine
(`pytest tests/test_variant_coord.py -n 0`); no test over 11 s.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import parametrizations.laurel as laurel_mod
from dmft.coord import coord_verdicts, refuted
from dmft.variant_verdicts import judged as judged_rows
from parametrizations import spec
from parametrizations.laurel import Laurel
from parametrizations.layers import ScaledLinear, ScaledTable, ScaledVector, TiedReadout
from parametrizations.spec import get_preset
from parametrizations.transformer import Block, LWSTransformer, ModelConfig, build_model
from probes.experiment.config import make_run_config
from probes.grid.sweep import coord_config, run_sweep

VARIANTS = ("openelm", "ngpt", "laurel", "tokenformer")
BASE = {"N": 8, "H": 4, "L": 2, "task": "vision"}
N_VALUES = [4, 8, 16, 32]
STEPS = [0, 10]
SEEDS = 2
# every site the recorder reads on every variant (nGPT included: its q, k are the normalised, s_qk-scaled ones)
SITES = {"logits", "h", "attn_out", "mlp_out", "q", "k", "v", "A", "embed"}


def coord(
    tmp_path, variant: str, axis: str, values: list[int], steps: list[int], tag: str = "", seeds: int = SEEDS, **model
):
    """A coordinate-check sweep of `variant` under mup / Adam (eta0 0.05) along `axis`; (dataset, verdict rows)."""
    cfg = make_run_config(
        model={**BASE, "variant": variant, **model},
        param={"preset": "mup"},
        optim={"name": "adam", "eta0": 0.05},
        run={"batch_size": 32},
        probes={"n_samples": 16},
    )
    ds = run_sweep(coord_config(cfg, steps), axis, values, seeds, tmp_path / f"{variant}{tag}-{axis}.nc")
    return ds, coord_verdicts(ds)


def judged(rows, min_step: int = 10):
    """The rows a verdict rests on: every init row and every change row at step >= 10 (`dmft.variant_verdicts`)."""
    assert min_step == 10
    return judged_rows(rows)


def site(v) -> str:
    return v.row.split()[0]


def off(rows) -> list[tuple]:
    """The refuted rows, as (row, slope [CI], band, expected)."""
    return [(v.row, v.measured(), round(v.band, 3), v.prediction.name) for v in refuted(rows)]


def assert_flagged(rows, sites: set[str]) -> None:
    """At least one judged row is refuted, and one of those is at one of `sites`."""
    bad = refuted(judged(rows))
    assert bad, "the wrong parametrization passed the check"
    assert {site(v) for v in bad} & sites, f"refuted, but not at {sites}: {off(bad)}"


# ================================================================================ each variant has a width limit


# softmax(A) at init approaches its limit as 1 + c/N (RMS ~ sqrt(1 + Var A)/T): over N = 4..32 its one-term slope
# reads -0.042 [-0.045, -0.039] (openelm) and -0.041 [-0.046, -0.035] (ngpt), local slopes of one sign halving per
# doubling, which the one-term fit's band cannot cover: those rows were refuted under a correct parametrization.
# The band now adds the distance of the slope from the two-term model's exponent (log RMS = a + e log N + c/N,
# dmft/coord.py): the part of the slope the next-order term explains. These cases are expected to pass.
WIDTH_CASES = list(VARIANTS)


@pytest.mark.parametrize("variant", WIDTH_CASES)
def test_variant_has_a_width_limit(tmp_path, variant):
    """Along N (4..32) every site is O(1) at init (A ~ N^-1/2 at alpha_A = 1, the logits ~ d^-1/2) and moves O(1)
    by step 10, the logits included, under the variant's own rules (spec.VARIANT_NOTES)."""
    ds, rows = coord(tmp_path, variant, "N", N_VALUES, STEPS)
    # Only change rows at step >= 10 are judged. Measured by the lead (2 seeds, N = 4..32, steps 0, 1, 3, 10): every
    # variant is consistent at step 10, but openelm and ngpt deviate at steps 1 and 3 (logits change ~ N^-0.3).
    # The reason: with RoPE and SwiGLU blocks the kernel between the training batch and the probe samples vanishes
    # at init, so the probe logits' first moves are not the O(1) kernel-driven move the expectation counts; once
    # training has built that kernel (step 10) they are. Those early rows are deliberately not judged.
    rows = judged(rows, min_step=10)
    assert any(v.row.endswith("change @10") for v in rows)
    assert {site(v) for v in rows} >= SITES
    assert not off(rows), f"{variant} along N: {off(rows)}"
    moved = ds.io_update_rms.sel(io_site="logits").isel(step=-1)
    assert float(moved.min()) > 1e-2, "the logits did not move: the check would be vacuous"


INIT_CASES = [
    pytest.param(v, axis, values, id=f"{v}-{axis}")
    for v in VARIANTS
    for axis, values in (("H", [2, 8, 32]), ("L", [1, 4, 16]))
]
# nGPT's mean-pooled logits at init shrink with depth: RMS 0.162, 0.137, 0.098, 0.079, 0.063, 0.058, 0.054, 0.048 at
# L = 1, 2, 4, ..., 128 (2 seeds; slope -0.34 over 1, 4, 16, -0.26 over 4..32, about -0.1 over 32..128): flattening,
# so a slow approach to a limit rather than a missing one. It is not the readout's init rule (std x mult =
# 1/(gamma0 d) at every L). A reading, not measured: with eigen learning rates 1/L the stream keeps only
# (1 - 1/L)^(2L) -> e^-2 of h0, so the branches' random part, which decays like L^-1/2, weighs e^2 times more
# against h0 than in the paper's block, and dominates the mean-pooled readout up to L ~ 100.
# openelm's h at init read L^-0.056 [-0.072, -0.040] over L = 1, 4, 16 (one-term fit, band 0.028 from two local
# slopes): refuted. The band now covers the depth limit's O(1/L) Euler correction (the two-term model).
INIT_CASES[[p.id for p in INIT_CASES].index("openelm-L")] = pytest.param("openelm", "L", [1, 4, 16], id="openelm-L")
INIT_CASES[[p.id for p in INIT_CASES].index("ngpt-L")] = pytest.param(
    "ngpt",
    "L",
    [1, 4, 16],
    id="ngpt-L",
    marks=pytest.mark.xfail(
        strict=True, reason="nGPT logits at init ~ L^-0.34 over L = 1, 4, 16 (pre-asymptotic; reported)"
    ),
)


@pytest.mark.parametrize("variant,axis,values", INIT_CASES)
def test_init_along_H_and_L(tmp_path, variant, axis, values):
    """Every site O(1) at init along H (the logits ~ d^-1/2) and along L (read at the last block); measured slopes
    in the module docstring."""
    _, rows = coord(tmp_path, variant, axis, values, [0])
    init = [v for v in rows if v.row.endswith(" init")]
    assert {site(v) for v in init} >= SITES
    assert not off(init), f"{variant} along {axis}: {off(init)}"


# ================================================================================ wrong parametrizations are flagged

LM = {"task": "lm", "seq_len": 16}
LM_VALUES = [8, 16, 32, 64]  # d = 32..256: at d = 16..128 the correct tied LM fails too (module docstring)


def test_openelm_tied_lm_has_a_width_limit(tmp_path):
    """The tied LM (the only place tying applies): the token table read back with the readout's multiplier."""
    ds, rows = coord(tmp_path, "openelm", "N", LM_VALUES, STEPS, **LM)
    rows = judged(rows, min_step=10)
    assert {site(v) for v in rows} >= SITES
    assert not off(rows), off(rows)
    assert float(ds.io_update_rms.sel(io_site="logits").isel(step=-1).min()) > 1e-2


def test_openelm_naive_tied_readout_is_flagged(tmp_path, monkeypatch):
    """The mistake: tie the embeddings as a plain PyTorch model does (`lm_head.weight = embed.weight`), so the
    readout reads the token table with the EMBEDDING's multiplier (sqrt(d) under Adam) instead of the readout's
    (1/(gamma0 sqrt(d))): the logits are d times too large, growing ~ d^+1/2 at init instead of shrinking ~ d^-1/2,
    and their change grows too. The correct tied LM at the same sizes passes (the test above)."""
    right = TiedReadout.__init__

    def naive(self, table, mult):
        right(self, table, table.mult)

    monkeypatch.setattr(TiedReadout, "__init__", naive)
    model = build_model(ModelConfig(variant="openelm", N=8, H=4, L=2, **LM), get_preset("mup"), "adam", 0)
    assert model.readout.mult == model.embed.mult  # the patch took
    _, rows = coord(tmp_path, "openelm", "N", LM_VALUES, STEPS, **LM)
    assert_flagged(rows, {"logits"})
    logits = [v for v in judged(rows) if site(v) == "logits"]
    assert logits and all(v.outcome == "refuted" and v.estimate > 0.3 for v in logits), [
        (v.row, v.measured(), v.band, v.outcome) for v in logits
    ]


def test_ngpt_unit_norm_readout_is_flagged(tmp_path, monkeypatch):
    """The mistake: take nGPT's own readout normalisation, unit-norm rows of W_out (target norm 1 of mult * w in
    `ngpt_matrices`), instead of std * mult * sqrt(d) = 1/(gamma0 sqrt(d)), the mean-field readout that keeps the
    output's change O(1): the logits are sqrt(d) too large, ~ d^0 at init and growing with d after training.
    The correct nGPT at the same settings passes (`test_variant_has_a_width_limit[ngpt]`)."""
    right = LWSTransformer.ngpt_matrices

    def unit_readout(self):
        return [(m, dim, 1.0 if m is self.readout else target) for m, dim, target in right(self)]

    monkeypatch.setattr(LWSTransformer, "ngpt_matrices", unit_readout)
    model = build_model(ModelConfig(variant="ngpt", **BASE), get_preset("mup"), "adam", 0)
    assert torch.allclose((model.readout.mult * model.readout.weight).norm(dim=-1), torch.ones(1))
    _, rows = coord(tmp_path, "ngpt", "N", N_VALUES, STEPS, seeds=FLAG_SEEDS)
    assert_flagged(rows, {"logits"})


LAUREL_L = [1, 2, 4, 8]
LAUREL_DEPTH = [2, 4, 8]  # as the paper block's depth check: L = 1's only block reads the embedding directly
LAUREL_SEEDS = 8
# At 2 seeds (t quantile 12.7) the unit-norm nGPT readout and LAUREL's res-depth mistake were not refuted at their
# sites (only softmax_A init, then refuted by the one-term fit); 8 seeds, not measured across seed sets.
FLAG_SEEDS = 8


def test_laurel_has_a_depth_limit(tmp_path):
    """LAUREL (RW + LR + PA) along L = 2, 4, 8, what the check can show at these sizes: W_Q, W_K move L^(alpha_L
    - 1) = L^0 of their size (P8), their interval excluding the alpha_L = 1/2 exponent -1/2; and the stream h and
    the logits do not move as L^(+-1/2) (their change slopes at step 10 lie between the two alternatives).

    Why not "every row consistent" (the old test, over L = 1..8 at 2 seeds): measured over disjoint seed sets
    (`python bench/coord_power.py --case laurel-adam-L-2 --seeds 8`, 4 sets) the q, k, v, A, attention-branch
    changes at step 10 read L^+0.19..+0.27 with sd 0.06-0.16 over seed sets and stay underpowered; over L = 1..8
    the q change read +0.38 (sd 0.14) and is flat from L = 4 (deciding it would take L = 4, 8, 16 and 16-20
    seeds). The h row at init is a precise small slope that the derived band (two local slopes) does not cover:
    refuted in 4 of 4 seed sets (the logits at init in 1 of 4); reported, not asserted. What is asserted, over 4
    disjoint seed sets of 8 seeds: W_Q, W_K's interval clears the -1/2 alternative by 0.46 (sd 0.01); the change
    slopes of h and the logits are -0.03 (sd 0.08) and -0.04 (sd 0.06): 6.0 and 7.4 sd inside +-1/2."""
    ds, rows = coord(tmp_path, "laurel", "L", LAUREL_DEPTH, STEPS, seeds=LAUREL_SEEDS)
    rows = judged(rows, min_step=10)
    assert {site(v) for v in rows} >= SITES | {"W_q", "W_k"}
    w = [v for v in rows if site(v) in ("W_q", "W_k")]
    alt = [next(a for a in v.alternatives if a.name == "-0.5") for v in w]
    assert len(w) == 2 and all(a.disjoint(v.lo, v.hi) for v, a in zip(w, alt)), [(v.row, v.measured()) for v in w]
    stream = [v for v in rows if v.row in ("h change @10", "logits change @10")]
    assert len(stream) == 2 and all(-0.5 < v.estimate < 0.5 for v in stream), [(v.row, v.measured()) for v in stream]
    assert float(ds.io_update_rms.sel(io_site="logits").isel(step=-1).min()) > 1e-2


# res-depth's stream blows up with depth: h change @10 reads L^+3.2 [+2.7, +3.8] over L = 1, 2, 4, 8 (8 seeds), its
# local slopes +0.2, +2.6, +7.0 growing, so the local-slope band is 3.8 and the row is underpowered, not refuted.
# With the one-term band this test passed on "h init" -0.042 [-0.051, -0.033] (band 0.029): the stream's O(1/L)
# approach at init, which the mistake does not touch, a false refutation. A check that flags super-power-law growth
# needs a rule for local slopes that move away from the prediction (docs/predictions.md, "Coordinate check"); open.
RES_DEPTH = pytest.param(
    "res-depth",
    marks=pytest.mark.xfail(
        strict=True, reason="a geometric blow-up along L has a local-slope band of 3.8: h change underpowered"
    ),
)


@pytest.mark.parametrize("mistake", ["lr-branch", RES_DEPTH])
def test_laurel_without_depth_factors_is_flagged(tmp_path, monkeypatch, mistake):
    """Along L = 1, 2, 4, 8, where the stream's change must stay O(1) in depth; the correct LAUREL passes
    (`test_laurel_has_a_depth_limit`). Each mistake drops one depth factor (spec.VARIANT_NOTES "laurel_A",
    "laurel_res"):
    lr-branch: the low-rank map added as the LAUREL paper writes it, x + B A x, without the branch multiplier
       beta0 l^-alpha_L: L such maps move the stream L times as far, and every block's input moves with it
       (q, k, v, A, branch outputs flagged);
    res-depth: the RW/PA residual scalars (b, gamma) with multiplier sqrt(d) instead of sqrt(d) l^-alpha_L (the
       rule of a per-block scalar, laurel_a, reused for the stream's): each moves O(1) per step instead of O(1/L),
       so their product over 2L adds grows geometrically with L (h flagged)."""
    if mistake == "lr-branch":
        right = Laurel.__init__

        def no_branch(self, *args, **kwargs):
            right(self, *args, **kwargs)
            self.branch = 1.0

        monkeypatch.setattr(Laurel, "__init__", no_branch)
        sites = {"q", "k", "A", "attn_out"}
    else:
        right_mult = spec.vector_mult

        def no_depth(p, role, *, d, N, L, optimizer, H_l=1):
            m = right_mult(p, role, d=d, N=N, L=L, optimizer=optimizer, H_l=H_l)
            return m * spec.depth_ratio(p, L) ** p.alpha_L if role == "laurel_res" else m

        monkeypatch.setattr(laurel_mod, "vector_mult", no_depth)
        sites = {"h"}
    model = build_model(ModelConfig(variant="laurel", **{**BASE, "L": 4}), get_preset("mup"), "adam", 0)
    lau = model.blocks[0].laurel_attn
    assert (lau.branch == 1.0) if mistake == "lr-branch" else (lau.b.mult == lau.a.mult)  # the patch took
    _, rows = coord(tmp_path, "laurel", "L", LAUREL_L, STEPS, tag=f"-{mistake}", seeds=FLAG_SEEDS)
    assert_flagged(rows, sites)


def test_tokenformer_l2_normalised_pattention_is_flagged(tmp_path, monkeypatch):
    """The mistake: normalise Pattention's scores by their L2 norm alone, gelu(z / ||z||_2), forgetting
    TokenFormer's tau = sqrt(n) (gelu(z / rms(z)) = gelu(sqrt(n) z / ||z||_2)): each of the n hidden units is then
    ~ n^-1/2, and the branch output W_2 gelu(.) / sqrt(n) shrinks ~ n^-1/2 at init and in its change (mlp_out
    flagged). The correct TokenFormer passes (`test_variant_has_a_width_limit[tokenformer]`)."""
    right = Block.mlp

    def l2_pattention(self, u, taps=None):
        if self.opts.mlp != "pattention":
            return right(self, u, taps)
        z = self.mlp_in(u)
        if taps is not None:
            taps["mlp_hidden"] = z
        return self.mlp_out(F.gelu(z / z.norm(dim=-1, keepdim=True)))

    monkeypatch.setattr(Block, "mlp", l2_pattention)
    _, rows = coord(tmp_path, "tokenformer", "N", N_VALUES, STEPS)
    assert_flagged(rows, {"mlp_out"})


# ================================================================================ the paper's block is unchanged


def test_paper_variant_is_unchanged():
    """ModelConfig() defaults give the paper's block (LN, no QK-norm, learned positions, MHA, GELU MLP, untied
    readout, no nGPT, no LAUREL) and a paper model has exactly the parameters it had before the variants."""
    o = ModelConfig().block_options()
    assert (o.variant, o.norm, o.qk_norm, o.rope, o.kv_group, o.mlp, o.tie, o.ngpt, o.laurel) == (
        "paper",
        "ln",
        False,
        False,
        1,
        "gelu",
        False,
        False,
        frozenset(),
    )
    for task in ("lm", "vision"):
        cfg = ModelConfig(task=task, L=3)
        model = build_model(cfg, get_preset("mup"), "adam", 0)
        names = {n for n, _ in model.named_parameters()}
        old = {"embed.weight", "pos.weight", "readout.weight"} | {
            f"blocks.{i}.{m}.weight" for i in range(3) for m in ("q", "k", "v", "o", "mlp_in", "mlp_out")
        }
        assert names == old, (task, sorted(names ^ old))
        assert not any(isinstance(m, (ScaledVector, TiedReadout)) for m in model.modules())
        assert isinstance(model.readout, ScaledLinear)
        assert isinstance(model.embed, ScaledTable if task == "lm" else ScaledLinear)
        d = cfg.d_model
        for blk in model.blocks:  # MHA, ungated MLP of width d_ff = d (ffn_mult 1)
            assert blk.q.weight.shape == blk.k.weight.shape == blk.v.weight.shape == (d, d)
            assert blk.mlp_in.weight.shape == (d, d) and blk.mlp_out.weight.shape == (d, d)
        assert model.param_roles == {n: n.rsplit(".", 2)[-2] for n in names}
