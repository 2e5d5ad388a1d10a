"""Stored runs: find, load, merge and write them.

A run folder is what the pytest plugin writes under ``<report dir>/<run id>/``:
``records.jsonl`` (one measurement a line), ``claims.json`` (claim metadata and pytest
outcomes), ``meta.json`` (environment), the CSV tables and ``report.html``. A run can also be
read back from its ``report.html`` alone, which embeds the records, the claims and the meta as
JSON. Several runs (shards of one sweep, or runs of different machines) merge into one: their
records are concatenated, validated with :func:`ntkcheck.claim.record_schema` and de-duplicated
on :data:`RECORD_KEY`; the verdicts are recomputed from the merged records.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ntkcheck.claim import RECORD_COLUMNS, Claim, record_schema
from ntkcheck.status import measured_mask
from ntkcheck.verdict import ARCH_COLUMNS, WIDTH_COLUMNS, compute_verdicts

__all__ = ["RECORD_KEY", "CLAIM_FIELDS", "Run", "RunError", "resolve_run", "resolve_runs",
           "load_run",
           "merge_runs", "write_run", "read_embedded", "claim_status", "practical_status",
           "list_runs", "LIST_COLUMNS"]

#: A measurement's identity: records sharing it are duplicates.
RECORD_KEY = ("claim_id", "arch_id", "width", "seed")
#: The fields of a claim's metadata (:class:`ntkcheck.claim.Claim`).
CLAIM_FIELDS = ("id", "statement", "source", "metric", "tolerance", "rate", "units", "direction",
                "scale", "trend")
#: Per-test fields of a claim (``claims.json``'s ``tests``):
#: :data:`ntkcheck.runs.outcomes.TEST_FIELDS`.
#: Fields that decide a verdict: runs that disagree on them cannot be merged.
_JUDGING = ("tolerance", "rate", "direction", "scale", "trend")
_RUN_FILES = ("records.jsonl", "records.csv", "meta.json", "claims.json", "report.html")
_EMBEDDED = re.compile(
    r'<script type="application/json" id="ntkcheck-(\w+)">(.*?)</script>', re.S)
_OUTCOME_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


class RunError(Exception):
    """A run that cannot be found, read or merged (the message says why)."""


@dataclass
class Run:
    """One run (or a merge of several): records, claim metadata and environment.

    Attributes:
        records: One row per measurement (:data:`ntkcheck.claim.RECORD_COLUMNS` and extras).
        claims: Claim id -> metadata (:data:`CLAIM_FIELDS`) plus the plugin's ``outcome``
            (from the theory tests), ``practical_outcome``, ``nodeid``, ``duration_s``,
            ``longrepr``, ``shrunk_spec`` and ``tests`` (one entry per test; see
            :mod:`ntkcheck.runs.outcomes`; old runs have no ``tests``).
        meta: Environment and run settings (``meta.json``).
        path: The folder or file it was read from (None for a merge).

    """

    records: pd.DataFrame
    claims: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    path: Path | None = None
    _verdicts: tuple[pd.DataFrame, pd.DataFrame] | None = field(
        default=None, init=False, repr=False)

    @property
    def run_id(self) -> str:
        """The run's id (from ``meta.json``, else the folder's name)."""
        rid = self.meta.get("run_id")
        if rid:
            return str(rid)
        return self.path.name if self.path is not None else ""

    def judged_claims(self) -> dict[str, Claim]:
        """Claims whose metadata can judge records (a finite tolerance), by id."""
        out = {}
        for cid, c in self.claims.items():
            if _crashed(c):
                continue
            rate = c.get("rate")
            out[cid] = Claim(
                id=cid, statement=str(c.get("statement") or ""),
                source=str(c.get("source") or ""), metric=str(c.get("metric") or ""),
                tolerance=float(c["tolerance"]),
                rate=float(rate) if isinstance(rate, (int, float)) and math.isfinite(rate)
                else None,
                units=str(c.get("units") or ""), direction=str(c.get("direction") or "below"),
                scale=str(c.get("scale") or "log"), trend=c.get("trend") or None)
        return out

    def verdicts(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(width_verdicts, arch_verdicts)`` recomputed from the records (cached).

        Records of claims without metadata are left out (they cannot be judged).
        """
        if self._verdicts is None:
            claims = self.judged_claims()
            recs = self.records
            if len(recs):
                recs = recs[recs["claim_id"].astype(str).isin(claims)]
            if recs.empty:
                self._verdicts = (pd.DataFrame(columns=WIDTH_COLUMNS),
                                  pd.DataFrame(columns=ARCH_COLUMNS))
            else:
                self._verdicts = compute_verdicts(recs, claims)
        return self._verdicts


def _setting_rows(run: Run, claim_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A claim's arch verdicts in its theory setting and in its practical one."""
    from ntkcheck.runs.outcomes import PRACTICAL, arch_settings

    _, av = run.verdicts()
    rows = av[av["claim_id"] == claim_id]
    settings = arch_settings(run.records[run.records["claim_id"].astype(str) == claim_id]
                             if len(run.records) else run.records)
    practical = rows["arch_id"].astype(str).map(
        lambda a: settings.get((claim_id, a)) == PRACTICAL).astype(bool)
    return rows[~practical], rows[practical]


def claim_status(run: Run, claim_id: str) -> str:
    """Whether a claim holds in a run: ``holds``, ``fails``, ``error`` or ``absent``.

    From the verdicts when the claim has records (holds when every architecture of its
    theory setting holds at the widest width; a claim measured only in practical settings is
    judged by those), else from the pytest outcome (``error`` for an error or a failure
    without records, ``absent`` when the run does not know the claim). The practical
    settings' result: :func:`practical_status`.
    """
    theory, practical = _setting_rows(run, claim_id)
    rows = theory if len(theory) else practical
    outcome = str(run.claims.get(claim_id, {}).get("outcome") or "")
    if outcome == "error":
        return "error"
    if len(rows):
        return "holds" if bool(rows["holds_at_widest"].astype(bool).all()) else "fails"
    if claim_id not in run.claims:
        return "absent"
    return "holds" if outcome == "passed" else ("absent" if outcome == "skipped" else "error")


def practical_status(run: Run, claim_id: str) -> str | None:
    """Whether a claim holds in its practical settings: ``holds``, ``fails`` or ``error``.

    None when it has no practical test, or only practical ones (then :func:`claim_status`
    judges those).
    """
    from ntkcheck.runs.outcomes import PRACTICAL, claim_tests

    theory, practical = _setting_rows(run, claim_id)
    tests = [t for t in claim_tests(run.claims.get(claim_id, {})) if t["setting"] == PRACTICAL]
    if any(t.get("outcome") == "error" for t in tests):
        return "error"
    if len(practical) and len(theory):
        return "holds" if bool(practical["holds_at_widest"].astype(bool).all()) else "fails"
    if tests and len(tests) < len(claim_tests(run.claims.get(claim_id, {}))):
        return "holds" if all(t.get("outcome") == "passed" for t in tests) else "fails"
    return None


# ----------------------------------------------------------------------------- find and load


def _follow_pointer(folder: Path) -> Path:
    pointer = folder / "RUN"  # the plugin's ``latest`` where symlinks are unavailable
    if pointer.is_file() and not any((folder / f).exists() for f in _RUN_FILES):
        return folder.parent / pointer.read_text(encoding="utf-8").strip()
    return folder


def _is_run(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".html", ".htm")
    return path.is_dir() and any((path / f).is_file() for f in _RUN_FILES)


def resolve_run(arg: str | Path, reports: str | Path = "reports") -> Path:
    """Find a run from a command-line argument.

    Args:
        arg: A run folder, a run's ``report.html``, a run id under ``reports``, or ``latest``.
        reports: The folder of stored runs.

    Returns:
        The run's folder (or report file).

    Raises:
        RunError: Nothing there is a run; the message lists the stored run ids.

    """
    reports = Path(reports)
    text = str(arg)
    candidates = [reports / "latest"] if text == "latest" else []
    candidates += [Path(text), reports / text]
    for c in candidates:
        if c.is_dir():
            c = _follow_pointer(c)
        if _is_run(c):
            return c
    known = [p.name for p in _run_folders(reports)]
    hint = (f"stored runs under {reports}/: {', '.join(known[-5:])}" if known
            else f"no runs under {reports}/ (run `pytest claims/` first, or pass --reports DIR)")
    raise RunError(f"no run {text!r}: not a run folder, a report.html, a run id or 'latest'; "
                   f"{hint}")


def resolve_runs(args: Sequence[str | Path], reports: str | Path = "reports") -> list[Path]:
    """Find the runs of several arguments; a folder of run folders stands for all of them.

    A folder that is not a run but holds run folders (e.g. the ``--ntk-report`` folder of one
    Slurm array job) expands to those runs, oldest first (its ``latest`` link is skipped).
    A run named twice is listed once.

    Raises:
        RunError: An argument that names no run (see :func:`resolve_run`).

    """
    found: dict[Path, Path] = {}
    for arg in args:
        folder = Path(arg)
        inner = _run_folders(folder) if folder.is_dir() and not _is_run(folder) else []
        for path in inner or [resolve_run(arg, reports)]:
            found.setdefault(path.resolve(), path)
    return list(found.values())


def read_embedded(report: Path) -> dict[str, Any]:
    """The JSON a ``report.html`` embeds, by name (``records``, ``verdicts``, ``meta``).

    Raises:
        RunError: The file embeds no ntkcheck data.

    """
    text = report.read_text(encoding="utf-8")
    found = {m.group(1): json.loads(m.group(2)) for m in _EMBEDDED.finditer(text)}
    if not found:
        raise RunError(f"{report} is not an ntkcheck report (no embedded run data)")
    return found


def _read_jsonl(path: Path) -> pd.DataFrame:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):  # a run killed mid-write leaves a truncated last line
                continue
            raise RunError(f"{path}, record {n}: not a JSON record") from None
    return pd.DataFrame(rows)


def load_run(path: str | Path) -> Run:
    """Read a run folder (or a run's ``report.html``).

    Records come from ``records.jsonl`` (else ``records.csv``, else the report's JSON), claims
    from ``claims.json`` (else the report's JSON), meta from ``meta.json`` (else the report's).

    Raises:
        RunError: The path holds no run, or its files cannot be read.

    """
    path = Path(path)
    if path.is_dir():
        path = _follow_pointer(path)
    if not _is_run(path):
        raise RunError(f"{path} is not an ntkcheck run folder")
    folder = path if path.is_dir() else None
    report = folder / "report.html" if folder is not None else path
    embedded: dict[str, Any] | None = None

    def from_report(name: str) -> Any:
        nonlocal embedded
        if embedded is None:
            embedded = read_embedded(report) if report.is_file() else {}
        return embedded.get(name)

    try:
        if folder is not None and (folder / "records.jsonl").is_file():
            records = _read_jsonl(folder / "records.jsonl")
        elif folder is not None and (folder / "records.csv").is_file():
            records = pd.read_csv(folder / "records.csv")
        else:
            split = from_report("records") or {"columns": [], "data": []}
            records = pd.DataFrame(split["data"], columns=split["columns"])
        if folder is not None and (folder / "claims.json").is_file():
            claims = json.loads((folder / "claims.json").read_text(encoding="utf-8"))
        else:
            from ntkcheck.runs.outcomes import summarize_claim

            claims = {k: summarize_claim(dict(v)) if v.get("tests") else v
                      for k, v in ((from_report("verdicts") or {}).get("claims") or {}).items()}
        if folder is not None and (folder / "meta.json").is_file():
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        else:
            meta = from_report("meta") or {}
    except (OSError, ValueError, KeyError) as exc:
        raise RunError(f"cannot read run {path}: {exc}") from None
    if records.empty:
        records = pd.DataFrame(columns=list(RECORD_COLUMNS))
    if not meta.get("run_id"):
        meta["run_id"] = (folder or path.parent).name
    return Run(records=records, claims={str(k): dict(v) for k, v in claims.items()},
               meta=meta, path=path)


def _run_folders(reports: Path) -> list[Path]:
    if not reports.is_dir():
        return []
    return sorted(p for p in reports.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
                  and p.name != "latest" and _is_run(p))


#: Columns of :func:`list_runs`.
LIST_COLUMNS = ["run_id", "date", "profile", "device", "commit", "records", "tests", "passed",
                "failed", "practical_failed", "latest"]


def _latest_id(reports: Path) -> str | None:
    latest = reports / "latest"
    if not latest.exists():
        return None
    return _follow_pointer(latest).resolve().name


def list_runs(reports: str | Path = "reports") -> pd.DataFrame:
    """The stored runs under ``reports``, oldest first.

    Returns:
        A DataFrame with :data:`LIST_COLUMNS`: start date, profile, device (with the GPU's
        name when CUDA was used), short git commit, number of records, number of tests,
        claims passed and failed in their theory setting (failed counts errors too), claims
        whose practical setting fails (or errors), and whether ``latest`` points at the run.
        A run whose files cannot be read is listed with what could be read.

    """
    reports = Path(reports)
    latest = _latest_id(reports)
    rows = []
    for folder in _run_folders(reports):
        try:
            run = load_run(folder)
        except RunError:
            rows.append({"run_id": folder.name, "date": "", "profile": "", "device": "",
                         "commit": "", "records": 0, "tests": 0, "passed": 0, "failed": 0,
                         "practical_failed": 0, "latest": folder.name == latest})
            continue
        from ntkcheck.runs.outcomes import claim_tests, summarize_claim

        meta = run.meta
        entries = [summarize_claim(dict(c)) for c in run.claims.values()]
        outcomes = [str(c.get("outcome") or "") for c in entries]
        practical = [str(c.get("practical_outcome") or "") for c in entries]
        used = (sorted({str(d) for d in run.records["device"].dropna()})
                if "device" in run.records.columns else [])
        device = (", ".join(used[:2]) + (", ..." if len(used) > 2 else "") if used
                  else str(meta.get("device_resolved") or meta.get("device") or ""))
        gpus = meta.get("cuda_devices") or []
        if gpus and any(d.startswith("cuda") for d in used):
            device += f" ({gpus[0]}{f' x{len(gpus)}' if len(gpus) > 1 else ''})"
        rows.append({
            "run_id": folder.name,
            "date": str(meta.get("started") or "").replace("T", " "),
            "profile": str(meta.get("profile") or ""),
            "device": device,
            "commit": str(meta.get("git_commit") or "")[:10],
            "records": len(run.records),
            "tests": sum(len(claim_tests(c)) for c in entries),
            "passed": outcomes.count("passed"),
            "failed": outcomes.count("failed") + outcomes.count("error"),
            "practical_failed": practical.count("failed") + practical.count("error"),
            "latest": folder.name == latest,
        })
    table = pd.DataFrame(rows, columns=LIST_COLUMNS)
    return table.sort_values(["date", "run_id"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- merge


def _merge_claims(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    from ntkcheck.runs.outcomes import claim_tests, summarize_claim

    merged: dict[str, dict[str, Any]] = {}
    source: dict[str, str] = {}
    for run in runs:
        for cid, claim in run.claims.items():
            if cid not in merged:
                merged[cid] = dict(claim)
                source[cid] = run.run_id
                continue
            first = merged[cid]
            for key in _JUDGING:
                a, b = first.get(key), claim.get(key)
                same = a == b or (isinstance(a, float) and isinstance(b, float)
                                  and math.isnan(a) and math.isnan(b))
                if not same and not _crashed(first) and not _crashed(claim):
                    raise RunError(
                        f"cannot merge: claim {cid!r} has {key} {a!r} in run {source[cid]} "
                        f"but {b!r} in run {run.run_id}; records judged by different "
                        "tolerances do not belong in one report")
            if _crashed(first) and not _crashed(claim):
                merged[cid] = {**claim, "tests": claim_tests(first)}
            entry = merged[cid]
            entry["tests"] = _merge_tests(claim_tests(entry), claim_tests(claim))
            summarize_claim(entry)
    return merged


def _merge_tests(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tests of one claim in two runs, by nodeid: durations add, the worst outcome wins."""
    out = {str(t.get("nodeid")): dict(t) for t in a}
    for t in b:
        key = str(t.get("nodeid"))
        if key not in out:
            out[key] = dict(t)
            continue
        entry = out[key]
        entry["duration_s"] = float(entry.get("duration_s") or 0.0) + float(
            t.get("duration_s") or 0.0)
        if not entry.get("shrunk_spec") and t.get("shrunk_spec"):
            entry["shrunk_spec"], entry["shrunk_kind"] = t["shrunk_spec"], t.get("shrunk_kind")
        if _OUTCOME_RANK.get(str(t.get("outcome")), 0) > _OUTCOME_RANK.get(
                str(entry.get("outcome")), 0):
            entry["outcome"], entry["longrepr"] = t.get("outcome"), t.get("longrepr")
    return list(out.values())


def _crashed(claim: Mapping[str, Any]) -> bool:
    tol = claim.get("tolerance")
    return not (isinstance(tol, (int, float)) and math.isfinite(tol))


def _distinct(values: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for v in values:
        seen.setdefault(json.dumps(v, sort_keys=True, default=str), v)
    return list(seen.values())


def _parse_shard(value: Any) -> tuple[int, int] | None:
    if isinstance(value, str) and re.fullmatch(r"\d+/\d+", value.strip()):
        k, n = value.strip().split("/")
        return int(k), int(n)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _merge_meta(runs: Sequence[Run], n_records: int, duplicates: int) -> dict[str, Any]:
    metas = [r.meta for r in runs]
    keys: dict[str, None] = {}
    for m in metas:
        keys.update(dict.fromkeys(m))
    out: dict[str, Any] = {}
    for key in keys:
        values = _distinct([m[key] for m in metas if key in m])
        out[key] = values[0] if len(values) == 1 else values
    ids = [r.run_id for r in runs]
    out["run_id"] = "merged-" + hashlib.sha1(" ".join(sorted(ids)).encode()).hexdigest()[:8]
    out["merged_from"] = ids
    for key, pick in (("started", min), ("finished", max)):
        values = [str(m[key]) for m in metas if m.get(key)]
        if values:
            out[key] = pick(values)
    durations = [float(m["duration_s"]) for m in metas
                 if isinstance(m.get("duration_s"), (int, float))]
    if durations:
        out["duration_s"] = round(sum(durations), 2)  # compute time over all runs
    widths = sorted({int(w) for m in metas for w in (m.get("widths") or [])})
    if widths:
        out["widths"] = widths
    out["interrupted"] = any(bool(m.get("interrupted")) for m in metas)
    errors = [str(m["schema_error"]) for m in metas if m.get("schema_error")]
    out["schema_error"] = "\n".join(errors) or None
    out["n_records"] = n_records
    out["duplicates_dropped"] = duplicates
    shards = [s for s in (_parse_shard(m.get("shard")) for m in metas) if s is not None]
    if shards:
        out["shard"] = [f"{k}/{n}" for k, n in sorted(set(shards))]
        counts = {n for _, n in shards}
        if len(counts) == 1:
            (n,) = counts
            missing = sorted(set(range(n)) - {k for k, _ in shards})
            if missing:
                out["shards_missing"] = [f"{k}/{n}" for k in missing]
    return out


def _failure_text(cid: str, claim: Mapping[str, Any], failing: pd.DataFrame) -> str:
    relation = ">=" if claim.get("direction") == "above" else "<="
    lines = [f"claim {cid!r} does not hold at the widest width "
             f"(needs metric {relation} {claim.get('tolerance'):g}) in the merged records:"]
    lines += [f"  {r.arch_id}: {r.message}" for r in failing.itertuples()]
    return "\n".join(lines)


def merge_runs(runs: Sequence[Run]) -> Run:
    """Merge runs into one: concatenate, validate and de-duplicate records; recompute verdicts.

    Records sharing (claim_id, arch_id, width, seed) are duplicates: the first measured one (in
    the order of ``runs``) is kept, else the first. A claim's outcome is recomputed from the
    merged verdicts (``passed`` when every architecture holds at the widest width), except
    that an ``error`` in any run stays an error; its duration is the sum over runs. One run
    is returned with its records validated and de-duplicated and its claims unchanged.

    Args:
        runs: The runs, at least one.

    Returns:
        The merged run (``path`` None, ``meta["merged_from"]`` the run ids, for several).

    Raises:
        RunError: No runs; runs of different profiles or data sizes (``meta["profile"]``,
            ``meta["n_inputs"]``); records that fail the schema (or name a claim no run
            describes); runs that judge a claim by different tolerance, rate or direction.

    """
    if not runs:
        raise RunError("no runs to merge")
    # Runs measured on different data sizes or training budgets measure different things:
    # merging them would average, or de-duplicate away, incomparable records.
    sizes = {(r.meta.get("profile"), r.meta.get("n_inputs")) for r in runs
             if r.meta.get("n_inputs") is not None}
    if len(sizes) > 1:
        raise RunError(
            "runs of different profiles or data sizes cannot be merged: "
            + ", ".join(f"{r.run_id} (profile {r.meta.get('profile')}, "
                        f"n_inputs {r.meta.get('n_inputs')})" for r in runs)
            + "; merge shards of one sweep (same --ntk-profile), or compare runs instead"
        )
    claims = _merge_claims(runs) if len(runs) > 1 else {k: dict(v)
                                                       for k, v in runs[0].claims.items()}
    frames = [r.records for r in runs if len(r.records)]
    records = (pd.concat(frames, ignore_index=True, sort=False) if frames
               else pd.DataFrame(columns=list(RECORD_COLUMNS)))
    duplicates = 0
    if len(records):
        unknown = sorted(set(records["claim_id"].astype(str)) - set(claims))
        if unknown:
            raise RunError(f"records of claim(s) {unknown} but no claim metadata for them "
                           "(claims.json or the report's embedded claims)")
        try:
            records = record_schema(claims).validate(records)
        except Exception as exc:  # pandera SchemaError(s)
            raise RunError(f"records fail the record schema: {exc}") from None
        n = len(records)
        # A measured record beats an unmeasured one (e.g. out of memory on one machine) of the
        # same unit; otherwise the first wins. The original order is kept.
        first = records.assign(_unmeasured=~measured_mask(records)).sort_values(
            "_unmeasured", kind="stable")
        keep = first.drop_duplicates(subset=list(RECORD_KEY), keep="first").index
        records = records.loc[sorted(keep)].reset_index(drop=True)
        duplicates = n - len(records)
    if len(runs) == 1:
        meta = dict(runs[0].meta)
        if duplicates:
            meta["duplicates_dropped"] = duplicates
        return Run(records=records, claims=claims, meta=meta, path=runs[0].path)
    merged = Run(records=records, claims=claims,
                 meta=_merge_meta(runs, len(records), duplicates))
    _rejudge_tests(merged)
    return merged


def _rejudge_tests(run: Run) -> None:
    """Each test's outcome from the merged verdicts of the architectures it measured.

    A test with an ``error`` (or interrupted) outcome in any run keeps it; a test whose
    records are all gone keeps its outcome. Then the claim-level fields follow
    (:func:`ntkcheck.runs.outcomes.summarize_claim`).
    """
    from ntkcheck.runs.outcomes import claim_tests, summarize_claim

    _, av = run.verdicts()
    recs = run.records
    for cid, claim in run.claims.items():
        rows = av[av["claim_id"] == cid]
        tests = claim_tests(claim)
        if not len(rows) or not tests:
            continue
        mine = recs[recs["claim_id"].astype(str) == cid] if len(recs) else recs
        by_node = ({str(n): set(g.astype(str)) for n, g in mine.groupby(
            mine["nodeid"].astype(str))["arch_id"]} if len(mine) and "nodeid" in mine else {})
        for t in tests:
            if t.get("outcome") in ("error", "interrupted"):
                continue
            archs = by_node.get(str(t.get("nodeid")))
            if len(tests) == 1 and not archs:  # an old run's one test: all the claim's rows
                archs = set(rows["arch_id"].astype(str))
            if not archs:
                continue
            judged = rows[rows["arch_id"].astype(str).isin(archs)]
            failing = judged[~judged["holds_at_widest"].astype(bool)]
            t["outcome"] = "failed" if len(failing) else "passed"
            t["longrepr"] = _failure_text(cid, claim, failing) if len(failing) else None
        claim["tests"] = tests
        summarize_claim(claim)


# ----------------------------------------------------------------------------- write


def write_run(run: Run, folder: str | Path) -> Path:
    """Write a run as a run folder (the files the plugin writes, without ``latest``).

    Writes ``records.jsonl``, ``records.csv``, ``width_verdicts.csv``, ``verdicts.csv``,
    ``claims.json``, ``meta.json`` and ``report.html``.

    Returns:
        The folder.

    """
    from ntkcheck.report import render_report
    from ntkcheck.report.embed import jsonable

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "records.jsonl", "w", encoding="utf-8") as fh:
        for rec in run.records.to_dict("records"):
            fh.write(json.dumps(jsonable(rec)) + "\n")
    wv, av = run.verdicts()
    run.records.to_csv(out / "records.csv", index=False)
    wv.to_csv(out / "width_verdicts.csv", index=False)
    av.to_csv(out / "verdicts.csv", index=False)
    (out / "claims.json").write_text(json.dumps(run.claims, indent=2, default=str),
                                     encoding="utf-8")
    (out / "meta.json").write_text(json.dumps(run.meta, indent=2, default=str),
                                   encoding="utf-8")
    render_report(run.records, wv, av, run.claims, run.meta, out / "report.html")
    return out
