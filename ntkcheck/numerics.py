"""Numerical checks for kernels: positive semi-definiteness, conditioning, overflow.

A kernel Gram matrix ``K = J J^T`` is symmetric positive semi-definite; rounding can only make
its smallest eigenvalue slightly negative, of order ``n * eps * ||K||_2`` (Golub & Van Loan,
*Matrix Computations*, 4th ed., Sec. 8.1: a backward-stable symmetric eigensolver perturbs
eigenvalues by ``O(eps ||K||_2)``; forming ``K`` in blocks adds ``O(n eps ||K||)``).
Anything further below zero means the matrix is not a kernel of one fixed function: a module
makes samples interact (BatchNorm in training mode), or the forward pass is random
(active dropout), so blocks of ``K`` were computed from different functions.

A linear solve with ``K`` loses about ``log10(cond(K))`` of the ``-log10(eps)`` significant
digits of the working dtype (relative error up to ``cond(K) * eps``; Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., Thm 7.2), so it is meaningless once
``cond(K) * eps`` approaches 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = [
    "COND_WARN",
    "IllConditionedWarning",
    "KernelNotPSDError",
    "NumericalOverflowError",
    "check_conditioning",
    "check_psd",
    "condition_number",
    "kernel_solve",
    "with_float64_fallback",
]

#: :func:`check_conditioning` warns when ``cond(K) * eps(dtype)`` exceeds this (a solve's
#: relative error may then exceed 1%).
COND_WARN = 1e-2


class KernelNotPSDError(ValueError):
    """A kernel matrix is not symmetric positive semi-definite beyond round-off."""


class IllConditionedWarning(UserWarning):
    """A Gram matrix is too ill-conditioned for a solve in the working dtype to be accurate."""


class NumericalOverflowError(OverflowError):
    """A computation is not finite even in float64."""


def _square(k: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(k, torch.Tensor) or k.dim() != 2 or k.shape[0] != k.shape[1]:
        shape = tuple(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
        raise ValueError(f"{what} must be a square (n, n) tensor, got {shape}")
    if not bool(torch.isfinite(k).all()):
        raise ValueError(
            f"{what} has NaN or Inf entries; check the inputs for NaN/Inf and compute the "
            "kernel in float64 (a float32 kernel of a wide or deep network can overflow)"
        )
    return k


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype if dtype.is_floating_point else torch.float64).eps)


def check_psd(k: torch.Tensor, what: str = "kernel", *, c: float = 10.0) -> torch.Tensor:
    """Check that a kernel matrix is symmetric PSD up to round-off, and return it.

    With ``eps`` the machine epsilon of ``k``'s dtype, ``n`` its size and
    ``tol = c * n * eps * ||K||_2``: raises when ``max |K - K^T| > tol`` or when the smallest
    eigenvalue (computed in float64) is below ``-tol``.

    Args:
        k: ``(n, n)`` floating tensor (any device; eigenvalues are computed on the CPU).
        what: Name of the matrix in messages (e.g. ``"empirical NTK"``).
        c: Safety factor of the round-off tolerance.

    Returns:
        ``k`` itself, unchanged.

    Raises:
        ValueError: If ``k`` is not square or has NaN/Inf entries.
        KernelNotPSDError: If ``k`` is asymmetric or has a negative eigenvalue beyond
            round-off; the message gives both numbers and the likely causes.

    """
    k = _square(k, what)
    k64 = k.detach().to("cpu", torch.float64)
    n = k64.shape[0]
    eps = _eps(k.dtype)
    eig = torch.linalg.eigvalsh((k64 + k64.T) / 2)
    norm = float(eig.abs().max()) if n else 0.0
    tol = c * max(n, 1) * eps * norm
    causes = (
        "likely causes: a module that makes samples interact (BatchNorm in training mode, "
        "or any layer mixing the batch), or a non-deterministic forward pass (active dropout, "
        "random augmentation); call model.eval() and make the forward pass deterministic"
    )
    asym = float((k64 - k64.T).abs().max()) if n else 0.0
    if asym > tol:
        raise KernelNotPSDError(
            f"{what} is not symmetric: max |K - K^T| = {asym:.3g} > round-off tolerance "
            f"{tol:.3g} ({c:g} * n * eps * ||K||_2, n={n}, dtype {k.dtype}); {causes}"
        )
    lam_min = float(eig[0]) if n else 0.0
    if lam_min < -tol:
        raise KernelNotPSDError(
            f"{what} is not positive semi-definite: smallest eigenvalue {lam_min:.3g} < "
            f"-{tol:.3g} ({c:g} * n * eps * ||K||_2 with ||K||_2 = {norm:.3g}, n={n}, dtype "
            f"{k.dtype}); {causes}"
        )
    return k


def condition_number(k: torch.Tensor) -> float:
    """The 2-norm condition number ``lambda_max / lambda_min`` of a symmetric matrix.

    Computed from float64 eigenvalues of ``(K + K^T) / 2``; ``inf`` when the smallest
    eigenvalue is not positive (a singular or indefinite matrix).

    Raises:
        ValueError: If ``k`` is not square or has NaN/Inf entries.

    """
    k64 = _square(k, "matrix").detach().to("cpu", torch.float64)
    eig = torch.linalg.eigvalsh((k64 + k64.T) / 2)
    if eig.numel() == 0 or float(eig[0]) <= 0:
        return float("inf")
    return float(eig[-1] / eig[0])


def check_conditioning(k: torch.Tensor, what: str = "Gram matrix",
                       dtype: torch.dtype | None = None) -> float:
    """Warn when a solve with ``k`` in ``dtype`` would be inaccurate; return ``cond(k)``.

    Args:
        k: ``(n, n)`` symmetric matrix.
        what: Name of the matrix in the warning.
        dtype: Working dtype of the solve; ``k.dtype`` by default.

    Returns:
        The condition number (``inf`` for a singular matrix).

    Warns:
        IllConditionedWarning: When ``cond(k) * eps(dtype) > COND_WARN``, giving the number,
            the digits left and what to do (float64, a ridge, or fewer inputs).

    """
    cond = condition_number(k)
    eps = _eps(dtype or k.dtype)
    if cond * eps > COND_WARN:
        name = str(dtype or k.dtype).replace("torch.", "")
        if cond == float("inf"):
            detail = "it is singular (smallest eigenvalue <= 0)"
        else:
            detail = (f"its condition number is {cond:.3g}, so a solve in {name} "
                      f"(eps {eps:.2g}) has relative error up to {cond * eps:.2g}")
        warnings.warn(
            f"{what}: {detail}; solve in float64, add a ridge (K + lambda I), or use fewer "
            "or less similar inputs",
            IllConditionedWarning,
            stacklevel=2,
        )
    return cond


def kernel_solve(k: torch.Tensor, y: torch.Tensor, *, ridge: float = 0.0,
                 what: str = "Gram matrix") -> torch.Tensor:
    """Solve ``(K + ridge I) a = y`` in float64, warning when the result is inaccurate.

    Args:
        k: ``(n, n)`` symmetric PSD matrix.
        y: ``(n,)`` or ``(n, m)`` right-hand side.
        ridge: Non-negative value added to the diagonal.
        what: Name of the matrix in messages.

    Returns:
        The solution, shape of ``y``, dtype and device of ``k``.

    Raises:
        ValueError: On mismatched shapes, a negative ridge or NaN/Inf inputs.
        NumericalOverflowError: If the solution is not finite (e.g. a singular matrix).

    Warns:
        IllConditionedWarning: As :func:`check_conditioning` in ``k``'s dtype.

    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    _square(k, what)
    if y.shape[0] != k.shape[0] or not bool(torch.isfinite(y).all()):
        raise ValueError(f"y must be finite with {k.shape[0]} rows, got {tuple(y.shape)}")
    k64 = k.detach().to(torch.float64)
    a = k64 + ridge * torch.eye(k.shape[0], dtype=torch.float64, device=k.device)
    check_conditioning(a, what, dtype=k.dtype)
    try:
        sol = torch.linalg.solve(a, y.detach().to(torch.float64))
    except RuntimeError as exc:  # torch.linalg.LinAlgError: exactly singular
        raise NumericalOverflowError(
            f"solving with {what} failed ({str(exc).splitlines()[0]}); add a ridge"
        ) from None
    if not bool(torch.isfinite(sol).all()):
        raise NumericalOverflowError(
            f"solving with {what} gave NaN/Inf (the matrix is singular); add a ridge"
        )
    return sol.to(k.dtype)


def with_float64_fallback(fn: Callable[[torch.dtype], torch.Tensor], dtype: torch.dtype,
                          what: str) -> torch.Tensor:
    """Compute ``fn(dtype)``; if the result overflows, compute it in float64 instead.

    Args:
        fn: Computes the result in the dtype it is given (e.g. builds the network in that
            dtype and returns its kernel).
        dtype: Working dtype (e.g. ``torch.float32``).
        what: Name of the result in messages.

    Returns:
        ``fn(dtype)`` when it is finite, else ``fn(torch.float64)`` (a float64 tensor).

    Raises:
        NumericalOverflowError: If the float64 result is not finite either.

    Warns:
        RuntimeWarning: When the fallback to float64 is taken.

    """
    out = fn(dtype)
    if bool(torch.isfinite(out).all()):
        return out
    if dtype != torch.float64:
        warnings.warn(
            f"{what} overflowed in {str(dtype).replace('torch.', '')}; computed it in float64",
            RuntimeWarning,
            stacklevel=2,
        )
        out = fn(torch.float64)
        if bool(torch.isfinite(out).all()):
            return out
    raise NumericalOverflowError(
        f"{what} is not finite even in float64; reduce the depth, weight_std or the input "
        "scale"
    )
