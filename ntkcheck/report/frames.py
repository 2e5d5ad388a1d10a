"""Normalisation of the report's input DataFrames."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Record columns in display order; any others a claim recorded follow them.
RECORD_COLUMNS = (
    "run_id", "claim_id", "arch_id", "family", "activation", "parametrization", "depth",
    "bias", "weight_std", "bias_std", "width", "seed", "value", "profile", "device",
    "dtype", "elapsed_s", "nodeid", "setting",
)  # fmt: skip
WIDTH_VERDICT_COLUMNS = ("claim_id", "arch_id", "depth", "width", "mean", "std", "n", "holds")
ARCH_VERDICT_COLUMNS = (
    "claim_id", "arch_id", "widest_width", "holds_at_widest", "holds_from_width", "slope",
    "slope_low", "slope_high", "intercept", "predicted_rate", "rate_consistent",
    "extrapolated_width", "depth", "verdict", "tail_slope", "tail_low", "tail_high",
    "rate_contradicted", "width_needed", "message",
)  # fmt: skip


def ensure_columns(df: pd.DataFrame | None, columns: Sequence[str]) -> pd.DataFrame:
    """Return a copy of ``df`` that has at least ``columns`` (missing ones filled with NaN).

    Args:
        df: A frame, or None for an empty one.
        columns: Required column names.

    Returns:
        The frame with the required columns first, in order, then any others.

    """
    df = pd.DataFrame() if df is None else df.copy()
    for c in columns:
        if c not in df.columns:
            df[c] = np.nan
    rest = [c for c in df.columns if c not in columns]
    return df[list(columns) + rest].reset_index(drop=True)


def ordered_unique(values: Iterable[Any]) -> list[Any]:
    """Unique non-missing values, in order of first appearance."""
    seen: dict[Any, None] = {}
    for v in values:
        if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
            continue
        seen.setdefault(v, None)
    return list(seen)


def claim_order(claims: Mapping[str, Any], *frames: pd.DataFrame) -> list[str]:
    """Claim ids: those of ``claims`` in their order, then others found in frames, sorted."""
    known = [str(c) for c in claims]
    others: set[str] = set()
    for df in frames:
        others.update(str(c) for c in ordered_unique(df["claim_id"]))
    return known + sorted(others - set(known))


def arch_order(*frames: pd.DataFrame) -> list[str]:
    """All architecture ids found in the frames, sorted."""
    found: set[str] = set()
    for df in frames:
        found.update(str(a) for a in ordered_unique(df["arch_id"]))
    return sorted(found)


def widths(*frames: pd.DataFrame) -> list[int]:
    """The union of the ``width`` columns, as sorted ints."""
    found: set[int] = set()
    for df in frames:
        w = pd.to_numeric(df["width"], errors="coerce").dropna()
        found.update(int(x) for x in w)
    return sorted(found)
