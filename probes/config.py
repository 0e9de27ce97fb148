"""Build a RunConfig from defaults, an optional config file (TOML or JSON) and command-line overrides.

Config file layout (every section and key optional):

    [model]  N = 16  H = 4  L = 2  task = "lm"  seq_len = 64  lws = "isotropic"  axis = "N"
    [param]  preset = "mup"  gamma0 = 1.0  beta0 = 1.0  centre = "copy"
    [optim]  name = "adam"  eta0 = 0.05  weight_decay = 0.0
    [run]    steps = 200  batch_size = 32  seed = 0  device = "cpu"  data_path = "..."
    [probes] enabled = true  schedule = "every"  every = 10  n_log = 20  n_samples = 32  seed = 0  n_points = 4

Precedence: command line > file > defaults. `scale` sets the size named by `axis` (N, H or L).
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path

from parametrizations.optim import OptimConfig
from parametrizations.spec import get_preset
from parametrizations.transformer import ModelConfig

from .recorder import ProbeConfig
from .run import RunConfig

MODEL_KEYS = {f.name for f in fields(ModelConfig)}
OPTIM_KEYS = {f.name for f in fields(OptimConfig)}
RUN_KEYS = {f.name for f in fields(RunConfig)} - {"model", "param", "optim", "probes"}
PROBE_KEYS = {f.name for f in fields(ProbeConfig)}
PARAM_KEYS = {"preset", "alpha_A", "alpha_L", "beta0", "gamma0", "L0", "centre"}


def read_config_file(path: str | Path) -> dict:
    """Parse a .toml or .json config file into {section: {key: value}}; ValueError names the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config: no such file {path}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"--config: {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({e})") from None
    allowed = {"model": MODEL_KEYS, "param": PARAM_KEYS, "optim": OPTIM_KEYS, "run": RUN_KEYS, "probes": PROBE_KEYS}
    for section, values in data.items():
        if section not in allowed or not isinstance(values, dict):
            raise ValueError(f"--config: unknown section [{section}] in {path}; sections are {', '.join(allowed)}")
        unknown = set(values) - allowed[section]
        if unknown:
            raise ValueError(f"--config: unknown key(s) {', '.join(sorted(unknown))} in [{section}] of {path}")
    return data


def make_run_config(config_file: str | None = None, *, scale: int | None = None, model: dict | None = None,
                    param: dict | None = None, optim: dict | None = None, run: dict | None = None,
                    probes: dict | None = None) -> RunConfig:
    """Merge defaults < file < overrides (None values are ignored) and validate; returns the RunConfig."""
    data = read_config_file(config_file) if config_file else {}

    def merged(section: str, over: dict | None) -> dict:
        out = dict(data.get(section, {}))
        out.update({k: v for k, v in (over or {}).items() if v is not None})
        return out

    m, p, o, r = merged("model", model), merged("param", param), merged("optim", optim), merged("run", run)
    pr = merged("probes", probes)
    if pr.get("at") is not None:
        pr["at"] = tuple(int(v) for v in pr["at"])
    probe_cfg = ProbeConfig(**pr)
    if scale is not None:
        axis = m.get("axis", "N")
        if axis not in ("N", "H", "L"):
            raise ValueError(f"--axis must be N, H or L, got {axis!r}")
        if scale < 1:
            raise ValueError(f"--scale must be a positive integer, got {scale}")
        m[axis] = scale
    for key in ("lws_heads", "lws_d_ff"):
        if key in m and m[key] is not None:
            m[key] = tuple(int(v) for v in m[key])
    d_model = m.pop("d_model", None)
    model_cfg = ModelConfig(**m)
    try:
        model_cfg.shapes()
    except ValueError as e:
        raise ValueError(f"--lws: {e}") from None
    if d_model is not None and d_model != model_cfg.d_model:
        raise ValueError(f"--d-model {d_model} does not match N*H = {model_cfg.N}*{model_cfg.H} = {model_cfg.d_model}")
    preset = p.pop("preset", "mup")
    try:
        param_cfg = get_preset(preset, **p)
    except ValueError as e:
        raise ValueError(f"--param: {e}") from None
    if "betas" in o:
        o["betas"] = tuple(o["betas"])
    optim_cfg = OptimConfig(**o)
    return RunConfig(model=model_cfg, param=param_cfg, optim=optim_cfg, probes=probe_cfg, **r)
