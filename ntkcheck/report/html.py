"""Assemble the self-contained HTML report."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from ntkcheck.report import fmt
from ntkcheck.report.embed import frame_split, script_json
from ntkcheck.report.findings import (
    DOMAIN_TITLES,
    PRACTICAL_WIDTHS,
    build_findings,
    needed_vs_practice,
    summarize,
)
from ntkcheck.report.frames import (
    ARCH_VERDICT_COLUMNS,
    RECORD_COLUMNS,
    WIDTH_VERDICT_COLUMNS,
    arch_order,
    claim_order,
    ensure_columns,
    widths,
)
from ntkcheck.report.grid import build_grid
from ntkcheck.report.plots import palette
from ntkcheck.report.sections import build_section

_HERE = Path(__file__).parent
#: Most rows of the records table written as HTML (all are in the embedded JSON).
MAX_TABLE_ROWS = 300  # the embedded JSON and records.csv hold every record; keeps the page < 2 MB
OUTCOMES = ("passed", "failed", "error", "interrupted", "skipped")
#: Columns the records table always shows, even when empty in the rows shown.
_CORE_COLUMNS = ("claim_id", "arch_id", "width", "seed", "value", "status")


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_HERE)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _records_table(records: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The first :data:`MAX_TABLE_ROWS` records, without the columns empty in all of them.

    Each claim's extra values are columns of every record; the embedded JSON and
    ``records.csv`` keep them all.
    """
    shown = records.head(MAX_TABLE_ROWS)
    shown = shown.loc[:, shown.notna().any(axis=0) | shown.columns.isin(_CORE_COLUMNS)]
    shown = shown.astype(object)
    rows = [[fmt.cell(v) for v in row] for row in shown.itertuples(index=False, name=None)]
    return [str(c) for c in shown.columns], rows


def _outcome_counts(counts: Counter) -> list[tuple[str, int]]:
    counts = Counter(counts)
    ordered = [(o, counts.pop(o, 0)) for o in OUTCOMES]
    shown = [(o, n) for o, n in ordered if n or o in ("passed", "failed")]
    return shown + sorted(counts.items())


def _embedded_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    """A claim as the report embeds it: without the claim-level copy of a test's longrepr.

    With ``tests``, the claim-level ``longrepr`` (a copy of one test's) is left out;
    :func:`ntkcheck.runs.store.load_run` restores it.
    """
    if claim.get("tests"):
        return {k: v for k, v in claim.items() if k != "longrepr"}
    return dict(claim)


def _setting_cell(x: Any) -> dict[str, str]:
    """A claim's verdict in one setting, for the "where the theory holds" table."""
    if x is None:
        return {"status": "missing", "text": "not measured", "title": ""}
    status = {"holds": "holds", "fails": "fails", "rate-contradicts": "contradicts",
              "incomplete": "missing"}[x.verdict]
    counts = ", ".join(f"{n} {v}" for v, n in x.counts.items())
    text = {"holds": "holds", "fails": "fails", "rate-contradicts": "rate contradicts",
            "incomplete": "incomplete"}[x.verdict]
    if x.verdict == "holds" and x.holds_from == x.holds_from:
        text += f" from {fmt.width(x.holds_from)}"
    depths = ", ".join(fmt.sig(d, 3) for d in x.depths)
    title = (f"{x.n_archs} architecture{'s' if x.n_archs != 1 else ''} ({counts}); widest "
             f"width {fmt.width(x.widest)}" + (f"; depths {depths}" if depths else ""))
    return {"status": status, "text": text, "title": title}


def _summary_row(s: Any) -> dict[str, Any]:
    needed = s.theory.needed if s.theory is not None else float("nan")
    laws = [f"{law['series']}: {law['message']}" for law in s.laws
            if law["exponent"] == law["exponent"]]  # fitted laws only (the section has all)
    depths = sorted({d for x in (s.theory, s.practical) if x is not None for d in x.depths})
    return {
        "claim_id": s.claim_id, "domain": DOMAIN_TITLES.get(s.domain, s.domain).split(":")[0],
        "theory": _setting_cell(s.theory), "practical": _setting_cell(s.practical),
        "depths": ", ".join(fmt.sig(d, 3) for d in depths) or fmt.DASH,
        "needed": fmt.DASH if needed != needed else "~" + fmt.width(needed),
        "needed_words": needed_vs_practice(needed),
        "laws": laws,
    }


def build_html(
    records: pd.DataFrame | None,
    width_verdicts: pd.DataFrame | None,
    arch_verdicts: pd.DataFrame | None,
    claims: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
) -> str:
    """Render the report to a string; see :func:`render_report` for the arguments."""
    recs = ensure_columns(records, RECORD_COLUMNS)
    wv = ensure_columns(width_verdicts, WIDTH_VERDICT_COLUMNS)
    av = ensure_columns(arch_verdicts, ARCH_VERDICT_COLUMNS)
    claims = {str(k): dict(v or {}) for k, v in (claims or {}).items()}
    meta = dict(meta or {})

    claim_ids = claim_order(claims, recs, wv, av)
    colors = palette(arch_order(recs, wv, av))
    outcomes = {cid: str(c.get("outcome") or "") for cid, c in claims.items()}
    grid = build_grid(recs, wv, av, claim_ids, widths(recs, wv), colors, outcomes)

    from ntkcheck.verdict import depth_laws

    laws = depth_laws(av)
    rec_claim, av_claim = recs["claim_id"].astype(str), av["claim_id"].astype(str)
    wv_claim = wv["claim_id"].astype(str)
    law_claim = laws["claim_id"].astype(str)
    sections = [
        build_section(cid, claims.get(cid), recs[rec_claim == cid], av[av_claim == cid], colors,
                      wv[wv_claim == cid], laws[law_claim == cid])
        for cid in claim_ids
    ]
    summaries = summarize(claims, recs, wv, av, laws, claim_ids)
    findings = build_findings(summaries)
    columns, rows = _records_table(recs)
    verdicts = {
        "width_verdicts": frame_split(wv),
        "arch_verdicts": frame_split(av),
        "claims": {cid: _embedded_claim(c) for cid, c in claims.items()},
    }
    from ntkcheck.runs.outcomes import run_counts

    counts = run_counts(claims)
    holding = sum(r.verdict_status == "holds" for r in grid.rows)
    judged = sum(r.verdict_status != "missing" for r in grid.rows)
    context = {
        "run_id": fmt.meta_value(meta.get("run_id")),
        "profile": fmt.meta_value(meta.get("profile")),
        "date": fmt.date(meta.get("started")),
        "device": fmt.meta_value(meta.get("device_resolved") or meta.get("device")),
        "duration": ""
        if fmt.is_missing(meta.get("duration_s"))
        else fmt.sig(meta["duration_s"], 3),
        "interrupted": bool(meta.get("interrupted")),
        "merged_from": list(meta.get("merged_from") or []),
        "shards_missing": [str(x) for x in meta.get("shards_missing") or []],
        "incomplete": [str(x) for x in meta.get("incomplete") or []],
        "schema_error": ""
        if fmt.is_missing(meta.get("schema_error"))
        else str(meta["schema_error"]),
        "outcome_counts": _outcome_counts(counts["claim_outcomes"]),
        "n_claims": counts["claims"],  # claims with a theory test, as the terminal counts
        "practical_claims": counts["practical_claims"],
        "practical_counts": [(o, n) for o, n in _outcome_counts(counts["practical_outcomes"])
                             if n],
        "n_tests": counts["tests"],
        "test_counts": _outcome_counts(counts["test_outcomes"]),
        "practical_tests_failed": counts["practical_tests_failed"],
        "holding": holding,
        "judged": judged,
        "grid": grid,
        "sections": sections,
        "findings": findings,
        "summaries": [_summary_row(s) for s in summaries],
        "practical_widths": PRACTICAL_WIDTHS,
        "meta_items": [(str(k), fmt.meta_value(v)) for k, v in meta.items()],
        "columns": columns,
        "rows": rows,
        "n_records": len(recs),
        "css": Markup((_HERE / "report.css").read_text(encoding="utf-8")),
        "records_json": Markup(script_json(frame_split(recs))),
        "verdicts_json": Markup(script_json(verdicts)),
        "meta_json": Markup(script_json(meta)),
    }
    return _environment().get_template("template.html.j2").render(context)


def render_report(
    records: pd.DataFrame | None,
    width_verdicts: pd.DataFrame | None,
    arch_verdicts: pd.DataFrame | None,
    claims: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
    path: str | Path,
) -> Path:
    """Write the run's self-contained HTML report.

    The file needs no network: styles, script and plots (SVG) are inline.
    The records, the verdicts (with the claims) and ``meta`` are embedded as
    JSON in ``<script type="application/json">`` elements whose ids are
    ``ntkcheck-records``, ``ntkcheck-verdicts`` and ``ntkcheck-meta``. Each
    frame is stored as ``{"columns": [...], "data": [[...], ...]}``.

    Args:
        records: One row per measurement (may be empty or None).
        width_verdicts: Verdict per (claim, architecture, width).
        arch_verdicts: Verdict and power-law fit per (claim, architecture).
        claims: Claim id -> claim description and pytest outcome.
        meta: Run metadata (JSON-able values), shown as the environment table.
        path: Output file; its parent directory must exist.

    Returns:
        The path written, as a :class:`~pathlib.Path`.

    """
    out = Path(path)
    html = build_html(records, width_verdicts, arch_verdicts, claims, meta)
    from ntkcheck.runs.files import atomic_write_text

    atomic_write_text(out, html)  # a reader never sees half a report
    return out
