"""Infinite-width NNGP kernel and NTK of the MLPs that :mod:`ntkcheck.arch` builds.

Notation: an MLP of depth ``L`` has ``L`` hidden layers of width ``n`` and a readout layer, all
dense with weight scale ``sigma_w`` and (optional) bias scale ``sigma_b``, activation ``phi``,
input dimension ``d`` (inputs are flattened). The kernels are per output unit.

NTK parametrization (``h = sigma_w / sqrt(n_in) W x + sigma_b b``, ``W, b ~ N(0, 1)``;
Jacot et al. 2018, Theorem 1; Lee et al. 2019, eqs. 4 and 13)::

    Sigma^1(x, x') = sigma_w**2 x.x' / d + sigma_b**2
    Sigma^{l+1}    = sigma_w**2 E[phi(u) phi(v)] + sigma_b**2
    Theta^1        = Sigma^1
    Theta^{l+1}    = Sigma^{l+1} + sigma_w**2 E[phi'(u) phi'(v)] Theta^l

with ``(u, v)`` centred Gaussian of covariance ``Sigma^l`` restricted to ``{x, x'}``, and the
``sigma_b**2`` terms only with a bias. The NNGP kernel is ``Sigma^{L+1}`` and the NTK
``Theta^{L+1}``.

Standard parametrization (``h = W x + b``, ``W ~ N(0, sigma_w**2 / n_in)``,
``b ~ N(0, sigma_b**2)``): the NNGP kernel is the same; the NTK keeps the widths because
gradients w.r.t. ``W`` are not scaled by ``1 / sqrt(n_in)`` (Sohl-Dickstein et al. 2020, "On
the infinite width limit of neural networks with a standard parameterization", eq. 3;
neural-tangents ``stax.Dense(parameterization="standard")``)::

    Theta^1     = x.x' + 1
    Theta^{l+1} = n E[phi(u) phi(v)] + 1 + sigma_w**2 E[phi'(u) phi'(v)] Theta^l

(the ``+ 1`` only with a bias). This is the NTK of a network whose hidden layers all have
width ``n``, to leading order in ``n``; it grows linearly with ``n``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ntkcheck.kernels._threads import calling_thread_only
from ntkcheck.kernels.cntk import cnn_kernels
from ntkcheck.kernels.duals import Dual, get_dual


class Kernels(NamedTuple):
    """Infinite-width kernels of one architecture on two sets of inputs.

    Attributes:
        nngp: ``(N1, N2)`` float64 NNGP kernel (covariance of one output unit at init).
        ntk: ``(N1, N2)`` float64 neural tangent kernel (per output unit).

    """

    nngp: torch.Tensor
    ntk: torch.Tensor


def _flatten64(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(
            f"inputs must be a non-empty batch (N, *input_shape), got {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _check_finite(t: torch.Tensor, layer: int) -> None:
    if not bool(torch.isfinite(t).all()):
        raise OverflowError(
            f"the analytic kernel is not finite after layer {layer} even in float64; the "
            "network's variance overflows (reduce depth, weight_std or the input scale)"
        )


def mlp_kernels(
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    depth: int,
    dual: Dual,
    weight_std: float = 1.0,
    bias_std: float = 0.0,
    bias: bool = True,
    parametrization: str = "ntk",
    width: int | None = None,
) -> Kernels:
    """NNGP kernel and NTK of a fully connected network (formulas in the module docstring).

    Args:
        x1: ``(N1, *input_shape)`` inputs (flattened to ``d`` features, computed in float64).
        x2: ``(N2, *input_shape)`` inputs, or ``None`` for ``x1`` (the result is then exactly
            symmetric).
        depth: Number of hidden layers ``L >= 0``.
        dual: The activation's dual, see :mod:`ntkcheck.kernels.duals`.
        weight_std: ``sigma_w > 0``.
        bias_std: ``sigma_b >= 0``.
        bias: Whether layers have biases.
        parametrization: ``"ntk"`` or ``"standard"``.
        width: Hidden width ``n``; needed (only) for ``"standard"``.

    Without input gradients and for duals with an ``inplace`` variant (the piecewise-linear
    ones) the layers run on cache-sized row blocks, see :func:`_mlp_blocked`.

    Returns:
        :class:`Kernels` of ``(N1, N2)`` float64 tensors on the inputs' device; differentiable
        w.r.t. the inputs, with finite gradients at identical, parallel and zero inputs.

    Raises:
        ValueError: On an unknown parametrization, a missing width for ``"standard"``, or
            inputs of different feature sizes.
        OverflowError: If the kernel overflows float64.

    """
    if parametrization not in ("ntk", "standard"):
        raise ValueError(f"analytic kernels know the 'ntk' and 'standard' parametrizations, "
                         f"not {parametrization!r}")
    if parametrization == "standard" and width is None:
        raise ValueError("the standard-parametrization NTK grows with the width; give a width")
    symmetric = x2 is None
    a = _flatten64(x1)
    b = a if symmetric else _flatten64(x2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x1 and x2 have {a.shape[1]} and {b.shape[1]} features")
    d = a.shape[1]
    sw2, sb2 = float(weight_std) ** 2, float(bias_std) ** 2 if bias else 0.0
    one = 1.0 if bias else 0.0
    inplace = getattr(dual, "inplace", None)
    if inplace is not None and not (torch.is_grad_enabled()
                                    and (a.requires_grad or b.requires_grad)):
        with torch.no_grad(), calling_thread_only():  # small blocks: see _threads
            return _mlp_blocked(a, b, symmetric, depth, dual, inplace, sw2, sb2, one,
                                parametrization == "ntk", width)
    dot = a @ b.T
    if symmetric:
        dot = (dot + dot.T) / 2
        sq1 = sq2 = dot.diagonal()
    else:
        sq1, sq2 = (a * a).sum(-1), (b * b).sum(-1)
    c = sw2 * dot / d + sb2
    q1 = (sw2 * sq1 / d + sb2)[:, None]
    q2 = (sw2 * sq2 / d + sb2)[None, :]
    theta = c if parametrization == "ntk" else dot + one
    for _ in range(depth):
        k, kdot = dual(q1, q2, c)
        k1, _ = dual(q1, q1, q1)
        k2, _ = dual(q2, q2, q2)
        c_next = sw2 * k + sb2
        own = c_next if parametrization == "ntk" else width * k + one
        theta = torch.addcmul(own, kdot, theta, value=sw2)
        c, q1, q2 = c_next, sw2 * k1 + sb2, sw2 * k2 + sb2
    _check_finite(c, depth)
    _check_finite(theta, depth)
    if symmetric:
        c, theta = (c + c.T) / 2, (theta + theta.T) / 2
    return Kernels(nngp=c, ntk=theta)


BLOCK_ELEMS = 16383
"""Elements of the row blocks of :func:`_mlp_blocked`: below the smallest intra-op grain size
of PyTorch's CPU elementwise kernels (16384, for unary ones such as ``sqrt``), so the
operations on a block run on the calling thread whatever the thread setting (a parallel
region per operation costs a scheduler time slice, ~10 ms, on a loaded machine), and the
block-sized float64 tensors (~0.5 MiB) stay in cache through all layers. Smaller blocks
spend more time in per-operation overhead (measured on the depth-5 x 1797 digits case)."""


def _mlp_blocked(a, b, symmetric, depth, dual, inplace, sw2, sb2, one, ntk_param, width):
    """:func:`mlp_kernels` without autograd, for duals with an ``inplace`` variant.

    The recursion is elementwise given the per-input variances, so those are computed first
    for every layer (``(N1, 1)`` and ``(1, N2)`` vectors), and then all layers run on one
    ``(B, N2)`` row block of the output at a time, in place and in cache. The operations and
    their order are those of the general path; values agree with it to rounding (vectorized
    and scalar-tail elementwise kernels can differ in the last bit). For ``x2 = None`` the
    symmetrization ``(M + M.T) / 2`` is done block by block as the rows are finished.

    Args:
        a: ``(N1, d)`` float64 inputs.
        b: ``(N2, d)`` float64 inputs (``a`` itself when ``symmetric``).
        symmetric: Whether ``x2`` was ``None`` (the result is then symmetrized).
        depth: Number of hidden layers.
        dual: The dual, for the variance vectors.
        inplace: ``dual.inplace(q1, q2, c, k, kdot)``.
        sw2: ``sigma_w**2``.
        sb2: ``sigma_b**2`` (0 without bias).
        one: ``1`` with a bias, else ``0`` (standard parametrization).
        ntk_param: NTK (``True``) or standard (``False``) parametrization.
        width: Hidden width (standard parametrization).

    Returns:
        :class:`Kernels` of ``(N1, N2)`` float64 tensors.

    """
    n1, n2, d = a.shape[0], b.shape[0], a.shape[1]
    dot = a @ b.T
    if symmetric:
        sq1 = sq2 = dot.diagonal()  # equal to the diagonal of (dot + dot.T) / 2
    else:
        sq1, sq2 = (a * a).sum(-1), (b * b).sum(-1)
    q1 = (sw2 * sq1 / d + sb2)[:, None]
    q2 = (sw2 * sq2 / d + sb2)[None, :]
    q1s, q2s = [q1], [q2]
    for _ in range(depth):
        k1, _ = dual(q1, q1, q1)
        k2, _ = dual(q2, q2, q2)
        q1, q2 = sw2 * k1 + sb2, sw2 * k2 + sb2
        q1s.append(q1)
        q2s.append(q2)
    nngp = torch.empty(n1, n2, dtype=a.dtype, device=a.device)
    ntk = torch.empty_like(nngp)
    rows = max(1, BLOCK_ELEMS // n2)
    k = torch.empty(min(rows, n1), n2, dtype=a.dtype, device=a.device)
    kdot = torch.empty_like(k)
    for start in range(0, n1, rows):
        sl = slice(start, start + rows)
        c, theta = nngp[sl], ntk[sl]
        kb, kdb = k[: c.shape[0]], kdot[: c.shape[0]]
        if symmetric:
            torch.add(dot[sl], dot[:, sl].T, out=theta).div_(2)
        else:
            theta.copy_(dot[sl])
        torch.mul(theta, sw2, out=c).div_(d).add_(sb2)
        if ntk_param:
            theta.copy_(c)
        else:
            theta.add_(one)
        for layer in range(depth):
            inplace(q1s[layer][sl], q2s[layer], c, kb, kdb)
            torch.mul(kb, sw2, out=c).add_(sb2)
            own = c if ntk_param else kb.mul_(width).add_(one)
            torch.addcmul(own, kdb, theta, value=sw2, out=theta)
        if not all(math.isfinite(v) for t in (c, theta) for v in torch.aminmax(t)):
            _check_finite(torch.stack((c, theta)), depth)  # raises with its message
        if symmetric:  # (M + M.T) / 2 on the rows and columns done so far
            for m in (nngp, ntk):
                lower, upper = m[sl, :start], m[:start, sl]
                lower.add_(upper.T).div_(2)
                upper.copy_(lower.T)
                diag, tmp = m[sl, sl], kdb[:, : c.shape[0]]
                torch.add(diag, diag.T, out=tmp).div_(2)
                diag.copy_(tmp)
    return Kernels(nngp=nngp, ntk=ntk)


def analytic_kernels(spec, x1: torch.Tensor, x2: torch.Tensor | None = None) -> Kernels:
    """Infinite-width NNGP kernel and NTK of the network an ``ArchSpec`` describes.

    Uses ``spec.depth``, ``activation`` (LeakyReLU with slope
    :data:`ntkcheck.arch.LEAKY_RELU_SLOPE`), ``parametrization``, ``bias``, ``weight_std`` and
    ``bias_std`` (and ``pool`` for CNNs). The width is ignored under the NTK parametrization
    (the limit is width-independent) and used under the standard one (see the module
    docstring). MLPs use :func:`mlp_kernels`; CNNs (family ``"cnn"``, global average pooling
    read-out, no BatchNorm) use :func:`ntkcheck.kernels.cntk.cnn_kernels`.

    A user's :class:`ntkcheck.family.ModelFamily` member has no analytic kernel: for it this
    returns the documented substitute :meth:`ntkcheck.family.ModelFamily.reference_kernels`
    (a Monte-Carlo estimate at the family's reference width), which its records name in their
    ``kernel_reference`` field.

    Args:
        spec: A :class:`ntkcheck.arch.ArchSpec` of family ``"mlp"`` or ``"cnn"``, or a
            :class:`ntkcheck.family.ModelFamily` member.
        x1: ``(N1, *input_shape)`` inputs (images ``(N1, C, H, W)`` for CNNs); MLP inputs are
            flattened; computed in float64.
        x2: ``(N2, *input_shape)`` inputs or ``None`` (then ``x2 = x1``, exactly symmetric).

    Returns:
        :class:`Kernels` with ``(N1, N2)`` float64 ``nngp`` and ``ntk`` (per output unit).

    Raises:
        NotImplementedError: For families or parametrizations without an analytic kernel here.
        ValueError: For the standard parametrization on a spec without width.
        OverflowError: If the kernel overflows float64.

    """
    from ntkcheck import arch
    from ntkcheck.family import is_family

    if is_family(spec):
        return spec.reference_kernels(x1, x2)
    if spec.family not in ("mlp", "cnn") or getattr(spec, "batchnorm", False):
        raise NotImplementedError(
            f"no analytic kernel for {spec.arch_id}: only MLPs and CNNs without BatchNorm"
        )
    if spec.parametrization not in ("ntk", "standard"):
        raise NotImplementedError(
            f"no analytic kernel for parametrization {spec.parametrization!r}"
        )
    slope = arch.LEAKY_RELU_SLOPE if spec.activation == "leaky_relu" else None
    if spec.family == "cnn":
        nngp, ntk = cnn_kernels(
            x1, x2, depth=spec.depth, dual=get_dual(spec.activation, slope=slope),
            weight_std=spec.weight_std, bias_std=spec.bias_std, bias=spec.bias,
            parametrization=spec.parametrization, width=spec.width,
            pool=getattr(spec, "pool", False),
        )
        return Kernels(nngp=nngp, ntk=ntk)
    return mlp_kernels(
        x1,
        x2,
        depth=spec.depth,
        dual=get_dual(spec.activation, slope=slope),
        weight_std=spec.weight_std,
        bias_std=spec.bias_std,
        bias=spec.bias,
        parametrization=spec.parametrization,
        width=spec.width,
    )
