"""The NTK at initialization is deterministic in the infinite-width limit.

Jacot et al. 2018 (Theorem 1): as the widths of an NTK-parametrized network grow, its empirical
NTK at a random initialization converges in probability to a deterministic kernel, the analytic
NTK. The fluctuations around the limit shrink like width^(-1/2) (Hanin & Nica 2020, for fixed
depth), so the relative Frobenius error against the analytic kernel has log-log slope -1/2.
The same holds for CNNs with global average pooling against the CNTK (Arora et al. 2019).

Depth (``test_ntk_at_init_depth``): Hanin & Nica 2020 ("Finite depth and width corrections to
the neural tangent kernel", Thm 1) show that for a ReLU MLP of depth ``L`` and width ``n`` the
NTK's fluctuations at initialization grow with ``L / n``: on the diagonal
``E[Θ(x, x)^2] / E[Θ(x, x)]^2 ≈ exp(5 L / n)`` (up to lower-order terms), a relative variance of
about ``5 L / n`` when ``L << n``, so the relative error of the empirical NTK grows like
``sqrt(L / n)`` and the width at which it falls to the tolerance grows linearly with depth.
The test measures the pinned ReLU MLP at every depth of ``Profile.depths`` (1, 2, 4 in
``quick``), each depth its own architecture id and verdict; the drawn MLPs leave those
architectures to it.
"""

import pytest
from hypothesis import assume, example, given

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


#: The architecture swept over ``Profile.depths`` (Hanin & Nica 2020 treat ReLU).
DEPTH_SPEC = ArchSpec(activation="relu")


@NTK_AT_INIT
@given(spec=strategies.mlps(parametrizations=("ntk",)))
@example(spec=ArchSpec(depth=2, activation="erf"))
def test_ntk_at_init(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    assume(spec.arch_id not in {s.arch_id for s in ntk_profile.depth_sweep(DEPTH_SPEC)})
    _measure_sweep(spec, ntk_digits.x, ntk_sweep, ntk_device, ntk_measure)


@NTK_AT_INIT
def test_ntk_at_init_depth(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    for spec in ntk_profile.depth_sweep(DEPTH_SPEC):
        _measure_sweep(spec, ntk_digits.x, ntk_sweep, ntk_device, ntk_measure)


@NTK_AT_INIT
def test_ntk_at_init_cnn(ntk_sweep, ntk_device, ntk_measure, ntk_digits, ntk_profile):
    spec = ArchSpec(family="cnn", depth=1, activation="relu")
    images = ntk_digits.head(ntk_profile.n_cnn_inputs).x  # (N, 1, 8, 8)
    _measure_sweep(spec, images, ntk_sweep, ntk_device, ntk_measure)
