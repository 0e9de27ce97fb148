"""The one memory model counts the model's real parameters: `parametrizations.counts.parameter_count` against
sum(p.numel()) of built models (GeLU, SwiGLU, Pattention MLPs; GQA; tied readouts; nGPT and LAUREL vectors), and the
two estimates built on it (`memory.member_bytes`, `config.memory_parts(what="model")`) carry exactly those weights."""

from dataclasses import replace

import pytest

from parametrizations.counts import parameter_count
from parametrizations.spec import get_preset
from parametrizations.transformer import LWSTransformer, ModelConfig
from parametrizations.variants import MODEL_PRESETS
from probes.experiment.config import make_run_config, memory_parts
from probes.experiment.memory import FLOAT, free_bytes, member_bytes

CASES = {
    "paper-gelu-lm": {},
    "paper-gelu-vision": {"task": "vision"},
    "paper-swiglu": {"mlp": "swiglu"},
    "openelm": {"variant": "openelm", "H": 4},
    "openelm-vision": {"variant": "openelm", "task": "vision", "H": 4},
    "openelm-profile": {"lws": "openelm", "H": 8},
    "openelm-small": MODEL_PRESETS["openelm-small"],
    "ngpt": {"variant": "ngpt"},
    "laurel": {"variant": "laurel"},
    "laurel-lr": {"variant": "laurel", "laurel": "lr"},
    "tokenformer": {"variant": "tokenformer"},
    "rms-qknorm-gqa": {"norm": "rms", "qk_norm": True, "kv_group": 2},
}


def numel(cfg: ModelConfig) -> int:
    return sum(p.numel() for p in LWSTransformer(cfg, get_preset("mup"), "adam").parameters())


@pytest.mark.parametrize("fields", CASES.values(), ids=CASES.keys())
def test_parameter_count_is_the_models(fields):
    cfg = ModelConfig(**fields)
    assert parameter_count(cfg) == numel(cfg)


def test_swiglu_has_3_d_f_mlp_weights_and_gelu_2():
    d, f = 64, 64  # the default model: d = N*H = 64, d_ff = d
    gelu, swiglu = ModelConfig(), ModelConfig(mlp="swiglu")
    assert numel(swiglu) - numel(gelu) == 2 * d * f  # 3 d f against 2 d f in each of the 2 blocks
    assert parameter_count(swiglu) - parameter_count(gelu) == 2 * d * f


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_the_memory_estimates_carry_the_models_weights(mlp):
    # the sizes of the bundled vision set (16x16 images, patch 4: 16 tokens of 48 features), which memory_parts uses
    cfg = make_run_config(
        None, model={"N": 4, "H": 2, "L": 2, "task": "vision", "seq_len": 16}, probes={"enabled": False}
    )
    cfg = replace(cfg, model=replace(cfg.model, mlp=mlp))
    n = numel(cfg.model)
    one, two = member_bytes(replace(cfg, batch_size=1)), member_bytes(replace(cfg, batch_size=2))
    # W, grad, Adam's m and v, W(0), and the cached f(theta_0) on the held-out batch; the rest grows with B
    assert 2 * one - two == 5 * FLOAT * n + FLOAT * cfg.heldout_batch * cfg.model.n_classes
    assert memory_parts(cfg, what="model")["weights"][0] == FLOAT * n


def test_free_bytes_reads_the_hosts_memory():
    have = free_bytes("cpu")
    assert isinstance(have, int) and have > 0
