"""Monte Carlo estimate of the expected empirical NTK over random initializations."""

from __future__ import annotations

import math

import numpy as np
import torch

from ntkcheck.kernels.empirical import empirical_ntk


def init_seeds(seed: int, n_samples: int) -> list[int]:
    """``n_samples`` independent 63-bit seeds derived from ``seed`` (numpy ``SeedSequence``).

    Distinct master seeds give statistically independent streams, unlike ``seed + i``.
    """
    state = np.random.SeedSequence(int(seed)).generate_state(n_samples, dtype=np.uint64)
    return [int(s) >> 1 for s in state]


def monte_carlo_ntk(
    spec,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    width: int,
    n_samples: int,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of the empirical NTK over independently initialized networks.

    Builds ``n_samples`` float64 networks ``spec.with_width(width).build(seed=s, ...)`` with one
    output (seeds from :func:`init_seeds`) and averages their ``empirical_ntk`` (``"auto"``
    implementation, ``output="trace"``). By the law of large numbers the mean converges to the
    expected NTK at that width, which tends to the analytic NTK as the width grows (Jacot et al.
    2018, Theorem 1).

    Args:
        spec: An :class:`ntkcheck.arch.ArchSpec` (its own width is replaced by ``width``).
        x1: ``(N1, *input_shape)`` inputs.
        x2: ``(N2, *input_shape)`` inputs, or ``None`` for ``x1``.
        width: Hidden width of the sampled networks.
        n_samples: Number of networks, at least 2.
        seed: Master seed.

    Returns:
        ``(mean, stderr)``, each ``(N1, N2)`` float64: the elementwise sample mean and its
        standard error ``std(ddof=1) / sqrt(n_samples)``.

    Raises:
        ValueError: If ``n_samples < 2``.

    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 to give a standard error, got {n_samples}")
    x1 = torch.as_tensor(x1, dtype=torch.float64)
    x2 = None if x2 is None else torch.as_tensor(x2, dtype=torch.float64)
    shaped = spec.with_width(width)
    total = total_sq = None
    for s in init_seeds(seed, n_samples):
        model = shaped.build(seed=s, input_shape=tuple(x1.shape[1:]), out_features=1,
                             device=x1.device, dtype=torch.float64)
        k = empirical_ntk(model, x1, x2)
        total = k.clone() if total is None else total + k
        total_sq = k * k if total_sq is None else total_sq + k * k
    mean = total / n_samples
    var = (total_sq - n_samples * mean * mean).clamp_min(0) / (n_samples - 1)
    return mean, torch.sqrt(var) / math.sqrt(n_samples)
