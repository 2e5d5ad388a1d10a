"""Hidden features stop moving as the width grows under the NTK parametrization, not under muP.

Yang & Hu 2021 ("Feature learning in infinite-width neural networks", Thm 3.4 / Cor. 3.9):
in the NTK parametrization each hidden feature moves by O(width^-1/2) during training, so the
representation of a wide network at the end of training is its representation at
initialization (the kernel regime); in the maximal update parametrization (muP) features move
by Theta(1) at every width. The change of the last hidden layer's representation is measured
as ``1 - CKA(phi_0(X), phi_T(X))`` (linear CKA, Kornblith et al. 2019;
:func:`ntkcheck.kernel_regime.features.linear_cka`) after full-batch GD to a fixed training loss on
digits.
CKA compares the centred feature Gram matrices by their cosine, so ``1 - CKA`` is second order
in their relative change, which is O(1/width) under the NTK parametrization (as the NTK's,
Dyer & Gur-Ari 2020): predicted slope -2.

Both parametrizations train at base rate ``N / lambda_max`` of the learning-rate-weighted NTK
(:func:`ntkcheck.kernel_regime.features.lr_weighted_ntk`; muP's per-layer rates from
:func:`ntkcheck.arch.param_groups`), to the same loss.

* ``feature-learning``: under the NTK parametrization the change vanishes with width. The
  same claim under muP is the negative control that theory predicts to fail at every width
  (``tests/test_training_negative_controls.py`` asserts it does).
* ``feature-learning-mup``: under muP the change stays above a width-independent floor
  (slope 0).

CNNs (``test_*_cnn``, same claim ids): a depth-1 CNN (one 3x3 conv of ``width`` channels with
erf, global average pooling, dense read-out), NTK-parametrized and muP, on a quarter of the
digits images (``Profile.n_cnn_inputs``, at least 8; see :mod:`test_lazy_training` for the cost
and for erf). Its hidden features are the ``width`` pooled channels, the read-out's input. The
predictions carry over with the channels as the width: each channel's parameters move by
O(width^-1/2) under the NTK parametrization, so the pooled features and their Gram matrix move
as an MLP's hidden layer's do (slope -2); muP's per-layer rates
(:func:`ntkcheck.arch.param_groups`: ``lr * width`` for the input conv, whose fan-in ``9`` does
not grow, and for the read-out, whose multiplier is ``1 / width``) are those of a
one-hidden-layer MLP, so the features move by Theta(1). The muP CNN under ``feature-learning``
is a negative control there too.

Practical regime (``test_feature_learning_practical``, same claim id
``feature-learning``; :data:`ntkcheck.PRACTICAL_REGIME`, README "The practical regime"): the
standard parametrization with He initialization, Adam at one learning rate for every width,
mini-batches, cross-entropy on 1,497 digits, trained to convergence; the metric is the same
``1 - CKA`` of the last hidden layer on the training inputs, from the training run every
practical test shares (:func:`ntkcheck.practical_run`).
"""

import pytest
import torch
from hypothesis import example, given

from ntkcheck import (
    PRACTICAL_SPECS,
    ArchSpec,
    hidden_features,
    linear_cka,
    lr_weighted_ntk,
    measure_practical,
    param_groups,
    strategies,
    train,
)

#: Fixed training loss (1/(2N) convention) both parametrizations train to.
TARGET_LOSS = 0.05
#: Step budget, in multiples of the profile's ``train_steps``.
BUDGET = 4
#: The CNN setting (module docstring), NTK-parametrized and muP.
CNN = ArchSpec(family="cnn", depth=1, activation="erf")
CNN_MUP = ArchSpec(family="cnn", depth=1, activation="erf", parametrization="mup")


def feature_change(spec, sweep, device, measure, digits, ntk_profile):
    """Measure ``1 - CKA`` of the last hidden layer for one architecture over the sweep."""
    x, y = digits.x, digits.regression_targets()
    for width, seed in sweep:
        net = spec.with_width(width).build(seed=measure.seed(spec, width=width, seed=seed),
                                           input_shape=digits.input_shape, device=device)
        # base rate N / lambda_max of the learning-rate-weighted NTK, the same for both
        # parametrizations at initialization (one hidden layer)
        theta = lr_weighted_ntk(net, x, param_groups(net, 1.0), 1.0)
        lr = len(x) / float(torch.linalg.eigvalsh(theta)[-1])
        before = hidden_features(net, x)
        result = train(net, x, y, lr=lr, steps=BUDGET * ntk_profile.train_steps,
                       params=param_groups(net, lr), target_loss=TARGET_LOSS)
        if not result.reached:
            pytest.fail(f"{spec.arch_id} at width {width}: training loss "
                        f"{result.final_loss:.3g} did not reach {TARGET_LOSS} in "
                        f"{result.steps} steps")
        change = 1.0 - linear_cka(before, hidden_features(net, x))
        measure(spec, width=width, seed=seed, value=max(change, 0.0), steps=result.steps,
                train_loss=result.final_loss, lr=lr)


LAZY_FEATURES = dict(
    id="feature-learning",
    statement="Training a wide NTK-parametrized network leaves its hidden representation "
              "unchanged",
    source="Yang & Hu 2021, Thm 3.4 and Cor. 3.9 (NTK limit: no feature learning)",
    metric=f"1 - CKA(φ_0(X), φ_T(X)), last hidden layer, GD to loss {TARGET_LOSS} on digits",
    tolerance=0.01,
    rate=-2.0,
)


@pytest.mark.claim(**LAZY_FEATURES)
@given(spec=strategies.mlps(min_depth=1, max_depth=1, parametrizations=("ntk",)))
@example(spec=ArchSpec(depth=1, activation="relu"))
@example(spec=ArchSpec(depth=1, activation="erf"))
def test_feature_learning(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    feature_change(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile)


@pytest.mark.claim(**LAZY_FEATURES, setting="practical")
@pytest.mark.parametrize("spec", PRACTICAL_SPECS, ids=lambda s: s.arch_id)
def test_feature_learning_practical(spec, ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    """The practical regime (module docstring)."""
    measure_practical(spec, "feature_change", ntk_sweep, ntk_device, ntk_measure, ntk_profile)


@pytest.mark.claim(**LAZY_FEATURES)
def test_feature_learning_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    feature_change(CNN, ntk_sweep, ntk_device, ntk_measure,
                   ntk_digits.head(ntk_profile.n_cnn_inputs),
                   ntk_profile)


FEATURES_MUP = dict(
    id="feature-learning-mup",
    statement="Under muP the hidden representation changes by a width-independent amount",
    source="Yang & Hu 2021, Thm 3.4 and Cor. 3.9 (muP: maximal feature learning)",
    metric=f"1 - CKA(φ_0(X), φ_T(X)), last hidden layer, GD to loss {TARGET_LOSS} on digits",
    tolerance=0.05,
    rate=0.0,
    direction="above",
)


@pytest.mark.claim(**FEATURES_MUP)
@given(spec=strategies.mlps(min_depth=1, max_depth=1, parametrizations=("mup",)))
@example(spec=ArchSpec(depth=1, activation="relu", parametrization="mup"))
def test_feature_learning_mup(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    feature_change(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile)


@pytest.mark.claim(**FEATURES_MUP)
def test_feature_learning_mup_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    feature_change(CNN_MUP, ntk_sweep, ntk_device, ntk_measure,
                   ntk_digits.head(ntk_profile.n_cnn_inputs),
                   ntk_profile)
