"""Every notebook executes headless with its small parameters and ends with its measured-vs-predicted statement."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_01_to_08_are_stored_without_outputs():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in book.cells), path.name
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} is stored with outputs"


def test_run_folders_do_not_depend_on_the_working_directory(tmp_path):
    """Every notebook puts its runs under the repository's root (`probes.project_root`), found from any working
    directory: the notebooks folder, the root itself, or a folder outside the repository (then through the
    installed package); notebook 07's default source folder too. The notebooks import only the public faces."""
    from probes import project_root

    assert project_root(ROOT / "notebooks") == project_root(ROOT) == project_root(tmp_path) == ROOT
    for path in NOTEBOOKS:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "OUT = project_root() / out_dir" in code, path.name
        deep = [
            line
            for line in code.splitlines()
            if line.strip().startswith("from ")
            and line.split()[1].startswith(("probes.", "dmft.", "parametrizations."))
        ]
        assert not deep, f"{path.name} imports past the faces: {deep}"
    assert "src = project_root() / source" in "".join(
        c.source for c in nbformat.read(ROOT / "notebooks" / "07_trained_convergence.ipynb", as_version=4).cells
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_and_states_its_verdict(path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    book = nbformat.read(path, as_version=4)
    # the run folder goes to tmp_path, not the repository's runs/notebooks: an injected cell after the parameters
    # (as papermill injects them) gives out_dir as an absolute path, which project_root() / out_dir keeps
    at = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
    book.cells.insert(at + 1, nbformat.v4.new_code_cell(f"out_dir = {str(tmp_path / 'runs' / 'notebooks')!r}"))
    # No per-cell wall-time limit: a cell's time is not what this test asserts, and on a loaded 2-core machine notebook
    # 05's grid cell ran past the old 600 s limit (full suite with 2 torch threads beside other jobs, 80 min). A hung
    # kernel still ends with CI's own limit.
    NotebookClient(book, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    last = book.cells[-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    assert text.strip(), f"{path.name}: the last cell printed no statement"
    assert "predicted" in text.lower() or "transfer" in text.lower(), text
    assert (tmp_path / "runs" / "notebooks").is_dir()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
