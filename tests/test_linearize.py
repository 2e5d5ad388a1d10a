"""The linearized model: equal at theta_0, exactly linear in theta, trains as the closed form."""

import pytest
import torch
from torch.func import functional_call, jacrev

from ntkcheck.arch import ArchSpec
from ntkcheck.data import load_dataset
from ntkcheck.kernel_regime.linearize import LinearizedModel, linearize
from ntkcheck.kernels import empirical_ntk
from ntkcheck.training.loops import train


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits", n=24 + 8, seed=0).split(24)


def _net(depth=2, width=32, out=3, activation="tanh", family="mlp"):
    return ArchSpec(family=family, depth=depth, activation=activation).with_width(width).build(
        seed=0, input_shape=(1, 8, 8), out_features=out)


def _jacobian(net, x):
    """Dense Jacobian (N*O, P) by reverse mode, independent of the jvp the model uses."""
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
    return torch.cat([j.reshape(x.shape[0] * net(x[:1]).shape[1], -1)
                      for j in jac.values()], dim=1)


def _set_delta(lin, delta):
    start = 0
    with torch.no_grad():
        for name, p0 in lin.theta_0().items():
            p = lin.theta[name.replace(".", "__")]
            p.copy_(p0 + delta[start:start + p.numel()].reshape(p.shape))
            start += p.numel()


def test_equals_network_at_initialization_and_leaves_it_alone(data):
    x = data[0].x
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    lin = linearize(net)
    torch.testing.assert_close(lin(x), net(x), rtol=0, atol=1e-14)
    assert [n for n, _ in lin.named_parameters()] == \
        [f"theta.{n.replace('.', '__')}" for n, _ in net.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert not lin.training and not any(b.requires_grad for b in lin.buffers())


@pytest.mark.parametrize("arch", [{}, dict(family="cnn", depth=1, width=8, activation="erf")],
                         ids=["mlp", "cnn"])
def test_is_first_order_taylor_model(data, arch):
    """f_lin(theta_0 + d) - f(theta_0) = J d with J from jacrev, and linear in d."""
    x = data[0].x[:6]
    net = _net(**arch)
    lin = linearize(net)
    n_params = sum(p.numel() for p in net.parameters())
    delta = torch.randn(n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f0 = net(x).detach()
    _set_delta(lin, 0.3 * delta)
    step = lin(x).detach() - f0
    torch.testing.assert_close(step.reshape(-1), _jacobian(net, x) @ (0.3 * delta),
                               rtol=1e-10, atol=1e-12)
    _set_delta(lin, 0.6 * delta)
    torch.testing.assert_close(lin(x).detach() - f0, 2 * step, rtol=1e-10, atol=1e-12)
    # the network itself is not linear: the same move changes it differently
    moved = _net(**arch)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(
            torch.nn.utils.parameters_to_vector(moved.parameters()) + 0.6 * delta,
            moved.parameters())
    with torch.no_grad():
        assert float((moved(x) - f0 - 2 * step).abs().max()) > 1e-3


def test_gradients_are_those_of_the_network_at_theta_0(data):
    """The NTK of f_lin is constant: its parameter gradient anywhere is J(theta_0)^T."""
    x = data[0].x[:5]
    net = _net(out=1)
    lin = linearize(net)
    n_params = sum(p.numel() for p in net.parameters())
    _set_delta(lin, torch.randn(n_params, dtype=torch.float64))
    grads = torch.autograd.grad(lin(x).sum(), list(lin.parameters()))
    expected = torch.autograd.grad(net(x).sum(), list(net.parameters()))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_gradient_descent_on_the_linear_model_is_the_discrete_closed_form(data):
    """GD on f_lin with the 1/(2N) MSE: r_{k+1} = (I - lr Theta_0 / N) r_k exactly, and the
    test outputs move by -(lr/N) Theta_0(z, X) r_k (Lee et al. 2019, eq. 8, discretized)."""
    (train_set, test_set) = data
    x, z = train_set.x, test_set.x
    y = train_set.regression_targets()
    net = _net(out=1, width=64)
    theta, theta_zx = empirical_ntk(net, x), empirical_ntk(net, z, x)
    lin = linearize(net)
    with torch.no_grad():
        f_x, f_z = net(x), net(z)
    lr, n, steps = 0.5, len(x), 15
    train(lin, x, y, lr=lr, steps=steps)
    for _ in range(steps):
        r = f_x - y
        f_x, f_z = f_x - lr / n * theta @ r, f_z - lr / n * theta_zx @ r
    with torch.no_grad():
        torch.testing.assert_close(lin(x), f_x, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(lin(z), f_z, rtol=1e-9, atol=1e-11)


def test_trains_with_adam_and_moves_with_the_module(data):
    x, y = data[0].x, data[0].one_hot()
    lin = linearize(_net(out=10, activation="relu", depth=1))
    result = train(lin, x, y, lr=1e-2, steps=20, optimizer="adam")
    assert result.final_loss < result.losses[0]
    lin32 = lin.to(torch.float32)
    assert lin32(x.float()).dtype == torch.float32
    assert all(b.dtype == torch.float32 for b in lin32.base.buffers())


def test_frozen_parameters_stay_fixed_and_no_trainable_is_an_error(data):
    x = data[0].x[:4]
    net = _net(depth=1)
    net[1].weight.requires_grad_(False)
    lin = LinearizedModel(net)
    assert "1.linear.weight" not in lin.names and len(list(lin.parameters())) == 3
    torch.testing.assert_close(lin(x), net(x))
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        linearize(net)
