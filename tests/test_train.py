"""Training loops: units of the learning rate, optimizers, losses, targets and divergence."""

import math

import pytest
import torch

from ntkcheck.arch import ArchSpec, param_groups
from ntkcheck.data import load_dataset
from ntkcheck.kernels import empirical_ntk
from ntkcheck.training.loops import (
    TrainingDiverged,
    accuracy,
    cross_entropy_loss,
    gradient_descent,
    kernel_lr,
    mse_loss,
    steps_for_time,
    train,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n=32, seed=0)


def _net(width=64, out=1, **kw):
    return ArchSpec(depth=1, activation="erf", **kw).with_width(width).build(
        seed=0, input_shape=(1, 8, 8), out_features=out)


def _params(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def test_mse_loss_is_half_mean_squared_norm_and_refuses_broadcasting():
    out = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert float(mse_loss(out, torch.zeros(2, 2))) == pytest.approx(0.5 * 30 / 2)
    with pytest.raises(ValueError, match="differ"):
        mse_loss(torch.zeros(3, 1), torch.zeros(3))


def test_one_step_moves_outputs_by_lr_over_n_times_ntk(digits):
    """The module's unit convention: f_1 - f_0 = -(lr/N) Theta (f_0 - y) to first order."""
    x, y = digits.x, digits.regression_targets()
    net = _net(width=256)
    theta = empirical_ntk(net, x)
    with torch.no_grad():
        f0 = net(x)
    lr = 1e-4
    train(net, x, y, lr=lr, steps=1)
    with torch.no_grad():
        change = net(x) - f0
    predicted = -(lr / len(x)) * theta @ (f0 - y)
    assert float(torch.linalg.norm(change - predicted) / torch.linalg.norm(predicted)) < 1e-3


def test_gradient_descent_keeps_its_contract(digits):
    x, y = digits.x, digits.regression_targets()
    losses = gradient_descent(_net(), x, y, lr=1.0, steps=5)
    assert len(losses) == 6 and losses[-1] < losses[0]
    result = train(_net(), x, y, lr=1.0, steps=5)
    assert result.losses == losses and result.steps == 5 and result.time == 5.0
    assert result.reached is None and not result.diverged


def test_target_loss_stops_early_and_reports(digits):
    x, y = digits.x, digits.regression_targets()
    result = train(_net(), x, y, lr=2.0, steps=500, target_loss=0.1)
    assert result.reached and result.final_loss <= 0.1 < result.losses[-2]
    assert len(result.losses) == result.steps + 1 < 500
    missed = train(_net(), x, y, lr=1e-3, steps=3, target_loss=1e-6)
    assert missed.reached is False and missed.steps == 3


def test_callback_sees_every_step_including_the_start(digits):
    seen = []
    train(_net(), digits.x, digits.regression_targets(), lr=1.0, steps=4,
          callback=lambda k, m: seen.append((k, torch.is_grad_enabled())))
    assert seen == [(k, False) for k in range(5)]


def test_full_batch_sgd_equals_gd_and_minibatches_are_seeded(digits):
    x, y = digits.x, digits.regression_targets()
    a, b = _net(), _net()
    train(a, x, y, lr=0.5, steps=5)
    train(b, x, y, lr=0.5, steps=5, optimizer="sgd", batch_size=len(x))
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=1e-12)
    runs = []
    for seed in (0, 0, 1):
        net = _net()
        train(net, x, y, lr=0.5, steps=6, optimizer="sgd", batch_size=8, seed=seed)
        runs.append(_params(net))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_minibatch_epoch_visits_every_example_once(digits, monkeypatch):
    x, y = digits.x, digits.regression_targets()
    net = _net()
    batches = []
    forward = net.forward

    def spy(inp):
        if inp.shape[0] != len(x):
            batches.append(inp)
        return forward(inp)

    monkeypatch.setattr(net, "forward", spy)
    train(net, x, y, lr=0.1, steps=4, optimizer="sgd", batch_size=8)  # one epoch of 32
    seen = torch.cat(batches)
    assert seen.shape == x.shape
    rows = {tuple(r.reshape(-1).tolist()) for r in seen}
    assert rows == {tuple(r.reshape(-1).tolist()) for r in x}


def test_adam_and_cross_entropy_train_to_a_target_accuracy(digits):
    x, labels = digits.x, digits.y
    net = _net(width=128, out=10)
    result = train(net, x, labels, lr=1e-2, steps=300, optimizer="adam",
                   loss="cross_entropy", target_accuracy=1.0)
    assert result.reached and result.accuracies[-1] == 1.0
    assert result.accuracies[0] < 0.5 and len(result.accuracies) == len(result.losses)


def test_one_hot_regression_accuracy(digits):
    y = digits.one_hot()
    assert accuracy(y, digits.y) == 1.0 and accuracy(y, y) == 1.0
    assert accuracy(-y, digits.y) == 0.0
    with pytest.raises(ValueError, match="C >= 2"):
        accuracy(torch.zeros(3, 1), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        cross_entropy_loss(torch.zeros(3, 2), torch.zeros(3, 2))


def test_divergence_raises_or_is_reported(digits):
    x, y = digits.x, digits.regression_targets()
    with pytest.raises(TrainingDiverged, match="smaller learning rate"):
        train(_net(), x, y, lr=1e4, steps=50)
    result = train(_net(), x, y, lr=1e4, steps=50, raise_on_divergence=False)
    assert result.diverged and result.steps < 50 and not math.isfinite(result.final_loss)
    stopped = train(_net(), x, y, lr=1e2, steps=50, diverge_factor=1.0,
                    raise_on_divergence=False)
    assert stopped.diverged and stopped.final_loss > stopped.losses[0]


def test_param_groups_give_per_layer_rates(digits):
    """muP groups through ``params``: the input layer moves with lr * width (arch docs)."""
    x, y = digits.x, digits.regression_targets()
    net = ArchSpec(depth=1, activation="relu", parametrization="mup").with_width(32).build(
        seed=0, input_shape=(1, 8, 8))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    groups = param_groups(net, 1e-3)
    train(net, x, y, lr=1e-3, steps=1, params=groups)
    moved = {n: float((p.detach() - before[n]).norm()) for n, p in net.named_parameters()}
    assert all(v > 0 for v in moved.values())
    assert {g["name"]: g["lr"] for g in groups}["1.linear.weight"] == pytest.approx(1e-3 * 32)


def test_steps_for_time_and_argument_checks(digits):
    assert steps_for_time(2.0, 0.5) == 4 and steps_for_time(0.0, 1.0) == 0
    x, y = digits.x, digits.regression_targets()
    for bad in (dict(lr=0.0), dict(lr=float("nan")), dict(steps=-1), dict(optimizer="lbfgs"),
                dict(loss="hinge"), dict(optimizer="sgd"), dict(batch_size=0),
                dict(batch_size=len(x) + 1)):
        kwargs = dict(lr=0.1, steps=1) | bad
        with pytest.raises(ValueError):
            train(_net(), x, y, **kwargs)
    with pytest.raises(ValueError):
        steps_for_time(-1.0, 0.1)


def test_kernel_lr(digits):
    """NTK/standard: N / lambda_max of the analytic Gram. muP: of the lr-weighted empirical
    NTK, which for one hidden layer equals the NTK parametrization's empirical NTK of the same
    stored parameters (the read-out's 1/n multiplier times its n-fold rate, the input layer's
    n-fold rate times the 1/n^2 of its back-propagated signal), per output unit."""
    from ntkcheck.kernels import analytic_kernels

    x = digits.x
    ntk = ArchSpec(depth=1, activation="relu")
    lr, params = kernel_lr(ntk.with_width(64), _net(), x)
    expected = len(x) / float(torch.linalg.eigvalsh(analytic_kernels(ntk, x).ntk)[-1])
    assert params is None and lr == pytest.approx(expected, rel=1e-12)
    std = ArchSpec(depth=1, activation="relu", parametrization="standard").with_width(512)
    lr_std, _ = kernel_lr(std, None, x)
    assert lr_std < lr / 10  # the standard NTK grows with the width
    mup = ArchSpec(depth=1, activation="relu", parametrization="mup").with_width(64)
    for out in (1, 3):
        net_mup = mup.build(seed=0, input_shape=(1, 8, 8), out_features=out)
        net_ntk = ntk.with_width(64).build(seed=0, input_shape=(1, 8, 8), out_features=out)
        lr_mup, groups = kernel_lr(mup, net_mup, x, factor=0.5)
        gram = empirical_ntk(net_ntk, x) / out
        assert lr_mup == pytest.approx(0.5 * len(x) / float(torch.linalg.eigvalsh(gram)[-1]),
                                       rel=1e-10)
        assert {g["name"]: g["lr"] for g in groups}["1.linear.weight"] == pytest.approx(lr_mup * 64)
    cnn = ArchSpec(family="cnn", depth=1, activation="erf")  # the CNTK's largest eigenvalue
    lr_cnn, params = kernel_lr(cnn.with_width(16), cnn.with_width(16).build(
        seed=0, input_shape=(1, 8, 8)), x[:8])
    lam = float(torch.linalg.eigvalsh(analytic_kernels(cnn, x[:8]).ntk)[-1])
    assert params is None and lr_cnn == pytest.approx(8 / lam, rel=1e-12)
