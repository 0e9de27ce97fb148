"""Repairing a sweep store (probes.grid.store) keeps finished work and the numbers bit for bit:

- a point redone after its part was corrupted, deleted or truncated is retrained in the seed group recorded for it
  in the manifest, so the merged dataset equals the uninterrupted sweep's bit for bit, and no other part is
  rewritten;
- resuming with another ensemble mode (--ensemble or DMFT_PROBE_ENSEMBLE) is refused, one line, nothing changed;
- a manifest with wrong types (each variant written to disk) is refused with one line naming the file, the first
  problem and the repair that keeps the parts (--rebuild-manifest), nothing changed;
- --rebuild-manifest, after the manifest was deleted or garbled, rebuilds it from the parts' own metadata and
  checksums: the same points, groups and checksums as before, and the same merged dataset, bit for bit; parts it
  cannot trust are named and left in place.

Real runs (ensemble "auto" given explicitly, so the file passes with DMFT_PROBE_ENSEMBLE=off too), through the CLI
in this process (`helpers.invoke`, --workers 1: the test process's one torch thread, as the reference)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import xarray as xr
from helpers import invoke

from probes.experiment.config import make_run_config
from probes.experiment.dataset import load
from probes.grid.store import MANIFEST, parts_dir
from probes.grid.sweep import run_sweep

STEPS = 20
MODEL = ["--task", "vision", "--H", "2", "--L", "1", "--batch-size", "8"]
PROVENANCE = ("wall_s", "git_revision", "package_version", "torch_version", "python_version", "device")


def sweep_args(out: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        "--axis",
        "N",
        "--values",
        "2,4,8",
        "--seeds",
        "3",
        *MODEL,
        "--steps",
        str(STEPS),
        "--probe-every",
        "5",
        "--workers",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def content(ds: xr.Dataset) -> xr.Dataset:
    """The dataset without its provenance attributes."""
    ds = ds.copy()
    for a in PROVENANCE:
        ds.attrs.pop(a, None)
    return ds


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and its modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, xr.Dataset]:
    """The uninterrupted 3-size x 3-seed sweep, ensemble auto (one group of 3 seeds per size)."""
    out = tmp_path_factory.mktemp("reference") / "ref.nc"
    cfg = make_run_config(
        model={"H": 2, "L": 1, "task": "vision", "axis": "N"},
        run={"steps": STEPS, "batch_size": 8},
        probes={"every": 5},
    )
    return out, run_sweep(cfg, "N", [2, 4, 8], 3, out, ensemble="auto")


def copy_store(reference: tuple[Path, xr.Dataset], tmp_path: Path) -> Path:
    out = tmp_path / "s.nc"
    shutil.copytree(parts_dir(reference[0]), parts_dir(out))
    return out


def manifest(out: Path) -> dict:
    return json.loads((parts_dir(out) / MANIFEST).read_text())


def error_line(code: int, stdout: str, stderr: str) -> str:
    """The one stderr line of a refused command (exit 2, nothing on stdout, nothing before the line)."""
    assert code == 2, stderr
    assert stdout == "" and len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr
    return stderr.strip()


# ---- bit-identical redo -------------------------------------------------------------------------------------------


def test_the_manifest_and_each_part_record_the_seed_group(reference):
    m = manifest(reference[0])
    assert m["ensemble"] == "auto" and m["merged"] == {"values": [2, 4, 8], "seeds": [0, 1, 2]}
    assert {name: p["group"] for name, p in m["points"].items()} == {
        f"N{v}-seed{s}": [0, 1, 2] for v in (2, 4, 8) for s in (0, 1, 2)
    }
    part = load(parts_dir(reference[0]) / "N4-seed1.nc")
    assert json.loads(part.attrs["ensemble_group"]) == [0, 1, 2] and part.attrs["ensemble_mode"] == "auto"


def test_corrupt_missing_and_truncated_parts_are_redone_in_their_group_bit_for_bit(tmp_path, reference):
    """N2-seed1 with 4 KiB zeroed, N4-seed0 deleted, N8-seed2 cut to half: each is named, retrained inside its
    recorded 3-seed ensemble, and only these three parts are written again; the merged dataset is the
    uninterrupted sweep's, bit for bit."""
    out = copy_store(reference, tmp_path)
    folder = parts_dir(out)
    zeroed, deleted, truncated = folder / "N2-seed1.nc", folder / "N4-seed0.nc", folder / "N8-seed2.nc"
    data = bytearray(zeroed.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)
    zeroed.write_bytes(bytes(data))
    deleted.unlink()
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    before = snapshot(folder)
    code, _, err = invoke(sweep_args(out, "--ensemble", "auto"), cwd=tmp_path)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and all(n in " ".join(warnings) for n in ("N2-seed1", "N4-seed0", "N8-seed2")), err
    assert err.count("already done, skipped") == 6
    for point in ("N=2 seed=1", "N=4 seed=0", "N=8 seed=2"):
        assert f"{point}: ok (" in err and "ensemble of 3)" in err.split(f"{point}: ok (")[1].splitlines()[0]
    after = snapshot(folder)
    rewritten = {n for n in after if n != MANIFEST and after[n] != before.get(n)}
    assert rewritten == {"N2-seed1.nc", "N4-seed0.nc", "N8-seed2.nc"}
    xr.testing.assert_identical(content(load(out)), content(reference[1]))
    assert manifest(out)["points"] == manifest(reference[0])["points"] | {
        n: manifest(out)["points"][n] for n in ("N2-seed1", "N4-seed0", "N8-seed2")
    }
    assert all(p["group"] == [0, 1, 2] and p["status"] == "done" for p in manifest(out)["points"].values())


@pytest.mark.parametrize("how", ["option", "environment"])
def test_resuming_with_another_ensemble_mode_is_refused(tmp_path, reference, monkeypatch, how):
    out = copy_store(reference, tmp_path)
    (parts_dir(out) / "N4-seed0.nc").unlink()  # a point to redo
    before = snapshot(parts_dir(out))
    if how == "option":
        args = sweep_args(out, "--ensemble", "off")
    else:
        monkeypatch.setenv("DMFT_PROBE_ENSEMBLE", "off")
        args = sweep_args(out)
    line = error_line(*invoke(args, cwd=tmp_path))
    assert line.startswith("error: --out") and "other settings" in line
    assert 'ensemble (--ensemble, DMFT_PROBE_ENSEMBLE): "auto" -> "off"' in line
    assert snapshot(parts_dir(out)) == before and not out.exists()


# ---- a manifest with wrong types ----------------------------------------------------------------------------------


def _set(path: list, value):
    def edit(m: dict) -> dict:
        target = m
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return m

    return edit


def _drop(path: list):
    def edit(m: dict) -> dict:
        target = m
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return m

    return edit


BAD_MANIFESTS = {
    "seeds null": (_set(["seeds"], None), "seeds"),
    "point a string": (_set(["points", "N4-seed1"], "done"), "N4-seed1"),
    "point without status": (_drop(["points", "N4-seed1", "status"]), "status"),
    "values missing": (_drop(["values"]), "values"),
    "base_config a list": (_set(["base_config"], [1, 2]), "base_config"),
    "unknown status": (_set(["points", "N2-seed0", "status"], "finished"), "status"),
    "value a string": (_set(["points", "N2-seed0", "value"], "2"), "value"),
    "seed a float": (_set(["points", "N2-seed0", "seed"], 0.0), "seed"),
    "seeds of floats": (_set(["seeds"], [0, 1, 2.5]), "seeds"),
    "values of bools": (_set(["values"], [True, 4, 8]), "values"),
    "points a list": (_set(["points"], []), "points"),
    "a grid point missing": (_drop(["points", "N8-seed2"]), "N8-seed2"),
    "format 2": (_set(["format"], 2), "format"),
    "axis unknown": (_set(["axis"], "Q"), "axis"),
    "init_only a string": (_set(["init_only"], "no"), "init_only"),
    "config_hash of other settings": (_set(["base_config", "steps"], 7), "config_hash"),
    "sha256 a number": (_set(["points", "N2-seed0", "sha256"], 12), "sha256"),
    "bytes negative": (_set(["points", "N2-seed0", "bytes"], -1), "bytes"),
    "group without its seed": (_set(["points", "N2-seed0", "group"], [1, 2]), "group"),
    "groups that overlap": (_set(["points", "N2-seed0", "group"], [0, 1]), "group"),
    "ensemble unknown": (_set(["ensemble"], "sometimes"), "ensemble"),
    "merged a list": (_set(["merged"], [2, 4]), "merged"),
    "top level a list": (lambda m: [m], "top level"),
}
RAW_MANIFESTS = {
    "invalid JSON": (b'{"format": 1, "axis": ', "JSON"),
    "empty": (b"", "JSON"),
    "not UTF-8": (b"\xff\xfe{}", "UTF-8"),
    "deep nesting": (b"[" * 100000 + b"]" * 100000, "nested"),
}


@pytest.mark.parametrize("variant", list(BAD_MANIFESTS) + list(RAW_MANIFESTS))
def test_a_bad_manifest_is_one_line_with_a_repair_that_keeps_the_parts(tmp_path, reference, variant):
    out = copy_store(reference, tmp_path)
    path = parts_dir(out) / MANIFEST
    if variant in BAD_MANIFESTS:
        edit, named = BAD_MANIFESTS[variant]
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    else:
        raw, named = RAW_MANIFESTS[variant]
        path.write_bytes(raw)
    before = snapshot(tmp_path)
    line = error_line(*invoke(sweep_args(out, "--ensemble", "auto"), cwd=tmp_path))
    assert line.startswith(f"error: --out: {path} is not a valid sweep manifest (") and named in line, line
    assert "--rebuild-manifest" in line and "remove" not in line and "delete" not in line
    assert snapshot(tmp_path) == before  # nothing trained, written or removed


def test_parts_without_a_manifest_are_refused_with_the_repair(tmp_path, reference):
    out = copy_store(reference, tmp_path)
    (parts_dir(out) / MANIFEST).unlink()
    before = snapshot(tmp_path)
    line = error_line(*invoke(sweep_args(out, "--ensemble", "auto"), cwd=tmp_path))
    assert "9 part file(s) but no manifest.json" in line and "--rebuild-manifest" in line
    assert snapshot(tmp_path) == before


# ---- --rebuild-manifest -------------------------------------------------------------------------------------------


def test_rebuild_manifest_after_it_was_deleted_gives_the_same_store_and_dataset(tmp_path, reference):
    out = copy_store(reference, tmp_path)
    (parts_dir(out) / MANIFEST).unlink()
    parts = {n: b for n, b in snapshot(parts_dir(out)).items()}
    code, _, err = invoke(sweep_args(out, "--ensemble", "auto", "--rebuild-manifest"), cwd=tmp_path)
    assert code == 0, err
    assert err.count("already done, skipped") == 9 and ": ok (" not in err and "warning" not in err
    rebuilt, original = manifest(out), manifest(reference[0])
    assert rebuilt["points"] == original["points"]  # statuses, groups, sha256 and bytes
    assert {k: v for k, v in rebuilt.items() if k != "points"} == {k: v for k, v in original.items() if k != "points"}
    assert {n: b for n, b in snapshot(parts_dir(out)).items() if n != MANIFEST} == parts  # no part rewritten
    xr.testing.assert_identical(content(load(out)), content(reference[1]))


def test_rebuild_manifest_names_untrusted_parts_and_redoes_their_points_in_the_recorded_group(tmp_path, reference):
    """The manifest garbled; N4-seed2.nc replaced by the part of another sweep (other --steps); a junk .nc and a
    part under a wrong name beside them. Each is named in a warning and not trusted; the junk and the misnamed
    part are left in place; N4-seed2 is redone in the group its siblings' parts record: bit for bit the
    uninterrupted sweep."""
    out = copy_store(reference, tmp_path)
    folder = parts_dir(out)
    (folder / MANIFEST).write_text('{"format": 1, "seeds": null')
    other = tmp_path / "other.nc"
    code, _, err = invoke(
        [
            "sweep",
            "--axis",
            "N",
            "--values",
            "2,3,4",
            "--seeds",
            "3",
            *MODEL,
            "--steps",
            "3",
            "--probe-every",
            "5",
            "--workers",
            "1",
            "--ensemble",
            "auto",
            "--out",
            str(other),
        ],
        cwd=tmp_path,
    )
    assert code == 0, err
    shutil.copy(parts_dir(other) / "N4-seed2.nc", folder / "N4-seed2.nc")
    (folder / "junk.nc").write_bytes(b"not a dataset")
    shutil.copy(folder / "N2-seed0.nc", folder / "N2-seed9.nc")
    code, _, err = invoke(sweep_args(out, "--ensemble", "auto", "--rebuild-manifest"), cwd=tmp_path)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, err
    assert any("N4-seed2.nc" in w and "other settings" in w and "steps" in w for w in warnings)
    assert any("junk.nc" in w and "left in place" in w for w in warnings)
    assert any("N2-seed9.nc" in w and "N=2 seed=0" in w for w in warnings)
    assert err.count("already done, skipped") == 8
    assert "N=4 seed=2: ok (" in err and "ensemble of 3)" in err.split("N=4 seed=2: ok (")[1].splitlines()[0]
    assert (folder / "junk.nc").read_bytes() == b"not a dataset" and (folder / "N2-seed9.nc").exists()
    assert manifest(out)["points"]["N4-seed2"]["group"] == [0, 1, 2]
    xr.testing.assert_identical(content(load(out)), content(reference[1]))
