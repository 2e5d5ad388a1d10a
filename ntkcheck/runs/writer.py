"""The run folder, written on the controlling process: records, tables, meta and report.

See :mod:`ntkcheck.plugin.hooks` for how records reach it and what the folder holds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import secrets
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ntkcheck.plugin.options import (
    _CRASH,
    _TIMEOUT,
    CLAIM_KEY,
    RECORD_KEY,
    SHRUNK_KEY,
    Settings,
)
from ntkcheck.plugin.runtime import (
    read_part_files,
)
from ntkcheck.runs.files import (
    ENVIRONMENT_EXIT,
    atomic_write_csv,
    atomic_write_text,
    describe_os_error,
)
from ntkcheck.status import NOT_MEASURED

if TYPE_CHECKING:  # ntkcheck.claim imports pandas and pandera: not at every pytest startup
    pass


def _resolved_device(option: str) -> str:
    from ntkcheck.plugin.devices import resolve_device

    try:
        return str(resolve_device(option, None))
    except ValueError as exc:
        return f"unavailable ({exc})"


_CRASHED = "(worker crashed before reporting)"


def _runtime_meta(config: pytest.Config, records: Any) -> dict[str, Any]:
    from ntkcheck.status import measured_mask

    n_measured = int(measured_mask(records).sum()) if len(records) else 0
    return {"timeout_s": config.stash.get(_TIMEOUT, None), "n_measured": n_measured,
            "n_not_measured": int(len(records) - n_measured)}


def _not_measured_lines(records: Any, interrupted: bool) -> list[str]:
    """Summary lines: units not measured per (claim, architecture, reason); the interrupt."""
    from ntkcheck.status import measured_mask

    lines = []
    if len(records) and "status" in records.columns:
        missing = records[~measured_mask(records)]
        for (cid, aid, status), g in missing.groupby(["claim_id", "arch_id", "status"]):
            widths = ", ".join(str(int(w)) for w in sorted(set(g["width"])))
            lines.append(f"NOT MEASURED  {cid:28} {aid:28} width(s) {widths}: "
                         f"{NOT_MEASURED.get(status, status)}")
    if interrupted:
        lines.append("run INTERRUPTED: the report covers the measurements finished before it")
    return lines


def verdict_mark(holds_at_widest: bool, message: str, verdict: str | None = None) -> str:
    """The terminal's word for a (claim, architecture) verdict.

    ``HOLDS``, ``FAILS``, ``RATE-CONTRADICTS`` (below the tolerance, but the metric has
    stopped following the predicted rate: :mod:`ntkcheck.verdict`'s rate rule), or
    ``INCOMPLETE`` when the widest width was only partly measured (Ctrl-C, a crash, a
    timeout), which is not judged.
    """
    if verdict == "rate-contradicts":
        return "RATE-CONTRADICTS"
    if holds_at_widest:
        return "HOLDS"
    return "INCOMPLETE" if message.startswith("incomplete:") else "FAILS"


def _warm_up() -> None:
    """Import and exercise what writing the report needs (pandas, pandera, matplotlib).

    Run in a background thread once the first claim report arrives, so that a Ctrl-C later
    writes the interrupted report in about a second instead of first spending many seconds
    (on a loaded machine) importing libraries.
    """
    try:
        import pandas as pd

        from ntkcheck.claim import record_schema
        from ntkcheck.report import render_report  # noqa: F401  (matplotlib, jinja2)
        from ntkcheck.runs import store  # noqa: F401
        from ntkcheck.verdict import compute_verdicts  # noqa: F401

        frame = pd.DataFrame([{"run_id": "r", "claim_id": "c", "arch_id": "a", "width": 1,
                               "seed": 0, "value": 0.0, "profile": "p", "device": "cpu",
                               "dtype": "float64", "elapsed_s": 0.0, "nodeid": "n"}])
        record_schema(["c"]).validate(frame)  # pandera loads its backends on first use
    except Exception:  # noqa: BLE001 - only a head start; finish() imports for real
        pass


class RunWriter:
    """Writes one run's folder on the controlling process (see the module docstring)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.started = datetime.now(timezone.utc)
        self.run_id = (self.started.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3))
        base = settings.report_dir
        self.root = base if base.is_absolute() else Path(config.rootpath) / base
        self.dir = self.root / self.run_id
        self.claims: dict[str, dict[str, Any]] = {}
        self.n_records = 0
        self.summary: list[str] | None = None
        self._fh = None
        self._written: set[tuple[str, int]] = set()  # (nodeid, seq) of records written
        self._started: set[str] = set()  # claim tests that began (a report or a record)
        self._finished: set[str] = set()  # ... and those that ended (teardown or crash)
        self.env_error: str | None = None  # the run's files could not be written (disk full)
        self._session: pytest.Session | None = None
        self._latest_note: str | None = None
        self._warming: Any = None

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        """Hook: Ctrl-C or SIGTERM on the controller. Stop the xdist workers at once.

        A worker in the middle of a unit does not hear a signal sent to the controller alone
        (``kill``, a scheduler), and pytest-xdist would wait ``NodeManager.EXIT_TIMEOUT``
        (10 s) for each before killing it. Its finished records are already in its part file
        (flushed per record), so the workers get SIGTERM now; the report of the interrupted
        run is then written from what they had finished.
        """
        import signal

        dsession = self.config.pluginmanager.getplugin("dsession")
        manager = getattr(dsession, "nodemanager", None)
        if manager is None:
            return
        manager.EXIT_TIMEOUT = min(float(getattr(manager, "EXIT_TIMEOUT", 2.0)), 2.0)
        for gateway in list(getattr(getattr(manager, "group", None), "_gateways", []) or []):
            popen = getattr(getattr(gateway, "_io", None), "popen", None)
            if popen is not None and popen.poll() is None:
                with contextlib.suppress(OSError):
                    popen.send_signal(signal.SIGTERM)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Hook: keep the session (to stop it when the run's files cannot be written)."""
        self._session = session

    def _fail_environment(self, exc: OSError, what: Any = None) -> None:
        """The run's files cannot be written: stop the run, exit with ENVIRONMENT_EXIT."""
        if self.env_error is None:
            self.env_error = describe_os_error(exc, exc.filename or what or self.dir)
        reason = f"ntkcheck: {self.env_error}"
        if self._session is not None:
            self._session.shouldstop = reason
        dsession = self.config.pluginmanager.getplugin("dsession")  # pytest-xdist
        if dsession is not None:
            dsession.shouldstop = reason

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Hook (xdist): tell a worker the run folder, for its records part file."""
        node.workerinput["ntkcheck_run_dir"] = str(self.dir)

    def _entry(self, claim: dict[str, Any], nodeid: str) -> dict[str, Any]:
        """The test ``nodeid`` of claim ``claim`` (its entry in ``self.claims[id]["tests"]``)."""
        meta = {k: v for k, v in claim.items() if k != "setting"}
        entry = self.claims.setdefault(claim["id"], {**meta, "tests": {}})
        return entry["tests"].setdefault(nodeid, {
            "nodeid": nodeid, "setting": claim.get("setting") or "theory",
            "outcome": "passed", "duration_s": 0.0, "longrepr": None, "shrunk_spec": None,
            "shrunk_kind": None})

    def claims_out(self, running: bool = False) -> dict[str, dict[str, Any]]:
        """The claims as ``claims.json`` holds them (:mod:`ntkcheck.runs.outcomes`).

        With ``running``, for the provisional file of a run in progress: tests that have
        not finished read ``interrupted`` (what they are if the run dies now).
        """
        import copy

        from ntkcheck.runs.outcomes import summarize_claim

        out = {}
        for cid, c in self.claims.items():
            tests = [dict(t) for t in c["tests"].values()]
            if running:
                for t in tests:
                    if t["nodeid"] not in self._finished:
                        t["outcome"] = "interrupted"
                        t["longrepr"] = ("the run stopped while this claim test was running "
                                         "(recovered from the files on disk)")
            out[cid] = summarize_claim(copy.deepcopy({**c, "tests": tests}))
        return out

    def _write_record(self, rec: dict[str, Any]) -> None:
        """Append one record to ``records.jsonl`` unless it was written already."""
        key = (str(rec.get("nodeid")), rec["seq"]) if "seq" in rec else None
        if key is not None and key in self._written:
            return
        if self.env_error is not None:
            return
        pos = None
        try:
            fh = self._open()
            pos = fh.tell()
            fh.write(json.dumps({**rec, "run_id": self.run_id}) + "\n")
            fh.flush()
        except OSError as exc:
            self._truncate(pos)
            self._fail_environment(exc, self.dir / "records.jsonl")
            return
        self.n_records += 1
        if key is not None:
            self._written.add(key)

    def write(self, obj: dict[str, Any]) -> None:
        """Record sink of an in-process (no xdist) claim: ``{"nodeid", "claim", "record"}``."""
        self._started.add(obj["nodeid"])
        self._entry(obj["claim"], obj["nodeid"])
        self._write_record(obj["record"])

    def _merge_parts(self, interrupted: bool) -> None:
        """Add the workers' part-file records not written yet (from crashed workers)."""
        if not self.dir.is_dir():
            return
        for obj in read_part_files(self.dir):
            if "record" in obj and "claim" in obj and "nodeid" in obj:
                if obj["claim"]["id"] not in self.claims:
                    self._started.add(obj["nodeid"])
                self._entry(obj["claim"], obj["nodeid"])
                self._write_record(obj["record"])
        if not interrupted:  # workers are done: records.jsonl now holds everything
            for path in self.dir.glob("records.*.jsonl"):
                path.unlink(missing_ok=True)

    def _settle(self, interrupted: bool) -> None:
        """Outcomes of claims that did not finish: crashed worker, Ctrl-C or SIGTERM."""
        for key, crash in list(self.claims.items()):
            if crash.get("statement") != _CRASHED:
                continue
            real = next((c["tests"][key] for k, c in self.claims.items()
                         if k != key and key in c["tests"]), None)
            if real is not None:  # the claim is known from its part file or setup report
                real.update(outcome="error", longrepr=crash["tests"][key]["longrepr"])
                del self.claims[key]
        for c in self.claims.values():
            for t in c["tests"].values():
                if t["nodeid"] in self._started and t["nodeid"] not in self._finished:
                    t["outcome"] = "interrupted" if interrupted else "error"
                    t["longrepr"] = ("the run was interrupted (Ctrl-C or SIGTERM) while this "
                                     "claim was running; its finished measurements are kept"
                                     if interrupted else "the claim test did not finish (its "
                                     "worker died); its finished measurements are kept")

    def _truncate(self, pos: int | None) -> None:
        """Cut a half-written line off ``records.jsonl`` (a full disk): the file stays valid."""
        import contextlib

        if self._fh is not None:
            with contextlib.suppress(OSError, ValueError):
                self._fh.close()  # may flush part of the line again ...
        if pos is not None:
            with contextlib.suppress(OSError):
                os.truncate(self.dir / "records.jsonl", pos)  # ... which this cuts off

    def _open(self) -> Any:
        if self._warming is None:
            import threading

            self._warming = threading.Thread(target=_warm_up, name="ntkcheck-warm-up",
                                              daemon=True)
            self._warming.start()
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.dir / "records.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            # A provisional meta.json: a run killed before it finishes still says what it
            # was (profile, widths, seeds, shard) and that it did not finish.
            self._write_progress(meta=True)
        return self._fh

    def _write_progress(self, meta: bool = False) -> None:
        """Rewrite the provisional ``claims.json`` (and ``meta.json``) of a running run."""
        if self.env_error is not None or self._fh is None:
            return
        try:
            if meta:
                started = self._meta(None, False, None)
                atomic_write_text(self.dir / "meta.json",
                                  json.dumps(started, indent=2, default=str))
            claims = self.claims_out(running=True)
            atomic_write_text(self.dir / "claims.json", json.dumps(claims, indent=2,
                                                                   default=str))
        except OSError as exc:
            self._fail_environment(exc)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Hook: a test report reached the controller."""
        self.add_report(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Hook: write the run's tables and report."""
        self.finish(session, interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Hook: print the verdict table and the report's path."""
        if self.summary:
            terminalreporter.write_sep("=", "ntkcheck verdicts")
            for line in self.summary:
                terminalreporter.write_line(line)

    def add_report(self, report: pytest.TestReport) -> None:
        """Append the report's records to ``records.jsonl`` and note the claim's outcome."""
        props = list(getattr(report, "user_properties", []) or [])
        claim = next((v for k, v in props if k == CLAIM_KEY), None)
        crashed = (report.failed and claim is None
                   and _CRASH.search(str(report.longrepr)) is not None)
        if claim is None and not crashed:
            return
        if claim is None:  # a worker died: the claim's metadata did not travel
            claim = {"id": report.nodeid, "statement": _CRASHED,
                     "source": "", "metric": "", "units": "", "tolerance": math.nan,
                     "rate": None, "direction": "below"}
        self._started.add(report.nodeid)
        if report.when == "teardown" or crashed:
            self._finished.add(report.nodeid)
        new_test = report.nodeid not in self.claims.get(claim["id"], {}).get("tests", {})
        entry = self._entry(claim, report.nodeid)
        if new_test:  # the run folder, its provisional meta and claims: from the first test
            self._open()
            self._write_progress()
        entry["duration_s"] += float(getattr(report, "duration", 0.0) or 0.0)
        shrunk = next((v for k, v in props if k == SHRUNK_KEY), None)
        if isinstance(shrunk, dict):  # {"spec", "kind"}: see hypothesis_support._SHRUNK
            entry["shrunk_spec"], entry["shrunk_kind"] = shrunk.get("spec"), shrunk.get("kind")
        elif shrunk is not None:
            entry["shrunk_spec"] = str(shrunk)
        if report.when == "call" or crashed:
            from ntkcheck.plugin.hypothesis_support import DRAW_KEY

            self._open()
            for key, rec in props:
                if key == RECORD_KEY:
                    self._write_record(rec)
            draws = [v for k, v in props if k == DRAW_KEY]
            if draws:
                entry["draws"] = draws
        outcome = None
        if report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.skipped:
            outcome = "skipped"
        rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
        if outcome and rank[outcome] > rank.get(entry["outcome"], 0):
            entry["outcome"] = outcome
            entry["longrepr"] = str(report.longrepr)[:4000]
        if outcome:
            self._open()
        if report.when == "teardown" or crashed:
            self._write_progress()

    def finish(self, session: pytest.Session, interrupted: bool) -> None:
        """Validate the records, compute verdicts, write tables, meta.json and the report.

        An operating-system failure while writing (disk full, the report folder deleted)
        ends the run with :data:`ntkcheck.runs.files.ENVIRONMENT_EXIT` and a one-line
        message; ``records.jsonl`` keeps every record written before it.
        """
        try:
            self._finish(session, interrupted)
        except OSError as exc:
            self._fail_environment(exc)
        if self.env_error is not None:
            session.exitstatus = ENVIRONMENT_EXIT
            self.summary = [f"ENVIRONMENT ERROR  {self.env_error}",
                            f"{self.n_records} records kept in {self.dir / 'records.jsonl'} "
                            f"(`ntkcheck report {self.dir} -o report.html` renders them)"]

    def _finish(self, session: pytest.Session, interrupted: bool) -> None:
        if self.env_error is not None:
            return
        self._merge_parts(interrupted)
        if self._fh is None and not self.claims:
            return
        self._settle(interrupted)
        self._open().close()
        from ntkcheck.claim import Claim
        from ntkcheck.report import render_report
        from ntkcheck.runs.store import mark_unfinished, records_frame
        from ntkcheck.verdict import compute_verdicts

        path = self.dir / "records.jsonl"
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        records = records_frame([json.loads(ln) for ln in lines])
        claims = self.claims_out()
        known = {cid: Claim.from_dict(c) for cid, c in claims.items()
                 if math.isfinite(c["tolerance"])}
        schema_error = None
        if not records.empty:
            from ntkcheck.claim import record_schema

            try:
                records = record_schema(known).validate(records)
            except Exception as exc:  # pandera's SchemaError(s): keep the data, say why
                schema_error = str(exc)
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        finished = datetime.now(timezone.utc)
        meta = self._meta(finished, interrupted, schema_error)
        meta.update(_runtime_meta(self.config, records))
        per_width, per_arch = compute_verdicts(records, known)
        per_arch = mark_unfinished(per_arch, records, claims, meta)
        atomic_write_csv(records, self.dir / "records.csv")
        atomic_write_csv(per_width, self.dir / "width_verdicts.csv")
        atomic_write_csv(per_arch, self.dir / "verdicts.csv")
        atomic_write_text(self.dir / "claims.json", json.dumps(claims, indent=2, default=str))
        report = render_report(records, per_width, per_arch, claims, meta,
                               self.dir / "report.html")
        # meta.json last: its "finished" time says every other file is complete
        atomic_write_text(self.dir / "meta.json", json.dumps(meta, indent=2, default=str))
        self._link_latest()
        self.summary = self._summary_lines(per_arch, records, claims, report, schema_error)
        self.summary[-2:-2] = _not_measured_lines(records, interrupted)
        if self._latest_note:
            self.summary.insert(-1, self._latest_note)

    def _link_latest(self) -> None:
        """Point ``<report dir>/latest`` at this run, unless ``latest`` is not ntkcheck's.

        ntkcheck's own ``latest`` is a symbolic link, or (where links are unavailable) a
        folder holding only a ``RUN`` pointer file; anything else of that name (a user's file
        or folder) is left alone and the summary says so.
        """
        latest = self.root / "latest"
        ours = latest.is_symlink() or not os.path.lexists(latest) or (
            latest.is_dir() and {p.name for p in latest.iterdir()} <= {"RUN"})
        if not ours:
            self._latest_note = (f"note: {latest} is not ntkcheck's link (a file or folder "
                                 "of yours): left alone; this run is "
                                 f"{self.dir}")
            return
        tmp = self.root / f".latest-{self.run_id}"
        try:
            if latest.is_dir() and not latest.is_symlink():
                raise OSError("pointer folder")  # keep the pointer-file form
            os.symlink(self.run_id, tmp, target_is_directory=True)
            os.replace(tmp, latest)
        except OSError:  # no symlinks (some Windows setups): write a pointer file instead
            if os.path.lexists(tmp):
                os.unlink(tmp)
            latest.mkdir(exist_ok=True)
            atomic_write_text(latest / "RUN", self.run_id + "\n")

    def _meta(self, finished: datetime | None, interrupted: bool, schema_error: str | None
              ) -> dict[str, Any]:
        import importlib.metadata

        import numpy

        import ntkcheck

        torch = sys.modules.get("torch")  # not imported just for meta.json (seconds)
        try:
            torch_version = torch.__version__ if torch else importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            torch_version = None
        cuda = (torch is not None and torch.cuda.is_available())

        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=self.config.rootpath,
                                    capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
        p = self.settings.profile
        workers = getattr(self.config.option, "numprocesses", None)
        return {
            "run_id": self.run_id, "profile": p.name, "widths": list(p.widths),
            "seeds": p.n_seeds, "n_inputs": p.n_inputs, "max_examples": p.max_examples,
            "shard": str(self.settings.shard) if self.settings.shard else None,  # "K/N"
            "device": self.settings.device,
            "device_resolved": _resolved_device(self.settings.device),
            "cuda_devices": ([torch.cuda.get_device_name(i)
                              for i in range(torch.cuda.device_count())] if cuda else []),
            "started": self.started.isoformat(timespec="seconds"),
            # None while the run is in progress (the provisional meta.json of a crashed run)
            "finished": finished.isoformat(timespec="seconds") if finished else None,
            "duration_s": (round((finished - self.started).total_seconds(), 2) if finished
                           else None),
            "interrupted": interrupted, "schema_error": schema_error,
            "n_records": self.n_records, "workers": workers,
            "git_commit": commit or None, "hostname": socket.gethostname(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch_version,
            "numpy": numpy.__version__, "pytest": pytest.__version__,
            "ntkcheck": ntkcheck.__version__, "command": " ".join(sys.argv),
        }

    def _summary_lines(self, per_arch: Any, records: Any, claims: dict[str, dict[str, Any]],
                       report: Path, schema_error: str | None) -> list[str]:
        """One line per (claim, architecture), practical ones tagged; errors; the headline."""
        from ntkcheck.runs.outcomes import arch_settings, claim_tests, headline

        settings = arch_settings(records)
        lines = []
        for r in per_arch.itertuples():
            mark = verdict_mark(bool(r.holds_at_widest), str(r.message),
                                getattr(r, "verdict", None))
            setting = settings.get((str(r.claim_id), str(r.arch_id)), "theory")
            tag = "" if setting == "theory" else f"[{setting}] "
            lines.append(f"{mark:5}  {r.claim_id:28} {r.arch_id:28} {tag}{r.message}")
        for cid, c in claims.items():
            for t in claim_tests(c):
                if t["outcome"] == "error":
                    tag = "[practical] " if t["setting"] == "practical" else ""
                    lines.append(f"ERROR  {cid:28} {'':28} {tag}{t['nodeid']}: "
                                 f"{str(t['longrepr']).splitlines()[-1]}")
        if schema_error:
            lines.append(f"records failed schema validation: {schema_error.splitlines()[0]}")
        lines.append(headline(claims))
        lines.append(f"{self.n_records} records; report: {report}")
        return lines
