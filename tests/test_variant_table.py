"""`dmft-probe variants`: the variant x axis x optimizer table of coordinate-check summaries.

The command runs for real on a tiny grid (--quick: N = 4, 8, 16, 8 seeds, probes at steps 0, 1, 10; paper
and laurel, Adam) in this process (--workers 1); `dmft.variant_verdicts.variant_summary` is then checked on that real
dataset with one site's change made to grow on purpose. Seeded, CPU.
"""

import time

import pytest
from typer.testing import CliRunner

from cli import app
from dmft.coord import coord_verdicts
from dmft.variant_verdicts import cell_of, variant_summary, variant_table_from_folder, variant_table_markdown
from dmft.verdict import MARKS, NOT_MEASURED, REFUTED
from probes.experiment.dataset import load

runner = CliRunner()
ARGS = ["variants", "--quick", "--variants", "paper,laurel", "--axes", "N", "--optimizers", "adam", "--workers", "1"]
VERDICTS = tuple(f"{m} {o}" for o, m in MARKS.items())


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("variants") / "vt"
    md = out.parent / "table.md"
    res = runner.invoke(app, ARGS + ["--out", str(out), "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    return out, md, res.output


def _rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]  # without the header


def test_each_cell_has_a_dataset_and_a_table_row(table):
    out, md, output = table
    assert sorted(p.name for p in out.glob("*.nc")) == ["coord-laurel-adam-N.nc", "coord-paper-adam-N.nc"]
    rows = _rows(md.read_text())
    assert [(r[0], r[2]) for r in rows] == [("paper", "adam, N"), ("laurel", "adam, N")]
    assert all(r[6].split(";")[0] in VERDICTS for r in rows), rows
    # the worst judged row names its hypotheses, a site with its slope and CI, and its band with the band's source
    assert all(" ± " in r[3] and "[" in r[4] and "local slopes" in r[5] for r in rows), rows
    assert "| variant | claim | optimizer, axis |" in output and "Cell verdict:" in md.read_text()
    assert "judged rows:" in md.read_text()
    assert "[1/2] paper / adam along N" in output and "[2/2] laurel / adam along N" in output
    # the folder reader gives the same table
    assert variant_table_markdown(variant_table_from_folder(out)) == md.read_text()


def test_a_rerun_keeps_the_finished_cells(table):
    out, _, _ = table
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nc")}
    t0 = time.perf_counter()
    res = runner.invoke(app, ARGS + ["--out", str(out)])
    took = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    assert res.output.count("finished, kept") == 2, res.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nc")} == before
    assert took < 10, f"a rerun of finished cells took {took:.1f} s"


def _grow(ds, var, site_dim, site, step, power):
    """ds with var[site] at probe `step` multiplied by N^power (its slope along N raised by `power`)."""
    ds = ds.copy(deep=True)
    factor = (ds.N.astype(float) ** power).where(ds.step == step, 1.0)
    da = ds[var]
    ds[var] = da.where(da[site_dim] != site, da * factor)
    return ds


def _refuted_rows(summary) -> int:
    """How many judged rows of a cell are refuted (from its note, "22 judged rows: 1 ✗, ...")."""
    return int(cell_of(summary).note.split(": ")[1].split(" ✗")[0])


def test_variant_summary_flips_on_a_judged_deviation_only(table):
    """The paper block's own cell is whatever the rule says at these sizes (at N = 4, 8, 16 its softmax(A) at init
    reads N^-0.05 with a precise interval: RMS sqrt(1 + Var A) approaches its limit as 1 + c/N, and with two local
    slopes of one sign the band cannot cover that drift); what is guarded is that a +1/2 deviation of one judged row
    is refuted and decides the cell, and that the same deviation at step 1 is listed, not judged."""
    out, _, _ = table
    ds = load(out / "coord-paper-adam-N.nc")
    base = variant_summary(ds)
    cell = cell_of(base)
    assert (cell.key, cell.axis, cell.setting) == ("paper", "N", "adam")
    assert cell.note.startswith(f"{11 + 11} judged rows:")  # every site at init, and its change at step 10
    rows = {v.row: v for v in coord_verdicts(ds)}
    assert rows["mlp_out change @10"].outcome != REFUTED and rows["logits change @1"].outcome != REFUTED

    # the MLP output's change at step 10 grows as N^+0.5: that judged row is refuted, and it is the worst
    grown = variant_summary(_grow(ds, "coord_update_rms", "site", "mlp_out", 10, 0.5))
    bad = cell_of(grown)
    assert bad.outcome == REFUTED and bad.row == "mlp_out change @10" and bad.estimate > 0.3, bad
    assert _refuted_rows(grown) == _refuted_rows(base) + 1
    assert "mlp_out change @10" in variant_table_markdown([grown])

    # the logits' change at step 1 only: reported as an early deviation, not judged
    early = variant_summary(_grow(ds, "io_update_rms", "io_site", "logits", 1, 1.0))
    assert cell_of(early).outcome == cell.outcome and _refuted_rows(early) == _refuted_rows(base)
    assert "logits change @1" in [v.row for v in early if not v.primary]
    assert "logits change @1: +" in variant_table_markdown([early])

    # without a probe step >= 10 the feature changes cannot be judged: not measured, unless an init row is refuted
    untrained = cell_of(variant_summary(ds.sel(step=[0, 1])))
    init_refuted = any(v.outcome == REFUTED for v in rows.values() if v.row.endswith(" init"))
    assert untrained.outcome == (REFUTED if init_refuted else NOT_MEASURED), untrained
    assert "no probe step >= 10: the feature changes were not judged" in untrained.note


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--variants", "paper,gpt5"], "--variants: unknown 'gpt5'"),
        (["--axes", "N,D"], "--axes: unknown 'D'"),
        (["--optimizers", "lion"], "--optimizers: unknown 'lion'"),
        (["--markdown", "/nonexistent-folder/t.md"], "--markdown: folder /nonexistent-folder does not exist"),
        (["--seeds", "0"], "--seeds must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    res = runner.invoke(app, ["variants", "--quick", "--out", str(tmp_path / "x")] + args)
    assert res.exit_code == 2 and needle in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "x").exists()
