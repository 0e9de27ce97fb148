"""`dmft-probe variants`: the variant x axis x optimizer table of coordinate-check verdicts.

The command runs for real on a tiny grid (--quick: N = 4, 8, 16, 2 seeds, probes at steps 0, 1, 10; paper and
laurel, Adam) in this process (--workers 1); `dmft.variant_table.variant_verdict` is then checked on that real
dataset with one site's change made to grow on purpose. Seeded, CPU, about 50 s on 2 busy cores.

The slopes' seed bootstrap draws 200 resamples here instead of `dmft.fit.loglog_fit`'s 2000 (`fast_bootstrap`):
with 2000 a verdict of this 3-size dataset (33 rows) takes 5-9 s on a busy core, and the file computes ten.
"""
import functools
import time

import pytest
from typer.testing import CliRunner

from cli import app
from dmft.variant_table import (INCONCLUSIVE, NOT_SCALE_INVARIANT, SCALE_INVARIANT, variant_table_from_folder,
                                variant_table_markdown, variant_verdict)
from probes.dataset import load

runner = CliRunner()
ARGS = ["variants", "--quick", "--variants", "paper,laurel", "--axes", "N", "--optimizers", "adam", "--workers", "1"]
VERDICTS = (SCALE_INVARIANT, NOT_SCALE_INVARIANT, INCONCLUSIVE)


@pytest.fixture(scope="module", autouse=True)
def fast_bootstrap():
    import dmft.coord
    from dmft.fit import loglog_fit

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dmft.coord, "loglog_fit", functools.partial(loglog_fit, n_boot=200))
        yield


@pytest.fixture(scope="module")
def table(tmp_path_factory, fast_bootstrap):
    out = tmp_path_factory.mktemp("variants") / "vt"
    md = out.parent / "table.md"
    res = runner.invoke(app, ARGS + ["--out", str(out), "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    return out, md, res.output


def _rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]      # without the header


def test_each_cell_has_a_dataset_and_a_table_row(table):
    out, md, output = table
    assert sorted(p.name for p in out.glob("*.nc")) == ["coord-laurel-adam-N.nc", "coord-paper-adam-N.nc"]
    rows = _rows(md.read_text())
    assert [r[:3] for r in rows] == [["paper", "N", "adam"], ["laurel", "N", "adam"]]
    assert all(r[3] in VERDICTS for r in rows), rows
    # the worst judged row names a site, a slope with its CI and the expectation
    assert all(" vs " in r[4] and "[" in r[4] for r in rows), rows
    assert "| variant | axis | optimizer | verdict |" in output and "scale-invariant:" in md.read_text()
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


def test_variant_verdict_flips_on_a_judged_deviation_only(table):
    out, _, _ = table
    ds = load(out / "coord-paper-adam-N.nc")
    base = variant_verdict(ds)
    assert (base.variant, base.axis, base.optimizer) == ("paper", "N", "adam")
    assert base.verdict == SCALE_INVARIANT and not base.failing, base
    assert base.judged == 11 + 11          # every site at init, and its change at step 10

    # the MLP output's change at step 10 grows as N^+0.5: a judged row misses its expectation
    bad = variant_verdict(_grow(ds, "coord_update_rms", "site", "mlp_out", 10, 0.5))
    assert bad.verdict == NOT_SCALE_INVARIANT
    assert [(r.site, r.kind, r.step) for r in bad.failing] == [("mlp_out", "change", 10)]
    assert bad.worst.site == "mlp_out" and bad.failing[0].slope > 0.3
    assert "mlp_out change@10" in variant_table_markdown([bad])

    # the logits' change at step 1 only: reported as an early deviation, not judged
    early = variant_verdict(_grow(ds, "io_update_rms", "io_site", "logits", 1, 1.0))
    assert early.verdict == SCALE_INVARIANT and not early.failing
    assert [(r.site, r.step) for r in early.early] == [("logits", 1)]
    assert "logits@1 +" in variant_table_markdown([early])

    # without a probe step >= 10 the feature changes cannot be judged
    assert variant_verdict(ds.sel(step=[0, 1])).verdict == INCONCLUSIVE


@pytest.mark.parametrize("args, needle", [
    (["--variants", "paper,gpt5"], "--variants: unknown 'gpt5'"),
    (["--axes", "N,D"], "--axes: unknown 'D'"),
    (["--optimizers", "lion"], "--optimizers: unknown 'lion'"),
    (["--markdown", "/nonexistent-folder/t.md"], "--markdown: folder /nonexistent-folder does not exist"),
    (["--seeds", "0"], "--seeds must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    res = runner.invoke(app, ["variants", "--quick", "--out", str(tmp_path / "x")] + args)
    assert res.exit_code == 2 and needle in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "x").exists()
