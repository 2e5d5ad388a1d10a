"""Formatting of numbers and values for the HTML report."""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from typing import Any

import numpy as np

DASH = "\u2014"
_EXP = re.compile(r"e([+-])0*(\d+)")
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT")


def is_missing(x: Any) -> bool:
    """Tell whether a scalar is None, NaN or pandas NA.

    Args:
        x: Any value.

    Returns:
        True for None, float NaN, ``pd.NA`` and ``pd.NaT``.

    """
    if x is None:
        return True
    try:
        return bool(x != x)  # NaN, NaT
    except TypeError:  # bool(pd.NA) raises TypeError
        return True
    except ValueError:  # arrays are not scalars, hence not missing
        return False


def _tidy_exponent(text: str) -> str:
    """Turn ``3.1e+06`` into ``3.1e6`` and ``1e-05`` into ``1e-5``."""
    return _EXP.sub(lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text)


def sig(x: Any, digits: int = 3) -> str:
    """Format a number with a given number of significant digits.

    Args:
        x: A number (or something missing).
        digits: Significant digits.

    Returns:
        The formatted number, or an em dash when missing or not a number.

    """
    if is_missing(x):
        return DASH
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isinf(v):
        return "\u221e" if v > 0 else "-\u221e"
    return _tidy_exponent(f"{v:.{digits}g}")


def width(x: Any) -> str:
    """Format a width: an integer below a million, 2 significant digits above.

    Args:
        x: A width (int or float, possibly NaN).

    Returns:
        The formatted width, or an em dash when missing.

    """
    if is_missing(x):
        return DASH
    v = float(x)
    if math.isinf(v):
        return "\u221e"
    if abs(v) < 1e6:
        return str(int(round(v)))
    return sig(v, 2)


def yesno(x: Any) -> str:
    """Format a tri-state boolean as ``yes`` / ``no`` / em dash."""
    if is_missing(x):
        return DASH
    return "yes" if bool(x) else "no"


def cell(x: Any) -> str:
    """Format one value of the records table.

    Args:
        x: A scalar from a DataFrame.

    Returns:
        Booleans as true/false, integers verbatim, floats with 4 significant
        digits, missing values as the empty string.

    """
    if is_missing(x):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return sig(x, 4)
    return str(x)


def meta_value(x: Any) -> str:
    """Format one value of the environment table.

    Args:
        x: A JSON-able value.

    Returns:
        Lists joined with commas, dicts as JSON, missing as an em dash.

    """
    if isinstance(x, (list, tuple)):
        return ", ".join(meta_value(v) for v in x)
    if isinstance(x, dict):
        return json.dumps(x, default=str, sort_keys=True)
    if isinstance(x, (float, np.floating)) and not is_missing(x):
        return sig(x, 6)
    if is_missing(x):
        return DASH
    return str(x)


def date(x: Any) -> str:
    """Format a timestamp (ISO string or seconds since the epoch) for the header.

    Args:
        x: An ISO-8601 string, a number of seconds since the epoch, or missing.

    Returns:
        A ``YYYY-MM-DD HH:MM:SS`` string (UTC for epoch numbers), the string
        unchanged if it is not a number, or an em dash.

    """
    if is_missing(x):
        return DASH
    if isinstance(x, (int, float, np.integer, np.floating)):
        t = _dt.datetime.fromtimestamp(float(x), tz=_dt.timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M:%S UTC")
    text = str(x)
    if _ISO.match(text):
        text = text.replace("T", " ", 1)
    return text
