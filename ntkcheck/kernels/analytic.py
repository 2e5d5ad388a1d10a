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
from collections.abc import Iterator
from typing import NamedTuple

import torch

from ntkcheck.kernels._memory import check_memory
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


#: Advice ending the :class:`~ntkcheck.kernels.KernelMemoryError` of the analytic kernels.
MEMORY_ADVICE = (
    "pass dtype=torch.float32 (half the memory; computed in float64, stored in float32), "
    "diagonal=True (only K(x, x)), out_device='cpu' for a CUDA run (blocks computed on the GPU, "
    "stored in host memory), or compute row blocks with "
    "ntkcheck.kernels.analytic.analytic_kernel_blocks (e.g. into a numpy.memmap on disk)"
)


def mlp_memory_bytes(n1: int, n2: int, *, blocked: bool, grad: bool = False, depth: int = 1,
                     dtype: torch.dtype = torch.float64, diagonal: bool = False,
                     separate_output: bool = False) -> float:
    """Estimated peak bytes of :func:`mlp_kernels` (result plus working memory).

    Args:
        n1: Rows ``N1``.
        n2: Columns ``N2``.
        blocked: Whether the row-block path runs (a dual with ``inplace``, no autograd).
        grad: Whether autograd records the computation (inputs that require grad).
        depth: Hidden layers (autograd keeps a few ``(N1, N2)`` tensors per layer).
        dtype: Storage dtype of the two results.
        diagonal: Only ``K(x, x)`` (``(N1,)`` vectors).
        separate_output: The result lives on another device than the computation (its bytes
            are then not part of the working memory; see :func:`mlp_kernels`).

    Returns:
        Bytes: ``2 N1 N2`` result entries in ``dtype`` (unless ``separate_output``) plus, for
        the row-block path, a float64 panel of :data:`PANEL_ELEMS` and two block buffers;
        otherwise about 8 float64 ``(N1, N2)`` temporaries, and 12 per layer under autograd.

    """
    if diagonal:
        return 64.0 * n1 * (depth + 2)
    pairs = float(n1) * float(n2)
    result = 0.0 if separate_output else 2 * pairs * torch.empty((), dtype=dtype).element_size()
    if blocked:
        return result + 8.0 * (PANEL_ELEMS + 4 * min(pairs, PANEL_ELEMS))
    return result + 8.0 * pairs * (8 + (12 * depth if grad else 0))


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
    diagonal: bool = False,
    dtype: torch.dtype = torch.float64,
    out_device: torch.device | str | None = None,
    rows_of_x2: int | None = None,
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
        diagonal: Return only ``K(x_i, x_i)``, ``(N1,)`` vectors (``x2`` must be ``None``):
            ``O(N1)`` memory.
        dtype: Storage dtype of the result (``torch.float32`` halves its memory; the
            recursion still runs in float64, block by block, on the row-block path).
        out_device: Device of the result (default: the inputs'); e.g. ``"cpu"`` for inputs on
            CUDA: row blocks are computed on the GPU and copied to host memory.
        rows_of_x2: Declares ``x1 = x2[rows_of_x2 : rows_of_x2 + N1]`` (a row block of a
            symmetric Gram, as :func:`analytic_kernel_blocks` computes): the pairs of
            identical inputs then get exactly the degenerate Gaussian, as with ``x2=None``.

    Without input gradients and for duals with an ``inplace`` variant (the piecewise-linear
    ones) the layers run on cache-sized row blocks, see :func:`_mlp_blocked`, and the only
    ``(N1, N2)`` tensors are the two results. The memory needed is estimated first
    (:func:`mlp_memory_bytes`) and compared with what is available.

    Returns:
        :class:`Kernels` of ``(N1, N2)`` tensors (``(N1,)`` with ``diagonal``) in ``dtype`` on
        ``out_device``; differentiable w.r.t. the inputs, with finite gradients at identical,
        parallel and zero inputs.

    Raises:
        ValueError: On an unknown parametrization, a missing width for ``"standard"``,
            inputs of different feature sizes, ``diagonal`` with ``x2``, or a non-floating
            ``dtype``.
        KernelMemoryError: Before any large allocation, if the estimated memory exceeds
            what is available (the message gives both and :data:`MEMORY_ADVICE`).
        OverflowError: If the kernel overflows float64.

    """
    if parametrization not in ("ntk", "standard"):
        raise ValueError(f"analytic kernels know the 'ntk' and 'standard' parametrizations, "
                         f"not {parametrization!r}")
    if parametrization == "standard" and width is None:
        raise ValueError("the standard-parametrization NTK grows with the width; give a width")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    if diagonal and x2 is not None:
        raise ValueError("diagonal=True gives K(x, x) of x1 alone; pass x2=None")
    symmetric = x2 is None
    a = _flatten64(x1)
    b = a if symmetric else _flatten64(x2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x1 and x2 have {a.shape[1]} and {b.shape[1]} features")
    offset = None
    if rows_of_x2 is not None and not symmetric:
        offset = int(rows_of_x2)
        if not (0 <= offset and offset + a.shape[0] <= b.shape[0]
                and torch.equal(a, b[offset:offset + a.shape[0]])):
            raise ValueError(f"rows_of_x2={rows_of_x2}: x1 is not that row block of x2")
    d = a.shape[1]
    sw2, sb2 = float(weight_std) ** 2, float(bias_std) ** 2 if bias else 0.0
    one = 1.0 if bias else 0.0
    ntk_param = parametrization == "ntk"
    out_device = a.device if out_device is None else torch.device(out_device)
    if diagonal:
        return _mlp_diagonal(a, depth, dual, sw2, sb2, one, ntk_param, width, dtype, out_device)
    grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    inplace = getattr(dual, "inplace", None)
    blocked = inplace is not None and not grad
    n1, n2 = a.shape[0], b.shape[0]
    what = (f"the analytic NNGP kernel and NTK on {n1}x{n2} inputs "
            f"({'row blocks' if blocked else 'whole matrices'}, {dtype})".replace("torch.", ""))
    separate = out_device != a.device
    check_memory(mlp_memory_bytes(n1, n2, blocked=blocked, grad=grad, depth=depth, dtype=dtype,
                                  separate_output=separate), a.device, what, MEMORY_ADVICE)
    if separate:
        check_memory(mlp_memory_bytes(n1, n2, blocked=True, dtype=dtype), out_device,
                     what + " (the result)", MEMORY_ADVICE)
    if blocked:
        with torch.no_grad():
            return _mlp_blocked(a, b, symmetric, depth, dual, inplace, sw2, sb2, one,
                                ntk_param, width, dtype, out_device, offset)
    dot = a @ b.T
    if symmetric:
        dot = (dot + dot.T) / 2
        sq1 = sq2 = dot.diagonal()
    else:
        sq1, sq2 = (a * a).sum(-1), (b * b).sum(-1)
        if offset is not None:  # the identical pairs: c = q1 = q2 exactly
            sq1 = sq2[offset:offset + a.shape[0]]
            dot = dot.clone()
            dot[:, offset:offset + a.shape[0]].diagonal().copy_(sq1)
    c = sw2 * dot / d + sb2
    q1 = (sw2 * sq1 / d + sb2)[:, None]
    q2 = (sw2 * sq2 / d + sb2)[None, :]
    theta = c if ntk_param else dot + one
    for _ in range(depth):
        k, kdot = dual(q1, q2, c)
        k1, _ = dual(q1, q1, q1)
        k2, _ = dual(q2, q2, q2)
        c_next = sw2 * k + sb2
        own = c_next if ntk_param else width * k + one
        theta = torch.addcmul(own, kdot, theta, value=sw2)
        c, q1, q2 = c_next, sw2 * k1 + sb2, sw2 * k2 + sb2
    _check_finite(c, depth)
    _check_finite(theta, depth)
    if symmetric:
        c, theta = (c + c.T) / 2, (theta + theta.T) / 2
    return Kernels(nngp=c.to(out_device, dtype), ntk=theta.to(out_device, dtype))


def _mlp_diagonal(a, depth, dual, sw2, sb2, one, ntk_param, width, dtype, out_device):
    """``K(x_i, x_i)`` of :func:`mlp_kernels`: the recursion on ``(N,)`` variance vectors."""
    sq = (a * a).sum(-1)
    q = sw2 * sq / a.shape[1] + sb2
    theta = q if ntk_param else sq + one
    for _ in range(depth):
        k, kdot = dual(q, q, q)
        q_next = sw2 * k + sb2
        own = q_next if ntk_param else width * k + one
        theta = own + sw2 * kdot * theta
        q = q_next
    _check_finite(q, depth)
    _check_finite(theta, depth)
    return Kernels(nngp=q.to(out_device, dtype), ntk=theta.to(out_device, dtype))


BLOCK_ELEMS = 16383
"""Elements of the row blocks of :func:`_mlp_blocked`: below the smallest intra-op grain size
of PyTorch's CPU elementwise kernels (16384, for unary ones such as ``sqrt``), so the
operations on a block run on the calling thread whatever the thread setting (a parallel
region per operation costs a scheduler time slice, ~10 ms, on a loaded machine), and the
block-sized float64 tensors (~0.5 MiB) stay in cache through all layers. Smaller blocks
spend more time in per-operation overhead (measured on the depth-5 x 1797 digits case)."""

PANEL_ELEMS = 1 << 22
"""Elements of the float64 panels of input dot products that :func:`_mlp_blocked` forms one
at a time (32 MiB): the ``(N1, N2)`` Gram of the inputs is never held whole. On CUDA the
row blocks are whole panels."""


def _mlp_blocked(a, b, symmetric, depth, dual, inplace, sw2, sb2, one, ntk_param, width,
                 dtype=torch.float64, out_device=None, offset=None):
    """:func:`mlp_kernels` without autograd, for duals with an ``inplace`` variant.

    The recursion is elementwise given the per-input variances, so those are computed first
    for every layer (``(N1, 1)`` and ``(1, N2)`` vectors), and then all layers run on one
    ``(B, N2)`` row block of the output at a time, in place and in cache. The input dot
    products are formed one panel of :data:`PANEL_ELEMS` at a time (``a[rows] @ b.T``; for
    ``x2 = None`` the panel's diagonal entries are set to the squared norms the variances were
    computed from, so the Gaussian of a pair of identical inputs is exactly degenerate). The
    operations and their order are those of the general path; values agree with it to
    rounding. For ``x2 = None`` the symmetrization ``(M + M.T) / 2`` is done block by block
    as the rows are finished. When the result has another dtype or device, each block is
    computed in float64 buffers on the inputs' device and then copied into it.

    Args:
        a: ``(N1, d)`` float64 inputs.
        b: ``(N2, d)`` float64 inputs (``a`` itself when ``symmetric``).
        symmetric: Whether ``x2`` was ``None`` (the result is then symmetrized).
        depth: Number of hidden layers.
        dual: The dual, for the variance vectors.
        inplace: ``dual.inplace(q1, q2, c, k, kdot, zero2)``.
        sw2: ``sigma_w**2``.
        sb2: ``sigma_b**2`` (0 without bias).
        one: ``1`` with a bias, else ``0`` (standard parametrization).
        ntk_param: NTK (``True``) or standard (``False``) parametrization.
        width: Hidden width (standard parametrization).
        dtype: Storage dtype of the result.
        out_device: Device of the result (default: the inputs').
        offset: ``rows_of_x2`` of :func:`mlp_kernels` (``a`` is that row block of ``b``).

    Returns:
        :class:`Kernels` of ``(N1, N2)`` tensors in ``dtype`` on ``out_device``.

    """
    n1, n2, d = a.shape[0], b.shape[0], a.shape[1]
    device = a.device
    out_device = device if out_device is None else torch.device(out_device)
    if offset is None:
        sq1 = (a * a).sum(-1)
        sq2 = sq1 if symmetric else (b * b).sum(-1)
    else:
        sq2 = (b * b).sum(-1)
        sq1 = sq2[offset:offset + n1]
    diag_col = 0 if symmetric else offset  # column of row 0's identical input, if any
    q1 = (sw2 * sq1 / d + sb2)[:, None]
    q2 = (sw2 * sq2 / d + sb2)[None, :]
    q1s, q2s = [q1], [q2]
    for _ in range(depth):
        k1, _ = dual(q1, q1, q1)
        k2, _ = dual(q2, q2, q2)
        q1, q2 = sw2 * k1 + sb2, sw2 * k2 + sb2
        q1s.append(q1)
        q2s.append(q2)
    zero2 = [bool((q == 0).any()) for q in q2s]
    direct = dtype == torch.float64 and out_device == device
    nngp = torch.empty(n1, n2, dtype=dtype, device=out_device)
    ntk = torch.empty_like(nngp)
    panel_rows = max(1, PANEL_ELEMS // n2)
    rows = panel_rows if device.type == "cuda" else max(1, BLOCK_ELEMS // n2)
    rows = min(rows, panel_rows)
    panel_rows -= panel_rows % rows
    k = torch.empty(min(rows, n1), n2, dtype=a.dtype, device=device)
    kdot = torch.empty_like(k)
    if not direct:
        cbuf, tbuf = torch.empty_like(k), torch.empty_like(k)
    for p0 in range(0, n1, panel_rows):
        dot = a[p0:p0 + panel_rows] @ b.T
        if diag_col is not None:
            cols = slice(diag_col + p0, diag_col + p0 + panel_rows)
            dot[:, cols].diagonal().copy_(sq1[p0:p0 + panel_rows])
        with calling_thread_only():  # cache-sized blocks (see _threads); not the product
            for start in range(p0, min(p0 + panel_rows, n1), rows):
                sl = slice(start, start + rows)
                nrow = min(rows, n1 - start)
                if direct:
                    c, theta = nngp[sl], ntk[sl]
                else:
                    c, theta = cbuf[:nrow], tbuf[:nrow]
                kb, kdb = k[:nrow], kdot[:nrow]
                theta.copy_(dot[start - p0:start - p0 + nrow])
                torch.mul(theta, sw2, out=c).div_(d).add_(sb2)
                if ntk_param:
                    theta.copy_(c)
                else:
                    theta.add_(one)
                for layer in range(depth):
                    inplace(q1s[layer][sl], q2s[layer], c, kb, kdb, zero2[layer])
                    torch.mul(kb, sw2, out=c).add_(sb2)
                    own = c if ntk_param else kb.mul_(width).add_(one)
                    torch.addcmul(own, kdb, theta, value=sw2, out=theta)
                if not all(math.isfinite(v) for t in (c, theta) for v in torch.aminmax(t)):
                    _check_finite(torch.stack((c, theta)), depth)  # raises with its message
                if not direct:
                    nngp[sl].copy_(c)
                    ntk[sl].copy_(theta)
                if symmetric:  # (M + M.T) / 2 on the rows and columns done so far
                    for m in (nngp, ntk):
                        lower, upper = m[sl, :start], m[:start, sl]
                        lower.add_(upper.T).div_(2)
                        upper.copy_(lower.T)
                        diag = m[sl, sl]
                        diag.copy_((diag + diag.T) / 2)
    return Kernels(nngp=nngp, ntk=ntk)


def analytic_kernel_blocks(spec, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                           block_rows: int = 1024, dtype: torch.dtype = torch.float64,
                           out_device: torch.device | str | None = None
                           ) -> Iterator[tuple[slice, Kernels]]:
    """Row blocks of :func:`analytic_kernels`, for Gram matrices that do not fit in memory.

    Yields ``K(x1[rows], x2)`` for consecutive ``rows`` of ``block_rows`` inputs, each block
    computed by :func:`analytic_kernels` (so with its memory check); the caller stores them,
    e.g. into a ``numpy.memmap`` on disk. For ``x2 = None`` the blocks are those of
    ``K(x1, x1)`` (for MLPs with the identical pairs exactly degenerate, see ``rows_of_x2``
    of :func:`mlp_kernels`), symmetric to rounding (the whole-matrix call symmetrizes
    exactly).

    Args:
        spec: As :func:`analytic_kernels`.
        x1: ``(N1, *input_shape)`` inputs.
        x2: ``(N2, *input_shape)`` inputs or ``None`` (``x1``).
        block_rows: Rows per block (``>= 1``).
        dtype: Storage dtype of each block.
        out_device: Device of each block (default: the inputs').

    Yields:
        ``(rows, Kernels)``: a ``slice`` of ``x1``'s rows and the ``(len(rows), N2)`` kernels.

    Raises:
        ValueError: If ``block_rows < 1``; otherwise as :func:`analytic_kernels`.

    """
    if not (isinstance(block_rows, int) and block_rows >= 1):
        raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
    cols = x1 if x2 is None else x2
    for start in range(0, len(x1), block_rows):
        rows = slice(start, min(start + block_rows, len(x1)))
        if spec.family == "mlp" and x2 is None:
            analytic_kernels(spec, x1[:1], diagonal=True)  # the spec's checks, on one input
            yield rows, mlp_kernels(x1[rows], cols, rows_of_x2=start, dtype=dtype,
                                    out_device=out_device, **_mlp_arguments(spec))
        else:
            yield rows, analytic_kernels(spec, x1[rows], cols, dtype=dtype,
                                         out_device=out_device)


def _mlp_arguments(spec) -> dict:
    """The keyword arguments of :func:`mlp_kernels` an ``ArchSpec`` of family ``"mlp"`` sets."""
    from ntkcheck import arch

    slope = arch.LEAKY_RELU_SLOPE if spec.activation == "leaky_relu" else None
    return dict(depth=spec.depth, dual=get_dual(spec.activation, slope=slope),
                weight_std=spec.weight_std, bias_std=spec.bias_std, bias=spec.bias,
                parametrization=spec.parametrization, width=spec.width)


def analytic_kernels(spec, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                     diagonal: bool = False, dtype: torch.dtype = torch.float64,
                     out_device: torch.device | str | None = None) -> Kernels:
    """Infinite-width NNGP kernel and NTK of the network an ``ArchSpec`` describes.

    Uses ``spec.depth``, ``activation`` (LeakyReLU with slope
    :data:`ntkcheck.arch.LEAKY_RELU_SLOPE`), ``parametrization``, ``bias``, ``weight_std`` and
    ``bias_std`` (and ``pool`` for CNNs). The width is ignored under the NTK parametrization
    (the limit is width-independent) and used under the standard one (see the module
    docstring). MLPs use :func:`mlp_kernels`; CNNs (family ``"cnn"``, global average pooling
    read-out, no BatchNorm) use :func:`ntkcheck.kernels.cntk.cnn_kernels`. The memory needed
    is estimated before anything large is allocated (:func:`mlp_memory_bytes`; for CNNs six
    float64 ``(N1, N2, H, W, H, W)`` tensors).

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
        diagonal: Only ``K(x_i, x_i)`` as ``(N1,)`` vectors (``x2`` must be ``None``).
        dtype: Storage dtype of the result (computed in float64).
        out_device: Device of the result (default: the inputs'; see :func:`mlp_kernels`).

    Returns:
        :class:`Kernels` with ``(N1, N2)`` (or ``(N1,)``) ``nngp`` and ``ntk`` (per output
        unit) in ``dtype``.

    Raises:
        NotImplementedError: For families or parametrizations without an analytic kernel here.
        ValueError: For the standard parametrization on a spec without width.
        KernelMemoryError: If the estimated memory exceeds what is available (the message
            says what to pass instead: :data:`MEMORY_ADVICE`).
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
        if diagonal:
            if x2 is not None:
                raise ValueError("diagonal=True gives K(x, x) of x1 alone; pass x2=None")
            parts = [analytic_kernels(spec, x1[i:i + 1]) for i in range(len(x1))]
            return Kernels(*(torch.cat([getattr(p, f).reshape(1) for p in parts]).to(
                out_device or parts[0].ntk.device, dtype) for f in ("nngp", "ntk")))
        x1t = torch.as_tensor(x1)
        n2 = len(x1t) if x2 is None else len(x2)
        positions = x1t[0, 0].numel() if x1t.dim() == 4 else 1
        check_memory(6 * 8.0 * len(x1t) * n2 * positions**2, x1t.device,
                     f"the analytic CNTK on {len(x1t)}x{n2} images of {positions} positions",
                     "compute row blocks with ntkcheck.kernels.analytic.analytic_kernel_blocks"
                     " (the CNTK holds every pair of positions of every pair of images)")
        nngp, ntk = cnn_kernels(
            x1, x2, depth=spec.depth, dual=get_dual(spec.activation, slope=slope),
            weight_std=spec.weight_std, bias_std=spec.bias_std, bias=spec.bias,
            parametrization=spec.parametrization, width=spec.width,
            pool=getattr(spec, "pool", False),
        )
        dev = nngp.device if out_device is None else out_device
        return Kernels(nngp=nngp.to(dev, dtype), ntk=ntk.to(dev, dtype))
    return mlp_kernels(x1, x2, diagonal=diagonal, dtype=dtype, out_device=out_device,
                       **_mlp_arguments(spec))
