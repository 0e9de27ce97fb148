"""The parametrization and the model (docs/parametrization.md, docs/design.md "The model").

The face of the package, loaded lazily (a name's module is imported on first use):
- presets and rules: `Parametrization`, `PRESETS`, `get_preset` (mup, mup-sqrt, depth-sqrt, sp), `abc` (init std
  and forward multiplier of a role), `OptimConfig`, `global_lr`;
- the built-in model: `ModelConfig`, `build_model` (an `LWSTransformer` under a preset), `build_optimizer`,
  `param_groups` (the per-optimizer learning rates and Adam eps of Table 1);
- layer-wise scaled shapes: `get_profile`, `resolve`, `budget_match`, `LWSProfile`;
- your own model under the parametrization (docs/own-model.md): `apply_parametrization` (returns an `OwnModel`),
  `ROLE_NAMES`.

    from parametrizations import ModelConfig, build_model, get_preset
    model = build_model(ModelConfig(N=16, H=4, L=2), get_preset("mup"), "adam", seed=0)
"""

from __future__ import annotations

import importlib

_FACE = {
    "Parametrization": "spec",
    "PRESETS": "spec",
    "get_preset": "spec",
    "abc": "spec",
    "OptimConfig": "optim",
    "global_lr": "optim",
    "build_optimizer": "optim",
    "param_groups": "optim",
    "ModelConfig": "transformer",
    "LWSTransformer": "transformer",
    "build_model": "transformer",
    "get_profile": "lws",
    "resolve": "lws",
    "budget_match": "lws",
    "LWSProfile": "lws",
    "apply_parametrization": "own_model",
    "OwnModel": "own_model",
    "ROLE_NAMES": "own_model",
}
__all__ = [
    "PRESETS",
    "ROLE_NAMES",
    "LWSProfile",
    "LWSTransformer",
    "ModelConfig",
    "OptimConfig",
    "OwnModel",
    "Parametrization",
    "abc",
    "apply_parametrization",
    "budget_match",
    "build_model",
    "build_optimizer",
    "get_preset",
    "get_profile",
    "global_lr",
    "param_groups",
    "resolve",
]


def __getattr__(name: str):
    """The face's names, each imported from its module on first use (PEP 562)."""
    if name not in _FACE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_FACE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
