"""`sweep` and `coord` options through the CLI (in this process, `helpers.invoke`):

- nothing replaced without --overwrite: once a grid is merged into --out, a grid that leaves out some of its
  values or seeds is refused before any work, with one line saying how to extend it, start a new --out or
  overwrite; a pure extension is accepted; --overwrite rewrites --out with exactly the grid asked for and keeps
  every finished part; without --out on disk any grid is accepted;
- bounds and messages: too many seeds or sizes, a size or probe step beyond what a run takes, an --out with no
  name, a name too long, a file where the parts folder goes, an unknown ensemble mode (option or environment):
  exit 2, one stderr line naming the option, nothing printed before it, nothing left on disk.

Tiny grids (--init-only, or one training step), so every case takes seconds at most."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import invoke

from probes.experiment.dataset import load
from probes.grid.store import MANIFEST, parts_dir

MODEL = ["--task", "vision", "--H", "2", "--L", "1", "--batch-size", "8", "--workers", "1"]


def sweep(out: Path, values: str, seeds: int, *extra: str) -> list[str]:
    return [
        "sweep",
        "--axis",
        "N",
        "--values",
        values,
        "--seeds",
        str(seeds),
        "--init-only",
        *MODEL,
        "--out",
        str(out),
        *extra,
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def grid(path: Path) -> tuple[list[int], list[int]]:
    ds = load(path)
    return [int(v) for v in ds.N.values], [int(s) for s in ds.seed.values]


def refused(code: int, stdout: str, stderr: str) -> str:
    """The one stderr line of a refused command: exit 2, nothing on stdout, nothing printed before it."""
    assert code == 2, stderr
    assert stdout == "" and len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr
    return stderr.strip()


# ---- nothing replaced without --overwrite ------------------------------------------------------------------------


def test_a_grid_that_leaves_out_the_merged_one_is_refused_and_an_extension_is_not(tmp_path):
    """The README sequence that replaced a result: N = 4,8,16 x 2 seeds merged, then N = 2..9 x 1 seed on the same
    --out (which reuses N = 4 and 8) is refused, and so is the same sizes with fewer seeds; the old grid plus new
    values and seeds extends it."""
    out = tmp_path / "runs" / "N.nc"
    code, _, err = invoke(sweep(out, "4,8,16", 2), cwd=tmp_path)
    assert code == 0, err
    before = snapshot(tmp_path)
    line = refused(*invoke(sweep(out, "2,3,4,5,6,7,8,9", 1), cwd=tmp_path))
    assert line.startswith(f"error: --out: {out} holds the merged grid N = [4, 8, 16] x seeds [0, 1]")
    assert "leaves out N = [16] and seeds [1]" in line
    assert "give the old values and seeds plus the new ones (--values 2,3,4,5,6,7,8,9,16 --seeds 2)" in line
    assert "new --out" in line and "--overwrite" in line and "finished parts stay" in line
    line = refused(*invoke(sweep(out, "4,8,16", 1), cwd=tmp_path))
    assert "leaves out seeds [1]" in line and "(--values 4,8,16 --seeds 2)" in line
    assert snapshot(tmp_path) == before  # nothing trained, written or removed
    code, _, err = invoke(sweep(out, "4,8,16,32", 2), cwd=tmp_path)  # a pure extension
    assert code == 0, err
    assert err.count("already done, skipped") == 6
    assert grid(out) == ([4, 8, 16, 32], [0, 1])
    assert json.loads((parts_dir(out) / MANIFEST).read_text())["merged"] == {"values": [4, 8, 16, 32], "seeds": [0, 1]}


def test_overwrite_rewrites_the_merged_output_with_exactly_this_grid_and_keeps_the_parts(tmp_path):
    out = tmp_path / "N.nc"
    code, _, err = invoke(sweep(out, "4,8,16", 1), cwd=tmp_path)
    assert code == 0, err
    parts = {n: b for n, b in snapshot(parts_dir(out)).items() if n != MANIFEST}
    code, _, err = invoke(sweep(out, "2,3,4", 1, "--overwrite"), cwd=tmp_path)
    assert code == 0, err
    assert grid(out) == ([2, 3, 4], [0])
    after = snapshot(parts_dir(out))
    assert {n: after[n] for n in parts} == parts and len(after) == len(parts) + 2 + 1  # + N2, N3, manifest
    # the record is now the new grid: the old one (without 2, 3) is refused in its turn
    line = refused(*invoke(sweep(out, "4,8,16", 1), cwd=tmp_path))
    assert "leaves out N = [2, 3]" in line
    out.unlink()  # no merged output: any grid goes
    code, _, err = invoke(sweep(out, "4,8,16", 1), cwd=tmp_path)
    assert code == 0, err
    assert err.count("already done, skipped") == 3 and grid(out) == ([4, 8, 16], [0])


def test_without_a_record_the_merged_grid_is_read_from_the_output(tmp_path):
    """A manifest written before the merged grid was recorded: the grid in --out itself is what is kept."""
    out = tmp_path / "N.nc"
    code, _, err = invoke(sweep(out, "4,8,16", 1), cwd=tmp_path)
    assert code == 0, err
    path = parts_dir(out) / MANIFEST
    m = json.loads(path.read_text())
    del m["merged"]
    path.write_text(json.dumps(m))
    line = refused(*invoke(sweep(out, "4,8,32", 1), cwd=tmp_path))
    assert "holds the merged grid N = [4, 8, 16] x seeds [0]" in line and "leaves out N = [16]" in line


def test_coord_keeps_its_merged_grid_too(tmp_path):
    out = tmp_path / "c.nc"
    args = ["coord", "--axis", "N", "--seeds", "1", "--steps", "0,1", "--probe-samples", "4", *MODEL, "--out", str(out)]
    code, stdout, err = invoke([*args, "--values", "2,3,4"], cwd=tmp_path)
    assert code == 0, err
    before = snapshot(tmp_path)
    line = refused(*invoke([*args, "--values", "3,4,5"], cwd=tmp_path))
    assert "leaves out N = [2]" in line and "(--values 2,3,4,5 --seeds 1)" in line and "--overwrite" in line
    assert snapshot(tmp_path) == before
    (parts_dir(out) / MANIFEST).write_text("{")  # coord repairs its store the same way
    assert "--rebuild-manifest" in refused(*invoke([*args, "--values", "2,3,4"], cwd=tmp_path))
    code, stdout, err = invoke([*args, "--values", "2,3,4", "--rebuild-manifest"], cwd=tmp_path)
    assert code == 0, err
    assert err.count("already done, skipped") == 3 and "dataset:" in stdout


def test_a_library_sweep_onto_a_file_it_did_not_merge_is_refused_and_leaves_no_store(tmp_path):
    """run_sweep (no prepare_out_path in front of it) onto an existing file that is not a sweep: refused before
    any work unless overwrite, and the parts folder it had just made is gone again."""
    from probes.experiment.config import make_run_config
    from probes.grid.sweep import run_sweep

    out = tmp_path / "x.nc"
    out.write_bytes(b"someone else's file")
    cfg = make_run_config(model={"H": 2, "L": 1, "task": "vision"})
    with pytest.raises(ValueError, match=f"^--out: {out} exists and is not a sweep dataset along N; pass --overwrite"):
        run_sweep(cfg, "N", [2, 3, 4], 1, out, init_only=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nc"] and out.read_bytes() == b"someone else's file"


# ---- bounds and messages ------------------------------------------------------------------------------------------

SWEEP = ["sweep", "--values", "2,3,4", "--init-only", *MODEL]
COORD = ["coord", "--values", "2,3,4", "--steps", "0,1", *MODEL]
BAD = [
    ("sweep --seeds 1e9", [*SWEEP, "--seeds", "1000000000", "--out", "s.nc"], "--seeds must be <= 1000", None),
    ("coord --seeds 1e9", [*COORD, "--seeds", "1000000000", "--out", "c.nc"], "--seeds must be", None),
    ("variants --seeds 1e9", ["variants", "--seeds", "1000000000", "--quick", "--out", "v"], "--seeds must be", None),
    (
        "sweep 1001 sizes",
        ["sweep", "--values", ",".join(map(str, range(1, 1002))), "--init-only", *MODEL, "--out", "s.nc"],
        "--values: at most 1000 sizes",
        None,
    ),
    (
        "sweep 101000 points",
        [
            "sweep",
            "--values",
            ",".join(map(str, range(1, 1001))),
            "--seeds",
            "101",
            "--init-only",
            *MODEL,
            "--out",
            "s.nc",
        ],
        "--values x --seeds: at most 100000 grid points",
        None,
    ),
    (
        "coord --steps 1e9",
        ["coord", "--values", "2,3,4", "--steps", "0,1000000000", *MODEL, "--out", "c.nc"],
        "--steps: 1000000000 is more than",
        None,
    ),
    ("coord N=1e9", ["coord", "--values", "2,3,1000000000", *MODEL, "--out", "c.nc"], "--values: N=1000000000", None),
    (
        "sweep N=1e9",
        ["sweep", "--values", "2,3,1000000000", "--init-only", *MODEL, "--out", "s.nc"],
        "--values: N=1000000000",
        None,
    ),
    (
        "sweep L=1e5",
        ["sweep", "--axis", "L", "--values", "1,2,100000", *MODEL, "--out", "s.nc"],
        "--values: L=100000",
        None,
    ),
    ("sweep --out ''", [*SWEEP, "--out", ""], "--out: no file name", None),
    ("coord --out ''", [*COORD, "--out", ""], "--out: no file name", None),
    ("sweep --out 300 chars", [*SWEEP, "--out", "a" * 300 + ".nc"], "--out: the file name is 309 bytes long", None),
    ("sweep --out 250 chars", [*SWEEP, "--out", "a" * 247 + ".nc"], "--out: the file name is 256 bytes long", None),
    ("sweep p.nc.parts a file", [*SWEEP, "--out", "p.nc"], "--out: p.nc.parts is a file", "p.nc.parts"),
    ("sweep --ensemble bad", [*SWEEP, "--ensemble", "fast", "--out", "s.nc"], "--ensemble must be one of", None),
    ("sweep DMFT_PROBE_ENSEMBLE bad", [*SWEEP, "--out", "s.nc"], "DMFT_PROBE_ENSEMBLE must be one of", "env"),
    ("coord DMFT_PROBE_ENSEMBLE bad", [*COORD, "--out", "c.nc"], "DMFT_PROBE_ENSEMBLE must be one of", "env"),
    ("variants DMFT_PROBE_ENSEMBLE bad", ["variants", "--quick", "--out", "v"], "DMFT_PROBE_ENSEMBLE must be", "env"),
]


@pytest.mark.parametrize("args,message,setup", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_options_are_one_line_naming_the_option_before_any_work(tmp_path, monkeypatch, args, message, setup):
    if setup == "env":
        monkeypatch.setenv("DMFT_PROBE_ENSEMBLE", "sometimes")
    elif setup is not None:
        (tmp_path / setup).write_text("in the way")
    before = snapshot(tmp_path)
    line = refused(*invoke(args, cwd=tmp_path))
    assert line.startswith(f"error: {message}"), line
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(before)
