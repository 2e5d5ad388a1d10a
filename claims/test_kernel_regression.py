"""A trained wide network predicts what the closed-form NTK predictor predicts.

The seed paper's Figure 1 question (Wenger et al. 2023): are the predictions of a trained
network those of kernel regression with its NTK? In the kernel regime, gradient descent on the
MSE for time ``t = steps * lr`` gives (Lee et al. 2019, eq. 9, with the 1/(2N) loss;
:func:`ntkcheck.kernel_regime.predict.gradient_flow`)::

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

Practical regime (a separate test, same claim id; :data:`ntkcheck.PRACTICAL_REGIME`, README
"The practical regime"): the standard parametrization with He initialization, Adam at one
learning rate for every width (chosen on a grid at width 256), mini-batches of 128,
cross-entropy on the labels of 1,497 digits, trained until 99% training accuracy (or a loss
plateau, or an epoch cap). The kernel method it is compared with is the network's
linearization at initialization -- the model whose predictions are those of its NTK --
trained by the *same* optimizer at the same rate on the *same* mini-batches for the same
number of epochs, so a difference means the network is not a kernel method, not that
mini-batch Adam is not gradient flow (the closed form above only holds for gradient flow on
the MSE). The metric is ``||f_net(z) - f_lin(z)||_F / ||f_lin(z)||_F`` of the logits on the
300 held-out digits after training (:func:`ntkcheck.practical_run`; recorded too: both
held-out accuracies and the fraction of held-out digits both classify alike). Networks:
:data:`ntkcheck.PRACTICAL_SPECS` (the deep ones stop at the profile's practical width cap).

CNN setting (``test_kernel_regression_cnn``, same claim id): one 3x3 convolution of ``width``
channels, global average pooling and a dense read-out (NTK parametrization; ReLU and erf),
regressing the one-hot targets minus 1/10 of ``n_inputs // 4`` digits images (at least 8;
classification as regression, as Lee et al. 2019, Sec. 3, and Arora et al. 2019 do), with
``N_TEST`` held-out images. The closed form uses the CNTK with global average pooling
(Arora et al. 2019, :func:`ntkcheck.kernels.analytic_kernels`), the same kernel for each of
the 10 outputs (the infinite-width NTK over outputs is ``Theta ⊗ I``); the metric is the
relative RMSE over all held-out outputs. The same reasoning gives the same predicted slope
-1/2, with channels in place of units: the empirical NTK of a CNN converges to the CNTK as the
channels grow (Arora et al. 2019; Yang 2020, "Tensor Programs II", for any architecture), a
sum over channels with fluctuations O(channels^-1/2) at initialization (what ``ntk-at-init``
measures on CNNs), and it moves by O(1/channels) during training by the same counting as for
MLPs. The diagnostic ``error_init_ntk_digits`` uses the network's full-output empirical NTK at
initialization, its off-diagonal output blocks included.
"""

import pytest
import torch
from hypothesis import example, given

from ntkcheck import (
    PRACTICAL_SPECS,
    ArchSpec,
    analytic_kernels,
    empirical_ntk,
    gradient_flow,
    kernel_lr,
    load_dataset,
    measure_practical,
    ntk_gram,
    strategies,
    train,
)

DATASETS = ("sine1d", "diabetes")
#: Held-out inputs per data set.
N_TEST = 64
#: Pinned CNNs of the CNN setting: both have a closed-form CNTK (a GELU CNTK needs quadrature
#: at every pair of image positions, minutes for a dozen images).
CNNS = (ArchSpec(family="cnn", depth=1, activation="relu"),
        ArchSpec(family="cnn", depth=1, activation="erf"))

CLAIM = dict(
    id="kernel-regression",
    statement="A trained wide network predicts what the closed-form NTK predictor predicts "
              "at the same training time",
    source="Lee et al. 2019, eq. 9; Jacot et al. 2018, Sec. 5; Wenger et al. 2023, Fig. 1",
    metric="max over sine1d, diabetes (MLP), or digits one-hot (CNN), of "
           "||f_net(x) - f_t^NTK(x)|| / ||f_t^NTK(x)|| on held-out x",
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
    (:func:`ntkcheck.training.loops.kernel_lr`; the standard parametrization's NTK grows with the
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
def test_kernel_regression(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    kernel_regression_error(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile)


@pytest.mark.claim(**CLAIM, setting="practical")
@pytest.mark.parametrize("spec", PRACTICAL_SPECS, ids=lambda s: s.arch_id)
def test_kernel_regression_practical(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    """The practical regime (module docstring): the network against its linearization trained
    by the same optimizer on the same mini-batches."""
    measure_practical(spec, "lin_final_error", ntk_sweep, ntk_device, ntk_measure,
                      ntk_profile)


def _cnn_data(ntk_profile, device):
    """``(train, test)``: ``n_inputs // 4`` digits images (at least 8) and ``N_TEST`` more."""
    n_train = ntk_profile.n_cnn_inputs
    return load_dataset("digits", n=n_train + N_TEST, seed=0, device=device).split(n_train)


def _output_major(kernel: torch.Tensor) -> torch.Tensor:
    """``(N1, N2, O, O)`` -> ``(N1 O, N2 O)``, entry ``(i O + a, j O + b)`` (as ``ntk_gram``)."""
    n1, n2, o, _ = kernel.shape
    return kernel.permute(0, 2, 1, 3).reshape(n1 * o, n2 * o)


def kernel_regression_error_cnn(spec, sweep, device, measure, ntk_profile, reference=None):
    """Measure ``kernel-regression`` for one CNN over the sweep (module docstring).

    GD runs at ``N / lambda_max`` of ``spec``'s CNTK (:func:`ntkcheck.training.loops.kernel_lr`'s
    rate
    for the NTK parametrization, whose CNTK does not depend on the width; computed once).
    ``reference``: the architecture whose CNTK gives the closed form (``spec`` by default;
    another one is a negative control).
    """
    reference = reference or spec
    train_set, test_set = _cnn_data(ntk_profile, device)
    x, y, z = train_set.x, train_set.one_hot(), test_set.x
    n, n_out = y.shape
    theta = analytic_kernels(spec, x).ntk
    lr = n / float(torch.linalg.eigvalsh(theta)[-1])
    if reference != spec:
        theta = analytic_kernels(reference, x).ntk
    theta_zx = analytic_kernels(reference, z, x).ntk
    for width, seed in sweep:
        net = spec.with_width(width).build(seed=measure.seed(spec, width=width, seed=seed),
                                           input_shape=train_set.input_shape,
                                           out_features=n_out, device=device)
        with torch.no_grad():
            f0_x, f0_z = net(x), net(z)
        gram = ntk_gram(net, x)  # (N O, N O): the linearized network's kernel, all outputs
        gram_zx = _output_major(empirical_ntk(net, z, x, output="full"))
        result = train(net, x, y, lr=lr, steps=ntk_profile.train_steps)
        with torch.no_grad():
            f_z = net(z)
        closed = gradient_flow(theta, y, result.time, theta_zx, f0_train=f0_x, f0_test=f0_z)
        # gradient_flow divides time by the Gram's N O rows; the loss averages over N
        # examples, so the network's time t is t O in those units
        closed_init = gradient_flow(gram, y.reshape(-1, 1), result.time * n_out, gram_zx,
                                    f0_train=f0_x.reshape(-1, 1),
                                    f0_test=f0_z.reshape(-1, 1)).reshape(-1, n_out)
        err = _rel(f_z, closed)
        measure(spec, width=width, seed=seed, value=err, error_digits=err,
                error_init_ntk_digits=_rel(f_z, closed_init),
                train_loss_digits=result.final_loss, lr_digits=lr)


@pytest.mark.claim(**CLAIM)
@pytest.mark.parametrize("spec", CNNS, ids=lambda s: s.activation)
def test_kernel_regression_cnn(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    kernel_regression_error_cnn(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile)
