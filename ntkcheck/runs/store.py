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
import os
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
           "list_runs", "LIST_COLUMNS", "RunSkippedWarning", "check_record", "records_frame",
           "NO_METADATA"]

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
_PART_GLOB = "records.*.jsonl"  # an xdist worker's records (ntkcheck.plugin.runtime)
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
                wv, av = compute_verdicts(recs, claims)
                self._verdicts = (wv, mark_unfinished(av, recs, self.claims, self.meta))
        return self._verdicts


#: Outcomes of a test that did not run to its end: its last architecture may be partial.
_UNFINISHED = ("error", "interrupted")


def _expected_units(claim_id: str, meta: Mapping[str, Any], seen: pd.DataFrame
                    ) -> set[tuple[int, int]]:
    """The (width, seed) units a claim's architecture should have in a run (its shards)."""
    from ntkcheck.plugin.sweep import Shard, sweep_units

    widths = meta.get("widths")
    widths = ([int(w) for w in widths] if isinstance(widths, list) and widths
              else sorted({int(w) for w in seen["width"]}))
    n_seeds = meta.get("seeds")
    seeds = (list(range(n_seeds)) if isinstance(n_seeds, int) and n_seeds > 0
             else sorted({int(s) for s in seen["seed"]}))
    shards = meta.get("shard")
    shards = shards if isinstance(shards, list) else [shards] if shards else []
    parsed = [p for p in (_parse_shard(x) for x in shards) if p is not None]
    if not parsed:
        return set(sweep_units(claim_id, widths, seeds))
    units: set[tuple[int, int]] = set()
    for k, n in parsed:
        units |= set(sweep_units(claim_id, widths, seeds, Shard(k, n)))
    return units


def mark_unfinished(per_arch: pd.DataFrame, records: pd.DataFrame,
                    claims: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]
                    ) -> pd.DataFrame:
    """Mark architectures whose test did not finish and whose sweep has gaps as incomplete.

    A test that errored or was interrupted (a killed worker, Ctrl-C, a crashed controller)
    leaves its last architecture with some of its (width, seed) units. Judging it would
    judge the widest width it reached as if it were the widest swept; instead its verdict
    is ``holds_at_widest`` False with a message starting ``incomplete:`` (the terminal and
    the report then say INCOMPLETE). The expected units are the run's widths times its
    seeds (``meta["widths"]``, ``meta["seeds"]``), restricted to its shards; units recorded
    as not measured (out of memory, above a cap, timed out) count as present.

    Returns:
        A copy of ``per_arch`` (:data:`ntkcheck.verdict.ARCH_COLUMNS`).

    """
    from ntkcheck.runs.outcomes import claim_tests

    out = per_arch.copy()
    if out.empty or records.empty or "nodeid" not in records.columns:
        return out
    unfinished = {str(t["nodeid"]) for c in claims.values() for t in claim_tests(c)
                  if t.get("outcome") in _UNFINISHED}
    if not unfinished:
        return out
    for i, row in out.iterrows():
        mine = records[(records["claim_id"].astype(str) == str(row["claim_id"]))
                       & (records["arch_id"].astype(str) == str(row["arch_id"]))]
        if not set(mine["nodeid"].astype(str)) & unfinished:
            continue
        claim_recs = records[records["claim_id"].astype(str) == str(row["claim_id"])]
        expected = _expected_units(str(row["claim_id"]), meta, claim_recs)
        have = {(int(w), int(s)) for w, s in zip(mine["width"], mine["seed"])}
        missing = sorted(expected - have)
        if not missing:
            continue
        widths = ", ".join(f"{w:,}" for w in sorted({w for w, _ in missing}))
        out.at[i, "holds_at_widest"] = False
        out.at[i, "message"] = (
            f"incomplete: its test did not finish; {len(expected & have)} of "
            f"{len(expected)} (width, seed) units recorded (missing at width {widths}); "
            "not judged")
    return out


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


def _part_files(folder: Path) -> list[Path]:
    """The xdist workers' ``records.<worker>.<pid>.jsonl`` files of a run folder."""
    return sorted(p for p in folder.glob(_PART_GLOB) if p.is_file())


def _is_run(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".html", ".htm")
    return path.is_dir() and (any((path / f).is_file() for f in _RUN_FILES)
                              or bool(_part_files(path)))


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
        RunError: The file embeds no ntkcheck data, or its JSON does not parse.

    """
    text = report.read_text(encoding="utf-8")
    found = {}
    for m in _EMBEDDED.finditer(text):
        try:
            found[m.group(1)] = json.loads(m.group(2))
        except ValueError as exc:
            raise RunError(f"{report}: the embedded {m.group(1)!r} data is not JSON ({exc})"
                           ) from None
    if not found:
        raise RunError(f"{report} is not an ntkcheck report (no embedded run data)")
    return found


# ----------------------------------------------------------------------------- validation

#: JSON types of the record fields the run store computes with (others are claims' extras).
_INT = "an integer"
_NUMBER = "a number"
_STRING = "a string"
_BOOL = "a boolean"
_REQUIRED_FIELDS = ("claim_id", "arch_id", "width", "seed")
_FIELD_TYPES: dict[str, tuple[str, bool]] = {  # field -> (type, may be null)
    "claim_id": (_STRING, False), "arch_id": (_STRING, False), "width": (_INT, False),
    "seed": (_INT, False), "value": (_NUMBER, True), "status": (_STRING, True),
    "init_seed": (_INT, True), "seq": (_INT, True), "depth": (_INT, True),
    "elapsed_s": (_NUMBER, True), "weight_std": (_NUMBER, True), "bias_std": (_NUMBER, True),
    "run_id": (_STRING, True), "nodeid": (_STRING, True), "profile": (_STRING, True),
    "device": (_STRING, True), "dtype": (_STRING, True), "setting": (_STRING, True),
    "family": (_STRING, True), "activation": (_STRING, True),
    "parametrization": (_STRING, True), "bias": (_BOOL, True), "reason": (_STRING, True),
}


def _kind(value: Any) -> str:
    """The JSON type of a value, in words (``true`` is a boolean, not an integer)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{json.dumps(value)} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    return f"a JSON {'list' if isinstance(value, list) else 'object'}"


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _STRING:
        return isinstance(value, str)
    return isinstance(value, bool)


def check_record(rec: Any, where: str) -> dict[str, Any]:
    """Check one record's JSON types; return it.

    Args:
        rec: A parsed record (one line of ``records.jsonl``).
        where: The file and line, for the message.

    Raises:
        RunError: Not an object, a missing key field, or a field of the wrong JSON type (a
            boolean width, a string value, a fractional seed, ...), named with ``where``.

    """
    if not isinstance(rec, dict):
        raise RunError(f"{where}: a record must be a JSON object, got {_kind(rec)}")
    for key in _REQUIRED_FIELDS:
        if rec.get(key) is None:
            raise RunError(f"{where}: field {key!r} is missing")
    for key, (kind, nullable) in _FIELD_TYPES.items():
        if key not in rec or (rec[key] is None and nullable):
            continue
        if not _type_ok(rec[key], kind):
            raise RunError(f"{where}: field {key!r} is {_kind(rec[key])}; expected {kind}")
    return rec


def records_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A records table from parsed records, integers kept exact.

    A column of integers with gaps (``init_seed`` of a unit that was not measured, ``seq``)
    becomes pandas' nullable ``Int64`` built from the Python integers, never ``float64``
    (which rounds seeds above 2**53).
    """
    frame = pd.DataFrame(list(rows))
    for col in frame.columns:
        values = [r.get(col) for r in rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            if len(present) < len(values) or col in _NULLABLE_INTS:
                frame[col] = pd.array(values, dtype="Int64")
    return frame


_NULLABLE_INTS = ("init_seed", "seq")


def _validate_records(frame: pd.DataFrame, claim_ids: Any, source: str) -> pd.DataFrame:
    """``record_schema`` on a records table, its error named after ``source``."""
    if frame.empty:
        return frame
    try:
        return record_schema(claim_ids).validate(frame)
    except Exception as exc:  # pandera SchemaError(s)
        raise RunError(f"{source}: records fail the record schema: "
                       f"{str(exc).splitlines()[0]}") from None


def _check_claims(obj: Any, source: str) -> dict[str, dict[str, Any]]:
    """Check a ``claims.json`` object (claim id -> metadata and tests); return it.

    Raises:
        RunError: Not an object of objects; a tolerance or rate that is not a number (a
            crashed worker's placeholder may have NaN), an unknown direction, scale, trend
            or outcome; ``tests`` that are not objects with a string ``nodeid``.

    """
    from ntkcheck.claim import SCALES, TRENDS
    from ntkcheck.runs.outcomes import OUTCOME_RANK, SETTINGS

    if not isinstance(obj, dict):
        raise RunError(f"{source}: expected a JSON object of claims by id, got {_kind(obj)}")
    for cid, c in obj.items():
        at = f"{source}, claim {cid!r}"
        if not isinstance(c, dict):
            raise RunError(f"{at}: expected a JSON object, got {_kind(c)}")
        tol = c.get("tolerance")
        if not _type_ok(tol, _NUMBER):
            raise RunError(f"{at}: field 'tolerance' is {_kind(tol)}; expected a number")
        if c.get("rate") is not None and not _type_ok(c["rate"], _NUMBER):
            raise RunError(f"{at}: field 'rate' is {_kind(c['rate'])}; expected a number or "
                           "null")
        allowed = {"direction": ("below", "above"), "scale": SCALES, "trend": TRENDS,
                   "outcome": tuple(OUTCOME_RANK), "practical_outcome": tuple(OUTCOME_RANK)}
        for key, values in allowed.items():
            if c.get(key) is not None and c[key] not in values:
                raise RunError(f"{at}: field {key!r} is {_kind(c[key])}; expected one of "
                               f"{list(values)}")
        for key in ("statement", "source", "metric", "units", "nodeid"):
            if c.get(key) is not None and not isinstance(c[key], str):
                raise RunError(f"{at}: field {key!r} is {_kind(c[key])}; expected a string")
        tests = c.get("tests")
        if tests is None:
            continue
        if isinstance(tests, dict):
            tests = list(tests.values())
        if not isinstance(tests, list):
            raise RunError(f"{at}: field 'tests' is {_kind(tests)}; expected a list")
        for i, t in enumerate(tests):
            if not isinstance(t, dict) or not isinstance(t.get("nodeid"), str):
                raise RunError(f"{at}, test {i}: expected an object with a string 'nodeid'")
            if t.get("outcome") is not None and t["outcome"] not in OUTCOME_RANK:
                raise RunError(f"{at}, test {t['nodeid']!r}: field 'outcome' is "
                               f"{_kind(t['outcome'])}; expected one of {list(OUTCOME_RANK)}")
            if t.get("setting") is not None and t["setting"] not in SETTINGS:
                raise RunError(f"{at}, test {t['nodeid']!r}: field 'setting' is "
                               f"{_kind(t['setting'])}; expected one of {list(SETTINGS)}")
            if t.get("duration_s") is not None and not _type_ok(t["duration_s"], _NUMBER):
                raise RunError(f"{at}, test {t['nodeid']!r}: field 'duration_s' is "
                               f"{_kind(t['duration_s'])}; expected a number")
    return obj


def _check_meta(obj: Any, source: str) -> dict[str, Any]:
    """Check a ``meta.json`` object's fields that verdicts and merges use; return it."""
    if not isinstance(obj, dict):
        raise RunError(f"{source}: expected a JSON object, got {_kind(obj)}")
    widths = obj.get("widths")
    if widths is not None and not (isinstance(widths, list)
                                   and all(_type_ok(w, _INT) and w > 0 for w in widths)):
        shown = widths if isinstance(widths, list) else _kind(widths)
        raise RunError(f"{source}: field 'widths' is {shown}; expected a list of positive "
                       "integers")
    for key, kind in (("seeds", _INT), ("n_inputs", _INT), ("interrupted", _BOOL),
                      ("run_id", _STRING), ("profile", _STRING)):
        if obj.get(key) is not None and not _type_ok(obj[key], kind):
            raise RunError(f"{source}: field {key!r} is {_kind(obj[key])}; expected {kind}")
    return obj


# ----------------------------------------------------------------------------- reading files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


def _jsonl_lines(path: Path) -> tuple[list[tuple[int, Any]], bool]:
    """Parsed lines of a JSON-lines file, and whether its last line was cut off.

    Only a last line without its newline (a process killed while writing it) may fail to
    parse; any other line that is not JSON is an error.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out, truncated = [], False
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except ValueError:
            if n == len(lines) and not text.endswith("\n"):
                truncated = True
                continue
            raise RunError(f"{path}, line {n}: not a JSON record") from None
    return out, truncated


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], bool]:
    lines, truncated = _jsonl_lines(path)
    return [check_record(rec, f"{path}, line {n}") for n, rec in lines], truncated


def _read_parts(folder: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], int]:
    """Records and claim metadata in the workers' part files; the number of files."""
    records: list[dict[str, Any]] = []
    claims: dict[str, dict[str, Any]] = {}
    parts = _part_files(folder)
    for path in parts:
        for n, obj in _jsonl_lines(path)[0]:
            where = f"{path}, line {n}"
            if not isinstance(obj, dict) or not isinstance(obj.get("record"), dict):
                raise RunError(f"{where}: expected a part-file entry "
                               '{"nodeid", "claim", "record"}')
            rec = check_record(dict(obj["record"]), where)
            claim = obj.get("claim")
            if isinstance(claim, dict) and isinstance(claim.get("id"), str):
                entry = claims.setdefault(claim["id"], {
                    **{k: v for k, v in claim.items() if k != "setting"}, "tests": {}})
                nodeid = str(obj.get("nodeid") or rec.get("nodeid") or "")
                entry["tests"].setdefault(nodeid, {
                    "nodeid": nodeid, "setting": claim.get("setting") or "theory",
                    "outcome": "interrupted", "duration_s": 0.0, "longrepr": _RECOVERED,
                    "shrunk_spec": None, "shrunk_kind": None})
            records.append(rec)
    return records, claims, len(parts)


_RECOVERED = ("the run stopped before this test reported (its controller was killed or "
              "crashed); its records were recovered from the files on disk")
#: Placeholder statement of a claim whose metadata no file holds (its records are not judged).
NO_METADATA = "(no claim metadata on disk: the run stopped before writing it)"

_CSV_INTS = ("width", "seed", "init_seed", "seq", "depth")
_CSV_FLOATS = ("value", "elapsed_s", "weight_std", "bias_std")
_INT_TEXT = re.compile(r"[+-]?\d+")


def _csv_cell(text: str, column: str, where: str) -> Any:
    if text == "":
        return None
    kind = _FIELD_TYPES.get(column, (None, True))[0]
    if column in _CSV_INTS:
        if not _INT_TEXT.fullmatch(text):
            raise RunError(f"{where}: column {column!r} is {text!r}; expected an integer")
        return int(text)
    if column in _CSV_FLOATS:
        try:
            return float(text)
        except ValueError:
            raise RunError(f"{where}: column {column!r} is {text!r}; expected a number"
                           ) from None
    if kind == _BOOL:
        if text not in ("True", "False"):
            raise RunError(f"{where}: column {column!r} is {text!r}; expected True or False")
        return text == "True"
    if kind == _STRING:
        return text
    if _INT_TEXT.fullmatch(text):  # a claim's extra value: the type it reads as
        return int(text)
    try:
        return float(text)
    except ValueError:
        return {"True": True, "False": False}.get(text, text)


def _read_csv(path: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Records of a ``records.csv``, each cell parsed exactly (integers stay integers).

    Older ntkcheck versions wrote ``init_seed`` through float64 (``5.75e+18``): such seeds no
    longer name their unit, so they are dropped, and ``notes`` says so.
    """
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return []
    header, out = rows[0], []
    if "init_seed" in header:
        i = header.index("init_seed")
        cells = [r[i] for r in rows[1:] if len(r) == len(header)]
        if any(c and not _INT_TEXT.fullmatch(c) for c in cells) and all(
                not c or re.fullmatch(r"[0-9.eE+-]+", c) for c in cells):
            for r in rows[1:]:
                if len(r) == len(header):
                    r[i] = ""
            if notes is not None:
                notes.append(f"{path.name} holds init_seed rounded through float64 (an older "
                             "ntkcheck wrote it): those seeds were dropped")
    for n, row in enumerate(rows[1:], 2):
        if not row:
            continue
        where = f"{path}, line {n}"
        if len(row) != len(header):
            raise RunError(f"{where}: {len(row)} cells but {len(header)} columns")
        rec = {col: _csv_cell(text, col, where) for col, text in zip(header, row)}
        # an empty string column (a not-measured unit's dtype) reads back as ""
        for col, text in zip(header, row):
            if text == "" and _FIELD_TYPES.get(col, (None, True))[0] == _STRING:
                rec[col] = "" if col not in ("status", "setting", "reason") else None
        out.append(check_record(rec, where))
    return out


def _embedded_records(split: Any, report: Path) -> list[dict[str, Any]]:
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list) \
            or not isinstance(split.get("data"), list):
        raise RunError(f"{report}: the embedded records are not a {{columns, data}} table")
    cols = [str(c) for c in split["columns"]]
    out = []
    for i, row in enumerate(split["data"]):
        if not isinstance(row, list) or len(row) != len(cols):
            raise RunError(f"{report}: embedded record {i} does not match the columns")
        rec = {c: v for c, v in zip(cols, row) if v is not None}
        out.append(check_record(rec, f"{report}, embedded record {i}"))
    return out


def _dedupe_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records from ``records.jsonl`` and the part files, each measurement once."""
    seen: set[Any] = set()
    out = []
    for rec in rows:
        key = ((str(rec.get("nodeid")), rec["seq"]) if rec.get("seq") is not None
               else tuple(rec.get(k) for k in RECORD_KEY))
        if key in seen:
            continue
        seen.add(key)
        out.append(rec)
    return out


def load_run(path: str | Path) -> Run:
    """Read a run folder (or a run's ``report.html``), recovering what a crash left.

    Records come from ``records.jsonl`` plus the xdist workers' part files
    (``records.<worker>.jsonl``, left behind when the controller died), else from
    ``records.csv``, else from the report's JSON; claims from ``claims.json`` (claims it
    lacks from the part files; a claim no file describes gets a placeholder, its records are
    shown but not judged), meta from ``meta.json`` (else the report's). Every file is
    validated: JSON types per record and field (:func:`check_record`), then
    :func:`ntkcheck.claim.record_schema`; ``claims.json`` and ``meta.json`` must be objects
    with typed fields. A run that did not finish, or was put together from what a crash
    left, lists why in ``meta["incomplete"]``.

    Raises:
        RunError: The path holds no run, or a file is not what it should be (the message
            names the file, the line or claim, and the field).

    """
    path = Path(path)
    if path.is_dir():
        path = _follow_pointer(path)
    if not _is_run(path):
        raise RunError(f"{path} is not an ntkcheck run folder")
    folder = path if path.is_dir() else None
    report = folder / "report.html" if folder is not None else path
    embedded: dict[str, Any] | None = None
    incomplete: list[str] = []

    def from_report(name: str) -> Any:
        nonlocal embedded
        if embedded is None:
            embedded = read_embedded(report) if report.is_file() else {}
        return embedded.get(name)

    try:
        part_claims: dict[str, dict[str, Any]] = {}
        if folder is not None and (folder / "records.jsonl").is_file():
            rows, truncated = _read_jsonl(folder / "records.jsonl")
            if truncated:
                incomplete.append("records.jsonl ends in a cut-off line (the run was killed "
                                  "while writing it); the measurement on it is lost")
            csv_path = folder / "records.csv"
            if not rows and csv_path.is_file() and _read_csv(csv_path):
                raise RunError(f"{folder / 'records.jsonl'} holds no records but "
                               f"{csv_path} does: records.jsonl is damaged; move it aside to "
                               "read the run from records.csv")
        elif folder is not None and (folder / "records.csv").is_file():
            rows = _read_csv(folder / "records.csv", incomplete)
        elif folder is None or report.is_file():
            rows = _embedded_records(from_report("records") or {"columns": [], "data": []},
                                     report)
        else:
            rows = []
        if folder is not None:
            part_rows, part_claims, n_parts = _read_parts(folder)
            if part_rows:
                before = len(rows)
                rows = _dedupe_rows(rows + part_rows)
                if len(rows) > before:
                    incomplete.append(f"{len(rows) - before} record(s) recovered from "
                                      f"{n_parts} worker part file(s) (the controller did "
                                      "not merge them: it was killed or interrupted)")
        if folder is not None and (folder / "claims.json").is_file():
            claims = _check_claims(_read_json(folder / "claims.json"),
                                   str(folder / "claims.json"))
        else:
            from ntkcheck.runs.outcomes import summarize_claim

            verdicts = from_report("verdicts") if folder is None or report.is_file() else None
            raw = (verdicts or {}).get("claims") if isinstance(verdicts or {}, dict) else None
            claims = _check_claims(raw or {}, f"{report} (embedded claims)")
            claims = {k: summarize_claim(dict(v)) if v.get("tests") else v
                      for k, v in claims.items()}
            if folder is not None and not report.is_file():
                incomplete.append("no claims.json: the run did not finish")
        if folder is not None and (folder / "meta.json").is_file():
            meta = dict(_check_meta(_read_json(folder / "meta.json"),
                                    str(folder / "meta.json")))
        else:
            meta = dict(_check_meta(from_report("meta") or {}, f"{report} (embedded meta)")
                        if folder is None or report.is_file() else {})
            if folder is not None and not report.is_file():
                incomplete.append("no meta.json: the run did not finish (killed or crashed)")
    except OSError as exc:
        raise RunError(f"cannot read run {path}: {exc}") from None
    claims = {str(k): dict(v) for k, v in claims.items()}
    from ntkcheck.runs.outcomes import summarize_claim

    for cid, entry in part_claims.items():
        if cid not in claims:
            entry["tests"] = list(entry["tests"].values())
            claims[cid] = summarize_claim(entry)
    rid = str(meta.get("run_id") or (folder or path.parent).name)
    for rec in rows:
        if not rec.get("run_id"):
            rec["run_id"] = rid
    unknown = sorted({str(r["claim_id"]) for r in rows} - set(claims))
    for cid in unknown:
        nodeids = sorted({str(r.get("nodeid") or "") for r in rows if r["claim_id"] == cid})
        claims[cid] = summarize_claim({
            "id": cid, "statement": NO_METADATA, "source": "", "metric": "", "units": "",
            "tolerance": math.nan, "rate": None, "direction": "below",
            "tests": [{"nodeid": n, "setting": "theory", "outcome": "interrupted",
                       "longrepr": _RECOVERED} for n in nodeids]})
    if unknown:
        incomplete.append(f"no claim metadata for {', '.join(unknown)}: their records are "
                          "shown but not judged")
    if meta.get("finished", "") is None:
        incomplete.append("meta.json says the run never finished (killed or crashed)")
    records = _validate_records(records_frame(rows), None, str(folder or path))
    if records.empty:
        records = pd.DataFrame(columns=list(RECORD_COLUMNS))
    meta["run_id"] = rid
    if incomplete:
        meta["incomplete"] = list(dict.fromkeys(list(meta.get("incomplete") or [])
                                                + incomplete))
    return Run(records=records, claims=claims, meta=meta, path=path)


def _run_folders(reports: Path) -> list[Path]:
    if not reports.is_dir():
        return []
    return sorted(p for p in reports.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
                  and p.name != "latest" and _is_run(p))


#: Columns of :func:`list_runs`.
LIST_COLUMNS = ["run_id", "date", "profile", "device", "commit", "records", "tests", "passed",
                "failed", "rate_contradicts", "practical_failed", "complete", "latest"]


def _latest_id(reports: Path) -> str | None:
    latest = reports / "latest"
    if not latest.exists():
        return None
    return _follow_pointer(latest).resolve().name


class RunSkippedWarning(UserWarning):
    """``list_runs`` left out a run folder whose files cannot be read (the message says why)."""


def _rate_contradicts(run: Run) -> int:
    """Claims with a theory-setting architecture whose verdict is ``rate-contradicts``."""
    _, av = run.verdicts()
    if not len(av) or "verdict" not in av.columns:
        return 0
    n = 0
    for cid in sorted(set(av["claim_id"].astype(str))):
        theory, practical = _setting_rows(run, cid)
        rows = theory if len(theory) else practical
        n += bool((rows["verdict"].astype(str) == "rate-contradicts").any())
    return n


def list_runs(reports: str | Path = "reports") -> pd.DataFrame:
    """The stored runs under ``reports``, oldest first.

    Returns:
        A DataFrame with :data:`LIST_COLUMNS`: start date, profile, device (with the GPU's
        name when CUDA was used), short git commit, number of records, number of tests,
        claims passed and failed in their theory setting (failed counts errors too), claims
        (theory setting) with an architecture whose verdict is ``rate-contradicts`` (within
        the tolerance, but off the predicted rate: :mod:`ntkcheck.verdict`), claims whose
        practical setting fails (or errors), ``complete`` (``"yes"``, or what is
        missing: a run that crashed or was interrupted; see ``meta["incomplete"]``) and
        whether ``latest`` points at the run. A run whose files cannot be read is left out
        with a :class:`RunSkippedWarning` naming the file and the problem.

    """
    import warnings

    reports = Path(reports)
    latest = _latest_id(reports)
    rows = []
    for folder in _run_folders(reports):
        try:
            run = load_run(folder)
        except RunError as exc:
            warnings.warn(f"skipped run {folder.name}: {exc}", RunSkippedWarning,
                          stacklevel=2)
            continue
        from ntkcheck.runs.outcomes import claim_tests, summarize_claim

        meta = run.meta
        entries = [summarize_claim(dict(c)) for c in run.claims.values()]
        # passed/failed: claims with a theory test (a practical-only claim is counted under
        # practical_failed only), as the terminal and the report's headline count them
        outcomes = [str(c.get("outcome") or "") for c in entries if c.get("has_theory", True)]
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
            "rate_contradicts": _rate_contradicts(run),
            "practical_failed": practical.count("failed") + practical.count("error"),
            "complete": _completeness(run),
            "latest": folder.name == latest,
        })
    table = pd.DataFrame(rows, columns=LIST_COLUMNS)
    return table.sort_values(["date", "run_id"], kind="stable").reset_index(drop=True)


def _completeness(run: Run) -> str:
    """``"yes"``, ``"interrupted"``, or ``"no: <first reason>"`` for :func:`list_runs`."""
    reasons = list(run.meta.get("incomplete") or [])
    if reasons:
        first = reasons[0].split(":")[0].split(" (")[0]
        return f"no: {first}" + (f" (+{len(reasons) - 1})" if len(reasons) > 1 else "")
    return "interrupted" if run.meta.get("interrupted") else "yes"


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
    incomplete = [f"{r.run_id}: {why}" for r in runs for why in r.meta.get("incomplete") or []]
    if incomplete:
        out["incomplete"] = incomplete
    else:
        out.pop("incomplete", None)
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
    meta = _merge_meta(runs, len(records), duplicates)
    if any(r.meta.get("shard") for r in runs):
        records, notes = _as_unsharded(records, claims, meta)
        meta["n_records"] = len(records)
        if notes:
            meta["shard_notes"] = notes
    merged = Run(records=records, claims=claims, meta=meta)
    _rejudge_tests(merged)
    return merged


def _as_unsharded(records: pd.DataFrame, claims: dict[str, dict[str, Any]],
                  meta: Mapping[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """Keep the architectures the unsharded run would have drawn; drop the others' records.

    A shard sees part of each architecture's sweep, so it cannot judge it, and Hypothesis,
    never told that an architecture fails, draws every example of the profile. The unsharded
    run stops earlier: when a pinned ``@example`` fails it draws nothing more, and it stops
    generating at the first failing drawn architecture. The tests' ``draws`` (in the order
    Hypothesis made them, the same in every shard: derandomized) and the merged verdicts
    replay that decision. Shrinking cannot be replayed (each shrink step needs the verdict
    of a new architecture): in a profile that shrinks, the merge reports the first failing
    drawn architecture, unshrunk, and a note says so.

    Returns:
        The records kept, and notes for ``meta["shard_notes"]``.

    """
    from ntkcheck.runs.outcomes import claim_tests

    if records.empty:
        return records, []
    probe = Run(records=records, claims=claims, meta=dict(meta))
    _, av = probe.verdicts()
    holds = {(str(r.claim_id), str(r.arch_id)): bool(r.holds_at_widest) for r in av.itertuples()}
    drop = pd.Series(False, index=records.index)
    notes = []
    shrinks = _profile_shrinks(meta.get("profile"))
    for cid, claim in claims.items():
        tests = claim_tests(claim)
        for t in tests:
            draws = [d for d in t.get("draws") or [] if isinstance(d, dict)]
            if not draws:
                continue

            def fails(d: Mapping[str, Any], cid: str = cid) -> bool:
                return any(holds.get((cid, str(a))) is False for a in d.get("arch_ids") or [])

            pinned = [d for d in draws if d.get("kind") == "pinned"]
            keep = list(pinned)
            if not any(fails(d) for d in pinned):
                for d in (d for d in draws if d.get("kind") != "pinned"):
                    keep.append(d)
                    if fails(d):
                        if shrinks:
                            notes.append(f"{cid}: the failing drawn architecture "
                                         f"{', '.join(d['arch_ids'])} is not shrunk (a merge "
                                         "of shards cannot replay Hypothesis' shrinking)")
                        break
            kept = {str(a) for d in keep for a in d.get("arch_ids") or []}
            gone = {str(a) for d in draws for a in d.get("arch_ids") or []} - kept
            if gone:
                drop |= ((records["claim_id"].astype(str) == cid)
                         & (records["nodeid"].astype(str) == str(t.get("nodeid")))
                         & records["arch_id"].astype(str).isin(gone))
            t["draws"] = keep
        claim["tests"] = tests
    return records[~drop].reset_index(drop=True), notes


def _profile_shrinks(name: Any) -> bool:
    from ntkcheck.profiles import get_profile

    try:
        return bool(get_profile(str(name)).shrink)
    except (ValueError, KeyError):
        return True


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


def _check_save_target(run: Run, out: Path) -> None:
    """Refuse to write a run over anything that is not an earlier copy of the same run."""
    if not os.path.lexists(out):
        return
    if not out.is_dir() or out.is_symlink():
        raise RunError(f"cannot save the run to {out}: it exists and is not a folder; choose "
                       "a new folder")
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return
    meta = out / "meta.json"
    held = None
    if meta.is_file():
        try:
            held = json.loads(meta.read_text(encoding="utf-8")).get("run_id")
        except (ValueError, AttributeError, OSError):
            held = None
    if held is not None and str(held) == run.run_id and set(entries) <= set(_SAVED_FILES):
        return  # an earlier save of this very run: rewriting it changes nothing else
    what = (f"another run ({held})" if held else
            f"{len(entries)} file(s) that are not this run's ({', '.join(sorted(entries)[:3])})")
    raise RunError(f"cannot save the run to {out}: the folder holds {what}; choose a new "
                   "folder (nothing was written)")


#: The files :func:`write_run` writes.
_SAVED_FILES = ("records.jsonl", "records.csv", "width_verdicts.csv", "verdicts.csv",
                "claims.json", "meta.json", "report.html")


def write_run(run: Run, folder: str | Path) -> Path:
    """Write a run as a run folder (the files the plugin writes, without ``latest``).

    Writes ``records.jsonl``, ``records.csv``, ``width_verdicts.csv``, ``verdicts.csv``,
    ``claims.json``, ``meta.json`` and ``report.html``, each atomically (a temporary file
    renamed onto its name). The folder must be new, empty, or an earlier save of the same
    run (same ``run_id``): nothing else is ever overwritten.

    Returns:
        The folder.

    Raises:
        RunError: The folder holds another run or other files.
        OSError: A file could not be written (disk full, ...).

    """
    from ntkcheck.report import render_report
    from ntkcheck.report.embed import jsonable
    from ntkcheck.runs.files import atomic_open, atomic_write_csv, atomic_write_text

    out = Path(folder)
    _check_save_target(run, out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "records.jsonl") as fh:
        for rec in run.records.to_dict("records"):
            fh.write(json.dumps(jsonable(rec)) + "\n")
    wv, av = run.verdicts()
    atomic_write_csv(run.records, out / "records.csv")
    atomic_write_csv(wv, out / "width_verdicts.csv")
    atomic_write_csv(av, out / "verdicts.csv")
    atomic_write_text(out / "claims.json", json.dumps(run.claims, indent=2, default=str))
    render_report(run.records, wv, av, run.claims, run.meta, out / "report.html")
    atomic_write_text(out / "meta.json", json.dumps(run.meta, indent=2, default=str))
    return out
