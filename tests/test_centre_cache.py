"""centre="copy" through the cache of f(theta_0) (`probes.experiment.run.InitialOutputs`) trains bit for bit as the
frozen copy's forward at every step: the same training and held-out losses and the same final weights, for random
batches on digits, a full-batch run and a seed ensemble; and the cache is what runs (no forward of the copy)."""

from __future__ import annotations

import pytest
import torch

import probes.experiment.run as run_module
from probes.experiment.config import make_run_config


def config(task: str = "digits", **run):
    # batch_size 64 x 24 steps draws 1536 >= the 1500 digits of the training split: the split is cached
    return make_run_config(
        model={"N": 4, "H": 2, "L": 1, "task": task, "seq_len": 16},
        run={"steps": 24, "batch_size": 64, "heldout_batch": 16, **run},
        probes={"enabled": False},
    )


def runs(cfg, seeds, force_copy: bool, monkeypatch) -> tuple[list, int]:
    """The RunResults of cfg (one per seed; seeds None: a single run) with FORCE_COPY as given, and how many
    forwards of the frozen copy ran after the cache was built."""
    calls = [0]
    setup = run_module.setup

    def counting_setup(*args, **kwargs):
        out = setup(*args, **kwargs)
        out[3].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        return out

    built = run_module.initial_outputs

    def reset_after_cache(*args, **kwargs):
        out = built(*args, **kwargs)
        calls[0] = 0  # count the forwards of training and logging only
        return out

    monkeypatch.setattr(run_module, "setup", counting_setup)
    monkeypatch.setattr(run_module, "initial_outputs", reset_after_cache)
    monkeypatch.setattr(run_module, "FORCE_COPY", force_copy)
    res = run_module.train(cfg) if seeds is None else run_module.train_ensemble(cfg, seeds)
    return (res if seeds is not None else [res]), calls[0]


@pytest.mark.parametrize(
    "run, seeds",
    [
        ({}, None),  # random batches over the whole digits training split
        ({"train_size": 24, "batch": "full"}, None),  # full batch on a fixed subset
        ({"train_size": 100}, [0, 1, 2]),  # a seed ensemble on random batches of a subset
        ({"task": "lm", "steps": 6, "batch_size": 4}, [0, 1]),  # the token stream: the held-out batch alone cached
    ],
    ids=["digits-random", "full-batch", "ensemble", "lm-ensemble"],
)
def test_the_cache_trains_bit_for_bit_as_the_frozen_copy(run, seeds, monkeypatch):
    cfg = config(**run)
    copied, copy_calls = runs(cfg, seeds, True, monkeypatch)
    cached, cache_calls = runs(cfg, seeds, False, monkeypatch)
    log_steps = len(cfg.probes.steps(cfg.steps))
    assert copy_calls == cfg.steps + log_steps  # the copy: one forward per step and per log step
    assert cache_calls == (cfg.steps if cfg.model.task == "lm" else 0)  # the cache: none (the LM: every step)
    for a, b in zip(copied, cached, strict=True):
        assert a.status == b.status == "ok"
        assert torch.equal(torch.tensor(a.train_loss), torch.tensor(b.train_loss))
        assert torch.equal(torch.tensor(a.heldout_loss), torch.tensor(b.heldout_loss))
        for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
            assert torch.equal(p, q), name


def test_a_split_larger_than_the_run_draws_is_not_cached(monkeypatch):
    cfg = config(steps=4)  # 4 x 64 = 256 draws < 1500 digits: the frozen copy runs every step
    _, calls = runs(cfg, None, False, monkeypatch)
    assert calls == cfg.steps  # the held-out batch stays cached; the training batches go through the copy
    assert not run_module.caches_training_split(cfg, [0] * 10)  # not an image split: never cached


def test_the_batch_stream_names_the_positions_of_each_batch():
    from probes.experiment.batches import BatchStream
    from probes.experiment.data import load_task

    split = load_task("digits", None, patch=2).train
    stream = BatchStream(split, 8, torch.Generator().manual_seed(3), "cpu", chunk=3)
    for _ in range(7):  # across chunk refills
        x, y = stream.next()
        x_at, y_at = split.at(stream.index.numpy())
        assert torch.equal(x, x_at) and torch.equal(y, y_at)
