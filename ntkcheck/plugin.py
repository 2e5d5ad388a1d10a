"""The ntkcheck pytest plugin (entry point ``pytest11``).

What it adds to pytest:

* the ``claim`` marker, validated at collection (:class:`ntkcheck.claim.Claim`);
* options ``--ntk-profile``, ``--ntk-widths``, ``--ntk-seeds``, ``--ntk-device``,
  ``--ntk-report`` and the ini keys ``ntk_profile``, ``ntk_widths``, ``ntk_seeds``,
  ``ntk_device``, ``ntk_report`` (options win over ini keys, ini keys over the profile);
* fixtures ``ntk_profile``, ``widths``, ``seeds``, ``device``, ``measure`` and ``digits``;
* Hypothesis settings for claim tests from the profile (examples, no deadline, ``too_slow``
  and ``function_scoped_fixture`` health checks off, no example database, derandomized in
  ``smoke`` and ``quick``);
* one torch thread per CPU core share under pytest-xdist;
* the verdict: after a claim test's body has run, its records are turned into verdicts and the
  test fails when the claim does not hold at the widest width for some architecture;
* the run folder ``<report dir>/<run id>/`` with ``records.jsonl`` (appended as each test
  report reaches the controlling process, so it survives a crashed worker), ``records.csv``,
  ``verdicts.csv``, ``width_verdicts.csv``, ``meta.json``, ``claims.json`` and
  ``report.html``, and a ``latest`` link to it.

Records travel from xdist workers to the controller on the test reports' ``user_properties``
and, as each is made, through the worker's ``records.<worker>.jsonl`` part file in the run
folder (without xdist: straight into ``records.jsonl``); the controller merges the part files
at the end, de-duplicated on (nodeid, ``seq``), so a worker that dies loses only the unit it
was measuring. Robustness (:mod:`ntkcheck.runtime`): ``--ntk-timeout SECONDS`` stops a claim
test (finished units kept, the rest recorded as not measured); SIGTERM is handled like Ctrl-C
and both still write the report with ``meta["interrupted"]``; an explicit ``--ntk-device``
that does not exist is a usage error, ``auto`` without CUDA warns and uses the CPU;
Hypothesis' files go to ``<report dir>/.hypothesis`` during claim runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ntkcheck.profiles import Profile, get_profile, parse_widths
from ntkcheck.runtime import (
    Deadline,
    NtkcheckWarning,
    PartFile,
    SweepStopped,
    parse_timeout,
    read_part_files,
    sigterm_as_interrupt,
    worker_part_name,
)
from ntkcheck.status import MEASURED, NOT_MEASURED
from ntkcheck.sweep import Shard, parse_shard, sweep_units

if TYPE_CHECKING:  # ntkcheck.claim imports pandas and pandera: not at every pytest startup
    from ntkcheck.claim import Claim

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


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``--ntk-*`` options and their ini keys."""
    group = parser.getgroup("ntkcheck", "ntkcheck: claims of NTK theory")
    opts = [
        ("profile", "NAME", "run profile: smoke (CI), quick (laptop, default), paper (GPU)"),
        ("widths", "W1,W2,...", "comma-separated widths to sweep (overrides the profile)"),
        ("seeds", "N", "seeds per architecture and width (overrides the profile)"),
        ("device", "DEV", "auto (CUDA when present), cpu, cuda or cuda:K; default auto"),
        ("report", "DIR", "folder for run reports, relative to the rootdir; default reports"),
        ("shard", "K/N", "run shard K (0-based) of N of every claim's (width, seed) units; "
                         "merge the shards' runs with `ntkcheck report`"),
        ("timeout", "SECONDS", "stop a claim test after this many seconds; its finished "
                               "units are kept, the rest reported as not measured"),
    ]
    for name, metavar, text in opts:
        group.addoption(f"--ntk-{name}", dest=f"ntk_{name}", metavar=metavar, default=None,
                        help=text)
        parser.addini(f"ntk_{name}", f"default for --ntk-{name}: {text}", default=None)


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
        widths = parse_widths(widths_opt) if widths_opt else None
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
        raise pytest.UsageError(str(exc)) from None
    return Settings(
        profile=profile.with_overrides(widths=widths, n_seeds=n_seeds),
        device=_option(config, "device") or "auto",
        report_dir=Path(_option(config, "report") or "reports"),
        shard=shard,
    )


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, resolve settings, set torch threads, prepare the run writer."""
    config.addinivalue_line(
        "markers",
        "claim(id, statement, source, metric, tolerance, rate=None, units='', "
        "direction='below'): a prediction of NTK theory measured across widths (ntkcheck)",
    )
    settings = _resolve_settings(config)
    config.stash[_SETTINGS] = settings
    _configure_runtime(config, settings)
    if _is_worker(config):
        import torch

        from ntkcheck.devices import threads_per_worker

        count = int(config.workerinput.get("workercount", 1))
        torch.set_num_threads(threads_per_worker(os.cpu_count() or 1, count))
    else:
        run = RunWriter(config, settings)
        config.stash[_RUN] = run
        config.pluginmanager.register(run, "ntkcheck-run")


def _configure_runtime(config: pytest.Config, settings: Settings) -> None:
    """Timeout, device check, SIGTERM handling and, on a worker, its records part file."""
    try:
        config.stash[_TIMEOUT] = parse_timeout(_option(config, "timeout"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(_HypothesisStorage(), "ntkcheck-hypothesis-storage")
    if _is_worker(config):
        run_dir = config.workerinput.get("ntkcheck_run_dir")
        if run_dir:
            name = worker_part_name(config.workerinput.get("workerid", "worker"))
            config.stash[_SINK] = PartFile(Path(run_dir) / name)
            config.add_cleanup(config.stash[_SINK].close)
        return
    option = settings.device.strip().lower()
    if option != "auto":  # an explicit device that does not exist is a usage error
        from ntkcheck.devices import resolve_device

        try:
            resolve_device(settings.device, None)
        except ValueError as exc:
            raise pytest.UsageError(f"--ntk-device: {exc}") from None
    stack = contextlib.ExitStack()
    stack.enter_context(sigterm_as_interrupt())
    config.add_cleanup(stack.close)


@contextlib.contextmanager
def _hypothesis_storage(config: pytest.Config) -> Iterator[None]:
    """Keep Hypothesis' files (its constants cache) under the report folder during a claim.

    Hypothesis writes ``.hypothesis/`` into the working directory even without an example
    database; during claim tests it goes to ``<report dir>/.hypothesis`` instead, unless
    ``HYPOTHESIS_STORAGE_DIRECTORY`` says where it belongs.
    """
    try:
        from hypothesis import configuration
    except ImportError:  # pragma: no cover - hypothesis is a dependency
        yield
        return
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") or not hasattr(
            configuration, "set_hypothesis_home_dir"):
        yield
        return
    previous = getattr(configuration, "__hypothesis_home_directory", None)
    base = config.stash[_SETTINGS].report_dir
    root = base if base.is_absolute() else Path(config.rootpath) / base
    configuration.set_hypothesis_home_dir(root / ".hypothesis")
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


class _HypothesisStorage:
    """Hypothesis collects its constants cache at collection: keep it in the report folder."""

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]
                                      ) -> Any:
        """Hook wrapper: Hypothesis' collection hook writes under the report folder."""
        if not any(item.get_closest_marker("claim") for item in items):
            return (yield)
        with _hypothesis_storage(config):
            return (yield)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """With ``-n auto``, one worker per GPU when the run uses CUDA; xdist's default otherwise."""
    settings = config.stash.get(_SETTINGS, None)
    if settings is None or settings.device == "cpu":
        return None
    import torch

    from ntkcheck.devices import auto_num_workers

    n_gpu = torch.cuda.device_count()
    return auto_num_workers(os.cpu_count() or 1, n_gpu) if n_gpu else None


def _claim_kwargs(obj: Any) -> dict[str, Any] | None:
    marks = [m for m in getattr(obj, "pytestmark", []) if getattr(m, "name", "") == "claim"]
    if not marks:
        return None
    from ntkcheck.claim import ClaimError

    if len(marks) > 1:
        raise ClaimError("a test may carry only one claim marker")
    if marks[0].args:
        raise ClaimError("the claim marker takes keyword arguments only, e.g. claim(id='...')")
    return dict(marks[0].kwargs)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Validate the claim marker at collection; an invalid one is a collection error."""
    if not callable(obj) or not getattr(obj, "pytestmark", None):
        return None
    from ntkcheck.claim import Claim, ClaimError

    try:
        kwargs = _claim_kwargs(obj)
        if kwargs is not None:
            Claim.from_marker_kwargs(kwargs, where=f"{collector.nodeid}::{name}")
    except ClaimError as exc:
        raise pytest.Collector.CollectError(str(exc)) from None
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Attach the claim to each claim test and apply the profile's Hypothesis settings."""
    settings = config.stash[_SETTINGS]
    for item in items:
        mark = item.get_closest_marker("claim")
        if mark is None:
            continue
        from ntkcheck.claim import Claim

        claim = Claim.from_marker_kwargs(mark.kwargs, where=item.nodeid)
        item.stash[_CLAIM] = claim
        item.user_properties.append((CLAIM_KEY, claim.to_dict()))
        obj = getattr(item, "obj", None)
        if obj is not None and getattr(obj, "is_hypothesis_test", False):
            # Shards must draw the same architectures, or their merge would be incomplete.
            _apply_hypothesis_settings(obj, settings.profile,
                                       settings.profile.derandomize or settings.shard is not None)


def _apply_hypothesis_settings(test: Any, profile: Profile, derandomize: bool) -> None:
    from hypothesis import HealthCheck, Phase
    from hypothesis import settings as hsettings

    parent = getattr(test, "_hypothesis_internal_use_settings", None) or hsettings.default
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    if profile.shrink:
        phases.append(Phase.shrink)
    test._hypothesis_internal_use_settings = hsettings(
        parent,
        max_examples=profile.max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.differing_executors],
    )
    inner = test.hypothesis.inner_test
    if not getattr(inner, "_ntkcheck_wrapped", False):
        test.hypothesis.inner_test = _per_example_verdict(inner)


_current_item: ContextVar[pytest.Item | None] = ContextVar("ntkcheck_item", default=None)
_SEEN = pytest.StashKey[dict]()


def _per_example_verdict(inner: Any) -> Any:
    """Wrap a Hypothesis inner test: one verdict per drawn architecture, measured once.

    Each example (one architecture, swept over every width) fails when the claim does not hold
    at the widest width, so Hypothesis shrinks a failing claim to the simplest architecture
    that still breaks it. An architecture drawn twice is not measured again: its first outcome
    is replayed (the measurement is deterministic), which keeps shrinking consistent.
    """
    from ntkcheck.arch import ArchSpec

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        item = _current_item.get()
        if item is None:
            return inner(*args, **kwargs)
        key = tuple(v.arch_id for v in kwargs.values() if isinstance(v, ArchSpec))
        seen = item.stash.setdefault(_SEEN, {})
        result = None
        if key and key in seen:
            message = seen[key]
        else:
            n_before = len(item.user_properties)
            result = inner(*args, **kwargs)
            new = [r for k, r in item.user_properties[n_before:] if k == RECORD_KEY]
            partial = item.config.stash[_SETTINGS].shard is not None
            message = _verdict_failure(item.stash[_CLAIM], new) if new and not partial else None
            if key:
                seen[key] = message
        if message is not None:
            specs = [v for v in kwargs.values() if isinstance(v, ArchSpec)]
            item.stash[_SHRUNK] = ", ".join(repr(s) for s in specs)
            # One raise statement for first runs and replays: Hypothesis identifies a failure
            # by its exception type and line, and a replay from another line looks flaky.
            raise AssertionError(message)
        return result

    wrapper._ntkcheck_wrapped = True  # type: ignore[attr-defined]
    return wrapper


_SHRUNK = pytest.StashKey[str]()


def _verdict_failure(claim: Claim, records: list[dict[str, Any]]) -> str | None:
    """The failure message of ``records`` for ``claim``, or None when the claim holds."""
    import pandas as pd

    from ntkcheck.verdict import compute_verdicts

    _, per_arch = compute_verdicts(pd.DataFrame(records), {claim.id: claim})
    failing = per_arch[~per_arch["holds_at_widest"].astype(bool)]
    if not len(failing):
        return None
    relation = "<=" if claim.direction == "below" else ">="
    lines = [f"claim {claim.id!r} does not hold at the widest width "
             f"(needs metric {relation} {claim.tolerance:g}):"]
    lines += [f"  {r.arch_id}: {r.message}" for r in failing.itertuples()]
    return "\n".join(lines)


def _timed_out(item: pytest.Item, claim: Claim, reason: str) -> str:
    """Record the claim's unfinished units as timed out; return the test's failure message."""
    recorder = item.stash.get(_RECORDER, None)
    missing = recorder.fill_not_measured("timeout", f"timed out: {reason}") if recorder else 0
    done = sum(1 for k, r in item.user_properties
               if k == RECORD_KEY and r.get("status", MEASURED) == MEASURED)
    return (f"claim {claim.id!r} {reason}: {done} unit(s) measured (kept), {missing} "
            "not measured (reported as 'not measured: timed out'); raise --ntk-timeout or "
            "sweep fewer widths or seeds")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Run a claim test, then turn its records into a verdict (the test's outcome)."""
    claim = item.stash.get(_CLAIM, None)
    if claim is None:
        return (yield)
    item.stash[_SEEN] = {}
    deadline = Deadline(item.config.stash.get(_TIMEOUT, None))
    item.stash[_DEADLINE] = deadline
    token = _current_item.set(item)
    stopped: str | None = None
    try:
        with _hypothesis_storage(item.config), deadline.alarm():
            result = yield
    except SweepStopped as exc:  # --ntk-timeout: keep what was measured, fail the test
        stopped, result = str(exc), None
    finally:
        deadline.disarm()
        _current_item.reset(token)
        shrunk = item.stash.get(_SHRUNK, None)
        if shrunk is not None:
            item.user_properties.append((SHRUNK_KEY, shrunk))
    if stopped is not None:
        pytest.fail(_timed_out(item, claim, stopped), pytrace=False)
    if item.config.stash[_SETTINGS].shard is not None:
        return result  # one shard sees part of the sweep: verdicts come from the merged runs
    records = [r for k, r in item.user_properties if k == RECORD_KEY]
    if records and not any(r.get("status", MEASURED) == MEASURED for r in records):
        reasons = sorted({str(r.get("reason", r.get("status"))) for r in records})
        pytest.fail(f"claim {claim.id!r} measured nothing: all {len(records)} unit(s) were not "
                    f"measured ({'; '.join(reasons)})", pytrace=False)
    if not records:
        pytest.fail(f"claim {claim.id!r} recorded no measurements: call the `measure` fixture "
                    "once per (architecture, width, seed)", pytrace=False)
    message = _verdict_failure(claim, records)
    if message is not None:
        pytest.fail(message, pytrace=False)
    return result


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def ntk_profile(pytestconfig: pytest.Config) -> Profile:
    """The active :class:`ntkcheck.profiles.Profile`, with command-line overrides applied."""
    return pytestconfig.stash[_SETTINGS].profile


@pytest.fixture(scope="session")
def widths(ntk_profile: Profile) -> list[int]:
    """Widths to sweep, increasing (``--ntk-widths`` or the profile's)."""
    return list(ntk_profile.widths)


@pytest.fixture(scope="session")
def seeds(ntk_profile: Profile) -> list[int]:
    """Seed indices ``0..n_seeds-1`` (``--ntk-seeds`` or the profile's)."""
    return list(range(ntk_profile.n_seeds))


@pytest.fixture
def sweep(request: pytest.FixtureRequest, widths: list[int], seeds: list[int]
          ) -> list[tuple[int, int]]:
    """The ``(width, seed)`` pairs this claim measures, narrowest width first.

    Every pair of ``widths`` x ``seeds``, or under ``--ntk-shard K/N`` this shard's share
    (:func:`ntkcheck.sweep.sweep_units`). Loop over it: ``for width, seed in sweep: ...``.
    """
    claim = request.node.stash.get(_CLAIM, None)
    shard = request.config.stash[_SETTINGS].shard
    return sweep_units(claim.id if claim else request.node.nodeid, widths, seeds, shard)


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config):
    """The ``torch.device`` claims run on (``--ntk-device``; under xdist, one GPU per worker)."""
    from ntkcheck.devices import resolve_device

    worker = getattr(pytestconfig, "workerinput", {}).get("workerid")
    option = pytestconfig.stash[_SETTINGS].device
    try:
        dev = resolve_device(option, worker)
    except (ValueError, RuntimeError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if option.strip().lower() == "auto" and dev.type == "cpu":
        warnings.warn(NtkcheckWarning(
            "--ntk-device auto: no CUDA device is visible, so claims run on the CPU; pass "
            "--ntk-device cpu (or ntk_device = \"cpu\" in the ini file) to silence this"),
            stacklevel=1)
    return dev


@pytest.fixture(scope="session")
def digits(ntk_profile: Profile, device):
    """scikit-learn's digits (a seeded subset of ``n_inputs`` images), float64, on ``device``.

    See :func:`ntkcheck.data.load_dataset` for the preprocessing.
    """
    from ntkcheck.data import load_dataset

    return load_dataset("digits", n=ntk_profile.n_inputs, seed=0, device=device)


class Recorder:
    """Records one measurement at a time for the running claim test (the ``measure`` fixture).

    Call it as ``measure(spec, width=..., seed=..., value=..., **extra)``: ``spec`` is an
    :class:`ntkcheck.arch.ArchSpec` (its fields go into the record), ``value`` the metric (a
    finite float), ``extra`` further named builtin scalars (e.g. ``train_loss=0.01``).

    Each record reaches the run folder as it is made (a worker's part file, or
    ``records.jsonl`` without xdist), so a crash or Ctrl-C loses only the unit in progress.
    ``--ntk-timeout`` is checked at every call of :meth:`__call__`, :meth:`seed` and
    :meth:`guard`. Per unit (architecture, width, seed index):

    * :meth:`seed` gives the network's initialization seed, derived from the claim, the
      architecture, the width and the seed index (:func:`ntkcheck.seeding.derive_seed`), so
      records do not depend on workers or test order;
    * :meth:`guard` wraps a unit: an out-of-memory error inside it (the kernel engine's
      estimate, or the device's) becomes a "not measured: out of memory" record and the
      sweep goes on with the other widths.
    """

    def __init__(self, item: pytest.Item, claim: Claim, settings: Settings, device: Any,
                 sink: Any = None, deadline: Deadline | None = None) -> None:
        self._item = item
        self._claim = claim
        self._settings = settings
        self._device = str(device)
        self._sink = sink
        self._deadline = deadline or Deadline(None)
        self._last = time.perf_counter()
        self._seq = 0
        self._specs: dict[str, Any] = {}  # architectures used, by arch_id, in order
        self._done: set[tuple[str, int, int]] = set()
        self._init_seeds: dict[tuple[str, int, int], int] = {}

    def _record(self, spec: Any, width: int, seed: int, value: float | None, status: str,
                dtype: str) -> dict[str, Any]:
        now = time.perf_counter()
        if isinstance(width, bool) or int(width) < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        record: dict[str, Any] = {"run_id": "", "claim_id": self._claim.id,
                                  "arch_id": spec.arch_id}
        record.update(spec.fields())
        record.update(width=int(width), seed=int(seed), value=value, status=status,
                      profile=self._settings.profile.name, device=self._device,
                      dtype=str(dtype).replace("torch.", ""), elapsed_s=now - self._last,
                      nodeid=self._item.nodeid)
        init = self._init_seeds.get((spec.arch_id, int(width), int(seed)))
        if init is not None:
            record["init_seed"] = init
        return record

    def _emit(self, spec: Any, record: dict[str, Any]) -> dict[str, Any]:
        with self._deadline.critical():
            record["seq"] = self._seq
            self._seq += 1
            self._specs.setdefault(spec.arch_id, spec)
            self._done.add((spec.arch_id, record["width"], record["seed"]))
            self._item.user_properties.append((RECORD_KEY, record))
            if self._sink is not None:
                self._sink.write({"nodeid": self._item.nodeid, "claim": self._claim.to_dict(),
                                  "record": record})
        self._last = time.perf_counter()
        return record

    def __call__(self, spec: Any, *, width: int, seed: int, value: float,
                 dtype: str = "float64", **extra: Any) -> dict[str, Any]:
        """Record one measurement and return the record.

        Raises:
            ValueError: A non-finite value, a non-positive width, or a non-scalar extra.
            SweepStopped: After recording, when ``--ntk-timeout`` has passed (the plugin
                catches it, keeps the records and reports the rest as not measured).

        """
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(
                f"claim {self._claim.id!r} measured a non-finite value ({value}) for "
                f"{spec.arch_id} at width {width}, seed {seed}; a claim must record finite "
                "metrics (check the data for NaN/Inf and the learning rate for divergence)"
            )
        record = self._record(spec, width, seed, value, MEASURED, dtype)
        for key, val in extra.items():
            if key in record or key in ("seq", "init_seed", "reason"):
                raise ValueError(f"measure(): extra value {key!r} clashes with a record field")
            if hasattr(val, "item"):
                val = val.item()
            if not isinstance(val, (int, float, str, bool)) and val is not None:
                raise ValueError(f"measure(): extra value {key!r} must be a builtin scalar")
            record[key] = val
        self._emit(spec, record)
        self._deadline.check()
        return record

    def seed(self, spec: Any, *, width: int, seed: int) -> int:
        """The initialization seed of unit (``spec``, ``width``, ``seed``); seeds global RNGs.

        Returns :func:`ntkcheck.seeding.derive_seed` of (claim id, ``spec.arch_id``, width,
        seed index) after seeding ``random``, NumPy and torch with it
        (:func:`ntkcheck.seeding.seed_everything`); the unit's record gets it as
        ``init_seed``. Pass it to ``spec.with_width(width).build(seed=...)``.

        Raises:
            ValueError: On a width below 1 or a negative seed index.
            SweepStopped: When ``--ntk-timeout`` has passed.

        """
        from ntkcheck.seeding import derive_seed, seed_everything

        self._deadline.check()
        init = derive_seed(self._claim.id, spec.arch_id, width, seed)
        seed_everything(init)
        self._specs.setdefault(spec.arch_id, spec)
        self._init_seeds[(spec.arch_id, int(width), int(seed))] = init
        return init

    def not_measured(self, spec: Any, *, width: int, seed: int, status: str,
                     reason: str) -> dict[str, Any]:
        """Record that unit (``spec``, ``width``, ``seed``) was not measured, and why.

        Args:
            spec: The architecture.
            width: The width.
            seed: The seed index.
            status: A key of :data:`ntkcheck.status.NOT_MEASURED` (``"oom"``, ``"timeout"``).
            reason: One line for the report.

        Raises:
            ValueError: On an unknown status.

        """
        if status not in NOT_MEASURED:
            raise ValueError(f"status must be one of {tuple(NOT_MEASURED)}, got {status!r}")
        record = self._record(spec, width, seed, None, status, "")
        record["reason"] = str(reason).splitlines()[0][:500] if reason else status
        return self._emit(spec, record)

    def _units(self) -> list[tuple[int, int]]:
        p = self._settings.profile
        return sweep_units(self._claim.id, list(p.widths), list(range(p.n_seeds)),
                           self._settings.shard)

    def fill_not_measured(self, status: str, reason: str) -> int:
        """Record every unfinished unit of the architectures used so far; return how many."""
        n = 0
        for arch_id, spec in list(self._specs.items()):
            for width, seed in self._units():
                if (arch_id, width, seed) not in self._done:
                    self.not_measured(spec, width=width, seed=seed, status=status,
                                      reason=reason)
                    n += 1
        return n

    @contextlib.contextmanager
    def guard(self, spec: Any, *, width: int, seed: int | None = None) -> Iterator[int | None]:
        """Run one unit (or every seed of one width); an out-of-memory error skips it.

        ``with measure.guard(spec, width=w, seed=s) as init_seed:`` yields
        :meth:`seed` ``(spec, width=w, seed=s)`` (None when ``seed`` is None). When the body
        raises an out-of-memory error (:func:`ntkcheck.runtime.is_out_of_memory`: the kernel
        engine's :class:`~ntkcheck.kernels.KernelMemoryError` estimate, or
        ``torch.cuda.OutOfMemoryError``), the error is swallowed, memory is freed, the unit
        (every unmeasured seed of the width when ``seed`` is None) is recorded as "not
        measured: out of memory" with the error's first line as ``reason``, and an
        :class:`ntkcheck.runtime.NtkcheckWarning` is issued. Other errors propagate.

        Raises:
            SweepStopped: At entry, when ``--ntk-timeout`` has passed.

        """
        from ntkcheck.runtime import free_memory, is_out_of_memory

        self._deadline.check()
        init = self.seed(spec, width=width, seed=seed) if seed is not None else None
        self._specs.setdefault(spec.arch_id, spec)
        reason = None
        try:
            yield init
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            traceback.clear_frames(exc.__traceback__)  # drop the failed unit's tensors
        if reason is None:
            return
        free_memory(self._device)
        seeds = [seed] if seed is not None else [s for w, s in self._units() if w == width]
        for s in seeds:
            if (spec.arch_id, int(width), int(s)) not in self._done:
                self.not_measured(spec, width=width, seed=s, status="oom", reason=reason)
        warnings.warn(
            NtkcheckWarning(f"claim {self._claim.id!r}: {spec.arch_id} at width {width} not "
                            f"measured: out of memory ({reason}); the sweep goes on"),
            stacklevel=3,
        )


@pytest.fixture
def measure(request: pytest.FixtureRequest, device: Any) -> Recorder:
    """Record measurements: ``measure(spec, width=, seed=, value=, **extra)``.

    Also ``measure.seed(spec, width=, seed=)`` (derived initialization seed),
    ``with measure.guard(spec, width=, seed=) as init_seed:`` (a unit whose out-of-memory
    error is recorded as not measured) and ``measure.not_measured(...)``; see
    :class:`Recorder`.
    """
    claim = request.node.stash.get(_CLAIM, None)
    if claim is None:
        raise pytest.UsageError(
            f"{request.node.nodeid} uses `measure` but has no @pytest.mark.claim(...) marker"
        )
    config = request.config
    sink = config.stash.get(_SINK, None) if _is_worker(config) else config.stash.get(_RUN, None)
    recorder = Recorder(request.node, claim, config.stash[_SETTINGS], device, sink=sink,
                        deadline=request.node.stash.get(_DEADLINE, None))
    request.node.stash[_RECORDER] = recorder
    return recorder


# ----------------------------------------------------------------------------- run writer


def _resolved_device(option: str) -> str:
    from ntkcheck.devices import resolve_device

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

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Hook (xdist): tell a worker the run folder, for its records part file."""
        node.workerinput["ntkcheck_run_dir"] = str(self.dir)

    def _entry(self, claim: dict[str, Any], nodeid: str) -> dict[str, Any]:
        return self.claims.setdefault(claim["id"], {**claim, "outcome": "passed",
                                                    "nodeid": nodeid, "duration_s": 0.0,
                                                    "longrepr": None, "shrunk_spec": None})

    def _write_record(self, rec: dict[str, Any]) -> None:
        """Append one record to ``records.jsonl`` unless it was written already."""
        key = (str(rec.get("nodeid")), rec["seq"]) if "seq" in rec else None
        if key is not None and key in self._written:
            return
        fh = self._open()
        fh.write(json.dumps({**rec, "run_id": self.run_id}) + "\n")
        fh.flush()
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
            real = next((c for k, c in self.claims.items()
                         if k != key and c.get("nodeid") == crash["nodeid"]), None)
            if real is not None:  # the claim is known from its part file or setup report
                real.update(outcome="error", longrepr=crash["longrepr"])
                del self.claims[key]
        for c in self.claims.values():
            if c["nodeid"] in self._started and c["nodeid"] not in self._finished:
                c["outcome"] = "interrupted" if interrupted else "error"
                c["longrepr"] = ("the run was interrupted (Ctrl-C or SIGTERM) while this claim "
                                 "was running; its finished measurements are kept"
                                 if interrupted else "the claim test did not finish (its "
                                 "worker died); its finished measurements are kept")

    def _open(self) -> Any:
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.dir / "records.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        return self._fh

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
        entry = self._entry(claim, report.nodeid)
        entry["duration_s"] += float(getattr(report, "duration", 0.0) or 0.0)
        shrunk = next((v for k, v in props if k == SHRUNK_KEY), None)
        if shrunk is not None:
            entry["shrunk_spec"] = shrunk
        if report.when == "call" or crashed:
            self._open()
            for key, rec in props:
                if key == RECORD_KEY:
                    self._write_record(rec)
        outcome = None
        if report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.skipped:
            outcome = "skipped"
        rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
        if outcome and rank[outcome] > rank[entry["outcome"]]:
            entry["outcome"] = outcome
            entry["longrepr"] = str(report.longrepr)[:4000]
        if outcome:
            self._open()

    def finish(self, session: pytest.Session, interrupted: bool) -> None:
        """Validate the records, compute verdicts, write tables, meta.json and the report."""
        self._merge_parts(interrupted)
        if self._fh is None and not self.claims:
            return
        self._settle(interrupted)
        self._open().close()
        import pandas as pd

        from ntkcheck.claim import Claim
        from ntkcheck.report import render_report
        from ntkcheck.verdict import compute_verdicts

        path = self.dir / "records.jsonl"
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        records = pd.DataFrame([json.loads(ln) for ln in lines])
        known = {cid: Claim(**{k: c[k] for k in ("id", "statement", "source", "metric",
                                                   "tolerance", "rate", "units", "direction")})
                 for cid, c in self.claims.items() if math.isfinite(c["tolerance"])}
        schema_error = None
        if not records.empty:
            from ntkcheck.claim import record_schema

            try:
                records = record_schema(known).validate(records)
            except Exception as exc:  # pandera's SchemaError(s): keep the data, say why
                schema_error = str(exc)
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        per_width, per_arch = compute_verdicts(records, known)
        records.to_csv(self.dir / "records.csv", index=False)
        per_width.to_csv(self.dir / "width_verdicts.csv", index=False)
        per_arch.to_csv(self.dir / "verdicts.csv", index=False)
        finished = datetime.now(timezone.utc)
        meta = self._meta(finished, interrupted, schema_error)
        meta.update(_runtime_meta(self.config, records))
        (self.dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str),
                                            encoding="utf-8")
        (self.dir / "claims.json").write_text(json.dumps(self.claims, indent=2, default=str),
                                              encoding="utf-8")  # for `ntkcheck report/compare`
        report = render_report(records, per_width, per_arch, self.claims, meta,
                               self.dir / "report.html")
        self._link_latest()
        self.summary = self._summary_lines(per_arch, report, schema_error)
        self.summary[-1:-1] = _not_measured_lines(records, interrupted)

    def _link_latest(self) -> None:
        latest = self.root / "latest"
        tmp = self.root / f".latest-{self.run_id}"
        try:
            os.symlink(self.run_id, tmp, target_is_directory=True)
            os.replace(tmp, latest)
        except OSError:  # no symlinks (some Windows setups): write a pointer file instead
            latest.mkdir(exist_ok=True)
            (latest / "RUN").write_text(self.run_id + "\n", encoding="utf-8")

    def _meta(self, finished: datetime, interrupted: bool, schema_error: str | None
              ) -> dict[str, Any]:
        import numpy
        import torch

        import ntkcheck

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
            "cuda_devices": [torch.cuda.get_device_name(i)
                             for i in range(torch.cuda.device_count())],
            "started": self.started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "duration_s": round((finished - self.started).total_seconds(), 2),
            "interrupted": interrupted, "schema_error": schema_error,
            "n_records": self.n_records, "workers": workers,
            "git_commit": commit or None, "hostname": socket.gethostname(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pytest": pytest.__version__,
            "ntkcheck": ntkcheck.__version__, "command": " ".join(sys.argv),
        }

    def _summary_lines(self, per_arch: Any, report: Path, schema_error: str | None
                       ) -> list[str]:
        lines = []
        for r in per_arch.itertuples():
            mark = "HOLDS" if r.holds_at_widest else "FAILS"
            lines.append(f"{mark:5}  {r.claim_id:28} {r.arch_id:28} {r.message}")
        for cid, c in self.claims.items():
            if c["outcome"] == "error":
                lines.append(f"ERROR  {cid:28} {'':28} {str(c['longrepr']).splitlines()[-1]}")
        if schema_error:
            lines.append(f"records failed schema validation: {schema_error.splitlines()[0]}")
        lines.append(f"{self.n_records} records; report: {report}")
        return lines
