"""A trained wide network predicts what the closed-form NTK predictor predicts.

The seed paper's Figure 1 question (Wenger et al. 2023): are the predictions of a trained
network those of kernel regression with its NTK? In the kernel regime, gradient descent on the
MSE for time ``t = steps * lr`` gives (Lee et al. 2019, eq. 9, with the 1/(2N) loss;
:func:`ntkcheck.predict.gradient_flow`)::

    f_t(x) = f_0(x) + Theta(x, X) Theta^-1 (I - exp(-Theta t / N)) (Y - f_0(X))

with ``Theta`` the analytic (infinite-width) NTK and ``f_0`` the network's own outputs at
initialization (so the comparison is of one network with one closed form, not of a random
network with the mean over initializations). The trained network differs from it through the
fluctuation of its NTK at initialization, O(width^-1/2) (Hanin & Nica 2020), and through the
NTK's movement during training, O(1/width): the predicted slope is -1/2.

Data: a 1-D toy (``sine1d``) and a real regression set (scikit-learn's ``diabetes``), each
with held-out inputs; the metric is the larger of the two relative RMSEs
``||f_net(x) - f_t(x)|| / ||f_t(x)||`` on held-out inputs (both are recorded). Also recorded:
the same error against the closed form with the network's *empirical* NTK at initialization
(the linearized network's exact prediction).

Practical setting (a separate test, same claim id): the standard parametrization with He
initialization trained by mini-batch SGD (batch 8) instead of gradient flow, against the
standard-parametrization NTK predictor at the same time ``t = steps * lr``.
"""

import pytest
import torch
from hypothesis import example, given

from ntkcheck import strategies
from ntkcheck.arch import ArchSpec
from ntkcheck.data import load_dataset
from ntkcheck.kernels import analytic_kernels, empirical_ntk
from ntkcheck.predict import gradient_flow
from ntkcheck.train import kernel_lr, train

DATASETS = ("sine1d", "diabetes")
#: Held-out inputs per data set.
N_TEST = 64
PRACTICAL = ArchSpec(depth=1, activation="relu", parametrization="standard",
                     weight_std=2**0.5)
BATCH = 8

CLAIM = dict(
    id="kernel-regression",
    statement="A trained wide network predicts what the closed-form NTK predictor predicts "
              "at the same training time",
    source="Lee et al. 2019, eq. 9; Jacot et al. 2018, Sec. 5; Wenger et al. 2023, Fig. 1",
    metric="max over sine1d, diabetes of ||f_net(x) - f_t^NTK(x)|| / ||f_t^NTK(x)|| on "
           "held-out x",
    tolerance=0.05,
    rate=-0.5,
)


def _data(ntk_profile, device):
    out = {}
    for name in DATASETS:
        data = load_dataset(name, n=ntk_profile.n_inputs + N_TEST, seed=0, device=device)
        out[name] = data.split(ntk_profile.n_inputs)
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _measure_one(spec, reference, width, init, train_set, test_set, steps, device,
                 **train_kwargs):
    """Train one network; return (error vs the closed form with ``reference``'s analytic NTK,
    error vs the closed form with the network's NTK at initialization, final training loss,
    learning rate)."""
    x, y, z = train_set.x, train_set.regression_targets(), test_set.x
    net = spec.with_width(width).build(seed=init, input_shape=train_set.input_shape,
                                       device=device)
    with torch.no_grad():
        f0_x, f0_z = net(x), net(z)
    theta_xx, theta_zx = empirical_ntk(net, x), empirical_ntk(net, z, x)
    lr, _ = kernel_lr(spec.with_width(width), net, x)
    result = train(net, x, y, lr=lr, steps=steps, **train_kwargs)
    with torch.no_grad():
        f_z = net(z)
    exact = analytic_kernels(reference.with_width(width), x).ntk
    exact_zx = analytic_kernels(reference.with_width(width), z, x).ntk
    closed = gradient_flow(exact, y, result.time, exact_zx, f0_train=f0_x, f0_test=f0_z)
    closed_init = gradient_flow(theta_xx, y, result.time, theta_zx, f0_train=f0_x,
                                f0_test=f0_z)
    return _rel(f_z, closed), _rel(f_z, closed_init), result.final_loss, lr


def kernel_regression_error(spec, sweep, device, measure, ntk_profile, reference=None,
                            **train_kwargs):
    """Measure ``kernel-regression`` for one architecture over the sweep.

    GD (or ``train_kwargs``' optimizer) runs at the kernel regime's rate N / lambda_max
    (:func:`ntkcheck.train.kernel_lr`; the standard parametrization's NTK grows with the
    width). ``reference``: the architecture whose analytic NTK gives the closed form (``spec``
    itself by default; another one is a negative control).
    """
    reference = reference or spec
    data = _data(ntk_profile, device)
    for width, seed in sweep:
        init = measure.seed(spec, width=width, seed=seed)
        extra, errors = {}, []
        for name, (train_set, test_set) in data.items():
            err, err_init, loss, lr = _measure_one(spec, reference, width, init, train_set,
                                                   test_set, ntk_profile.train_steps, device,
                                                   **train_kwargs)
            errors.append(err)
            extra.update({f"error_{name}": err, f"error_init_ntk_{name}": err_init,
                          f"train_loss_{name}": loss, f"lr_{name}": lr})
        measure(spec, width=width, seed=seed, value=max(errors), **extra)


@pytest.mark.claim(**CLAIM)
@given(spec=strategies.mlps(min_depth=1, max_depth=1, parametrizations=("ntk",)))
@example(spec=ArchSpec(depth=1, activation="relu"))
@example(spec=ArchSpec(depth=1, activation="erf"))
def test_kernel_regression(spec, sweep, device, measure, ntk_profile):
    kernel_regression_error(spec, sweep, device, measure, ntk_profile)


@pytest.mark.claim(**CLAIM)
def test_kernel_regression_practical(sweep, device, measure, ntk_profile):
    kernel_regression_error(PRACTICAL, sweep, device, measure, ntk_profile, optimizer="sgd",
                            batch_size=BATCH)
