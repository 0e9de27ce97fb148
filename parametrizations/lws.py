"""Layer-wise scaling (LWS): depth profiles and their per-layer integer shapes.

Reproduces OpenELM's LWS (``apple/corenet`` ``GPTConfig``) and the Crown/Framed/Reverse
variants (``baroian/OLMo-custom``); see docs/design.md, "LWS profiles".
Layer i gets ``H_i = make_divisible(alpha_i*d_model, N*head_multiple_of) // N`` query heads
and ``d_ff_i = make_divisible(beta_i*d_model, ffn_divisor)`` MLP units (head dim N fixed).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "make_divisible",
    "LWSProfile",
    "PRESETS",
    "get_profile",
    "layer_multipliers",
    "LayerShapes",
    "resolve",
    "budget_match",
]

KINDS = ("isotropic", "linear", "framed", "reverse", "crown", "explicit")
_ARITY = {"isotropic": 1, "linear": 2, "framed": 2, "reverse": 2, "crown": 3}
DEFAULT_FRAME = (1.0, 4.0)  # C/F/R ``layer_freeze``: qkv 1.0, ffn 4.0 on the first/last layer
ROUNDINGS = ("corenet", "cfr")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, variant: str = "corenet") -> int:
    """Round ``v`` half-up to a multiple of ``divisor``, never more than 10% below ``v``.

    ``variant="corenet"`` is corenet's ``math_utils.make_divisible`` (bump when the rounded
    value is ``< 0.9 * v``).  ``variant="cfr"`` is the C/F/R re-implementation
    (``v < divisor -> divisor``; bump when ``<= 0.9 * v``; ``min_value`` unused); the two
    differ only when the rounded value is exactly ``0.9 * v``, e.g. ``v=10, divisor=3``.

    Returns:
        The rounded value, a positive multiple of ``divisor`` (or ``min_value``), as an int.
    """
    if isinstance(divisor, bool) or not isinstance(divisor, (int, np.integer)) or divisor < 1:
        raise ValueError(f"divisor must be a positive integer, got {divisor!r}")
    if variant == "cfr":
        if v < divisor:
            return int(divisor)
        rounded = int(v + divisor / 2) // divisor * divisor
        return int(rounded + divisor if rounded <= 0.9 * v else rounded)
    if variant != "corenet":
        raise ValueError(f"variant must be one of {ROUNDINGS}, got {variant!r}")
    new_v = max(divisor if min_value is None else min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def _positive_floats(name: str, values: Any) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in values)  # anything: a non-sequence is the ValueError below
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from exc
    for x in out:
        if not math.isfinite(x) or x <= 0:
            raise ValueError(f"{name} multipliers must be finite and positive, got {out}")
    return out


def _positive_ints(name: str, values: Any, length: int | None = None) -> tuple[int, ...]:
    try:
        items = list(values)  # anything: a non-sequence is the ValueError below
    except TypeError as exc:
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}") from exc
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
            raise ValueError(f"{name} entries must be positive integers, got {values!r}")
    if not items or (length is not None and len(items) != length):
        raise ValueError(f"{name} has length {len(items)}, expected {length or '>= 1'}")
    return tuple(int(x) for x in items)


@dataclass(frozen=True)
class LWSProfile:
    """Depth profile of head multipliers alpha (``qkv``) and MLP multipliers beta (``ffn``).

    ``kind``: "isotropic" (1 value each), "linear"/"framed"/"reverse" (2 values
    ``(start, end)``; reverse needs ``start > end``), "crown" (3 values ``(lo, hi, lo)``), or
    "explicit" (no multipliers; per-layer ``heads`` and ``d_ff`` are required).  ``frame``
    ``(alpha, beta)`` pins the first and last layer and defaults to ``(1.0, 4.0)`` for
    framed/reverse/crown.  ``heads``/``d_ff`` given on any kind override the profile.
    """

    kind: str
    qkv: tuple[float, ...] = ()
    ffn: tuple[float, ...] = ()
    frame: tuple[float, float] | None = None
    heads: tuple[int, ...] | None = None
    d_ff: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        for name in ("heads", "d_ff"):
            if getattr(self, name) is not None:
                put(name, _positive_ints(name, getattr(self, name)))
        if self.kind == "explicit":
            if self.heads is None or self.d_ff is None:
                raise ValueError("kind='explicit' requires both heads and d_ff per-layer lists")
            if len(self.heads) != len(self.d_ff):
                raise ValueError(
                    f"heads (len {len(self.heads)}) and d_ff (len {len(self.d_ff)}) must have the same length"
                )
            if tuple(self.qkv) or tuple(self.ffn) or self.frame is not None:
                raise ValueError("kind='explicit' takes no qkv/ffn multipliers and no frame")
            put("qkv", ())
            put("ffn", ())
            return
        n = _ARITY[self.kind]
        for name in ("qkv", "ffn"):
            vals = _positive_floats(name, getattr(self, name))
            if len(vals) != n:
                raise ValueError(f"{name} for kind={self.kind!r} needs {n} value(s), got {vals}")
            if self.kind == "reverse" and not vals[0] > vals[1]:
                raise ValueError(f"{name} for kind='reverse' needs start > end, got {vals}")
            if self.kind == "crown" and vals[0] != vals[2]:
                raise ValueError(f"{name} for kind='crown' must be (lo, hi, lo), got {vals}")
            put(name, vals)
        frame = self.frame
        if frame is None and self.kind in ("framed", "reverse", "crown"):
            frame = DEFAULT_FRAME
        if frame is not None:
            pair = _positive_floats("frame", frame)
            if len(pair) != 2:
                raise ValueError(f"frame must be (qkv, ffn), got {pair}")
            frame = (pair[0], pair[1])
        put("frame", frame)


PRESETS: dict[str, LWSProfile] = {
    "isotropic": LWSProfile("isotropic", (1.0,), (1.0,)),
    "openelm": LWSProfile("linear", (0.5, 1.0), (0.5, 4.0)),
    "vanilla": LWSProfile("linear", (0.5, 1.0), (1.0, 4.0)),
    "framed": LWSProfile("framed", (0.5, 1.0), (0.5, 4.0), (1.0, 4.0)),
    "reverse": LWSProfile("reverse", (1.0, 0.5), (4.0, 0.5), (1.0, 4.0)),
    "crown": LWSProfile("crown", (0.5, 1.0, 0.5), (0.5, 3.8, 0.5), (1.0, 4.0)),
}


def get_profile(name: str) -> LWSProfile:
    """Returns the preset profile called ``name`` (raises ValueError listing valid names)."""
    if name not in PRESETS:
        raise ValueError(f"unknown LWS preset {name!r}; valid names: {sorted(PRESETS)}")
    return PRESETS[name]


def _profile(points: tuple[float, ...], L: int) -> list[float]:
    if len(points) == 1:
        return [points[0]] * L
    if len(points) == 2:  # corenet: round(np.linspace(a, b, L)[i], 2)
        return [round(float(m), 2) for m in np.linspace(points[0], points[1], num=L, dtype=float)]
    lo, hi = points[0], points[1]  # C/F/R three-point interpolation, no rounding
    c = math.ceil(L / 2)
    if L % 2 == 0:
        xs, ys = [0, c - 1, c, L - 1], [lo, hi, hi, lo]
    else:
        xs, ys = [0, c - 1, L - 1], [lo, hi, points[2]]
    return [float(m) for m in np.interp(np.arange(L), xs, ys)]


def layer_multipliers(profile: LWSProfile, L: int) -> tuple[list[float], list[float]]:
    """Returns ``(alpha_i, beta_i)``: per-layer qkv and ffn multipliers, frame applied."""
    _positive_ints("L (number of layers)", [L])
    if profile.kind == "explicit":
        raise ValueError("kind='explicit' has no multiplier profile; use resolve()")
    alpha, beta = _profile(profile.qkv, L), _profile(profile.ffn, L)
    if profile.frame is not None:
        alpha[0] = alpha[-1] = profile.frame[0]
        beta[0] = beta[-1] = profile.frame[1]
    return alpha, beta


@dataclass(frozen=True)
class LayerShapes:
    """Resolved per-layer shapes: query ``heads`` H_l, MLP width ``d_ff``, head dim ``N``."""

    heads: tuple[int, ...]
    d_ff: tuple[int, ...]
    N: int
    d_model: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _positive_ints("heads", self.heads))
        object.__setattr__(self, "d_ff", _positive_ints("d_ff", self.d_ff, len(self.heads)))
        _positive_ints("N and d_model", [self.N, self.d_model])

    @property
    def L(self) -> int:
        """Returns the number of layers."""
        return len(self.heads)

    def n_params_nonembed(self) -> int:
        """Returns the q,k,v,o (4*d_model*H_l*N) + MLP (2*d_model*d_ff_l) weight count.

        Plain (non-gated) MLP, full multi-head k/v, no biases, no norms, no embeddings.
        """
        d, N = self.d_model, self.N
        return sum(4 * d * h * N + 2 * d * f for h, f in zip(self.heads, self.d_ff))

    def scaled(self, head_factor: int = 1, ffn_factor: int = 1) -> LayerShapes:
        """Returns shapes with every H_l and d_model times ``head_factor``, d_ff times ``ffn_factor``.

        Round once at the base shape, then multiply exactly (docs/design.md, "LWS profiles"), so the
        depth profile is invariant.  ``d_model = N*H`` scales with heads (option (a)); pass
        ``ffn_factor=head_factor`` to keep beta_l = d_ff_l / d_model fixed.
        """
        _positive_ints("head_factor", [head_factor])
        _positive_ints("ffn_factor", [ffn_factor])
        return LayerShapes(
            tuple(h * head_factor for h in self.heads),
            tuple(f * ffn_factor for f in self.d_ff),
            self.N,
            self.d_model * head_factor,
        )


def resolve(
    profile: LWSProfile,
    L: int,
    d_model: int,
    N: int,
    head_multiple_of: int = 1,
    ffn_divisor: int = 1,
    rounding: str = "corenet",
) -> LayerShapes:
    """Returns the per-layer integer shapes of ``profile`` at depth ``L``.

    ``H_l = make_divisible(d_model*alpha_l, N*head_multiple_of) // N`` and
    ``d_ff_l = make_divisible(beta_l*d_model, ffn_divisor)``; explicit ``heads``/``d_ff``
    are used as given.  ``rounding="cfr"`` selects the C/F/R ``make_divisible`` variant.
    """
    for name, v in (
        ("L (number of layers)", L),
        ("d_model", d_model),
        ("N", N),
        ("head_multiple_of", head_multiple_of),
        ("ffn_divisor", ffn_divisor),
    ):
        _positive_ints(name, [v])
    if d_model % N:
        raise ValueError(f"d_model={d_model} must be a multiple of the head dim N={N}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if profile.kind != "explicit":
        alpha, beta = layer_multipliers(profile, L)
    heads = (
        _positive_ints("heads", profile.heads, L)
        if profile.heads is not None
        else tuple(make_divisible(d_model * a, N * head_multiple_of, variant=rounding) // N for a in alpha)
    )
    d_ff = (
        _positive_ints("d_ff", profile.d_ff, L)
        if profile.d_ff is not None
        else tuple(make_divisible(b * d_model, ffn_divisor, variant=rounding) for b in beta)
    )
    return LayerShapes(heads, d_ff, N, d_model)


def _shift(profile: LWSProfile, dq: float, df: float) -> LWSProfile:
    # round(., 10) strips float noise such as 0.41000000000000003 from the offsets
    return dataclasses.replace(
        profile, qkv=tuple(round(x + dq, 10) for x in profile.qkv), ffn=tuple(round(x + df, 10) for x in profile.ffn)
    )


def _match_offset(
    count: Callable[[float], int], points: tuple[float, ...], target: int, what: str
) -> tuple[float, float]:
    """Returns offsets (c_below, c_above) bracketing ``target`` for a non-decreasing count(c).

    c_below is on the last plateau with count < target (or == target), c_above on the first
    with count >= target; each is the shortest decimal on its plateau (0 if possible).
    """
    lo = -min(points) + 1e-6  # keeps every shifted point positive
    if count(lo) > target:
        raise ValueError(
            f"budget_match: target {what} count {target} is below the minimum "
            f"{count(lo)} reachable by shifting (frame/min-size rounding)"
        )
    hi = 1.0
    for _ in range(64):
        if count(hi) >= target:
            break
        hi *= 2
    else:
        raise ValueError(f"budget_match: target {what} count {target} is unreachable")
    for _ in range(80):  # bisection on the rounded, monotone step function
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return _tidy(count, lo, points), _tidy(count, hi, points)


def _tidy(count: Callable[[float], int], c: float, points: tuple[float, ...]) -> float:
    """Returns 0, or the shortest decimal, on the same plateau of count as offset c."""
    for cand in [0.0] + [round(c, k) for k in range(1, 12)]:
        if cand > -min(points) + 1e-9 and count(cand) == count(c):
            return cand
    return c


def budget_match(
    profile: LWSProfile,
    L: int,
    d_model: int,
    N: int,
    target: LWSProfile | None = None,
    head_multiple_of: int = 1,
    ffn_divisor: int = 1,
    rounding: str = "corenet",
) -> tuple[LWSProfile, LayerShapes]:
    """Shift ``profile``'s qkv and ffn points (not the frame) to match ``target``'s budget.

    The qkv offset is bisected on the (monotone, rounded) attention count 4*d*N*sum(H_l)
    against the target's; for both plateaus around the crossing and two 0.01 steps further
    out, the ffn offset is bisected against the remaining budget, and the candidate with the
    smallest total mismatch wins (ties: smaller attention mismatch).  Achieved: total
    non-embedding count within ~half a d_ff rounding jump, exact for most OpenELM/C/F/R
    configs and < 0.5% in all tested ones (attention alone may miss by a head step, ~2.5%).
    Shifting cannot shrink the frame or the peak-to-base gap, so the default target
    ``LWSProfile("isotropic", (1.0,), (1.0,))`` is unreachable for the LWS presets (ValueError);
    pass e.g. ``LWSProfile("isotropic", (0.75,), (2.5,))`` (C/F/R base18L).

    Returns:
        ``(adjusted_profile, resolve(adjusted_profile, ...))``.
    """
    if profile.kind == "explicit" or profile.heads is not None or profile.d_ff is not None:
        raise ValueError("budget_match needs a multiplier profile without explicit heads/d_ff")
    target = target if target is not None else LWSProfile("isotropic", (1.0,), (1.0,))
    kw: dict[str, Any] = dict(head_multiple_of=head_multiple_of, ffn_divisor=ffn_divisor, rounding=rounding)
    t = resolve(target, L, d_model, N, **kw)
    attn = lambda s: 4 * d_model * N * sum(s.heads)  # noqa: E731
    mlp = lambda s: 2 * d_model * sum(s.d_ff)  # noqa: E731
    a_count = lambda c: attn(resolve(_shift(profile, c, 0.0), L, d_model, N, **kw))  # noqa: E731
    a_lo, a_hi = _match_offset(a_count, profile.qkv, attn(t), "attention")
    # qkv candidates: both sides of the crossing and two 0.01 steps (the multiplier grid) out
    best: tuple[tuple[int, int], LWSProfile] | None = None
    for dq in dict.fromkeys([a_lo, a_hi, a_lo - 0.01, a_hi + 0.01, a_lo - 0.02, a_hi + 0.02]):
        if dq <= -min(profile.qkv):
            continue
        p = _shift(profile, dq, 0.0)
        a = attn(resolve(p, L, d_model, N, **kw))
        f_count = lambda c, p=p: mlp(resolve(_shift(p, 0.0, c), L, d_model, N, **kw))  # noqa: E731
        try:
            sides = _match_offset(f_count, profile.ffn, t.n_params_nonembed() - a, "MLP")
        except ValueError:
            continue
        for df in sides:
            cand = _shift(p, 0.0, df)
            s = resolve(cand, L, d_model, N, **kw)
            key = (abs(s.n_params_nonembed() - t.n_params_nonembed()), abs(a - attn(t)))
            if best is None or key < best[0]:
                best = (key, cand)
    if best is None:
        raise ValueError(
            f"budget_match: target {target} is unreachable: its MLP budget is below "
            "what any ffn offset gives (frame / profile peak / min-size rounding)"
        )
    return best[1], resolve(best[1], L, d_model, N, **kw)
