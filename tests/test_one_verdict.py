"""One verdict per dataset: `coord`, `check` and `plot` on the same dataset give the same verdict for every row
(dmft.rows.dataset_verdicts), read back from what each command writes: coord's and check's --csv, the figures
`plot` draws (the verdict figure's row labels, the exponent panels' titles, the attention figure's P3 title).
Before, coord printed only its site rows ("no row refuted"), check the registry rows (P3 not consistent, with a
KS p over dependent points) and plot its own KS p over other values of A. A real coordinate check is written to
disk once per module; the failing case edits its parts (the logits' RMS times N^2) and merges them again."""

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import helpers
import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from dmft.check import p3_ks_pvalues
from dmft.plots.export import figure_jobs
from probes.experiment.dataset import load, save

COORD = [
    "coord",
    "--axis",
    "N",
    "--values",
    "4,8,16",
    "--steps",
    "0,1",
    "--seeds",
    "3",
    "--task",
    "vision",
    "--H",
    "2",
    "--L",
    "1",
    "--probe-samples",
    "8",
    "--workers",
    "1",
    "--out",
    "c.nc",
]


def run(args, cwd: Path) -> str:
    code, out, err = helpers.invoke(args, cwd=cwd)
    assert code == 0, err
    return out


def csv_verdicts(path: Path) -> dict[str, str]:
    """{row label (dmft.rows.row_label): outcome} from a verdict CSV of coord or check."""
    df = pd.read_csv(path, keep_default_na=False)
    return {
        f"{'*' if str(p) == 'True' else ''}{k} {r} ({s}, {a})": o
        for p, k, r, s, a, o in zip(df.primary, df.key, df.row, df.setting, df.axis, df.outcome)
    }


def plot_verdicts(ds) -> tuple[dict[str, str], dict[str, str], str]:
    """What `plot` draws for ds: ({row label: outcome} of the verdict figure, {"key row": outcome} of the exponent
    panels' titles, the attention figure's title)."""
    jobs = dict(figure_jobs(ds))
    fig = jobs["verdicts"]()
    rows = {}
    for t in fig.axes[0].get_yticklabels():
        label, verdict = t.get_text().rsplit(": ", 1)
        rows[label] = verdict.split(" ", 1)[1]  # "✓ consistent" -> "consistent"
    plt.close(fig)
    fig = jobs["exponents"]()
    panels = {}
    for ax in fig.axes:
        if ": " in ax.get_title():
            head, row = ax.get_title().split("\n")
            key, verdict = head.split(" ", 1)[0], head.rsplit(": ", 1)[1].split(" ", 1)[1]
            panels[f"{key} {row.rsplit(': ', 1)[0]}"] = verdict
    plt.close(fig)
    fig = jobs["attention_density"]()
    title = fig.get_suptitle()
    legends = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    return rows, panels, title + "\n" + "\n".join(legends)


def three_verdicts(folder: Path, coord_args: list) -> tuple[dict, dict, tuple]:
    """coord's, check's and plot's verdicts of the dataset folder/c.nc (coord_args: the coord command line)."""
    run(coord_args + ["--csv", "coord.csv"], folder)
    run(["check", "c.nc", "--csv", "check.csv"], folder)
    return csv_verdicts(folder / "coord.csv"), csv_verdicts(folder / "check.csv"), plot_verdicts(load(folder / "c.nc"))


def assert_one_verdict(coord: dict, check: dict, plot: tuple) -> None:
    rows, panels, density = plot
    assert list(coord) == list(check) == list(rows)  # the same rows, in the same order
    assert coord == check == rows  # and each row's one verdict
    assert any(k.startswith("*P3 ") for k in check) and any(" change @1 " in k for k in check)  # both families
    for name, verdict in panels.items():  # the exponent panels: the same verdicts
        assert [o for k, o in check.items() if k.lstrip("*").startswith(name + " (")] == [verdict], name
    assert len(panels) >= 4
    p3 = next((k, o) for k, o in check.items() if k.startswith("*P3 "))
    assert f"{p3[0].lstrip('*').rsplit(' (', 1)[0]}: " in density and p3[1] in density


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A real coordinate check along N (3 sizes x 3 seeds, steps 0 and 1) written by `dmft-probe coord`."""
    folder = tmp_path_factory.mktemp("one_verdict")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        verdicts = three_verdicts(folder, COORD)
    finally:
        torch.set_num_threads(threads)
    return folder, verdicts


def test_coord_check_and_plot_give_every_row_one_verdict(dataset):
    _, (coord, check, plot) = dataset
    assert_one_verdict(coord, check, plot)
    assert sum(k.startswith("coord ") for k in coord) >= 20  # the site rows, in check's table too


def test_the_density_figure_quotes_p3s_ks_p_values(dataset):
    """The attention figure's KS p (legend) is the one P3's note quotes: one point per head, the values drawn."""
    folder, (_, _, (_, _, density)) = dataset
    ds = load(folder / "c.nc")
    pvals = p3_ks_pvalues(ds, "N")
    for size in (4.0, 16.0):  # the smallest and largest size are drawn
        assert f"KS p = {pvals[size]:.2g})" in density
    note = pd.read_csv(folder / "check.csv", keep_default_na=False).query("key == 'P3'").note.iloc[0]
    assert "one point per head" in note and f"4: {pvals[4.0]:.3g}" in note


def test_a_failing_row_fails_in_all_three(dataset, tmp_path):
    """Every part's logits RMS times N^2: `logits init` grows as N^1.5 against the expected N^-0.5, and coord
    (merging the edited parts), check and plot all read it as refuted, as every other row agrees."""
    folder, _ = dataset
    shutil.copytree(folder / "c.nc.parts", tmp_path / "c.nc.parts")
    shutil.copy(folder / "c.nc", tmp_path / "c.nc")
    for part in sorted((tmp_path / "c.nc.parts").glob("N*-seed*.nc")):
        ds = load(part).load()
        ds["io_rms"] = ds.io_rms.where(ds.io_site != "logits", ds.io_rms * int(ds["N"]) ** 2)
        save(ds, part)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        coord, check, plot = three_verdicts(tmp_path, COORD + ["--rebuild-manifest"])
    finally:
        torch.set_num_threads(threads)
    assert_one_verdict(coord, check, plot)
    failing = "coord logits init (mup/adam, N)"
    assert coord[failing] == check[failing] == plot[0][failing] == "refuted"
