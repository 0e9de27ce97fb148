"""A documented test hook: inject a non-finite loss into chosen runs, so divergence tests diverge by construction
(never at a learning rate measured on one machine, whose edge moves with the CPU's floating-point path).

The environment variable `DMFT_PROBE_INJECT_NONFINITE` holds one or more rules separated by `;`, each
`key=value[,key=value...]@STEP` with keys among N, H, L and seed, e.g. `N=256@5` or `N=8,seed=1@3;H=4@0`.
A member of a run (each member of a seed ensemble separately, by its own seed) whose model matches every key of
a rule has the weights after STEP optimizer steps treated as non-finite by the losses that see them: its
training loss of train step STEP (`losses[STEP]`, the `train_loss[STEP]` of the dataset) becomes NaN and, when
STEP is a log step, so does its held-out loss at log step STEP. The run's divergence check then stops that
member with `diverged_at == STEP` exactly, as a real overflow at those weights would: found at log step STEP
(held-out loss, nothing of that log step kept; STEP = 0 leaves no record at all) when STEP is a log step, else
at the next log step (training loss). The training itself is untouched (the gradients stay finite). Several
matching rules: the earliest STEP wins. STEP = the run's steps: the held-out loss of the final log step turns
NaN; a STEP past the run's steps never fires.

`probes.experiment.run._train` reads the variable once, at its start, before any work (nothing happens when it is unset or
empty); spawned pool workers and CLI subprocesses inherit it. A malformed value is a ValueError (one line,
naming the variable). A run that diverged this way says so: `extra["diverged_on"]` ends with
"(injected by DMFT_PROBE_INJECT_NONFINITE=<rule>)" and its dataset carries the attr `injected_fault`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

ENV = "DMFT_PROBE_INJECT_NONFINITE"
KEYS = ("N", "H", "L", "seed")
_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*([0-9]{1,12})\s*")
_STEP = re.compile(r"\s*([0-9]{1,12})\s*")
FORM = "key=value[,key=value...]@STEP with keys N, H, L, seed (e.g. 'N=256@5' or 'N=8,seed=1@3;H=4@0')"


@dataclass(frozen=True)
class Fault:
    """One rule: the sizes a member must have (`match`, {key: value}) and the train step whose losses turn NaN;
    `text` is the rule as written (stripped)."""

    match: tuple[tuple[str, int], ...]
    step: int
    text: str

    def applies(self, sizes: Mapping[str, int]) -> bool:
        """True when every key of the rule equals the member's value in `sizes` ({N, H, L, seed})."""
        return all(sizes[k] == v for k, v in self.match)


def _bad(rule: str, why: str) -> ValueError:
    """The one-line error for a malformed rule (the rule's repr is cut to keep the line short)."""
    shown = repr(rule) if len(repr(rule)) <= 60 else repr(rule)[:57] + "..."
    return ValueError(f"{ENV}: rule {shown} {why}; expected {FORM}")


def parse_rule(rule: str) -> Fault:
    """One `key=value[,key=value...]@STEP` rule -> Fault; ValueError (one line, naming the variable) if malformed."""
    if not rule.strip():
        raise _bad(rule, "is empty (a stray ';'?)")
    if rule.count("@") != 1:
        raise _bad(rule, "needs exactly one '@STEP'")
    keys, step = rule.split("@")
    m = _STEP.fullmatch(step)
    if not m:
        raise _bad(rule, "has a STEP that is not a non-negative integer")
    match: dict[str, int] = {}
    for pair in keys.split(","):
        p = _PAIR.fullmatch(pair)
        if not p:
            raise _bad(rule, f"has {pair.strip()!r}, not key=non-negative integer")
        key, value = p.group(1), int(p.group(2))
        if key not in KEYS:
            raise _bad(rule, f"has the key {key!r}, not one of {', '.join(KEYS)}")
        if key in match:
            raise _bad(rule, f"gives {key} twice")
        match[key] = value
    return Fault(tuple(match.items()), int(m.group(1)), rule.strip())


def parse(spec: str) -> list[Fault]:
    """The rules of a `;`-separated spec, in order ([] for an empty or blank spec); ValueError if one is malformed."""
    if not spec.strip():
        return []
    return [parse_rule(rule) for rule in spec.split(";")]


def from_env(environ: Mapping[str, str] | None = None) -> list[Fault]:
    """The rules of `DMFT_PROBE_INJECT_NONFINITE` in `environ` (default os.environ); [] when it is unset or empty."""
    spec = (os.environ if environ is None else environ).get(ENV)
    return parse(spec) if spec else []


def fault_for(faults: list[Fault], sizes: Mapping[str, int]) -> Fault | None:
    """The rule that fires for a member with these sizes ({N, H, L, seed}): the matching one with the earliest
    step (the first written on a tie), or None."""
    hits = [f for f in faults if f.applies(sizes)]
    return min(hits, key=lambda f: f.step) if hits else None
