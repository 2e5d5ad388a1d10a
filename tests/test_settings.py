"""Theory and practical settings, every test of a claim, failing architectures, capped cells.

Real pytest runs (pytester) of small synthetic claims: a claim with a theory test that holds
and a practical test (``setting="practical"``) that does not; a claim with two theory tests
of which one fails on a pinned example; and the report and CLI reading those runs and runs
written before settings and per-test entries existed.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from runfactory import claim, make_run, records, save
from test_report import parse

from ntkcheck.claim import record_schema
from ntkcheck.cli import main
from ntkcheck.report import render_report
from ntkcheck.runs.outcomes import claim_tests, headline
from ntkcheck.runs.store import claim_status, list_runs, load_run, merge_runs, practical_status

ARGS = ("--ntk-widths", "16,64,256,1024", "--ntk-seeds", "1", "--ntk-profile", "smoke",
        "-p", "no:randomly")

# value = 2 / sqrt(width): holds at tolerance 0.1 from width 400 (theory test, depth 1); the
# practical test measures 4x that on another architecture and fails at 1024 (0.125).
THEORY_AND_PRACTICAL = '''
import pytest
from ntkcheck.arch import ArchSpec

CLAIM = dict(id="mixed", statement="s", source="test", metric="m", tolerance=0.1, rate=-0.5)

@pytest.mark.claim(**CLAIM)
def test_theory(ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=2 / width ** 0.5)

@pytest.mark.claim(**CLAIM, setting="practical")
def test_theory_practical(ntk_sweep, ntk_measure):
    spec = ArchSpec(depth=1, parametrization="standard")
    for width, seed in ntk_sweep:
        ntk_measure(spec, width=width, seed=seed, value=8 / width ** 0.5)
'''

# Two theory tests of one claim: the Hypothesis one fails on its pinned example (depth 2), the
# other passes; then a test that fails on a drawn architecture and is shrunk (quick profile).
PINNED = '''
import pytest
from hypothesis import example, given
from ntkcheck import strategies
from ntkcheck.arch import ArchSpec

CLAIM = dict(id="two-tests", statement="s", source="test", metric="m", tolerance=0.5)

@pytest.mark.claim(**CLAIM)
@given(spec=strategies.mlps(min_depth=1, max_depth=2))
@example(spec=ArchSpec(depth=2, activation="erf"))
def test_mlp(spec, ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(spec, width=width, seed=seed, value=1.0 if spec.depth >= 2 else 0.1)

@pytest.mark.claim(**CLAIM)
def test_mlp_other(ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1, activation="gelu"), width=width, seed=seed, value=0.1)
'''


def _run(pytester: pytest.Pytester):
    return pytester.path / "reports" / "latest"


@pytest.fixture(params=["n0", "n2"])
def practical_run(request, pytester: pytest.Pytester):
    pytester.makepyfile(test_mixed=THEORY_AND_PRACTICAL)
    workers = ("-n", "2") if request.param == "n2" else ()
    result = pytester.runpytest(*workers, *ARGS)
    return result, _run(pytester)


def test_a_bad_setting_is_a_collection_error_naming_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad='''
import pytest

@pytest.mark.claim(id="x", statement="s", source="s", metric="m", tolerance=0.1,
                   setting="lab")
def test_bad_setting(ntk_measure):
    pass
''')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "setting must be one of ('theory', 'practical'), got 'lab'" in out
    assert "test_bad.py::test_bad_setting" in out


def test_practical_failure_is_tagged_and_does_not_decide_the_claim(practical_run) -> None:
    result, run = practical_run
    result.assert_outcomes(passed=1, failed=1)  # the practical test still fails: a finding
    out = result.stdout.str()
    assert "does not hold at the widest width in its practical setting" in out
    result.stdout.fnmatch_lines([
        "HOLDS  mixed * mlp-d1-relu-ntk-b * holds from width*",
        "FAILS  mixed * mlp-d1-relu-standard-b-practical [[]practical[]] fails at*",
        "1 claim (theory setting): 1 passed; practical setting of 1 claim: 1 failed; "
        "2 tests: 1 passed, 1 failed (1 of them in a practical setting)",
    ])
    recs = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    assert {(r["arch_id"], r["setting"]) for r in recs} == {
        ("mlp-d1-relu-ntk-b", "theory"), ("mlp-d1-relu-standard-b-practical", "practical")}
    assert "setting" in pd.read_csv(run / "records.csv").columns
    claims = json.loads((run / "claims.json").read_text())
    c = claims["mixed"]
    assert c["outcome"] == "passed" and c["practical_outcome"] == "failed"
    assert c["nodeid"] == "test_mixed.py::test_theory" and c["longrepr"] is None
    tests = {t["nodeid"].split("::")[1]: t for t in c["tests"]}
    assert {k: (t["setting"], t["outcome"]) for k, t in tests.items()} == {
        "test_theory": ("theory", "passed"), "test_theory_practical": ("practical", "failed")}
    assert all(t["duration_s"] > 0 for t in tests.values())
    assert "practical setting" in tests["test_theory_practical"]["longrepr"]


def test_report_tags_practical_rows_and_lists_every_test(practical_run) -> None:
    _, run = practical_run
    doc = parse(run / "report.html")
    rows = {r.attrs["data-arch"]: r
            for r in doc.find("table", id="overview").find_all("tr", cls="grid-row")}
    assert rows["mlp-d1-relu-standard-b-practical"].attrs["data-setting"] == "practical"
    assert "practical" in rows["mlp-d1-relu-standard-b-practical"].classes
    badge = rows["mlp-d1-relu-standard-b-practical"].find("span", cls="practical")
    assert "practical" in badge.all_text()
    assert rows["mlp-d1-relu-ntk-b"].attrs["data-setting"] == "theory"
    assert not list(rows["mlp-d1-relu-ntk-b"].find_all("span", cls="practical"))
    counts = doc.find("div", id="counts")
    assert {b.attrs["data-outcome"]: b.all_text()
            for b in counts.find_all("span", cls="badge") if "data-outcome" in b.attrs} == {
        "passed": "1 passed", "failed": "0 failed"}
    assert counts.find("span", cls="badge", **{"data-practical-outcome": "failed"}).all_text() \
        == "1 failed"
    tests = doc.find("div", id="test-counts")
    assert "2 tests" in tests.all_text() and "1 of them in a practical setting" in tests.all_text()
    section = doc.find("section", id="mixed")
    heading = section.find("h3").all_text()
    assert "theory: passed" in heading and "practical: failed" in heading
    test_rows = list(section.find("table", cls="tests").find("tbody").find_all("tr"))
    assert [r.attrs["data-setting"] for r in test_rows] == ["theory", "practical"]
    failure = section.find("div", cls="test-failure")
    assert failure.attrs["data-nodeid"].endswith("::test_theory_practical")
    fits = {r.attrs["data-setting"] for r in section.find("table", cls="fits").find_all(
        "tr") if "data-setting" in r.attrs}
    assert fits == {"theory", "practical"}
    times = list(doc.find("table", id="claim-times").find("tbody").find_all("tr"))
    assert [t.find("code").all_text().split("::")[1] for t in times] == [
        "test_theory", "test_theory_practical"]


def test_cli_and_compare_judge_claims_by_their_theory_setting(practical_run, capsys) -> None:
    _, run = practical_run
    loaded = load_run(run)
    assert claim_status(loaded, "mixed") == "holds"
    assert practical_status(loaded, "mixed") == "fails"
    table = list_runs(run.parent)
    row = table.iloc[-1]
    assert (row["tests"], row["passed"], row["failed"], row["practical_failed"]) == (2, 1, 0, 1)
    assert main(["--reports", str(run.parent), "compare", str(run), str(run)]) == 0
    assert "OK: no regression" in capsys.readouterr().out


def test_failing_architecture_is_shown_next_to_its_test_and_labelled_pinned(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_two=PINNED)
    result = pytester.runpytest(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    run = _run(pytester)
    c = json.loads((run / "claims.json").read_text())["two-tests"]
    tests = {t["nodeid"].split("::")[1]: t for t in c["tests"]}
    assert tests["test_mlp"]["shrunk_kind"] == "pinned"
    assert "depth=2" in tests["test_mlp"]["shrunk_spec"]
    assert tests["test_mlp_other"]["shrunk_spec"] is None
    assert c["shrunk_spec"] is None  # nothing was shrunk
    section = parse(run / "report.html").find("section", id="two-tests")
    failures = list(section.find_all("div", cls="test-failure"))
    assert len(failures) == 1 and failures[0].attrs["data-nodeid"].endswith("::test_mlp")
    label = failures[0].find("p", cls="shrunk-label").all_text()
    assert "pinned example" in label and "Smallest" not in label
    assert "depth=2" in failures[0].find("pre", cls="shrunk-spec").all_text()
    assert "found by Hypothesis" not in section.all_text()


def test_capped_cells_carry_the_reason_in_their_tooltip(tmp_path) -> None:
    recs = records()
    capped = recs[recs["width"] == 1024].assign(
        status="capped", value=float("nan"),
        reason="width 1024 is above the cap 256 (the profile's cnn_max_width)")
    recs = pd.concat([recs[recs["width"] != 1024], capped], ignore_index=True)
    run = make_run("r1", recs=recs)
    wv, av = run.verdicts()
    doc = parse(render_report(run.records, wv, av, run.claims, run.meta, tmp_path / "r.html"))
    cells = list(doc.find("table", id="overview").find("tr", cls="grid-row").find_all(
        "td", cls="cell"))
    assert cells[-1].all_text() == "not measured: above the width cap"
    assert cells[-1].attrs["title"] == ("not measured: above the width cap (width 1024 is "
                                        "above the cap 256 (the profile's cnn_max_width))")


def test_old_runs_without_settings_or_tests_still_load_merge_and_render(tmp_path) -> None:
    # claims.json and records of a run written before `setting` and `tests` existed
    old = make_run("20250101-000000-aaaaaa", recs=records(depths=(1, 2)),
                   claims={"c1": claim(outcome="failed", longrepr="boom")})
    assert "setting" not in old.records.columns and "tests" not in old.claims["c1"]
    folder = save(old, tmp_path)
    loaded = load_run(folder)
    assert claim_tests(loaded.claims["c1"])[0]["setting"] == "theory"
    assert claim_status(loaded, "c1") == "fails" and practical_status(loaded, "c1") is None
    assert headline(loaded.claims) == "1 claim (theory setting): 1 failed; 1 test: 1 failed"
    doc = parse(folder / "report.html")
    assert doc.find("section", id="c1").find("pre", cls="longrepr").all_text() == "boom"
    # merged with a new run whose practical test measured another architecture
    new_recs = pd.concat([records(depths=(1,)),
                          records(depths=(3,)).assign(setting="practical",
                                                      nodeid="test_x.py::test_c1_practical")],
                         ignore_index=True)
    new_recs.loc[new_recs["setting"].isna(), "setting"] = "theory"
    new = make_run("20250102-000000-bbbbbb", recs=new_recs, claims={"c1": claim(tests=[
        {"nodeid": "test_x.py::test_c1", "setting": "theory", "outcome": "passed",
         "duration_s": 1.0},
        {"nodeid": "test_x.py::test_c1_practical", "setting": "practical",
         "outcome": "failed", "duration_s": 2.0}])})
    merged = merge_runs([load_run(folder), new])
    c = merged.claims["c1"]
    tests = {t["nodeid"]: t for t in c["tests"]}
    assert tests["test_x.py::test_c1"]["outcome"] == "failed"  # depth 2 fails at 1024
    assert tests["test_x.py::test_c1_practical"]["outcome"] == "failed"
    assert c["outcome"] == "failed" and c["practical_outcome"] == "failed"
    assert c["duration_s"] == 4.0
    assert claim_status(merged, "c1") == "fails" and practical_status(merged, "c1") == "fails"
    assert merged.records["setting"].isna().sum() == len(old.records)
    out = tmp_path / "m.html"
    wv, av = merged.verdicts()
    doc = parse(render_report(merged.records, wv, av, merged.claims, merged.meta, out))
    practical_rows = [r.attrs["data-arch"] for r in doc.find(
        "table", id="overview").find_all("tr", cls="grid-row")
        if r.attrs["data-setting"] == "practical"]
    assert practical_rows == ["mlp-d3-relu"]


def test_record_schema_checks_the_setting_column() -> None:
    recs = records()
    record_schema().validate(recs)  # no setting column: theory
    record_schema().validate(recs.assign(setting="practical"))
    with pytest.raises(Exception, match="isin"):
        record_schema().validate(recs.assign(setting="lab"))


SAME_NETWORK = '''
import pytest
from ntkcheck.arch import ArchSpec

CLAIM = dict(id="same", statement="s", source="test", metric="m", tolerance=0.1)

@pytest.mark.claim(**CLAIM)
def test_gd(ntk_sweep, ntk_measure):  # theory: holds
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=0.01)

@pytest.mark.claim(**CLAIM, setting="practical")
def test_adam(ntk_sweep, ntk_measure):  # the same network, trained otherwise: fails
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=1.0)

@pytest.mark.claim(id="only-practical", statement="s", source="t", metric="m",
                   tolerance=0.1, setting="practical")
def test_only_practical(ntk_sweep, ntk_measure):
    for width, seed in ntk_sweep:
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=0.01)
'''


def test_same_network_in_both_settings_is_two_rows_and_survives_a_merge(pytester) -> None:
    """A practical test on the theory test's architecture gets its own ``-practical`` row:
    not pooled into one verdict, not dropped as a duplicate when the run is read or merged;
    a claim with practical tests only is not counted as a theory claim."""
    pytester.makepyfile(test_same=SAME_NETWORK)
    result = pytester.runpytest(*ARGS)
    result.assert_outcomes(passed=2, failed=1)  # the practical test fails: a finding
    result.stdout.fnmatch_lines([
        "HOLDS  same * mlp-d1-relu-ntk-b * holds at every width swept*",
        "FAILS  same * mlp-d1-relu-ntk-b-practical * [[]practical[]] fails at every width*",
        "1 claim (theory setting): 1 passed; practical setting of 2 claims: *",
    ])
    loaded = load_run(_run(pytester))
    both = loaded.records[loaded.records["claim_id"] == "same"]
    assert sorted(both["arch_id"].unique()) == ["mlp-d1-relu-ntk-b", "mlp-d1-relu-ntk-b-practical"]
    assert len(both) == 8  # 4 widths x 1 seed x 2 settings, none deduplicated away
    assert claim_status(loaded, "same") == "holds" and practical_status(loaded, "same") == "fails"
    merged = merge_runs([loaded, load_run(_run(pytester))])
    assert len(merged.records[merged.records["claim_id"] == "same"]) == 8
