"""Files of a run folder written so that a crash never leaves half a file behind.

* :func:`atomic_write_text` and :func:`atomic_write_csv` write to a temporary file in the same
  folder and ``os.replace`` it onto the target (POSIX ``rename(2)`` is atomic within one file
  system), so a reader sees the old file or the new one, never a truncated one.
* :class:`EnvironmentFailure` is an operating-system failure that is not about the claims
  (disk full, the report folder deleted, no permission); :data:`ENVIRONMENT_EXIT` is the exit
  status of a run or an ``ntkcheck`` command that stops on one, distinct from a claim that
  does not hold (1) and from a usage error (2 for the command line, 4 for pytest).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["ENVIRONMENT_EXIT", "EnvironmentFailure", "atomic_write_text", "atomic_write_csv",
           "atomic_open", "describe_os_error"]

#: Exit status for an environment failure (disk full, report folder gone, no permission).
ENVIRONMENT_EXIT = 6

_HINTS = {
    errno.ENOSPC: "the disk is full: free space (or pass --ntk-report DIR on another disk) "
                  "and rerun",
    errno.EDQUOT: "the disk quota is exceeded: free space and rerun",
    errno.ENOENT: "the folder is gone (deleted while the run was writing?): recreate it or "
                  "pass another folder, and rerun",
    errno.EACCES: "no permission to write there: pass a writable folder",
    errno.EROFS: "the file system is read-only: pass a writable folder",
}


class EnvironmentFailure(Exception):  # noqa: N818 - named for what the user sees
    """The run's files could not be written or read for a reason outside ntkcheck.

    The message is one line: what could not be written, the operating system's reason and
    what to do.
    """


def describe_os_error(exc: OSError, what: str | Path) -> str:
    """One line for an ``OSError`` on the run file ``what``: the reason and a fix."""
    reason = exc.strerror or type(exc).__name__
    hint = _HINTS.get(exc.errno or -1, "check the folder and the disk, and rerun")
    return f"cannot write the run's files: {what}: {reason} ({hint})"


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success rename it onto ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``.

    Raises:
        OSError: The file could not be written (``path`` is then unchanged).

    """
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_csv(frame: Any, path: str | Path) -> Path:
    """Write a DataFrame as CSV (no index) to ``path`` atomically; returns ``path``."""
    with atomic_open(path) as fh:
        frame.to_csv(fh, index=False)
    return Path(path)
