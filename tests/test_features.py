"""Hidden features, linear CKA, the read-out covariance and the learning-rate-weighted NTK."""

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from ntkcheck.arch import ArchSpec, Dense, param_groups
from ntkcheck.data import load_dataset
from ntkcheck.kernel_regime.features import (
    hidden_features,
    linear_cka,
    lr_weighted_ntk,
    readout_covariance,
)
from ntkcheck.kernels import analytic_kernels, empirical_ntk
from ntkcheck.training.loops import train


@pytest.fixture(scope="module")
def x():
    return load_dataset("digits", n=12, seed=0).x


def test_hidden_features_are_the_readout_input(x):
    net = ArchSpec(depth=2, activation="erf").with_width(16).build(seed=0, input_shape=(1, 8, 8))
    torch.testing.assert_close(hidden_features(net, x), net[:-1](x).detach())
    cnn = ArchSpec(family="cnn", depth=1).with_width(4).build(seed=0, input_shape=(1, 8, 8))
    with torch.no_grad():  # conv, activation, then the global average pool over positions
        pooled = cnn[1](cnn[0](x)).mean(dim=(-2, -1))
    assert hidden_features(cnn, x).shape == (12, 4)
    torch.testing.assert_close(hidden_features(cnn, x), pooled)
    with pytest.raises(ValueError, match="readout"):
        hidden_features(torch.nn.Linear(64, 1).double(), x.reshape(12, -1))


def test_linear_cka_invariances_and_hsic_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 7, generator=g, dtype=torch.float64)
    b = torch.randn(20, 5, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=torch.float64))
    assert linear_cka(a, a) == pytest.approx(1.0)
    assert linear_cka(a, 3.0 * a @ q + 1.0) == pytest.approx(1.0)
    # Kornblith et al. 2019 eq. 2-5: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), centred Grams
    h = torch.eye(20, dtype=torch.float64) - 1.0 / 20
    ka, kb = h @ a @ a.T @ h, h @ b @ b.T @ h
    hsic = float((ka * kb).sum() / torch.sqrt((ka * ka).sum() * (kb * kb).sum()))
    assert linear_cka(a, b) == pytest.approx(hsic, rel=1e-12)
    assert 0.0 <= linear_cka(a, b) < 1.0
    with pytest.raises(ValueError, match="constant"):
        linear_cka(a, torch.ones(20, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="same N"):
        linear_cka(a, b[:10])


@pytest.mark.parametrize("parametrization", ["ntk", "standard", "mup"])
def test_readout_covariance_is_the_covariance_over_readout_weights(x, parametrization):
    """Redraw only the read-out layer many times: the sample covariance of the outputs
    converges to the formula (a Monte Carlo check of the exact integration)."""
    spec = ArchSpec(depth=1, activation="relu", parametrization=parametrization,
                    weight_std=1.3, bias_std=0.4)
    net = spec.with_width(32).build(seed=0, input_shape=(1, 8, 8))
    cov = readout_covariance(net, x, spec)
    phi = hidden_features(net, x)
    gen = torch.Generator().manual_seed(1)
    outs = []
    for _ in range(4000):  # fresh read-out layers as ArchSpec.build initializes them
        readout = Dense(32, 1, bias=True, weight_std=1.3, bias_std=0.4,
                        parametrization=parametrization, generator=gen, role="readout")
        with torch.no_grad():
            outs.append(readout(phi)[:, 0])
    sample = torch.cov(torch.stack(outs).T)
    assert float(torch.linalg.norm(sample - cov) / torch.linalg.norm(cov)) < 0.06


def test_readout_covariance_averages_to_the_nngp(x):
    spec = ArchSpec(depth=1, activation="erf")
    mean = sum(readout_covariance(spec.with_width(2048).build(seed=s, input_shape=(1, 8, 8)),
                                  x, spec) for s in range(4)) / 4
    nngp = analytic_kernels(spec, x).nngp
    assert float(torch.linalg.norm(mean - nngp) / torch.linalg.norm(nngp)) < 0.03


def test_lr_weighted_ntk_with_unit_rates_is_the_ntk(x):
    net = ArchSpec(depth=2, activation="tanh").with_width(16).build(seed=0, input_shape=(1, 8, 8))
    torch.testing.assert_close(lr_weighted_ntk(net, x, param_groups(net, 0.1), 0.1),
                               empirical_ntk(net, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", [
    ArchSpec(depth=2, activation="tanh", parametrization="mup"),
    ArchSpec(family="cnn", depth=1, activation="erf", parametrization="mup"),  # CNN claims'
], ids=lambda s: s.arch_id)
def test_lr_weighted_ntk_matches_weighted_jacobians_and_one_mup_step(x, spec):
    net = spec.with_width(16).build(seed=0, input_shape=(1, 8, 8))
    lr = 1e-4
    groups = param_groups(net, lr)
    kernel = lr_weighted_ntk(net, x, groups, lr)
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
    rates = {g["name"]: g["lr"] / lr for g in groups}
    expected = sum(rates[k] * j.reshape(len(x), -1) @ j.reshape(len(x), -1).T
                   for k, j in jac.items())
    torch.testing.assert_close(kernel, expected, rtol=1e-10, atol=1e-12)
    y = torch.zeros(len(x), 1, dtype=torch.float64)
    with torch.no_grad():
        f0 = net(x)
    train(net, x, y, lr=lr, steps=1, params=groups)
    with torch.no_grad():
        step = net(x) - f0
    predicted = -(lr / len(x)) * kernel @ f0
    assert float(torch.linalg.norm(step - predicted) / torch.linalg.norm(predicted)) < 1e-3
    with pytest.raises(ValueError, match="no learning rate"):
        lr_weighted_ntk(net, x, groups[1:], lr)
    assert np.isfinite(float(kernel.sum()))
