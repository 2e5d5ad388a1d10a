"""The library pieces the CNN training claims rely on, checked on a depth-1 CNN.

``claims/test_lazy_training.py``, ``test_linearized_dynamics.py`` and
``test_feature_learning.py`` run a depth-1 CNN (3x3 conv, global average pooling, dense
read-out) under the NTK parametrization and muP; these tests check, on that network, that
:func:`ntkcheck.arch.param_groups` gives muP's per-layer rates to the conv and read-out,
:func:`ntkcheck.features.lr_weighted_ntk` is the NTK gradient descent with those rates follows,
:func:`ntkcheck.train.kernel_lr` uses the analytic CNTK, :func:`ntkcheck.features.hidden_features`
is the pooled channels and :func:`ntkcheck.linearize.linearize` is the first-order Taylor model.
"""

import pytest
import torch
from torch.func import functional_call, jacrev

from ntkcheck.arch import ArchSpec, param_groups
from ntkcheck.data import load_dataset
from ntkcheck.features import hidden_features, lr_weighted_ntk
from ntkcheck.kernels import analytic_kernels, empirical_ntk
from ntkcheck.linearize import linearize
from ntkcheck.train import kernel_lr, train

CNN = ArchSpec(family="cnn", depth=1, activation="erf")
CNN_MUP = ArchSpec(family="cnn", depth=1, activation="erf", parametrization="mup")


@pytest.fixture(scope="module")
def x():
    return load_dataset("digits", n=8, seed=0).x


def _jacobians(net, x):
    """Per parameter, the dense Jacobian ``(N * O, P_k)`` of the outputs, by reverse mode."""
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
    n_rows = len(x) * net(x[:1]).shape[1]
    return {k: j.reshape(n_rows, -1) for k, j in jac.items()}


def test_param_groups_give_the_depth_one_cnn_mups_rates():
    net = CNN_MUP.with_width(16).build(seed=0, input_shape=(1, 8, 8))
    lrs = {g["name"]: g["lr"] for g in param_groups(net, 0.1)}
    # input conv (fan-in 9, fan-out = width) and read-out: lr * width; read-out bias: lr
    assert lrs == pytest.approx({"0.weight": 1.6, "0.bias": 1.6, "3.weight": 1.6,
                                 "3.bias": 0.1})
    assert net[3].weight_multiplier == pytest.approx(1 / 16)  # muP read-out: sigma_w / n


def test_lr_weighted_ntk_of_a_mup_cnn_is_the_weighted_jacobian_gram_and_one_step(x):
    net = CNN_MUP.with_width(16).build(seed=0, input_shape=(1, 8, 8))
    lr = 1e-3
    groups = param_groups(net, lr)
    kernel = lr_weighted_ntk(net, x, groups, lr)
    rates = {g["name"]: g["lr"] / lr for g in groups}
    expected = sum(rates[k] * j @ j.T for k, j in _jacobians(net, x).items())
    torch.testing.assert_close(kernel, expected, rtol=1e-10, atol=1e-12)
    y = torch.zeros(len(x), 1, dtype=torch.float64)
    with torch.no_grad():
        f0 = net(x)
    train(net, x, y, lr=lr, steps=1, params=groups)
    with torch.no_grad():
        step = net(x) - f0
    predicted = -(lr / len(x)) * kernel @ f0
    assert float(torch.linalg.norm(step - predicted) / torch.linalg.norm(predicted)) < 1e-3


def test_kernel_lr_of_an_ntk_cnn_uses_the_analytic_cntk(x):
    net = CNN.with_width(16).build(seed=0, input_shape=(1, 8, 8))
    lr, groups = kernel_lr(CNN.with_width(16), net, x)
    lam = float(torch.linalg.eigvalsh(analytic_kernels(CNN, x).ntk)[-1])
    assert groups is None and lr == pytest.approx(len(x) / lam, rel=1e-12)
    lr_mup, groups = kernel_lr(CNN_MUP.with_width(16), CNN_MUP.with_width(16).build(
        seed=0, input_shape=(1, 8, 8)), x)
    assert groups is not None and lr_mup > 0


def test_hidden_features_of_a_cnn_are_its_pooled_channels(x):
    net = CNN.with_width(16).build(seed=0, input_shape=(1, 8, 8))
    with torch.no_grad():
        pooled = net[1](net[0](x)).mean(dim=(-2, -1))
    torch.testing.assert_close(hidden_features(net, x), pooled)


def test_linearized_cnn_is_its_first_order_taylor_model(x):
    net = CNN.with_width(8).build(seed=0, input_shape=(1, 8, 8), out_features=3)
    lin = linearize(net)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), net(x))
    jac = torch.cat(list(_jacobians(net, x).values()), dim=1)  # (N * 3, P) row-major
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(jac.shape[1], generator=g, dtype=torch.float64) * 1e-2
    start = 0
    with torch.no_grad():
        for name, p0 in lin.theta_0().items():
            p = lin.theta[name.replace(".", "__")]
            p.copy_(p0 + delta[start:start + p.numel()].reshape(p.shape))
            start += p.numel()
        torch.testing.assert_close(lin(x), net(x) + (jac @ delta).reshape(len(x), 3),
                                   rtol=1e-10, atol=1e-12)
    per_output = jac.reshape(len(x), 3, -1)
    trace = sum(per_output[:, o] @ per_output[:, o].T for o in range(3))
    torch.testing.assert_close(empirical_ntk(net, x), trace, rtol=1e-10, atol=1e-12)
