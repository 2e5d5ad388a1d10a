"""Seeds derived from what is measured, never from where or when it is measured.

A claim measures units (claim, architecture, width, seed index). :func:`derive_seed` hashes a
unit into the seed of its network's initialization with SHA-256 (not Python's ``hash``, which
is salted per process), so the same unit gets the same seed in every process, under any
number of xdist workers and in any test order; different units get unrelated seeds (no two
widths share an initialization stream, as they would with ``seed=seed_index``).
"""

from __future__ import annotations

import hashlib
import numbers
import random

import numpy as np
import torch

__all__ = ["SEED_BITS", "derive_seed", "seed_everything"]

#: Derived seeds are in ``[0, 2**SEED_BITS)`` (fits ``torch.manual_seed`` and a C ``int64``).
SEED_BITS = 63


def _check(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def derive_seed(claim_id: str, arch_id: str, width: int, seed_index: int) -> int:
    """The initialization seed of one unit of a claim's sweep.

    Args:
        claim_id: The claim's id (e.g. ``"ntk-at-init"``).
        arch_id: The architecture's id (:attr:`ntkcheck.arch.ArchSpec.arch_id`).
        width: The width, a positive integer.
        seed_index: The seed index (``0 .. n_seeds - 1``).

    Returns:
        ``int(sha256("ntkcheck|claim|arch|width|seed")[:8]) >> 1``: an int in
        ``[0, 2**63)``, the same on every machine, process and Python version.

    Raises:
        ValueError: On an empty id, a width below 1 or a negative seed index.

    """
    for name, text in (("claim_id", claim_id), ("arch_id", arch_id)):
        if not isinstance(text, str) or not text:
            raise ValueError(f"{name} must be a non-empty string, got {text!r}")
    key = f"ntkcheck|{claim_id}|{arch_id}|{_check('width', width, 1)}|" \
          f"{_check('seed_index', seed_index, 0)}"
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def seed_everything(seed: int) -> None:
    """Seed the global random generators of ``random``, NumPy and torch (all devices).

    Code that draws from a global generator (``torch.randn`` without a ``generator``,
    ``np.random.rand``) then gives the same numbers for the same unit in any test order.

    Args:
        seed: A non-negative integer (NumPy's legacy generator gets ``seed mod 2**32``).

    Raises:
        ValueError: On a negative or non-integer seed.

    """
    seed = _check("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global generator is the target
    torch.manual_seed(seed)
