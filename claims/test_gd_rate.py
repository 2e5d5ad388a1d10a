"""Gradient descent on a wide network converges at the rate the NTK's spectrum sets.

In the kernel regime, full-batch GD on the MSE (1/(2N) convention, learning rate ``lr``)
evolves the training residual ``r_k = f_k(X) - Y`` as ``r_{k+1} = (I - lr Theta / N) r_k``:
exactly for the linearized network (Lee et al. 2019, "Wide neural networks of any depth evolve
as linear models under gradient descent", Sec. 2.2, eqs. 8-9 with gradient descent in place
of gradient flow), and for the network itself up to an error that vanishes as the width grows,
per eigendirection of the NTK Gram: Arora et al. 2019 ("Fine-grained analysis of optimization
and generalization for overparameterized two-layer neural networks", Thm 4.1) prove
``||r_k|| = sqrt(sum_i (1 - lr lambda_i / N)^(2k) (v_i . r_0)^2) +- eps`` with ``eps -> 0`` as
the width grows, for one-hidden-layer ReLU networks (their loss has no 1/N: their ``eta`` is
``lr / N`` here); Lee et al. 2019 (Thm 2.1) prove the network-linearization distance
O(width^-1/2) for smooth activations at any depth. (Du et al. 2018, "Gradient descent provably
optimizes over-parameterized neural networks", Thm 4.1, is the bound
``||r_k||^2 <= (1 - lr lambda_min / (2N))^k ||r_0||^2``, a rate at least half the exact one:
not the claim's prediction.) Two claims:

* ``gd-rate``: along the eigenvector of ``lambda_min`` of the network's NTK Gram at
  initialization the residual contracts by ``1 - lr lambda_min / N`` per step. The targets are
  ``Y = f_0(X) - sqrt(N) v_min`` (digits inputs), so the initial residual lies along that
  direction with unit size per example; the metric is the relative error of the measured rate
  ``-log(||r_K|| / ||r_0||) / K`` against ``-log(1 - lr lambda_min / N)``. Only the NTK's
  movement during training can change the rate, O(1/width) for a smooth activation (Dyer &
  Gur-Ari 2020), amplified by ``lambda_max / lambda_min``: the predicted slope -1. Drawn:
  smooth activations (erf, GELU) at depth 1, as Lee et al. 2019 assume; pinned: erf and ReLU
  at depth 1 (``test_gd_rate_relu``), the setting of Arora et al.'s theorem. Their Thm 4.1
  trains the hidden layer only; here the read-out is trained too, which adds its own term
  (the NNGP kernel of the hidden features, linear in the read-out weights) to the NTK Gram
  that the prediction uses. The -1 counting assumes a smooth activation; for ReLU, whose units
  near the kink switch during training, the NTK moves more slowly to its limit
  (``claims/test_lazy_training.py``: slope about -3/4 to -0.9), and the report shows whether
  its fit is consistent with -1.
  Depth (``test_gd_rate_depth``): the pinned erf MLP at every depth of ``Profile.depths``
  (depths >= 2 up to ``Profile.depth_width_cap``: 1024 in ``quick``), each its own
  architecture id; Lee et al.'s Thm 2.1 holds at any fixed depth, and the NTK's movement that
  perturbs the rate grows with depth / width (Hanin & Nica 2020), so the width the claim
  needs should grow with depth.
* ``gd-stable-lr``: the largest learning rate at which the loss never rises above its initial
  value is ``2N / lambda_max`` (the top residual mode is multiplied by ``1 - lr lambda_max /
  N``). Targets ``Y = f_0(X) - sqrt(N) v_max`` of the *analytic* NTK Gram; the rate is found by
  bisection; the metric is ``|lr* lambda_max / (2N) - 1|``. The network's own ``lambda_max``
  fluctuates by O(width^-1/2) around the analytic one (slope -1/2). Each trial runs at most
  ``STABILITY_STEPS`` steps: in the kernel regime the top mode grows from the first step
  above the limit and shrinks from the first step below it. Recorded as well: whether
  training at 1.5x that limit still converges within the step budget, which theory for the
  kernel regime excludes and the catapult mechanism of finite networks allows (Lewkowycz et
  al. 2020, "The large learning rate phase of deep learning").

CNN setting (``test_gd_rate_cnn``, ``test_gd_stable_lr_cnn``, same claim ids): one 3x3
convolution of ``width`` channels, global average pooling and a dense read-out (NTK
parametrization) on ``n_inputs // 4`` digits images (``Profile.n_cnn_inputs``, at least 8;
a CNTK costs O(N^2 (HW)^2)); the analytic NTK is the CNTK
with global average pooling (Arora et al. 2019, :func:`ntkcheck.kernels.analytic_kernels`).
The predicted slopes are the same, with channels in place of units: the empirical NTK of a
CNN is a sum over channels that converges to the CNTK (Arora et al. 2019; Yang 2020, "Tensor
Programs II"), with O(channels^-1/2) fluctuations at initialization and O(1/channels) movement
during training by the same counting as for MLPs. ``gd-rate`` pins erf, a smooth
activation with a closed-form dual (GELU's CNTK needs quadrature at every pair of image
positions: minutes for a dozen images); ``gd-stable-lr`` pins erf and ReLU, as for MLPs.
"""

import math

import pytest
import torch
from hypothesis import assume, example, given

from ntkcheck import (
    DEPTH_CAP_REASON,
    ArchSpec,
    analytic_kernels,
    empirical_ntk,
    kernel_lr,
    lr_weighted_ntk,
    strategies,
    train,
)

#: Bisection steps for the largest stable learning rate, on [0.5, 1.5] x 2N / lambda_max
#: (resolution 1e-3).
BISECTIONS = 10
#: Most steps of one stability trial.
STABILITY_STEPS = 20
#: Multiple of 2N / lambda_max at which convergence through the catapult is recorded.
CATAPULT = 1.5

#: Pinned CNNs (module docstring).
CNN_ERF = ArchSpec(family="cnn", depth=1, activation="erf")
CNN_RELU = ArchSpec(family="cnn", depth=1, activation="relu")

#: The architecture ``test_gd_rate_depth`` sweeps over ``Profile.depths`` (smooth, as Lee
#: et al. 2019, Thm 2.1, assume at any depth).
DEPTH_SPEC = ArchSpec(depth=1, activation="erf")

SMOOTH = strategies.mlps(min_depth=1, max_depth=1, activations=("erf", "gelu"),
                         parametrizations=("ntk",), biases=(True,))


def gd_rate_error(spec, sweep, device, measure, data, ntk_profile):
    """Measure ``gd-rate`` for one architecture over the sweep (GD at ``N / lambda_max`` of
    the analytic NTK, :func:`ntkcheck.training.loops.kernel_lr`; muP with its per-layer rates)."""
    x, n, steps = data.x, len(data.x), ntk_profile.train_steps
    for width, seed in sweep:
        net = spec.with_width(width).build(seed=measure.seed(spec, width=width, seed=seed),
                                           input_shape=data.input_shape, device=device)
        lr, params = kernel_lr(spec.with_width(width), net, x)
        # the kernel GD follows: muP's is weighted by its per-layer rates
        gram = empirical_ntk(net, x) if params is None else lr_weighted_ntk(net, x, params, lr)
        lam, vec = torch.linalg.eigh(gram)
        with torch.no_grad():
            y = net(x) - math.sqrt(n) * vec[:, :1]
        losses = train(net, x, y, lr=lr, steps=steps, params=params).losses
        measured = -0.5 * math.log(losses[-1] / losses[0]) / steps
        predicted = -math.log(1 - lr * float(lam[0]) / n)
        measure(spec, width=width, seed=seed, value=abs(measured / predicted - 1),
                lam_min=float(lam[0]), lam_max=float(lam[-1]), lr=lr)


RATE = dict(
    id="gd-rate",
    statement="GD on the MSE contracts the residual along the slowest NTK eigendirection by "
              "1 - lr λ_min / N per step",
    source="Lee et al. 2019, Sec. 2.2, eqs. 8-9 (linearized GD) and Thm 2.1; Arora et al. "
           "2019, Thm 4.1 (two-layer ReLU, per eigendirection); rate: Dyer & Gur-Ari 2020",
    metric="|measured / predicted - 1| of the per-step log-contraction along v_min of the "
           "NTK Gram at init (digits; digits images for CNNs)",
    tolerance=0.1,
    rate=-1.0,
)


@pytest.mark.claim(**RATE)
@given(spec=SMOOTH)
def test_gd_rate(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    # the erf MLP is measured at every depth by test_gd_rate_depth
    assume(spec.arch_id not in {s.arch_id for s in ntk_profile.depth_sweep(DEPTH_SPEC)})
    gd_rate_error(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile)


@pytest.mark.claim(**RATE)
def test_gd_rate_depth(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    """The erf MLP at every depth of the profile, each its own architecture id (module
    docstring, "Depth"); depths >= 2 up to ``Profile.depth_width_cap``."""
    for spec in ntk_profile.depth_sweep(DEPTH_SPEC):
        units = list(ntk_measure.capped(spec, ntk_sweep, ntk_profile.depth_width_cap(spec),
                                        why=DEPTH_CAP_REASON))
        gd_rate_error(spec, units, ntk_device, ntk_measure, ntk_digits, ntk_profile)


@pytest.mark.claim(**RATE)
def test_gd_rate_relu(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    """ReLU at depth 1: the setting of Arora et al. 2019, Thm 4.1 (module docstring)."""
    gd_rate_error(ArchSpec(depth=1, activation="relu"), ntk_sweep, ntk_device, ntk_measure,
                  ntk_digits,
                  ntk_profile)


@pytest.mark.claim(**RATE)
def test_gd_rate_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    gd_rate_error(CNN_ERF, ntk_sweep, ntk_device, ntk_measure,
                  ntk_digits.head(ntk_profile.n_cnn_inputs),
                  ntk_profile)


def _stable(spec, width, init, x, y, lr, device, factor) -> bool:
    net = spec.with_width(width).build(seed=init, input_shape=tuple(x.shape[1:]),
                                       device=device)
    result = train(net, x, y, lr=lr, steps=STABILITY_STEPS, diverge_factor=factor,
                   raise_on_divergence=False)
    return not result.diverged and result.losses[-1] <= result.losses[0]


def stable_lr_error(spec, sweep, device, measure, data, reference=None):
    """Measure ``gd-stable-lr`` for one architecture over the sweep. ``reference``: the
    architecture whose analytic NTK predicts the limit (``spec`` by default; another one is a
    negative control)."""
    x, n = data.x, len(data.x)
    lam, vec = torch.linalg.eigh(analytic_kernels(reference or spec, x).ntk)
    limit = 2 * n / float(lam[-1])
    for width, seed in sweep:
        init = measure.seed(spec, width=width, seed=seed)
        net = spec.with_width(width).build(seed=init, input_shape=data.input_shape,
                                           device=device)
        with torch.no_grad():
            y = net(x) - math.sqrt(n) * vec[:, -1:]
        lo, hi = 0.5, 1.5
        for _ in range(BISECTIONS):
            mid = (lo + hi) / 2
            if _stable(spec, width, init, x, y, mid * limit, device, factor=1.0):
                lo = mid
            else:
                hi = mid
        critical = (lo + hi) / 2
        catapult = _stable(spec, width, init, x, y, CATAPULT * limit, device, factor=1e6)
        measure(spec, width=width, seed=seed, value=abs(critical - 1), critical=critical,
                converges_at_catapult=catapult, lr_limit=limit)


STABLE_LR = dict(
    id="gd-stable-lr",
    statement="The largest learning rate at which GD on the MSE never increases the loss is "
              "2N / λ_max of the NTK Gram",
    source="Lee et al. 2019, eq. 9 (kernel regime); Lewkowycz et al. 2020 (catapult above it)",
    metric="|lr* λ_max / (2N) - 1|, lr* by bisection; residual along the top eigenvector of "
           "the analytic NTK Gram (digits; digits images and the CNTK for CNNs)",
    tolerance=0.05,
    rate=-0.5,
)


@pytest.mark.claim(**STABLE_LR)
@given(spec=SMOOTH)
@example(spec=ArchSpec(depth=1, activation="erf"))
@example(spec=ArchSpec(depth=1, activation="relu"))
def test_gd_stable_lr(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits):
    stable_lr_error(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits)


@pytest.mark.claim(**STABLE_LR)
@pytest.mark.parametrize("spec", (CNN_ERF, CNN_RELU), ids=lambda s: s.activation)
def test_gd_stable_lr_cnn(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    stable_lr_error(spec, ntk_sweep, ntk_device, ntk_measure,
                    ntk_digits.head(ntk_profile.n_cnn_inputs))
