"""Wide networks train like their linearization.

Lee et al. 2019, Theorem 2.1: under gradient descent on the MSE with a learning rate below
the kernel-regime stability limit, an NTK-parametrized network ``f(x; theta_t)`` and its
first-order Taylor model ``f_lin(x; theta_t^lin)``
(:func:`ntkcheck.kernel_regime.linearize.linearize`,
trained from the same initialization with the same optimizer and data) stay within
O(width^-1/2) of each other for all training time, on any input. That is an upper bound: the
deviation obeys ``d(f - f_lin)/dt = -(1/N) [Theta_0 (f - f_lin) + (Theta_t - Theta_0)(f - Y)]``,
driven by the NTK's change, which is O(1/width) over a fixed time (Dyer & Gur-Ari 2020,
Huang & Yau 2020; the ``lazy-kernel`` claim). The claim predicts that sharper slope, -1.
Measured beyond the ``quick`` sweep (``python scripts/lazy_rate_study.py``, 3 seeds): with erf
-0.93 [-0.98, -0.87] over widths 64..16384, the same at a ten times smaller learning rate over
the same time, and -1.11 [-1.27, -0.94] over 4096..65536; with ReLU, whose activation pattern
changes during training (the -1 counting assumes a smooth activation), -0.72 over 64..16384 and
-0.76 [-0.84, -0.68] over 4096..65536, about -3/4.

Measured on held-out digits (inputs not trained on), with the one-hot regression targets of
the NTK literature (Lee et al. 2019, Sec. 3: one-hot minus 1/C, 10 outputs), as the largest
relative deviation over every training step.

Practical regime (a separate test, same claim id; :data:`ntkcheck.PRACTICAL_REGIME`, README
"The practical regime"): the standard parametrization with He initialization, Adam at one
learning rate for every width (chosen on a grid at width 256), mini-batches of 128,
cross-entropy on the labels of 1,497 digits, trained until 99% training accuracy (or a loss
plateau, or an epoch cap). The linearization at initialization is trained by the *same*
optimizer at the same rate on the *same* mini-batches for the same number of epochs, so the
comparison isolates the theory's one assumption, that the network is its linearization: the
metric is the largest relative deviation of the logits on the 300 held-out digits over the
epochs (:func:`ntkcheck.practical_run`). Networks: :data:`ntkcheck.PRACTICAL_SPECS` (a
one-hidden-layer ReLU MLP, the seed paper's depth-3 MLP and CNN; the deep ones stop at the
profile's practical width cap).

CNN (``test_linearized_dynamics_cnn``, same claim id): a depth-1 NTK-parametrized CNN (one 3x3
conv of ``width`` channels with erf, global average pooling, dense read-out) on a quarter of
the training and held-out digits images (at least 8 and 8: a training step costs O(N HW
width), and the deviation is evaluated on the held-out images at every step). The rate -1
carries over with the channels as the width: the read-out's sum over channels after global
average pooling carries the same 1/sqrt(width) multiplier as an MLP's hidden layer, so the NTK
moves by O(1/width) over a fixed time (see :mod:`test_lazy_training`, which also explains erf).
"""

import pytest
import torch
from hypothesis import example, given

from ntkcheck import (
    PRACTICAL_SPECS,
    ArchSpec,
    kernel_lr,
    linearize,
    load_dataset,
    measure_practical,
    strategies,
    train,
)

#: Held-out digits the deviation is measured on.
N_TEST = 32
#: The CNN setting (module docstring).
CNN = ArchSpec(family="cnn", depth=1, activation="erf")

CLAIM = dict(
    id="linearized-dynamics",
    statement="A wide network and its linearization stay close for all training time",
    source="Lee et al. 2019, Thm 2.1 (O(width^-1/2) bound); rate -1: Dyer & Gur-Ari 2020",
    metric="sup_t ||f(x; θ_t) - f_lin(x; θ_t^lin)||_F / ||f(x; θ_t)||_F on held-out digits, "
           "one-hot MSE",
    tolerance=0.05,
    rate=-1.0,
)


def _deviation(net, lin, x, y, z, steps, kwargs, lin_kwargs) -> tuple[float, float, float]:
    """Train ``net`` and ``lin`` alike; return (sup over steps of the relative deviation on
    ``z``, final training loss of the network, of the linearization)."""
    outs: list[torch.Tensor] = []
    result = train(net, x, y, steps=steps, callback=lambda k, m: outs.append(m(z)), **kwargs)
    devs: list[float] = []

    def compare(k: int, m: torch.nn.Module) -> None:
        devs.append(float(torch.linalg.norm(outs[k] - m(z)) / torch.linalg.norm(outs[k])))

    result_lin = train(lin, x, y, steps=steps, callback=compare, **lin_kwargs)
    return max(devs), result.final_loss, result_lin.final_loss


def linearized_deviation(spec, sweep, device, measure, ntk_profile):
    """Measure ``linearized-dynamics`` for one architecture over the sweep.

    GD runs at the kernel regime's rate N / lambda_max
    (:func:`ntkcheck.training.loops.kernel_lr`, muP with its per-layer rates, which the
    linearization gets too).
    """
    n_train, n_test = ntk_profile.n_inputs, N_TEST
    if spec.input_kind == "image":  # the CNN setting: a quarter of the images
        n_train, n_test = ntk_profile.n_cnn_inputs, max(8, n_test // 4)
    data = load_dataset("digits", n=n_train + n_test, seed=0, device=device)
    train_set, test_set = data.split(n_train)
    x, y, z = train_set.x, train_set.one_hot(), test_set.x
    for width, seed in sweep:
        net = spec.with_width(width).build(seed=measure.seed(spec, width=width, seed=seed),
                                           input_shape=train_set.input_shape,
                                           out_features=train_set.n_classes, device=device)
        lin = linearize(net)
        lr, groups = kernel_lr(spec.with_width(width), net, x)
        kwargs = dict(lr=lr, params=groups)
        lin_kwargs = dict(params=lin.param_groups(groups)) if groups else {}
        dev, loss, loss_lin = _deviation(net, lin, x, y, z, ntk_profile.train_steps, kwargs,
                                         kwargs | lin_kwargs)
        measure(spec, width=width, seed=seed, value=dev, train_loss=loss,
                train_loss_lin=loss_lin, lr=kwargs["lr"], optimizer="gd")


@pytest.mark.claim(**CLAIM)
@given(spec=strategies.mlps(min_depth=1, max_depth=1, parametrizations=("ntk",),
                            biases=(True,)))
@example(spec=ArchSpec(depth=1, activation="relu"))
@example(spec=ArchSpec(depth=1, activation="erf"))
def test_linearized_dynamics(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    linearized_deviation(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile)


@pytest.mark.claim(**CLAIM, setting="practical")
@pytest.mark.parametrize("spec", PRACTICAL_SPECS, ids=lambda s: s.arch_id)
def test_linearized_dynamics_practical(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    """The practical regime (module docstring): network and linearization trained alike."""
    measure_practical(spec, "lin_deviation", ntk_sweep, ntk_device, ntk_measure, ntk_profile)


@pytest.mark.claim(**CLAIM)
def test_linearized_dynamics_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    linearized_deviation(CNN, ntk_sweep, ntk_device, ntk_measure, ntk_profile)
