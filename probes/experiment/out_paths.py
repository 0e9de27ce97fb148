"""Where run outputs go: default names and an early check of --out (before any training is spent)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The repository's root folder: the nearest folder at or above `start` (default: the working directory) that
    holds pyproject.toml, else the one above the installed `probes` package (a checkout or an editable install),
    else `start` itself. Notebooks put their run folders under it whatever folder they run in."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (folder / "pyproject.toml").is_file():
            return folder
    return here


def number(x: float) -> str:
    """A number as it appears in a default name: 0.05 -> "0.05", 1.0 -> "1", 1e-05 -> "1e-05" (file-system safe)."""
    return f"{float(x):g}"


def _model_tokens(cfg, axis: str | None = None, sizes=None) -> list[str]:
    """The parametrization (with its overridden exponents), optimizer, task, the variant (when not the paper's),
    then N, H and L: the swept one as its sizes joined by "_" (N4_8_16), the others as single values."""
    m = cfg.model
    tokens = [cfg.param.name, cfg.optim.name, m.task]
    if getattr(m, "variant", "paper") != "paper":
        tokens.append(m.variant)
    for name in ("N", "H", "L"):
        tokens.append(name + ("_".join(str(int(v)) for v in sizes) if name == axis else str(getattr(m, name))))
    return tokens


def _training_tokens(cfg, steps: str) -> list[str]:
    """eta0, gamma0 (when not 1), full batch and its train size, the mse loss (when chosen), then the steps."""
    tokens = [f"eta{number(cfg.optim.eta0)}"]  # eta0 = 0.05 -> eta0.05
    if float(cfg.param.gamma0) != 1.0:
        tokens.append(f"gamma{number(cfg.param.gamma0)}")
    if getattr(cfg, "batch", "random") == "full":
        tokens.append("fullbatch")
    if getattr(cfg, "train_size", None) is not None:
        tokens.append(f"P{cfg.train_size}")
    if getattr(cfg, "loss", "ce") != "ce":
        tokens.append(cfg.loss)
    return tokens + [f"steps{steps}"]


def default_out_path(cfg) -> Path:
    """runs/<param>-<optimizer>-<task>-N<N>-H<H>-L<L>-eta<eta0>-steps<steps>-seed<seed>.nc for a RunConfig,
    e.g. runs/mup-adam-lm-N16-H4-L2-eta0.05-steps200-seed0.nc: two runs that differ in any of these settings
    (or in the block variant, gamma0, a full batch, its train size or the loss, named when not the default) get
    different names, so a second run never meets the first's file."""
    tokens = _model_tokens(cfg) + _training_tokens(cfg, str(cfg.steps)) + [f"seed{cfg.seed}"]
    return Path("runs") / ("-".join(tokens) + ".nc")


def default_grid_path(kind: str, cfg, axis: str, sizes, seeds: int, init_only: bool = False) -> Path:
    """The merged dataset of a grid by default: runs/<kind>-<param>-<optimizer>-<task>-<axis><sizes>-...
    -eta<eta0>-steps<steps>-seeds<seeds>.nc, e.g. runs/sweep-mup-adam-lm-N4_8_16_32-H4-L2-eta0.05-steps200-seeds4.nc.
    kind: "sweep" or "coord". A coordinate check names its probe steps (steps0_1_3_10_30, from cfg.probes.at);
    an --init-only sweep says "init" instead of eta and steps (nothing is trained). Two grids that differ in the
    axis, a size, the seed count, eta0 or the steps get different names, so a second grid neither resumes nor
    replaces the first."""
    at = getattr(cfg.probes, "at", None) if kind == "coord" else None
    steps = "_".join(str(int(s)) for s in at) if at else str(cfg.steps)
    tokens = [kind] + _model_tokens(cfg, axis, sizes)
    tokens += ["init"] if init_only else _training_tokens(cfg, steps)
    return Path("runs") / ("-".join(tokens + [f"seeds{int(seeds)}"]) + ".nc")


def default_variants_folder(quick: bool, seeds: int) -> Path:
    """runs/variants-seeds<seeds> (runs/variants-quick-seeds<seeds> with --quick): the variant table's folder by
    default. Its cells' sizes, steps and eta0 are fixed by the grid (probes.grid.variant_runs), so the seed count
    and --quick are what distinguish two tables."""
    return Path("runs") / f"variants{'-quick' if quick else ''}-seeds{int(seeds)}"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file or folder"


def _name_max(path: Path) -> tuple[int, int]:
    """(longest file name, longest path) in bytes on the file system that would hold `path` (its nearest
    existing ancestor's; 255 and 4096 where that cannot be asked)."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    limits = []
    for key, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(int(os.pathconf(folder, key)))
        except (OSError, ValueError, AttributeError):
            limits.append(default)
    return limits[0], limits[1]


def check_out_name(path: Path, companion: str = "") -> None:
    """ValueError naming --out when `path` has no file name, or when its name (with `companion` appended: the
    sweep's `.parts` folder) or the whole path is longer than the file system takes."""
    if not path.name or path.name in (".", ".."):
        raise ValueError(
            f"--out: no file name (an empty --out, or a folder such as {str(path)!r}); give a file "
            "name ending in .nc or .zarr"
        )
    name_max, path_max = _name_max(path)
    longest = len(os.fsencode(path.name + companion))
    if longest > name_max:
        also = f" (with {companion!r} appended for the sweep's parts folder)" if companion else ""
        raise ValueError(
            f"--out: the file name is {longest} bytes long{also}; this file system takes at most {name_max}"
        )
    # room for the store's temporary files and part names inside <out>.parts/
    if len(os.fsencode(str(path.absolute()))) + len(companion) + 64 > path_max:
        raise ValueError(
            f"--out: the path is too long ({len(os.fsencode(str(path.absolute())))} bytes; at most "
            f"about {path_max - 64 - len(companion)})"
        )


def prepare_sweep_out(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check the --out of a sweep or coordinate check before any work and return it as a Path: its name (with
    `.parts` appended, `check_out_name`), its store folder `<out>.parts/` (a folder where it exists), then
    `prepare_out_path` (an existing output is resumed from its store, or refused without `overwrite`).
    ValueError naming --out otherwise."""
    path = Path(path)
    check_out_name(path, ".parts")
    parts = path.with_name(path.name + ".parts")
    try:
        st = os.stat(parts)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as e:
        raise ValueError(f"--out: cannot inspect {parts} ({e.strerror or type(e).__name__})") from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise ValueError(
            f"--out: {parts} is {_kind(st.st_mode)}, where the sweep keeps its parts folder: move it "
            "away or choose another --out"
        )
    return prepare_out_path(path, overwrite, resuming=st is not None)


def prepare_out_path(path: str | os.PathLike, overwrite: bool = False, resuming: bool = False) -> Path:
    """Check --out before any work is spent and return it as a Path; ValueError naming --out otherwise.

    - the name ends in .nc (a file) or .zarr (a folder); an existing path must be of that kind (not a folder
      where a file is written or the other way round, not a FIFO, socket or device);
    - an existing output is kept: refused unless `overwrite` (--overwrite), or `resuming` (a sweep whose
      `<out>.parts/` folder exists rewrites its merged output from the parts);
    - the parent folder is created if missing and must be a writable folder;
    - temporary files that a killed save left in that folder are removed (probes.experiment.dataset.cleanup_stale_temps,
      only those untouched for a minute, so a save in flight in another process is left alone).
    The file itself is only replaced when the new dataset is complete (probes.experiment.dataset.save renames it in)."""
    path = Path(path)
    check_out_name(path)
    if path.suffix not in (".nc", ".zarr"):
        raise ValueError(f"--out: {path} must end in .nc (netCDF) or .zarr")
    want_dir = path.suffix == ".zarr"
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
        if path.is_symlink():
            raise ValueError(f"--out: {path} is a broken symbolic link") from None
    except OSError as e:
        raise ValueError(f"--out: cannot inspect {path} ({e.strerror or type(e).__name__})") from None
    if st is not None:
        is_dir, is_reg = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
        if want_dir and not is_dir:
            raise ValueError(f"--out: {path} is {_kind(st.st_mode)}; a .zarr output is a folder")
        if not want_dir and not is_reg:
            raise ValueError(f"--out: {path} is {_kind(st.st_mode)}; a .nc output is a regular file")
        if not (overwrite or resuming):
            raise ValueError(f"--out: {path} exists; pass --overwrite to replace it")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"--out: {parent} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out: cannot create folder {parent} ({e.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out: folder {parent} is not writable")
    from probes.experiment.dataset import cleanup_stale_temps

    cleanup_stale_temps(parent)
    return path
