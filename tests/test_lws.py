"""Tests for parametrizations.lws: OpenELM and Crown/Frame/Reverse per-layer shapes (docs/design.md, "LWS profiles")."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from parametrizations.lws import (
    PRESETS,
    LayerShapes,
    LWSProfile,
    budget_match,
    get_profile,
    layer_multipliers,
    make_divisible,
    resolve,
)


def run_lengths(xs):
    return [(k, len(list(g))) for k, g in itertools.groupby(xs)]


# ---------------------------------------------------------------- make_divisible
@pytest.mark.parametrize(
    "v, divisor, expected",
    [
        (3, 8, 8),  # below divisor -> min_value = divisor
        (12, 8, 16),  # exact half rounds up
        (11.9, 8, 16),  # rounds to 8, but 8 < 0.9*11.9 -> bumped (10% rule)
        (35, 8, 32),  # 32 >= 0.9*35 = 31.5: allowed round-down
        (35.9, 8, 40),  # 32 < 0.9*35.9 = 32.31: bumped
        (100, 8, 104),
        (1000, 256, 1024),
        (568, 256, 512),  # 512 >= 511.2
        (580, 256, 768),  # 512 < 522: bumped
        (640, 256, 768),  # half-up
        (10, 3, 9),  # 9 == 0.9*10 exactly: corenet keeps it (strict <)
    ],
)
def test_make_divisible_corenet(v, divisor, expected):
    assert make_divisible(v, divisor) == expected


def test_make_divisible_min_value_and_cfr_variant():
    # corenet with min_value=1: max(1, 0) = 1 < 0.9*3 -> 1 + 8 = 9 (not a multiple; as corenet)
    assert make_divisible(3, 8, min_value=1) == 9
    assert make_divisible(3, 8, variant="cfr") == 8  # v < divisor -> divisor
    # the variants differ only when the rounded value equals 0.9*v exactly
    assert make_divisible(10, 3, variant="cfr") == 12
    assert make_divisible(10, 9) == 9 and make_divisible(10, 9, variant="cfr") == 18
    for v in [0.5, 7.9, 11.9, 35.9, 100.0, 580.0, 1234.5, 5120.0]:
        for d in (8, 64, 192, 256):
            if int(v + d / 2) // d * d != 0.9 * v:
                assert make_divisible(v, d) == make_divisible(v, d, variant="cfr")
    with pytest.raises(ValueError, match="divisor"):
        make_divisible(10, 0)
    with pytest.raises(ValueError, match="variant"):
        make_divisible(10, 8, variant="nope")


# ---------------------------------------------------------------- OpenELM (notes 1.3)
def test_openelm_270m_exact():
    s = resolve(get_profile("openelm"), 16, 1280, 64, head_multiple_of=4, ffn_divisor=256)
    assert run_lengths(s.heads) == [(12, 5), (16, 7), (20, 4)]
    assert s.d_ff == (768, 1024, 1280, 1536, 1792, 2048, 2560, 2816, 3072, 3328, 3584, 3840, 4352, 4608, 4864, 5120)
    alpha, beta = layer_multipliers(get_profile("openelm"), 16)
    assert beta[:3] == [0.5, 0.73, 0.97] and beta[-2:] == [3.77, 4.0]  # 2-decimal rounding
    assert alpha[0] == 0.5 and alpha[1] == 0.53 and alpha[-1] == 1.0


def openelm_params(s: LayerShapes, g: int = 4, vocab: int = 32000) -> int:
    """Notes 1.3 convention: GQA attn + SwiGLU + per-block/final/QK norms + tied embedding."""
    d, N = s.d_model, s.N
    blocks = sum(d * (h + 2 * h // g) * N + h * N * d + 3 * d * f + 2 * d for h, f in zip(s.heads, s.d_ff))
    return blocks + d + 2 * s.L * N + vocab * d


@pytest.mark.parametrize(
    "L, d, hd, heads_rl, ff0, ff1, params_m",
    [
        (16, 1280, 64, [(12, 5), (16, 7), (20, 4)], 768, 5120, 271.5),
        (20, 1536, 64, [(12, 3), (16, 7), (20, 6), (24, 4)], 768, 6144, 457.2),
        (28, 2048, 64, [(16, 3), (20, 7), (24, 8), (28, 6), (32, 4)], 1024, 8192, 1079.9),
        (36, 3072, 128, [(12, 4), (16, 14), (20, 12), (24, 6)], 1536, 12288, 3036.6),
    ],
)
def test_openelm_releases(L, d, hd, heads_rl, ff0, ff1, params_m):
    for rounding in ("corenet", "cfr"):
        s = resolve(PRESETS["openelm"], L, d, hd, head_multiple_of=4, ffn_divisor=256, rounding=rounding)
        assert run_lengths(s.heads) == heads_rl
        assert (s.d_ff[0], s.d_ff[-1]) == (ff0, ff1)
        assert round(openelm_params(s) / 1e6, 1) == params_m


def test_openelm_11b_equal_adjacent_ffn():
    s = resolve(PRESETS["openelm"], 28, 2048, 64, head_multiple_of=4, ffn_divisor=256)
    assert s.d_ff[13] == s.d_ff[14] == 4608


# ---------------------------------------------------------------- C/F/R (notes 2.3)
CFR = dict(L=18, d_model=768, N=64, head_multiple_of=3, ffn_divisor=256)
CFR_ROWS = {
    "isotropic": (LWSProfile("isotropic", (0.75,), (2.5,)), (2048,) * 18, [(9, 18)], 106.2),
    "vanilla": (
        PRESETS["vanilla"],
        (768, 1024, 1024, 1280, 1280, 1536, 1536, 1792, 1792, 2048, 2048, 2304, 2304, 2560, 2560, 2816, 2816, 3072),
        [(6, 2), (9, 10), (12, 6)],
        102.5,
    ),
    "framed": (
        PRESETS["framed"],
        (3072, 512, 768, 1024, 1024, 1280, 1280, 1536, 1536, 1792, 2048, 2048, 2304, 2560, 2560, 2816, 2816, 3072),
        [(12, 1), (6, 1), (9, 10), (12, 6)],
        102.1,
    ),
    "reverse": (
        PRESETS["reverse"],
        (3072, 2816, 2816, 2560, 2560, 2304, 2048, 2048, 1792, 1536, 1536, 1280, 1280, 1024, 1024, 768, 512, 3072),
        [(12, 6), (9, 10), (6, 1), (12, 1)],
        102.1,
    ),
    "crown": (
        PRESETS["crown"],
        (3072, 768, 1024, 1280, 1536, 2048, 2304, 2560, 2816, 2816, 2560, 2304, 2048, 1536, 1280, 1024, 768, 3072),
        [(12, 1), (9, 5), (12, 6), (9, 5), (12, 1)],
        104.6,
    ),
}


def olmo2_nonembed(s: LayerShapes, g: int = 3) -> int:
    """Notes 2.3 convention: GQA + SwiGLU + 2 block norms + full-width QK-norm + final norm."""
    d, N = s.d_model, s.N
    return d + sum(
        d * (h + 2 * h // g) * N + h * N * d + 3 * d * f + 2 * d + h * N + h // g * N for h, f in zip(s.heads, s.d_ff)
    )


@pytest.mark.parametrize("name", list(CFR_ROWS))
@pytest.mark.parametrize("rounding", ["corenet", "cfr"])
def test_cfr_rows_exact(name, rounding):
    profile, d_ff, heads_rl, nonemb_m = CFR_ROWS[name]
    s = resolve(profile, **CFR, rounding=rounding)
    assert s.d_ff == d_ff
    assert run_lengths(s.heads) == heads_rl
    assert all(h % 3 == 0 for h in s.heads)  # n_kv = n_q / 3
    assert round(olmo2_nonembed(s) / 1e6, 1) == nonemb_m
    total = olmo2_nonembed(s) + 2 * 50304 * 768  # untied embeddings
    assert 179e6 < total < 184e6


def test_base18l_yaml_form_equals_isotropic():
    yaml_form = LWSProfile("linear", (0.75, 0.75), (2.5, 2.5))  # base18L.yaml writes 2-lists
    assert resolve(yaml_form, **CFR) == resolve(CFR_ROWS["isotropic"][0], **CFR)


def test_crown_interpolation_even_and_odd():
    a, b = layer_multipliers(LWSProfile("crown", (0.5, 1.0, 0.5), (0.5, 3.8, 0.5), frame=(1.0, 4.0)), 18)
    assert a[0] == a[-1] == 1.0 and b[0] == b[-1] == 4.0  # frame
    assert b[8] == b[9] == pytest.approx(3.8)  # flat two-layer peak
    assert b[1] == pytest.approx(0.5 + 3.3 / 8) and b == pytest.approx(b[::-1])
    a5, b5 = layer_multipliers(dataclasses.replace(PRESETS["crown"], frame=(0.5, 0.5)), 5)
    assert a5 == pytest.approx([0.5, 0.75, 1.0, 0.75, 0.5])  # odd L: single peak
    assert b5 == pytest.approx([0.5, 2.15, 3.8, 2.15, 0.5])


# ---------------------------------------------------------------- resolve / explicit
def test_isotropic_unit_divisors():
    s = resolve(LWSProfile("isotropic", (1.0,), (2.5,)), 4, 512, 64)
    assert s.heads == (8,) * 4 and s.d_ff == (1280,) * 4 and s.L == 4
    assert s.n_params_nonembed() == 4 * (4 * 512 * 8 * 64 + 2 * 512 * 1280)


def test_explicit_lists_win():
    p = LWSProfile("explicit", heads=[2, 4, 6], d_ff=(100, 200, 300))
    s = resolve(p, 3, 256, 32)
    assert s.heads == (2, 4, 6) and s.d_ff == (100, 200, 300)
    over = LWSProfile("linear", (0.5, 1.0), (1.0, 4.0), d_ff=(7, 8, 9))
    assert resolve(over, 3, 256, 32).d_ff == (7, 8, 9)
    with pytest.raises(ValueError, match="heads has length 3, expected 4"):
        resolve(p, 4, 256, 32)


# ---------------------------------------------------------------- scaled
def test_scaled_is_exact_and_keeps_profile():
    base = resolve(PRESETS["crown"], **CFR)
    for h, f in [(1, 1), (2, 2), (3, 1), (4, 8)]:
        s = base.scaled(head_factor=h, ffn_factor=f)
        assert s.heads == tuple(h * x for x in base.heads)
        assert s.d_ff == tuple(f * x for x in base.d_ff)
        assert s.d_model == h * base.d_model and s.N == base.N and s.L == base.L
        assert [x / s.heads[0] for x in s.heads] == [x / base.heads[0] for x in base.heads]
        attn = 4 * base.d_model * base.N * sum(base.heads)
        assert s.n_params_nonembed() == h * h * attn + h * f * (base.n_params_nonembed() - attn)
    for bad in (0, -2, 1.5, 2.0, True):
        with pytest.raises(ValueError, match="head_factor"):
            base.scaled(head_factor=bad)
        with pytest.raises(ValueError, match="ffn_factor"):
            base.scaled(ffn_factor=bad)


# ---------------------------------------------------------------- budget_match
BASE18L = LWSProfile("isotropic", (0.75,), (2.5,))


@pytest.mark.parametrize("name", ["crown", "openelm", "vanilla", "framed", "reverse"])
@pytest.mark.parametrize(
    "cfg, target",
    [
        (CFR, BASE18L),
        (dict(L=16, d_model=1280, N=64, head_multiple_of=4, ffn_divisor=256), LWSProfile("isotropic", (1.0,), (4.0,))),
        (dict(L=18, d_model=768, N=64), LWSProfile("isotropic", (1.0,), (4.0,))),
    ],
)
def test_budget_match_tolerance(name, cfg, target):
    prof = PRESETS[name]
    adj, s = budget_match(prof, target=target, **cfg)
    want = resolve(target, **cfg).n_params_nonembed()
    assert abs(s.n_params_nonembed() - want) / want < 0.005  # documented: < 0.5%
    assert s == resolve(adj, **cfg)
    assert adj.kind == prof.kind and adj.frame == prof.frame
    dq = {round(a - b, 9) for a, b in zip(adj.qkv, prof.qkv)}
    df = {round(a - b, 9) for a, b in zip(adj.ffn, prof.ffn)}
    assert len(dq) == 1 and len(df) == 1  # one common offset each


def test_budget_match_crown_cfr_exact_and_default_target():
    adj, s = budget_match(PRESETS["crown"], target=BASE18L, **CFR)
    assert s.n_params_nonembed() == resolve(BASE18L, **CFR).n_params_nonembed()
    assert adj.qkv[0] == adj.qkv[2] and s.heads == s.heads[::-1]
    # default target (isotropic alpha=beta=1) is reachable from the isotropic preset...
    adj, s = budget_match(PRESETS["isotropic"], **CFR)
    assert s == resolve(PRESETS["isotropic"], **CFR)
    # ...but not from crown: the 3.8 peak and 4.0 frame alone exceed d_ff = d_model per layer
    with pytest.raises(ValueError, match="unreachable"):
        budget_match(PRESETS["crown"], **CFR)
    with pytest.raises(ValueError, match="explicit"):
        budget_match(LWSProfile("explicit", heads=(1,), d_ff=(1,)), 1, 64, 64)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="wedge", qkv=(1.0,), ffn=(1.0,)), "kind"),
        (dict(kind="linear", qkv=(0.5,), ffn=(1.0, 4.0)), "qkv.*2 value"),
        (dict(kind="crown", qkv=(0.5, 1.0, 0.5), ffn=(1.0, 4.0)), "ffn.*3 value"),
        (dict(kind="linear", qkv=(0.0, 1.0), ffn=(1.0, 4.0)), "qkv.*positive"),
        (dict(kind="isotropic", qkv=(1.0,), ffn=(-2.0,)), "ffn.*positive"),
        (dict(kind="isotropic", qkv=(float("nan"),), ffn=(1.0,)), "qkv.*finite"),
        (dict(kind="reverse", qkv=(0.5, 1.0), ffn=(4.0, 0.5)), "qkv.*start > end"),
        (dict(kind="crown", qkv=(0.5, 1.0, 0.6), ffn=(0.5, 3.8, 0.5)), "qkv.*lo, hi, lo"),
        (dict(kind="framed", qkv=(0.5, 1.0), ffn=(0.5, 4.0), frame=(1.0,)), "frame"),
        (dict(kind="framed", qkv=(0.5, 1.0), ffn=(0.5, 4.0), frame=(0.0, 4.0)), "frame"),
        (dict(kind="explicit", heads=(1, 2)), "d_ff"),
        (dict(kind="explicit", heads=(1, 2), d_ff=(3,)), "same length"),
        (dict(kind="explicit", heads=(1, 0), d_ff=(3, 4)), "heads.*positive"),
        (dict(kind="explicit", qkv=(1.0,), heads=(1,), d_ff=(3,)), "no qkv"),
    ],
)
def test_profile_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LWSProfile(**kwargs)


def test_profile_defaults_and_presets():
    assert PRESETS["framed"].frame == PRESETS["reverse"].frame == PRESETS["crown"].frame == (1.0, 4.0)
    assert LWSProfile("crown", [0.5, 1.0, 0.5], [0.5, 3.8, 0.5]).frame == (1.0, 4.0)
    assert PRESETS["openelm"].frame is None and PRESETS["vanilla"].frame is None
    assert LWSProfile("linear", [0.5, 1], [1, 4]).qkv == (0.5, 1.0)  # lists become tuples
    assert get_profile("vanilla") == LWSProfile("linear", (0.5, 1.0), (1.0, 4.0))
    with pytest.raises(ValueError, match="crown.*isotropic"):
        get_profile("hourglass")
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["crown"].kind = "linear"  # type: ignore[misc]


def test_resolve_and_shapes_validation():
    p = PRESETS["openelm"]
    with pytest.raises(ValueError, match="d_model=100 must be a multiple.*N=64"):
        resolve(p, 4, 100, 64)
    with pytest.raises(ValueError, match="L"):
        resolve(p, 0, 128, 64)
    with pytest.raises(ValueError, match="ffn_divisor"):
        resolve(p, 4, 128, 64, ffn_divisor=0)
    with pytest.raises(ValueError, match="rounding"):
        resolve(p, 4, 128, 64, rounding="floor")
    with pytest.raises(ValueError, match="explicit"):
        layer_multipliers(LWSProfile("explicit", heads=(1,), d_ff=(1,)), 1)
    with pytest.raises(ValueError, match="d_ff has length 1, expected 2"):
        LayerShapes((1, 2), (3,), 64, 128)
    with pytest.raises(ValueError, match="N"):
        LayerShapes((1,), (3,), 0, 128)
