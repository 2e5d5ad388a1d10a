"""The ntkcheck pytest plugin (entry point ``pytest11``).

What it adds to pytest:

* the ``claim`` marker, validated at collection (:class:`ntkcheck.claim.Claim`);
* options ``--ntk-profile``, ``--ntk-widths``, ``--ntk-seeds``, ``--ntk-device``,
  ``--ntk-report`` and the ini keys ``ntk_profile``, ``ntk_widths``, ``ntk_seeds``,
  ``ntk_device``, ``ntk_report`` (options win over ini keys, ini keys over the profile);
* fixtures ``ntk_profile``, ``ntk_widths``, ``ntk_seeds``, ``ntk_sweep``, ``ntk_device``,
  ``ntk_measure`` and ``ntk_digits``;
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

The pieces live in small modules: options and shared keys in :mod:`ntkcheck.plugin.options`, the
fixtures in :mod:`ntkcheck.plugin.fixtures`, the ``ntk_measure`` recorder in
:mod:`ntkcheck.plugin.recorder`,
Hypothesis integration in :mod:`ntkcheck.plugin.hypothesis_support` and the run folder in
:mod:`ntkcheck.runs.writer`; this module holds the hooks.

Records travel from xdist workers to the controller on the test reports' ``user_properties``
and, as each is made, through the worker's ``records.<worker>.jsonl`` part file in the run
folder (without xdist: straight into ``records.jsonl``); the controller merges the part files
at the end, de-duplicated on (nodeid, ``seq``), so a worker that dies loses only the unit it
was measuring. Robustness (:mod:`ntkcheck.plugin.runtime`): ``--ntk-timeout SECONDS`` stops a claim
test (finished units kept, the rest recorded as not measured); SIGTERM is handled like Ctrl-C
and both still write the report with ``meta["interrupted"]``; an explicit ``--ntk-device``
that does not exist is a usage error, ``auto`` without CUDA warns and uses the CPU;
Hypothesis' files go to ``<report dir>/.hypothesis`` during claim runs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ntkcheck.plugin.fixtures import (  # noqa: F401  (fixtures pytest finds on the plugin)
    ntk_device,
    ntk_digits,
    ntk_measure,
    ntk_profile,
    ntk_seeds,
    ntk_sweep,
    ntk_widths,
)
from ntkcheck.plugin.hypothesis_support import (
    _SEEN,
    _SHRUNK,
    _apply_hypothesis_settings,
    _current_item,
    _hypothesis_storage,
    _HypothesisStorage,
    _verdict_failure,
    claim_failure_text,
    configure_model_option,
)
from ntkcheck.plugin.options import (
    _CLAIM,
    _DEADLINE,
    _RECORDER,
    _RUN,
    _SETTINGS,
    _SINK,
    _TIMEOUT,
    CLAIM_KEY,
    RECORD_KEY,
    SHRUNK_KEY,
    Settings,
    _is_worker,
    _option,
    _resolve_settings,
    check_report_dir,
)
from ntkcheck.plugin.runtime import (
    Deadline,
    PartFile,
    SweepStopped,
    parse_timeout,
    sigterm_as_interrupt,
    worker_part_name,
)
from ntkcheck.runs.writer import RunWriter
from ntkcheck.status import MEASURED

if TYPE_CHECKING:  # ntkcheck.claim imports pandas and pandera: not at every pytest startup
    from ntkcheck.claim import Claim

_BLAS_LIMITS = pytest.StashKey[Any]()
_ACTIVE = pytest.StashKey[bool]()


class _ActivateOnFirstClaim:
    """On an xdist controller (which collects nothing), the first claim report activates."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Hook: a report carrying a claim means claims run in this session."""
        if any(key == CLAIM_KEY for key, _ in getattr(report, "user_properties", ()) or ()):
            _activate(self.config)


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
        ("model", "MODULE:FACTORY", "run the shipped claims on a user's ntkcheck.ModelFamily "
                                    "(package.module:name); the others are not applicable"),
    ]
    for name, metavar, text in opts:
        group.addoption(f"--ntk-{name}", dest=f"ntk_{name}", metavar=metavar, default=None,
                        help=text)
        parser.addini(f"ntk_{name}", f"default for --ntk-{name}: {text}", default=None)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, resolve settings, set torch threads, prepare the run writer."""
    config.addinivalue_line(
        "markers",
        "claim(id, statement, source, metric, tolerance, rate=None, units='', "
        "direction='below', scale='log', trend=None, setting='theory'): a prediction of NTK "
        "theory measured across widths (ntkcheck); direction 'below'/'above', scale "
        "'log'/'semilog', trend None/'decreasing'/'increasing', setting 'theory'/'practical' "
        "(a setting where the theory need not hold)",
    )
    settings = _resolve_settings(config)
    config.stash[_SETTINGS] = settings
    _configure_runtime(config, settings)
    if not _is_worker(config):
        run = RunWriter(config, settings)
        config.stash[_RUN] = run
        config.pluginmanager.register(run, "ntkcheck-run")
        config.pluginmanager.register(_ActivateOnFirstClaim(config), "ntkcheck-activate")
        config.pluginmanager.register(_ProgressLines(config, run), "ntkcheck-progress")


class _ProgressLines:
    """Progress lines on the controller while claims run (:mod:`ntkcheck.runs.progress`).

    A header (profile, widths, seeds, claim tests, units, run folder) once the run's plan is
    known, then a line with units done, elapsed time and about how long is left, every 10 s
    on a terminal and every 60 s otherwise (CI logs, cluster jobs); none with ``-q``.
    """

    def __init__(self, config: pytest.Config, run: RunWriter) -> None:
        self.config = config
        self.run = run
        self.printer: Any = None
        self.header_done = False

    def _emit(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        writer = getattr(reporter, "_tw", None)  # xdist's progress dots end without a newline
        if getattr(writer, "width_of_current_line", 0):
            writer.line()
        if not self.header_done:
            self.header_done = True
            p = self.config.stash[_SETTINGS].profile
            from ntkcheck.runs.progress import read_progress

            plan = read_progress(self.run.dir)
            reporter.write_line(
                f"ntkcheck: profile {p.name} · widths {','.join(map(str, p.widths))} · "
                f"{p.n_seeds} seed(s) · {plan.claim_tests or '?'} claim test(s), about "
                f"{plan.expected or '?'} units · run folder {self.run.dir}")
        reporter.write_line(line)

    def start(self) -> None:
        """Start printing (once), unless ``-q`` asked for quiet."""
        if self.printer is not None or self.config.get_verbosity() < 0:
            return
        import sys

        from ntkcheck.runs.progress import ProgressPrinter

        interval = 10.0 if sys.stdout.isatty() else 60.0
        self.printer = ProgressPrinter(self.run.dir, self._emit, interval)
        self.printer.start()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Hook (no xdist): claims were collected here."""
        if self.config.stash.get(_ACTIVE, False):
            self.start()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Hook (xdist controller): watch the folder; lines appear only if claims run."""
        self.start()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Hook: stop the printer before the run's summary, with a last line."""
        if self.printer is not None:
            self.printer.stop()
            self.printer.tick(final=True)


def _activate(config: pytest.Config) -> None:
    """Claims run in this process: torch/BLAS threads and SIGTERM handling (once).

    Called when the first claim test is collected (a worker, or a run without xdist) or,
    on an xdist controller, when the first claim report arrives. A session that collects no
    claim never gets here: it keeps its thread counts and signal handlers, and imports
    neither torch nor pandas (README, "A plugin that stays out of the way").
    """
    if config.stash.get(_ACTIVE, False):
        return
    config.stash[_ACTIVE] = True
    if _is_worker(config):
        import torch
        from threadpoolctl import threadpool_limits

        from ntkcheck.plugin.devices import threads_per_worker

        count = int(config.workerinput.get("workercount", 1))
        threads = threads_per_worker(os.cpu_count() or 1, count)
        torch.set_num_threads(threads)
        # NumPy/SciPy's BLAS (OpenBLAS, MKL) threads too: oversubscribed cores made BLAS-heavy
        # claims (scipy solves in a loop) two orders of magnitude slower on 2 cores.
        config.stash[_BLAS_LIMITS] = threadpool_limits(limits=threads)
        return
    if _option(config, "report") is None:  # the default folder: checked once claims run
        _check_report_dir(config, config.stash[_SETTINGS])
    stack = contextlib.ExitStack()
    stack.enter_context(sigterm_as_interrupt())
    config.add_cleanup(stack.close)


def _configure_runtime(config: pytest.Config, settings: Settings) -> None:
    """Timeout, device check, SIGTERM handling and, on a worker, its records part file."""
    try:
        config.stash[_TIMEOUT] = parse_timeout(_option(config, "timeout"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(_HypothesisStorage(), "ntkcheck-hypothesis-storage")
    configure_model_option(config, settings.model)
    if _is_worker(config):
        run_dir = config.workerinput.get("ntkcheck_run_dir")
        if run_dir:
            name = worker_part_name(config.workerinput.get("workerid", "worker"))
            config.stash[_SINK] = PartFile(Path(run_dir) / name)
            config.add_cleanup(config.stash[_SINK].close)
        return
    option = settings.device.strip().lower()
    if option != "auto":  # an explicit device that does not exist is a usage error
        from ntkcheck.plugin.devices import resolve_device

        try:
            resolve_device(settings.device, None)
        except ValueError as exc:
            raise pytest.UsageError(f"--ntk-device: {exc}") from None
    if _option(config, "report") is not None:  # asked for: check it before any test runs
        _check_report_dir(config, settings)


def _check_report_dir(config: pytest.Config, settings: Settings) -> None:
    base = settings.report_dir
    try:
        check_report_dir(base if base.is_absolute() else Path(config.rootpath) / base)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest -p no:xdist must still start
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """With ``-n auto``, one worker per GPU when the run uses CUDA; xdist's default otherwise."""
    settings = config.stash.get(_SETTINGS, None)
    if settings is None or settings.device == "cpu":
        return None
    from ntkcheck.plugin.devices import auto_num_workers, visible_nvidia_gpus

    n_gpu = visible_nvidia_gpus()  # counted without importing torch (no claim may run)
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
        _activate(config)
        from ntkcheck.claim import Claim

        claim = Claim.from_marker_kwargs(mark.kwargs, where=item.nodeid)
        item.stash[_CLAIM] = claim
        item.user_properties.append((CLAIM_KEY, claim.to_dict()))
        obj = getattr(item, "obj", None)
        if obj is not None and getattr(obj, "is_hypothesis_test", False):
            # Shards must draw the same architectures, or their merge would be incomplete.
            _apply_hypothesis_settings(obj, settings.profile,
                                       settings.profile.derandomize or settings.shard is not None)
    if config.stash.get(_ACTIVE, False) and not config.option.collectonly:
        _write_plan(config, [i for i in items if _CLAIM in i.stash])


def _planned_units(item: pytest.Item, settings: Settings) -> int:
    """About how many units a claim test will measure: architectures x its sweep."""
    from ntkcheck.plugin.sweep import sweep_units

    claim = item.stash[_CLAIM]
    profile = settings.profile
    obj = getattr(item, "obj", None)
    n_arch = 1
    if obj is not None and getattr(obj, "is_hypothesis_test", False):
        explicit = len(getattr(obj, "hypothesis_explicit_examples", ()) or ())
        n_arch = explicit + profile.max_examples
    sweep = sweep_units(claim.id, list(profile.widths), list(range(profile.n_seeds)),
                        settings.shard)
    return n_arch * len(sweep)


def _write_plan(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``plan.json`` in the run folder: the units this run expects (for progress lines)."""
    import time

    from ntkcheck.runs.progress import write_plan

    if _is_worker(config):
        if config.workerinput.get("workerid") != "gw0":  # every worker collects the same items
            return
        run_dir = config.workerinput.get("ntkcheck_run_dir")
    else:
        run = config.stash.get(_RUN, None)
        run_dir = run.dir if run is not None else None
    if not run_dir or not items:
        return
    settings = config.stash[_SETTINGS]
    try:
        write_plan(Path(run_dir), expected_units=sum(_planned_units(i, settings) for i in items),
                   claim_tests=len(items), started=time.time())
    except OSError:  # progress is a convenience: a folder problem surfaces when records land
        pass


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
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A claim that does not hold is reported as its verdict, not as a Hypothesis traceback."""
    report = yield
    if call.when == "call" and call.excinfo is not None and _CLAIM in item.stash:
        text = claim_failure_text(call.excinfo.value, item.stash.get(_SHRUNK, None))
        if text is not None:
            report.longrepr = text
    return report


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
    if records and all(r.get("status") == "capped" for r in records):
        # The profile leaves every width of this test out on purpose (e.g. converged CNN
        # training outside `paper`): not a finding, and not a failure of the harness.
        why = sorted({str(r.get("reason") or "above the width cap") for r in records})
        pytest.skip(f"claim {claim.id!r}: every width is above this profile's width cap "
                    f"({'; '.join(why)}); run a profile that measures it (e.g. --ntk-profile "
                    "paper)")
    if records and not any(r.get("status", MEASURED) == MEASURED for r in records):
        reasons = sorted({str(r.get("reason", r.get("status"))) for r in records})
        pytest.fail(f"claim {claim.id!r} measured nothing: all {len(records)} unit(s) were not "
                    f"measured ({'; '.join(reasons)})", pytrace=False)
    if not records:
        pytest.fail(f"claim {claim.id!r} recorded no measurements: call the `ntk_measure` fixture "
                    "once per (architecture, width, seed)", pytrace=False)
    message = _verdict_failure(claim, records)
    if message is not None:
        pytest.fail(message, pytrace=False)
    return result
