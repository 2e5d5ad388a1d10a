"""Calibration metrics: ECE against a hand-computed example, NLL and interval coverage."""

import math

import pytest
import torch
from scipy import stats

from ntkcheck.uncertainty.calibration import (
    classification_nll,
    coverage_error,
    expected_calibration_error,
    gaussian_nll,
    interval_coverage,
)

# Five binary predictions; top-label confidence, correct?, and the 10-bin bin it falls in:
#   0.90 correct -> (0.8, 0.9]      0.80 wrong   -> (0.7, 0.8]
#   0.60 correct -> (0.5, 0.6]      0.55 wrong   -> (0.5, 0.6]      0.70 correct -> (0.6, 0.7]
# ECE = 1/5 |1 - 0.9| + 1/5 |0 - 0.8| + 2/5 |0.5 - 0.575| + 1/5 |1 - 0.7|
#     = 0.02 + 0.16 + 0.03 + 0.06 = 0.27
PROBS = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45], [0.3, 0.7]],
                     dtype=torch.float64)
LABELS = torch.tensor([0, 1, 0, 1, 1])


def test_ece_matches_the_hand_computed_example():
    assert expected_calibration_error(PROBS, LABELS, n_bins=10) == pytest.approx(0.27, abs=1e-12)


def test_ece_with_one_bin_is_the_gap_between_accuracy_and_mean_confidence():
    # accuracy 3/5, mean confidence (0.9 + 0.8 + 0.6 + 0.55 + 0.7) / 5 = 0.71
    assert expected_calibration_error(PROBS, LABELS, n_bins=1) == pytest.approx(0.11)


def test_ece_is_zero_when_confidence_equals_accuracy_in_every_bin():
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.2, 0.8]] * 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1] + [1, 1, 1, 1, 0])  # 3/4 right at 0.75, 4/5 at 0.8
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_confident_wrong_predictions_is_their_confidence():
    probs = torch.tensor([[0.05, 0.95, 0.0]] * 3, dtype=torch.float64)
    assert expected_calibration_error(probs, torch.tensor([0, 2, 0])) == pytest.approx(0.95)


def test_ece_bins_use_correctly_rounded_edges():
    # 0.7 belongs to (0.6, 0.7] although 0.7 * 10 rounds to 7.000000000000001 in float64
    probs = torch.tensor([[0.7, 0.3], [0.65, 0.35]], dtype=torch.float64)
    # one bin: accuracy 1/2, confidence 0.675 -> 0.175 (two bins would give 0.15 + 0.325)
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == pytest.approx(0.175)


@pytest.mark.parametrize(("probs", "labels", "match"), [
    (torch.tensor([[0.5, 0.6]]), torch.tensor([0]), "sum to 1"),
    (torch.tensor([[0.5, 0.5]]), torch.tensor([2]), "labels must lie"),
    (torch.tensor([[1.0]]), torch.tensor([0]), "C >= 2"),
    (torch.tensor([[0.5, 0.5]]), torch.tensor([0.0]), "integers"),
    (torch.tensor([[1.5, -0.5]]), torch.tensor([0]), "non-negative"),
])
def test_ece_rejects_bad_inputs(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(probs, labels)
    with pytest.raises(ValueError):
        expected_calibration_error(PROBS, LABELS, n_bins=0)


def test_classification_nll():
    expected = -(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(0.45)
                 + math.log(0.7)) / 5
    assert classification_nll(PROBS, LABELS) == pytest.approx(expected)


def test_gaussian_nll_matches_scipy():
    mean = torch.tensor([0.0, 1.0, -2.0])
    var = torch.tensor([1.0, 0.25, 4.0])
    y = torch.tensor([0.5, 1.5, 0.0])
    expected = -stats.norm.logpdf(y.numpy(), mean.numpy(), var.sqrt().numpy()).mean()
    assert gaussian_nll(mean, var, y) == pytest.approx(expected)


def test_interval_coverage_by_hand():
    mean, var = torch.zeros(5), torch.ones(5)
    y = torch.tensor([-2.0, -1.0, 0.0, 0.5, 3.0])  # 90% interval is +-1.645: 3 of 5 inside
    assert interval_coverage(mean, var, y, 0.9) == pytest.approx(0.6)
    assert coverage_error(mean, var, y, levels=(0.9,)) == pytest.approx(0.3)
    # 50% interval is +-0.674: only 0 and 0.5 inside -> 0.4, off by 0.1; 0.9 is off by 0.3
    assert coverage_error(mean, var, y, levels=(0.5, 0.9)) == pytest.approx(0.3)


def test_coverage_of_a_correct_gaussian_is_nominal_and_of_a_narrow_one_is_not():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(20000, generator=gen, dtype=torch.float64)
    mean, var = torch.zeros_like(y), torch.ones_like(y)
    assert coverage_error(mean, var, y) < 0.015
    assert coverage_error(mean, var / 100, y) > 0.5  # std / 10: a deliberately narrow band


def test_gaussian_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="positive"):
        gaussian_nll(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(2))
    with pytest.raises(ValueError, match="same"):
        interval_coverage(torch.zeros(2), torch.ones(3), torch.zeros(2), 0.9)
    with pytest.raises(ValueError, match="level"):
        interval_coverage(torch.zeros(2), torch.ones(2), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="at least one"):
        coverage_error(torch.zeros(2), torch.ones(2), torch.zeros(2), levels=())


def test_classification_nll_in_log_space():
    # softmax((0, 800, 0))[0] = e^-800 rounds to 0 in float64: main returned inf, the value
    # is 800 + log(1 + 2 e^-800) = 800.
    z = torch.tensor([[0.0, 800.0, 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    expected = (800.0 - math.log(1 + 2 * math.exp(-800.0))
                + math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 3.0) / 2
    assert classification_nll(z, labels, logits=True) == pytest.approx(expected, rel=1e-15)
    with pytest.warns(RuntimeWarning, match="probability 0.*logits=True"):
        assert classification_nll(torch.softmax(z, 1), labels) == math.inf
    # the same value as the probability form where nothing underflows
    z = torch.tensor([[0.3, -1.0], [2.0, 0.5]], dtype=torch.float64)
    assert classification_nll(z, torch.tensor([1, 0]), logits=True) == pytest.approx(
        classification_nll(torch.softmax(z, 1), torch.tensor([1, 0])), rel=1e-14)
    with pytest.raises(ValueError, match="logits must be finite"):
        classification_nll(torch.tensor([[math.inf, 0.0]]), torch.tensor([0]), logits=True)
