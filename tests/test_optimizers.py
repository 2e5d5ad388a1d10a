"""Practitioner optimizers (ntkcheck.optim.optimizers) and the small second-order helpers.

The mini-batch Gauss-Newton direction for cross-entropy is checked against the damped
parameter-space solve with the Jacobian and the softmax Hessian formed explicitly; K-FAC
against its definition on one layer (curvlinops' operator vs the Kronecker product of the
factors is curvlinops' own test, so here: it trains, rejects custom layers, and a step with a
huge damping is a scaled gradient step).
"""

from __future__ import annotations

import math

import pytest
import torch

from ntkcheck.arch import ArchSpec
from ntkcheck.data import load_dataset
from ntkcheck.optim.jacobian import jacobian_matrix
from ntkcheck.optim.natural_gradient import (
    max_stability_constant,
    mean_log_contraction,
    orthogonal_inputs,
    width_for_tolerance,
)
from ntkcheck.optim.optimizers import OPTIMIZERS, Curve, _ngd_direction, fit, plain_mlp, tune_lr


def _digits(n_train=120, n_test=60):
    d = load_dataset("digits", n=n_train + n_test, seed=0, dtype=torch.float32)
    x = d.x.reshape(len(d), -1)
    return (x[:n_train], d.y[:n_train]), (x[n_train:], d.y[n_train:])


def test_max_stability_constant_solves_zhang_condition():
    for eta in (0.1, 0.5, 0.9, 1.0):
        c = max_stability_constant(eta)
        assert 0 <= c < 0.5
        assert (1 - 2 * c) / (1 + c) ** 2 == pytest.approx(eta, rel=1e-12)
    assert max_stability_constant(0.5) == pytest.approx(0.16227766, rel=1e-7)
    with pytest.raises(ValueError, match="eta"):
        max_stability_constant(1.5)


def test_width_for_tolerance_and_mean_log_contraction():
    # C' = 2.6 at 4096 with rate -1/4 reaches 0.162 at 4096 * (2.6/0.162)^4
    assert width_for_tolerance(4096, 2.6, 0.162, -0.25) == pytest.approx(
        4096 * (2.6 / 0.162) ** 4)
    assert width_for_tolerance(64, 0.1, 0.162, -0.25) == 64.0
    with pytest.raises(ValueError):
        width_for_tolerance(64, 0.1, 0.162, 0.0)
    assert mean_log_contraction([1.0, 0.25, 0.0625]) == pytest.approx(math.log(0.25))
    with pytest.raises(ValueError):
        mean_log_contraction([1.0])


def test_orthogonal_inputs():
    x, y = orthogonal_inputs(4, 16)
    assert x.shape == (4, 16) and y.shape == (4, 1)
    assert torch.allclose(x @ x.T, 16 * torch.eye(4, dtype=x.dtype))
    with pytest.raises(ValueError):
        orthogonal_inputs(5, 4)


def test_ngd_cross_entropy_direction_equals_parameter_space_solve():
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    net = ArchSpec(depth=1, activation="erf").with_width(6).build(
        seed=0, input_shape=(3,), out_features=3)
    damping = 0.3
    got = _ngd_direction(net, x, y, "cross_entropy", damping)
    got = torch.cat([t.reshape(-1) for t in got.values()])
    jac = jacobian_matrix(net, x)  # (N*O, P)
    with torch.no_grad():
        p = torch.softmax(net(x), dim=1)
    h = torch.block_diag(*[torch.diag(pi) - torch.outer(pi, pi) for pi in p])
    r = (p - torch.nn.functional.one_hot(y, 3).to(p)).reshape(-1)
    want = torch.linalg.solve(jac.T @ h @ jac + damping * torch.eye(jac.shape[1],
                                                                   dtype=jac.dtype), jac.T @ r)
    assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_lowers_the_held_out_loss_and_records_a_curve(optimizer):
    train, test = _digits(48, 40) if optimizer == "ngd" else _digits()  # ngd: N*O Gram
    net = plain_mlp(64, 16, 1, 10, seed=0)
    lr = {"sgd": 0.05, "adam": 3e-3, "kfac": 0.1, "ngd": 0.2}[optimizer]
    curve = fit(net, train, test, optimizer=optimizer, lr=lr, batch_size=16, epochs=2,
                damping=0.1 if optimizer != "ngd" else 1.0, curvature_every=2)
    assert not curve.diverged
    assert curve.points[0].step == 0 and curve.points[-1].epoch == pytest.approx(2.0)
    assert curve.points[-1].test_loss < curve.points[0].test_loss
    assert all(b.seconds >= a.seconds for a, b in zip(curve.points, curve.points[1:]))
    back = Curve.from_json(curve.to_json())
    assert back.points == [type(p)(p.step, round(p.epoch, 4), round(p.seconds, 4),
                                   p.train_loss, p.test_loss, p.test_accuracy)
                           for p in curve.points]


def test_fit_mse_full_batch_and_target_stop():
    train, test = _digits(60, 30)
    y_tr = torch.nn.functional.one_hot(train[1], 10).float()
    y_te = torch.nn.functional.one_hot(test[1], 10).float()
    curve = fit(plain_mlp(64, 16, 1, 10, seed=1), (train[0], y_tr), (test[0], y_te),
                optimizer="kfac", lr=0.3, loss="mse", epochs=20, damping=0.1,
                target_test_loss=1e9)
    assert len(curve.points) == 1  # the target is met at initialization
    assert curve.time_to(1e9) == (0.0, 0.0)
    assert curve.batch_size == 60


def test_divergence_is_flagged_and_tuning_picks_a_finite_run():
    train, test = _digits()
    net = plain_mlp(64, 16, 1, 10, seed=0)
    curve = fit(net, train, test, optimizer="sgd", lr=1e4, batch_size=32, epochs=2)
    assert curve.diverged
    tuned = tune_lr(plain_mlp(64, 16, 1, 10, seed=0), train, test, optimizer="adam",
                    grid=(1e-3, 1e3), epochs=1, batch_size=32)
    tried = dict(tuned.tried)
    assert tuned.lr == 1e-3 and tried[1e3] > tried[1e-3]


def test_bad_input_is_rejected_with_the_cause():
    train, test = _digits(40, 20)
    net = plain_mlp(64, 8, 1, 10, seed=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        fit(net, train, test, optimizer="lbfgs", lr=1.0)
    with pytest.raises(ValueError, match="lr"):
        fit(net, train, test, optimizer="adam", lr=-1.0)
    with pytest.raises(ValueError, match="damping"):
        fit(net, train, test, optimizer="ngd", lr=1.0, damping=0.0)
    custom = ArchSpec(depth=1).with_width(8).build(seed=0, input_shape=(64,), out_features=10)
    if any(not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in custom.modules()
           if list(m.parameters(recurse=False))):
        with pytest.raises(ValueError, match="nn.Linear"):
            fit(custom, (train[0].double(), train[1]), (test[0].double(), test[1]),
                optimizer="kfac", lr=0.1)
    with pytest.raises(ValueError, match="not a Curve"):
        Curve.from_json("{}")
