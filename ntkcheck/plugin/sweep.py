"""The (width, seed) units a claim measures, and how a sweep is split across machines.

``--ntk-shard K/N`` runs a deterministic 1/N of every claim's (width, seed) units, so that a
cluster scheduler (e.g. a Slurm job array with tasks 0..N-1) runs N shards whose records
``ntkcheck report`` merges. A unit belongs to shard ``sha256("claim|width|seed") mod N``: it
depends on the claim id, the width and the seed index only (never on workers, collection order
or architecture), so every shard agrees on the split and each unit runs exactly once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["Shard", "parse_shard", "sweep_units", "unit_shard"]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """Parse ``"K/N"`` (0-based ``K``, e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``).

    Raises:
        ValueError: If the text is not two integers ``K/N`` with ``0 <= K < N``.
    """
    try:
        k, n = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ValueError(
            f"--ntk-shard: {text!r} is not K/N; give a 0-based shard index and the number of "
            "shards, e.g. --ntk-shard 0/3"
        ) from None
    if not 0 <= k < n:
        raise ValueError(f"--ntk-shard: need 0 <= K < N, got {k}/{n}")
    return Shard(k, n)


def unit_shard(claim_id: str, width: int, seed: int, count: int) -> int:
    """The shard (0..count-1) that measures ``(claim_id, width, seed)``."""
    digest = hashlib.sha256(f"{claim_id}|{int(width)}|{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def sweep_units(claim_id: str, widths: list[int], seeds: list[int],
                shard: Shard | None = None) -> list[tuple[int, int]]:
    """The ``(width, seed)`` pairs a claim measures: all of them, or those of ``shard``.

    Ordered by width, then seed (narrow widths first, so a stopped run keeps the cheap ones).
    """
    units = [(w, s) for w in widths for s in seeds]
    if shard is None or shard.count == 1:
        return units
    return [(w, s) for w, s in units if unit_shard(claim_id, w, s, shard.count) == shard.index]
