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

import torch

from ntkcheck.kernels.duals import Dual


def _shift_average(m: torch.Tensor, k: int) -> torch.Tensor:
    """``A(M)`` over the last four axes ``(H, W, H, W)`` of ``m`` (zero padding, odd ``k``)."""
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
