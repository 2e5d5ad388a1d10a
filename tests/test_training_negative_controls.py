"""Negative controls of the training-dynamics claims: each one can fail, and does.

Each control runs the real claim's measurement code (imported from ``claims/``) under its real
claim marker, in a setting where theory predicts the claim fails: muP, whose features and
kernel move by O(1) at every width (Yang & Hu 2021), for the claims about lazy training; a
reference kernel of the wrong architecture (one hidden layer more) for the claims that compare
with a closed form; for ``nngp-gaussian``, whose metric (the output's excess kurtosis) has no
reference, a network of one hidden unit recorded at every width. The CNN settings (a depth-1
CNN on a quarter of the digits images) have controls too: a muP CNN for the lazy-training
claims and ``gd-rate``, and the CNTK of a depth-2 CNN as the wrong reference for ``kernel-
regression`` and ``gd-stable-lr``. One pytester run per control; each must fail at every width
swept, and the report must say so. Small widths, one seed, the smoke profile. The practical tests
(``ntkcheck.measure_practical``) have controls too: the practical regime's MLP at a large fixed
Adam rate, which leaves the kernel regime at every width, so each practical test is shown to
be able to fail.
"""

import csv
from pathlib import Path

import pytest

CLAIMS = Path(__file__).resolve().parents[1] / "claims"

CONTROLS = '''
import sys
sys.path.insert(0, {claims!r})

import pytest
from ntkcheck import PracticalRegime, measure_practical
from ntkcheck.arch import ArchSpec

import test_feature_learning as fl
import test_gd_rate as gd
import test_kernel_regression as kr
import test_lazy_training as lazy
import test_linearized_dynamics as lin
import test_nngp_at_init as nngp

MUP = ArchSpec(depth=1, activation="relu", parametrization="mup")
MUP_CNN = ArchSpec(family="cnn", depth=1, activation="erf", parametrization="mup")
NTK = ArchSpec(depth=1, activation="erf")
DEEPER = ArchSpec(depth=2, activation="erf")  # the wrong reference: one layer more
CNN = ArchSpec(family="cnn", depth=1, activation="erf")
DEEPER_CNN = ArchSpec(family="cnn", depth=2, activation="erf")  # the wrong reference CNTK
MUP_RELU_CNN = ArchSpec(family="cnn", depth=1, activation="relu", parametrization="mup")
# the practical regime's network at a large fixed Adam rate (5x the grid's largest), for at
# most 3 epochs: Adam moves every parameter by about lr per step whatever the width, far more
# than the He-initialized weights' O(width^-1/2) scale, so it leaves the kernel regime at
# every width
SP = ArchSpec(depth=1, activation="relu", parametrization="standard", weight_std=2**0.5)
LARGE_LR = PracticalRegime(lr=5e-2, max_epochs=3)


@pytest.mark.claim(**lazy.LAZY_WEIGHTS)
def test_lazy_weights_mup(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    lazy.lazy_weights(MUP, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile)


@pytest.mark.claim(**lazy.LAZY_KERNEL)
def test_lazy_kernel_mup(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    lazy.lazy_kernel(MUP, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile)


@pytest.mark.claim(**lin.CLAIM)
def test_linearized_dynamics_mup(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    lin.linearized_deviation(MUP, ntk_sweep, ntk_device, ntk_measure, ntk_profile)


@pytest.mark.claim(**lazy.LAZY_WEIGHTS)
def test_lazy_weights_mup_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    images = ntk_digits.head(ntk_profile.n_cnn_inputs)
    lazy.lazy_weights(MUP_CNN, ntk_sweep, ntk_device, ntk_measure, images, ntk_profile)


@pytest.mark.claim(**lazy.LAZY_KERNEL)
def test_lazy_kernel_mup_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    images = ntk_digits.head(ntk_profile.n_cnn_inputs)
    lazy.lazy_kernel(MUP_CNN, ntk_sweep, ntk_device, ntk_measure, images, ntk_profile)


@pytest.mark.claim(**lin.CLAIM)
def test_linearized_dynamics_mup_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    lin.linearized_deviation(MUP_CNN, ntk_sweep, ntk_device, ntk_measure, ntk_profile)


@pytest.mark.claim(**kr.CLAIM)
def test_kernel_regression_wrong_kernel(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    kr.kernel_regression_error(NTK, ntk_sweep, ntk_device, ntk_measure, ntk_profile,
                               reference=DEEPER)


@pytest.mark.claim(**gd.RATE)
def test_gd_rate_mup(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    gd.gd_rate_error(MUP, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile)


@pytest.mark.claim(**gd.STABLE_LR)
def test_gd_stable_lr_wrong_kernel(ntk_sweep, ntk_device, ntk_measure, ntk_digits):
    gd.stable_lr_error(NTK, ntk_sweep, ntk_device, ntk_measure, ntk_digits, reference=DEEPER)


@pytest.mark.claim(**nngp.COVARIANCE)
def test_nngp_covariance_wrong_kernel(ntk_sweep, ntk_measure, ntk_digits):
    nngp.covariance_error(NTK, ntk_sweep, ntk_measure, ntk_digits, reference=DEEPER)


@pytest.mark.claim(**nngp.GAUSSIAN)
def test_nngp_gaussian_wrong_kernel(ntk_sweep, ntk_measure, ntk_digits):
    # a network that does not grow (one hidden unit at every recorded width) stays non-Gaussian
    nngp.gaussianity(NTK, ntk_sweep, ntk_measure, ntk_digits, build_width=1)


@pytest.mark.claim(**fl.LAZY_FEATURES)
def test_feature_learning_mup(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    fl.feature_change(MUP, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile)


@pytest.mark.claim(**fl.LAZY_FEATURES)
def test_feature_learning_mup_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    images = ntk_digits.head(ntk_profile.n_cnn_inputs)
    fl.feature_change(MUP_CNN, ntk_sweep, ntk_device, ntk_measure, images, ntk_profile)


@pytest.mark.claim(**kr.CLAIM)
def test_kernel_regression_cnn_wrong_kernel(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    kr.kernel_regression_error_cnn(CNN, ntk_sweep, ntk_device, ntk_measure, ntk_profile,
                                   reference=DEEPER_CNN)


@pytest.mark.claim(**gd.STABLE_LR)
def test_gd_stable_lr_cnn_wrong_kernel(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    images = ntk_digits.head(ntk_profile.n_cnn_inputs)
    gd.stable_lr_error(CNN, ntk_sweep, ntk_device, ntk_measure, images, reference=DEEPER_CNN)


@pytest.mark.claim(**gd.RATE)
def test_gd_rate_cnn_mup(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    images = ntk_digits.head(ntk_profile.n_cnn_inputs)
    gd.gd_rate_error(MUP_RELU_CNN, ntk_sweep, ntk_device, ntk_measure, images, ntk_profile)


@pytest.mark.claim(**lazy.LAZY_WEIGHTS, setting="practical")
def test_lazy_weights_practical_large_lr(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    measure_practical(SP, "weight_change", ntk_sweep, ntk_device, ntk_measure,
                      ntk_profile, LARGE_LR)


@pytest.mark.claim(**lazy.LAZY_KERNEL, setting="practical")
def test_lazy_kernel_practical_large_lr(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    measure_practical(SP, "kernel_change", ntk_sweep, ntk_device, ntk_measure,
                      ntk_profile, LARGE_LR)


@pytest.mark.claim(**lin.CLAIM, setting="practical")
def test_linearized_dynamics_practical_large_lr(ntk_sweep, ntk_device, ntk_measure,
                                                ntk_profile):
    measure_practical(SP, "lin_deviation", ntk_sweep, ntk_device, ntk_measure,
                      ntk_profile, LARGE_LR)


@pytest.mark.claim(**kr.CLAIM, setting="practical")
def test_kernel_regression_practical_large_lr(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    measure_practical(SP, "lin_final_error", ntk_sweep, ntk_device, ntk_measure,
                      ntk_profile, LARGE_LR)


@pytest.mark.claim(**fl.LAZY_FEATURES, setting="practical")
def test_feature_learning_practical_large_lr(ntk_sweep, ntk_device, ntk_measure, ntk_profile):
    measure_practical(SP, "feature_change", ntk_sweep, ntk_device, ntk_measure,
                      ntk_profile, LARGE_LR)
'''

SP_PRACTICAL = "mlp-d1-relu-standard-b-sw1.41421-practical"
#: control test -> (claim id, the architecture it measures).
EXPECTED = {
    "test_lazy_weights_mup": ("lazy-weights", "mlp-d1-relu-mup-b"),
    "test_lazy_kernel_mup": ("lazy-kernel", "mlp-d1-relu-mup-b"),
    "test_linearized_dynamics_mup": ("linearized-dynamics", "mlp-d1-relu-mup-b"),
    "test_kernel_regression_wrong_kernel": ("kernel-regression", "mlp-d1-erf-ntk-b"),
    "test_gd_rate_mup": ("gd-rate", "mlp-d1-relu-mup-b"),
    "test_gd_stable_lr_wrong_kernel": ("gd-stable-lr", "mlp-d1-erf-ntk-b"),
    "test_nngp_covariance_wrong_kernel": ("nngp-at-init", "mlp-d1-erf-ntk-b"),
    "test_nngp_gaussian_wrong_kernel": ("nngp-gaussian", "mlp-d1-erf-ntk-b"),
    "test_feature_learning_mup": ("feature-learning", "mlp-d1-relu-mup-b"),
    "test_lazy_weights_mup_cnn": ("lazy-weights", "cnn-d1-erf-mup-b-gap"),
    "test_lazy_kernel_mup_cnn": ("lazy-kernel", "cnn-d1-erf-mup-b-gap"),
    "test_linearized_dynamics_mup_cnn": ("linearized-dynamics", "cnn-d1-erf-mup-b-gap"),
    "test_feature_learning_mup_cnn": ("feature-learning", "cnn-d1-erf-mup-b-gap"),
    "test_kernel_regression_cnn_wrong_kernel": ("kernel-regression", "cnn-d1-erf-ntk-b-gap"),
    "test_gd_stable_lr_cnn_wrong_kernel": ("gd-stable-lr", "cnn-d1-erf-ntk-b-gap"),
    "test_gd_rate_cnn_mup": ("gd-rate", "cnn-d1-relu-mup-b-gap"),
    # the practical regime's network at a large fixed learning rate
    **{f"test_{name}_practical_large_lr": (claim, SP_PRACTICAL) for name, claim in (
        ("lazy_weights", "lazy-weights"), ("lazy_kernel", "lazy-kernel"),
        ("linearized_dynamics", "linearized-dynamics"),
        ("kernel_regression", "kernel-regression"), ("feature_learning", "feature-learning"))},
}
WIDTHS = (256, 1024, 2048)


def _control(name: str) -> str:
    """The inner test file: the imports and the one control test called ``name``."""
    head, *tests = CONTROLS.split("\n\n@pytest.mark.claim")
    (test,) = [t for t in tests if f"\ndef {name}(" in t]
    return f"{head}\n\n@pytest.mark.claim{test}".format(claims=str(CLAIMS))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_control_fails_at_every_width(pytester, name):
    claim_id, arch_id = EXPECTED[name]
    pytester.makepyfile(test_control=_control(name))
    result = pytester.runpytest("--ntk-profile", "smoke", "--ntk-seeds", "1", "--ntk-widths",
                                ",".join(map(str, WIDTHS)), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    report = pytester.path / "reports" / "latest"
    with open(report / "width_verdicts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["claim_id"] for r in rows} == {claim_id}
    assert {r["arch_id"] for r in rows} == {arch_id}
    assert [int(r["width"]) for r in rows] == list(WIDTHS)
    assert [r["holds"] for r in rows] == ["False"] * len(WIDTHS), rows
    result.stdout.fnmatch_lines([f"FAILS*{claim_id} *{arch_id}*fails at every width*"])
