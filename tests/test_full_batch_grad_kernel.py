"""The residual-stream gradient kernel of full-batch runs (probes.hooks.grad_kernel, dataset variable kernel_grad):
kernel_grad[t, l, mu, nu] = ebar_l(mu) . ebar_l(nu) / d, ebar_l(mu) = -gamma0 d sum_s dLoss/dh_l(mu, s), taken
from the training step's own backward. Checked against autograd on a model rebuilt from the seed (step 0) and on
a separate run trained the same number of steps (a later step); absent from every other run."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parametrizations.optim import OptimConfig
from parametrizations.spec import get_preset
from parametrizations.transformer import ModelConfig, build_model
from probes.experiment.data import load_task
from probes.experiment.dataset import FULL_BATCH_VARS, load, run_dataset, save, validate
from probes.experiment.run import RunConfig, train, train_ensemble
from probes.hooks.recorder import ProbeConfig

SEEDS = [0, 1]
GAMMA0 = 2.0  # not 1, so that a lost gamma0 factor shows
P, STEPS = 6, 3


def full_batch_config(**run) -> RunConfig:
    """digits in 4x4 patches (S = 4 tokens, so a mean over tokens differs from the sum), d = 32, L = 2, SGD."""
    return RunConfig(
        model=ModelConfig(N=16, H=2, L=2, task="digits"),
        param=get_preset("mup", gamma0=GAMMA0),
        optim=OptimConfig(name="sgd", eta0=0.5),
        steps=STEPS,
        patch=4,
        train_size=P,
        batch="full",
        heldout_batch=4,
        probes=ProbeConfig(every=1),
        **run,
    )


@pytest.fixture(scope="module")
def ensemble():
    return train_ensemble(full_batch_config(), SEEDS)


def training_set(cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The P training digits of the run (the fixed subset chosen by data_seed), (x (P, S, D_in), y (P,))."""
    task = load_task(cfg.model.task, cfg.data_path, seq_len=cfg.model.seq_len, patch=cfg.patch, seed=cfg.data_seed)
    return task.train.fixed(cfg.train_size, seed=cfg.data_seed)


def kernels_by_autograd(model, model0, x: torch.Tensor, y: torch.Tensor, gamma0: float) -> np.ndarray:
    """The definition by hand, (L+1, P, P): the stream states h_0..h_L of a forward through embed_tokens and the
    blocks, the paper block's head (LN without affine, mean over tokens, readout), Loss = mean cross-entropy of
    f - f(theta_0), dLoss/dh_l by torch.autograd.grad, e = -gamma0 d dLoss/dh summed over tokens, e.e'/d."""
    d = model.cfg.d_model
    h = model.embed_tokens(x)
    hs = [h]
    for blk in model.blocks:
        h = blk(h)
        hs.append(h)
    f = model.readout(F.layer_norm(h, (d,), eps=1e-6).mean(1))  # (P, C)
    with torch.no_grad():
        torch.testing.assert_close(f, model(x), rtol=0, atol=1e-6)  # the same function the run trains
        f0 = model0(x)
    loss = F.cross_entropy(f - f0, y)
    out = []
    for g in torch.autograd.grad(loss, hs):  # L+1 x (P, S, d)
        ebar = (-gamma0 * d * g).sum(1)  # (P, d)
        out.append((ebar @ ebar.T / d).numpy())
    return np.stack(out)


def assert_kernels_close(run: np.ndarray, ref: np.ndarray, rel: float) -> None:
    """Entrywise agreement to `rel` times the largest entry of the reference."""
    np.testing.assert_allclose(run, ref, rtol=rel, atol=rel * np.abs(ref).max())


def test_full_batch_run_records_the_gradient_kernel(ensemble, tmp_path):
    """Every member has kernel_grad (train_step, depth, P, P), finite, symmetric and PSD per (step, depth); the
    dataset carries it with the documented dims, long name and units, passes the schema check and round-trips."""
    L = ensemble[0].config.model.L
    for r in ensemble:
        k = r.extra["full_batch"]["kernel_grad"]
        assert k.shape == (STEPS, L + 1, P, P) and k.dtype == np.float32 and np.isfinite(k).all()
        scale = np.abs(k).max(axis=(-1, -2), keepdims=True)  # (T, L+1, 1, 1)
        np.testing.assert_allclose(k, np.swapaxes(k, -1, -2), rtol=0, atol=1e-6 * scale.max())
        eig = np.linalg.eigvalsh(0.5 * (k + np.swapaxes(k, -1, -2)).astype(np.float64))  # (T, L+1, P)
        assert (eig >= -1e-6 * scale[..., 0]).all()
        assert (np.diagonal(k, axis1=-2, axis2=-1) > 0).all()
    a, b = (r.extra["full_batch"]["kernel_grad"] for r in ensemble)
    assert not np.allclose(a, b)  # each member its own
    ds = validate(run_dataset(ensemble[0]))
    dims, long_name, units = FULL_BATCH_VARS["kernel_grad"]
    assert ds.kernel_grad.dims == dims == ("train_step", "depth", "sample", "sample_")
    assert ds.kernel_grad.attrs["long_name"] == long_name and ds.kernel_grad.attrs["units"] == units == "1"
    assert long_name == (
        "residual-stream gradient kernel over the training samples, e.e'/d with e = -gamma0 d "
        "dLoss/dh summed over tokens"
    )
    assert ds.sizes["train_step"] == STEPS and list(ds.depth.values) == list(range(L + 1))
    back = load(save(ds, tmp_path / "run.nc"))
    np.testing.assert_array_equal(back.kernel_grad.values, ensemble[0].extra["full_batch"]["kernel_grad"])


def test_gradient_kernel_equals_autograd_at_the_first_and_a_later_step(ensemble):
    """Step 0: each member's kernel_grad[0] against the definition computed by autograd on the model rebuilt from
    its seed (the same initial weights). Step 2: member 1's kernel_grad[2] against the definition on the weights of
    a separate (non-ensemble) run of its seed trained 2 steps, whose own kernel_grad must agree with the
    ensemble's first 2 steps. Tolerances: float32 round-off only (measured: about 1e-7 of the largest entry) --
    1e-5 of the largest entry at step 0 (the run and the reference sum the same products in another order,
    batched over members in the run); 1e-4 at step 2, where the two trainings' weights already differ by
    round-off (bmm over members against mm)."""
    cfg = ensemble[0].config  # the resolved config (digits sizes)
    x, y = training_set(cfg)
    for seed, r in zip(SEEDS, ensemble):
        model = build_model(cfg.model, cfg.param, cfg.optim.name, seed, io_seed=seed)
        model0 = build_model(cfg.model, cfg.param, cfg.optim.name, seed, io_seed=seed).requires_grad_(False)
        ref = kernels_by_autograd(model, model0, x, y, cfg.param.gamma0)
        assert_kernels_close(r.extra["full_batch"]["kernel_grad"][0], ref, 1e-5)
    seed = SEEDS[1]
    single = train(replace(full_batch_config(), seed=seed, steps=2))
    model0 = build_model(cfg.model, cfg.param, cfg.optim.name, seed, io_seed=seed).requires_grad_(False)
    ref = kernels_by_autograd(single.model, model0, x, y, cfg.param.gamma0)
    assert_kernels_close(ensemble[1].extra["full_batch"]["kernel_grad"][2], ref, 1e-4)
    assert_kernels_close(
        single.extra["full_batch"]["kernel_grad"], ensemble[1].extra["full_batch"]["kernel_grad"][:2], 1e-4
    )


def test_only_full_batch_runs_with_probes_record_it():
    """A run on random batches has no kernel_grad (nor any full-batch variable); neither has a full-batch run
    without probes (kernel_grad lies along the probe samples and depths)."""
    random = train(replace(full_batch_config(), batch="random", batch_size=4, steps=2))
    assert "full_batch" not in random.extra
    ds = run_dataset(random)
    assert "kernel_grad" not in ds and not set(FULL_BATCH_VARS) & set(ds.data_vars)
    bare = train(replace(full_batch_config(), steps=2, probes=ProbeConfig(enabled=False)))
    assert "kernel_grad" not in bare.extra["full_batch"] and "kernel_grad" not in run_dataset(bare)
