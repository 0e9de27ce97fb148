"""Your own model under the parametrization (`parametrizations.own_model`, `dmft.own_coord`; docs/own-model.md).

The user's model here is a plain nn.Module written in this file with the built-in model's architecture (the paper's
pre-LN block on the vision task: patch embedding, learned positions, LN without affine, MHSA, GELU MLP, mean-pooled
readout) and no parametrization of its own: nn.Linear, nn.Embedding and F.scaled_dot_product_attention with the
standard 1/sqrt(N) scale until `apply_parametrization` sets it. Its roles are marked by name patterns.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dmft import coord_check_model, coord_verdicts
from dmft.verdict import REFUTED
from parametrizations import ModelConfig, OptimConfig, apply_parametrization, build_model, build_optimizer, get_preset
from parametrizations.optim import param_rules
from probes import coord_config, make_run_config, run_sweep


class Attention(nn.Module):
    def __init__(self, d: int, H: int, N: int):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, H * N, bias=False) for _ in range(3))
        self.o = nn.Linear(H * N, d, bias=False)
        self.H, self.N = H, N
        self.attn_scale = N**-0.5  # standard; the parametrization sets N^-alpha_A

    def forward(self, u):
        B, S, _ = u.shape
        q, k, v = (m(u).view(B, S, self.H, self.N).transpose(1, 2) for m in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v, scale=self.attn_scale)
        return self.o(o.transpose(1, 2).reshape(B, S, self.H * self.N))


class MLP(nn.Module):
    def __init__(self, d: int, d_ff: int):
        super().__init__()
        self.mlp_in, self.mlp_out = nn.Linear(d, d_ff, bias=False), nn.Linear(d_ff, d, bias=False)

    def forward(self, u):
        return self.mlp_out(F.gelu(self.mlp_in(u), approximate="tanh"))


def ln(h):
    return F.layer_norm(h, (h.shape[-1],), eps=1e-6)


class Block(nn.Module):
    def __init__(self, d: int, H: int, N: int):
        super().__init__()
        self.attn, self.mlp = Attention(d, H, N), MLP(d, d)

    def forward(self, h):
        h = h + self.attn(ln(h))
        return h + self.mlp(ln(h))


class Net(nn.Module):
    """A vision transformer: patches (B, S, d_in) -> class logits (B, n_classes)."""

    def __init__(self, N: int, H: int, L: int, d_in: int, seq_len: int, n_classes: int):
        super().__init__()
        d = N * H
        self.embed, self.pos = nn.Linear(d_in, d, bias=False), nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList(Block(d, H, N) for _ in range(L))
        self.readout = nn.Linear(d, n_classes, bias=False)

    def forward(self, x):
        h = self.embed(x) + self.pos(torch.arange(x.shape[1]))
        for b in self.blocks:
            h = b(h)
        return self.readout(ln(h).mean(-2))


ROLES = {
    "embed.weight": "embed",
    "pos.weight": "pos",
    "readout.weight": "readout",
    "blocks.*.attn.q.weight": "q",
    "blocks.*.attn.k.weight": "k",
    "blocks.*.attn.v.weight": "v",
    "blocks.*.attn.o.weight": "o",
    "blocks.*.mlp.mlp_in.weight": "mlp_in",
    "blocks.*.mlp.mlp_out.weight": "mlp_out",
    "blocks.*": "block",
    "blocks.*.attn": "attention",
    "blocks.*.mlp": "mlp",
}


def build(m: ModelConfig, roles=ROLES):
    return Net(m.N, m.H, m.L, m.d_in, m.seq_len, m.n_classes), roles


CFG = ModelConfig(N=8, H=4, L=2, task="vision", seq_len=16, d_in=48, n_classes=10)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_copy_is_the_built_in_model(optimizer):
    """Put under mup by its roles, the copy is the built-in model: the same initial weights (keyed draws), the same
    outputs, and the same lr and eps for every parameter; after three optimizer steps on the same batch the outputs
    still agree."""
    p = get_preset("mup")
    ref = build_model(CFG, p, optimizer, seed=3)
    own = apply_parametrization(build(CFG)[0], ROLES, N=8, H=4, L=2, preset="mup", optimizer=optimizer, seed=3)
    x, y = torch.randn(5, 16, 48), torch.randint(0, 10, (5,))
    assert torch.equal(own.model(x), ref(x))
    opt = OptimConfig(name=optimizer, eta0=0.05)
    want = {
        r["name"].replace("blocks.0.", "").replace("blocks.1.", ""): (r["lr"], r.get("eps"))
        for r in param_rules(ref, p, opt)
    }
    groups = own.param_groups(opt)
    got = {}
    for r in own.rules:
        g = next(g for g in groups if any(q is own.stored(r) for q in g["params"]))
        got[r.name.split(".")[-2] + ".weight"] = (g["lr"], g.get("eps"))
    assert got == want
    o_own, o_ref = own.build_optimizer(opt), build_optimizer(ref, p, opt)
    for _ in range(3):
        for model, o in ((own.model, o_own), (ref, o_ref)):
            o.zero_grad()
            F.cross_entropy(model(x), y).backward()
            o.step()
    torch.testing.assert_close(own.model(x), ref(x), rtol=1e-5, atol=1e-6)


SIZES, SEEDS, STEPS = [4, 8, 16], 2, [0, 1, 3]
SECTIONS = {
    "model": {"task": "vision", "N": 8, "H": 4, "L": 2},
    "param": {"preset": "mup"},
    "optim": {"name": "adam", "eta0": 0.05},
    "run": {"batch_size": 32},
    "probes": {"n_samples": 16},
}


def test_coord_of_a_copy_gives_the_built_in_verdicts(tmp_path):
    """`coord_check_model` on the copy gives the built-in model's coordinate check: the same rows, the same outcome per
    row and the same slopes (to float tolerance). Marking the readout as a hidden matrix (std 1, multiplier d^-1/2
    instead of the mean-field readout) changes a verdict: the logits at init no longer shrink as d^-1/2 (refuted).
    The built-in sweep trains its seeds one by one (ensemble "off"), as `coord_check_model` does."""
    base = make_run_config(**SECTIONS)
    ref_ds = run_sweep(coord_config(base, STEPS), "N", SIZES, SEEDS, tmp_path / "ref.nc", ensemble="off")
    ref = coord_verdicts(ref_ds)
    _, rows = coord_check_model(build, axis="N", values=SIZES, seeds=SEEDS, steps=STEPS, **SECTIONS)
    assert [v.row for v in rows] == [v.row for v in ref]
    assert [v.outcome for v in rows] == [v.outcome for v in ref]
    for a, b in zip(rows, ref):
        assert a.estimate == pytest.approx(b.estimate, abs=1e-4), a.row

    # at init, with 4 sizes and 4 seeds (2 seeds over 3 sizes leave the logits' row underpowered either way)
    def logits_init(roles):
        _, rows = coord_check_model(
            lambda m: build(m, roles), axis="N", values=[4, 8, 16, 32], seeds=4, steps=[0], **SECTIONS
        )
        return next(v for v in rows if v.row == "logits init")

    good, bad = logits_init(ROLES), logits_init({**ROLES, "readout.weight": "hidden"})
    assert good.outcome != REFUTED and abs(good.estimate + 0.5) < 0.15, (good.estimate, good.outcome)
    assert bad.outcome == REFUTED and abs(bad.estimate) < 0.15, (bad.estimate, bad.outcome)


def test_roles_are_checked():
    """A parameter with no role, a parameter with two, a pattern that matches nothing, a matrix marked vector and an
    attention module that cannot take the scale are refused with a line naming them."""

    def apply(roles, net=None):
        apply_parametrization(net or build(CFG)[0], roles, N=8, H=4, L=2)

    no_pos = {k: v for k, v in ROLES.items() if k != "pos.weight"}
    with pytest.raises(ValueError, match="parameter 'pos.weight' matches no role"):
        apply(no_pos)
    with pytest.raises(ValueError, match=r"'readout.weight' matches two roles: readout .* hidden \(pattern 'read\*"):
        apply({**ROLES, "read*.weight": "hidden"})
    with pytest.raises(ValueError, match="pattern 'head.weight'"):
        apply({**ROLES, "head.weight": "readout"})
    with pytest.raises(ValueError, match="'embed.weight' .* is marked vector"):
        apply({**ROLES, "embed.weight": "vector"})
    with pytest.raises(ValueError, match="unknown role 'readin'"):
        apply({**ROLES, "embed.weight": "readin"})
    net = build(CFG)[0]
    del net.blocks[0].attn.attn_scale
    with pytest.raises(ValueError, match="attention module 'blocks.0.attn' has no float attribute attn_scale"):
        apply(ROLES, net)
    net = build(CFG)[0]
    apply(ROLES, net)
    with pytest.raises(ValueError, match="already under a parametrization"):
        apply(ROLES, net)


def test_coarse_roles_and_vectors():
    """The five coarse roles put a model with biases and a LayerNorm under the parametrization: matrices get the
    abc std of their role, vectors keep their value (nn.Linear's bias, the LayerNorm gain at 1) with the gain rule's multiplier."""
    net = nn.Sequential(nn.Linear(3, 32), nn.LayerNorm(32), nn.Linear(32, 32), nn.Linear(32, 5))
    roles = {
        "0.weight": "embedding",
        "2.weight": "hidden",
        "3.weight": "readout",
        "*.bias": "vector",
        "1.weight": "vector",
    }
    bias = net[0].bias.detach().clone()
    own = apply_parametrization(net, roles, N=8, H=4, L=1, preset="mup", optimizer="adam")
    by = {r.name: r for r in own.rules}
    assert by["2.weight"].init_std == 1.0 and by["2.weight"].mult == pytest.approx(32**-0.5)
    assert float(net[2].weight.detach().std()) == pytest.approx(32**-0.5, rel=0.1)  # the module sees mult * w
    torch.testing.assert_close(net[1].weight.detach(), torch.ones(32))
    torch.testing.assert_close(net[0].bias.detach(), bias)
    assert by["1.weight"].mult == pytest.approx(32**0.5)  # Adam's gain rule: sqrt(d)
    assert len(own.param_groups(OptimConfig(name="adam"))) > 1  # per-role eps
    with pytest.raises(ValueError, match="put under the parametrization for adam, got sgd"):
        own.param_groups(OptimConfig(name="sgd"))
