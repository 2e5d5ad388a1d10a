"""Whether a record is a measurement or a unit that could not be measured.

Every record has a ``status`` column. ``"measured"`` records carry a finite ``value``; the
others record a (claim, architecture, width, seed) unit that was *not measured*, with ``value``
missing (``null`` in ``records.jsonl``, NaN in tables) and a ``reason`` column saying why:

* ``"oom"``: the unit would not fit in memory (the kernel engine's estimate refused it, or the
  device ran out of memory); the sweep went on with the other widths.
* ``"timeout"``: the claim test ran past ``--ntk-timeout``; its finished units are kept.
* ``"capped"``: the claim leaves this width out on purpose (``ntk_measure.capped``, e.g. CNNs
  above ``Profile.cnn_max_width``, whose kernels cost too much on a CPU).

* ``"hypotheses"``: the theorem the claim tests has conditions that were measured and do not
  hold for this unit (e.g. ``ngd-rate`` where Zhang et al.'s Jacobian-stability constant
  exceeds the bound its step size needs); the conclusion is not judged there.

Verdicts, rate fits and the finite-value check of the record schema use measured records only.
Records written before the column existed count as measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where it is used: the plugin imports this module
    import pandas as pd

__all__ = ["MEASURED", "NOT_MEASURED", "STATUSES", "label", "measured_mask", "measured_only"]

MEASURED = "measured"
#: Not-measured statuses and how the report words them ("not measured: <label>").
NOT_MEASURED = {"oom": "out of memory", "timeout": "timed out",
                "capped": "above the width cap", "hypotheses": "hypotheses not met"}
STATUSES = (MEASURED, *NOT_MEASURED)


def label(status: str) -> str:
    """Words for a status: ``"measured"`` or e.g. ``"not measured: out of memory"``."""
    if status == MEASURED:
        return MEASURED
    return f"not measured: {NOT_MEASURED.get(status, status)}"


def measured_mask(records: pd.DataFrame) -> pd.Series:
    """Boolean mask of the measured rows (all rows when there is no ``status`` column).

    Args:
        records: A records table.

    Returns:
        A boolean Series aligned with ``records``; a missing status counts as measured.

    """
    import pandas as pd

    if "status" not in records.columns:
        return pd.Series(True, index=records.index)
    status = records["status"]
    return status.isna() | (status.astype(str) == MEASURED)


def measured_only(records: pd.DataFrame) -> pd.DataFrame:
    """The measured rows of ``records`` (the table itself when all rows are measured)."""
    mask = measured_mask(records)
    return records if bool(mask.all()) else records[mask]
