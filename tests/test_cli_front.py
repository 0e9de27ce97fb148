"""A newcomer's first commands: `dmft-probe --version`, shell completion, and default output names that carry the
settings that tell two runs or grids apart (so a second experiment neither resumes nor replaces the first)."""

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import helpers
import pytest

from probes.experiment.config import make_run_config
from probes.experiment.out_paths import (
    default_grid_path,
    default_out_path,
    default_variants_folder,
)
from probes.grid.sweep import coord_config

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_the_package_version_and_exits_0():
    code, out, err = helpers.invoke(["--version"])
    assert code == 0 and out == f"dmft-probe {version('dmft-probe')}\n" and err == ""


def test_help_offers_completion_and_version():
    code, out, _ = helpers.invoke(["--help"])
    assert code == 0
    for flag in ("--version", "--install-completion", "--show-completion"):
        assert flag in out, flag


def completion(*words: str, env: dict | None = None, args=()) -> subprocess.CompletedProcess:
    """The CLI as the shell's completion hook calls it: `dmft-probe` with COMP_WORDS / COMP_CWORD set."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from cli import app; app(prog_name='dmft-probe')", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_show_completion_prints_a_bash_script():
    r = completion(args=["--show-completion", "bash"])
    assert r.returncode == 0, r.stderr
    assert "_DMFT_PROBE_COMPLETE=complete_bash" in r.stdout and "complete -o default" in r.stdout


@pytest.mark.parametrize(
    "words, cword, expect", [("dmft-probe sw", 1, "sweep"), ("dmft-probe coord --ax", 2, "--axis")]
)
def test_completion_completes_commands_and_options(words, cword, expect):
    r = completion(env={"_DMFT_PROBE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [expect]


# ------------------------------------------------------------------------------------------ default names
def cfg(**optim_run):
    optim = {k: v for k, v in optim_run.items() if k in ("eta0", "name")}
    run = {k: v for k, v in optim_run.items() if k in ("steps", "seed")}
    return make_run_config(optim=optim, run=run)


def test_default_run_names_differ_in_eta0_steps_and_seed_and_repeat_otherwise():
    base = default_out_path(cfg())
    assert base == Path("runs/mup-adam-lm-N16-H4-L2-eta0.05-steps200-seed0.nc")
    assert default_out_path(cfg()) == base  # the same settings, the same name
    others = [
        default_out_path(cfg(eta0=0.1)),
        default_out_path(cfg(steps=100)),
        default_out_path(cfg(seed=1)),
        default_out_path(cfg(name="sgd")),
        default_out_path(make_run_config(param={"gamma0": 0.5})),
    ]
    assert len({base, *others}) == 6
    assert "eta0.1" in others[0].name and "steps100" in others[1].name and "gamma0.5" in others[4].name


def test_default_grid_names_carry_axis_sizes_seeds_eta0_and_steps():
    c = cfg()
    base = default_grid_path("sweep", c, "N", [4, 8, 16], 4)
    assert base == Path("runs/sweep-mup-adam-lm-N4_8_16-H4-L2-eta0.05-steps200-seeds4.nc")
    assert default_grid_path("sweep", cfg(), "N", [4, 8, 16], 4) == base
    others = [
        default_grid_path("sweep", c, "N", [4, 8, 32], 4),
        default_grid_path("sweep", c, "N", [4, 8, 16], 8),
        default_grid_path("sweep", cfg(eta0=0.1), "N", [4, 8, 16], 4),
        default_grid_path("sweep", cfg(steps=50), "N", [4, 8, 16], 4),
        default_grid_path("sweep", c, "H", [4, 8, 16], 4),
        default_grid_path("sweep", c, "N", [4, 8, 16], 4, True),
    ]
    assert len({base, *others}) == 7
    coord = default_grid_path("coord", coord_config(c, [0, 1, 3]), "L", [2, 4, 8], 8)
    assert coord == Path("runs/coord-mup-adam-lm-N16-H4-L2_4_8-eta0.05-steps0_1_3-seeds8.nc")
    assert default_variants_folder(False, 8) != default_variants_folder(False, 4) != default_variants_folder(True, 4)


def test_two_runs_differing_only_in_eta0_write_two_datasets(tmp_path):
    """End to end, default --out: the second run writes its own file; the same command again is refused (the
    first dataset is kept), not silently replaced."""
    args = [
        "run",
        "--task",
        "digits",
        "--N",
        "2",
        "--H",
        "1",
        "--L",
        "1",
        "--steps",
        "1",
        "--no-probes",
        "--no-progress",
    ]
    for eta0 in ("0.05", "0.1"):
        code, _, err = helpers.invoke(args + ["--eta0", eta0], cwd=tmp_path)
        assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == [
        "mup-adam-digits-N2-H1-L1-eta0.05-steps1-seed0.nc",
        "mup-adam-digits-N2-H1-L1-eta0.1-steps1-seed0.nc",
    ]
    code, _, err = helpers.invoke(args + ["--eta0", "0.1"], cwd=tmp_path)
    assert code == 2 and "--out" in err and "exists" in err
