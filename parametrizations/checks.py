"""Checks of config values, shared by the config dataclasses (ModelConfig, Parametrization, OptimConfig,
RunConfig, ProbeConfig).

Each check raises `ConfigError(key, reason)`: a ValueError whose message is "<key> <reason>" (e.g. "gamma0 must
be a finite number > 0, got nan"), so a dataclass used directly names its field, and `probes.experiment.config` can name
the command-line option or the config-file key the value came from instead (`err.key`, `err.reason`).

Types are strict: an int field takes an integer (not a bool, not a float), a float field a real number (not a
bool), a bool field a real boolean, a str field a string. `probes.experiment.config` converts what a config file may
legitimately hold (4.0 for an int, a list for a tuple) before the dataclasses see it.
"""

from __future__ import annotations

import math
import numbers
from typing import TypeGuard

FLOAT32_MAX = 3.4028234663852886e38
# Derived numbers that end up in float32 tensors (multipliers, init std, learning rate) must stay inside this
# range: eight decades inside float32's normal range (1.2e-38 to 3.4e38), so the O(1) entries they scale stay
# finite and normal.
DERIVED_MIN, DERIVED_MAX = 1e-30, 1e30


class ConfigError(ValueError):
    """A config value is wrong. key: the field; reason: what was expected and what was given."""

    def __init__(self, key: str, reason: str):
        self.key, self.reason = key, reason
        super().__init__(f"{key} {reason}")


def short(v: object, n: int = 60) -> str:
    """repr(v), cut to n characters (a message stays one short line whatever the value)."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def is_int(v: object) -> TypeGuard[int]:
    """True for an integer (Python's or numpy's: used as an int), never a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v: object) -> TypeGuard[float]:
    """True for a real number (int, float or numpy's: used as a float), never a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _interval(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_int(key: str, v: object, lo: int | None = 1, hi: int | None = None) -> None:
    """v is an integer in [lo, hi] (None: unbounded)."""
    if lo == 1:
        what = "a positive integer"
    elif lo == 0:
        what = "a non-negative integer"
    elif lo is None:
        what = "an integer"
    else:
        what = f"an integer >= {lo}"
    if hi is not None:
        what += f" <= {hi}"
    if not is_int(v):
        raise ConfigError(key, f"must be {what}, got {short(v)} ({type(v).__name__})")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(key, f"must be {what}, got {short(v)}")


def check_float(
    key: str,
    v: object,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """v is a finite real number in the interval (bounds None: unbounded; *_open: the bound excluded)."""
    what = "a finite number" + ("" if lo is None and hi is None else " " + _interval(lo, hi, lo_open, hi_open))
    if not is_real(v):
        raise ConfigError(key, f"must be {what}, got {short(v)} ({type(v).__name__})")
    try:
        finite = math.isfinite(v)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ConfigError(key, f"must be {what}, got {short(v)}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(key, f"must be {what}, got {v:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ConfigError(key, f"must be {what}, got {v:g}")


def check_bool(key: str, v: object) -> None:
    if not isinstance(v, bool):
        raise ConfigError(key, f"must be true or false, got {short(v)} ({type(v).__name__})")


def check_str(key: str, v: object) -> None:
    if not isinstance(v, str):
        raise ConfigError(key, f"must be a string, got {short(v)} ({type(v).__name__})")


def one_of_error(name: str, value: object, choices) -> ValueError:
    """The one wording of a value outside its choices, for an option, a variable or a file field: ValueError
    "<name> must be one of a, b, got <value>" (the value's repr cut to 60 characters, so one short line)."""
    return ValueError(f"{name} must be one of {', '.join(choices)}, got {short(value)}")


def check_choice(key: str, v: object, choices) -> None:
    if not isinstance(v, str) or v not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}; got {short(v)}")


def check_int_list(key: str, v: object, lo: int = 1, hi: int | None = None, max_len: int | None = None) -> None:
    """v is a tuple or list of integers in [lo, hi], at most max_len long (and not empty)."""
    if not isinstance(v, (tuple, list)) or not v or (max_len is not None and len(v) > max_len):
        size = f"1 to {max_len}" if max_len is not None else "one or more"
        raise ConfigError(key, f"must be a list of {size} integers, got {short(v)}")
    for x in v:
        if not is_int(x) or x < lo or (hi is not None and x > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(key, f"entries must be integers {rng}, got {short(x)}")


def safe(fn, *args, **kwargs) -> float:
    """fn(*args) as a float; inf when the arithmetic overflows or divides by zero."""
    try:
        return float(fn(*args, **kwargs))
    except (OverflowError, ZeroDivisionError):
        return math.inf
