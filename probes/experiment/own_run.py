"""One probed training run of your own model, put under the parametrization (docs/own-model.md).

`train_own_model(cfg, build)` is `probes.experiment.run.train` for a model you write: `build(model_cfg)` returns
(your nn.Module, its roles) for the run's sizes (a `ModelConfig` with N, H, L and the task's seq_len, d_in,
vocab_size, n_classes); `parametrizations.own_model.apply_parametrization` puts it under cfg.param for cfg.optim;
it trains on the same task, batches, held-out batch, centred loss and optimizer rules as the built-in model, and
the probe recorder (`probes.hooks.recorder`) sees it through `CoordView`: forward hooks read the outputs of the
marked q, k, v, o, mlp_in, mlp_out matrices and of the blocks, so the run's dataset (`probes.experiment.dataset.
run_dataset`) holds the coordinate-check variables of a built-in run under the same names. Random batches only
(no seed ensembles, full batch, torch.compile or reduced precision).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace

import torch
from torch import nn

from parametrizations.lws import LayerShapes
from parametrizations.optim import global_lr
from parametrizations.own_model import OwnModel, apply_parametrization
from parametrizations.transformer import ModelConfig
from probes.experiment.batches import BatchStream
from probes.experiment.data import load_task
from probes.experiment.run import (
    RunConfig,
    RunResult,
    loss_of,
    matmul_precision,
    model_config_for_task,
    nonfinite_probes,
    resolve_device,
    training_split,
)
from probes.hooks.recorder import ProbeRecorder

# the coordinate-check site of each block matrix's output (the built-in model's taps)
SITE_OF = {"q": "q", "k": "k", "v": "v", "o": "attn_out", "mlp_in": "mlp_hidden", "mlp_out": "mlp_out"}
Build = Callable[[ModelConfig], "tuple[nn.Module, dict[str, str]]"]


class CoordView:
    """What the probe recorder reads of a model (the built-in model's face): cfg, shapes, blocks' attention scales,
    `embed_tokens(x)` (h^0, the first block's input), `__call__(x, taps)` (logits, and per block the outputs of
    the marked q, k (split into heads (..., H, S, N)), v, o, mlp_in, mlp_out and the block's output h) and
    `named_parameters()` under the built-in names (blocks.l.q.weight, embed.weight, ...). model: the OwnModel's
    module or a deep copy of it (the frozen initial model)."""

    ensemble = None

    def __init__(self, own: OwnModel, model: nn.Module, cfg: ModelConfig):
        self.own, self.module, self.cfg, self.p = own, model, cfg, own.p
        if not own.blocks:
            raise ValueError("roles: the coordinate check needs the residual blocks marked 'block'")
        self.sites: list[dict[str, str]] = [{} for _ in own.blocks]
        self.names: dict[str, nn.Parameter] = {}
        for r in own.rules:
            if r.block >= 0 and r.rule in SITE_OF:
                self.sites[r.block][r.rule] = r.module
                self.names[f"blocks.{r.block}.{r.rule}.weight"] = own.stored(r, model)
            elif r.block < 0 and r.rule in ("embed", "pos", "readout"):
                self.names.setdefault(f"{r.rule}.weight", own.stored(r, model))
        for i, s in enumerate(self.sites):
            missing = [w for w in SITE_OF if w not in s]
            if missing:
                raise ValueError(
                    f"roles: the coordinate check needs block {own.blocks[i]!r}'s matrices marked "
                    f"q, k, v, o, mlp_in, mlp_out; none is marked {', '.join(missing)}"
                )
        N = own.N
        heads = tuple(own.stored(r, model).shape[0] // N for r in own.rules if r.rule == "q" and r.block >= 0)
        d_ff = tuple(own.stored(r, model).shape[0] for r in own.rules if r.rule == "mlp_in" and r.block >= 0)
        self.shapes = LayerShapes(heads, d_ff, N, own.d)
        self.blocks = [SimpleNamespace(attn_scale=own.attn_scale, N=N, causal=cfg.task == "lm") for _ in own.blocks]

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The stored w of the marked matrices under the built-in model's names."""
        yield from self.names.items()

    def _run(self, x: torch.Tensor, taps: list | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, h^0) of x; with `taps`, one dict per block appended (the recorder's taps)."""
        caught: list[dict[str, torch.Tensor]] = [{} for _ in self.own.blocks]
        h0: list[torch.Tensor] = []
        handles = []
        N = self.own.N

        def keep(i: int, site: str) -> Callable:
            def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
                if site in ("q", "k"):
                    out = out.view(*out.shape[:-1], -1, N).transpose(-3, -2)  # (..., H, S, N)
                caught[i][site] = out

            return hook

        try:
            for i, name in enumerate(self.own.blocks):
                block = self.module.get_submodule(name)
                if i == 0:
                    handles.append(block.register_forward_pre_hook(lambda m, args: h0.append(args[0])))
                handles.append(block.register_forward_hook(keep(i, "h")))
                for rule, module in self.sites[i].items():
                    handles.append(self.module.get_submodule(module).register_forward_hook(keep(i, SITE_OF[rule])))
            logits = self.module(x)
        finally:
            for h in handles:
                h.remove()
        if taps is not None:
            taps.extend(caught)
        return logits, h0[0]

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """h^0 (B, S, d): the input of the first block."""
        return self._run(x, None)[1]

    def __call__(self, x: torch.Tensor, taps: list | None = None, attention_maps: bool = False) -> torch.Tensor:
        return self._run(x, taps)[0]


def train_own_model(cfg: RunConfig, build: Build) -> RunResult:
    """Train your model (module docstring) under cfg.param for cfg.optim.steps steps, with the probes of cfg.probes;
    returns a RunResult whose `model` is the run's CoordView (extra["own_model"]: the OwnModel, extra["recorder"]: the
    probes), ready for `probes.experiment.dataset.run_dataset`. A NaN/inf training or held-out loss or probe stops the
    run with status "diverged". ValueError naming the setting for a full-batch, compiled or reduced-precision run."""
    for key, ok in (
        ("batch", not cfg.full_batch),
        ("compile", not cfg.compile),
        ("precision", cfg.precision == "fp32"),
    ):
        if not ok:
            raise ValueError(f"{key}: your own model trains with random batches, eagerly, in fp32 only")
    torch.manual_seed(cfg.seed)
    task = load_task(cfg.model.task, cfg.data_path, seq_len=cfg.model.seq_len, patch=cfg.patch, seed=cfg.data_seed)
    cfg = replace(cfg, model=model_config_for_task(cfg.model, task))
    device = resolve_device(cfg.device)
    module, roles = build(cfg.model)
    m = cfg.model
    own = apply_parametrization(
        module,
        roles,
        N=m.N,
        H=m.H,
        L=m.L,
        preset=cfg.param,
        optimizer=cfg.optim.name,
        seed=cfg.seed,
        io_seed=cfg.io_seed,
    )
    model = own.model.to(device)
    model0 = copy.deepcopy(model).requires_grad_(False).eval() if cfg.param.centre == "copy" else None
    view = CoordView(own, model, m)
    opt = own.build_optimizer(cfg.optim)
    lr = global_lr(cfg.param, cfg.optim, m.d_model, m.L)
    batches = BatchStream(
        training_split(cfg, task),
        cfg.batch_size,
        torch.Generator().manual_seed(cfg.data_seed + 1),
        device,
        chunk=max(1, min(256, cfg.steps)),
    )
    xh, yh = (t.to(device) for t in task.heldout.fixed(cfg.heldout_batch, seed=cfg.data_seed))
    recorder = None
    if cfg.probes.enabled:
        x_probe = task.heldout.fixed(cfg.probes.n_samples, seed=cfg.probes.seed)[0].to(device)
        recorder = ProbeRecorder(
            view,
            x_probe,
            cfg.probes,  # type: ignore[arg-type]
            CoordView(own, model0, m) if model0 is not None else None,
        )  # type: ignore[arg-type]
    log_at = set(cfg.probes.steps(cfg.steps))

    def centred(x: torch.Tensor) -> torch.Tensor:
        f = model(x)
        if model0 is not None:
            with torch.no_grad():
                f0 = model0(x)
            f = f - f0
        return f

    train_loss: list[float] = []
    log_steps: list[int] = []
    heldout: list[float] = []
    gnorms: list[float] = []
    status, diverged_at, diverged_on = "ok", None, ""
    t0 = time.perf_counter()

    def log(step: int, gnorm: float) -> bool:
        """Held-out loss and probes at log step `step`; False (and the run diverged) when one is NaN/inf."""
        nonlocal status, diverged_at, diverged_on
        with torch.no_grad():
            hl = float(loss_of(centred(xh), yh, cfg.loss, None))
        why = "" if math.isfinite(hl) else "held-out loss"
        if not why and recorder is not None:
            recorder.record(step, view)  # type: ignore[arg-type]
            bad = nonfinite_probes(recorder.records[-1], recorder.heads, cfg.param.centre)[0]
            if bad:
                recorder.steps.pop()
                recorder.records.pop()
                why = "probes (" + ", ".join(bad) + ")"
        if why:
            status, diverged_at, diverged_on = "diverged", step, why
            return False
        log_steps.append(step)
        heldout.append(hl)
        gnorms.append(gnorm)
        return True

    with matmul_precision("fp32", device):
        ok = log(0, 0.0)
        for step in range(cfg.steps if ok else 0):
            x, y = batches.next()
            loss = loss_of(centred(x), y, cfg.loss, None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = 0.0
            if step + 1 in log_at:
                gnorm = float(
                    torch.stack([p.grad.detach().pow(2).sum() for p in model.parameters() if p.grad is not None])
                    .sum()
                    .sqrt()
                )
            opt.step()
            train_loss.append(float(loss.detach()))
            if not math.isfinite(train_loss[-1]):
                status, diverged_at, diverged_on = "diverged", step, "training loss"
                break
            if step + 1 in log_at and not log(step + 1, gnorm):
                break
    steps_done = log_steps[-1] if log_steps else 0
    extra = {"recorder": recorder, "own_model": own, "ensemble": 0, "diverged_on": diverged_on}
    return RunResult(
        cfg,
        status,
        steps_done,
        train_loss,
        log_steps,
        heldout,
        gnorms,
        lr,
        time.perf_counter() - t0,
        view,
        diverged_at,
        extra=extra,
    )  # type: ignore[arg-type]
