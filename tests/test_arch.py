"""Tests of ntkcheck.arch: specs, builders, parametrizations by their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from ntkcheck.arch import (
    ACTIVATIONS,
    FAMILIES,
    PARAMETRIZATIONS,
    Activation,
    ArchSpec,
    BasicBlock,
    Conv,
    Dense,
    GlobalAvgPool,
    Scale,
    param_groups,
)

IMAGE = (1, 8, 8)
SHAPES = {"mlp": (8,), "cnn": IMAGE, "resnet": IMAGE}


def _inputs(shape, n=4, seed=123):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


def _layers(model, roles=("input", "hidden", "readout")):
    return [m for m in model.modules() if isinstance(m, (Dense, Conv)) and m.role in roles]


# --- spec, ids, compatibility ---------------------------------------------------------------


def test_existing_mlp_ids_and_fields_are_unchanged():
    assert ArchSpec(depth=3).arch_id == "mlp-d3-relu-ntk-b"
    assert ArchSpec(activation="leaky_relu", bias=False).arch_id == "mlp-d2-leakyrelu-ntk-nb"
    assert ArchSpec(weight_std=2**0.5, bias_std=0.5).arch_id == "mlp-d2-relu-ntk-b-sw1.41421-sb0.5"
    assert ArchSpec(bias=False, bias_std=0.5).arch_id == "mlp-d2-relu-ntk-nb"
    old = ["family", "depth", "activation", "parametrization", "bias", "weight_std", "bias_std"]
    assert list(ArchSpec().fields())[: len(old)] == old
    assert "width" not in ArchSpec().with_width(8).fields()


@pytest.mark.parametrize(
    ("spec", "arch_id"),
    [
        (ArchSpec("cnn", depth=2), "cnn-d2-relu-ntk-b-gap"),
        (ArchSpec("cnn", depth=3, pool=True, bias=False), "cnn-d3-relu-ntk-nb-pool-gap"),
        (ArchSpec("resnet", depth=2, batchnorm=True), "resnet-d2-relu-ntk-b-bn-gap"),
        (ArchSpec("resnet", depth=1, activation="abs", parametrization="mup", weight_std=2.0),
         "resnet-d1-abs-mup-b-gap-sw2"),
    ],
)
def test_image_family_ids(spec, arch_id):
    assert spec.arch_id == arch_id
    assert spec.with_width(64).arch_id == arch_id  # the width is never part of the id


def test_spec_is_immutable_and_with_width_copies():
    spec = ArchSpec("cnn")
    wide = spec.with_width(np.int64(32))
    assert spec.width is None and wide.width == 32 and type(wide.width) is int
    assert wide == spec.with_width(32) and hash(wide) == hash(spec.with_width(32))
    with pytest.raises(AttributeError):
        spec.depth = 3


@pytest.mark.parametrize("width", [0, -4, 2.5, 64.0, True, "64", None])
def test_bad_width_is_refused_with_a_hint(width):
    with pytest.raises(ValueError, match="width must be an integer >= 1.*e.g. 64"):
        ArchSpec().with_width(width)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "transformer"}, r"unknown architecture family 'transformer'; choose one"),
        ({"activation": "softplus"}, r"unknown activation 'softplus'; choose one"),
        ({"parametrization": "mean_field"}, r"unknown parametrization 'mean_field'; choose"),
        ({"depth": 0}, r"depth must be an integer >= 1"),
        ({"depth": 1.5}, r"depth must be an integer >= 1"),
        ({"weight_std": 0.0}, r"weight_std must be > 0"),
        ({"bias_std": -1.0}, r"bias_std >= 0"),
        ({"pool": True}, r"pool and batchnorm apply to the families"),
        ({"family": "mlp", "batchnorm": True}, r"leave them False"),
    ],
)
def test_invalid_specs_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArchSpec(**kwargs)


def test_build_errors():
    with pytest.raises(ValueError, match=r"has no width; call spec.with_width\(n\)"):
        ArchSpec().build(seed=0, input_shape=4)
    for family in ("cnn", "resnet"):
        with pytest.raises(ValueError, match=r"takes images: input_shape must be \(C, H, W\)"):
            ArchSpec(family).with_width(4).build(seed=0, input_shape=64)
        with pytest.raises(ValueError, match=r"\(C, H, W\)"):
            ArchSpec(family).with_width(4).build(seed=0, input_shape=(8, 8))
    with pytest.raises(ValueError, match=r"needs H, W >= 8"):
        ArchSpec("cnn", depth=3, pool=True).with_width(4).build(seed=0, input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="out_features must be an integer >= 1"):
        ArchSpec().with_width(4).build(seed=0, input_shape=3, out_features=0)


# --- building ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_build_shapes_dtype_and_eval_mode(family, parametrization):
    spec = ArchSpec(family, depth=2, parametrization=parametrization,
                    batchnorm=family != "mlp", pool=family == "cnn")
    model = spec.with_width(6).build(seed=0, input_shape=SHAPES[family], out_features=3)
    assert not model.training
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(_inputs(SHAPES[family], n=5)).shape == (5, 3)
    roles = [m.role for m in _layers(model)]
    assert roles[-1] == "readout" and roles.count("readout") == 1 and roles[0] == "input"


def test_mlp_flattens_any_input_shape():
    spec = ArchSpec(depth=1).with_width(5)
    a = spec.build(seed=3, input_shape=IMAGE)
    b = spec.build(seed=3, input_shape=64)
    x = _inputs(IMAGE)
    torch.testing.assert_close(a(x), b(x.reshape(4, 64)), rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_network_other_seed_other_network(family):
    spec = ArchSpec(family, depth=2).with_width(4)
    a, b, c = (spec.build(seed=s, input_shape=SHAPES[family]) for s in (7, 7, 8))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    # A float32 build is the float64 one rounded: initialization does not depend on dtype.
    f32 = spec.build(seed=7, input_shape=SHAPES[family], dtype=torch.float32)
    for p64, p32 in zip(a.parameters(), f32.parameters(), strict=True):
        assert torch.equal(p64.float(), p32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_seed_same_network_on_cuda():
    spec = ArchSpec("resnet", depth=1, batchnorm=True).with_width(4)
    cpu = spec.build(seed=1, input_shape=IMAGE)
    gpu = spec.build(seed=1, input_shape=IMAGE, device="cuda")
    for pc, pg in zip(cpu.parameters(), gpu.parameters(), strict=True):
        assert pg.device.type == "cuda" and torch.equal(pc, pg.cpu())


def test_resnet_structure_projection_then_identity():
    model = ArchSpec("resnet", depth=3, batchnorm=True).with_width(4).build(
        seed=0, input_shape=(3, 8, 8))
    blocks = [m for m in model if isinstance(m, BasicBlock)]
    assert len(blocks) == 3
    proj = blocks[0].shortcut
    assert isinstance(proj[0], Conv) and proj[0].kernel_size == (1, 1)
    assert isinstance(proj[1], nn.BatchNorm2d)
    assert all(isinstance(b.shortcut, nn.Identity) for b in blocks[1:])
    # In eval mode BatchNorm uses its running statistics: the output does not depend on
    # the other inputs of the batch.
    x = _inputs((3, 8, 8), n=3)
    torch.testing.assert_close(model(x)[:1], model(x[:1]))


def test_cnn_structure():
    model = ArchSpec("cnn", depth=2, pool=True, batchnorm=True).with_width(4).build(
        seed=0, input_shape=(2, 8, 8))
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Conv", "BatchNorm2d", "Activation", "AvgPool2d"] * 2 + [
        "GlobalAvgPool", "Dense"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations(name):
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    expected = {
        "relu": x.clamp(min=0), "erf": torch.erf(x), "tanh": torch.tanh(x),
        "leaky_relu": torch.where(x > 0, x, 0.1 * x), "gelu": nn.functional.gelu(x),
        "identity": x, "abs": x.abs(),
    }[name]
    torch.testing.assert_close(Activation(name)(x), expected)
    with pytest.raises(ValueError, match="unknown activation"):
        Activation("swish")


# --- the layer convention the kernel engine relies on ------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_conv_convention_under_ntk(bias):
    g = torch.Generator().manual_seed(0)
    conv = Conv(16, 64, 3, bias=bias, weight_std=2.0, bias_std=0.3, parametrization="ntk",
                generator=g)
    assert conv.fan_in == 16 * 9 and conv.padding == (1, 1)
    inner = conv.inner  # a plain nn.Conv2d: "same" zero padding, stride 1, one group
    assert type(inner) is nn.Conv2d and inner.stride == (1, 1) and inner.padding == (1, 1)
    assert inner.dilation == (1, 1) and inner.groups == 1 and inner.padding_mode == "zeros"
    assert conv.weight_multiplier == pytest.approx(2.0 / math.sqrt(16 * 9))
    assert conv.bias_multiplier == 0.3
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.03)  # standard normal
    x = _inputs((16, 5, 7), n=2)
    expected = nn.functional.conv2d(
        x, conv.weight * conv.weight_multiplier,
        conv.bias * conv.bias_multiplier if bias else None, padding=1)
    torch.testing.assert_close(conv(x), expected)
    torch.testing.assert_close(conv(x), nn.functional.conv2d(
        x, conv.weight * conv.weight_multiplier,
        conv.bias * conv.bias_multiplier if bias else None, padding="same"))
    assert conv(x).shape == (2, 64, 5, 7)


def test_conv_refuses_even_kernels():
    with pytest.raises(ValueError, match="positive odd"):
        Conv(1, 1, 2, bias=True, weight_std=1.0, bias_std=0.0, parametrization="ntk",
             generator=torch.Generator())


@pytest.mark.parametrize("family", FAMILIES)
def test_standard_and_ntk_are_the_same_function_at_init(family):
    spec = ArchSpec(family, depth=2, bias_std=0.5)
    ntk = spec.with_width(8).build(seed=4, input_shape=SHAPES[family])
    std = spec.__class__(**{**spec.fields(), "parametrization": "standard"}).with_width(8).build(
        seed=4, input_shape=SHAPES[family])
    x = _inputs(SHAPES[family])
    torch.testing.assert_close(ntk(x), std(x))
    for layer in _layers(std):
        assert layer.weight_multiplier == 1.0 and layer.bias_multiplier == 1.0


def test_mup_multipliers():
    model = ArchSpec(depth=2, parametrization="mup", weight_std=2.0).with_width(64).build(
        seed=0, input_shape=8)
    inp, hidden, readout = _layers(model)
    assert inp.weight_multiplier == pytest.approx(2.0 / math.sqrt(8))
    assert hidden.weight_multiplier == pytest.approx(2.0 / math.sqrt(64))
    assert readout.weight_multiplier == pytest.approx(2.0 / 64)  # 1/fan_in read-out (TP V)
    assert readout.weight.std().item() == pytest.approx(1.0, abs=0.3)


# --- defining properties of the parametrizations -----------------------------------------------


def _preactivation_rms(spec, width, seeds=2):
    shape = SHAPES[spec.family]
    out = []
    for seed in range(seeds):
        model = spec.with_width(width).build(seed=seed, input_shape=shape)
        rms = []
        hooks = [m.register_forward_hook(
                     lambda _m, _i, o, rms=rms: rms.append(o.pow(2).mean().sqrt()))
                 for m in _layers(model, roles=("input", "hidden"))]
        model(_inputs(shape, n=4))
        for h in hooks:
            h.remove()
        out.append(torch.stack(rms))
    return torch.stack(out).mean(0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_preactivations_are_order_one_in_width(family, parametrization):
    spec = ArchSpec(family, depth=2, parametrization=parametrization, weight_std=2**0.5)
    narrow, wide = _preactivation_rms(spec, 16), _preactivation_rms(spec, 256)
    ratio = wide / narrow
    assert torch.all((ratio > 0.6) & (ratio < 1.6)), ratio
    assert torch.all((wide > 0.05) & (wide < 20)), wide


def _ntk_trace(model, x):
    """Trace of the empirical NTK Gram matrix, sum_i ||d f(x_i) / d theta||^2."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    return sum(j.pow(2).sum() for j in jac.values()).item()


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_empirical_ntk_is_order_one_under_ntk_and_grows_under_standard(family):
    shape = SHAPES[family]
    x = _inputs(shape, n=2)
    widths = (16, 256) if family == "cnn" else (32, 1024)
    trace = {}
    for p in ("ntk", "standard"):
        spec = ArchSpec(family, depth=2, parametrization=p, weight_std=2**0.5)
        trace[p] = [np.mean([_ntk_trace(spec.with_width(w).build(seed=s, input_shape=shape), x)
                             for s in range(2)]) for w in widths]
    growth = widths[1] / widths[0]
    assert 0.7 < trace["ntk"][1] / trace["ntk"][0] < 1.4, trace
    assert trace["standard"][1] / trace["standard"][0] > growth / 2, trace


def _feature_update(spec, width, optimizer, lr=0.1, seeds=3):
    """RMS change of the last hidden preactivations after one full-batch step on 0.5 * MSE."""
    shape = SHAPES[spec.family]
    out = []
    for seed in range(seeds):
        model = spec.with_width(width).build(seed=seed, input_shape=shape)
        x, y = _inputs(shape, n=4, seed=100 + seed), torch.ones(4, 1, dtype=torch.float64)
        feats = []
        last = _layers(model, roles=("input", "hidden"))[-1]
        last.register_forward_hook(lambda _m, _i, o, feats=feats: feats.append(o.detach().clone()))
        opt_cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        opt = opt_cls(param_groups(model, lr, optimizer))
        (0.5 * (model(x) - y).pow(2).sum()).backward()
        opt.step()
        model(x)
        out.append((feats[1] - feats[0]).pow(2).mean().sqrt().item())
    return float(np.mean(out))


@pytest.mark.parametrize(("family", "optimizer"),
                         [("mlp", "sgd"), ("mlp", "adam"), ("cnn", "sgd"), ("resnet", "adam")])
def test_mup_feature_updates_are_order_one_in_width(family, optimizer):
    spec = ArchSpec(family, depth=2, parametrization="mup")
    widths = (32, 512) if family == "mlp" else (16, 128)
    narrow, wide = (_feature_update(spec, w, optimizer) for w in widths)
    assert 0.6 < wide / narrow < 1.6, (narrow, wide)
    assert wide > 1e-2


def test_ntk_feature_updates_vanish_with_width():
    spec = ArchSpec("mlp", depth=2, parametrization="ntk")
    narrow, wide = (_feature_update(spec, w, "sgd") for w in (32, 2048))
    # O(1/sqrt(n)): a factor 8 for a 64x wider net; demand at least 4.
    assert wide < narrow / 4, (narrow, wide)


# --- param_groups ------------------------------------------------------------------------------


def _lrs(model, lr, optimizer):
    return {g["name"]: g["lr"] for g in param_groups(model, lr, optimizer)}


@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
def test_param_groups_are_uniform_outside_mup(parametrization):
    model = ArchSpec("resnet", parametrization=parametrization, batchnorm=True).with_width(
        4).build(seed=0, input_shape=IMAGE)
    lrs = _lrs(model, 0.5, "adam")
    assert len(lrs) == len(list(model.parameters()))
    assert set(lrs.values()) == {0.5}


def test_param_groups_mup_mlp_table():
    model = ArchSpec(depth=2, parametrization="mup").with_width(64).build(
        seed=0, input_shape=8, out_features=3)
    assert _lrs(model, 0.1, "sgd") == pytest.approx({
        "1.linear.weight": 6.4, "1.linear.bias": 6.4, "3.linear.weight": 6.4,
        "3.linear.bias": 6.4, "5.linear.weight": 6.4, "5.linear.bias": 0.1})
    assert _lrs(model, 0.1, "adam") == pytest.approx({
        "1.linear.weight": 0.1, "1.linear.bias": 0.1, "3.linear.weight": 0.1 / 8,
        "3.linear.bias": 0.1, "5.linear.weight": 0.1, "5.linear.bias": 0.1})
    assert _lrs(model, 0.1, "adamw") == _lrs(model, 0.1, "adam")


def test_param_groups_mup_conv_and_batchnorm():
    model = ArchSpec("cnn", depth=2, parametrization="mup", batchnorm=True).with_width(
        16).build(seed=0, input_shape=(3, 8, 8))
    sgd, adam = _lrs(model, 1.0, "sgd"), _lrs(model, 1.0, "adam")
    assert sgd["0.conv.weight"] == 16 and sgd["1.weight"] == 16  # input conv, BatchNorm scale
    assert sgd["3.conv.weight"] == 16
    assert adam["3.conv.weight"] == pytest.approx(1 / 12)  # fan_in 144
    assert sgd["7.linear.bias"] == 1.0 and adam["0.conv.weight"] == 1.0


def test_param_groups_mup_depth_one_cnn():
    """The CNN training claims' network: input conv (fan-in 9, fan-out = width) and read-out
    at ``lr * width``, read-out bias at ``lr``; the read-out multiplier is ``1 / width``."""
    net = ArchSpec("cnn", depth=1, activation="erf", parametrization="mup").with_width(
        16).build(seed=0, input_shape=(1, 8, 8))
    assert _lrs(net, 0.1, "sgd") == pytest.approx({
        "0.conv.weight": 1.6, "0.conv.bias": 1.6, "3.linear.weight": 1.6, "3.linear.bias": 0.1})
    assert net[3].weight_multiplier == pytest.approx(1 / 16)


def test_param_groups_work_with_torch_optimizers_and_errors():
    model = ArchSpec(parametrization="mup").with_width(4).build(seed=0, input_shape=3)
    opt = torch.optim.Adam(param_groups(model, 1e-3, "adam"))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        param_groups(model, 0.1, "lbfgs")
    with pytest.raises(ValueError, match="lr must be > 0"):
        param_groups(model, 0.0)
    with pytest.raises(ValueError, match="needs a network built by ArchSpec.build"):
        param_groups(nn.Sequential(nn.Linear(2, 2)), 0.1)


# --- standard layers ---------------------------------------------------------------------------


_PARAMETER_FREE = (nn.Flatten, nn.Identity, nn.AvgPool2d, nn.Sequential, Activation)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_parameters_sit_in_standard_layers_only(family, parametrization):
    """Every module holding a parameter is exactly nn.Linear, nn.Conv2d or nn.BatchNorm2d
    (not a subclass); the rest is parameter-free."""
    model = ArchSpec(family, depth=2, parametrization=parametrization,
                     batchnorm=family == "resnet").with_width(4).build(
        seed=0, input_shape=SHAPES[family])
    for m in model.modules():
        if any(True for _ in m.parameters(recurse=False)):
            assert type(m) in (nn.Linear, nn.Conv2d, nn.BatchNorm2d), type(m)
        else:
            assert isinstance(m, (*_PARAMETER_FREE, Dense, Conv, BasicBlock, Scale,
                                  GlobalAvgPool)), type(m)


def _multiplier_forward(model: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    """The network written out in the multiplier form ``m_w (W x) + m_b b`` (the layers'
    definition in the module docstring), from ``params`` by name: an independent forward."""

    def layer(name: str, m, h):
        w = params[f"{name}.{m._layer_name}.weight"]
        b = params.get(f"{name}.{m._layer_name}.bias") if m.bias is not None else None
        if isinstance(m, Dense):
            y = m.weight_multiplier * (h @ w.T)
            return y if b is None else y + m.bias_multiplier * b
        y = m.weight_multiplier * nn.functional.conv2d(h, w, padding=m.padding)
        return y if b is None else y + m.bias_multiplier * b[:, None, None]

    def run(prefix: str, mod: nn.Module, h):
        if isinstance(mod, (Dense, Conv)):
            return layer(prefix, mod, h)
        if isinstance(mod, BasicBlock):
            t = mod.act(run(f"{prefix}.conv1", mod.conv1, h))
            t = run(f"{prefix}.conv2", mod.conv2, t)
            s = h if isinstance(mod.shortcut, nn.Identity) else run(
                f"{prefix}.shortcut", mod.shortcut, h)
            return mod.act(s + t)
        if isinstance(mod, nn.Sequential):
            for i, child in enumerate(mod):
                h = run(f"{prefix}.{i}" if prefix else str(i), child, h)
            return h
        return mod(h)

    return run("", model, x)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_standard_layers_compute_the_multiplier_form(family, parametrization, bias):
    """Same function and same parameter Jacobian (hence the same empirical NTK and GGN) as
    the multiplier form the parametrizations are defined by."""
    spec = ArchSpec(family, depth=2, parametrization=parametrization, bias=bias,
                    weight_std=1.4, bias_std=0.3)
    model = spec.with_width(5).build(seed=2, input_shape=SHAPES[family], out_features=2)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = _inputs(SHAPES[family], n=3)
    torch.testing.assert_close(model(x), _multiplier_forward(model, params, x),
                               rtol=1e-13, atol=1e-15)
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    ref = jacrev(lambda p: _multiplier_forward(model, p, x))(params)
    for name in params:
        torch.testing.assert_close(jac[name], ref[name], rtol=1e-12, atol=1e-14)


def test_zero_bias_std_is_a_frozen_zero_bias():
    """``bias_std = 0`` under "ntk": the bias has multiplier 0, so it cannot move the function
    or enter the NTK; it is stored as a frozen zero (under "standard" it is trainable)."""
    ntk = ArchSpec(depth=1, bias_std=0.0).with_width(4).build(seed=0, input_shape=3)
    assert ntk[1].bias is None and ntk[1].bias_multiplier == 0.0
    assert not ntk[1].inner.bias.requires_grad and not ntk[1].inner.bias.any()
    assert len(param_groups(ntk, 0.1)) == len(list(ntk.parameters()))
    std = ArchSpec(depth=1, bias_std=0.0, parametrization="standard").with_width(4).build(
        seed=0, input_shape=3)
    assert std[1].bias is not None and std[1].bias.requires_grad
    x = _inputs((3,))
    torch.testing.assert_close(ntk(x), std(x))


def test_building_does_not_draw_from_the_global_rng():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    ArchSpec("resnet", depth=1).with_width(4).build(seed=0, input_shape=IMAGE)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_set_multipliers_keeps_the_stored_parameters():
    g = torch.Generator().manual_seed(0)
    layer = Dense(3, 2, bias=True, weight_std=1.0, bias_std=0.5, parametrization="ntk",
                  generator=g)
    w = layer.weight.detach().clone()
    layer.set_multipliers(2.0, 3.0)
    assert (layer.weight_multiplier, layer.bias_multiplier) == pytest.approx((2.0, 3.0))
    x = _inputs((3,))
    torch.testing.assert_close(layer(x), 2.0 * x @ w.T + 3.0 * layer.bias.detach())


# --- curvlinops sees standard layers -----------------------------------------------------------


def _kfac_and_ggn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Dense K-FAC (type-2 Fisher: exact for MSE, weight and bias in one factor) and exact
    GGN of the summed squared error, float64, ``(P, P)`` each."""
    curvlinops = pytest.importorskip("curvlinops")
    params = [p for p in model.parameters() if p.requires_grad]
    loss = nn.MSELoss(reduction="sum")
    eye = torch.eye(sum(p.numel() for p in params), dtype=torch.float64)
    kfac = curvlinops.KFACLinearOperator(model, loss, params, [(x, y)], fisher_type="type-2",
                                         separate_weight_and_bias=False)
    ggn = curvlinops.GGNLinearOperator(model, loss, params, [(x, y)])
    return kfac @ eye, ggn @ eye


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def test_kfac_equals_the_exact_ggn_of_one_ntk_layer():
    """One NTK-parametrized layer under MSE: the output's gradient w.r.t. the layer output is
    the same (the scale) for every sample, so K-FAC's Kronecker product is exact (Martens &
    Grosse 2015, sec. 3, whose approximation assumes only that independence)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(Dense(3, 2, bias=True, weight_std=1.3, bias_std=0.4,
                                parametrization="ntk", generator=g, role="readout"))
    x, y = _inputs((3,), n=7), _inputs((2,), n=7, seed=5)
    kfac, ggn = _kfac_and_ggn(model, x, y)
    assert _rel(kfac, ggn) < 1e-12


def test_kfac_is_exact_on_the_readout_block_only():
    """A depth-1 ReLU MLP: K-FAC's read-out block is the GGN's (same argument), the hidden
    layer's is not (its output gradients depend on the sample) nor the cross blocks: K-FAC
    is an approximation there, which this test also sees."""
    model = ArchSpec(depth=1).with_width(4).build(seed=0, input_shape=3, out_features=2)
    x, y = _inputs((3,), n=7), _inputs((2,), n=7, seed=5)
    kfac, ggn = _kfac_and_ggn(model, x, y)
    hidden = 4 * 3 + 4  # 1.linear.weight, 1.linear.bias come first
    assert _rel(kfac[hidden:, hidden:], ggn[hidden:, hidden:]) < 1e-12
    assert _rel(kfac[:hidden, :hidden], ggn[:hidden, :hidden]) > 1e-3
    assert _rel(kfac, ggn) > 1e-3


def test_kfac_accepts_the_cnn_and_its_readout_block_is_exact():
    model = ArchSpec("cnn", depth=1).with_width(3).build(seed=0, input_shape=(1, 5, 5),
                                                         out_features=2)
    x, y = _inputs((1, 5, 5), n=7), _inputs((2,), n=7, seed=5)
    kfac, ggn = _kfac_and_ggn(model, x, y)
    conv = 3 * 9 + 3
    assert _rel(kfac[conv:, conv:], ggn[conv:, conv:]) < 1e-12
    torch.testing.assert_close(kfac, kfac.T)
    assert float(torch.linalg.eigvalsh(kfac)[0]) > -1e-10 * float(kfac.diagonal().max())
