"""Tests of the infinite-width kernels: hand-derived values, identities and Monte Carlo."""

import math

import pytest
import torch

from ntkcheck.arch import ArchSpec
from ntkcheck.kernels import analytic_kernels, get_dual, mlp_kernels, monte_carlo_ntk


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_hand_derived_relu_one_hidden_layer():
    # One hidden ReLU layer, NTK parametrization, sigma_w = 1, no bias, d = 2,
    # x = (1, 0), x' = (1, 1).
    # Layer 1: Sigma^1 = x.x'/d: q = 1/2, q' = 1, c = 1/2, so cos(t) = (1/2)/sqrt(1/2) = 1/sqrt2
    #   and the angle is t = pi/4.
    # Arc-cosine kernel (Cho & Saul 2009):
    #   E[relu(u)relu(v)] = sqrt(q q')/(2 pi) (sin t + (pi - t) cos t)
    #                     = (1/sqrt2)/(2 pi) (1/sqrt2 + (3pi/4)/sqrt2) = (1 + 3pi/4)/(4 pi)
    #                     = 3/16 + 1/(4 pi)                                   = Sigma^2(x, x')
    #   E[relu'(u)relu'(v)] = (pi - t)/(2 pi) = 3/8.
    # Theta^2 = Sigma^2 + 3/8 * Theta^1 = 3/16 + 1/(4 pi) + 3/8 * 1/2 = 3/8 + 1/(4 pi).
    # Diagonal (t = 0): Sigma^2(x, x) = q/2, Theta^2(x, x) = q/2 + (1/2) q = q, i.e. 1/2 and 1.
    spec = ArchSpec(depth=1, activation="relu", bias=False, weight_std=1.0)
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    k = analytic_kernels(spec, x)
    off_nngp, off_ntk = 3 / 16 + 1 / (4 * math.pi), 3 / 8 + 1 / (4 * math.pi)
    torch.testing.assert_close(k.nngp, torch.tensor([[0.25, off_nngp], [off_nngp, 0.5]],
                                                    dtype=torch.float64), rtol=1e-14, atol=0)
    torch.testing.assert_close(k.ntk, torch.tensor([[0.5, off_ntk], [off_ntk, 1.0]],
                                                   dtype=torch.float64), rtol=1e-14, atol=0)


def test_hand_derived_erf_with_bias():
    # One hidden erf layer, sigma_w = 1, sigma_b = 1, d = 1, x = 1, x' = 0.
    # Sigma^1: q = 1 + 1 = 2, q' = 0 + 1 = 1, c = 0 + 1 = 1.
    # Williams 1997: E[erf erf] = (2/pi) asin(2c / sqrt((1+2q)(1+2q'))) = (2/pi) asin(2/sqrt15).
    # E[erf' erf'] = (4/pi) / sqrt((1+2q)(1+2q') - 4c^2) = (4/pi) / sqrt(15 - 4) = 4/(pi sqrt11).
    # Sigma^2 = E[erf erf] + 1; Theta^2 = Sigma^2 + E[erf' erf'] * Theta^1 with Theta^1 = c = 1.
    spec = ArchSpec(depth=1, activation="erf", bias=True, weight_std=1.0, bias_std=1.0)
    k = analytic_kernels(spec, torch.tensor([[1.0]]), torch.tensor([[0.0]]))
    nngp = 2 / math.pi * math.asin(2 / math.sqrt(15)) + 1
    assert k.nngp.item() == pytest.approx(nngp, rel=1e-14)
    assert k.ntk.item() == pytest.approx(nngp + 4 / (math.pi * math.sqrt(11)), rel=1e-14)


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 10, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "spec",
    [
        ArchSpec(depth=2, activation="relu", bias_std=0.3),
        ArchSpec(depth=2, activation="erf", weight_std=1.5, bias_std=0.5),
        ArchSpec(depth=3, activation="leaky_relu", bias=False),
    ],
    ids=lambda s: s.arch_id,
)
def test_analytic_ntk_matches_monte_carlo_at_width_1024(spec, inputs):
    mean, stderr = monte_carlo_ntk(spec, inputs, width=1024, n_samples=12, seed=1)
    expected = analytic_kernels(spec, inputs).ntk
    assert rel(mean, expected) < 0.05
    assert bool((stderr > 0).all())


def degenerate_inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(2, 5, generator=g, dtype=torch.float64)
    sparse = torch.zeros(5, dtype=torch.float64)
    sparse[1] = 3.0
    return torch.stack([base[0], base[0], 3 * base[0], -base[0], torch.zeros(5,
                        dtype=torch.float64), sparse, base[1]])


@pytest.mark.parametrize("activation", ["relu", "erf", "leaky_relu", "identity", "tanh", "gelu"])
@pytest.mark.parametrize("bias", [True, False])
def test_degenerate_inputs_are_finite_with_finite_gradients(activation, bias):
    spec = ArchSpec(depth=3, activation=activation, bias=bias)
    x = degenerate_inputs().requires_grad_(True)
    k = analytic_kernels(spec, x, x.detach().clone())
    assert bool(torch.isfinite(k.nngp).all()) and bool(torch.isfinite(k.ntk).all())
    (grad,) = torch.autograd.grad(k.ntk.sum() + k.nngp.sum(), x)
    assert bool(torch.isfinite(grad).all())
    sym = analytic_kernels(spec, x.detach())
    assert torch.equal(sym.ntk, sym.ntk.T)
    torch.testing.assert_close(sym.ntk, k.ntk.detach(), rtol=1e-7, atol=1e-12)


def closed_form_linear(x1, x2, depth, weight_std):
    # Identity activation, no bias: E[phi phi] = c and E[phi' phi'] = 1, so
    # Sigma^l = sigma_w^(2l) x.x'/d and Theta^(L+1) = sum_l Sigma^(L+1) = (L + 1) Sigma^(L+1).
    nngp = weight_std ** (2 * (depth + 1)) * (x1 @ x2.T) / x1.shape[1]
    return nngp, (depth + 1) * nngp


@pytest.mark.parametrize("depth", [1, 4])
def test_linear_network_closed_form(inputs, depth):
    x2 = inputs[:3] * 2 - 1
    k = mlp_kernels(inputs, x2, depth=depth, dual=get_dual("identity"), weight_std=1.3,
                    bias=False)
    nngp, ntk = closed_form_linear(inputs, x2, depth, 1.3)
    torch.testing.assert_close(k.nngp, nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(k.ntk, ntk, rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    ("activation", "slope", "same_as", "same_slope"),
    [("leaky_relu", 1.0, "identity", None), ("leaky_relu", 0.0, "relu", None),
     ("abs", None, "leaky_relu", -1.0)],
)
def test_activation_identities(inputs, activation, slope, same_as, same_slope):
    kw = dict(depth=3, weight_std=1.2, bias_std=0.4)
    a = mlp_kernels(inputs, dual=get_dual(activation, slope=slope), **kw)
    b = mlp_kernels(inputs, dual=get_dual(same_as, slope=same_slope), **kw)
    torch.testing.assert_close(a.nngp, b.nngp, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(a.ntk, b.ntk, rtol=1e-14, atol=1e-15)


def dblquad_dual(phi, dphi, q1, q2, c):
    """E[phi(u)phi(v)], E[phi'(u)phi'(v)] by adaptive 2-d quadrature (scipy) over N(0, I)."""
    from scipy import integrate

    s1, s2, rho = math.sqrt(q1), math.sqrt(q2), c / math.sqrt(q1 * q2)
    rp = math.sqrt(1 - rho * rho)

    def expect(f):
        def g(z2, z1):
            return (f(s1 * z1) * f(s2 * (rho * z1 + rp * z2))
                    * math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi))
        return integrate.dblquad(g, -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-12)[0]

    return expect(phi), expect(dphi)


def _gelu(x):
    return x * 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _dgelu(x):
    cdf = 0.5 * (1 + math.erf(x / math.sqrt(2)))
    return cdf + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize(
    ("name", "phi", "dphi", "tol"),
    [("tanh", math.tanh, lambda x: 1 - math.tanh(x) ** 2, 1e-9), ("gelu", _gelu, _dgelu, 1e-11)],
)
@pytest.mark.parametrize(("q1", "q2", "rho"), [(0.7, 1.3, 0.4), (3.0, 2.5, -0.95)])
def test_quadrature_duals_match_adaptive_quadrature(name, phi, dphi, tol, q1, q2, rho):
    c = rho * math.sqrt(q1 * q2)
    k, kdot = get_dual(name)(*(torch.tensor([v], dtype=torch.float64) for v in (q1, q2, c)))
    ref_k, ref_kdot = dblquad_dual(phi, dphi, q1, q2, c)
    assert k.item() == pytest.approx(ref_k, rel=tol)
    assert kdot.item() == pytest.approx(ref_kdot, rel=tol)


def test_deep_network_overflowing_float32_is_exact_in_float64():
    # sigma_w = 4, identity activation: Sigma grows as 16^(L+1), beyond float32 at L = 40.
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    k = mlp_kernels(x, depth=40, dual=get_dual("identity"), weight_std=4.0, bias=False)
    nngp, ntk = closed_form_linear(x.double(), x.double(), 40, 4.0)
    assert k.ntk.dtype == torch.float64 and float(k.ntk.abs().max()) > 1e39
    torch.testing.assert_close(k.ntk, ntk, rtol=1e-13, atol=0)
    with pytest.raises(OverflowError, match="reduce depth"):
        mlp_kernels(x, depth=300, dual=get_dual("identity"), weight_std=4.0, bias=False)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_standard_parametrization_matches_monte_carlo(inputs, activation):
    # The standard-parametrization NTK grows with the width, so the width is part of the spec.
    spec = ArchSpec(depth=1, activation=activation, parametrization="standard", bias_std=0.5)
    mean, _ = monte_carlo_ntk(spec, inputs, width=1024, n_samples=24, seed=3)
    expected = analytic_kernels(spec.with_width(1024), inputs).ntk
    assert rel(mean, expected) < 0.05
    ntk_param = analytic_kernels(ArchSpec(depth=1, activation=activation, bias_std=0.5), inputs)
    assert rel(ntk_param.ntk, expected) > 0.5  # the two parametrizations really differ


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 1, 4, 4, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "spec",
    [ArchSpec(family="cnn", depth=2, activation="relu", bias_std=0.3),
     ArchSpec(family="cnn", depth=2, activation="erf", pool=True)],
    ids=lambda s: s.arch_id,
)
def test_cntk_matches_monte_carlo_at_width_1024(spec, images):
    mean, _ = monte_carlo_ntk(spec, images, width=1024, n_samples=8, seed=1)
    expected = analytic_kernels(spec, images).ntk
    assert rel(mean, expected) < 0.05


@pytest.mark.parametrize("spec", [ArchSpec(family="cnn", depth=1, activation="erf"),
                                  ArchSpec(family="cnn", depth=2, activation="relu")],
                         ids=lambda s: s.arch_id)
def test_cntk_cross_kernel_is_the_block_of_the_joint_kernel(spec, images):
    """``analytic_kernels(spec, z, x)`` (the held-out rows kernel-regression uses) equals the
    (z, x) block of the kernel on ``cat(z, x)``, computed by the symmetric path."""
    z, x = images[:1] * 1.5, images[1:]
    joint = analytic_kernels(spec, torch.cat([z, x]))
    cross = analytic_kernels(spec, z, x)
    torch.testing.assert_close(cross.ntk, joint.ntk[:1, 1:], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(cross.nngp, joint.nngp[:1, 1:], rtol=1e-12, atol=1e-14)


def test_cntk_degenerate_images_have_finite_gradients(images):
    spec = ArchSpec(family="cnn", depth=2, activation="relu", bias=False)
    x = torch.cat([images[:2], 2 * images[:1], torch.zeros_like(images[:1])]).requires_grad_(True)
    k = analytic_kernels(spec, x)
    assert torch.equal(k.ntk, k.ntk.T)
    assert float(k.ntk[3].abs().max()) == 0.0  # zero image, no bias: zero kernel row
    (grad,) = torch.autograd.grad(k.ntk.sum() + k.nngp.sum(), x)
    assert bool(torch.isfinite(grad).all())


def test_unsupported_specs_are_refused(images):
    with pytest.raises(NotImplementedError, match="BatchNorm"):
        analytic_kernels(ArchSpec(family="cnn", batchnorm=True), images)
    with pytest.raises(NotImplementedError, match="mup"):
        analytic_kernels(ArchSpec(parametrization="mup"), images)
    with pytest.raises(ValueError, match="width"):
        analytic_kernels(ArchSpec(parametrization="standard"), images)


def _erf_reference(x: torch.Tensor, depth: int, sw: float, sb: float):
    """The erf NNGP/NTK recursion in 60-digit arithmetic (mpmath), textbook formulas."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        xs = [[mpmath.mpf(float(v)) for v in row] for row in x.tolist()]
        n, d = len(xs), len(xs[0])
        sw2, sb2 = mpmath.mpf(sw) ** 2, mpmath.mpf(sb) ** 2
        s = [[sw2 * mpmath.fsum(a * b for a, b in zip(xs[i], xs[j], strict=True)) / d + sb2
              for j in range(n)] for i in range(n)]
        t = [row[:] for row in s]
        for _ in range(depth):
            s_next = [[None] * n for _ in range(n)]
            for i in range(n):
                for j in range(n):
                    q1, q2, c = s[i][i], s[j][j], s[i][j]
                    det = (1 + 2 * q1) * (1 + 2 * q2)
                    k = 2 / mpmath.pi * mpmath.asin(2 * c / mpmath.sqrt(det))
                    kdot = 4 / mpmath.pi / mpmath.sqrt(det - 4 * c * c)
                    s_next[i][j] = sw2 * k + sb2
                    t[i][j] = s_next[i][j] + sw2 * kdot * t[i][j]
            s = s_next
        def as_tensor(m):
            return torch.tensor([[float(v) for v in r] for r in m], dtype=torch.float64)
        return as_tensor(s), as_tensor(t)


@pytest.mark.parametrize("weight_std", [1e3, 1e5, 1e8])
def test_erf_dual_keeps_float64_digits_at_large_weight_std(weight_std):
    # The textbook (1 + 2q)(1 + 2q') - 4c^2 cancels to eps * q relative on the diagonal: 1e-6
    # off at weight_std 1e5, and 0 or negative at 1e8 (an OverflowError naming the variance).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    x = torch.cat([x, x[:1]])  # an identical pair too
    k = mlp_kernels(x, depth=2, dual=get_dual("erf"), weight_std=weight_std, bias_std=0.5)
    nngp, ntk = _erf_reference(x, 2, weight_std, 0.5)
    torch.testing.assert_close(k.nngp, nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(k.ntk, ntk, rtol=1e-13, atol=0)


@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "abs", "erf"])
def test_zero_input_without_bias_variance_follows_the_network(activation):
    # An all-zero input with bias_std = 0 has pre-activations exactly 0 in every network, so
    # the kernel follows phi'(0) as torch computes it (relu'(0) = 0, leaky_relu'(0) = slope);
    # under the standard parametrization the bias gradients keep the NTK non-zero there.
    spec = ArchSpec(depth=4, activation=activation, parametrization="standard", bias=True,
                    bias_std=0.0, width=512)
    x = torch.zeros(2, 5, dtype=torch.float64)
    x[1] = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = analytic_kernels(spec, x).ntk
    mean, stderr = monte_carlo_ntk(spec, x, width=512, n_samples=8, seed=0)
    zero_rows = torch.tensor([[True, True], [True, False]])  # pairs that involve the zero input
    gap = (mean - expected).abs()[zero_rows]
    assert bool((gap <= 4 * stderr[zero_rows] + 1e-9 * expected[zero_rows].abs()).all()), (
        expected, mean, stderr)


def test_quadrature_dual_under_autograd_keeps_only_its_inputs():
    # A depth-3 tanh NTK with input gradients kept every quadrature chunk's (pairs, n, n)
    # intermediates for backward (20+ GB on 40 inputs); checkpointed chunks keep their inputs.
    # Count what autograd saves outside the checkpoints: it must not grow with the nodes.
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_()
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        k = analytic_kernels(ArchSpec(depth=3, activation="tanh", bias_std=0.5), x).ntk
    (grad,) = torch.autograd.grad(k.sum(), x)
    assert bool(torch.isfinite(grad).all())
    pairs = x.shape[0] ** 2
    assert max(saved) <= 4 * pairs  # no (pairs, nodes, nodes) tensor: 128 nodes at least
    with torch.no_grad():  # and the values are those of the un-checkpointed evaluation
        torch.testing.assert_close(k.detach(), analytic_kernels(
            ArchSpec(depth=3, activation="tanh", bias_std=0.5), x.detach()).ntk, rtol=1e-13,
            atol=0)

@pytest.mark.parametrize("kw", [
    dict(depth=2, activation="relu", pool=True, bias=True),
    dict(depth=3, activation="erf", pool=False, bias=True),
    dict(depth=2, activation="leaky_relu", pool=False, bias=False, parametrization="standard"),
], ids=["relu-pool", "erf", "leaky-standard"])
def test_cntk_fast_path_equals_the_differentiable_path(kw):
    """The no-autograd path (pair layout, in-place window sums, blocked dual) against the
    differentiable one (a padded slice per kernel offset), on non-square images, x2 given."""
    from ntkcheck.kernels.cntk import cnn_kernels

    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(3, 2, 6, 4, generator=gen, dtype=torch.float64)
    x2 = torch.randn(2, 2, 6, 4, generator=gen, dtype=torch.float64)
    slope = 0.1 if kw["activation"] == "leaky_relu" else None
    args = dict(depth=kw["depth"], dual=get_dual(kw["activation"], slope=slope),
                weight_std=1.3, bias_std=0.2, bias=kw["bias"],
                parametrization=kw.get("parametrization", "ntk"), width=7, pool=kw["pool"])
    for second in (None, x2):
        fast = cnn_kernels(x1, second, **args)
        ref = cnn_kernels(x1.clone().requires_grad_(True),
                          None if second is None else second, **args)
        for f, r in zip(fast, ref, strict=True):
            torch.testing.assert_close(f, r.detach(), rtol=1e-12, atol=1e-14)


def test_analytic_kernels_refuse_at_once_with_the_estimate():
    # 10^6 inputs: two 10^12-entry float64 results (16 TB). Main allocated the input Gram and
    # died in the allocator; now the estimate is compared with free memory first.
    from ntkcheck.kernels import KernelMemoryError

    x = torch.ones(10**6, 1, dtype=torch.float64)
    with pytest.raises(KernelMemoryError, match=r"needs an estimated 14\d{3}\.\d\d GiB.*"
                       r"dtype=torch\.float32.*diagonal=True.*analytic_kernel_blocks"):
        analytic_kernels(ArchSpec(depth=2, activation="relu"), x)
    # what fits: the diagonal, O(N) memory, equal to the formula's K(x, x) = |x|^2 / d
    k = analytic_kernels(ArchSpec(depth=2, activation="relu", bias=False), x, diagonal=True)
    assert k.ntk.shape == (10**6,)
    assert torch.equal(k.nngp, torch.full((10**6,), 0.25, dtype=torch.float64))  # halved twice
    assert torch.equal(k.ntk, torch.full((10**6,), 0.75, dtype=torch.float64))


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_row_block_options_agree_with_the_whole_matrix(activation, monkeypatch):
    from ntkcheck.kernels import analytic
    from ntkcheck.kernels.analytic import analytic_kernel_blocks

    g = torch.Generator().manual_seed(5)
    x = torch.randn(23, 7, generator=g, dtype=torch.float64)
    x[4] = x[2]  # an identical pair across panels
    x[9] = 0.0
    spec = ArchSpec(depth=3, activation=activation, bias_std=0.2)
    whole = analytic_kernels(spec, x)
    ref = analytic_kernels(spec, x.clone().requires_grad_())  # the general (autograd) path
    monkeypatch.setattr(analytic, "PANEL_ELEMS", 5 * 23)  # panels of 5 rows, blocks of 1..5
    monkeypatch.setattr(analytic, "BLOCK_ELEMS", 2 * 23)
    paneled = analytic_kernels(spec, x)
    single = analytic_kernels(spec, x, dtype=torch.float32)
    diag = analytic_kernels(spec, x, diagonal=True)
    blocks = list(analytic_kernel_blocks(spec, x, block_rows=4))
    for k in (whole, paneled):
        assert torch.equal(k.ntk, k.ntk.T)
        torch.testing.assert_close(k.ntk, ref.ntk.detach(), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(k.nngp, ref.nngp.detach(), rtol=1e-13, atol=1e-15)
    assert single.ntk.dtype == torch.float32
    torch.testing.assert_close(single.ntk, whole.ntk.float(), rtol=2e-7, atol=0)
    torch.testing.assert_close(diag.ntk, whole.ntk.diagonal(), rtol=1e-13, atol=0)
    torch.testing.assert_close(diag.nngp, whole.nngp.diagonal(), rtol=1e-13, atol=0)
    assert [b[0] for b in blocks] == [slice(s, min(s + 4, 23)) for s in range(0, 23, 4)]
    torch.testing.assert_close(torch.cat([b[1].ntk for b in blocks]), whole.ntk, rtol=1e-13,
                               atol=1e-15)


def test_cntk_diagonal_and_memory_refusal():
    from ntkcheck.kernels import KernelMemoryError

    spec = ArchSpec(family="cnn", depth=1, activation="relu", bias_std=0.1)
    x = torch.randn(3, 1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    whole = analytic_kernels(spec, x)
    diag = analytic_kernels(spec, x, diagonal=True)
    torch.testing.assert_close(diag.ntk, whole.ntk.diagonal(), rtol=1e-13, atol=0)
    torch.testing.assert_close(diag.nngp, whole.nngp.diagonal(), rtol=1e-13, atol=0)
    big = torch.zeros(3000, 1, 28, 28, dtype=torch.float64)  # 9e6 pairs x 784^2 positions
    with pytest.raises(KernelMemoryError, match="analytic CNTK on 3000x3000 images of 784 "
                       "positions needs an estimated"):
        analytic_kernels(spec, big)
