"""Run-time safety of a claims run: time limits, signals, and records that survive a crash.

* :class:`Deadline` and :class:`SweepStopped`: ``--ntk-timeout`` stops a claim's sweep between
  units (checked at every ``ntk_measure`` call) or, on the main thread of a POSIX process, in the
  middle of a unit by ``SIGALRM``; the plugin keeps the finished units.
* :func:`sigterm_as_interrupt`: ``SIGTERM`` is handled like Ctrl-C, so a killed run still
  writes its report, marked interrupted.
* :class:`PartFile` and :func:`read_part_files`: each xdist worker appends its records to its
  own ``records.<worker>.jsonl`` in the run folder, flushed per line, so a worker that dies
  loses only the measurement it was making; the controller merges the part files at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Deadline", "NtkcheckWarning", "PartFile", "SweepStopped", "free_memory",
           "is_out_of_memory", "parse_timeout", "read_part_files", "sigterm_as_interrupt",
           "worker_part_name"]


class NtkcheckWarning(UserWarning):
    """Something a run did differently from what was asked (a fallback, a unit not measured)."""


class SweepStopped(BaseException):  # noqa: N818 - a control-flow signal, like KeyboardInterrupt
    """Raised inside a claim test to stop its sweep at the ``--ntk-timeout`` limit.

    A ``BaseException`` (like ``KeyboardInterrupt``), so neither Hypothesis nor a claim's
    ``except Exception`` treats it as a failure to shrink or swallow.
    """


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out (or would have: the kernel engine's estimate).

    True for ``MemoryError`` (which :class:`ntkcheck.kernels.KernelMemoryError` subclasses),
    ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``), and a ``RuntimeError`` whose
    message says "out of memory" (other accelerators, older torch) or "can't allocate memory"
    (torch's CPU allocator).
    """
    if isinstance(exc, MemoryError):
        return True
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def free_memory(device: Any) -> None:
    """Collect garbage and return cached accelerator memory to the driver after an OOM."""
    import gc

    import torch

    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def parse_timeout(text: str | float | None) -> float | None:
    """Parse ``--ntk-timeout``: positive seconds, or None/``""``/``0``/``none`` for no limit.

    Raises:
        ValueError: If the text is not a non-negative finite number of seconds.

    """
    if text is None or str(text).strip().lower() in ("", "none", "0", "0.0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"--ntk-timeout: {text!r} is not a number of seconds; e.g. --ntk-timeout 600"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--ntk-timeout: seconds must be a finite number >= 0, got {text!r}")
    return value or None


class Deadline:
    """A time limit that started when it was made.

    Args:
        seconds: The limit, or None for none (then it never expires).
        clock: Monotonic clock (injectable for tests).

    """

    def __init__(self, seconds: float | None, clock: Any = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.start = clock()
        self.hit = False
        self.disarmed = False
        self._critical = 0
        self._pending = False

    def disarm(self) -> None:
        """Stop raising: the sweep is over (later checks do nothing)."""
        self.disarmed = True
        self._pending = False

    def elapsed(self) -> float:
        """Seconds since the deadline was made."""
        return self._clock() - self.start

    def expired(self) -> bool:
        """Whether the limit has passed."""
        return self.seconds is not None and self.elapsed() >= self.seconds

    def check(self) -> None:
        """Raise :class:`SweepStopped` if the limit has passed (unless disarmed)."""
        if not self.disarmed and self.expired():
            self._stop()

    def _stop(self) -> None:
        self.hit = True
        raise SweepStopped(f"stopped after {self.elapsed():.1f} s (--ntk-timeout "
                           f"{self.seconds:g})")

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section the alarm must not interrupt (e.g. writing a record)."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if not self._critical and self._pending and not self.disarmed:
            self._pending = False
            self._stop()

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.disarmed:
            return
        if self._critical:
            self._pending = True
            return
        self._stop()

    @contextlib.contextmanager
    def alarm(self) -> Iterator[None]:
        """Arm ``SIGALRM`` at the limit while the block runs (POSIX main thread only).

        Elsewhere (Windows, a non-main thread, no limit) it does nothing and the limit is
        only checked between units.
        """
        usable = (self.seconds is not None and hasattr(signal, "setitimer")
                  and threading.current_thread() is threading.main_thread())
        if not usable:
            yield
            return
        previous = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self.seconds - self.elapsed(), 1e-3))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[bool]:
    """Handle ``SIGTERM`` like Ctrl-C (``KeyboardInterrupt``) while the block runs.

    Only on the main thread and only when ``SIGTERM`` has its default action (a handler
    someone else installed is left alone). The first ``SIGTERM`` raises
    ``KeyboardInterrupt`` (pytest then finishes the session as interrupted); a second one
    terminates at once. Yields whether the handler was installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield False
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class PartFile:
    """An append-only JSON-lines file, opened on first write, flushed after every line.

    Args:
        path: The file (its folder is created on first write).

    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh: Any = None
        self.failed: str | None = None  # why writing stopped (disk full, folder gone)

    def write(self, obj: dict[str, Any]) -> None:
        """Append ``obj`` as one JSON line and flush it to the operating system.

        The part file is a backup (records also travel on the test reports): when the
        operating system refuses a write (disk full), the half-written line is cut off
        again, one :class:`NtkcheckWarning` says so, and later writes are skipped.
        """
        if self.failed is not None:
            return
        pos = None
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            pos = self._fh.tell()
            self._fh.write(json.dumps(obj) + "\n")
            self._fh.flush()
        except OSError as exc:
            import warnings

            self.failed = f"{self.path}: {exc.strerror or exc}"
            if self._fh is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._fh.close()  # may flush part of the line again ...
                self._fh = None
            if pos is not None:
                with contextlib.suppress(OSError):
                    os.truncate(self.path, pos)  # ... which this cuts off
            warnings.warn(f"cannot write the records part file {self.failed}; records still "
                          "reach the run folder through the test reports", NtkcheckWarning,
                          stacklevel=2)

    def close(self) -> None:
        """Close the file (a later write reopens it)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_part_files(folder: Path, pattern: str = "records.*.jsonl") -> list[dict[str, Any]]:
    """All JSON lines of the part files in ``folder``, in file-name then line order.

    A line that does not parse (the unfinished last line of a process that died while
    writing) is skipped.
    """
    out = []
    for path in sorted(Path(folder).glob(pattern)):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def worker_part_name(worker_id: str) -> str:
    """File name of a worker's part file: ``records.<worker>.jsonl`` (safe characters only)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(worker_id))
    return f"records.{safe or 'worker'}.{os.getpid()}.jsonl"
