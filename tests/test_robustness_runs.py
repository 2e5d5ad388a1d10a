"""Issue 10, end to end: real pytest runs (in-process, subprocesses, signals, dying workers)."""

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ntkcheck.kernels._memory import available_memory_bytes
from ntkcheck.seeding import derive_seed

NO_CUDA = torch.cuda.device_count() == 0
SMALL = ["-p", "no:cacheprovider", "--ntk-profile", "smoke", "--ntk-device", "cpu"]

# A real claim (kernels on digits), the way claims/ write one: derived seeds, guarded units.
CLAIM_NTK = '''
import pytest
from hypothesis import example, given
from ntkcheck import strategies
from ntkcheck.arch import ArchSpec
from ntkcheck.kernels import analytic_kernels, empirical_ntk
from ntkcheck.metrics import relative_frobenius_error
from ntkcheck.numerics import check_psd

@pytest.mark.claim(id="det-ntk", statement="s", source="t", metric="m", tolerance=10.0)
@given(spec=strategies.mlps(max_depth=2, parametrizations=("ntk",)))
@example(spec=ArchSpec(depth=1, activation="erf"))
def test_ntk(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits):
    reference = analytic_kernels(spec, ntk_digits.x).ntk
    for width, seed in ntk_sweep:
        with ntk_measure.guard(spec, width=width, seed=seed) as init_seed:
            net = spec.with_width(width).build(seed=init_seed, input_shape=ntk_digits.input_shape,
                                               device=ntk_device)
            theta = check_psd(empirical_ntk(net, ntk_digits.x), "empirical NTK")
            ntk_measure(spec, width=width, seed=seed,
                    value=relative_frobenius_error(theta, reference))
'''
# A claim that draws from torch's *global* generator: its values depend on test order unless
# measure.seed re-seeds it per unit.
CLAIM_RNG = '''
import pytest
import torch
from hypothesis import given
from ntkcheck import strategies

@pytest.mark.claim(id="det-rng", statement="s", source="t", metric="m", tolerance=10.0)
@given(spec=strategies.mlps(max_depth=2))
def test_rng(spec, ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure.seed(spec, width=width, seed=seed)
        ntk_measure(spec, width=width, seed=seed, value=1.0 + float(torch.rand(())))
'''
# Measures two units, says so in a file, then hangs (to be interrupted) or dies.
CLAIM_STOPS = '''
import os, signal, time, ctypes
from pathlib import Path
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="stops", statement="s", source="t", metric="m", tolerance=1.0)
def test_stops(ntk_sweep, ntk_measure):
    spec = ArchSpec(depth=1)
    for i, (width, seed) in enumerate(ntk_sweep):
        if i == 2:
            Path("ready").write_text("2 measured")
            {stop}
        ntk_measure(spec, width=width, seed=seed, value=1 / width)
'''
SYNTHETIC = '''
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="fast", statement="s", source="t", metric="m", tolerance=1.0)
def test_fast(ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=1 / width)
'''


def _run_dir(root: Path) -> Path:
    return (root / "reports" / "latest").resolve()


def _records(run: Path) -> list[dict]:
    lines = (run / "records.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _comparable(run: Path) -> list[dict]:
    """Records without what legitimately differs between runs (run id, timing)."""
    rows = [{k: v for k, v in r.items() if k not in ("run_id", "elapsed_s")}
            for r in _records(run)]
    return sorted(rows, key=lambda r: (r["claim_id"], r["arch_id"], r["width"], r["seed"]))


# ----------------------------------------------------------------------------- 1. determinism


def test_records_are_bitwise_equal_across_workers_and_orders(pytester, monkeypatch, tmp_path):
    """-n 0, -n 1 and -n 2, files in either order: the same records, values to the last bit.

    Also (issue point 8): nothing is written into the project but the report folder.
    """
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # matplotlib's font cache lives in $HOME
    pytester.makepyfile(test_a=CLAIM_NTK, test_b=CLAIM_RNG)
    before = {p.relative_to(pytester.path) for p in pytester.path.rglob("*")}
    runs = []
    for workers, files in (("0", ["test_a.py", "test_b.py"]), ("1", ["test_b.py", "test_a.py"]),
                           ("2", ["test_a.py", "test_b.py"])):
        result = pytester.runpytest_subprocess(*files, "-n", workers, *SMALL,
                                               "--ntk-widths", "8,16", "--ntk-seeds", "2")
        result.assert_outcomes(passed=2)
        runs.append(_comparable(_run_dir(pytester.path)))
    assert len(runs[0]) >= 3 * 2 * 2  # >= 3 (claim, architecture) pairs, 2 widths, 2 seeds
    assert runs[0] == runs[1] == runs[2]
    for r in runs[0]:
        assert r["init_seed"] == derive_seed(r["claim_id"], r["arch_id"], r["width"], r["seed"])
    rng = [r["value"] for r in runs[0] if r["claim_id"] == "det-rng"]
    assert len(set(rng)) == len(rng)  # every unit drew from its own stream
    new = {p.relative_to(pytester.path) for p in pytester.path.rglob("*")} - before
    pytester_own = ("stdout", "stderr", "runpytest-")  # the subprocess runner's files
    outside = sorted(str(p) for p in new
                     if p.parts[0] != "reports" and not p.parts[0].startswith(pytester_own))
    assert outside == [], f"written outside the report folder: {outside}"
    assert (pytester.path / "reports" / ".hypothesis").is_dir()  # Hypothesis' cache moved


# ----------------------------------------------------------------------------- 2. bad data


def test_bad_data_and_specs_fail_before_training(pytester):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(12, 4))
    x_nan = x.copy()
    x_nan[3, 2] = np.inf
    np.savez(pytester.path / "sensors.npz", x=x_nan, y=np.arange(12) % 2)
    np.savez(pytester.path / "counts.npz", x=np.arange(48).reshape(12, 4), y=np.ones(12))
    pytester.makepyfile('''
import pytest
from ntkcheck.arch import ArchSpec
from ntkcheck.data import load_dataset
from ntkcheck.training.loops import gradient_descent

CLAIM = dict(statement="s", source="t", metric="m", tolerance=1.0)

def train_on(name, spec, measure):
    data = load_dataset(name)
    data.check_arch(spec)
    net = spec.with_width(8).build(seed=0, input_shape=data.input_shape)
    gradient_descent(net, data.x, data.regression_targets(), lr=0.1, steps=1)
    measure(spec, width=8, seed=0, value=0.5)

@pytest.mark.claim(id="nan-inputs", **CLAIM)
def test_nan_inputs(ntk_measure):
    train_on("sensors.npz", ArchSpec(depth=1), ntk_measure)

@pytest.mark.claim(id="int-inputs", **CLAIM)
def test_int_inputs(ntk_measure):
    train_on("counts.npz", ArchSpec(depth=1), ntk_measure)

@pytest.mark.claim(id="cnn-on-tables", **CLAIM)
def test_cnn_on_tables(ntk_measure):
    train_on("wine", ArchSpec(family="cnn", depth=1), ntk_measure)

@pytest.mark.claim(id="width-zero", **CLAIM)
def test_width_zero(ntk_measure):
    ArchSpec(depth=1).with_width(0)

@pytest.mark.claim(id="bad-activation", **CLAIM)
def test_bad_activation(ntk_measure):
    ArchSpec(activation="swish")
''')
    result = pytester.runpytest(*SMALL)
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines_random([
        "*DataError: data set 'sensors.npz': 1 non-finite value(s) (NaN or Inf) in the inputs;"
        " drop or impute them*",
        "*DataError: data set 'counts.npz': inputs have dtype int64; convert them to float*",
        "*DataError: data set 'wine' has inputs of shape (13,), but cnn-d1-relu-ntk-b-gap takes"
        " images (C, H, W); use an image data set such as 'digits'*",
        "*width must be an integer >= 1, got 0; widths are the hidden-layer sizes*",
        "*unknown activation 'swish'; choose one of*",
    ])
    assert "training loss" not in result.stdout.str()  # nothing was trained
    assert not (_run_dir(pytester.path) / "records.jsonl").read_text().strip()


# ----------------------------------------------------------------------------- 3. bad options


@pytest.mark.parametrize(("args", "message"), [
    (["--ntk-widths", "64;128"], "*--ntk-widths: '64;128' is not an integer*"),
    (["--ntk-widths", "-64"], "*--ntk-widths: width -64 must be a positive integer*"),
    (["--ntk-widths", ","], "*--ntk-widths: no widths given*"),
    (["--ntk-widths="], "*--ntk-widths: no widths given*"),
    (["--ntk-widths", "64,64"], "*--ntk-widths: width 64 is given twice*"),
    (["--ntk-profile", "nightly"], "*unknown ntkcheck profile 'nightly'; choose one of*"),
    (["--ntk-seeds", "two"], "*--ntk-seeds: 'two' is not an integer*"),
    (["--ntk-timeout", "soon"], "*--ntk-timeout: 'soon' is not a number of seconds*"),
    (["--ntk-timeout", "-5"], "*--ntk-timeout: seconds must be a finite number >= 0*"),
    (["--ntk-device", "tpu"], "*--ntk-device: unknown device option 'tpu'; use 'auto'*"),
    (["--ntk-device", "cuda:99"], "*--ntk-device: device option 'cuda:99'*"),
    pytest.param(["--ntk-device", "cuda"], "*--ntk-device: device option 'cuda' needs CUDA*",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is visible")),
    (["--ntk-report", "/proc/ntkcheck-reports"],
     "*--ntk-report: cannot create the folder '/proc/ntkcheck-reports'*writable folder*"),
    (["--ntk-report", "test_a.py/reports"], "*--ntk-report: *test_a.py' is a file, not a folder*"),
])
def test_bad_options_stop_the_run_before_any_test(pytester, args, message):
    pytester.makepyfile(test_a=SYNTHETIC)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert not (pytester.path / "reports").exists()


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is visible")
def test_device_auto_without_cuda_falls_back_with_a_warning(pytester):
    pytester.makepyfile(test_a=SYNTHETIC)
    result = pytester.runpytest("--ntk-widths", "8,16", "--ntk-seeds", "1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*NtkcheckWarning: --ntk-device auto: no CUDA device is "
                                 "visible, so claims run on the CPU*"])
    assert {r["device"] for r in _records(_run_dir(pytester.path))} == {"cpu"}


# ----------------------------------------------------------------------------- 4. memory


def test_a_width_that_does_not_fit_is_not_measured_and_the_sweep_goes_on(pytester):
    """The kernel engine's estimate refuses the widest width; narrower ones are measured."""
    n, d = 256, 64
    per_width = 4 * n * (d + 2) * 8  # bytes of the jacobian implementation per unit of width
    big = int(4 * available_memory_bytes("cpu") / per_width) + 1
    pytester.makepyfile(test_oom=f'''
import pytest
import torch
from ntkcheck.arch import ArchSpec
from ntkcheck.kernels import empirical_ntk

@pytest.mark.claim(id="big", statement="s", source="t", metric="m", tolerance=1e9)
def test_big(ntk_sweep, ntk_measure):
    spec = ArchSpec(depth=1)
    x = torch.randn({n}, {d}, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for width, seed in reversed(ntk_sweep):  # widest first: it fails, the others still run
        with ntk_measure.guard(spec, width=width, seed=seed) as init_seed:
            net = spec.with_width(width).build(seed=init_seed, input_shape=({d},))
            theta = empirical_ntk(net, x, implementation="jacobian")
            ntk_measure(spec, width=width, seed=seed, value=float(theta.trace()) / {n})
''')
    result = pytester.runpytest(*SMALL, "--ntk-widths", f"8,16,{big}", "--ntk-seeds", "2")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        f"*NtkcheckWarning: claim 'big': mlp-d1-relu-ntk-b at width {big} not measured: out "
        "of memory (KernelMemoryError: empirical_ntk(implementation='jacobian')*needs an "
        "estimated * GiB*",
        f"NOT MEASURED  big * width(s) {big}: out of memory",
    ])
    run = _run_dir(pytester.path)
    records = _records(run)
    measured = {(r["width"], r["seed"]) for r in records if r["status"] == "measured"}
    assert measured == {(8, 0), (8, 1), (16, 0), (16, 1)}
    oom = [r for r in records if r["status"] == "oom"]
    assert {(r["width"], r["seed"]) for r in oom} == {(big, 0), (big, 1)}
    assert all(r["value"] is None and "batch_size" in r["reason"] for r in oom)
    assert ">not measured: out of memory<" in (run / "report.html").read_text()
    assert json.loads((run / "meta.json").read_text())["n_not_measured"] == 2


CLAIM_CAPPED = '''
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="capped", statement="s", source="t", metric="m", tolerance={tol})
def test_capped(ntk_sweep, ntk_measure):
    spec = ArchSpec(family="cnn", depth=1)
    for width, seed in ntk_measure.capped(spec, ntk_sweep, 16, why="CNN kernels cost too much"):
        ntk_measure(spec, width=width, seed=seed, value=1 / width)
'''


def test_widths_above_a_cap_are_recorded_as_capped_and_the_widest_measured_is_judged(
        pytester):
    """``measure.capped``: wider units are 'not measured: above the width cap' records, the
    verdict judges width 16 (and fails when width 16 misses the tolerance)."""
    pytester.makepyfile(test_cap=CLAIM_CAPPED.format(tol=0.1))
    result = pytester.runpytest(*SMALL, "--ntk-widths", "8,16,32", "--ntk-seeds", "2")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["NOT MEASURED  capped * width(s) 32: above the width cap"])
    run = _run_dir(pytester.path)
    records = _records(run)
    assert {(r["width"], r["status"]) for r in records} == {
        (8, "measured"), (16, "measured"), (32, "capped")}
    capped = [r for r in records if r["status"] == "capped"]
    assert len(capped) == 2 and all(r["value"] is None for r in capped)
    assert all(r["reason"] == "width 32 is above the cap 16 (CNN kernels cost too much)"
               for r in capped)
    verdicts = list(csv.DictReader((run / "verdicts.csv").open()))
    assert (verdicts[0]["widest_width"], verdicts[0]["holds_at_widest"]) == ("16", "True")
    assert "not measured: above the width cap" in (run / "report.html").read_text()


def test_a_test_whose_every_width_is_capped_is_skipped_with_the_reason(pytester):
    """A profile that leaves a whole test out (e.g. converged CNN training outside `paper`)
    gives a skip naming the cap, not a 'measured nothing' failure; the records are kept."""
    pytester.makepyfile(test_cap=CLAIM_CAPPED.format(tol=0.1))
    result = pytester.runpytest(*SMALL, "--ntk-widths", "32,64", "--ntk-seeds", "1", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*every width is above this profile's width cap*"
                                 "CNN kernels cost too much*"])
    assert {r["status"] for r in _records(_run_dir(pytester.path))} == {"capped"}

    pytester.makepyfile(test_cap=CLAIM_CAPPED.format(tol=0.01))  # 1/16 > 0.01: must fail
    result = pytester.runpytest(*SMALL, "--ntk-widths", "8,16,32", "--ntk-seeds", "2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fails at every width up to 16*"])


# ----------------------------------------------------------------------------- 5. time limits


def test_timeout_keeps_finished_units_and_reports_the_rest(pytester):
    pytester.makepyfile(test_slow='''
import time
import pytest
from hypothesis import example, given
from ntkcheck import strategies
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="slow", statement="s", source="t", metric="m", tolerance=1.0)
@given(spec=strategies.mlps(min_depth=1, max_depth=1))
@example(spec=ArchSpec(depth=1))
def test_slow(spec, ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        with ntk_measure.guard(spec, width=width, seed=seed):
            time.sleep(0.05 if width < 64 else 600)  # width 64 never finishes
            ntk_measure(spec, width=width, seed=seed, value=1 / width)
''')
    started = time.monotonic()
    result = pytester.runpytest(*SMALL, "--ntk-widths", "8,16,64,128", "--ntk-seeds", "2",
                                "--ntk-timeout", "3")
    assert time.monotonic() - started < 120
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*claim 'slow' stopped after 3.* s (--ntk-timeout 3): 4 unit(s) measured (kept), 4 not "
        "measured (reported as 'not measured: timed out')*",
        "NOT MEASURED  slow * width(s) 64, 128: timed out",
    ])
    run = _run_dir(pytester.path)
    status = {(r["width"], r["seed"]): r["status"] for r in _records(run)}
    assert status == {(8, 0): "measured", (8, 1): "measured", (16, 0): "measured",
                      (16, 1): "measured", (64, 0): "timeout", (64, 1): "timeout",
                      (128, 0): "timeout", (128, 1): "timeout"}
    html = (run / "report.html").read_text()
    assert ">not measured: timed out<" in html
    assert json.loads((run / "meta.json").read_text())["timeout_s"] == 3.0


# ----------------------------------------------------------------------------- 6. interruptions


def _popen(root: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize(("signum", "workers"), [(signal.SIGINT, "0"), (signal.SIGTERM, "2")],
                         ids=["SIGINT-n0", "SIGTERM-n2"])
def test_signal_keeps_records_and_writes_an_interrupted_report(pytester, signum, workers):
    pytester.makepyfile(test_stops=CLAIM_STOPS.format(stop="time.sleep(600)"))
    proc = _popen(pytester.path, "-n", workers, *SMALL, "--ntk-widths", "8,16,32",
                  "--ntk-seeds", "1")
    deadline = time.monotonic() + 180
    while not (pytester.path / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signum)  # to the controller only, as `kill` or a scheduler would
    out = proc.communicate(timeout=180)[0]
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "run INTERRUPTED" in out
    run = _run_dir(pytester.path)
    assert [(r["width"], r["value"]) for r in _records(run)] == [(8, 0.125), (16, 0.0625)]
    assert json.loads((run / "meta.json").read_text())["interrupted"] is True
    assert 'id="interrupted"' in (run / "report.html").read_text()
    claims = json.loads((run / "claims.json").read_text())
    assert claims["stops"]["outcome"] == "interrupted"


@pytest.mark.parametrize("death", ["os.kill(os.getpid(), signal.SIGKILL)",
                                   "ctypes.string_at(0)"], ids=["killed", "segfault"])
def test_a_dying_worker_loses_only_its_unfinished_unit(pytester, death):
    pytester.makepyfile(test_stops=CLAIM_STOPS.format(stop=death), test_fast=SYNTHETIC)
    result = pytester.runpytest("-n", "1", "--max-worker-restart", "0", *SMALL,
                                "--ntk-widths", "8,16,32", "--ntk-seeds", "1")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("error", 0) >= 1
    run = _run_dir(pytester.path)
    stops = [(r["width"], r["status"]) for r in _records(run) if r["claim_id"] == "stops"]
    assert stops == [(8, "measured"), (16, "measured")]  # measured before the worker died
    claims = json.loads((run / "claims.json").read_text())
    assert claims["stops"]["outcome"] == "error"
    assert not list(run.glob("records.*.jsonl"))  # part files merged and removed
    # 2 of its 3 widths: the architecture is INCOMPLETE, never "holds at every width swept"
    verdict = next(v for v in csv.DictReader((run / "verdicts.csv").open())
                   if v["claim_id"] == "stops")
    assert verdict["holds_at_widest"] == "False" and verdict["message"].startswith("incomplete:")
    result.stdout.fnmatch_lines(["INCOMPLETE  stops *incomplete: its test did not finish; 2 of 3*"])


# ----------------------------------------------------------------------------- 8. run folders


def test_concurrent_runs_get_their_own_folders(pytester):
    pytester.makepyfile(test_fast=SYNTHETIC)
    procs = [_popen(pytester.path, *SMALL, "--ntk-widths", "8,16", "--ntk-seeds", "1")
             for _ in range(2)]
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out
    folders = [p for p in (pytester.path / "reports").iterdir()
               if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
    assert len(folders) == 2
    for folder in folders:
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", folder.name)
        records = _records(folder)
        assert len(records) == 2 and {r["run_id"] for r in records} == {folder.name}


# ----------------------------------------------------------------------------- issue 17: crashes,
# concurrent starts, a full disk, Ctrl-C

def _wait_ready(proc: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + 180
    while not (root / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ntkcheck.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_killed_controller_leaves_a_run_that_list_and_report_read(pytester, workers):
    """kill -9 of the pytest controller: every finished measurement is recovered."""
    pytester.makepyfile(test_stops=CLAIM_STOPS.format(stop="time.sleep(600)"))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-n", workers, *SMALL,
                             "--ntk-widths", "8,16,32", "--ntk-seeds", "1"],
                            cwd=pytester.path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_ready(proc, pytester.path)
        time.sleep(1)  # the part file's second line is flushed before "ready" is written
        os.kill(proc.pid, signal.SIGKILL)  # the controller only
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its orphaned workers
    (run,) = [p for p in (pytester.path / "reports").iterdir()
              if p.is_dir() and not p.name.startswith(".") and p.name != "latest"]
    listed = _cli("list", cwd=pytester.path)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if run.name in line)
    assert " 2 " in row and "no:" in row  # 2 records, marked incomplete
    out = _cli("report", str(run), "-o", "recovered.html", "--save", "saved",
               cwd=pytester.path)
    assert out.returncode == 0, out.stderr
    assert "warning: incomplete run" in out.stderr
    from ntkcheck.runs.store import load_run

    saved = load_run(pytester.path / "saved")
    assert sorted(saved.records["width"]) == [8, 16]
    (verdict,) = saved.verdicts()[1].to_dict("records")
    assert not verdict["holds_at_widest"] and verdict["message"].startswith("incomplete:")
    assert 'id="incomplete"' in (pytester.path / "recovered.html").read_text()


def _probe_and_start(path: str, rounds: int, task: int) -> list[str]:
    """One task of the race: check the report folder, then make a run folder in it."""
    from ntkcheck.plugin.options import check_report_dir

    errors = []
    for i in range(rounds):
        try:
            check_report_dir(Path(path) / str(i))
            (Path(path) / str(i) / f"run-{task}-{os.getpid()}").mkdir(parents=True)
        except (OSError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


def test_concurrent_starts_into_a_new_report_folder_never_fail(tmp_path):
    """A job array: many runs start at once into a report folder that does not exist."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(12) as pool:
        tasks = [(str(tmp_path / "job"), 40, k) for k in range(12)]
        results = pool.starmap(_probe_and_start, tasks)
    assert [e for r in results for e in r] == []
    for i in range(40):  # every task made its run folder; the check left nothing else
        assert len(list((tmp_path / "job" / str(i)).iterdir())) == 12
    assert not [p for p in tmp_path.rglob(".ntkcheck-probe-*")]


def test_latest_is_never_a_users_file_or_folder(pytester):
    pytester.makepyfile(test_fast=SYNTHETIC)
    reports = pytester.path / "reports"
    reports.mkdir()
    (reports / "latest").write_text("my notes")
    result = pytester.runpytest(*SMALL, "--ntk-widths", "8,16", "--ntk-seeds", "1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*reports/latest is not ntkcheck's link*left alone*"])
    assert (reports / "latest").read_text() == "my notes"
    (reports / "latest").unlink()
    (reports / "latest").mkdir()
    (reports / "latest" / "plot.png").write_text("mine")
    pytester.runpytest(*SMALL, "--ntk-widths", "8,16", "--ntk-seeds", "1").assert_outcomes(
        passed=1)
    assert [p.name for p in (reports / "latest").iterdir()] == ["plot.png"]
    (reports / "latest" / "plot.png").unlink()
    (reports / "latest").rmdir()
    pytester.runpytest(*SMALL, "--ntk-widths", "8,16", "--ntk-seeds", "1").assert_outcomes(
        passed=1)
    assert (reports / "latest").is_symlink()


def test_a_full_disk_is_an_environment_error_not_a_failed_claim(pytester):
    """Files may not grow past 6 KiB (RLIMIT_FSIZE): records.jsonl fills up mid-run."""
    import resource

    from ntkcheck.runs.files import ENVIRONMENT_EXIT

    pytester.makepyfile(test_fast=SYNTHETIC)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6 * 1024, 6 * 1024))

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", *SMALL, "--ntk-widths",
                           ",".join(str(8 * k) for k in range(1, 41)), "--ntk-seeds", "1"],
                          cwd=pytester.path, env=env, preexec_fn=limit, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == ENVIRONMENT_EXIT, proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if "ENVIRONMENT ERROR" in ln]
    assert "records.jsonl: File too large" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    (run,) = [p for p in (pytester.path / "reports").iterdir() if p.name.startswith("20")]
    kept = _records(run)  # every line whole: the cut-off one was removed
    assert 0 < len(kept) < 40
    out = _cli("report", str(run), "-o", str(pytester.path / "kept.html"), cwd=pytester.path)
    assert out.returncode == 0, out.stderr


def test_a_report_folder_deleted_mid_run_is_an_environment_error(pytester):
    from ntkcheck.runs.files import ENVIRONMENT_EXIT

    pytester.makepyfile(test_gone='''
import shutil
from pathlib import Path
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="gone", statement="s", source="t", metric="m", tolerance=1.0)
def test_gone(ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=1 / width)
    shutil.rmtree(Path("reports"))
''')
    result = pytester.runpytest_subprocess(*SMALL, "--ntk-widths", "8,16", "--ntk-seeds", "1")
    assert result.ret == ENVIRONMENT_EXIT
    result.stdout.fnmatch_lines(["ENVIRONMENT ERROR  cannot write the run's files: *No such "
                                 "file or directory (the folder is gone*"])


def test_seeds_are_exact_in_the_records_csv_of_a_run(pytester):
    """A unit that is not measured has no seed: the column must not turn into float64."""
    guarded = ("        with ntk_measure.guard(spec, width=width, seed=seed):\n"
               "            ntk_measure(spec,")
    pytester.makepyfile(test_cap=CLAIM_CAPPED.format(tol=1.0).replace(
        "        ntk_measure(spec,", guarded))
    pytester.runpytest(*SMALL, "--ntk-widths", "8,16,32", "--ntk-seeds", "2"
                       ).assert_outcomes(passed=1)
    run = _run_dir(pytester.path)
    rows = list(csv.DictReader((run / "records.csv").open()))
    measured = [r for r in rows if r["status"] == "measured"]
    assert len(measured) == 4 and all(r["init_seed"] == "" for r in rows
                                      if r["status"] != "measured")
    for r in measured:
        assert int(r["init_seed"]) == derive_seed(r["claim_id"], r["arch_id"], int(r["width"]),
                                                  int(r["seed"]))


def test_interrupting_the_controller_stops_busy_workers_at_once(pytester):
    """SIGINT to the controller alone: a worker in a long unit is stopped, not waited for.

    pytest-xdist would wait 10 s (``EXIT_TIMEOUT``) for the busy worker and then SIGKILL it;
    the run now sends it SIGTERM at once (the worker's handler leaves a file to show it).
    """
    pytester.makepyfile(test_stops=CLAIM_STOPS.format(
        stop="signal.signal(signal.SIGTERM, lambda *a: (Path('worker-stopped').touch(), "
             "os._exit(1))); time.sleep(600)"))
    proc = _popen(pytester.path, "-n", "2", *SMALL, "--ntk-widths", "8,16,32",
                  "--ntk-seeds", "1")
    _wait_ready(proc, pytester.path)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=180)[0]
    assert time.monotonic() - started < 120, "the run hung after Ctrl-C"
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert (pytester.path / "worker-stopped").exists(), "the busy worker was not stopped"
    run = _run_dir(pytester.path)
    assert [(r["width"], r["value"]) for r in _records(run)] == [(8, 0.125), (16, 0.0625)]
    assert 'id="interrupted"' in (run / "report.html").read_text()
