"""dmft-probe command line: parse, call, print. Bad input -> one line on stderr and exit status 2."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

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
            raise SystemExit(0)
        except UsageError as e:
            typer.echo(f"error: {e.format_message().splitlines()[0]}", err=True)
            raise SystemExit(2)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise SystemExit(130)
        raise SystemExit(code if isinstance(code, int) else 0)


app = App(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
          help="Probe infinite-width, -head and -depth limits of transformers against DMFT predictions.")


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


# Shared options (model, parametrization, optimizer) of run and describe.
AxisOpt = typer.Option(None, "--axis", help="the scaling axis that --scale sets: N, H or L [default: N]")
ScaleOpt = typer.Option(None, "--scale", help="value of the scaling axis (N, H or L)")
NOpt = typer.Option(None, "--N", help="key/query dimension per head [default: 16]")
HOpt = typer.Option(None, "--H", help="heads of a full-width layer [default: 4]")
LOpt = typer.Option(None, "--L", help="depth, number of blocks [default: 2]")
DOpt = typer.Option(None, "--d-model", help="residual width; must equal N*H (a check)")
ParamOpt = typer.Option(None, "--param", help="parametrization preset: mup, mup-sqrt, depth-sqrt, sp [default: mup]")
OptimOpt = typer.Option(None, "--optimizer", help="sgd, sgd-momentum, adam, adamw [default: adam]")
Eta0Opt = typer.Option(None, "--eta0", help="base learning rate before the Table 1 rule [default: 0.05]")
Gamma0Opt = typer.Option(None, "--gamma0", help="feature-learning strength gamma0 [default: 1]")
Beta0Opt = typer.Option(None, "--beta0", help="residual branch constant beta0 [default: 1]")
TaskOpt = typer.Option(None, "--task", help="lm (byte-level stdlib corpus or a token .bin) or vision [default: lm]")
LwsOpt = typer.Option(None, "--lws", help="layer-wise profile: isotropic, openelm, vanilla, framed, reverse, crown")
SeqOpt = typer.Option(None, "--seq-len", help="tokens per LM sample [default: 64]")
ConfigOpt = typer.Option(None, "--config", help="TOML or JSON config file; command-line options override it")


def _config(config, scale, axis, N, H, L, d_model, param, optimizer, eta0, gamma0, beta0, task, lws, seq_len, run=None,
            probes=None):
    from probes.config import make_run_config

    return make_run_config(
        config, scale=scale,
        model={"axis": axis, "N": N, "H": H, "L": L, "d_model": d_model, "task": task, "lws": lws, "seq_len": seq_len},
        param={"preset": param, "gamma0": gamma0, "beta0": beta0},
        optim={"name": optimizer, "eta0": eta0}, run=run, probes=probes)


@app.command()
@user_errors
def run(
    scale: Optional[int] = ScaleOpt, axis: Optional[str] = AxisOpt,
    N: Optional[int] = NOpt, H: Optional[int] = HOpt, L: Optional[int] = LOpt, d_model: Optional[int] = DOpt,
    param: Optional[str] = ParamOpt, optimizer: Optional[str] = OptimOpt, eta0: Optional[float] = Eta0Opt,
    gamma0: Optional[float] = Gamma0Opt, beta0: Optional[float] = Beta0Opt, task: Optional[str] = TaskOpt,
    lws: Optional[str] = LwsOpt, seq_len: Optional[int] = SeqOpt,
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps [default: 200]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="samples per step [default: 32]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="initialisation seed [default: 0]"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto [default: cpu]"),
    data: Optional[str] = typer.Option(None, "--data", help="local data: CIFAR-10 folder, CIFAR-5M .npz, or token .bin"),
    probe_every: Optional[int] = typer.Option(None, "--probe-every", help="probe (and held-out loss) every k steps [default: 10]"),
    probe_log: Optional[int] = typer.Option(None, "--probe-log", help="instead, probe at this many log-spaced steps"),
    probe_samples: Optional[int] = typer.Option(None, "--probe-samples", help="probe batch size [default: 32]"),
    probes: bool = typer.Option(True, "--probes/--no-probes", help="record kernels, attention and weight movement"),
    out: Optional[Path] = typer.Option(None, "--out", help="dataset file (.nc or .zarr) [default: runs/<name>.nc]"),
    config: Optional[str] = ConfigOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
):
    """Train one model at --scale on --axis and write its dataset."""
    from probes.dataset import run_dataset, save
    from probes.outputs import default_out_path, prepare_out_path
    from probes.run import train
    from probes.summary import summary_lines

    cfg = _config(config, scale, axis, N, H, L, d_model, param, optimizer, eta0, gamma0, beta0, task, lws, seq_len,
                  run={"steps": steps, "batch_size": batch_size, "seed": seed, "device": device,
                       "data_path": data},
                  probes={"every": probe_every, "n_log": probe_log, "n_samples": probe_samples,
                          "schedule": "log" if probe_log else None, "enabled": None if probes else False})
    if data is not None and not Path(data).exists():
        fail(f"--data: no such file or folder {data}")
    out_path = prepare_out_path(out or default_out_path(cfg))
    m = cfg.model
    typer.echo(f"{cfg.param.name} {cfg.optim.name} {m.task}: N={m.N} H={m.H} L={m.L} (axis {m.axis}), "
               f"{cfg.steps} steps on {cfg.device}", err=True)
    result = train(cfg, progress=progress)
    ds = run_dataset(result)
    save(ds, out_path)
    if result.status != "ok":
        typer.echo(f"run diverged at step {result.diverged_at} (loss not finite); dataset written to {out_path}", err=True)
        raise typer.Exit(1)
    for line in summary_lines(ds):
        typer.echo(line)
    typer.echo(f"dataset: {out_path}")


@app.command()
@user_errors
def describe(
    scale: Optional[int] = ScaleOpt, axis: Optional[str] = AxisOpt,
    N: Optional[int] = NOpt, H: Optional[int] = HOpt, L: Optional[int] = LOpt, d_model: Optional[int] = DOpt,
    param: Optional[str] = ParamOpt, optimizer: Optional[str] = OptimOpt, eta0: Optional[float] = Eta0Opt,
    gamma0: Optional[float] = Gamma0Opt, beta0: Optional[float] = Beta0Opt, task: Optional[str] = TaskOpt,
    lws: Optional[str] = LwsOpt, seq_len: Optional[int] = SeqOpt, config: Optional[str] = ConfigOpt,
):
    """Print every parameter's role, shape, init std, forward multiplier, lr multiplier and eps multiplier."""
    from rich.console import Console
    from rich.table import Table

    from parametrizations.describe import describe as rows_of, header
    from parametrizations.transformer import LWSTransformer

    cfg = _config(config, scale, axis, N, H, L, d_model, param, optimizer, eta0, gamma0, beta0, task, lws, seq_len)
    model = LWSTransformer(cfg.model, cfg.param, cfg.optim.name)
    console = Console(width=160)
    for line in header(model, cfg.param, cfg.optim):
        console.print(line, highlight=False)
    table = Table("parameter", "role", "shape", "init std", "fwd mult", "lr", "lr mult", "eps mult", "eps")
    for r in rows_of(model, cfg.param, cfg.optim):
        table.add_row(r.name, r.role, "x".join(map(str, r.shape)), f"{r.init_std:.4g}", f"{r.mult:.4g}",
                      f"{r.lr:.4g}", f"{r.lr_mult:.4g}", "-" if r.eps_mult is None else f"{r.eps_mult:.4g}",
                      "-" if r.eps is None else f"{r.eps:.3g}")
    console.print(table)


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} must be a comma-separated list of integers, got {text!r}") from None


@app.command()
@user_errors
def sweep(
    axis: str = typer.Option("N", "--axis", help="the swept size: N, H or L"),
    values: str = typer.Option(..., "--values", help="comma-separated sizes, at least 3, e.g. 4,8,16,32"),
    seeds: int = typer.Option(4, "--seeds", help="initialisation seeds per size"),
    init_only: bool = typer.Option(False, "--init-only", help="no training: probes at initialisation only (seconds)"),
    N: Optional[int] = NOpt, H: Optional[int] = HOpt, L: Optional[int] = LOpt,
    param: Optional[str] = ParamOpt, optimizer: Optional[str] = OptimOpt, eta0: Optional[float] = Eta0Opt,
    gamma0: Optional[float] = Gamma0Opt, beta0: Optional[float] = Beta0Opt, task: Optional[str] = TaskOpt,
    lws: Optional[str] = LwsOpt, seq_len: Optional[int] = SeqOpt,
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps per run [default: 200]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="samples per step [default: 32]"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto [default: cpu]"),
    data: Optional[str] = typer.Option(None, "--data", help="local data file or folder"),
    probe_every: Optional[int] = typer.Option(None, "--probe-every", help="probe every k steps [default: 10]"),
    out: Optional[Path] = typer.Option(None, "--out", help="merged dataset [default: runs/sweep-<param>-<axis>.nc]"),
    config: Optional[str] = ConfigOpt,
):
    """Run a grid along --axis (and seeds) on this machine; resumable; writes one merged dataset."""
    from probes.outputs import prepare_out_path
    from probes.sweep import run_sweep

    sizes = _int_list(values, "--values")
    cfg = _config(config, None, axis, N, H, L, None, param, optimizer, eta0, gamma0, beta0, task, lws, seq_len,
                  run={"steps": steps, "batch_size": batch_size, "device": device, "data_path": data},
                  probes={"every": probe_every})
    if data is not None and not Path(data).exists():
        fail(f"--data: no such file or folder {data}")
    out_path = prepare_out_path(out or Path("runs") / f"sweep-{cfg.param.name}-{cfg.optim.name}-{axis}{'-init' if init_only else ''}.nc")
    typer.echo(f"sweep {axis} in {sizes} x {seeds} seeds, {cfg.param.name}/{cfg.optim.name}"
               f"{' at initialisation' if init_only else f', {cfg.steps} steps'}; parts in {out_path}.parts/", err=True)
    run_sweep(cfg, axis, sizes, seeds, out_path, init_only=init_only, on_point=lambda m: typer.echo(m, err=True))
    typer.echo(f"dataset: {out_path}")


@app.command()
@user_errors
def check(
    dataset: Path = typer.Argument(..., help="a sweep dataset written by `dmft-probe sweep`"),
    csv: Optional[Path] = typer.Option(None, "--csv", help="also write the verdict table as CSV"),
    nc: Optional[Path] = typer.Option(None, "--nc", help="also write the verdict table as netCDF"),
    mc_heads: int = typer.Option(8192, "--mc-heads", help="Monte Carlo heads of the H -> oo solver (P4)"),
):
    """Print the verdict table: predicted vs measured exponents with 95% bootstrap intervals."""
    from dmft.check import check as run_check, verdict_dataset, verdict_lines
    from probes.dataset import load

    verdicts = run_check(load(dataset), n_heads_mc=mc_heads)
    for line in verdict_lines(verdicts):
        typer.echo(line)
    table = verdict_dataset(verdicts)
    if csv is not None:
        table.to_dataframe().to_csv(csv, index=False)
        typer.echo(f"csv: {csv}")
    if nc is not None:
        table.to_netcdf(nc, engine="h5netcdf")
        typer.echo(f"netcdf: {nc}")
    n_bad = sum(not v.consistent for v in verdicts)
    typer.echo(f"{len(verdicts) - n_bad} of {len(verdicts)} predictions consistent")


@app.command()
@user_errors
def plot(
    dataset: Path = typer.Argument(..., help="a run or sweep dataset (.nc or .zarr)"),
    out: Optional[Path] = typer.Option(None, "--out", help="figure folder [default: <dataset>-figures/ next to it]"),
    format: str = typer.Option("png", "--format", help="png or pdf"),
):
    """Write every figure that applies to a dataset (verdicts, kernels, losses, coord check, A density)."""
    fmt = format.lower()
    if fmt not in ("png", "pdf"):
        fail(f"--format must be png or pdf, got {format!r}")
    if not dataset.exists():
        fail(f"{dataset}: no such file")
    import matplotlib

    matplotlib.use("Agg")
    from dmft.plots import plot_dataset
    from probes.dataset import load

    ds = load(dataset)
    out_dir = out or dataset.with_name(f"{dataset.stem if dataset.suffix in ('.nc', '.zarr') else dataset.name}-figures")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out: {out_dir} exists and is not a folder")
    for path in plot_dataset(ds, out_dir, fmt=fmt):
        typer.echo(str(path))


def main() -> None:  # python cli.py ...
    app()


if __name__ == "__main__":
    main()
