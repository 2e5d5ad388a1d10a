"""Options, resolved settings and the shared keys of the ntkcheck pytest plugin.

The plugin's pieces (:mod:`ntkcheck.plugin.hooks`, :mod:`ntkcheck.plugin.fixtures`,
:mod:`ntkcheck.plugin.recorder`, :mod:`ntkcheck.runs.writer`,
:mod:`ntkcheck.plugin.hypothesis_support`)
share the run's :class:`Settings` and per-item state through the pytest stash keys defined
here, and records travel on test reports under :data:`RECORD_KEY`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ntkcheck.plugin.runtime import (
    Deadline,
    PartFile,
)
from ntkcheck.plugin.sweep import Shard, parse_shard
from ntkcheck.profiles import Profile, get_profile, parse_widths

if TYPE_CHECKING:  # ntkcheck.claim imports pandas and pandera: not at every pytest startup
    pass


RECORD_KEY = "ntkcheck.record"
CLAIM_KEY = "ntkcheck.claim"
SHRUNK_KEY = "ntkcheck.shrunk"

_CRASH = re.compile(r"worker '[^']+' crashed while running")
_SETTINGS = pytest.StashKey["Settings"]()
_RUN = pytest.StashKey["RunWriter"]()
_CLAIM = pytest.StashKey["Claim"]()
_TIMEOUT = pytest.StashKey["float | None"]()
_SINK = pytest.StashKey[PartFile]()
_DEADLINE = pytest.StashKey[Deadline]()
_RECORDER = pytest.StashKey["Recorder"]()


@dataclass(frozen=True)
class Settings:
    """Resolved options of a run."""

    profile: Profile
    device: str
    report_dir: Path
    shard: Shard | None = None
    #: ``--ntk-model package.module:factory``: a user's ModelFamily the shipped claims run on.
    model: str | None = None


def _option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"ntk_{name}")
    if value is None:
        value = config.getini(f"ntk_{name}") or None
    return value


def _resolve_settings(config: pytest.Config) -> Settings:
    try:
        profile = get_profile(_option(config, "profile") or "quick")
        widths_opt = _option(config, "widths")
        seeds_opt = _option(config, "seeds")
        widths = parse_widths(widths_opt) if widths_opt is not None else None
        n_seeds = None
        if seeds_opt is not None:
            try:
                n_seeds = int(seeds_opt)
            except ValueError:
                raise ValueError(f"--ntk-seeds: {seeds_opt!r} is not an integer") from None
            if n_seeds < 1:
                raise ValueError(f"--ntk-seeds must be at least 1, got {n_seeds}")
        shard_opt = _option(config, "shard")
        shard = parse_shard(shard_opt) if shard_opt else None
    except ValueError as exc:
        from_ini = [f"{name} = {config.getini(name)!r}"
                    for name in ("ntk_profile", "ntk_widths", "ntk_seeds", "ntk_shard")
                    if config.getoption(name) is None and config.getini(name)]
        where = f" (set in the ini file: {', '.join(from_ini)})" if from_ini else ""
        raise pytest.UsageError(f"{exc}{where}") from None
    return Settings(
        profile=profile.with_overrides(widths=widths, n_seeds=n_seeds),
        device=_option(config, "device") or "auto",
        report_dir=Path(_option(config, "report") or "reports"),
        shard=shard,
        model=_option(config, "model"),
    )


def check_report_dir(path: Path) -> None:
    """Raise ValueError, saying why, if the run folders cannot be written under ``path``.

    Nothing is created at ``path`` (a project that installs ntkcheck but runs no claims gets
    no ``reports/``) and nothing there is removed, so any number of runs may start at once
    into a folder that does not exist yet (a Slurm job array): the check makes and removes
    a uniquely named probe folder in the nearest folder that exists. The run folder itself
    is made when the first record arrives (``mkdir(parents=True, exist_ok=True)``).
    """
    import tempfile

    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    hint = "; pass a writable folder with --ntk-report DIR (or the ntk_report ini key)"
    if not existing.is_dir():
        raise ValueError(f"--ntk-report: {str(existing)!r} is a file, not a folder{hint}")
    try:
        probe = tempfile.mkdtemp(prefix=".ntkcheck-probe-", dir=existing)
    except OSError as exc:
        what = (f"the folder {str(path)!r} is not writable" if existing == path
                else f"cannot create the folder {str(path)!r}")
        raise ValueError(f"--ntk-report: {what} ({exc.strerror or exc}){hint}") from None
    os.rmdir(probe)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")
