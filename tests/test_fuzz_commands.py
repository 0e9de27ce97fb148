"""Bad input to every command besides `run` and `describe` (issue 18, Build 3): a derandomized hypothesis fuzz of
`sweep`, `coord`, `variants`, `reproduce`, `bench`, `check FOLDER` and `plot` (510 cases), in this process through
`helpers.invoke`, plus a sample of 21 of the cases run again through the real entry point `python cli.py` in a
subprocess. `pytest -s` prints the cases per command and exit status.

A case is a valid tiny command (`Spec.base`) changed by a few generated choices. Each choice is labelled: "ok"
(a valid value that keeps the command tiny), "any" (the outcome is not predicted: a generated config file, an
existing store of another grid, a read-only folder that root may write into), "slow" (valid, but would train for
long: a fresh `reproduce` folder, a variants cell not yet made, two worker processes) or "bad" (certainly refused).
A case with a slow choice always gets a bad one too, so nothing long ever runs. For every case:

- exit status 0, 1 or 2; 1 only with a reason (an `error: ` line or a divergence message); a case with a bad
  choice exits 2;
- no traceback on stdout or stderr; no raw Python warning (what `warnings.showwarning` would print under Python's
  default filters) in process, no `Warning: ` line in a subprocess's stderr;
- exit 2: exactly one non-empty stderr line, starting "error: ", naming an option (`--xyz`), a config key
  (`[section] key`), DATASET or a path of the case; naming the option, key or file of the one bad choice when
  there is one; stdout empty; no file or folder of the case's folder created, removed or changed;
- no `.tmp-*` file left in the case's folder; nothing changed in the shared datasets; no pickle payload ran;
- no hang: a watchdog (SIGALRM raising `Hang`, a BaseException that no `except Exception` swallows) per case.

The shared datasets (a tiny init-only sweep and its store, a run, odd copies of them, a learning-rate grid, a
finished variants cell) are made once per module by the CLI; a case copies what it may write into. Reproduce cases
are all refused (a real preset trains for minutes): each asserts that no training happened (exit 2, nothing
written). Ray is never started: every Ray address is one where nothing answers (RAY_ADDRESS is set to one too, so
`--ray-address auto` and a Ray executor without an address are refused the same way on every machine)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, invoke, watchdog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_input import configs as generated_configs
from test_bad_input import write_generated_config
from test_bad_input_commands import edited
from test_data import bad_data, write_cifar10
from test_security import evil_folder

from probes.experiment.dataset import load, save

CASE_SECONDS = 120  # the watchdog of one case (a tiny valid case takes seconds)
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
NOWHERE = "127.0.0.1:1"  # a TCP port where nothing listens (connection refused at once)
TINY = ("--task", "vision", "--N", "2", "--H", "2", "--L", "1", "--batch-size", "2")


# ------------------------------------------------------------------------------------------------ choices


OMIT, PRESENT = "<omit>", "<present>"  # an option left out; a flag given


@dataclass(frozen=True)
class Choice:
    """One value of one option. value: the text, OMIT, PRESENT (a flag) or a placeholder tuple that `materialise`
    turns into a path of the case's folder. label: "ok", "any", "slow" or "bad" (module docstring). names: what a
    refusal for this choice names, one of them at least (default: the option itself)."""

    value: object
    label: str = "ok"
    names: tuple[str, ...] = ()


def ok(*values) -> list[Choice]:
    return [Choice(v, "ok") for v in values]


def any_(*values) -> list[Choice]:
    return [Choice(v, "any") for v in values]


def slow(*values) -> list[Choice]:
    return [Choice(v, "slow") for v in values]


def bad(*values, names: tuple[str, ...] = ()) -> list[Choice]:
    return [Choice(v, "bad", names) for v in values]


def path(kind: str, suffix: str = "") -> tuple:
    return ("path", kind, suffix)


INTS_BAD = ("0", "-1", "1000000000", "x", "1.5", "")
MANY = ",".join(str(v) for v in range(1, 1002))  # 1001 sizes: over the cap of 1000

# The model, parametrization and run options of sweep and coord (cli.MODEL, PARAM, OPTIM, RUN).
MODEL_OPTIONS: dict[str, list[Choice]] = {
    "--N": ok("2", "3", "4") + bad(*INTS_BAD),
    "--H": ok("1", "2", "3") + bad(*INTS_BAD),
    "--L": ok("1", "2") + bad(*INTS_BAD),
    "--task": ok("vision") + any_("digits", "lm") + bad("speech", ""),
    "--param": ok("mup", "sp", "mup-sqrt", "depth-sqrt") + bad("mu-p", ""),
    "--optimizer": ok("sgd", "adam", "adamw", "sgd-momentum") + bad("lion", ""),
    "--eta0": ok("0.05", "0.5") + any_("1e6") + bad("0", "-1", "nan", "inf", "1e400", "x", ""),
    "--gamma0": ok("1", "0.5") + bad("0", "-1", "nan", "1e200", "1e-200"),
    "--alpha-A": ok("1", "0.5") + bad("0", "2.5", "nan"),
    "--beta0": ok("1", "2") + bad("0", "-2", "1e300"),
    "--centre": ok("copy", "none", "zero_readout") + bad("middle", ""),
    "--variant": ok("paper") + any_("openelm", "ngpt", "laurel", "tokenformer") + bad("junk", ""),
    "--batch-size": ok("2", "3") + bad("0", "1000000000", "x"),
    "--device": ok("cpu") + any_("auto", "cuda") + bad("gpu", "", "cuda:99", "mps"),
    "--precision": ok("fp32") + any_("bf16", "tf32") + bad("fp64", ""),
    "--seq-len": any_("8", "0") + bad("x"),
    "--seed": bad("1", names=("--seed",)),  # run's option, not sweep's
    "--bogus": bad("1", names=("--bogus",)),
    "--data": ok(OMIT)
    + any_(("data", "cifar-ok"))
    + bad(
        *[("data", k) for k in ("garbage", "truncated-npz", "small-heldout", "odd-bin", "short-bin", "payload")],
        names=("--data",),
    ),
    "--config": ok(OMIT)
    + [Choice(("config", "generated"), "any", ("--config", "[", "gen."))]
    + bad(
        *[("cfgtext", t) for t in ("garbage", "wrong-type", "unknown-key", "unknown-section", "list")],
        names=("--config", "[", "cfg."),
    ),
}
RAY_ADDRESSES = (NOWHERE, f"ray://{NOWHERE}", "localhost", "auto", "", "http://x:1", "127.0.0.1:99999", "junk")
EXECUTOR_OPTIONS: dict[str, list[Choice]] = {
    "--ensemble": ok(OMIT, "auto", "off") + bad("junk", "", "AUTO"),
    "--workers": ok("1", OMIT) + slow("2", "1000000") + bad("0", "-1", "x"),
    "--executor": ok("local")
    + bad("ray", names=("--executor", "--workers", "--ray-address", "RAY_ADDRESS"))
    + bad("junk", ""),
    "--ray-address": ok(OMIT) + bad(*RAY_ADDRESSES, names=("--ray-address",)),
    "--ray-cpus": ok(OMIT) + bad("2", "0"),
}
STORE_OUT = ("--out",)
OUT_NC: list[Choice] = (
    ok(path("fresh", ".nc"), path("nested", ".nc"))
    + any_(path("fresh", ".zarr"), path("ro", ".nc"), path("store", ".nc"), path("file", ".nc"))
    + bad(
        *[
            path(k, s)
            for k, s in (
                ("fifo", ".nc"),
                ("folder", ""),
                ("folder", ".nc"),
                ("empty", ""),
                ("blank", ""),
                ("long", ".nc"),
                ("parts-file", ".nc"),
                ("under-file", ".nc"),
                ("dot", ""),
                ("fresh", ".txt"),
            )
        ],
        names=STORE_OUT,
    )
)
OUT_FILE = ok(OMIT, path("fresh", ".csv"), path("file", ".csv")) + bad(
    *[
        path(k, s)
        for k, s in (
            ("folder", ""),
            ("fifo", ".csv"),
            ("missing-folder", ".csv"),
            ("empty", ""),
            ("under-file", ".csv"),
            ("devfull", ""),
        )
    ]
)
OUT_FOLDER_PLOT = (
    ok(path("fresh", ""), path("nested", ""), path("full-folder", ""))
    + any_(path("ro", ""))
    + bad(
        *[
            path(k, s)
            for k, s in (("file", ""), ("fifo", ""), ("empty", ""), ("blank", ""), ("long", ""), ("under-file", ""))
        ],
        names=("--out",),
    )
)


@dataclass(frozen=True)
class Spec:
    """A command's fuzz: base, the valid tiny case (option -> Choice, in command-line order, "" for the
    positional argument); options: the choices of each option; valid_percent: the share of cases drawn without a
    bad choice; examples: the number of cases; every: every how many cases one is run again in a subprocess."""

    command: str
    base: dict[str, Choice]
    options: dict[str, list[Choice]]
    valid_percent: int
    examples: int
    every: int


def base_of(*pairs) -> dict[str, Choice]:
    return {flag: Choice(value) for flag, value in pairs}


SWEEP = Spec(
    "sweep",
    base_of(
        *zip(TINY[::2], TINY[1::2]),
        ("--axis", "N"),
        ("--values", "2,4,8"),
        ("--seeds", "2"),
        ("--steps", "1"),
        ("--init-only", PRESENT),
        ("--workers", "1"),
        ("--out", path("fresh", ".nc")),
    ),
    {
        **MODEL_OPTIONS,
        **EXECUTOR_OPTIONS,
        "--axis": ok("N", "H", "L") + bad("Q", "", "n"),
        "--values": ok("2,4,8", "1,2,3", " 2, 4 ,8", "2,,4,8", "8,4,2")
        + bad(
            "2,2,4", "-2,4,8", "2,4,1000000000", "", "a,b,c", "2,4", "0,2,4", "2;4;8", "1e9", MANY, names=("--values",)
        ),
        "--seeds": ok("1", "2") + slow("1000") + bad("0", "-1", "1000000000", "1001", "x", ""),
        "--steps": ok("0", "1", "2") + bad("-1", "1000000000", "x"),
        "--probe-every": ok(OMIT, "1", "2") + bad("0", "-1", "1000000000", "x"),
        "--init-only": ok(PRESENT, OMIT),
        "--out": OUT_NC,
        "--overwrite": ok(OMIT) + any_(PRESENT),
        "--rebuild-manifest": ok(OMIT) + any_(PRESENT),
    },
    valid_percent=10,
    examples=130,
    every=43,
)

COORD = Spec(
    "coord",
    base_of(
        *zip(TINY[::2], TINY[1::2]),
        ("--axis", "N"),
        ("--values", "2,4,8"),
        ("--seeds", "1"),
        ("--steps", "0,1"),
        ("--probe-samples", "2"),
        ("--workers", "1"),
        ("--out", path("fresh", ".nc")),
    ),
    {
        **MODEL_OPTIONS,
        **EXECUTOR_OPTIONS,
        "--axis": ok("N", "H", "L") + bad("Q", ""),
        "--values": ok("2,4,8", "1,2,3")
        + bad("2,2,4", "-2,4,8", "2,4,1000000000", "", "a,b,c", "2,4", names=("--values",)),
        "--seeds": ok("1", "2") + bad("0", "-1", "1000000000", "x"),
        "--steps": ok("0,1", "0,1,2", "1", "0", "2,0,1")
        + bad("", "-1,1", "0,1000000000", "x", "0;1", "1.5", names=("--steps",)),
        "--probe-samples": ok("2", "3") + bad("0", "-1", "1000000", "x"),
        "--out": OUT_NC,
        "--csv": [replace(c, names=c.names or ("--csv",)) for c in OUT_FILE],
        "--overwrite": ok(OMIT) + any_(PRESENT),
        "--rebuild-manifest": ok(OMIT) + any_(PRESENT),
    },
    valid_percent=8,
    examples=100,
    every=33,
)

VARIANTS = Spec(
    "variants",
    base_of(
        ("--quick", PRESENT),
        ("--variants", "paper"),
        ("--axes", "N"),
        ("--optimizers", "adam"),
        ("--seeds", "1"),
        ("--workers", "1"),
        ("--out", path("cell", "")),
    ),
    {
        "--quick": ok(PRESENT) + slow(OMIT),
        "--variants": ok("paper", " paper ", "paper,paper")
        + slow("paper,ngpt", "laurel")
        + bad("", ",", "junk", "paper,junk", names=("--variants",)),
        "--axes": ok("N", "N,N") + slow("H", "N,H") + bad("Q", "", "n", names=("--axes",)),
        "--optimizers": ok("adam") + slow("sgd") + bad("lion", "", names=("--optimizers",)),
        "--seeds": ok("1") + slow("2", OMIT) + bad("0", "-1", "1000000000", "1001", "x"),
        "--markdown": ok(OMIT, path("fresh", ".md"), path("file", ".md"))
        + bad(
            *[
                path(k, s)
                for k, s in (("folder", ""), ("fifo", ".md"), ("missing-folder", ".md"), ("empty", ""), ("devfull", ""))
            ],
            names=("--markdown",),
        ),
        "--out": ok(path("cell", ""))
        + slow(OMIT, path("fresh", ""), path("nested", ""))
        + bad(
            *[
                path(k, s)
                for k, s in (
                    ("empty", ""),
                    ("blank", ""),
                    ("file", ""),
                    ("fifo", ""),
                    ("long", ""),
                    ("under-file", ""),
                    ("cell-junk-manifest", ""),
                )
            ],
            names=("--out",),
        ),
        "--ensemble": ok(OMIT, "auto", "off") + bad("junk", ""),
        "--workers": ok("1", "2", OMIT) + bad("0", "-1", "x"),
        "--executor": ok("local") + bad("ray", names=("--executor", "--workers", "RAY_ADDRESS")) + bad("junk"),
        "--ray-address": ok(OMIT) + bad(NOWHERE, "auto", "localhost", names=("--ray-address",)),
        "--ray-cpus": ok(OMIT) + bad("2"),
    },
    valid_percent=20,
    examples=50,
    every=25,
)

# Every reproduce case is refused: a preset trains for minutes, so a case without a bad choice would be slow.
REPRODUCE = Spec(
    "reproduce",
    base_of(("--preset", "smoke"), ("--out", path("fresh", ""))),
    {
        "--preset": ok("smoke", "cpu") + bad("junk", "", "CPU", "smoke ", names=("--preset",)),
        "--out": slow(OMIT, path("fresh", ""), path("nested", ""), path("ro", ""))
        + bad(
            *[
                path(k, "")
                for k in (
                    "empty",
                    "blank",
                    "file",
                    "fifo",
                    "long",
                    "under-file",
                    "r-junk-nc",
                    "r-junk-manifest",
                    "r-other-grid",
                    "r-lr-as-sweep",
                    "r-verdicts-dir",
                )
            ],
            names=("--out",),
        ),
        "--ensemble": ok(OMIT, "auto", "off") + bad("junk", "", names=("--ensemble",)),
        "--steps": bad("1", names=("--steps",)),
    },
    valid_percent=0,
    examples=50,
    every=25,
)

BENCH = Spec(
    "bench",
    base_of(
        ("--quick", PRESENT),
        ("--sizes", "vision-d32"),
        ("--steps", "1"),
        ("--repeats", "1"),
        ("--ensemble", "1"),
        ("--threads", "1"),
        ("--device", "cpu"),
    ),
    {
        "--quick": ok(PRESENT) + slow(OMIT),
        "--sizes": ok("default", "vision-d32,default", " vision-d32 ", "vision-d32,vision-d32", "d256")
        + bad("", ",", "junk", "default,junk", " ", names=("--sizes",)),
        "--steps": ok("1", "2") + bad("0", "-1", "10001", "1000000000", "x"),
        "--repeats": ok("1", "2") + bad("0", "101", "1000000000", "x"),
        "--ensemble": ok("1", "2") + bad("0", "65", "1000000000", "x"),
        "--threads": ok(OMIT, "1") + bad("0", str(CPUS + 1), "100000", "x"),
        "--device": ok("cpu") + any_("auto", "cuda") + bad("gpu", "", "cuda:x", "mps"),
    },
    valid_percent=25,
    examples=60,
    every=20,
)

DATASET_NAMES = ("DATASET", "junk.nc", "missing.nc", "ds-fifo.nc", "two.nc", "noparam.nc", "/ds")
CHECK = Spec(
    "check",
    base_of(("", ("dataset", "sweep")), ("--mc-heads", "16")),
    {
        "": ok(*[("dataset", k) for k in ("sweep", "lr", "zarr", "folder")])
        + any_(("dataset", "run"))
        + bad(
            *[("dataset", k) for k in ("junk", "missing", "fifo", "empty-path", "empty-folder", "two", "noparam")],
            names=DATASET_NAMES,
        ),
        "--mc-heads": ok("16", "64") + any_(OMIT) + bad("0", "-5", "1000000000000", "x", "10000001"),
        "--csv": [replace(c, names=c.names or ("--csv",)) for c in OUT_FILE],
        "--nc": [
            replace(
                c,
                value=path(c.value[1], ".nc") if isinstance(c.value, tuple) and c.value[2] else c.value,
                names=c.names or ("--nc",),
            )
            for c in OUT_FILE
        ],
        "--markdown": [
            replace(
                c,
                value=path(c.value[1], ".md") if isinstance(c.value, tuple) and c.value[2] else c.value,
                names=c.names or ("--markdown",),
            )
            for c in OUT_FILE
        ],
    },
    valid_percent=40,
    examples=60,
    every=20,
)

PLOT = Spec(
    "plot",
    base_of(("", ("dataset", "run")), ("--out", path("fresh", ""))),
    {
        "": ok(*[("dataset", k) for k in ("run", "sweep", "huge", "zero")])
        + any_(("dataset", "zarr"), ("dataset", "lr"), ("dataset", "two"))
        + bad(
            *[("dataset", k) for k in ("junk", "missing", "fifo", "empty-path", "empty-folder", "noparam")],
            names=DATASET_NAMES,
        ),
        "--out": OUT_FOLDER_PLOT,
        "--format": ok(OMIT, "png", "pdf", "PNG") + bad("svg", "", "jpg"),
    },
    valid_percent=12,
    examples=60,
    every=20,
)

SPECS = {s.command: s for s in (SWEEP, COORD, VARIANTS, REPRODUCE, BENCH, CHECK, PLOT)}
FOLDER_GOOD = ("sweep.nc", "lr.nc", "s.zarr", "notes.txt", ".hidden.nc", "sub", "s.nc.parts")
FOLDER_BAD = ("junk.nc", "empty.nc", "fifo.nc", "run.nc", "two.nc", "noparam.nc", "nested.nc")


@dataclass
class Case:
    """A generated command line: args with placeholders (`materialise`), the label of each option's choice and
    the choice itself, and for `check` the files of a generated DATASET folder."""

    command: str
    options: dict[str, Choice]
    folder: tuple[str, ...] = ()
    config: object = None
    labels: dict[str, str] = field(default_factory=dict)

    def bad_options(self) -> list[str]:
        return [flag for flag, label in self.labels.items() if label == "bad"]

    def slow(self) -> bool:
        return "slow" in self.labels.values()


def relabel(case: Case) -> Case:
    """The labels of the final choices, with what depends on the other choices: an existing --out is replaced
    with --overwrite; check --markdown needs a folder DATASET; a sweep without --init-only and without --workers
    starts a pool; a DATASET folder holding no dataset, or a bad one, is refused."""
    o = case.options
    labels = {flag: c.label for flag, c in o.items()}
    value = {flag: c.value for flag, c in o.items()}
    if case.command in ("sweep", "coord"):
        if value.get("--out") == path("file", ".nc") and value.get("--overwrite") == OMIT:
            labels["--out"] = "bad"
        if value.get("--workers") == OMIT and not (case.command == "sweep" and value.get("--init-only") == PRESENT):
            labels["--workers"] = "slow"
    if case.command == "check":
        if value[""] == ("dataset", "folder"):
            datasets = [f for f in case.folder if f.endswith((".nc", ".zarr")) and not f.startswith(".")]
            if any(f in FOLDER_BAD for f in case.folder) or not datasets:
                labels[""] = "bad"
        md = value.get("--markdown", OMIT)
        if (
            md != OMIT
            and labels.get("--markdown") != "bad"
            and value[""] not in (("dataset", "folder"), ("dataset", "empty-folder"))
        ):
            labels["--markdown"] = "bad"
    case.labels = labels
    return case


def names_of(case: Case, flag: str) -> tuple[str, ...]:
    """What a refusal caused by the choice of `flag` names (one of them)."""
    c = case.options[flag]
    names = c.names or (flag,)
    if case.command == "check" and flag == "":
        bad_files = [f for f in case.folder if f in FOLDER_BAD]
        return names + tuple(bad_files)
    if case.command == "check" and flag == "--markdown":
        return ("--markdown",)
    return names


@st.composite
def cases(draw, spec: Spec) -> Case:
    """A case of `spec`: the base, a few ok (or any, or slow) choices, and when the case is drawn invalid one or
    more bad choices; a case with a slow choice gets a bad one too."""
    options = dict(spec.base)
    valid = draw(st.integers(0, 99)) < spec.valid_percent
    flags = sorted(spec.options)
    for _ in range(draw(st.integers(0, 3))):
        flag = draw(st.sampled_from(flags))
        allowed = ("ok", "any") if valid else ("ok", "any", "slow")
        pool = [c for c in spec.options[flag] if c.label in allowed]
        if pool:
            options[flag] = draw(st.sampled_from(pool))
    case = Case(spec.command, options)
    if spec.command == "check":
        case.folder = tuple(draw(st.lists(st.sampled_from(FOLDER_GOOD), min_size=1, max_size=4, unique=True)))
    if spec.command in ("sweep", "coord"):
        case.config = draw(generated_configs)
    relabel(case)
    n_bad = 0 if valid else draw(st.sampled_from([1, 1, 1, 1, 2, 3]))
    while (n_bad or case.slow()) and len(case.bad_options()) < max(n_bad, 1):
        flag = draw(st.sampled_from([f for f in flags if any(c.label == "bad" for c in spec.options[f])]))
        if flag == "" and spec.command == "check" and draw(st.booleans()):
            case.folder += (draw(st.sampled_from(FOLDER_BAD)),)  # a bad file in a DATASET folder
            options[""] = Choice(("dataset", "folder"))
        else:
            options[flag] = draw(st.sampled_from([c for c in spec.options[flag] if c.label == "bad"]))
        relabel(case)
    return case


# ------------------------------------------------------------------------------------------------ materialise


CONFIG_TEXTS = {
    "garbage": ("\x00\x01 not toml [[[", ".toml"),
    "wrong-type": ('[model]\nN = "x"\n', ".toml"),
    "unknown-key": ("[model]\nbogus = 1\n", ".toml"),
    "unknown-section": ("[nosuch]\nN = 1\n", ".toml"),
    "list": ("[1, 2]", ".json"),
}


def _tmp_path(tmp: Path, flag: str, kind: str, suffix: str, shared: dict) -> str:
    """The path of kind `kind` for option `flag`, made in the case's folder `tmp` (see the choices above)."""
    stem = flag.strip("-") or "arg"
    if kind == "fresh":
        return str(tmp / f"{stem}{suffix}")
    if kind == "nested":
        return str(tmp / "new" / "deeper" / f"{stem}{suffix}")
    if kind == "file":
        p = tmp / f"{stem}-exists{suffix}"
        p.write_text("a file\n")
        return str(p)
    if kind == "folder":
        p = tmp / f"{stem}-dir{suffix}"
        p.mkdir()
        return str(p)
    if kind == "full-folder":
        p = tmp / f"{stem}-full"
        p.mkdir()
        (p / "mine.txt").write_text("keep me\n")
        return str(p)
    if kind == "fifo":
        p = tmp / f"{stem}-fifo{suffix}"
        os.mkfifo(p)
        return str(p)
    if kind == "missing-folder":
        return str(tmp / "missing" / f"{stem}{suffix}")
    if kind == "empty":
        return ""
    if kind == "blank":
        return "  "
    if kind == "dot":
        return "."
    if kind == "devfull":
        return "/dev/full"
    if kind == "long":
        return "a" * 300 + suffix
    if kind == "parts-file":
        (tmp / f"{stem}-p{suffix}.parts").write_text("a file where the store goes\n")
        return str(tmp / f"{stem}-p{suffix}")
    if kind == "under-file":
        (tmp / "afile").write_text("a file, not a folder\n")
        return str(tmp / "afile" / f"{stem}{suffix}")
    if kind == "ro":
        (tmp / "ro").mkdir(exist_ok=True)
        (tmp / "ro").chmod(0o555)
        return str(tmp / "ro" / f"{stem}{suffix}")
    if kind == "store":  # the shared init-only sweep and its store, copied
        shutil.copy(shared["sweep"], tmp / "s.nc")
        shutil.copytree(shared["store"], tmp / "s.nc.parts")
        return str(tmp / "s.nc")
    if kind.startswith("cell"):  # the shared finished variants cell, copied
        shutil.copytree(shared["cell"], tmp / "vt")
        if kind == "cell-junk-manifest":
            (next((tmp / "vt").glob("*.parts")) / "manifest.json").write_text("{not json")
        return str(tmp / "vt")
    if kind.startswith("r-"):  # a reproduce folder holding something it cannot use
        r = tmp / "r"
        r.mkdir()
        if kind == "r-junk-nc":
            (r / "zz-mine.nc").write_bytes(b"junk" * 100)
        elif kind == "r-junk-manifest":
            (r / "L-mup.nc.parts").mkdir()
            (r / "L-mup.nc.parts" / "manifest.json").write_text("[1, 2")
        elif kind == "r-other-grid":
            shutil.copy(shared["sweep"], r / "N-mup-sqrt.nc")
        elif kind == "r-lr-as-sweep":
            shutil.copy(shared["sweep"], r / "lr-N-sp.nc")
        else:
            (r / "verdicts.md").mkdir()
        return str(r)
    raise AssertionError(kind)


def _dataset(tmp: Path, kind: str, folder: tuple[str, ...], shared: dict) -> str:
    """DATASET of check and plot: a shared dataset, or one made in the case's folder."""
    if kind in ("sweep", "run", "lr", "zarr", "huge", "zero", "two", "noparam"):
        return str(shared[kind])
    if kind == "junk":
        (tmp / "junk.nc").write_bytes(b"not a dataset" * 50)
        return str(tmp / "junk.nc")
    if kind == "missing":
        return str(tmp / "missing.nc")
    if kind == "fifo":
        os.mkfifo(tmp / "ds-fifo.nc")
        return str(tmp / "ds-fifo.nc")
    if kind == "empty-path":
        return ""
    ds = tmp / "ds"
    ds.mkdir()
    if kind == "empty-folder":
        return str(ds)
    for name in folder:
        if name == "fifo.nc":
            os.mkfifo(ds / name)
        elif name in ("junk.nc", "notes.txt"):
            (ds / name).write_bytes(b"junk" * 100)
        elif name == "empty.nc":
            (ds / name).write_bytes(b"")
        elif name == ".hidden.nc":
            (ds / name).write_bytes(b"hidden junk, not read")
        elif name in ("sub", "nested.nc"):
            (ds / name).mkdir()
            shutil.copy(shared["sweep"], ds / name / "inner.nc")
        elif name == "s.nc.parts":
            shutil.copytree(shared["store"], ds / name)
        elif name == "s.zarr":
            shutil.copytree(shared["zarr"], ds / name)
        else:
            shutil.copy(shared[name.split(".")[0]], ds / name)
    return str(ds)


def materialise(case: Case, tmp: Path, shared: dict) -> list[str]:
    """The command line of `case` with every placeholder made real in the case's folder `tmp`."""
    args = [case.command]
    for flag, choice in case.options.items():
        v = choice.value
        if v == OMIT:
            continue
        if v == PRESENT:
            args.append(flag)
            continue
        if isinstance(v, tuple):
            kind = v[0]
            if kind == "path":
                v = _tmp_path(tmp, flag, v[1], v[2], shared)
            elif kind == "dataset":
                v = _dataset(tmp, v[1], case.folder, shared)
            elif kind == "config":
                v = str(write_generated_config(tmp, case.config))
            elif kind == "cfgtext":
                text, suffix = CONFIG_TEXTS[v[1]]
                (tmp / f"cfg{suffix}").write_text(text)
                v = str(tmp / f"cfg{suffix}")
            elif kind == "data":
                if v[1] == "payload":
                    v = str(evil_folder(tmp / "data", tmp / "MARKER"))
                elif v[1] == "cifar-ok":
                    write_cifar10(tmp / "cifar-ok", (20, 20), 80)
                    v = str(tmp / "cifar-ok")
                else:
                    (tmp / "data").mkdir()
                    v = str(bad_data(tmp / "data", v[1])[1])
            else:
                raise AssertionError(kind)
        args += [v] if flag == "" else [flag, v]
    return args


def shown(case: Case) -> str:
    """The case as a short text for failure messages."""
    parts = [case.command] + [
        f"{flag or 'DATASET'}={c.value}[{case.labels.get(flag)}]" for flag, c in case.options.items() if c.value != OMIT
    ]
    return " ".join(parts) + (f" folder={case.folder}" if case.folder else "")


# ------------------------------------------------------------------------------------------------ what holds


def files_in(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder` (relative path -> (size, mtime) of a file, () of anything else)."""
    out = {}
    for p in folder.rglob("*"):
        st_ = p.lstat()
        out[str(p.relative_to(folder))] = (st_.st_size, st_.st_mtime_ns) if p.is_file() and not p.is_symlink() else ()
    return out


@contextlib.contextmanager
def default_warning_filters():
    """Record the warnings that would reach stderr raw in `dmft-probe` (Python's default filters: deprecations
    outside __main__, ImportWarning and ResourceWarning hidden, everything else shown once per place). Yields the
    list of recorded warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        yield caught


NAMED = r"--[A-Za-z][\w-]*|\[(model|param|optim|run|probes|nosuch)\]|DATASET"


def assert_outcome(
    case: Case,
    tmp: Path,
    before: dict,
    shared: dict,
    shared_before: dict,
    code: int,
    stdout: str,
    stderr: str,
    raw_warnings: list[str],
) -> None:
    """The properties of the module docstring for one finished case."""
    where = (shown(case), code, stdout[-1500:], stderr[-1500:])
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code in (0, 1, 2), where
    assert "Traceback" not in stdout and "Traceback" not in stderr, where
    assert not raw_warnings and "Warning: " not in stderr, (raw_warnings, where)
    if code == 1:
        assert any(ln.startswith("error: ") for ln in lines) or "diverged" in stderr, where
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), where
        assert stdout == "", where
        assert re.search(NAMED, lines[0]) or str(tmp) in lines[0] or str(shared["root"]) in lines[0], where
        bad_options = case.bad_options()
        if len(bad_options) == 1:  # names that option, or one whose outcome is not predicted
            names = [
                n
                for flag in bad_options + [f for f, label in case.labels.items() if label == "any"]
                for n in names_of(case, flag)
            ]
            assert any(n in lines[0] for n in names), (names, where)
        after = files_in(tmp)
        assert after == before, (
            {k: after.get(k) for k in set(after) ^ set(before)}
            or {k: (before[k], after[k]) for k in after if before[k] != after[k]},
            where,
        )
    if case.bad_options():
        assert code == 2, ("refused?", where)
    assert not [p for p in tmp.rglob(".tmp-*")], where
    assert not (tmp / "MARKER").exists(), ("the payload ran", where)
    assert files_in(shared["root"]) == shared_before, ("a shared dataset changed", where)


@contextlib.contextmanager
def case_folder():
    """A fresh folder for one case, removed afterwards (read-only folders made writable first)."""
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(d, ignore_errors=True)


def run_in_process(case: Case, shared: dict, shared_before: dict) -> int:
    """Run `case` through `helpers.invoke` in a fresh folder and assert what holds; returns the exit status."""
    with case_folder() as tmp:
        args = materialise(case, tmp, shared)
        before = files_in(tmp)
        with watchdog(CASE_SECONDS), default_warning_filters() as caught:
            code, stdout, stderr = invoke(args, cwd=tmp)
        raw = [f"{w.category.__name__}: {w.message}" for w in caught]
        assert_outcome(case, tmp, before, shared, shared_before, code, stdout, stderr, raw)
    return code


def run_in_subprocess(case: Case, shared: dict, shared_before: dict) -> int:
    """Run `case` as `python cli.py ...` in a fresh folder and assert what holds; returns the exit status."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    with case_folder() as tmp:
        args = materialise(case, tmp, shared)
        before = files_in(tmp)
        proc = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), *args[0:]],
            cwd=tmp,
            env=env,
            text=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=CASE_SECONDS,
            check=False,
        )
        assert_outcome(case, tmp, before, shared, shared_before, proc.returncode, proc.stdout, proc.stderr, [])
    return proc.returncode


# ------------------------------------------------------------------------------------------------ shared datasets


@pytest.fixture(scope="module", autouse=True)
def nowhere_ray(tmp_path_factory):
    """RAY_ADDRESS points where nothing answers (so `auto` and a Ray executor without an address are refused on
    any machine), and Ray's temporary folder is this module's own (no address file of a `ray start` is found)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_ADDRESS", NOWHERE)
    mp.setenv("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """The shared datasets, each made by the CLI (or saved through probes.experiment.dataset.save): an init-only sweep along N
    (2, 4, 8 x 2 seeds) and its store, a run, the sweep as .zarr, a 2-size sweep, a sweep without [param], an
    all-zero sweep and a run with a huge alpha_A."""
    root = tmp_path_factory.mktemp("shared")
    code, _, err = invoke(
        [
            "sweep",
            *TINY,
            "--axis",
            "N",
            "--values",
            "2,4,8",
            "--seeds",
            "2",
            "--init-only",
            "--workers",
            "1",
            "--out",
            root / "sweep.nc",
        ],
        cwd=root,
    )
    assert code == 0, err
    code, _, err = invoke(
        ["run", *TINY, "--steps", "1", "--probe-samples", "2", "--no-progress", "--out", root / "run.nc"], cwd=root
    )
    assert code == 0, err
    sweep = load(root / "sweep.nc").load()
    paths = {
        "root": root,
        "sweep": root / "sweep.nc",
        "store": root / "sweep.nc.parts",
        "run": root / "run.nc",
        "zarr": save(sweep, root / "s.zarr"),
        "two": save(sweep.isel(N=[0, 1]), root / "two.nc"),
        "noparam": edited(root / "sweep.nc", root / "noparam.nc", config=lambda c: c.pop("param")),
        "zero": edited(root / "sweep.nc", root / "zero.nc", data=np.zeros_like),
        "huge": edited(
            root / "run.nc",
            root / "huge.nc",
            config=lambda c: c["param"].update(alpha_A=1e300),
            attrs=lambda a: a.update(alpha_A=1e300),
        ),
    }
    return paths


@pytest.fixture(scope="module")
def with_lr_grid(shared) -> dict:
    """`shared` and a complete tiny learning-rate grid (N = 2, 4, 8 x 3 eta0 x 2 seeds, 2 steps)."""
    from probes.experiment.config import make_run_config
    from probes.grid.lr_grid import run_lr_grid

    cfg = make_run_config(
        model={"task": "vision", "N": 2, "H": 2, "L": 1}, run={"steps": 2, "batch_size": 2}, probes={"enabled": False}
    )
    path = shared["root"] / "lr.nc"
    if not path.exists():
        run_lr_grid(cfg, "N", [2, 4, 8], [0.01, 0.1, 1.0], 2, out=path, ensemble="auto", progress=False)
    return {**shared, "lr": path}


@pytest.fixture(scope="module")
def with_cell(shared) -> dict:
    """`shared` and a finished variants folder of one quick cell (paper, adam, along N, 1 seed)."""
    out = shared["root"] / "vt"
    if not out.exists():
        code, _, err = invoke(
            [
                "variants",
                "--quick",
                "--variants",
                "paper",
                "--axes",
                "N",
                "--optimizers",
                "adam",
                "--seeds",
                "1",
                "--workers",
                "1",
                "--out",
                out,
            ],
            cwd=shared["root"],
        )
        assert code == 0, err
    return {**shared, "cell": out}


# ------------------------------------------------------------------------------------------------ the fuzz


def fuzz(spec: Spec, shared: dict) -> None:
    """Run spec.examples generated cases in this process, then every spec.every-th of them again in a subprocess
    (the same exit status); print the counts per exit status."""
    counts: Counter = Counter()
    sample: list[tuple[Case, int]] = []
    slowest: list[tuple[float, int, str]] = []
    shared_before = files_in(shared["root"])
    t0 = time.perf_counter()

    @settings(
        max_examples=spec.examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases(spec))
    def one(case: Case) -> None:
        start = time.process_time()
        code = run_in_process(case, shared, shared_before)
        slowest.append((time.process_time() - start, code, shown(case)))
        if sum(counts.values()) % spec.every == 0:
            sample.append((case, code))
        counts[code] += 1

    one()
    t1 = time.perf_counter()
    for case, code in sample:
        got = run_in_subprocess(case, shared, shared_before)
        assert got == code, (shown(case), "in process", code, "in a subprocess", got)
    print(
        f"\nfuzz {spec.command}: {sum(counts.values())} cases in {t1 - t0:.1f} s (exit 0: {counts[0]}, exit 1: "
        f"{counts[1]}, exit 2: {counts[2]}); {len(sample)} again in a subprocess in {time.perf_counter() - t1:.1f} s"
    )
    if os.environ.get("DMFT_PROBE_FUZZ_SLOWEST"):
        for seconds, code, text in sorted(slowest, reverse=True)[: int(os.environ["DMFT_PROBE_FUZZ_SLOWEST"])]:
            print(f"  {seconds:.1f} s CPU  exit {code}  {text}")
    assert sum(counts.values()) >= spec.examples


def test_fuzz_sweep(shared):
    fuzz(SWEEP, shared)


def test_fuzz_coord(shared):
    fuzz(COORD, shared)


def test_fuzz_variants(with_cell):
    fuzz(VARIANTS, with_cell)


def test_fuzz_reproduce(shared):
    fuzz(REPRODUCE, shared)


def test_fuzz_bench(shared):
    fuzz(BENCH, shared)


def test_fuzz_check(with_lr_grid):
    fuzz(CHECK, with_lr_grid)


def test_fuzz_plot(with_lr_grid):
    fuzz(PLOT, with_lr_grid)


def test_the_fuzz_covers_500_cases_and_every_command():
    assert sum(s.examples for s in SPECS.values()) >= 500
    assert set(SPECS) == {"sweep", "coord", "variants", "reproduce", "bench", "check", "plot"}
    assert sum(s.examples // s.every + (s.examples % s.every > 0) for s in SPECS.values()) >= 20
