"""Claims: the metadata of one testable prediction of NTK theory, and the record schema.

A claim is declared on a pytest test function with the ``claim`` marker::

    @pytest.mark.claim(id="ntk-at-init", statement="...", source="Jacot et al. 2018, Thm 1",
                       metric="||K_emp - K_inf||_F / ||K_inf||_F", tolerance=0.1, rate=-0.5)

:meth:`Claim.from_marker_kwargs` validates the keywords; an invalid marker is a collection
error that names the test and the bad key. Each measurement a claim makes becomes one flat
record (see :data:`RECORD_COLUMNS`), validated at the end of a run by :func:`record_schema`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa

__all__ = ["Claim", "ClaimError", "MARKER_KEYS", "DOMAINS", "RECORD_COLUMNS", "SCALES", "TRENDS",
           "SETTINGS", "record_schema", "width_verdict_schema", "arch_verdict_schema"]

#: Keywords the ``claim`` marker accepts.
MARKER_KEYS = ("id", "statement", "source", "metric", "tolerance", "rate", "units", "direction",
               "scale", "trend", "setting", "domain")
#: Domains the report writes a finding for (the seed paper's sections), in its order; the
#: ``domain`` key may name others (they get a finding of their own).
DOMAINS = ("kernel-regime", "optimization", "uncertainty", "continual")
#: Values of the ``setting`` key: the theory's setting (default) or a practical one.
SETTINGS = ("theory", "practical")
#: Values of the ``scale`` key: how the verdict fits the metric against width.
SCALES = ("log", "semilog")
#: Values of the ``trend`` key (besides None): the sign the fitted slope must have.
TRENDS = ("decreasing", "increasing")
_REQUIRED = ("id", "statement", "source", "metric", "tolerance")
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class ClaimError(ValueError):
    """An invalid claim declaration (raised at collection)."""


@dataclass(frozen=True)
class Claim:
    """One prediction of NTK theory, measured as a metric across widths.

    Attributes:
        id: Short stable id, lowercase letters, digits, ``-``, ``_``, ``.`` (e.g. ``ntk-at-init``).
        statement: The prediction in words.
        source: Paper and theorem/equation it comes from.
        metric: What is measured, as a formula or in words.
        tolerance: The claim holds at a width when the metric (mean over seeds) is
            ``<= tolerance`` (``direction="below"``) or ``>= tolerance`` (``"above"``).
        rate: Predicted log-log slope of the metric in width (e.g. -0.5), or None.
        units: Units of the metric ("" for dimensionless).
        direction: ``"below"`` (default) or ``"above"``.
        scale: ``"log"`` (default): the verdict fits ``log(value)`` against ``log(width)``
            (a power law; non-positive values cannot be fitted); ``"semilog"``: it fits
            ``value`` against ``log(width)`` (any sign; the slope is the change per e-fold of
            width), for metrics such as forgetting that can be zero or negative.
        trend: None (default), ``"decreasing"`` or ``"increasing"``: the claim also needs the
            fitted slope's 95% interval to lie entirely below (above) zero; without a fit
            (fewer than 3 widths) the trend fails.
        setting: ``"theory"`` (default): the setting the prediction is proven in;
            ``"practical"``: a setting where the theory need not hold (standard
            parametrization, Adam, ...). It does not change how the test is judged; the
            report tags practical rows and the claim's status comes from its theory tests
            (:mod:`ntkcheck.runs.outcomes`).
        domain: The part of the theory the claim belongs to, for the report's findings:
            one of :data:`DOMAINS` (``"kernel-regime"``: the kernel at initialization and
            lazy training; ``"optimization"``, ``"uncertainty"``, ``"continual"``: the seed
            paper's Sec. 3.1, 3.2, 3.3) or another lowercase id; None (default): the report
            looks the claim id up in :data:`ntkcheck.report.findings.DOMAIN_OF`.

    """

    id: str
    statement: str
    source: str
    metric: str
    tolerance: float
    rate: float | None = None
    units: str = ""
    direction: str = "below"
    scale: str = "log"
    trend: str | None = None
    setting: str = "theory"
    domain: str | None = None

    @classmethod
    def from_marker_kwargs(cls, kwargs: Mapping[str, Any], where: str = "") -> Claim:
        """Validate the ``claim`` marker's keywords and build a :class:`Claim`.

        Raises:
            ClaimError: Unknown or missing keys, a malformed id, a non-numeric or non-finite
                tolerance or rate, a direction other than "below"/"above", a scale other
                than "log"/"semilog", a trend other than None/"decreasing"/"increasing", or a
                setting other than "theory"/"practical", or a domain that is not a lowercase id.

        """
        at = f" on {where}" if where else ""
        unknown = sorted(set(kwargs) - set(MARKER_KEYS))
        if unknown:
            raise ClaimError(f"claim marker{at}: unknown key(s) {unknown}; allowed: {MARKER_KEYS}")
        missing = [k for k in _REQUIRED if k not in kwargs]
        if missing:
            raise ClaimError(f"claim marker{at}: missing required key(s) {missing}")
        cid = kwargs["id"]
        if not isinstance(cid, str) or not _ID.match(cid):
            raise ClaimError(
                f"claim marker{at}: id {cid!r} must be a non-empty lowercase string of "
                "letters, digits, '-', '_' or '.' (e.g. 'ntk-at-init')"
            )
        for key in ("statement", "source", "metric", "units"):
            if key in kwargs and not isinstance(kwargs[key], str):
                raise ClaimError(f"claim marker{at}: {key} must be a string")
        values: dict[str, float | None] = {}
        for key in ("tolerance", "rate"):
            v = kwargs.get(key)
            if v is None and key == "rate":
                values[key] = None
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ClaimError(f"claim marker{at}: {key} must be a finite number, got {v!r}")
            values[key] = float(v)
        direction = kwargs.get("direction", "below")
        if direction not in ("below", "above"):
            raise ClaimError(f"claim marker{at}: direction must be 'below' or 'above'")
        scale = kwargs.get("scale", "log")
        if scale not in SCALES:
            raise ClaimError(f"claim marker{at}: scale must be one of {SCALES}, got {scale!r}")
        trend = kwargs.get("trend")
        if trend is not None and trend not in TRENDS:
            raise ClaimError(f"claim marker{at}: trend must be None or one of {TRENDS}, "
                             f"got {trend!r}")
        setting = kwargs.get("setting", "theory")
        if setting not in SETTINGS:
            raise ClaimError(f"claim marker{at}: setting must be one of {SETTINGS}, "
                             f"got {setting!r}")
        domain = kwargs.get("domain")
        if domain is not None and (not isinstance(domain, str) or not _ID.match(domain)):
            raise ClaimError(f"claim marker{at}: domain must be None or a lowercase id such as "
                             f"one of {DOMAINS}, got {domain!r}")
        return cls(id=cid, statement=kwargs["statement"], source=kwargs["source"],
                   metric=kwargs["metric"], tolerance=values["tolerance"],  # type: ignore[arg-type]
                   rate=values["rate"], units=kwargs.get("units", ""), direction=direction,
                   scale=scale, trend=trend, setting=setting, domain=domain)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Claim:
        """Rebuild a claim from :meth:`to_dict`'s output (e.g. a run's ``claims.json`` entry).

        Keys that are not :data:`MARKER_KEYS` (``outcome``, ``nodeid``, ...) are ignored;
        missing optional keys (``scale``, ``trend``, ...) take their defaults.
        """
        return cls(**{k: d[k] for k in MARKER_KEYS if k in d})

    def holds(self, value: float) -> bool:
        """Whether a metric value satisfies the tolerance in this claim's direction."""
        if not math.isfinite(value):
            return False
        return value <= self.tolerance if self.direction == "below" else value >= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        """The claim as a dict of builtin types (``scale``, ``trend``, ``setting``: if set)."""
        d = asdict(self)
        if d["domain"] is None:
            del d["domain"]
        if d["setting"] == "theory":
            del d["setting"]
        if d["scale"] == "log":
            del d["scale"]
        if d["trend"] is None:
            del d["trend"]
        return d


#: Columns every record has (claims may add more, of builtin scalar types).
RECORD_COLUMNS = (
    "run_id", "claim_id", "arch_id", "family", "depth", "activation", "parametrization", "bias",
    "weight_std", "bias_std", "width", "seed", "value", "profile", "device", "dtype",
    "elapsed_s", "nodeid", "setting",
)


def record_schema(claim_ids: Iterable[str] | None = None) -> pa.DataFrameSchema:
    """The pandera schema of a records table.

    Checks: finite ``value`` in measured records (a record whose ``status`` is not
    ``"measured"`` is a unit that was not measured and has no value; see
    :mod:`ntkcheck.status`); ``status`` among :data:`ntkcheck.status.STATUSES` when present;
    positive integer ``width``; non-negative ``seed``; non-empty ``claim_id`` and ``arch_id``;
    ``claim_id`` among ``claim_ids`` when given; ``setting`` (optional: records written
    before it existed count as theory) among :data:`SETTINGS`. Extra columns are allowed
    (claims record extra named values).
    """
    from ntkcheck.status import STATUSES, measured_mask

    cid_checks = [pa.Check.str_length(min_value=1)]
    if claim_ids is not None:
        cid_checks.append(pa.Check.isin(sorted(set(claim_ids))))
    finite = pa.Check(
        lambda df: ~measured_mask(df)
        | pd.to_numeric(df["value"], errors="coerce").map(math.isfinite),
        error="value must be finite (no NaN or Inf) in measured records")
    return pa.DataFrameSchema(
        {
            "run_id": pa.Column(str),
            "claim_id": pa.Column(str, cid_checks),
            "arch_id": pa.Column(str, pa.Check.str_length(min_value=1)),
            "width": pa.Column(int, pa.Check.gt(0)),
            "seed": pa.Column(int, pa.Check.ge(0)),
            "value": pa.Column(float, nullable=True),
            "status": pa.Column(str, pa.Check.isin(STATUSES), required=False, nullable=True),
            "profile": pa.Column(str),
            "device": pa.Column(str),
            "dtype": pa.Column(str),
            "elapsed_s": pa.Column(float, pa.Check.ge(0)),
            "nodeid": pa.Column(str),
            "setting": pa.Column(str, pa.Check.isin(SETTINGS), required=False, nullable=True),
        },
        checks=[finite],
        strict=False,
        coerce=True,
    )


def _claim_id_column(claim_ids: Iterable[str] | None) -> pa.Column:
    checks = [pa.Check.str_length(min_value=1)]
    if claim_ids is not None:
        checks.append(pa.Check.isin(sorted(set(claim_ids))))
    return pa.Column(str, checks)


def width_verdict_schema(claim_ids: Iterable[str] | None = None) -> pa.DataFrameSchema:
    """The pandera schema of a per-width verdict table (``width_verdicts.csv``).

    Columns are :data:`ntkcheck.verdict.WIDTH_COLUMNS`: ``mean`` finite, ``std`` nullable (one
    seed), ``n`` at least 1, ``holds`` boolean, ``depth`` positive or NaN; ``claim_id`` among
    ``claim_ids`` when given.
    (claim_id, arch_id, width) is unique.
    """
    finite = pa.Check(lambda s: pd.Series(s, dtype=float).map(math.isfinite),
                      element_wise=False, error="mean must be finite")
    return pa.DataFrameSchema(
        {
            "claim_id": _claim_id_column(claim_ids),
            "arch_id": pa.Column(str, pa.Check.str_length(min_value=1)),
            "depth": pa.Column(float, pa.Check.gt(0), nullable=True),
            "width": pa.Column(int, pa.Check.gt(0)),
            "mean": pa.Column(float, finite),
            "std": pa.Column(float, pa.Check.ge(0), nullable=True),
            "n": pa.Column(int, pa.Check.ge(1)),
            "holds": pa.Column(bool),
        },
        unique=["claim_id", "arch_id", "width"],
        strict=True,
        coerce=True,
    )


def arch_verdict_schema(claim_ids: Iterable[str] | None = None) -> pa.DataFrameSchema:
    """The pandera schema of a per-architecture verdict table (``verdicts.csv``).

    Columns are :data:`ntkcheck.verdict.ARCH_COLUMNS`. ``holds_from_width`` is NaN when the
    claim fails at the widest width; the fit's columns are NaN without a fit;
    ``rate_consistent`` is a nullable boolean; ``extrapolated_width`` is non-negative or NaN
    (``inf`` when the trend moves away from the tolerance); ``verdict`` among
    :data:`ntkcheck.verdict.VERDICTS`; ``rate_contradicted`` a nullable boolean;
    ``width_needed`` positive or NaN; ``depth`` positive or NaN. (claim_id, arch_id) is unique.
    """
    from ntkcheck.verdict import VERDICTS

    fit = {c: pa.Column(float, nullable=True)
           for c in ("slope", "slope_low", "slope_high", "intercept", "predicted_rate")}
    return pa.DataFrameSchema(
        {
            "claim_id": _claim_id_column(claim_ids),
            "arch_id": pa.Column(str, pa.Check.str_length(min_value=1)),
            "widest_width": pa.Column(int, pa.Check.gt(0)),
            "holds_at_widest": pa.Column(bool),
            "holds_from_width": pa.Column(float, pa.Check.gt(0), nullable=True),
            **fit,
            "rate_consistent": pa.Column("boolean", nullable=True),
            "extrapolated_width": pa.Column(float, pa.Check.ge(0), nullable=True),
            "depth": pa.Column(float, pa.Check.gt(0), nullable=True),
            "verdict": pa.Column(str, pa.Check.isin(VERDICTS)),
            **{c: pa.Column(float, nullable=True)
               for c in ("tail_slope", "tail_low", "tail_high")},
            "rate_contradicted": pa.Column("boolean", nullable=True),
            "width_needed": pa.Column(float, pa.Check.gt(0), nullable=True),
            "message": pa.Column(str),
        },
        unique=["claim_id", "arch_id"],
        strict=True,
        coerce=True,
    )
