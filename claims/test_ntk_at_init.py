"""The NTK at initialization is deterministic in the infinite-width limit.

Jacot et al. 2018 (Theorem 1): as the widths of an NTK-parametrized network grow, its empirical
NTK at a random initialization converges in probability to a deterministic kernel, the analytic
NTK. The fluctuations around the limit shrink like width^(-1/2) (Hanin & Nica 2020, for fixed
depth), so the relative Frobenius error against the analytic kernel has log-log slope -1/2.
"""

import pytest
from hypothesis import example, given

from ntkcheck import strategies
from ntkcheck.arch import ArchSpec
from ntkcheck.kernels import analytic_kernels, empirical_ntk
from ntkcheck.metrics import relative_frobenius_error
from ntkcheck.numerics import check_psd


@pytest.mark.claim(
    id="ntk-at-init",
    statement="At initialization the empirical NTK approaches the analytic (infinite-width) NTK",
    source="Jacot et al. 2018, Theorem 1; O(width^-1/2) fluctuations: Hanin & Nica 2020",
    metric="||Θ_emp(X, X) - Θ_∞(X, X)||_F / ||Θ_∞(X, X)||_F on digits inputs",
    tolerance=0.1,
    rate=-0.5,
)
@given(spec=strategies.mlps(parametrizations=("ntk",)))
@example(spec=ArchSpec(depth=2, activation="relu"))
@example(spec=ArchSpec(depth=2, activation="erf"))
def test_ntk_at_init(spec, sweep, device, measure, digits):
    reference = analytic_kernels(spec, digits.x).ntk
    for width, seed in sweep:
        with measure.guard(spec, width=width, seed=seed) as init_seed:  # OOM: not measured
            net = spec.with_width(width).build(seed=init_seed, input_shape=digits.input_shape,
                                               device=device)
            theta = check_psd(empirical_ntk(net, digits.x), "empirical NTK")
            measure(spec, width=width, seed=seed,
                    value=relative_frobenius_error(theta, reference))
