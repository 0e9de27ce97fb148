"""Seed ensembles: which seeds of one configuration train together as one batched model.

`train_seeds(cfg, seeds, mode)` trains the seeds of one sweep point: mode "off" runs them one after another
(`probes.experiment.run.train`), mode "auto" trains them in groups (`plan_groups`), each group a seed ensemble
(`probes.experiment.run.train_ensemble`; a group of one seed is a plain run). Either way the results are the same per seed
(to float tolerance): the same initialisation, data order, losses and probes. Bit for bit, a seed's numbers depend
on the group it trained in, so the grouping is a rule of the config alone, the same on every machine:

- all the seeds asked for together, in their order, split into groups of `group_size(cfg, n)` =
  min(n, ENSEMBLE_MAX_MEMBERS, ENSEMBLE_BUDGET_BYTES // member_bytes(cfg)) (at least 1);
- free memory only lowers that size where this machine cannot hold a group (a group needs more than
  FREE_FRACTION of the memory free now); the smaller size is then named in a warning.

The mode is "auto" or "off"; where a caller gives none (None), it is the environment variable
DMFT_PROBE_ENSEMBLE, else "auto" (`resolve_mode`, the one place that decides it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace

from parametrizations.checks import one_of_error
from probes.experiment.memory import free_bytes, member_bytes
from probes.experiment.run import RunConfig, RunResult, resolve_device, train, train_ensemble

__all__ = [
    "ENSEMBLE_BUDGET_BYTES",
    "ENSEMBLE_ENV",
    "ENSEMBLE_MAX_MEMBERS",
    "ENSEMBLE_MODES",
    "check_mode",
    "group_size",
    "member_bytes",
    "plan_groups",
    "resolve_mode",
    "train_ensemble",
    "train_group",
    "train_seeds",
]

ENSEMBLE_MODES = ("auto", "off")
ENSEMBLE_ENV = "DMFT_PROBE_ENSEMBLE"
ENSEMBLE_BUDGET_BYTES = 2 << 30  # member_bytes of one group at most (2 GiB)
ENSEMBLE_MAX_MEMBERS = 16  # members of one group at most
FREE_FRACTION = 0.5  # a group must fit in this fraction of the free memory, or it is made smaller


def check_mode(mode: object, name: str = "--ensemble", given: object = None) -> str:
    """`mode` when it is an ensemble mode ("auto" or "off"); otherwise ValueError "<name> must be one of auto, off,
    got <given>" (given: what the user wrote, when `mode` is a cleaned form of it). The one check of a mode, for
    --ensemble, DMFT_PROBE_ENSEMBLE, a sweep's manifest and its parts' attrs."""
    if not isinstance(mode, str) or mode not in ENSEMBLE_MODES:
        raise one_of_error(name, mode if given is None else given, ENSEMBLE_MODES)
    return mode


def resolve_mode(mode: str | None = None) -> str:
    """The ensemble mode to use: `mode` when given, else the environment variable DMFT_PROBE_ENSEMBLE, else
    "auto". ValueError (one line, naming --ensemble or the variable) for anything but "auto" or "off"."""
    if mode is None:
        env = os.environ.get(ENSEMBLE_ENV)
        if env is None or env.strip() == "":
            return "auto"
        return check_mode(env.strip(), ENSEMBLE_ENV, given=env)
    return check_mode(mode)


def group_size(cfg: RunConfig, n_seeds: int) -> int:
    """Members per group for n_seeds seeds of `cfg` under mode "auto", from the config alone (never the machine):
    all of them, at most ENSEMBLE_MAX_MEMBERS and at most what ENSEMBLE_BUDGET_BYTES of `member_bytes` holds;
    at least 1."""
    return max(1, min(n_seeds, ENSEMBLE_MAX_MEMBERS, ENSEMBLE_BUDGET_BYTES // max(member_bytes(cfg), 1)))


def members_this_machine_holds(cfg: RunConfig) -> int:
    """How many members of `cfg` fit in FREE_FRACTION of the memory free now on its device (at least 1)."""
    return max(1, int(FREE_FRACTION * free_bytes(resolve_device(cfg.device)) // max(member_bytes(cfg), 1)))


def _stderr_warning(msg: str) -> None:
    print(msg, file=sys.stderr)


def plan_groups(
    cfg: RunConfig, seeds: list[int], mode: str | None = None, warn: Callable[[str], None] | None = None
) -> list[tuple[int, ...]]:
    """The groups the seeds of `cfg` train in, in the order of `seeds`: one seed each (mode "off"), or
    consecutive groups of `group_size` (mode "auto"), made smaller only where this machine cannot hold such a
    group; then warn(line) names the size used (default: the line on stderr)."""
    seeds = list(seeds)
    mode = resolve_mode(mode)
    if mode == "off" or len(seeds) <= 1:
        return [(s,) for s in seeds]
    size = group_size(cfg, len(seeds))
    held = members_this_machine_holds(cfg)
    if held < size:
        (warn or _stderr_warning)(
            f"warning: this machine's free memory holds {held} of the {size} seeds that train together by the "
            f"ensemble rule ({cfg.model.axis}={getattr(cfg.model, cfg.model.axis)}): training groups "
            f"of {held} instead; the numbers then differ from other machines' at round-off"
        )
        size = held
    return [tuple(seeds[i : i + size]) for i in range(0, len(seeds), size)]


def train_group(cfg: RunConfig, group: list[int] | tuple[int, ...]) -> list[RunResult]:
    """One RunResult per seed of `group`, in its order: a seed ensemble of them all, or a plain run for one
    seed."""
    group = list(group)
    if len(group) == 1:
        return [train(replace(cfg, seed=group[0]))]
    return train_ensemble(cfg, group)


def train_seeds(
    cfg: RunConfig, seeds: list[int], mode: str | None = None, warn: Callable[[str], None] | None = None
) -> list[RunResult]:
    """One RunResult per seed of `cfg`, in the order of `seeds`, trained in the groups of `plan_groups` (mode:
    "auto", "off" or None for `resolve_mode`'s default)."""
    out: list[RunResult] = []
    for group in plan_groups(cfg, seeds, mode, warn):
        out += train_group(cfg, group)
    return out
