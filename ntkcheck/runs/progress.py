"""Progress of a running claims run, read from its run folder alone.

A run folder fills up while the run goes on: ``records.jsonl`` (written by the controlling
process) and the workers' part files ``records.<worker>.jsonl`` get one line per measured
(claim, architecture, width, seed) unit, and ``plan.json`` says how many units the run expects
(written when its claim tests are collected). Reading only these files, the same code serves
the progress lines a run prints (:class:`ProgressPrinter`) and ``ntkcheck watch RUN`` for a
run in another terminal or on a cluster node (:func:`watch`). Nothing here imports torch or
pandas.

The time left is ``elapsed * (expected - done) / done``: it assumes the remaining units cost
what the finished ones did on average. Wider networks cost more and come last in a sweep, so
early in a run the estimate is low; it says "about".
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PLAN_FILE", "Progress", "ProgressPrinter", "format_duration", "read_progress",
           "watch", "write_plan"]

#: The file, in a run folder, with the number of units the run expects.
PLAN_FILE = "plan.json"


def format_duration(seconds: float) -> str:
    """``3h05m``, ``4m10s`` or ``12s`` (seconds rounded; negative values read as 0)."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass(frozen=True)
class Progress:
    """What a run folder says about its progress.

    Attributes:
        done: Units recorded so far (measured or not measured), over all files.
        expected: Units the run expects (``plan.json``), or ``None`` when unknown.
        claim_tests: Claim tests the run collected (``plan.json``), or ``None``.
        started: Unix time the run started (``plan.json``), or ``None``.
        finished: Whether ``meta.json`` exists (the run wrote its report).
        per_claim: Units recorded per claim id.
        ended: Unix time the run wrote ``meta.json`` (its modification time), or ``None``.
        interrupted: Whether ``meta.json`` says the run was interrupted.
    """

    done: int
    expected: int | None
    claim_tests: int | None
    started: float | None
    finished: bool
    per_claim: dict[str, int]
    ended: float | None = None
    interrupted: bool = False

    def line(self, now: float | None = None, final: bool = False) -> str:
        """One progress line: units done of expected, elapsed, and about how long is left.

        A run that has ended (``finished``, or ``final`` for the last line a run prints) says
        how many units it measured and how long it took; the planned count is only an
        estimate (Hypothesis may draw fewer architectures, a failing one stops the draws).
        """
        now = time.time() if now is None else now
        if self.finished or final:
            end = self.ended if self.ended is not None else now
            took = (f" in {format_duration(end - self.started)}"
                    if self.started is not None else "")
            state = "interrupted" if self.interrupted else "finished"
            return f"ntkcheck: {self.done} unit(s) measured{took} · {state}"
        parts = [f"{self.done} unit(s) measured"]
        if self.expected:
            parts[0] = (f"{self.done}/{self.expected} units "
                        f"({100 * min(self.done, self.expected) / self.expected:.0f}%)")
        if self.started is not None:
            elapsed = now - self.started
            parts.append(f"elapsed {format_duration(elapsed)}")
            if self.expected and 0 < self.done < self.expected:
                left = elapsed * (self.expected - self.done) / self.done
                parts.append(f"about {format_duration(left)} left")
        return "ntkcheck: " + " · ".join(parts)


def _count_lines(path: Path, per_claim: dict[str, int]) -> int:
    """Count complete record lines; an unfinished last line (a live writer) is skipped."""
    n = 0
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        rec = obj.get("record", obj)  # part files wrap the record with its claim and nodeid
        if isinstance(rec, dict) and "claim_id" in rec:
            cid = str(rec["claim_id"])
            per_claim[cid] = per_claim.get(cid, 0) + 1
            n += 1
    return n


def read_progress(run_dir: Path) -> Progress:
    """Read a run folder's progress (see the module docstring).

    Records appear in a worker's part file first and in ``records.jsonl`` once the
    controller has them; while the run goes on the larger of the two counts is taken per
    claim, so a unit is not counted twice.

    Args:
        run_dir: The run folder (``reports/<run id>`` or ``reports/latest``).

    Returns:
        A :class:`Progress`; an empty or missing folder reads as nothing done.
    """
    run_dir = Path(run_dir)
    main: dict[str, int] = {}
    _count_lines(run_dir / "records.jsonl", main)
    parts: dict[str, int] = {}
    for path in sorted(run_dir.glob("records.*.jsonl")):
        _count_lines(path, parts)
    per_claim = {c: max(main.get(c, 0), parts.get(c, 0)) for c in {*main, *parts}}
    plan: dict[str, Any] = {}
    try:
        loaded = json.loads((run_dir / PLAN_FILE).read_text(encoding="utf-8"))
        plan = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass

    def _num(key: str, kind: type) -> Any:
        value = plan.get(key)
        return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else None

    meta_path = run_dir / "meta.json"
    ended, interrupted, finished = None, False, False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        # the writer's provisional meta.json (written at the first claim) has no "finished"
        finished = isinstance(meta, dict) and bool(meta.get("finished"))
        interrupted = finished and bool(meta.get("interrupted"))
        ended = meta_path.stat().st_mtime if finished else None
    except (OSError, ValueError):
        pass
    return Progress(done=sum(per_claim.values()), expected=_num("expected_units", int),
                    claim_tests=_num("claim_tests", int), started=_num("started", float),
                    finished=finished, per_claim=per_claim, ended=ended,
                    interrupted=interrupted)


def write_plan(run_dir: Path, *, expected_units: int, claim_tests: int, started: float) -> None:
    """Write ``plan.json`` (atomically: a reader never sees half a file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{PLAN_FILE}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps({"expected_units": int(expected_units),
                               "claim_tests": int(claim_tests), "started": float(started)}),
                   encoding="utf-8")
    tmp.replace(run_dir / PLAN_FILE)


class ProgressPrinter:
    """Prints a progress line every ``interval`` seconds while a run's folder fills up.

    A daemon thread reads the folder (:func:`read_progress`) and calls ``emit`` with a new
    line when units were added since the last line; it never writes into the folder.

    Args:
        run_dir: The run folder.
        emit: Called with each line (the terminal reporter's ``write_line``).
        interval: Seconds between lines.
    """

    def __init__(self, run_dir: Path, emit: Callable[[str], None], interval: float) -> None:
        self.run_dir = Path(run_dir)
        self.emit = emit
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = -1

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ntkcheck-progress",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self, final: bool = False) -> str | None:
        """Emit a line if units were added since the last one; return it.

        With ``final``, emit the run's last line (units measured and time taken) in any case.
        """
        progress = read_progress(self.run_dir)
        if progress.done == 0 and progress.expected is None:
            return None
        if progress.done == self._last and not final:
            return None
        self._last = progress.done
        line = progress.line(final=final)
        try:
            self.emit(line)
        except Exception:  # noqa: BLE001  a closed terminal must not break the run
            self._stop.set()
        return line

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def watch(run_dir: Path, *, interval: float = 10.0, once: bool = False,
          emit: Callable[[str], None] = print, clock: Callable[[], float] = time.time,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Print a run's progress until it finishes (``ntkcheck watch RUN``).

    Args:
        run_dir: The run folder.
        interval: Seconds between checks.
        once: Print one line and return.
        emit: Where lines go.
        clock: The time source (injectable for tests).
        sleep: The pause between checks (injectable for tests).

    Returns:
        0 once the run has finished (its ``meta.json`` exists) or after one line with
        ``once``.
    """
    last = None
    while True:
        progress = read_progress(run_dir)
        line = progress.line(clock())
        if line != last or once:
            emit(line)
            last = line
        if once or progress.finished:
            return 0
        sleep(interval)
