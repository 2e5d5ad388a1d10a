"""Dual activations: Gaussian expectations that drive the infinite-width kernel recursions.

For a centred Gaussian pair ``(u, v)`` with ``Var u = q1``, ``Var v = q2``, ``Cov(u, v) = c``,
a dual returns ``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` elementwise. Arguments broadcast
against each other (typically ``q1`` is ``(N1, 1)``, ``q2`` is ``(1, N2)``, ``c`` is
``(N1, N2)``); all are float64 tensors, variances in units of squared pre-activations.

Every dual is safe where the Gaussian is degenerate (identical or parallel inputs:
``c**2 = q1 q2``; zero-norm inputs: ``q = 0``): values are finite and so are their gradients
(square roots and ``atan2`` are guarded with the "double ``where``" idiom, so a zero argument
gets a zero, not an infinite or NaN, derivative).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import scipy.special
import torch
import torch.utils.checkpoint

Dual = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` with a zero (not infinite) derivative where ``x <= 0``."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))),
                       torch.zeros_like(x))


def _safe_atan2(y: torch.Tensor, x: torch.Tensor, fill: float) -> torch.Tensor:
    """``atan2(y, x)``, equal to ``fill`` (with zero derivative) where ``x = y = 0``."""
    zero = (x == 0) & (y == 0)
    val = torch.atan2(torch.where(zero, torch.ones_like(y), y),
                      torch.where(zero, torch.zeros_like(x), x))
    return torch.where(zero, torch.full_like(val, fill), val)


def piecewise_linear(a: float, b: float, *, d0: float | None = None) -> Dual:
    """Dual of ``phi(x) = a * min(x, 0) + b * max(x, 0)``.

    Covers ReLU (``a=0, b=1``), LeakyReLU(alpha) (``a=alpha, b=1``), abs (``a=-1, b=1``) and the
    identity (``a=b=1``). With ``theta = atan2(sqrt(q1 q2 - c**2), c)`` (the angle between the
    two inputs in feature space) and ``s = sqrt(q1 q2 - c**2)``::

        E[phi' phi'] = (a**2 + b**2) / 2 - (b - a)**2 theta / (2 pi)
        E[phi  phi ] = (b - a)**2 s / (2 pi) + E[phi' phi'] c

    Source: the arc-cosine kernels of degree 0 and 1 (Cho & Saul 2009, eq. 6, with
    ``J_0 = pi - theta`` and ``J_1 = sin theta + (pi - theta) cos theta``), written for
    ``phi = (a+b)/2 x + (b-a)/2 |x|`` as in neural-tangents ``stax.ABRelu``.

    Degenerate Gaussians: a zero variance (an all-zero input without bias variance) makes
    the pre-activation exactly 0 in every network, so the expectations follow the network's
    derivative at 0, ``d0 = phi'(0)`` as autograd computes it (torch: ``relu'(0) = 0``,
    ``leaky_relu'(0) = alpha``, ``abs'(0) = 0``, identity 1)::

        q1 = 0, q2 > 0:  E[phi' phi'] = d0 (a + b) / 2     (phi'(v) averages (a + b) / 2)
        q1 = q2 = 0:     E[phi' phi'] = d0**2

    and ``E[phi phi] = 0``. This matters where a zero pre-activation variance meets a
    non-zero NTK, e.g. the bias gradients of the standard parametrization
    (``Theta^1 = x.x' + 1``); ``tests/test_kernels_analytic.py`` checks it against the mean
    empirical NTK of wide networks.

    Args:
        a: Slope for negative inputs.
        b: Slope for positive inputs.
        d0: ``phi'(0)``; default ``a`` (the derivative autograd gives at 0 for
            ``where(x > 0, b x, a x)``, as torch's ReLU, LeakyReLU and the identity).

    Returns:
        The dual function; its attribute ``inplace(q1, q2, c, k, kdot)`` computes the same
        values without autograd into preallocated ``k`` and ``kdot``.

    """
    factor = (b - a) ** 2 / (2 * math.pi)
    mean_sq = (a * a + b * b) / 2
    d0 = float(a if d0 is None else d0)
    one_zero, both_zero = d0 * (a + b) / 2, d0 * d0

    def degenerate(q1: torch.Tensor, q2: torch.Tensor, kdot: torch.Tensor) -> torch.Tensor:
        z1, z2 = q1 == 0, q2 == 0
        if not (bool(z1.any()) or bool(z2.any())):
            return kdot
        kdot = torch.where(z1 | z2, torch.full_like(kdot, one_zero), kdot)
        return torch.where(z1 & z2, torch.full_like(kdot, both_zero), kdot)

    def dual(q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor):
        if _needs_grad(q1, q2, c):
            s = _safe_sqrt(q1 * q2 - c * c)
            theta = _safe_atan2(s, c, 0.0)
            kdot = degenerate(q1, q2, mean_sq - factor * theta)
            return factor * s + kdot * c, kdot
        # Same values without the autograd guards (torch.atan2(0, 0) = 0), with fewer
        # temporaries: this is memory-bound on large Grams.
        s = (q1 * q2).sub_(c * c).clamp_min_(0).sqrt_()
        kdot = degenerate(q1, q2, torch.atan2(s, c).mul_(-factor).add_(mean_sq))
        return torch.addcmul(s.mul_(factor), kdot, c), kdot

    def inplace(q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor, k: torch.Tensor,
                kdot: torch.Tensor, zero2: bool | None = None) -> None:
        """The no-autograd branch of the dual, written into preallocated tensors.

        Same operations in the same order as the dual's no-autograd branch, without
        allocating: for row blocks that stay in cache (see
        :func:`ntkcheck.kernels.analytic.mlp_kernels`).

        Args:
            q1: Variance of ``u``, broadcasting against ``c`` (e.g. ``(B, 1)``).
            q2: Variance of ``v`` (e.g. ``(1, N2)``).
            c: ``(B, N2)`` covariance; read only.
            k: ``(B, N2)`` output, ``E[phi(u) phi(v)]``.
            kdot: ``(B, N2)`` output, ``E[phi'(u) phi'(v)]``.
            zero2: Whether any entry of ``q2`` is 0 (``None``: look), to skip the
                degenerate-variance case cheaply on repeated calls with one ``q2``.

        """
        torch.mul(c, c, out=kdot)
        torch.mul(q1, q2, out=k).sub_(kdot).clamp_min_(0).sqrt_()
        torch.atan2(k, c, out=kdot).mul_(-factor).add_(mean_sq)
        z1 = q1 == 0
        if bool(z1.any()) or (bool((q2 == 0).any()) if zero2 is None else zero2):
            z2 = q2 == 0
            kdot.masked_fill_(z1 | z2, one_zero).masked_fill_(z1 & z2, both_zero)
        k.mul_(factor).addcmul_(kdot, c)

    dual.inplace = inplace
    return dual


def erf_dual(q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor):
    """Dual of ``phi(x) = erf(x)``.

    ``E[erf(u) erf(v)] = (2/pi) arcsin(2c / sqrt((1 + 2 q1)(1 + 2 q2)))`` (Williams 1997,
    "Computing with infinite networks", eq. 11 with ``Sigma = 2 I`` folded in), and, since
    ``erf'(x) = 2/sqrt(pi) exp(-x**2)``, ``E[erf'(u) erf'(v)] = (4/pi) det(I + 2 K)^(-1/2)
    = (4/pi) / sqrt((1 + 2 q1)(1 + 2 q2) - 4 c**2)`` (a Gaussian integral).

    Both are evaluated from ``D = det(I + 2 K) = 1 + 2 (q1 + q2) + 4 (q1 q2 - c**2)`` with
    ``q1 q2 - c**2 = det K >= 0`` clamped at 0: ``E[erf erf] = (2/pi) atan2(2c, sqrt(D))``
    (``sin = 2c / sqrt((1 + 2 q1)(1 + 2 q2))``, ``cos = sqrt(D / ((1 + 2 q1)(1 + 2 q2)))``) and
    ``E[erf' erf'] = (4/pi) / sqrt(D)``. The textbook form subtracts ``4 c**2`` from
    ``(1 + 2 q1)(1 + 2 q2)``, which cancels to about ``eps * q`` relative on the diagonal
    (``c = q1 = q2``) and gives 0 or a negative number once ``q`` passes ``1 / eps``
    (``weight_std`` about ``1e8``); the arcsine near 1 loses half the digits likewise. Here
    ``D >= 1``, so both are finite for every finite variance, and the diagonal's ``det K``
    is exactly 0.
    """
    det_k = (q1 * q2 - c * c).clamp_min(0)
    root = torch.sqrt(1 + 2 * (q1 + q2) + 4 * det_k)
    return (2 / math.pi) * torch.atan2(2 * c, root), (4 / math.pi) / root


@lru_cache(maxsize=16)
def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalized to the N(0, 1) density."""
    nodes, weights = scipy.special.roots_hermitenorm(n)
    return nodes, weights / math.sqrt(2 * math.pi)


def _nodes_for(q_max: float, per_unit_variance: int, cap: int) -> int:
    """Node count growing linearly with the largest variance (features shrink as 1/sqrt(q))."""
    return int(min(cap, per_unit_variance * max(1, math.ceil(q_max))))


def _correlation(q1, q2, c):
    """``(sqrt q1, sqrt q2, rho, sqrt(1 - rho**2))`` flattened; rho clamped, 0 at q = 0."""
    q1, q2, c = torch.broadcast_tensors(q1, q2, c)
    q1, q2, c = q1.reshape(-1), q2.reshape(-1), c.reshape(-1)
    s1, s2 = _safe_sqrt(q1), _safe_sqrt(q2)
    denom = s1 * s2
    pos = denom > 0
    rho = torch.where(pos, c / torch.where(pos, denom, torch.ones_like(denom)),
                      torch.zeros_like(c)).clamp(-1.0, 1.0)
    return s1, s2, rho, _safe_sqrt(1 - rho * rho)


def _chunked(chunk: Callable[..., tuple[torch.Tensor, torch.Tensor]],
             args: tuple[torch.Tensor, ...], step: int, shape: torch.Size
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a quadrature ``chunk`` to ``step`` pairs at a time and reassemble ``shape``.

    Under autograd each chunk runs inside ``torch.utils.checkpoint.checkpoint`` (non-reentrant):
    backward keeps only the chunk's inputs (a few ``(pairs,)`` vectors) and recomputes its
    ``(pairs, nodes...)`` intermediates when it reaches them, so the memory of a
    differentiated quadrature dual stays that of one chunk (``chunk_elems`` values, times the
    few tensors of one evaluation) instead of growing with the number of pairs.
    """
    grad = _needs_grad(*args)
    ks, kds = [], []
    for start in range(0, args[0].numel(), step):
        part = tuple(t[start:start + step] for t in args)
        if grad:
            k, kd = torch.utils.checkpoint.checkpoint(chunk, *part, use_reentrant=False)
        else:
            k, kd = chunk(*part)
        ks.append(k)
        kds.append(kd)
    return torch.cat(ks).reshape(shape), torch.cat(kds).reshape(shape)


def quadrature(
    phi: Callable[[torch.Tensor], torch.Tensor],
    dphi: Callable[[torch.Tensor], torch.Tensor],
    per_unit_variance: int = 128,
    max_nodes: int = 512,
    chunk_elems: int = 1 << 22,
) -> Dual:
    """Dual of a smooth activation by two-dimensional Gauss-Hermite quadrature.

    Writes ``u = sqrt(q1) z1``, ``v = sqrt(q2) (rho z1 + sqrt(1 - rho**2) z2)`` with
    ``rho = c / sqrt(q1 q2)`` clamped to ``[-1, 1]`` (0 where a variance is 0) and independent
    standard normal ``z1, z2``, and applies the ``n``-point probabilists' Gauss-Hermite rule
    (``scipy.special.roots_hermitenorm``; Abramowitz & Stegun 25.4.46) in each of ``z1``
    and ``z2``, with ``n = per_unit_variance * ceil(max variance)`` capped at ``max_nodes``.
    The rule converges exponentially for activations analytic in a strip, but the strip of
    ``tanh(sqrt(q) z)`` narrows as ``1/sqrt(q)``: measured against ``scipy.integrate.dblquad``,
    the tanh dual and its derivative dual are accurate to about 1e-11 (relative) for variances
    up to 4 (correlations up to 0.999), 3e-9 at 8 and 1e-7 at 16.

    Args:
        phi: The activation, elementwise on float64 tensors.
        dphi: Its derivative.
        per_unit_variance: Nodes per dimension per unit of the largest variance.
        max_nodes: Cap on the nodes per dimension.
        chunk_elems: Bound on ``(#pairs) * n**2`` evaluated at once (memory; under autograd
            the chunks are checkpointed, so this also bounds what backward keeps).

    Returns:
        The dual function.

    """

    def dual(q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor):
        shape = torch.broadcast_shapes(q1.shape, q2.shape, c.shape)
        s1, s2, rho, rho_perp = _correlation(q1, q2, c)
        q_max = float(torch.maximum(s1.detach().max(), s2.detach().max())) ** 2
        nodes_np, weights_np = _hermite(_nodes_for(q_max, per_unit_variance, max_nodes))
        z = torch.as_tensor(nodes_np, dtype=c.dtype, device=c.device)
        w = torch.as_tensor(weights_np, dtype=c.dtype, device=c.device)
        w2 = w[:, None] * w[None, :]
        n = z.numel()
        step = max(1, chunk_elems // (n * n))

        def chunk(s1, s2, rho, rho_perp):
            u = s1[:, None, None] * z[None, :, None]
            v = s2[:, None, None] * (rho[:, None, None] * z[None, :, None]
                                     + rho_perp[:, None, None] * z[None, None, :])
            return (phi(u) * phi(v) * w2).sum((1, 2)), (dphi(u) * dphi(v) * w2).sum((1, 2))

        return _chunked(chunk, (s1, s2, rho, rho_perp), step, shape)

    return dual


def _norm_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.special.erf(x / math.sqrt(2)))


def _norm_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return x * _norm_cdf(x)


def _dgelu(x: torch.Tensor) -> torch.Tensor:
    # d/dx [x Phi(x)] = Phi(x) + x phi(x)
    return _norm_cdf(x) + x * _norm_pdf(x)


def gelu_dual(
    q1: torch.Tensor,
    q2: torch.Tensor,
    c: torch.Tensor,
    *,
    per_unit_variance: int = 128,
    max_nodes: int = 4096,
    chunk_elems: int = 1 << 22,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual of the exact GELU ``phi(x) = x Phi(x)`` (``Phi`` the standard normal CDF).

    With ``v = a + b z2`` given ``z1`` (``a = sqrt(q2) rho z1``, ``b = sqrt(q2 (1 - rho**2))``,
    ``r = sqrt(1 + b**2)``) the inner Gaussian expectations have closed forms (Gaussian
    integrals of ``Phi`` and ``phi``; e.g. Owen 1980, "A table of normal integrals", 10,010.8
    and 10,011.1)::

        E[GELU(v)  | z1] = a Phi(a/r) + b**2 phi(a/r) / r
        E[GELU'(v) | z1] = Phi(a/r) + a phi(a/r) / r**3

    and the outer expectation over ``z1`` uses one-dimensional Gauss-Hermite quadrature with
    ``per_unit_variance * ceil(max variance)`` nodes (at most ``max_nodes``).

    Args:
        q1: Variance of ``u``.
        q2: Variance of ``v``.
        c: Covariance.
        per_unit_variance: Nodes per unit of the largest variance.
        max_nodes: Cap on the number of nodes.
        chunk_elems: Bound on ``(#pairs) * nodes`` evaluated at once (checkpointed under
            autograd, as for :func:`quadrature`).

    Returns:
        ``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])``, broadcast shape, float64.

    """
    shape = torch.broadcast_shapes(q1.shape, q2.shape, c.shape)
    s1, s2, rho, rho_perp = _correlation(q1, q2, c)
    q_max = float(torch.maximum(s1.detach().max(), s2.detach().max())) ** 2
    nodes_np, weights_np = _hermite(_nodes_for(q_max, per_unit_variance, max_nodes))
    z = torch.as_tensor(nodes_np, dtype=c.dtype, device=c.device)
    w = torch.as_tensor(weights_np, dtype=c.dtype, device=c.device)
    step = max(1, chunk_elems // z.numel())

    def chunk(s1, s2rho, s2perp):
        u = s1[:, None] * z[None, :]
        a = s2rho[:, None] * z[None, :]
        b = s2perp[:, None]
        r = torch.sqrt(1 + b * b)
        t = a / r
        inner = a * _norm_cdf(t) + b * b * _norm_pdf(t) / r
        dinner = _norm_cdf(t) + a * _norm_pdf(t) / r**3
        return (_gelu(u) * inner * w).sum(1), (_dgelu(u) * dinner * w).sum(1)

    return _chunked(chunk, (s1, s2 * rho, s2 * rho_perp), step, shape)


def _dtanh(x: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(x) ** 2


def get_dual(name: str, *, slope: float | None = None) -> Dual:
    """The dual of an activation by name.

    Args:
        name: ``"relu"``, ``"leaky_relu"``, ``"abs"``, ``"identity"``, ``"erf"``, ``"tanh"``
            or ``"gelu"`` (exact GELU, ``x Phi(x)``).
        slope: Negative slope of ``"leaky_relu"`` (required for it, ignored otherwise).

    Returns:
        The dual function (closed form for the first five; Gauss-Hermite quadrature for tanh
        (2-d) and GELU (1-d, the inner expectation in closed form)).

    Raises:
        ValueError: On an unknown name or a missing slope.

    """
    if name == "relu":
        return piecewise_linear(0.0, 1.0)
    if name == "leaky_relu":
        if slope is None:
            raise ValueError("leaky_relu needs its negative slope")
        return piecewise_linear(float(slope), 1.0)
    if name == "abs":
        return piecewise_linear(-1.0, 1.0, d0=0.0)  # torch: abs'(0) = sgn(0) = 0
    if name == "identity":
        return piecewise_linear(1.0, 1.0)
    if name == "erf":
        return erf_dual
    if name == "tanh":
        return quadrature(torch.tanh, _dtanh)
    if name == "gelu":
        return gelu_dual
    raise ValueError(
        f"no dual for activation {name!r}; choose relu, leaky_relu, abs, identity, erf, tanh "
        "or gelu"
    )
