"""Infinite-width kernels (CNN-GP and CNTK) of the ``"cnn"`` family of :mod:`ntkcheck.arch`.

The network: ``depth`` 3x3 convolutions of ``width`` channels, stride 1, zero "same" padding,
each followed by the activation (and, with ``pool``, a 2x2 average pooling); then global
average pooling (GAP) and a dense read-out. Kernels are computed for every pair of spatial
positions ``(p, p')`` and every pair of inputs: tensors ``(N1, N2, H, W, H, W)``.

Recursion (Arora et al. 2019, "On exact computation with an infinitely wide neural net",
sec. 4 and Appendix B, eqs. 7-9, with biases; Novak et al. 2019, "Bayesian deep convolutional
networks with many channels are Gaussian processes", eq. 7). Write ``A`` for the operator
``A(M)[p, p'] = (1/k**2) sum_{delta} M[p + delta, p' + delta]`` (``delta`` over the ``k x k``
kernel offsets; positions outside the image contribute 0, i.e. zero padding). Start from the
input "post-activation" covariance ``K~^0[p, p'] = sum_c x[c, p] x'[c, p'] / C`` and
``Theta~^0 = 0``. Each conv layer ``l = 1..L`` with fan-in ``n_{l-1} k**2``::

    Sigma^l = sigma_w**2 A(K~^{l-1}) + sigma_b**2
    Theta^l = T^l + sigma_w**2 A(Theta~^{l-1})
    K~^l    = E[phi(u) phi(v)],    Theta~^l = E[phi'(u) phi'(v)] * Theta^l

where ``(u, v)`` is Gaussian with covariance ``Sigma^l`` at positions ``(p, p')``, and ``T^l``
is the contribution of layer ``l``'s own parameters: ``Sigma^l`` under the NTK
parametrization, ``n_{l-1} k**2 A(K~^{l-1}) + 1`` under the standard one (``n_0 = C``; the
``sigma_b``/``+1`` terms only with a bias). A 2x2 average pooling averages ``K~`` and
``Theta~`` over 2x2 blocks of both ``p`` and ``p'``. The read-out after GAP (fan-in ``n_L``)::

    NNGP = sigma_w**2 mean_{p,p'} K~^L + sigma_b**2
    NTK  = T + sigma_w**2 mean_{p,p'} Theta~^L

with ``T = NNGP`` (NTK parametrization) or ``n_L mean K~^L + 1`` (standard).
"""

from __future__ import annotations

import math

import torch

from ntkcheck.kernels._threads import calling_thread_only
from ntkcheck.kernels.duals import Dual


def _shift_average(m: torch.Tensor, k: int) -> torch.Tensor:
    """``A(M)`` over the last four axes ``(H, W, H, W)`` of ``m`` (zero padding, odd ``k``).

    The reference form (one padded slice per kernel offset, differentiable); the kernels use
    :func:`_shift_sum_` where no gradient is needed.
    """
    r = k // 2
    h, w = m.shape[-4], m.shape[-3]
    pad = torch.nn.functional.pad(m, (r, r, r, r, r, r, r, r))
    out = torch.zeros_like(m)
    for dy in range(k):
        for dx in range(k):
            out = out + pad[..., dy:dy + h, dx:dx + w, dy:dy + h, dx:dx + w]
    return out / (k * k)


def _pool2(m: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling (stride 2, floor) of both position pairs of ``(..., H, W, H, W)``."""
    h, w = m.shape[-4] // 2, m.shape[-3] // 2
    m = m[..., : 2 * h, : 2 * w, : 2 * h, : 2 * w]
    m = m.reshape(*m.shape[:-4], h, 2, w, 2, h, 2, w, 2)
    return m.mean(dim=(-7, -5, -3, -1))


def _diag(m: torch.Tensor) -> torch.Tensor:
    """Position diagonal ``(N, H, W)`` of self-pair tensors ``(N, H, W, H, W)``."""
    n, h, w = m.shape[0], m.shape[1], m.shape[2]
    return m.reshape(n, h * w, h * w).diagonal(dim1=1, dim2=2).reshape(n, h, w)


BLOCK_ELEMS = 1 << 15
"""Elements per block of the elementwise dual in :func:`_cnn_no_grad` (a slice of the
``(N1, N2, H, H, W, W)`` covariance): small enough to stay in a core's cache across the
dual's operations."""


def _pool_operator(n: int, dtype, device) -> torch.Tensor:
    """``((n // 2)**2, n**2)`` 2-average pooling (stride 2, floor) of position pairs ``(y, y')``.

    ``kron(Q, Q)`` with ``Q[i, 2 i] = Q[i, 2 i + 1] = 1/2``: both positions pooled.
    """
    q = torch.zeros(n // 2, n, dtype=dtype, device=device)
    rows = torch.arange(n // 2, device=device)
    q[rows, 2 * rows] = q[rows, 2 * rows + 1] = 0.5
    return torch.kron(q, q)


def _pool_pairs(m: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling of both positions of ``(N1, N2, H, H, W, W)``: ``P_H M P_W^T``.

    The pooling acts on the row positions ``(y, y')`` and the column positions ``(x, x')``
    separately, so it is two matrix products per ``(H H, W W)`` pair matrix.
    """
    n1, n2, h, w = m.shape[0], m.shape[1], m.shape[2], m.shape[4]
    ph = _pool_operator(h, m.dtype, m.device)
    pw = ph if w == h else _pool_operator(w, m.dtype, m.device)
    flat = torch.matmul(ph, m.reshape(n1 * n2, h * h, w * w))
    flat = torch.matmul(flat.reshape(-1, w * w), pw.T)
    return flat.reshape(n1, n2, h // 2, h // 2, w // 2, w // 2)


def _window_sum_(m: torch.Tensor, tmp: torch.Tensor, k: int) -> torch.Tensor:
    """``k**2 A(M)`` of ``(N1, N2, H, H, W, W)`` in place, with one scratch tensor.

    The window sum is separable: the indicator that ``p + delta`` and ``p' + delta`` lie in the
    image factorizes over the two spatial axes, so ``k**2 A = S_H S_W`` with
    ``S_H(M)[y, y', x, x'] = sum_{|d| <= k // 2} M[y + d, y' + d, x, x']`` (zero outside): the
    diagonal window sums neural-tangents computes as depthwise convolutions of full spatial
    covariances (``stax.Conv``). Each ``S`` is a copy and ``k - 1`` in-place shifted adds;
    nothing is allocated.

    Args:
        m: ``(N1, N2, H, H, W, W)``; overwritten with the result.
        tmp: Scratch tensor of ``m``'s shape, dtype and device (contents destroyed).
        k: Odd kernel size.

    Returns:
        ``m``.

    """
    r = k // 2
    src, dst = m, tmp
    for a1, a2 in ((2, 3), (4, 5)):
        n = src.shape[a1]
        dst.copy_(src)
        for d in range(1, min(r, n - 1) + 1):
            dst.narrow(a1, 0, n - d).narrow(a2, 0, n - d).add_(
                src.narrow(a1, d, n - d).narrow(a2, d, n - d))
            dst.narrow(a1, d, n - d).narrow(a2, d, n - d).add_(
                src.narrow(a1, 0, n - d).narrow(a2, 0, n - d))
        src, dst = dst, src
    return src  # two swaps: the result is back in m


def _dual_rows_(dual: Dual, q1: torch.Tensor, q2: torch.Tensor, sig: torch.Tensor,
                theta: torch.Tensor) -> None:
    """``sig <- E[phi phi]`` and ``theta <- E[phi' phi'] * theta`` in place, block by block.

    Args:
        dual: The activation's dual (its ``inplace`` variant is used where it has one).
        q1: ``(N1, H, W)`` variances of the first side's positions.
        q2: ``(N2, H, W)`` of the second side.
        sig: ``(N1, N2, H, H, W, W)`` pre-activation covariances; overwritten.
        theta: Same shape, the pre-activation NTK; overwritten.

    """
    n2 = sig.shape[1]
    cols = max(1, min(n2, BLOCK_ELEMS // sig[0, 0].numel()))
    inplace = getattr(dual, "inplace", None)
    kb = torch.empty((cols, *sig.shape[2:]), dtype=sig.dtype, device=sig.device)
    kdb = torch.empty_like(kb)
    q1v = q1[:, :, None, :, None]  # (N1, H, 1, W, 1): position p = (y, x)
    q2v = q2[:, None, :, None, :]  # (N2, 1, H, 1, W): position p' = (y', x')
    with calling_thread_only():  # many small operations: see _threads
        for i in range(sig.shape[0]):
            for j in range(0, n2, cols):
                c, t = sig[i, j:j + cols], theta[i, j:j + cols]
                if inplace is not None:
                    k, kd = kb[: c.shape[0]], kdb[: c.shape[0]]
                    inplace(q1v[i], q2v[j:j + cols], c, k, kd)
                else:
                    k, kd = dual(q1v[i], q2v[j:j + cols], c)
                c.copy_(k)
                t.mul_(kd)


def _self_pairs(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, H, W, W)`` input covariances of each image with itself, pair layout."""
    return torch.einsum("icyx,icvu->iyvxu", x, x).div_(x.shape[1]).unsqueeze(1)


def _pair_diag(m: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` variances ``M[p, p]`` of ``(N, 1, H, H, W, W)`` self-pair tensors."""
    return m[:, 0].diagonal(dim1=1, dim2=2).diagonal(dim1=1, dim2=2)


def _cnn_no_grad(a, b, symmetric, depth, dual, sw2, sb2, one, ntk_param, width, pool,
                 kernel_size):
    """:func:`cnn_kernels` without autograd, on tensors in position-pair layout.

    Kernels are held as ``(N1, N2, H, H, W, W)`` (row positions ``y, y'`` next to each other,
    then columns ``x, x'``), so that window sums (in-place shifted adds, :func:`_window_sum_`)
    and pooling (matrix products, :func:`_pool_pairs`) act on contiguous runs; the dual runs
    in place on cache-sized blocks. The same recursion as the differentiable path, with
    another order of summation.
    """
    k2 = kernel_size * kernel_size
    channels = a.shape[1]
    cross = torch.einsum("icyx,jcvu->ijyvxu", a, b).div_(channels)
    self1 = _self_pairs(a)
    self2 = self1 if symmetric else _self_pairs(b)
    theta = None
    fan_in = channels * k2
    s = sw2 / k2
    scratch = torch.empty_like(cross)
    for _ in range(depth):
        cross = _window_sum_(cross, scratch, kernel_size)  # k^2 A(K~)
        # T^l: Sigma^l (NTK parametrization) or n_{l-1} k^2 A(K~) + 1 (standard).
        if theta is not None:
            theta = _window_sum_(theta, scratch, kernel_size).mul_(s)
        own = scratch
        if ntk_param:
            torch.mul(cross, s, out=own).add_(sb2)
        else:
            torch.mul(cross, fan_in / k2, out=own).add_(one)
        if theta is not None:
            own.add_(theta)
            scratch = theta  # free again
        else:
            scratch = torch.empty_like(cross)
        theta = own
        sig = cross.mul_(s).add_(sb2)
        new = []
        for m in ((self1,) if symmetric else (self1, self2)):
            m = _window_sum_(m.clone(), torch.empty_like(m), kernel_size).mul_(s).add_(sb2)
            q = _pair_diag(m)
            new.append((q, dual(q[:, None, :, None, :, None], q[:, None, None, :, None, :],
                                m)[0]))
        (q1, self1), (q2, self2) = new[0], new[-1]
        _dual_rows_(dual, q1, q2, sig, theta)
        cross = sig
        del own, sig
        if pool:
            cross, theta, self1 = _pool_pairs(cross), _pool_pairs(theta), _pool_pairs(self1)
            self2 = self1 if symmetric else _pool_pairs(self2)
            scratch = torch.empty_like(cross)
        fan_in = width * k2 if width is not None else None
        # One pass each, no mask: a non-finite (or overflowing) element makes the sum so.
        if not (math.isfinite(float(cross.sum())) and math.isfinite(float(theta.sum()))):
            raise OverflowError("the CNN kernel overflowed float64; reduce depth or weight_std")
    n1, n2 = cross.shape[0], cross.shape[1]
    k_gap = cross.reshape(n1, n2, -1).mean(-1)
    t_gap = theta.reshape(n1, n2, -1).mean(-1)
    nngp = sw2 * k_gap + sb2
    own = nngp if ntk_param else width * k_gap + one
    return nngp, own + sw2 * t_gap


def cnn_kernels(
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    *,
    depth: int,
    dual: Dual,
    weight_std: float,
    bias_std: float,
    bias: bool,
    parametrization: str = "ntk",
    width: int | None = None,
    pool: bool = False,
    kernel_size: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CNN-GP (NNGP) kernel and CNTK with a GAP read-out (formulas in the module docstring).

    Args:
        x1: ``(N1, C, H, W)`` images (computed in float64).
        x2: ``(N2, C, H, W)`` images, or ``None`` for ``x1`` (exactly symmetric result).
        depth: Number of conv layers ``L >= 1``.
        dual: The activation's dual (:mod:`ntkcheck.kernels.duals`).
        weight_std: ``sigma_w``.
        bias_std: ``sigma_b``.
        bias: Whether layers have biases.
        parametrization: ``"ntk"`` or ``"standard"``.
        width: Channels ``n``; needed for ``"standard"`` only.
        pool: 2x2 average pooling after every conv layer.
        kernel_size: Odd conv kernel size ``k``.

    Returns:
        ``(nngp, ntk)``, each ``(N1, N2)`` float64, per output unit.

    Raises:
        ValueError: On non-image inputs, mismatched shapes, an unknown parametrization or a
            missing width for ``"standard"``.
        OverflowError: If a kernel overflows float64.
    """
    if parametrization not in ("ntk", "standard"):
        raise ValueError(f"the CNTK knows 'ntk' and 'standard', not {parametrization!r}")
    if parametrization == "standard" and width is None:
        raise ValueError("the standard-parametrization CNTK grows with the width; give a width")
    symmetric = x2 is None
    a = torch.as_tensor(x1).to(torch.float64)
    b = a if symmetric else torch.as_tensor(x2).to(torch.float64)
    if a.dim() != 4 or b.dim() != 4 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"CNN kernels take image batches (N, C, H, W) of one shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2 if bias else 0.0
    one = 1.0 if bias else 0.0
    channels = a.shape[1]
    k2 = kernel_size * kernel_size
    if not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)):
        with torch.no_grad():
            nngp, ntk = _cnn_no_grad(a, b, symmetric, depth, dual, sw2, sb2, one,
                                     parametrization == "ntk", width, pool, kernel_size)
        if symmetric:
            nngp, ntk = (nngp + nngp.T) / 2, (ntk + ntk.T) / 2
        return nngp, ntk

    # Post-activation covariances of the input: cross pairs and the self pairs of each side.
    cross = torch.einsum("icyx,jcvu->ijyxvu", a, b) / channels
    self1 = torch.einsum("icyx,icvu->iyxvu", a, a) / channels
    self2 = self1 if symmetric else torch.einsum("icyx,icvu->iyxvu", b, b) / channels
    theta_post = torch.zeros_like(cross)
    fan_in = channels * k2
    for _ in range(depth):
        sig = sw2 * _shift_average(cross, kernel_size) + sb2
        own = sig if parametrization == "ntk" else fan_in * _shift_average(cross, kernel_size) + one
        theta = own + sw2 * _shift_average(theta_post, kernel_size)
        s1 = sw2 * _shift_average(self1, kernel_size) + sb2
        s2 = s1 if symmetric else sw2 * _shift_average(self2, kernel_size) + sb2
        q1, q2 = _diag(s1), _diag(s2)
        cross, kdot = dual(q1[:, None, :, :, None, None], q2[None, :, None, None, :, :], sig)
        theta_post = kdot * theta
        self1, _ = dual(q1[:, :, :, None, None], q1[:, None, None, :, :], s1)
        self2 = self1 if symmetric else dual(q2[:, :, :, None, None], q2[:, None, None, :, :],
                                             s2)[0]
        if pool:
            cross, theta_post, self1 = _pool2(cross), _pool2(theta_post), _pool2(self1)
            self2 = self1 if symmetric else _pool2(self2)
        fan_in = width * k2 if width is not None else None
        if not (torch.isfinite(cross).all() and torch.isfinite(theta_post).all()):
            raise OverflowError("the CNN kernel overflowed float64; reduce depth or weight_std")
    k_gap = cross.mean(dim=(-4, -3, -2, -1))
    t_gap = theta_post.mean(dim=(-4, -3, -2, -1))
    nngp = sw2 * k_gap + sb2
    own = nngp if parametrization == "ntk" else width * k_gap + one
    ntk = own + sw2 * t_gap
    if symmetric:
        nngp, ntk = (nngp + nngp.T) / 2, (ntk + ntk.T) / 2
    return nngp, ntk
