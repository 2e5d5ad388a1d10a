"""The NTK at initialization is deterministic in the infinite-width limit.

Jacot et al. 2018 (Theorem 1): as the widths of an NTK-parametrized network grow, its empirical
NTK at a random initialization converges in probability to a deterministic kernel, the analytic
NTK. The fluctuations around the limit shrink like width^(-1/2) (Hanin & Nica 2020, for fixed
depth), so the relative Frobenius error against the analytic kernel has log-log slope -1/2.
The same holds for CNNs with global average pooling against the CNTK (Arora et al. 2019).
"""

import pytest
from hypothesis import example, given

from ntkcheck import (
    CNN_CAP_REASON,
    ArchSpec,
    analytic_kernels,
    check_psd,
    empirical_ntk,
    relative_frobenius_error,
    strategies,
)

NTK_AT_INIT = pytest.mark.claim(
    id="ntk-at-init",
    statement="At initialization the empirical NTK approaches the analytic (infinite-width) NTK",
    source="Jacot et al. 2018, Theorem 1; O(width^-1/2) fluctuations: Hanin & Nica 2020; "
           "CNNs (CNTK, global average pooling): Arora et al. 2019",
    metric="||Θ_emp(X, X) - Θ_∞(X, X)||_F / ||Θ_∞(X, X)||_F on digits inputs",
    tolerance=0.1,
    rate=-0.5,
)

def _measure_sweep(spec, x, sweep, device, measure, max_width=None):
    reference = analytic_kernels(spec, x).ntk
    for width, seed in measure.capped(spec, sweep, max_width, why=CNN_CAP_REASON):
        with measure.guard(spec, width=width, seed=seed) as init_seed:  # OOM: not measured
            net = spec.with_width(width).build(seed=init_seed, input_shape=x.shape[1:],
                                               device=device)
            theta = check_psd(empirical_ntk(net, x), "empirical NTK")
            measure(spec, width=width, seed=seed,
                    value=relative_frobenius_error(theta, reference))


@NTK_AT_INIT
@given(spec=strategies.mlps(parametrizations=("ntk",)))
@example(spec=ArchSpec(depth=2, activation="relu"))
@example(spec=ArchSpec(depth=2, activation="erf"))
def test_ntk_at_init(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits):
    _measure_sweep(spec, ntk_digits.x, ntk_sweep, ntk_device, ntk_measure)


@NTK_AT_INIT
def test_ntk_at_init_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    spec = ArchSpec(family="cnn", depth=1, activation="relu")
    images = ntk_digits.head(ntk_profile.n_cnn_inputs).x  # (N, 1, 8, 8)
    _measure_sweep(spec, images, ntk_sweep, ntk_device, ntk_measure, ntk_profile.width_cap(spec))
