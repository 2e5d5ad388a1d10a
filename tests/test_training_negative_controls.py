"""Negative controls of the training-dynamics claims: each one can fail, and does.

Each control runs the real claim's measurement code (imported from ``claims/``) under its
real claim marker, in a setting where theory predicts the claim fails: muP, whose features and
kernel move by O(1) at every width (Yang & Hu 2021), for the claims about lazy training; a
reference kernel of the wrong architecture (one hidden layer more) for the claims that compare
with a closed form. One pytester run holds every control; each must fail at every width swept,
and the report must say so. Small widths, one seed, the smoke profile.
"""

import csv
from pathlib import Path

import pytest

CLAIMS = Path(__file__).resolve().parents[1] / "claims"

CONTROLS = '''
import sys
sys.path.insert(0, {claims!r})

import pytest
from ntkcheck.arch import ArchSpec

import test_feature_learning as fl
import test_gd_rate as gd
import test_kernel_regression as kr
import test_lazy_training as lazy
import test_linearized_dynamics as lin
import test_nngp_at_init as nngp

MUP = ArchSpec(depth=1, activation="relu", parametrization="mup")
NTK = ArchSpec(depth=1, activation="erf")
DEEPER = ArchSpec(depth=2, activation="erf")  # the wrong reference: one layer more


@pytest.mark.claim(**lazy.LAZY_WEIGHTS)
def test_lazy_weights_mup(sweep, device, measure, digits, ntk_profile):
    lazy.lazy_weights(MUP, sweep, device, measure, digits, ntk_profile)


@pytest.mark.claim(**lazy.LAZY_KERNEL)
def test_lazy_kernel_mup(sweep, device, measure, digits, ntk_profile):
    lazy.lazy_kernel(MUP, sweep, device, measure, digits, ntk_profile)


@pytest.mark.claim(**lin.CLAIM)
def test_linearized_dynamics_mup(sweep, device, measure, ntk_profile):
    lin.linearized_deviation(MUP, sweep, device, measure, ntk_profile)


@pytest.mark.claim(**kr.CLAIM)
def test_kernel_regression_wrong_kernel(sweep, device, measure, ntk_profile):
    kr.kernel_regression_error(NTK, sweep, device, measure, ntk_profile, reference=DEEPER)


@pytest.mark.claim(**gd.RATE)
def test_gd_rate_mup(sweep, device, measure, digits, ntk_profile):
    gd.gd_rate_error(MUP, sweep, device, measure, digits, ntk_profile)


@pytest.mark.claim(**gd.STABLE_LR)
def test_gd_stable_lr_wrong_kernel(sweep, device, measure, digits):
    gd.stable_lr_error(NTK, sweep, device, measure, digits, reference=DEEPER)


@pytest.mark.claim(**nngp.COVARIANCE)
def test_nngp_covariance_wrong_kernel(sweep, measure, digits):
    nngp.covariance_error(NTK, sweep, measure, digits, reference=DEEPER)


@pytest.mark.claim(**nngp.GAUSSIAN)
def test_nngp_gaussian_wrong_kernel(sweep, measure, digits):
    nngp.ks_distance(NTK, sweep, measure, digits, reference=DEEPER)


@pytest.mark.claim(**fl.LAZY_FEATURES)
def test_feature_learning_mup(sweep, device, measure, digits, ntk_profile):
    fl.feature_change(MUP, sweep, device, measure, digits, ntk_profile)
'''

#: claim id -> the architecture its control measures.
EXPECTED = {
    "lazy-weights": "mlp-d1-relu-mup-b",
    "lazy-kernel": "mlp-d1-relu-mup-b",
    "linearized-dynamics": "mlp-d1-relu-mup-b",
    "kernel-regression": "mlp-d1-erf-ntk-b",
    "gd-rate": "mlp-d1-relu-mup-b",
    "gd-stable-lr": "mlp-d1-erf-ntk-b",
    "nngp-at-init": "mlp-d1-erf-ntk-b",
    "nngp-gaussian": "mlp-d1-erf-ntk-b",
    "feature-learning": "mlp-d1-relu-mup-b",
}
WIDTHS = (256, 1024, 2048)


def _control(claim_id: str) -> str:
    """The inner test file: the imports and the one control test of ``claim_id``."""
    head, *tests = CONTROLS.split("\n\n@pytest.mark.claim")
    marker = {"lazy-weights": "lazy.LAZY_WEIGHTS", "lazy-kernel": "lazy.LAZY_KERNEL",
              "linearized-dynamics": "lin.CLAIM", "kernel-regression": "kr.CLAIM",
              "gd-rate": "gd.RATE", "gd-stable-lr": "gd.STABLE_LR",
              "nngp-at-init": "nngp.COVARIANCE", "nngp-gaussian": "nngp.GAUSSIAN",
              "feature-learning": "fl.LAZY_FEATURES"}[claim_id]
    (test,) = [t for t in tests if t.startswith(f"(**{marker})")]
    return f"{head}\n\n@pytest.mark.claim{test}".format(claims=str(CLAIMS))


@pytest.mark.parametrize("claim_id", sorted(EXPECTED))
def test_control_fails_at_every_width(pytester, claim_id):
    pytester.makepyfile(test_control=_control(claim_id))
    result = pytester.runpytest("--ntk-profile", "smoke", "--ntk-seeds", "1", "--ntk-widths",
                                ",".join(map(str, WIDTHS)), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    report = pytester.path / "reports" / "latest"
    with open(report / "width_verdicts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["claim_id"] for r in rows} == {claim_id}
    assert {r["arch_id"] for r in rows} == {EXPECTED[claim_id]}
    assert [int(r["width"]) for r in rows] == list(WIDTHS)
    assert [r["holds"] for r in rows] == ["False"] * len(WIDTHS), rows
    result.stdout.fnmatch_lines([f"FAILS*{claim_id} *{EXPECTED[claim_id]}*fails at every width*"])
