"""The pytest plugin, driven by real pytest runs (pytester), with and without xdist."""

import json
import math
from pathlib import Path

import pytest

# A claim whose metric is known exactly: value = 2 / sqrt(width) (slope -1/2), so the verdict
# logic is tested without depending on kernels. It holds from width 400 at tolerance 0.1.
SYNTHETIC = '''
import itertools
import pytest
from hypothesis import example, given
from ntkcheck import strategies
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="{cid}", statement="s", source="test", metric="2/sqrt(width)",
                   tolerance={tol}, rate=-0.5)
@given(spec=strategies.mlps(min_depth=1, max_depth=2))
@example(spec=ArchSpec(depth=1))
def test_{name}(spec, ntk_widths, ntk_seeds, ntk_measure):
    for width, seed in itertools.product(ntk_widths, ntk_seeds):
        ntk_measure(spec, width=width, seed=seed, value=2 / width ** 0.5 * (1 + 0.01 * seed))
'''


def _claim_file(cid: str, tol: float, name: str | None = None) -> str:
    return SYNTHETIC.format(cid=cid, tol=tol, name=name or cid.replace("-", "_"))


def _records(pytester: pytest.Pytester) -> list[dict]:
    path = pytester.path / "reports" / "latest" / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_claim_passes_and_writes_run_folder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=_claim_file("synthetic-a", 0.1))
    result = pytester.runpytest("--ntk-widths", "16,64,256,1024", "--ntk-seeds", "2",
                                "--ntk-profile", "smoke")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*ntkcheck verdicts*", "HOLDS*synthetic-a*holds from width 1,024*",
                                 "*records; report:*report.html"])
    run = pytester.path / "reports" / "latest"
    assert run.is_symlink() or run.is_dir()
    for name in ("records.jsonl", "records.csv", "verdicts.csv", "width_verdicts.csv",
                 "meta.json", "report.html"):
        assert (run / name).is_file(), name
    records = _records(pytester)
    archs = {r["arch_id"] for r in records}
    assert len(records) == len(archs) * 4 * 2
    assert {r["width"] for r in records} == {16, 64, 256, 1024}
    meta = json.loads((run / "meta.json").read_text())
    assert meta["profile"] == "smoke" and meta["widths"] == [16, 64, 256, 1024]
    assert meta["n_records"] == len(records)
    verdicts = (run / "verdicts.csv").read_text()
    assert "synthetic-a" in verdicts


def test_claim_fails_at_widest_width_with_one_line_reason(pytester: pytest.Pytester) -> None:
    # 2/sqrt(1024) = 0.0625 > 0.05: fails at the widest width, extrapolated to hold at 1600.
    pytester.makepyfile(test_b=_claim_file("synthetic-b", 0.05))
    result = pytester.runpytest("--ntk-widths", "16,64,256,1024", "--ntk-seeds", "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*claim 'synthetic-b' does not hold at the widest width (needs metric <= 0.05)*",
        "*fails at every width up to 1,024; extrapolated to hold at ~1,600; "
        "fitted slope -0.50 * vs predicted -0.50 (consistent)*",
    ])


def test_records_reach_controller_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=_claim_file("synthetic-a", 0.1),
                        test_b=_claim_file("synthetic-b", 0.05))
    result = pytester.runpytest("-n", "2", "--ntk-widths", "16,64,256,1024", "--ntk-seeds",
                                "2", "--ntk-profile", "smoke")
    result.assert_outcomes(passed=1, failed=1)
    records = _records(pytester)
    assert {r["claim_id"] for r in records} == {"synthetic-a", "synthetic-b"}
    per_claim = {c: [r for r in records if r["claim_id"] == c] for c in ("synthetic-a",
                                                                            "synthetic-b")}
    for rows in per_claim.values():
        archs = {r["arch_id"] for r in rows}
        assert len(rows) == len(archs) * 4 * 2
    html = (pytester.path / "reports" / "latest" / "report.html").read_text()
    assert "synthetic-a" in html and "synthetic-b" in html


def test_crashed_worker_keeps_other_claims_records(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=_claim_file("synthetic-a", 0.1))
    pytester.makepyfile(test_crash='''
import os
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="crashes", statement="s", source="test", metric="m", tolerance=1.0)
def test_crash(ntk_widths, ntk_measure):
    ntk_measure(ArchSpec(depth=1), width=ntk_widths[0], seed=0, value=0.5)
    os._exit(1)  # the worker dies mid-claim
''')
    result = pytester.runpytest("-n", "2", "--ntk-widths", "16,64,256,1024", "--ntk-seeds", "1")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1 and outcomes.get("failed") == 1
    records = _records(pytester)
    # the dying worker's finished measurement survives in its part file (issue 10)
    assert {r["claim_id"] for r in records} == {"synthetic-a", "crashes"}
    assert len(records) >= 3
    html = (pytester.path / "reports" / "latest" / "report.html").read_text()
    assert "test_crash" in html  # the crashed claim is listed, not silently dropped


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('id="x", statement="s", source="s", metric="m", tolerance=0.1, colour="red"',
         "unknown key(s) ['colour']"),
        ('statement="s", source="s", metric="m", tolerance=0.1',
         "missing required key(s) ['id']"),
        ('id="x", statement="s", source="s", metric="m", tolerance="small"',
         "tolerance must be a finite number, got 'small'"),
        ('id="Bad Id", statement="s", source="s", metric="m", tolerance=0.1',
         "must be a non-empty"),
    ],
)
def test_invalid_marker_is_a_collection_error(pytester: pytest.Pytester, marker: str,
                                              message: str) -> None:
    pytester.makepyfile(f'''
import pytest

@pytest.mark.claim({marker})
def test_bad(ntk_measure):
    pass
''')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting*"])
    assert message in result.stdout.str()


def test_measure_without_marker_and_nan_value(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
import math
import pytest
from ntkcheck.arch import ArchSpec

def test_unmarked(ntk_measure):
    pass

@pytest.mark.claim(id="nan", statement="s", source="s", metric="m", tolerance=0.1)
def test_nan(ntk_measure):
    ntk_measure(ArchSpec(depth=1), width=8, seed=0, value=math.nan)
''')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1, failed=1)
    result.stdout.fnmatch_lines(["*uses `ntk_measure` but has no @pytest.mark.claim*",
                                 "*measured a non-finite value (nan)*"])


def test_claim_without_measurements_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
import pytest

@pytest.mark.claim(id="empty", statement="s", source="s", metric="m", tolerance=0.1)
def test_empty(ntk_measure):
    pass
''')
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*recorded no measurements*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ntk-widths", "64,abc"], "*'abc' is not an integer*"),
        (["--ntk-widths", "0,64"], "*width 0 must be a positive integer*"),
        (["--ntk-profile", "huge"], "*unknown ntkcheck profile 'huge'*"),
        (["--ntk-seeds", "0"], "*--ntk-seeds must be at least 1*"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: list[str],
                                      message: str) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_ini_keys_set_defaults(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nntk_widths = 8,32,128\nntk_seeds = 1\nntk_report = out\n")
    pytester.makepyfile(test_a=_claim_file("synthetic-a", 10.0))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    records = [json.loads(x) for x in
               (pytester.path / "out" / "latest" / "records.jsonl").read_text().splitlines()]
    assert {r["width"] for r in records} == {8, 32, 128}
    assert {r["seed"] for r in records} == {0}


def test_non_claim_runs_write_no_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    assert 1\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()


def test_records_are_finite_builtin_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=_claim_file("synthetic-a", 0.1))
    pytester.runpytest("--ntk-widths", "16,64,256", "--ntk-seeds", "1")
    for rec in _records(pytester):
        assert all(isinstance(v, (int, float, str, bool)) or v is None for v in rec.values())
        assert math.isfinite(rec["value"]) and rec["elapsed_s"] >= 0
        assert rec["run_id"] == Path(pytester.path / "reports" / "latest").resolve().name


def test_failing_claim_shrinks_to_the_simplest_failing_architecture(pytester: pytest.Pytester
                                                                     ) -> None:
    # A claim written to fail for depth >= 3: Hypothesis shrinks to a depth-3 spec, the report
    # shows it, and the failure is the claim's message, not a flaky-replay error.
    pytester.makepyfile('''
import pytest
from hypothesis import given
from ntkcheck import strategies

@pytest.mark.claim(id="fails-deep", statement="s", source="test", metric="m", tolerance=0.5)
@given(spec=strategies.mlps(min_depth=1, max_depth=4, activations=("relu", "erf")))
def test_deep(spec, ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(spec, width=width, seed=seed, value=1.0 if spec.depth >= 3 else 0.1)
''')
    result = pytester.runpytest("--ntk-profile", "quick", "--ntk-widths", "8,16,32",
                                "--ntk-seeds", "1", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "Flaky" not in out and "Inconsistent results" not in out
    assert "claim 'fails-deep' does not hold at the widest width" in out
    # reported as the verdict and the shrunk architecture, not a Hypothesis traceback
    # (the failure section, and again the short summary, which CI=1 does not truncate)
    lines = [ln for ln in out.splitlines() if ln.startswith("failing architecture")]
    assert lines and all(ln.startswith("failing architecture (shrunk by Hypothesis): ArchSpec(")
                         and "depth=3," in ln for ln in lines)
    assert "Traceback" not in out and "def test_deep" not in out
    claims = json.loads((pytester.path / "reports" / "latest" / "claims.json").read_text())
    shrunk = claims["fails-deep"]["shrunk_spec"]
    assert "depth=3" in shrunk and "activation='relu'" in shrunk
    (test,) = claims["fails-deep"]["tests"]
    assert test["shrunk_kind"] == "shrunk" and test["shrunk_spec"] == shrunk
    html = (pytester.path / "reports" / "latest" / "report.html").read_text()
    assert "Smallest failing architecture found by Hypothesis (shrunk)" in html


def test_run_folder_judges_trend_claims_like_the_test(pytester: pytest.Pytester) -> None:
    # A semilog trend claim whose metric does not decrease: the test fails, and the run's
    # verdict table and summary must say the same (claims are rebuilt with scale and trend).
    pytester.makepyfile(test_trend='''
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="flat-trend", statement="s", source="test", metric="m", tolerance=1.0,
                   scale="semilog", trend="decreasing")
def test_flat(ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=0.5 + 0.01 * seed)
''')
    result = pytester.runpytest("--ntk-widths", "8,16,32,64", "--ntk-seeds", "2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILS*flat-trend*"])
    verdicts = (pytester.path / "reports" / "latest" / "verdicts.csv").read_text()
    assert "flat-trend" in verdicts
    header, row = verdicts.splitlines()[:2]
    assert dict(zip(header.split(","), row.split(",")))["holds_at_widest"] == "False"


def test_a_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nntk_widths = 64;128\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'64;128' is not an integer*(set in the ini file: "
                                 "ntk_widths = '64;128')*"])
