"""The manifest of a sweep store (`probes.grid.store`) and what each part says of itself.

`<out>.parts/manifest.json` (format 1) is a JSON object:

| key | type | what |
|---|---|---|
| `format` | 1 | |
| `axis` | "N", "H" or "L" | the swept size |
| `values`, `seeds` | lists of distinct integers | the grid (sizes >= 1, seeds >= 0); every point in `points` |
| `init_only` | bool | probes at initialisation only |
| `base_config`, `config_hash` | object, its sha256 | the config every point shares (`comparable_config`) |
| `ensemble` | "auto", "off" or null | the mode the points train in |
| `merged` | {values, seeds} or null | the grid last merged into `out` |
| `points` | {name: point} | per point `point_name(axis, value, seed)` |

A point: `value`, `seed` (integers of the grid), `status` (one of STATUSES), `message` and `detail` (text or
null: a failure's line and traceback), `sha256` and `bytes` of its finished part (both or neither), `group` (the
seeds it trains with, in order, holding its own; groups of one size never overlap unless equal). `check_manifest`
checks all of it. Each part also carries, as dataset attrs, its `ensemble_group`, `ensemble_mode` and
`sweep_config` (the comparable config as JSON), from which `rebuild_manifest` writes a fresh manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from parametrizations.checks import one_of_error
from probes.experiment.atomic import TEMP_PREFIX
from probes.experiment.dataset import DatasetError, load
from probes.experiment.ensemble import ENSEMBLE_ENV, check_mode
from probes.experiment.options import flag_of
from probes.experiment.run import RunConfig

MANIFEST = "manifest.json"
FORMAT = 1
STATUSES = ("pending", "running", "done", "diverged", "failed")
FINISHED = ("done", "diverged")
AXES = ("N", "H", "L")
GROUP_ATTR = "ensemble_group"  # part attrs: the seeds the point trained with (JSON list), the mode, and the
MODE_ATTR = "ensemble_mode"  # config the sweep asked for (`comparable_config` as JSON; `config` is the
SWEEP_CONFIG_ATTR = "sweep_config"  # resolved one, with data-dependent sizes filled in)


def leaf_flag(leaf: str) -> str | None:
    """The command-line flag of a config leaf ("model.N", "steps", "param.name"), from the one option table
    (`probes.experiment.options`); None when only a config file sets it."""
    section, _, key = leaf.rpartition(".")
    section = section or "run"
    if (section, key) == ("param", "name"):  # a preset and its overrides, spelled by its name
        key = "preset"
    return flag_of(section, key)


def point_name(axis: str, value: int, seed: int) -> str:
    """The name of a grid point, also the stem of its part file: e.g. `N8-seed1`."""
    return f"{axis}{value}-seed{seed}"


def comparable_config(cfg: RunConfig, axis: str) -> dict:
    """cfg.to_dict() without the swept size and the seed, normalised through JSON (tuples become lists): what
    every point of one store shares."""
    return comparable_dict(cfg.to_dict(), axis)


def comparable_dict(config: dict, axis: str) -> dict:
    """A config dict (`RunConfig.to_dict()`, or as a part's `config` attr holds it) without the swept size and
    the seed, normalised through JSON."""
    d = json.loads(json.dumps(config, sort_keys=True))
    d.pop("seed", None)
    if isinstance(d.get("model"), dict):
        d["model"].pop(axis, None)
    return d


def config_hash(comparable: dict) -> str:
    """sha256 (hex) of the canonical JSON of a comparable config."""
    return hashlib.sha256(json.dumps(comparable, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _leaves(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_UNSET = "(unset)"


def config_differences(old: dict, new: dict) -> list[str]:
    """'setting (flag): old -> new' for every leaf that differs between two comparable configs, sorted by key.
    A changed parametrization is reported once, by its name (param.name spells the preset and its overrides)."""
    a, b = _leaves(old), _leaves(new)
    keys = sorted(set(a) | set(b))
    if a.get("param.name") != b.get("param.name"):
        keys = [k for k in keys if not k.startswith("param.") or k == "param.name"]
    lines = []
    for k in keys:
        va, vb = a.get(k, _UNSET), b.get(k, _UNSET)
        if va != vb:
            flag = f" ({leaf_flag(k)})" if leaf_flag(k) else ""
            lines.append(f"{k}{flag}: {json.dumps(va)} -> {json.dumps(vb)}")
    return lines


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- the manifest's schema ----------------------------------------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _short(x: object) -> str:
    """repr of a manifest value, cut to 60 characters (one line whatever it holds)."""
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_list(x: object, what: str, low: int) -> list[int]:
    """x as a list of distinct integers >= low; ValueError naming `what` otherwise."""
    if not isinstance(x, list) or not all(_is_int(v) and v >= low for v in x) or len(set(x)) != len(x):
        kind = "positive" if low > 0 else "non-negative"
        raise ValueError(f"{what} must be a list of distinct {kind} integers, got {_short(x)}")
    return x


def _check_point(name: object, p: object, axis: str, values: set[int], seeds: set[int]) -> None:
    """ValueError naming the point and its first wrong field."""
    if not isinstance(p, dict):
        raise ValueError(f"point {_short(name)} must be an object, got {_short(p)}")
    for key in ("value", "seed", "status"):
        if key not in p:
            raise ValueError(f"point {_short(name)} has no {key!r}")
    v, s = p["value"], p["seed"]
    if not _is_int(v) or v not in values:
        raise ValueError(f"point {_short(name)}: value {_short(v)} is not one of the manifest's values")
    if not _is_int(s) or s not in seeds:
        raise ValueError(f"point {_short(name)}: seed {_short(s)} is not one of the manifest's seeds")
    if name != point_name(axis, v, s):
        raise ValueError(f"point {_short(name)} holds {axis}={v} seed={s}, which is named {point_name(axis, v, s)}")
    if p["status"] not in STATUSES:
        raise ValueError(f"point {name}: status {_short(p['status'])} is not one of {', '.join(STATUSES)}")
    for key in ("message", "detail"):
        if p.get(key) is not None and not isinstance(p[key], str):
            raise ValueError(f"point {name}: {key} must be text or null, got {_short(p[key])}")
    sha, size = p.get("sha256"), p.get("bytes")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise ValueError(f"point {name}: sha256 must be 64 hex digits or null, got {_short(sha)}")
    if size is not None and not (_is_int(size) and size >= 0):
        raise ValueError(f"point {name}: bytes must be a non-negative integer or null, got {_short(size)}")
    if (sha is None) != (size is None):
        raise ValueError(f"point {name}: sha256 and bytes must both be set or both null")
    group = p.get("group")
    if group is not None:
        _int_list(group, f"point {name}: group", 0)
        if not group or s not in group or not set(group) <= seeds:
            raise ValueError(
                f"point {name}: group {_short(group)} must list its own seed {s} and only the manifest's seeds"
            )


def _check_groups(points: dict) -> None:
    """ValueError when two points of one size record overlapping but different seed groups."""
    seen: dict[tuple[int, int], tuple[list[int], str]] = {}
    for name, p in points.items():
        group = p.get("group")
        if group is None:
            continue
        for s in group:
            other = seen.setdefault((p["value"], s), (group, name))
            if other[0] != group:
                raise ValueError(
                    f"points {other[1]} and {name} record different seed groups {other[0]} and "
                    f"{group} that share seed {s}"
                )


def check_manifest(m: object) -> dict:
    """`m` (parsed JSON) when it is a valid manifest (module docstring: every field of the right type, the points
    exactly the grid's, the config hash that of the base config); ValueError naming the first problem otherwise."""
    if not isinstance(m, dict):
        raise ValueError(f"the top level must be an object, got {type(m).__name__}")
    if m.get("format") != FORMAT or not _is_int(m.get("format")):
        raise ValueError(f"format {_short(m.get('format'))}, expected {FORMAT}")
    axis = m.get("axis")
    if axis not in AXES:
        raise one_of_error("axis", axis, AXES)
    values = set(_int_list(m.get("values"), "values", 1))
    seeds = set(_int_list(m.get("seeds"), "seeds", 0))
    if not isinstance(m.get("init_only"), bool):
        raise ValueError(f"init_only must be true or false, got {_short(m.get('init_only'))}")
    if not isinstance(m.get("base_config"), dict):
        raise ValueError(f"base_config must be an object, got {_short(m.get('base_config'))}")
    if not isinstance(m.get("config_hash"), str) or m["config_hash"] != config_hash(m["base_config"]):
        raise ValueError(f"config_hash {_short(m.get('config_hash'))} is not the hash of base_config")
    if m.get("ensemble") is not None:  # null: a manifest written before the mode was recorded
        check_mode(m["ensemble"], "ensemble")
    merged = m.get("merged")
    if merged is not None:
        if not isinstance(merged, dict):
            raise ValueError(f"merged must be an object or null, got {_short(merged)}")
        if (
            not set(_int_list(merged.get("values"), "merged.values", 1)) <= values
            or not set(_int_list(merged.get("seeds"), "merged.seeds", 0)) <= seeds
        ):
            raise ValueError("merged holds values or seeds that are not the manifest's")
    points = m.get("points")
    if not isinstance(points, dict):
        raise ValueError(f"points must be an object, got {_short(points)}")
    for name, p in points.items():
        _check_point(name, p, axis, values, seeds)
    for v in sorted(values):
        for s in sorted(seeds):
            if point_name(axis, v, s) not in points:
                raise ValueError(f"point {point_name(axis, v, s)} of the grid is missing")
    _check_groups(points)
    return m


def new_manifest(axis: str, comparable: dict, init_only: bool) -> dict:
    """An empty manifest of a sweep along `axis` with the config `comparable`: no values, seeds or points yet."""
    return {
        "format": FORMAT,
        "axis": axis,
        "values": [],
        "seeds": [],
        "init_only": bool(init_only),
        "config_hash": config_hash(comparable),
        "base_config": comparable,
        "ensemble": None,
        "merged": None,
        "points": {},
    }


def ensemble_diff(old: str, new: str) -> str:
    """The refusal's 'setting (flags): old -> new' for a changed ensemble mode."""
    return f"ensemble (--ensemble, {ENSEMBLE_ENV}): {json.dumps(old)} -> {json.dumps(new)}"


# ---- a manifest rebuilt from the parts -----------------------------------------------------------------------


def part_info(path: Path, axis: str) -> dict:
    """What a part says of itself: value, seed, status, comparable config and its hash, group, mode, sha256
    and bytes. DatasetError when it does not load (checksums, schema), ValueError when its metadata is not a
    sweep point's."""
    ds = load(path)
    config = json.loads(ds.attrs["config"])
    model = config.get("model") if isinstance(config, dict) else None
    v, s = (model or {}).get(axis), config.get("seed") if isinstance(config, dict) else None
    if not (_is_int(v) and v >= 1 and _is_int(s) and s >= 0):
        raise ValueError(f"its config has no {axis} and seed")
    try:
        comparable = json.loads(ds.attrs[SWEEP_CONFIG_ATTR])
    except KeyError:
        raise ValueError(f"no {SWEEP_CONFIG_ATTR} attribute: not written by a sweep of this version") from None
    except (TypeError, ValueError):
        comparable = None
    if not isinstance(comparable, dict):
        raise ValueError(f"attribute {SWEEP_CONFIG_ATTR} is not a JSON object")
    status = {"ok": "done", "diverged": "diverged"}.get(ds.attrs.get("status"))
    if status is None:
        raise ValueError(f"status {_short(ds.attrs.get('status'))} is not ok or diverged")
    group = ds.attrs.get(GROUP_ATTR)
    if group is not None:
        try:
            group = _int_list(json.loads(group), GROUP_ATTR, 0)
        except (TypeError, ValueError):
            raise ValueError(f"attribute {GROUP_ATTR} {_short(group)} is not a list of seeds") from None
        if s not in group:
            raise ValueError(f"attribute {GROUP_ATTR} {group} does not hold its own seed {s}")
    mode = ds.attrs.get(MODE_ATTR)
    if mode is not None:
        check_mode(mode, f"attribute {MODE_ATTR}")
    return {
        "value": v,
        "seed": s,
        "status": status,
        "comparable": comparable,
        "hash": config_hash(comparable),
        "group": group,
        "mode": mode,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
    }


def rebuild_manifest(
    folder: Path, axis: str, comparable: dict, init_only: bool, ensemble: str, notes: list[str]
) -> dict:
    """A fresh manifest from the parts in `folder`: every part that loads (checksums verified), is named as
    the point it holds and was made with `comparable` becomes a finished point with its sha256, bytes and
    group; the others are named in `notes` and left in place, untrusted. ValueError (nothing changed) when the
    parts were trained in another ensemble mode."""
    want = config_hash(comparable)
    parts: dict[tuple[int, int], dict] = {}
    for path in sorted(folder.glob("*.nc")):
        if path.name.startswith(TEMP_PREFIX):
            continue
        try:
            info = part_info(path, axis)
        except (DatasetError, ValueError) as e:
            notes.append(f"warning: {path.name} is not used ({str(e).splitlines()[0]}); left in place")
            continue
        v, s = info["value"], info["seed"]
        if path.name != f"{point_name(axis, v, s)}.nc":
            notes.append(
                f"warning: {path.name} holds {axis}={v} seed={s}, not the point its name says; not "
                "trusted, left in place"
            )
        elif info["hash"] != want:
            diffs = config_differences(info["comparable"], comparable) or ["the config hash"]
            notes.append(
                f"warning: {path.name} was made with other settings ({'; '.join(diffs[:3])}); not "
                "trusted, left in place (redoing its point replaces it)"
            )
        else:
            parts[(v, s)] = info
    other = sorted({i["mode"] for i in parts.values() if i["mode"] not in (None, ensemble)})
    if other:
        raise ValueError(
            f"--out: the parts in {folder} were trained with other settings "
            f"({ensemble_diff(other[0], ensemble)}); use the same settings to rebuild and resume "
            "them or choose another --out"
        )
    m = new_manifest(axis, comparable, init_only)
    m["values"] = sorted({v for v, _ in parts})
    m["seeds"] = sorted({s for _, s in parts} | {g for i in parts.values() for g in i["group"] or []})
    points = m["points"]
    for v in m["values"]:
        for s in m["seeds"]:
            points[point_name(axis, v, s)] = {
                "value": v,
                "seed": s,
                "status": "pending",
                "message": None,
                "sha256": None,
                "bytes": None,
            }
    for (v, s), info in sorted(parts.items()):
        group = info["group"]
        if group is not None and any(points[point_name(axis, v, g)].get("group") not in (None, group) for g in group):
            notes.append(
                f"warning: {point_name(axis, v, s)}.nc records a seed group {group} that overlaps "
                "another part's; not trusted, left in place (redoing its point replaces it)"
            )
            continue
        points[point_name(axis, v, s)].update(status=info["status"], sha256=info["sha256"], bytes=info["bytes"])
        for g in group or []:
            points[point_name(axis, v, g)]["group"] = list(group)
    return m
