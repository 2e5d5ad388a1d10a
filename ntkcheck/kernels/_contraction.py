"""Jacobian-based empirical NTK building blocks: per-sample Jacobians and their contraction.

The empirical NTK of a network ``f(theta, x)`` with ``O`` outputs is (Jacot et al. 2018, eq. 2)
``Theta(x1, x2)[a, b] = sum_p d f_a(x1)/d theta_p * d f_b(x2)/d theta_p``. These helpers form the
per-sample Jacobian with ``torch.func.jacrev`` under ``torch.func.vmap`` (the recipe of the
torch.func "Neural Tangent Kernels" tutorial) and contract it, or compute kernel columns as
NTK-vector products (a ``vjp`` at ``x2`` followed by a ``jvp`` at ``x1``) without ever holding a
Jacobian.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap


def contract(j1: torch.Tensor, j2: torch.Tensor, output: str) -> torch.Tensor:
    """Contract two Jacobian blocks over their parameter axis.

    Args:
        j1: ``(n1, O, P)`` Jacobian of the outputs at ``x1`` w.r.t. ``P`` parameters.
        j2: ``(n2, O, P)`` Jacobian at ``x2``; same dtype and device.
        output: ``"full"``, ``"trace"`` or ``"diagonal"``.

    Returns:
        ``(n1, n2, O, O)``, ``(n1, n2)`` or ``(n1, n2, O)`` respectively.

    """
    if output == "full":
        return torch.einsum("iap,jbp->ijab", j1, j2)
    if output == "trace":
        return j1.reshape(j1.shape[0], -1) @ j2.reshape(j2.shape[0], -1).T
    return torch.einsum("iap,jap->ija", j1, j2)


def per_sample_jacobian(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    n_out: int,
) -> dict[str, torch.Tensor]:
    """Per-sample Jacobians of ``model`` w.r.t. ``params`` (``jacrev`` under ``vmap``).

    Parameters of ``model`` not named in ``params`` are held fixed at their current values.

    Args:
        model: The network; maps ``(n, *input_shape)`` to ``n * n_out`` outputs.
        params: Parameters to differentiate, by qualified name (detached tensors).
        x: ``(n, *input_shape)`` inputs in the model's dtype.
        n_out: Number of outputs per sample ``O``.

    Returns:
        Per parameter name, a ``(n, O, numel)`` tensor.

    """

    def f(p: Mapping[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(p), (xi.unsqueeze(0),)).reshape(n_out)

    jac = vmap(jacrev(f), in_dims=(None, 0))(dict(params), x)
    return {k: v.reshape(x.shape[0], n_out, -1) for k, v in jac.items()}


def ntvp_kernel(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    x1: torch.Tensor,
    x2: torch.Tensor,
    n_out: int,
    chunk_size: int | None,
) -> torch.Tensor:
    """Full empirical NTK block from NTK-vector products, never materializing a Jacobian.

    Column ``(j, b)`` of the kernel is ``J(x1) J(x2)^T e_{jb}``: a ``vjp`` of the outputs at
    ``x2`` with the basis cotangent ``e_{jb}`` gives a parameter-space vector, and a ``jvp`` at
    ``x1`` along it gives the column (torch.func NTK tutorial, "NTK-vector products").

    Args:
        model: The network.
        params: All trainable parameters, by name (detached).
        x1: ``(n1, *input_shape)``.
        x2: ``(n2, *input_shape)``.
        n_out: Outputs per sample ``O``.
        chunk_size: Columns computed at once under ``vmap`` (``None``: all).

    Returns:
        ``(n1, n2, O, O)`` kernel block.

    """
    n1, n2 = x1.shape[0], x2.shape[0]
    params = dict(params)

    def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (x,)).reshape(x.shape[0], n_out)

    _, vjp_fn = vjp(lambda p: f(p, x2), params)

    def column(cotangent: torch.Tensor) -> torch.Tensor:
        (direction,) = vjp_fn(cotangent)
        _, tangent_out = jvp(lambda p: f(p, x1), (params,), (direction,))
        return tangent_out

    basis = torch.eye(n2 * n_out, dtype=x1.dtype, device=x1.device).reshape(-1, n2, n_out)
    cols = vmap(column, chunk_size=chunk_size)(basis)  # (n2 * O, n1, O)
    return cols.reshape(n2, n_out, n1, n_out).permute(2, 0, 3, 1)
