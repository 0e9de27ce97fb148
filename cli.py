"""dmft-probe command line: parse, call, print. Bad input -> one line on stderr and exit status 2."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path

import typer


class App(typer.Typer):
    """Typer app whose usage errors (unknown option, wrong type, ...) print one line and exit 2."""

    def __call__(self, *args, **kwargs):
        try:
            from typer._click.exceptions import NoArgsIsHelpError, UsageError
        except ImportError:  # typer versions that use click itself
            import click.exceptions as ce

            UsageError = ce.UsageError
            NoArgsIsHelpError = getattr(ce, "NoArgsIsHelpError", ())  # () catches nothing

        kwargs.setdefault("standalone_mode", False)
        try:
            code = super().__call__(*args, **kwargs)
        except NoArgsIsHelpError:
            raise SystemExit(0) from None
        except UsageError as e:
            typer.echo(f"error: {e.format_message().splitlines()[0]}", err=True)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise SystemExit(130) from None
        raise SystemExit(code if isinstance(code, int) else 0)


app = App(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Probe infinite-width, -head and -depth limits of transformers against DMFT predictions.",
)


def version_text() -> str:
    """ "dmft-probe <version>", the version from the installed package's metadata ("unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"dmft-probe {version('dmft-probe')}"
    except PackageNotFoundError:
        return "dmft-probe unknown (not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print dmft-probe's version and exit"
    ),
) -> None:
    """Probe infinite-width, -head and -depth limits of transformers against DMFT predictions."""


def fail(msg: str) -> None:
    """Print one line naming what is wrong and exit with status 2."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def user_errors(fn):
    """Turn ValueError/OSError raised on user input into one line and exit 2 (never a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError) as e:
            fail(str(e).splitlines()[0] if str(e) else type(e).__name__)

    return wrapper


# The options that set config keys (model, parametrization, optimizer, run, probes) come from the one table,
# probes.experiment.options: its shared ones are added to run, solve, describe, sweep and coord by `shared`, the
# others each command declares with `config_option`; each value lands in the config section it names
# (probes.experiment.config.make_run_config).


def config_option(section: str, key: str, default=None, help: str | None = None, command: str | None = None):
    """The typer option of [section] key from the table (its flag and help; `help` where a command words it its own
    way); command: the command, where a flag means another key on it (coord's --steps sets [probes] at)."""
    from probes.experiment.options import OPTIONS, option

    o = (
        option(section, key)
        if command is None
        else next(o for o in OPTIONS if (o.section, o.key) == (section, key) and command in (o.commands or ()))
    )
    return typer.Option(default, *(o.decl or o.flag).split(" "), help=help or o.help)


EnsembleOpt = typer.Option(
    None,
    "--ensemble",
    help="auto: train a size's seeds together as batched models (same "
    "results, faster); off: one run after another (default: the "
    "environment variable DMFT_PROBE_ENSEMBLE, else auto)",
)
RebuildOpt = typer.Option(
    False,
    "--rebuild-manifest",
    help="rebuild <out>.parts/manifest.json from the parts' own metadata and checksums, then resume",
)
ConfigOpt = typer.Option(None, "--config", help="TOML or JSON config file; command-line options override it")
# Where the points of a sweep or coord check run (probes.grid.executors).
# rich reads a bare [ray] as markup and drops it from --help: the backslash keeps it (tests/test_help_text.py).
ExecutorOpt = typer.Option(
    "local",
    "--executor",
    help="local (this machine, --workers processes) or ray (one Ray task per point; pip install -e '.\\[ray]')",
)
WorkersOpt = typer.Option(
    None,
    "--workers",
    help="local: processes in parallel, 1 torch thread each (default: one "
    "per CPU; 1 runs in this process with torch's threads)",
)
RayAddressOpt = typer.Option(
    None,
    "--ray-address",
    help="ray: a running cluster, host:port, ray://host:port or "
    "auto (RAY_ADDRESS or the cluster `ray start` made here); "
    "default: start a local Ray instance",
)
RayCpusOpt = typer.Option(None, "--ray-cpus", help="ray: CPUs of the local instance started here (default: all)")
GpusPerTaskOpt = typer.Option(
    None, "--gpus-per-task", help="ray: GPUs each task reserves, e.g. 0.25 shares a GPU between 4 (default 0)"
)


def shared(command: str):
    """Add the table's shared options of `command` (probes.experiment.options.shared_options) to its signature; the
    command receives them as `overrides` ({section: {key: value}}, None where not given), ready for
    make_run_config."""
    from probes.experiment.options import shared_options

    specs = {o.name: o for o in shared_options(command)}

    def deco(fn):
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.name != "overrides"]
        params += [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=o.type | None,
                default=typer.Option(None, o.flag, help=o.help),
            )
            for name, o in specs.items()
        ]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            overrides: dict[str, dict] = {}
            for name, o in specs.items():
                overrides.setdefault(o.section, {})[o.key] = kwargs.pop(name, None)
            return fn(*args, overrides=overrides, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)
        return wrapper

    return deco


def _check_data(cfg, overrides: dict, config: str | None, keep: bool = True) -> None:
    """The data the run will use (--data, or [run] data_path of --config) is read now, as the run reads it, before
    any header or output; one line naming the option or key otherwise. keep: the runs happen in this process, which
    reuses what was read (probes.experiment.config.check_data_contents)."""
    from probes.experiment.config import check_data_contents, data_option

    check_data_contents(cfg, data_option(config, overrides.get("run", {}).get("data_path")), keep)


def _check_env() -> None:
    """The environment variables a training command reads (DMFT_PROBE_ENSEMBLE, the test hook
    DMFT_PROBE_INJECT_NONFINITE) are valid, before any work: one line naming the variable otherwise."""
    from probes.experiment.ensemble import resolve_mode
    from probes.experiment.faults import from_env

    resolve_mode(None)
    from_env()


def _out_file(path: Path | None, option: str) -> None:
    """An output file of check (--csv, --nc): a new or regular file in an existing, writable folder."""
    from probes.experiment.config import check_out_file

    if path is not None:
        check_out_file(path, option)


def _has_config(ds, dataset: Path) -> None:
    """DATASET's config attribute has the param and model tables check and plot read (before any work)."""
    from dmft.check import read_run_attrs

    try:
        read_run_attrs(ds)
    except ValueError as e:
        raise ValueError(f"{dataset}: {e}") from None


def _write_atomic(path: Path, write) -> None:
    """write(tmp) to a temporary file next to `path`, then fsync and rename it into place (no partial file on
    failure; probes.experiment.atomic)."""
    from probes.experiment.atomic import write_atomic

    write_atomic(path, write)


def _out_folder(text: str | None, option: str) -> Path | None:
    """An output folder option (reproduce, variants, plot) as a Path, None when not given. Refused: an empty text
    (it would silently mean the current folder), and a folder that cannot be made or written
    (probes.experiment.config.check_out_folder)."""
    from probes.experiment.config import check_out_folder

    if text is None:
        return None
    if not text.strip():
        raise ValueError(f"{option}: empty path; name a folder (. for the current one)")
    try:
        check_out_folder(Path(text), option)
    except OSError as e:  # e.g. a name too long for the file system
        raise ValueError(f"{option}: cannot use {text} ({e.strerror or type(e).__name__})") from None
    return Path(text)


def _merge(overrides: dict, section: str, **values) -> dict:
    """overrides with more keys set in `section` (None values are ignored later)."""
    return {**overrides, section: {**overrides.get(section, {}), **values}}


@app.command()
@user_errors
@shared("run")
def run(
    scale: int | None = typer.Option(None, "--scale", help="value of the scaling axis (N, H or L)"),
    axis: str | None = config_option("model", "axis"),
    d_model: int | None = config_option("model", "d_model"),
    steps: int | None = config_option("run", "steps"),
    seed: int | None = config_option("run", "seed"),
    probe_every: int | None = config_option("probes", "every"),
    probe_log: int | None = config_option("probes", "n_log"),
    probe_samples: int | None = config_option("probes", "n_samples"),
    probes: bool = config_option("probes", "enabled", True),
    out: Path | None = typer.Option(None, "--out", help="dataset file (.nc or .zarr) (default runs/<name>.nc)"),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="replace an existing --out (without it an existing output is kept and the run refused)",
    ),
    config: str | None = ConfigOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    overrides: dict = None,
):
    """Train one model at --scale on --axis and write its dataset."""
    from probes.experiment.config import make_run_config
    from probes.experiment.dataset import run_dataset, save
    from probes.experiment.out_paths import default_out_path, prepare_out_path
    from probes.experiment.run import train
    from probes.experiment.summary import summary_lines

    _check_env()
    overrides = _merge(overrides, "model", axis=axis, d_model=d_model)
    overrides = _merge(overrides, "run", steps=steps, seed=seed)
    cfg = make_run_config(
        config,
        scale=scale,
        **overrides,
        fits="run",
        probes={
            "every": probe_every,
            "n_log": probe_log,
            "n_samples": probe_samples,
            "schedule": "log" if probe_log else None,
            "enabled": None if probes else False,
        },
    )
    _check_data(cfg, overrides, config)
    out_path = prepare_out_path(out or default_out_path(cfg), overwrite)
    m = cfg.model
    typer.echo(
        f"{cfg.param.name} {cfg.optim.name} {m.task}: N={m.N} H={m.H} L={m.L} (axis {m.axis}), "
        f"{cfg.steps} steps on {cfg.device}",
        err=True,
    )
    result = train(cfg, progress=progress)
    ds = run_dataset(result)
    save(ds, out_path)
    if result.status != "ok":
        why = result.extra.get("diverged_on") or "loss"
        typer.echo(
            f"run diverged at step {result.diverged_at} ({why} not finite); dataset written to {out_path}", err=True
        )
        raise typer.Exit(1)
    for line in summary_lines(ds):
        typer.echo(line)
    typer.echo(f"dataset: {out_path}")


@app.command()
@user_errors
@shared("solve")
def solve(
    scale: int | None = typer.Option(
        None, "--scale", help="value of the scaling axis (N, H or L); the limit does not depend on N or H"
    ),
    axis: str | None = config_option("model", "axis"),
    steps: int | None = config_option("run", "steps"),
    samples: int = typer.Option(20000, "--samples", help="Monte Carlo samples of each MLP hidden site"),
    damping: float = typer.Option(
        1.0, "--damping", help="iteration step: new = (1 - damping) old + damping fresh, in (0, 1]"
    ),
    max_iter: int = typer.Option(3, "--max-iter", help="iterations after the causal initial sweep"),
    tol: float = typer.Option(1e-8, "--tol", help="stop when the self-consistency residual is below this"),
    solver_seed: int = typer.Option(0, "--solver-seed", help="seed of the Monte Carlo draws"),
    out: Path | None = typer.Option(None, "--out", help="dataset file (.nc or .zarr) (default runs/<name>-limit.nc)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out"),
    config: str | None = ConfigOpt,
    overrides: dict = None,
):
    """Solve the DMFT of full-batch SGD training in the mean-field limit for the same configuration `run` trains,
    and write its dataset (docs/dmft-dynamics.md): d = N*H -> oo with one token per image (--patch = the image
    side), N -> oo at fixed H with several tokens (alpha_A = 1). --batch defaults to full and --optimizer to sgd
    here, the only training the solver covers."""
    from dmft.dynamics import SolverConfig
    from dmft.dynamics.command import check_memory, default_config, problem_for, solution_for, summary_lines
    from dmft.dynamics.solver import SolverDiverged
    from probes.experiment.config import make_run_config
    from probes.experiment.dataset import save
    from probes.experiment.out_paths import default_out_path, prepare_out_path

    overrides = default_config(_merge(_merge(overrides, "model", axis=axis), "run", steps=steps))
    cfg = make_run_config(config, scale=scale, **overrides)
    _check_data(cfg, overrides, config)
    scfg = SolverConfig(n_samples=samples, damping=damping, max_iter=max_iter, tol=tol, seed=solver_seed)
    cfg, prob = problem_for(cfg)
    check_memory(prob, scfg)
    out = out or default_out_path(cfg).with_name(default_out_path(cfg).stem + "-limit.nc")
    made = [p for p in (Path(out).parent, *Path(out).parent.parents) if not p.exists()]
    out_path = prepare_out_path(out, overwrite)
    limit = "d -> oo" if prob.S == 1 else f"N -> oo at H={cfg.model.H}, S={prob.S} tokens"
    typer.echo(
        f"{cfg.param.name} sgd {cfg.model.task}: limit {limit}, L={cfg.model.L}, P={prob.P}, "
        f"{cfg.steps} steps, {samples} samples",
        err=True,
    )
    try:
        _, ds = solution_for(cfg, prob, scfg)
    except SolverDiverged as e:
        for folder in made:  # the folders --out made, when still empty: nothing is left behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        typer.echo(f"error: {e}; nothing written", err=True)
        raise typer.Exit(1) from None
    save(ds, out_path)
    for line in summary_lines(ds):
        typer.echo(line)
    typer.echo(f"dataset: {out_path}")


@app.command()
@user_errors
@shared("describe")
def describe(
    scale: int | None = typer.Option(None, "--scale", help="value of the scaling axis (N, H or L)"),
    axis: str | None = config_option("model", "axis"),
    config: str | None = ConfigOpt,
    overrides: dict = None,
):
    """Print every parameter's role, shape, init std, forward multiplier, lr, eps and weight decay, and the
    one-line derivation of each role's rule."""
    from rich.console import Console
    from rich.table import Table

    from parametrizations.describe import describe as rows_of
    from parametrizations.describe import header, rule_lines
    from parametrizations.transformer import LWSTransformer
    from probes.experiment.config import make_run_config

    cfg = make_run_config(config, scale=scale, **_merge(overrides, "model", axis=axis), fits="model")
    model = LWSTransformer(cfg.model, cfg.param, cfg.optim.name)
    console = Console(width=160)
    for line in header(model, cfg.param, cfg.optim):
        console.print(line, highlight=False)
    table = Table("parameter", "role", "shape", "init std", "fwd mult", "lr", "eps", "weight decay")
    for r in rows_of(model, cfg.param, cfg.optim):
        init = f"{r.init_std:.4g}" if r.init_value is None else f"value {r.init_value:.4g}"
        table.add_row(
            r.name,
            r.role,
            "x".join(map(str, r.shape)),
            init,
            f"{r.mult:.4g}",
            f"{r.lr:.4g}",
            "-" if r.eps is None else f"{r.eps:.3g}",
            f"{r.weight_decay:.3g}",
        )
    console.print(table)
    console.print("why (d = N*H, l = L/L0, eta = the global lr; docs/parametrization.md):", highlight=False)
    for line in rule_lines(model, cfg.param, cfg.optim):
        console.print("  " + line, highlight=False, soft_wrap=True)


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} must be a comma-separated list of integers, got {text!r}") from None


@dataclass(frozen=True)
class _Executor:
    """The executor options of sweep, coord and variants (probes.grid.executors), checked before any work; with
    --ray-address, this process joins the cluster here, so one that refuses it stops the command before anything
    is printed or written."""

    kind: str
    workers: int | None
    ray_address: str | None
    ray_cpus: int | None
    gpus_per_task: float | None

    def __post_init__(self) -> None:
        from probes.grid.executors import check_executor, connect_ray

        address = check_executor(self.kind, self.workers, self.ray_address, self.ray_cpus, self.gpus_per_task)
        if address is not None:
            connect_ray(address)

    def check(self, cfg) -> None:
        """ValueError when the options do not fit the run config (GPUs per task for a CPU run)."""
        if self.gpus_per_task and cfg.device == "cpu":
            raise ValueError("--gpus-per-task needs --device cuda (or auto): the runs are on the CPU")

    def make(self, n_units: int, init_only: bool = False):
        """The executor for n_units units. An --init-only sweep runs in this process unless --workers says
        otherwise: its points take well under a second, less than starting a worker process."""
        from probes.grid.executors import make_executor

        workers = 1 if self.kind == "local" and self.workers is None and init_only else self.workers
        return make_executor(self.kind, workers, n_units, self.ray_address, self.ray_cpus, self.gpus_per_task)


def _run_grid(
    cfg,
    axis: str,
    sizes: list[int],
    seeds: int,
    out_path: Path,
    init_only: bool,
    ensemble: str | None,
    run_on: _Executor,
    header: str,
    overwrite: bool = False,
    rebuild: bool = False,
):
    """Open the sweep store of out_path (refusing other settings, an unreadable manifest unless `rebuild`, or a
    grid that leaves out the merged one unless `overwrite`, before any work), print the header, run the missing
    points on the executor and merge; returns the merged dataset. Exit 1 when points failed."""
    from probes.grid.sweep import SweepFailed, open_sweep

    echo = functools.partial(typer.echo, err=True)
    with open_sweep(
        cfg, axis, sizes, seeds, out_path, init_only, ensemble, on_point=echo, overwrite=overwrite, rebuild=rebuild
    ) as grid:
        executor = run_on.make(len(grid.units), init_only)
        done = f"{len(grid.done)} of {grid.n_points} points already done; " if grid.done else ""
        echo(f"{header}; {done}{len(grid.units)} unit(s) to run {executor.describe()}")
        try:
            return grid.run(executor, on_point=echo)
        except SweepFailed as e:
            echo(f"error: {e}")
            raise typer.Exit(1) from None


@app.command()
@user_errors
@shared("sweep")
def sweep(
    axis: str = config_option("model", "axis", "N", help="the swept size: N, H or L"),
    values: str = typer.Option(..., "--values", help="comma-separated sizes, at least 3, e.g. 4,8,16,32"),
    seeds: int = typer.Option(4, "--seeds", help="initialisation seeds per size"),
    io_seeds: int | None = config_option("run", "io_seeds"),
    init_only: bool = typer.Option(False, "--init-only", help="no training: probes at initialisation only (seconds)"),
    steps: int | None = config_option("run", "steps", help="optimizer steps per run (default 200)"),
    probe_every: int | None = config_option("probes", "every", help="probe every k steps (default 10)"),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="merged dataset (default runs/sweep-<param>-<optimizer>-<task>-<axis><sizes>-...-eta<eta0>-steps<steps>-seeds<seeds>.nc)",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="replace an existing merged --out: one that has no <out>.parts/ to resume from, or whose merged grid this grid leaves out (the finished parts are kept)",
    ),
    rebuild_manifest: bool = RebuildOpt,
    ensemble: str | None = EnsembleOpt,
    executor: str = ExecutorOpt,
    workers: int | None = WorkersOpt,
    ray_address: str | None = RayAddressOpt,
    ray_cpus: int | None = RayCpusOpt,
    gpus_per_task: float | None = GpusPerTaskOpt,
    config: str | None = ConfigOpt,
    overrides: dict = None,
):
    """Run a grid along --axis (and seeds), here or on Ray; resumable; writes one merged dataset."""
    from probes.experiment.config import make_run_config
    from probes.experiment.out_paths import default_grid_path, prepare_sweep_out
    from probes.grid.sweep import check_grid, check_grid_fits

    _check_env()
    sizes = _int_list(values, "--values")
    check_grid(axis, sizes, seeds, ensemble)
    run_on = _Executor(executor, workers, ray_address, ray_cpus, gpus_per_task)
    cfg = make_run_config(
        config,
        **_merge(_merge(overrides, "model", axis=axis), "run", steps=steps, io_seeds=io_seeds),
        probes={"every": probe_every},
    )
    _check_data(cfg, overrides, config, keep=executor == "local" and (workers == 1 or workers is None and init_only))
    run_on.check(cfg)
    check_grid_fits(cfg, axis, sizes, init_only)
    out = out or default_grid_path("sweep", cfg, axis, sizes, seeds, init_only)
    out_path = prepare_sweep_out(out, overwrite)
    header = (
        f"sweep {axis} in {sizes} x {seeds} seeds, {cfg.param.name}/{cfg.optim.name}"
        f"{' at initialisation' if init_only else f', {cfg.steps} steps'}; parts in {out_path}.parts/"
    )
    _run_grid(cfg, axis, sizes, seeds, out_path, init_only, ensemble, run_on, header, overwrite, rebuild_manifest)
    typer.echo(f"dataset: {out_path}")


@app.command()
@user_errors
@shared("coord")
def coord(
    axis: str = config_option("model", "axis", "N", help="the swept size: N, H or L"),
    values: str = typer.Option("4,8,16,32,64", "--values", help="comma-separated sizes, at least 3"),
    steps: str = config_option("probes", "at", "0,1,3,10,30", command="coord"),
    seeds: int = typer.Option(
        8,
        "--seeds",
        help="initialisation seeds per size (the CI is a jackknife over them; fewer leave rows underpowered)",
    ),
    probe_samples: int | None = config_option("probes", "n_samples"),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="dataset (default runs/coord-<param>-<optimizer>-<task>-<axis><sizes>-...-eta<eta0>-steps<steps>-seeds<seeds>.nc)",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="replace an existing --out: one that has no <out>.parts/ to resume from, or whose merged grid this grid leaves out (the finished parts are kept)",
    ),
    rebuild_manifest: bool = RebuildOpt,
    csv: Path | None = typer.Option(None, "--csv", help="also write the verdict rows as CSV"),
    ensemble: str | None = EnsembleOpt,
    executor: str = ExecutorOpt,
    workers: int | None = WorkersOpt,
    ray_address: str | None = RayAddressOpt,
    ray_cpus: int | None = RayCpusOpt,
    gpus_per_task: float | None = GpusPerTaskOpt,
    config: str | None = ConfigOpt,
    overrides: dict = None,
):
    """The coordinate check: train at each size and seed, record the RMS of every site (embedding, q, k, v, A,
    softmax(A), branch outputs, MLP hidden, residual stream, logits) and of its change since step 0 at --steps,
    and print each site's slope with its verdict against the parametrization's expected exponent (consistent,
    refuted or underpowered; docs/predictions.md, "Coordinate check"), among every other row of the dataset: the
    same rows, with the same verdicts, that `check` prints and `plot` draws (dmft.rows.dataset_verdicts)."""
    from dmft.coord import coord_dataset, coord_lines
    from dmft.rows import dataset_verdicts
    from probes.experiment.config import make_run_config
    from probes.experiment.out_paths import default_grid_path, prepare_sweep_out
    from probes.grid.sweep import check_grid, check_grid_fits, coord_config

    _check_env()
    sizes, at = _int_list(values, "--values"), _int_list(steps, "--steps")
    _out_file(csv, "--csv")
    check_grid(axis, sizes, seeds, ensemble)
    run_on = _Executor(executor, workers, ray_address, ray_cpus, gpus_per_task)
    cfg = coord_config(
        make_run_config(config, **_merge(overrides, "model", axis=axis), probes={"n_samples": probe_samples}), at
    )
    _check_data(cfg, overrides, config, keep=executor == "local" and workers == 1)
    run_on.check(cfg)
    check_grid_fits(cfg, axis, sizes)
    out = out or default_grid_path("coord", cfg, axis, sizes, seeds)
    out_path = prepare_sweep_out(out, overwrite)
    header = (
        f"coord check along {axis} in {sizes} x {seeds} seeds, {cfg.param.name}/{cfg.optim.name} "
        f"eta0={cfg.optim.eta0:g}, probes at steps {list(cfg.probes.at)}; parts in {out_path}.parts/"
    )
    ds = _run_grid(cfg, axis, sizes, seeds, out_path, False, ensemble, run_on, header, overwrite, rebuild_manifest)
    rows = dataset_verdicts(ds)  # every row of the dataset, as `check` and `plot` show them
    for line in coord_lines(rows):
        typer.echo(line)
    if csv is not None:
        _write_atomic(csv, lambda tmp: coord_dataset(rows).to_dataframe().to_csv(tmp, index=False))
        typer.echo(f"csv: {csv}")
    typer.echo(f"dataset: {out_path}  (figures: dmft-probe plot {out_path})")


@app.command()
@user_errors
def check(
    dataset: str = typer.Argument(
        ...,
        help="a sweep dataset written by `dmft-probe sweep`, or a folder of sweeps "
        "and learning-rate grids (e.g. the folder of `dmft-probe reproduce`)",
    ),
    csv: Path | None = typer.Option(None, "--csv", help="also write the verdict table as CSV"),
    nc: Path | None = typer.Option(None, "--nc", help="also write the verdict table as netCDF"),
    markdown: Path | None = typer.Option(None, "--markdown", help="folder: also write the P1-P12 summary as Markdown"),
    mc_heads: int = typer.Option(2048, "--mc-heads", help="Monte Carlo heads of the H -> oo solver (P4)"),
    limit: str | None = typer.Option(
        None,
        "--limit",
        help="a DMFT solution (`dmft-probe solve`) of the sweep's "
        "full-batch problem: adds the rows of the finite runs against the computed "
        "limit, P6 among them",
    ),
):
    """Print the verdict rows (dmft.verdict): each row's hypotheses, measured value with its interval, band and
    verdict, primary rows marked *; for a folder, every dataset's rows, the cross-sweep verdicts (P7, P9, P12), the
    P1-P12 summary of primary rows and the headline over primary rows. With --limit, a full-batch width sweep is
    also measured against the computed limit (docs/dmft-dynamics.md)."""
    from dmft.check import check_mc_heads
    from dmft.verdict import headline
    from dmft.verdict import lines as verdict_lines
    from dmft.verdict import to_dataset as verdict_dataset
    from probes.experiment.config import check_data_path
    from probes.experiment.dataset import load

    check_mc_heads(mc_heads)
    check_data_path(dataset, "DATASET")  # as typed: Path("") would read as "."
    dataset = Path(dataset)  # type: ignore[assignment]
    _out_file(csv, "--csv")
    _out_file(nc, "--nc")
    _out_file(markdown, "--markdown")
    folder = dataset.is_dir() and dataset.suffix != ".zarr"
    if markdown is not None and not folder:
        raise ValueError("--markdown needs a folder of sweeps as DATASET (the P1-P12 summary)")
    if limit is not None:
        check_data_path(limit, "--limit")
        if folder:
            raise ValueError("--limit needs one sweep dataset as DATASET, not a folder")
    if folder:
        from dmft import report

        verdicts = report.folder_verdicts(dataset, n_heads_mc=mc_heads, progress=typer.echo)  # errors name the file
        for line in report.full_lines(verdicts):
            typer.echo(line)
        typer.echo(report.summary_markdown(verdicts))
        if markdown is not None:
            _write_atomic(markdown, lambda tmp: Path(tmp).write_text(report.summary_markdown(verdicts)))
            typer.echo(f"markdown: {markdown}")
    else:
        ds = load(dataset)
        _has_config(ds, dataset)
        from dmft.report import p7_verdict
        from dmft.rows import dataset_verdicts

        try:
            if ds.attrs.get("kind") == "lr_grid":  # a learning-rate grid: the P7 verdict
                verdicts = [p7_verdict(ds)]
            else:  # every row, as `coord` and `plot` show them
                verdicts = dataset_verdicts(ds, n_heads_mc=mc_heads)
        except ValueError as e:  # what the dataset lacks for a verdict (not a sweep, too few sizes, ...)
            raise ValueError(f"{dataset}: {str(e).splitlines()[0]}") from None
        if limit is not None:
            from dmft.dynamics.against import limit_verdicts

            solution = load(Path(limit))
            try:
                verdicts = verdicts + limit_verdicts(ds, solution)
            except ValueError as e:
                raise ValueError(f"{limit}: {str(e).splitlines()[0]}") from None
        for line in verdict_lines(verdicts):
            typer.echo(line)
    table = verdict_dataset(verdicts)
    if csv is not None:
        _write_atomic(csv, lambda tmp: table.to_dataframe().to_csv(tmp, index=False))
        typer.echo(f"csv: {csv}")
    if nc is not None:
        _write_atomic(nc, lambda tmp: table.to_netcdf(tmp, engine="h5netcdf"))
        typer.echo(f"netcdf: {nc}")
    typer.echo(headline(verdicts))


@app.command()
@user_errors
def reproduce(
    preset: str = typer.Option(
        "cpu",
        "--preset",
        help="cpu (2 CPU cores, under 15 minutes), smoke (about two minutes; "
        "checks the machinery, the figures mean nothing) or gpu (the paper's scale on one CUDA device, about "
        "2 hours of an H100; needs CUDA)",
    ),
    out: str | None = typer.Option(
        None,
        "--out",
        help="folder of the datasets and verdicts (default runs/reproduce-<preset>); "
        "finished datasets in it are reused",
    ),
    ensemble: str | None = EnsembleOpt,
):
    """Run a preset's sweeps and learning-rate grids, then write the P1-P12 verdict table (verdicts.md)."""
    from dmft.report import check_other_datasets, plan_markdown, preset_plan, write_report
    from probes.experiment.ensemble import resolve_mode
    from probes.grid.reproduce import check_outputs, check_preset, check_preset_device, job_config, run_preset

    _check_env()
    chosen = check_preset(preset)
    check_preset_device(chosen)
    jobs = chosen.jobs
    ensemble = resolve_mode(ensemble)
    out = _out_folder(out, "--out") or Path("runs") / f"reproduce-{preset}"
    check_other_datasets(out, {f"{job.name}.nc" for job in jobs})  # the report reads them all: check them first
    check_outputs(chosen, [job_config(chosen, job) for job in jobs], out)  # before the plan is printed
    typer.echo(f"planned power of the primary rows (before any data; written to {out / 'plan.md'} with the report):")
    typer.echo(plan_markdown(preset_plan(chosen)))
    run_preset(preset, out, say=typer.echo, ensemble=ensemble)
    summary = write_report(out, say=typer.echo, preset=chosen)
    typer.echo(summary.read_text())
    typer.echo(f"verdicts: {summary}")


@app.command()
@user_errors
def plan(
    axis: str | None = typer.Option(None, "--axis", help="the swept size: N, H or L (default: --from's, else N)"),
    sizes: str | None = typer.Option(
        None, "--sizes", help="comma-separated sizes, at least 3 (default: --from's, else 4,8,16,32)"
    ),
    seeds: int | None = typer.Option(None, "--seeds", help="seeds per size (default: --from's, else 6)"),
    param: str | None = typer.Option(
        None, "--param", help="parametrization preset: mup, mup-sqrt, depth-sqrt, sp (default: --from's, else mup)"
    ),
    alpha_A: float | None = typer.Option(None, "--alpha-A", help="attention exponent (overrides the preset)"),
    alpha_L: float | None = typer.Option(None, "--alpha-L", help="residual exponent (overrides the preset)"),
    source: Path | None = typer.Option(
        None, "--from", help="a sweep dataset to measure the noise on (and its axis, sizes, seeds, parametrization)"
    ),
    quantity: str = typer.Option(
        "probe_outputs", "--quantity", help="with --from: the quantity whose noise is measured"
    ),
    step: int | None = typer.Option(None, "--step", help="with --from: the probe step (default: the last)"),
    entries: int | None = typer.Option(None, "--entries", help="entries of one seed's quantity (default 16)"),
    rho_entries: float | None = typer.Option(
        None, "--rho-entries", help="mean correlation of one seed's entries, in [0, 1) (default 0.3)"
    ),
    rho_sizes: float | None = typer.Option(
        None, "--rho-sizes", help="correlation of one seed's draws across sizes, in [0, 1) (default 0.5)"
    ),
    cv: float | None = typer.Option(
        None,
        "--cv",
        help="seed-to-seed coefficient of variation of a per-seed positive quantity (slope rows; default 0.2)",
    ),
    bias: float | None = typer.Option(
        None, "--bias", help="RMS bias of the seed mean in seed sds at the smallest size (default 1)"
    ),
    band: float | None = typer.Option(None, "--band", help="a user band for every row instead of the derived one"),
    reps: int = typer.Option(1000, "--reps", help="simulated sweeps per case"),
    seed: int = typer.Option(0, "--seed", help="seed of the simulation"),
):
    """Power before data: for each row a sweep of this geometry gives, the probability that it comes out
    consistent when its prediction is true, when an alternative is true, and the seeds needed for power 0.8."""
    from dmft import power

    size_list = None if sizes is None else [float(x) for x in _int_list(sizes, "--sizes")]
    power.check_options(axis, size_list, seeds, reps, band)  # every given value checked before any work
    if source is None and (step is not None or quantity != "probe_outputs"):
        raise ValueError("--step and --quantity need --from (the dataset whose noise they select)")
    given = dict(entries=entries, rho_entries=rho_entries, rho_sizes=rho_sizes, cv=cv, bias=bias)
    power.resolve_noise(None, **given)
    if param is not None or source is None:
        from parametrizations.spec import get_preset

        try:
            p = get_preset(param or "mup", alpha_A=alpha_A, alpha_L=alpha_L)
        except ValueError as e:
            raise ValueError(f"--param: {e}") from None
    measured, attrs = None, {}
    if source is not None:
        from dmft.check import read_run_attrs
        from dmft.measure import sweep_axis, with_seed_dim
        from probes.experiment.config import check_data_path
        from probes.experiment.dataset import load

        check_data_path(str(source), "--from")
        ds = with_seed_dim(load(source))
        _has_config(ds, source)
        attrs = read_run_attrs(ds)
        ax = sweep_axis(ds)
        attrs.update(axis=ax, sizes=[float(x) for x in ds[ax].values], seeds=int(ds.sizes["seed"]))
        measured = power.noise_from(ds, quantity, step, cv if cv is not None else 0.2)
    noise = power.resolve_noise(measured, **given)
    axis = axis or attrs.get("axis", "N")
    size_list = size_list or attrs.get("sizes", [4.0, 8.0, 16.0, 32.0])
    seeds = seeds if seeds is not None else attrs.get("seeds", 6)
    if param is not None or source is None:
        a_A, a_L, standard, name = p.alpha_A, p.alpha_L, p.standard, p.name
    else:
        a_A = alpha_A if alpha_A is not None else attrs["alpha_A"]
        a_L = alpha_L if alpha_L is not None else attrs["alpha_L"]
        standard, name = attrs["standard"], attrs["name"]
    plans = power.plan(axis, size_list, seeds, noise, a_A, a_L, standard, reps=reps, seed=seed, band=band)
    typer.echo(
        f"plan: {name} (alpha_A {a_A:g}, alpha_L {a_L:g}) along {axis} = "
        f"{', '.join(f'{x:g}' for x in size_list)}, {seeds} seeds, {reps} simulated sweeps per case"
    )
    typer.echo(f"noise: {noise.text()}; band: {'user ' + format(band, 'g') if band is not None else 'local slopes'}")
    for line in power.lines(plans):
        typer.echo(line)


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


@app.command()
@user_errors
def variants(
    out: str | None = typer.Option(
        None,
        "--out",
        help="folder of the datasets (default runs/variants-seeds<seeds>, with "
        "--quick runs/variants-quick-seeds<seeds>); finished cells in "
        "it are kept",
    ),
    variant_list: str = typer.Option(
        "paper,openelm,ngpt,laurel,tokenformer", "--variants", help="comma-separated block variants"
    ),
    axes: str = typer.Option("N,H,L", "--axes", help="comma-separated swept sizes: N, H, L"),
    optimizers: str = typer.Option(
        "sgd,adam", "--optimizers", help="comma-separated: sgd (eta0 0.5), adam (eta0 0.05)"
    ),
    seeds: int | None = typer.Option(None, "--seeds", help="initialisation seeds per size (default 8)"),
    quick: bool = typer.Option(False, "--quick", help="3 sizes per axis, probes at steps 0, 1, 10 (a smoke test)"),
    markdown: Path | None = typer.Option(None, "--markdown", help="also write the table to this file"),
    ensemble: str | None = EnsembleOpt,
    executor: str = ExecutorOpt,
    workers: int | None = WorkersOpt,
    ray_address: str | None = RayAddressOpt,
    ray_cpus: int | None = RayCpusOpt,
):
    """The variant table: a coordinate check (sizes and feature updates, the logits included) of every block
    variant along N, H and L, for SGD and Adam, under mup; one dataset per cell in --out (resumable), then one
    verdict per cell from its rows: consistent, refuted, underpowered or not measured (docs: dmft/variant_verdicts.py)."""
    from dmft.variant_verdicts import variant_summary, variant_table_markdown
    from probes.experiment.dataset import load
    from probes.experiment.ensemble import resolve_mode
    from probes.experiment.out_paths import default_variants_folder
    from probes.grid.sweep import MAX_SEEDS
    from probes.grid.variant_runs import QUICK_GRID, VARIANT_GRID, VariantTableFailed, run_variant_table

    _check_env()
    ensemble = resolve_mode(ensemble)
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"--seeds must be >= 1 and <= {MAX_SEEDS}, got {seeds}")
    run_on = _Executor(executor, workers, ray_address, ray_cpus, None)
    _out_file(markdown, "--markdown")
    grid_seeds = seeds if seeds is not None else (QUICK_GRID if quick else VARIANT_GRID).seeds
    out = _out_folder(out, "--out") or default_variants_folder(quick, grid_seeds)
    echo = functools.partial(typer.echo, err=True)
    try:
        paths = run_variant_table(
            out,
            variants=_names(variant_list),
            axes=_names(axes),
            optimizers=_names(optimizers),
            seeds=seeds,
            quick=quick,
            executor=run_on.make,
            on_point=lambda m: echo(f"  {m}"),
            ensemble=ensemble,
            on_cell=echo,
        )
        failed = None
    except VariantTableFailed as e:
        paths, failed = e.paths, e
    verdicts = [variant_summary(load(p), str(p)) for p in paths.values()]
    table = variant_table_markdown(verdicts) if verdicts else ""
    typer.echo(table)
    if markdown is not None and verdicts:
        _write_atomic(markdown, lambda tmp: Path(tmp).write_text(table))
        typer.echo(f"markdown: {markdown}")
    typer.echo(f"datasets: {out}")
    if failed is not None:
        echo(f"error: {failed}")
        raise typer.Exit(1)


@app.command()
@user_errors
def plot(
    dataset: str = typer.Argument(..., help="a run or sweep dataset (.nc or .zarr)"),
    out: str | None = typer.Option(None, "--out", help="figure folder (default <dataset>-figures/ next to it)"),
    format: str = typer.Option("png", "--format", help="png or pdf"),
):
    """Write every figure that applies to a dataset (verdicts, kernels, losses, coord check, A density)."""
    fmt = format.lower()
    if fmt not in ("png", "pdf"):
        fail(f"--format must be png or pdf, got {format!r}")
    from probes.experiment.config import check_data_path, check_out_folder

    check_data_path(dataset, "DATASET")  # as typed: Path("") would read as "."
    dataset = Path(dataset)  # type: ignore[assignment]
    named = dataset if dataset.name else dataset.resolve()  # "." has no name
    out_dir = _out_folder(out, "--out") or named.with_name(
        f"{named.stem if named.suffix in ('.nc', '.zarr') else named.name}-figures"
    )
    check_out_folder(out_dir, "--out")
    import matplotlib

    matplotlib.use("Agg")
    from dmft.plots import plot_dataset
    from probes.experiment.dataset import load

    ds = load(dataset)
    _has_config(ds, dataset)
    try:
        paths = plot_dataset(ds, out_dir, fmt=fmt, note=lambda line: typer.echo(f"note: {line}"))
    except ValueError as e:
        raise ValueError(f"{dataset}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise ValueError(
            f"--out: cannot write the figures of {dataset} to {out_dir} ({e.strerror or type(e).__name__})"
        ) from None
    for path in paths:
        typer.echo(str(path))
    if not paths:
        typer.echo(f"note: no figure applies to {dataset}")


@app.command()
@user_errors
def bench(
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto (CUDA when present)"),
    sizes: str = typer.Option(
        "default,d256,vision-d32",
        "--sizes",
        help="comma-separated: default (LM, d_model 64), d256 (LM), vision-d32 (coord-check size)",
    ),
    steps: int = typer.Option(10, "--steps", help="training steps per timed measurement (1 to 10000)"),
    repeats: int = typer.Option(3, "--repeats", help="measurements per variant, median taken (1 to 100)"),
    ensemble: int = typer.Option(
        8, "--ensemble", help="seeds of the ensemble row (1 to 64, and they must fit in memory)"
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="torch intra-op threads, at most the CPUs this process may use (default: torch's)"
    ),
    quick: bool = typer.Option(False, "--quick", help="one tiny model (a smoke test; figures mean little)"),
):
    """Print the performance table: each figure a ratio of two variants measured side by side in this process
    (ensemble vs sequential seeds, ours vs plain PyTorch, probes on vs off, FLOP/s vs matmul peak, the time to
    verdict of one sweep size; on CUDA also the head-statistics and RMSNorm kernels and the bf16 MFU at d_model
    1024). Not a test: shared machines are noisy."""
    from bench.training import check_bench_options, format_table, run_bench
    from parametrizations.checks import ConfigError
    from probes.experiment.run import resolve_device

    try:
        resolve_device(device)
    except ConfigError as e:
        fail(f"--device {e.reason}")
    names = check_bench_options(tuple(sizes.split(",")), steps, repeats, ensemble, threads)
    rows = run_bench(
        device=device,
        sizes=names,
        steps=steps,
        repeats=repeats,
        ensemble=ensemble,
        echo=lambda m: typer.echo(m, err=True),
        quick=quick,
        threads=threads,
    )
    for line in format_table(rows):
        typer.echo(line)


def main() -> None:  # python cli.py ...
    app()


if __name__ == "__main__":
    main()
