"""The ``ntkcheck`` command line: list, report, compare, export, and the bare command."""

from __future__ import annotations

import json
import os
import sys

import pandas as pd
import pytest
from runfactory import claim, make_run, records, save

from ntkcheck import __version__
from ntkcheck.cli import main
from ntkcheck.runs.store import RECORD_KEY, load_run

# The claim of test_plugin.py, whose metric is exact: value = 2 / sqrt(width); tolerance
# 0.1 holds from width 400, 0.05 fails up to 1024.
SYNTHETIC = '''
import pytest
from hypothesis import example, given
from ntkcheck import strategies
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="synthetic", statement="s", source="test", metric="2/sqrt(width)",
                   tolerance={tol}, rate=-0.5)
@given(spec=strategies.mlps(min_depth=1, max_depth=2))
@example(spec=ArchSpec(depth=1))
def test_synthetic(spec, ntk_widths, ntk_seeds, ntk_measure):
    for width in ntk_widths:
        for seed in ntk_seeds:
            ntk_measure(spec, width=width, seed=seed, value=2 / width ** 0.5 * (1 + 0.01 * seed))
'''
ARGS = ("--ntk-widths", "16,64,256,1024", "--ntk-seeds", "2", "--ntk-profile", "smoke",
        "-p", "no:cacheprovider")


@pytest.fixture
def reports(tmp_path):
    """Two stored runs: r-a where c1 holds, r-b (latest) where it fails."""
    folder = tmp_path / "reports"
    save(make_run("20250101-000000-aaaaaa"), folder)
    save(make_run("20250102-000000-bbbbbb", claims={"c1": claim(outcome="failed")},
                  recs=records(scale=4.0), started="2025-01-03T00:00:00+00:00"), folder)
    os.symlink("20250102-000000-bbbbbb", folder / "latest")
    return folder


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_bare_command_and_version(reports, capsys):
    code, out, _ = run_cli(capsys, "--reports", reports)
    assert code == 0 and f"ntkcheck {__version__}" in out
    assert "20250102-000000-bbbbbb" in out and "report.html" in out
    code, out, _ = run_cli(capsys, "--reports", reports / "none")
    assert code == 0 and "no report under" in out
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"ntkcheck {__version__}"


def test_list(reports, capsys):
    code, out, _ = run_cli(capsys, "list", "--reports", reports)
    assert code == 0
    lines = out.splitlines()
    assert "profile" in lines[0] and "passed" in lines[0] and "failed" in lines[0]
    assert lines[1].startswith("  20250101-000000-aaaaaa") and " 1 " in lines[1]
    assert lines[2].startswith("* 20250102-000000-bbbbbb")
    assert "2 run(s)" in lines[-1]
    code, out, _ = run_cli(capsys, "--reports", reports / "none", "list")
    assert code == 0 and "no runs under" in out


def test_compare_exit_codes(reports, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--reports", reports, "compare", "20250101-000000-aaaaaa",
                           "latest")
    assert code == 1
    assert "holds -> fails" in out and "claim 'c1' held in A but fails in B" in out
    code, out, _ = run_cli(capsys, "--reports", reports, "compare", "latest", "latest")
    assert code == 0 and "OK: no regression" in out
    code, _, _ = run_cli(capsys, "--reports", reports, "compare", "20250101-000000-aaaaaa",
                         "latest", "--fail-on", "slope=0.2", "--csv", tmp_path / "cmp.csv")
    assert code == 0  # the slope did not move; verdicts are not checked when not asked
    table = pd.read_csv(tmp_path / "cmp.csv")
    assert {"slope_change", "extrapolated_ratio", "status_a", "status_b"} <= set(table.columns)
    code, _, err = run_cli(capsys, "--reports", reports, "compare", "latest", "latest",
                           "--fail-on", "slope=big")
    assert code == 2 and "needs a number" in err
    code, _, err = run_cli(capsys, "--reports", reports, "compare", "latest", "missing")
    assert code == 2 and "no run 'missing'" in err


def test_report_rerenders_and_merges(reports, capsys, tmp_path):
    out_html = tmp_path / "out" / "one.html"
    code, out, _ = run_cli(capsys, "--reports", reports, "report", "latest", "-o", out_html)
    assert code == 0 and out_html.is_file() and "1 claim (theory setting): 1 failed" in out
    assert "20250102-000000-bbbbbb" in out_html.read_text()
    a = reports / "20250101-000000-aaaaaa"
    b = save(make_run("20250101-000001-cccccc", recs=records(depths=(2,))), reports)
    code, out, _ = run_cli(capsys, "report", a, b, "-o", tmp_path / "m.html", "--save",
                           tmp_path / "merged")
    assert code == 0 and "merged 2 runs" in out
    merged = load_run(tmp_path / "merged")
    assert merged.meta["merged_from"] == [a.name, b.name]
    assert set(merged.records["arch_id"]) == {"mlp-d1-relu", "mlp-d2-relu"}
    assert merged.claims["c1"]["outcome"] == "failed"  # depth 2 fails at the widest width
    assert "merged from 2 runs" in (tmp_path / "m.html").read_text()
    code, _, err = run_cli(capsys, "report", a)
    assert code == 2 and "-o OUT.html" in err


def test_export_csv_validated(reports, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--reports", reports, "export", "latest", "--format", "csv",
                           "-o", tmp_path / "csv")
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "csv").iterdir())
    assert names == ["records.csv", "verdicts.csv", "width_verdicts.csv"]
    assert len(out.splitlines()) == 3
    recs = pd.read_csv(tmp_path / "csv" / "records.csv")
    assert len(recs) == 8 and not recs.duplicated(list(RECORD_KEY)).any()
    assert pd.read_csv(tmp_path / "csv" / "verdicts.csv")["holds_at_widest"].tolist() == [False]


def test_export_parquet_without_pyarrow_says_how_to_install(reports, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    code, _, err = run_cli(capsys, "--reports", reports, "export", "latest", "--format",
                           "parquet", "-o", tmp_path / "pq")
    assert code == 2 and "pip install pyarrow" in err
    assert not (tmp_path / "pq").exists()


def test_export_parquet_round_trips(reports, capsys, tmp_path):
    pytest.importorskip("pyarrow")
    code, _, _ = run_cli(capsys, "--reports", reports, "export", "latest", "--format",
                         "parquet", "-o", tmp_path / "pq")
    assert code == 0
    recs = pd.read_parquet(tmp_path / "pq" / "records.parquet")
    assert len(recs) == 8 and recs["width"].dtype.kind == "i"
    verdicts = pd.read_parquet(tmp_path / "pq" / "verdicts.parquet")
    assert str(verdicts["rate_consistent"].dtype) == "boolean"


def test_compare_real_runs_of_the_plugin(pytester: pytest.Pytester, capsys) -> None:
    """Two plugin runs of one claim compare clean; a run where it was made to fail exits 1."""
    pytester.makepyfile(test_synthetic_cli=SYNTHETIC.format(tol=0.1))
    pytester.runpytest(*ARGS).assert_outcomes(passed=1)
    reports = pytester.path / "reports"
    first = (reports / "latest").resolve().name
    assert (reports / first / "claims.json").is_file()
    pytester.runpytest(*ARGS).assert_outcomes(passed=1)
    second = (reports / "latest").resolve().name
    pytester.makepyfile(test_synthetic_cli=SYNTHETIC.format(tol=0.05))  # now fails up to 1024
    pytester.runpytest(*ARGS).assert_outcomes(failed=1)
    code, out, _ = run_cli(capsys, "--reports", reports, "compare", first, second)
    assert code == 0, out
    code, out, _ = run_cli(capsys, "--reports", reports, "compare", first, "latest")
    assert code == 1, out
    assert "claim 'synthetic' held in A but fails in B" in out
    code, out, _ = run_cli(capsys, "--reports", reports, "list")
    assert code == 0 and len(out.splitlines()) == 1 + 3 + 1
    claims = json.loads((reports / "latest" / "claims.json").read_text())
    assert claims["synthetic"]["outcome"] == "failed" and claims["synthetic"]["tolerance"] == 0.05
