"""Serialise run data as JSON that is safe to embed in an HTML ``<script>`` element."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ntkcheck.report.fmt import is_missing


def jsonable(x: Any) -> Any:
    """Convert a value to plain JSON types, recursively.

    NaN, infinities, None, ``pd.NA`` and ``pd.NaT`` become None (JSON ``null``);
    numpy scalars and arrays become Python numbers and lists; timestamps become
    ISO-8601 strings; anything else unknown becomes its ``str``.

    Args:
        x: Any value.

    Returns:
        A value ``json.dumps(..., allow_nan=False)`` accepts.

    """
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if is_missing(x):
        return None
    if isinstance(x, (pd.Timestamp, _dt.datetime, _dt.date)):
        return x.isoformat()
    if isinstance(x, (pd.Timedelta, _dt.timedelta)):
        return x.total_seconds()
    return str(x)


def frame_split(df: pd.DataFrame | None) -> dict[str, list[Any]]:
    """Convert a DataFrame to ``{"columns": [...], "data": [[...], ...]}``.

    This is pandas' ``orient="split"`` layout without the index, so it reads
    back with ``pd.DataFrame(d["data"], columns=d["columns"])`` or
    ``pd.read_json(io.StringIO(text), orient="split")``.

    Args:
        df: The frame (None counts as empty).

    Returns:
        The JSON-able dict.

    """
    if df is None:
        return {"columns": [], "data": []}
    columns = [str(c) for c in df.columns]
    data = [jsonable(list(row)) for row in df.astype(object).itertuples(index=False, name=None)]
    return {"columns": columns, "data": data}


def script_json(obj: Any) -> str:
    """Dump an object as JSON that cannot end or confuse a ``<script>`` element.

    ``<``, ``>`` and ``&`` are written as JSON unicode escapes (backslash-u003c
    etc.), which keeps ``</script>`` and ``<!--`` out of the text while ``JSON.parse``
    and ``json.loads`` return the original strings.

    Args:
        obj: A value :func:`jsonable` can convert.

    Returns:
        Compact JSON text.

    """
    text = json.dumps(jsonable(obj), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
