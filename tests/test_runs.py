"""Loading, merging, writing and listing stored runs (ntkcheck.runs.store), and comparing them."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from runfactory import claim, make_run, records, save

from ntkcheck.claim import arch_verdict_schema, width_verdict_schema
from ntkcheck.runs.compare import FailOn, compare_runs, parse_fail_on
from ntkcheck.runs.store import (
    RECORD_KEY,
    RunError,
    claim_status,
    list_runs,
    load_run,
    merge_runs,
    resolve_run,
    resolve_runs,
)


def _key_sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(RECORD_KEY)).reset_index(drop=True)


# ----------------------------------------------------------------------------- find and load


def test_resolve_folder_id_latest_pointer_and_report(tmp_path):
    reports = tmp_path / "reports"
    a = save(make_run("20250101-000000-aaaaaa"), reports)
    b = save(make_run("20250102-000000-bbbbbb"), reports)
    os.symlink(b.name, reports / "latest", target_is_directory=True)
    assert resolve_run(str(a), reports) == a
    assert resolve_run(a.name, reports) == reports / a.name
    assert resolve_run("latest", reports).resolve() == b.resolve()
    assert resolve_run(b / "report.html", reports) == b / "report.html"
    (reports / "latest").unlink()
    (reports / "latest").mkdir()  # where symlinks are unavailable the plugin writes RUN
    (reports / "latest" / "RUN").write_text(a.name + "\n")
    assert resolve_run("latest", reports) == reports / a.name
    assert [p.name for p in [a, b]] == list(list_runs(reports)["run_id"])


def test_a_folder_of_runs_stands_for_its_runs(tmp_path):
    a = save(make_run("20250101-000000-aaaaaa"), tmp_path / "job")
    b = save(make_run("20250101-000001-bbbbbb"), tmp_path / "job")
    os.symlink(b.name, tmp_path / "job" / "latest", target_is_directory=True)
    assert resolve_runs([tmp_path / "job"]) == [a, b]
    assert resolve_runs([a, str(a), tmp_path / "job"], tmp_path) == [a, b]
    with pytest.raises(RunError, match="no run"):
        resolve_runs([tmp_path / "job", "nope"], tmp_path)


def test_resolve_unknown_run_names_the_stored_ones(tmp_path):
    save(make_run("20250101-000000-aaaaaa"), tmp_path)
    with pytest.raises(RunError, match="no run 'nope'.*20250101-000000-aaaaaa"):
        resolve_run("nope", tmp_path)
    with pytest.raises(RunError, match="run `pytest claims/` first"):
        resolve_run("latest", tmp_path / "empty")


def test_folder_and_report_html_load_the_same_run(tmp_path):
    folder = save(make_run("r1", claims={"c1": claim(shrunk_spec="ArchSpec(depth=1)")}), tmp_path)
    from_folder = load_run(folder)
    only_html = tmp_path / "copy.html"
    shutil.copy(folder / "report.html", only_html)
    from_html = load_run(only_html)
    assert from_html.claims == from_folder.claims
    assert from_html.meta == from_folder.meta
    a, b = _key_sorted(from_folder.records), _key_sorted(from_html.records)
    assert list(a["arch_id"]) == list(b["arch_id"])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-15)
    pd.testing.assert_frame_equal(from_folder.verdicts()[1], from_html.verdicts()[1])


def test_claims_come_from_the_report_when_claims_json_is_missing(tmp_path):
    folder = save(make_run("r1"), tmp_path)
    (folder / "claims.json").unlink()  # runs written before claims.json existed
    run = load_run(folder)
    assert run.claims["c1"]["tolerance"] == 0.1 and run.claims["c1"]["outcome"] == "passed"
    assert len(run.verdicts()[1]) == 1


def test_truncated_last_record_line_is_skipped(tmp_path):
    folder = save(make_run("r1"), tmp_path)
    n = len(load_run(folder).records)
    with open(folder / "records.jsonl", "a") as fh:
        fh.write('{"run_id": "r1", "claim_id": "c1", "wid')  # a run killed mid-write
    assert len(load_run(folder).records) == n


def test_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not an ntkcheck run"):
        load_run(tmp_path)
    page = tmp_path / "other.html"
    page.write_text("<html><body>hello</body></html>")
    with pytest.raises(RunError, match="not an ntkcheck report"):
        load_run(page)


# ----------------------------------------------------------------------------- merge


def test_merge_concatenates_validates_and_deduplicates():
    full = records(depths=(1, 2))
    a = make_run("a", recs=full[full["width"] <= 64])
    b = make_run("b", recs=full[full["width"] >= 64])  # width 64 in both
    merged = merge_runs([a, b])
    assert len(merged.records) == len(full)
    assert merged.meta["duplicates_dropped"] == 2 * 2  # width 64: 2 archs x 2 seeds
    assert set(merged.records[merged.records["width"] == 64]["run_id"]) == {"a"}  # first kept
    assert merged.meta["merged_from"] == ["a", "b"]
    assert merged.meta["run_id"].startswith("merged-")
    assert merged.meta["n_records"] == len(full)
    assert not merged.records.duplicated(list(RECORD_KEY)).any()


def test_merge_recomputes_each_claims_outcome_from_all_records():
    # Each shard alone (as a sharded run reports) passes; merged, depth 2 fails at 1024.
    full = records(depths=(1, 2))
    a = make_run("a", recs=full[full["seed"] == 0])
    b = make_run("b", recs=full[full["seed"] == 1])
    merged = merge_runs([a, b])
    assert merged.claims["c1"]["outcome"] == "failed"
    assert "mlp-d2-relu" in merged.claims["c1"]["longrepr"]
    assert merged.claims["c1"]["duration_s"] == 2.0
    assert claim_status(merged, "c1") == "fails"
    ok = merge_runs([make_run("a", recs=records(seeds=(0,))),
                     make_run("b", recs=records(seeds=(1,)))])
    assert ok.claims["c1"]["outcome"] == "passed" and ok.claims["c1"]["longrepr"] is None


def test_merge_keeps_a_measured_record_over_an_unmeasured_one():
    recs = records()
    oom = recs.copy()
    oom.loc[oom["width"] == 1024, "value"] = math.nan
    oom.loc[oom["width"] == 1024, "status"] = "oom"
    merged = merge_runs([make_run("a", recs=oom), make_run("b", recs=recs)])
    wide = merged.records[merged.records["width"] == 1024]
    assert list(wide["status"]) == ["measured"] * 2 and set(wide["run_id"]) == {"b"}
    assert merged.meta["duplicates_dropped"] == len(recs)


def test_merge_refuses_different_tolerances_and_bad_records():
    with pytest.raises(RunError, match="claim 'c1' has tolerance 0.1 in run a but 0.2"):
        merge_runs([make_run("a"), make_run("b", claims={"c1": claim(tolerance=0.2)})])
    bad = records()
    bad.loc[0, "width"] = 0
    with pytest.raises(RunError, match="record schema"):
        merge_runs([make_run("a"), make_run("b", recs=bad)])
    with pytest.raises(RunError, match=r"claim\(s\) \['c9'\] but no claim metadata"):
        merge_runs([make_run("a"), make_run("b", recs=records(cid="c9"))])
    with pytest.raises(RunError, match="no runs"):
        merge_runs([])


def test_merge_meta_spans_the_runs_and_notes_missing_shards():
    a = make_run("a", shard="0/3", started="2025-01-02T03:00:00+00:00", device="cuda:0",
                 widths=[16, 64])
    b = make_run("b", shard="2/3", finished="2025-01-02T04:00:00+00:00", widths=[256, 1024])
    meta = merge_runs([a, b]).meta
    assert meta["started"] == "2025-01-02T03:00:00+00:00"
    assert meta["finished"] == "2025-01-02T04:00:00+00:00"
    assert meta["duration_s"] == 120.0
    assert meta["widths"] == [16, 64, 256, 1024]
    assert meta["device"] == ["cuda:0", "cpu"] and meta["profile"] == "smoke"
    assert meta["shard"] == ["0/3", "2/3"] and meta["shards_missing"] == ["1/3"]


def test_merged_run_writes_and_reloads(tmp_path):
    merged = merge_runs([make_run("a", recs=records(seeds=(0,))),
                         make_run("b", recs=records(seeds=(1,)))])
    folder = save(merged, tmp_path)
    back = load_run(folder)
    assert back.meta["merged_from"] == ["a", "b"]
    assert json.loads((folder / "claims.json").read_text())["c1"]["outcome"] == "passed"
    for name in ("records.jsonl", "records.csv", "verdicts.csv", "width_verdicts.csv",
                 "meta.json", "report.html"):
        assert (folder / name).is_file()
    pd.testing.assert_frame_equal(back.verdicts()[1], merged.verdicts()[1])


# ----------------------------------------------------------------------------- list


def test_list_runs_counts_records_and_outcomes(tmp_path):
    save(make_run("20250101-000000-aaaaaa"), tmp_path)
    failed = {"c1": claim(outcome="failed"), "c2": claim("c2", outcome="error")}
    save(make_run("20250102-000000-bbbbbb", claims=failed,
                  started="2025-01-03T00:00:00+00:00"), tmp_path)
    os.symlink("20250102-000000-bbbbbb", tmp_path / "latest")
    table = list_runs(tmp_path)
    assert list(table["run_id"]) == ["20250101-000000-aaaaaa", "20250102-000000-bbbbbb"]
    first, second = table.to_dict("records")
    assert (first["records"], first["passed"], first["failed"]) == (8, 1, 0)
    assert (second["passed"], second["failed"], second["latest"]) == (0, 2, True)
    assert first["commit"] == "0123456789" and first["device"] == "cpu"
    assert list_runs(tmp_path / "none").empty


# ----------------------------------------------------------------------------- verdict schemas


def test_verdict_schemas_accept_computed_verdicts_and_reject_duplicates():
    wv, av = make_run().verdicts()
    assert width_verdict_schema(["c1"]).validate(wv)["holds"].dtype == bool
    assert str(arch_verdict_schema(["c1"]).validate(av)["rate_consistent"].dtype) == "boolean"
    with pytest.raises(Exception, match="duplicate|unique"):
        width_verdict_schema().validate(pd.concat([wv, wv]))
    with pytest.raises(Exception, match="isin"):
        arch_verdict_schema(["other"]).validate(av)


# ----------------------------------------------------------------------------- compare


def test_compare_identical_runs_has_no_changes():
    a, b = make_run("a"), make_run("b")
    cmp = compare_runs(a, b)
    assert list(cmp.claims["change"]) == [""]
    assert (cmp.archs["change"] == "").all()
    assert (cmp.archs["slope_change"].abs() < 1e-12).all()
    assert cmp.failures(FailOn(verdict=True, slope=1e-6, extrapolated=1.001)) == []


def test_compare_flags_a_claim_that_stopped_holding():
    a = make_run("a")
    b = make_run("b", recs=records(scale=4.0))  # 4/sqrt(1024) = 0.125 > 0.1
    cmp = compare_runs(a, b)
    assert cmp.claims.iloc[0][["status_a", "status_b", "change"]].tolist() == [
        "holds", "fails", "holds -> fails"]
    row = cmp.archs.iloc[0]
    assert row["change"] == "holds -> fails"
    assert row["extrapolated_ratio"] == pytest.approx(4.0)  # (4/2)^2: needs 4x the width
    assert row["slope_change"] == pytest.approx(0.0, abs=1e-9)
    assert cmp.failures(FailOn()) == ["claim 'c1' held in A but fails in B"]
    assert cmp.failures(FailOn(verdict=False, slope=0.2)) == []
    [line] = cmp.failures(FailOn(verdict=False, extrapolated=3.0))
    assert "width needed grew 4x" in line
    # The reverse direction is an improvement, not a regression.
    assert compare_runs(b, a).failures(FailOn(extrapolated=3.0)) == []


def test_compare_slope_threshold_and_new_or_gone_archs():
    flatter = records()
    # slope -0.3: still holds (steeper than half the predicted -0.5, so the rate rule passes)
    flatter["value"] = 0.05 * (flatter["width"] / 16.0) ** -0.3
    cmp = compare_runs(make_run("a"), make_run("b", recs=flatter))
    assert cmp.archs.iloc[0]["slope_change"] == pytest.approx(0.2, abs=0.01)
    assert cmp.failures(FailOn()) == []
    assert "fitted slope moved by +0.2" in cmp.failures(FailOn(slope=0.1))[0]
    # slope -0.1, below the tolerance: the rate contradicts the prediction, a regression
    flat = records()
    flat["value"] = 0.05 * (flat["width"] / 16.0) ** -0.1
    cmp = compare_runs(make_run("a"), make_run("b", recs=flat))
    assert cmp.failures(FailOn()) == ["claim 'c1' held in A but fails in B"]
    cmp = compare_runs(make_run("a"), make_run("b", recs=records(depths=(1, 3))))
    new = cmp.archs[cmp.archs["arch_id"] == "mlp-d3-relu"].iloc[0]
    assert new["verdict_a"] == "absent" and new["change"] == "new"
    assert cmp.failures(FailOn()) == ["claim 'c1' held in A but fails in B"]


def test_compare_claim_that_errors_or_disappears():
    errored = make_run("b", claims={"c1": claim(outcome="error")}, recs=records().iloc[:0])
    cmp = compare_runs(make_run("a"), errored)
    assert cmp.claims.iloc[0]["status_b"] == "error"
    assert cmp.failures(FailOn()) == ["claim 'c1' held in A but error in B"]
    gone = make_run("b", claims={"c2": claim("c2")}, recs=records(cid="c2"))
    cmp = compare_runs(make_run("a"), gone)
    assert dict(zip(cmp.claims["claim_id"], cmp.claims["change"])) == {"c1": "gone",
                                                                          "c2": "new"}
    assert cmp.failures(FailOn()) == []


def test_parse_fail_on():
    assert parse_fail_on(None) == FailOn(verdict=True)
    assert parse_fail_on(["slope=0.2"]) == FailOn(verdict=False, slope=0.2)
    assert parse_fail_on(["verdict", "slope=0.2,extrapolated=10"]) == FailOn(True, 0.2, 10.0)
    assert parse_fail_on(["none"]) == FailOn(verdict=False)
    for bad, message in (("slope", "needs a number"), ("slope=-1", "positive"),
                         ("colour", "use verdict")):
        with pytest.raises(ValueError, match=message):
            parse_fail_on([bad])


def test_runs_of_different_data_sizes_are_not_merged():
    quick = make_run("q", profile="quick", n_inputs=48)
    smoke = make_run("s", profile="smoke", n_inputs=24)
    with pytest.raises(RunError, match="different profiles or data sizes"):
        merge_runs([quick, smoke])
    same = make_run("q2", profile="quick", n_inputs=48)
    assert len(merge_runs([quick, same]).records) == len(quick.records)


# ----------------------------------------------------------------------------- issue 17: what a
# crash leaves, damaged files, exact integers, no overwrites


def _jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_run_with_records_but_no_meta_or_claims_loads_as_incomplete(tmp_path):
    """-n 0 killed: records.jsonl only. Its records are shown, not judged, and it says why."""
    folder = tmp_path / "reports" / "20250101-000000-aaaaaa"
    folder.mkdir(parents=True)
    _jsonl(folder / "records.jsonl", records().to_dict("records")[:5])
    run = load_run(folder)
    assert len(run.records) == 5
    assert any("no meta.json" in why for why in run.meta["incomplete"])
    assert any("no claim metadata for c1" in why for why in run.meta["incomplete"])
    assert claim_status(run, "c1") != "holds"
    table = list_runs(tmp_path / "reports")
    assert list(table["records"]) == [5] and table["complete"][0].startswith("no: ")
    html = tmp_path / "r.html"
    from ntkcheck.cli import main

    assert main(["report", str(folder), "-o", str(html)]) == 0
    assert 'id="incomplete"' in html.read_text()


def test_part_files_of_a_killed_controller_are_read(tmp_path):
    """-n 2, controller killed: only the workers' part files (records and claim metadata)."""
    folder = tmp_path / "reports" / "20250101-000000-aaaaaa"
    folder.mkdir(parents=True)
    c = {k: v for k, v in claim().items() if k in ("id", "statement", "source", "metric",
                                                     "tolerance", "rate", "units", "direction")}
    rows = records(depths=(1, 2)).to_dict("records")
    parts = [{"nodeid": r["nodeid"], "claim": c, "record": {**r, "run_id": "", "seq": i}}
             for i, r in enumerate(rows)]
    _jsonl(folder / "records.gw0.111.jsonl", parts[:9])
    # the depth-2 architecture's worker died after 1 of its 8 units: widths 64.. missing
    (folder / "records.gw1.222.jsonl").write_text(
        "".join(json.dumps(p) + "\n" for p in parts[9:10]) + '{"nodeid": "cut off')
    run = load_run(resolve_run(folder.name, tmp_path / "reports"))
    assert len(run.records) == 10 and set(run.records["run_id"]) == {folder.name}
    assert run.claims["c1"]["tolerance"] == 0.1
    assert any("recovered from 2 worker part file(s)" in why for why in run.meta["incomplete"])
    _, av = run.verdicts()
    verdict = av.set_index("arch_id")
    assert bool(verdict.loc["mlp-d1-relu", "holds_at_widest"])  # all 8 units: judged
    assert not bool(verdict.loc["mlp-d2-relu", "holds_at_widest"])  # 2 of 8: not HOLDS
    assert verdict.loc["mlp-d2-relu", "message"].startswith("incomplete:")
    assert list(list_runs(tmp_path / "reports")["records"]) == [10]


def _damage(folder, what: str) -> str:
    """Damage a saved run's files one way; return the text the error must contain."""
    recs = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    claims = json.loads((folder / "claims.json").read_text())
    if what == "meta-list":
        (folder / "meta.json").write_text("[1, 2]")
        return "meta.json: expected a JSON object"
    if what == "claims-list":
        (folder / "claims.json").write_text("[]")
        return "claims.json: expected a JSON object of claims"
    if what == "claims-strings":
        (folder / "claims.json").write_text(json.dumps({"c1": "holds"}))
        return "claims.json, claim 'c1': expected a JSON object"
    if what == "tolerance-string":
        claims["c1"]["tolerance"] = "0.1"
        (folder / "claims.json").write_text(json.dumps(claims))
        return "claims.json, claim 'c1': field 'tolerance' is '0.1' (a string)"
    if what == "record-list":
        _jsonl(folder / "records.jsonl", recs[:3] + [[1, 2, 3]] + recs[3:])
        return "records.jsonl, line 4: a record must be a JSON object"
    if what == "width-bool":
        recs[0]["width"] = True
        _jsonl(folder / "records.jsonl", recs)
        return "records.jsonl, line 1: field 'width' is true (a boolean); expected an integer"
    if what == "value-string":
        recs[2]["value"] = "0.5"
        _jsonl(folder / "records.jsonl", recs)
        return "records.jsonl, line 3: field 'value' is '0.5' (a string)"
    if what == "garbage-jsonl":
        (folder / "records.jsonl").write_text("garbage\n")
        return "records.jsonl, line 1: not a JSON record"
    if what == "garbage-jsonl-no-newline":
        (folder / "records.jsonl").write_text("garbage")
        return "holds no records but"
    raise AssertionError(what)


DAMAGES = ["meta-list", "claims-list", "claims-strings", "tolerance-string", "record-list",
           "width-bool", "value-string", "garbage-jsonl", "garbage-jsonl-no-newline"]


@pytest.mark.parametrize("what", DAMAGES)
def test_a_damaged_file_is_an_error_naming_file_and_field(tmp_path, capsys, what):
    from ntkcheck.cli import main

    reports = tmp_path / "reports"
    good = save(make_run("20250101-000000-aaaaaa"), reports)
    bad = save(make_run("20250102-000000-bbbbbb"), reports)
    message = _damage(bad, what)
    with pytest.raises(RunError) as exc:
        load_run(bad)
    assert message in str(exc.value) and str(bad) in str(exc.value)
    for args in (["report", str(bad), "-o", str(tmp_path / "x.html")],
                 ["compare", str(good), str(bad)],
                 ["export", str(bad), "-o", str(tmp_path / "out")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()
    # `list` shows the good run and says which one it skipped, and why
    assert main(["--reports", str(reports), "list"]) == 0
    out, err = capsys.readouterr()
    assert good.name in out and bad.name not in out
    assert f"warning: skipped run {bad.name}" in err and message in err


def test_records_csv_fallback_reads_not_measured_units(tmp_path):
    """records.csv alone (records.jsonl gone): empty dtype and value cells read back."""
    recs = records()
    recs["dtype"] = recs["dtype"].astype(object)
    recs.loc[recs["width"] == 1024, ["status", "value", "dtype"]] = ["oom", None, ""]
    recs["reason"] = np.where(recs["width"] == 1024, "out of memory", "")
    folder = save(make_run("20250101-000000-aaaaaa", recs=recs), tmp_path)
    before = load_run(folder)
    (folder / "records.jsonl").unlink()
    after = load_run(folder)
    assert len(after.records) == 8
    assert list(after.records["status"]) == list(before.records["status"])
    assert list(after.records["dtype"].fillna("")) == list(before.records["dtype"].fillna(""))
    pd.testing.assert_frame_equal(after.verdicts()[1], before.verdicts()[1])
    from ntkcheck.cli import main

    assert main(["report", str(folder), "-o", str(tmp_path / "r.html")]) == 0
    merged = merge_runs([after])
    assert list(merged.records["status"]) == list(before.records["status"])


BIG_SEED = 7016365696060829374  # above 2**53: float64 would make it ...9696


def test_seeds_stay_exact_in_every_file_and_in_merges(tmp_path):
    from ntkcheck.runs.store import read_embedded

    recs = records()
    recs["init_seed"] = pd.array([BIG_SEED + i for i in range(len(recs) - 1)] + [None],
                                 dtype="Int64")  # the last unit was not seeded
    folder = save(make_run("20250101-000000-aaaaaa", recs=recs), tmp_path)
    expected = [BIG_SEED + i for i in range(len(recs) - 1)]
    csv_text = (folder / "records.csv").read_text()
    assert str(BIG_SEED) in csv_text and f"{BIG_SEED}.0" not in csv_text
    embedded = read_embedded(folder / "report.html")["records"]
    col = embedded["columns"].index("init_seed")
    assert [row[col] for row in embedded["data"]][:-1] == expected
    for source in (folder, folder / "report.html"):
        assert list(load_run(source).records["init_seed"])[:-1] == expected
    (folder / "records.jsonl").unlink()  # the CSV fallback
    assert list(load_run(folder).records["init_seed"])[:-1] == expected
    other = make_run("r2", recs=records(depths=(2,)))  # no init_seed column at all
    merged = merge_runs([load_run(folder), other])
    saved = load_run(write_run_to(merged, tmp_path / "merged"))
    assert [int(s) for s in saved.records["init_seed"].dropna()] == expected


def write_run_to(run, folder):
    from ntkcheck.runs.store import write_run

    return write_run(run, folder)


def test_save_never_overwrites_another_run_or_other_files(tmp_path, capsys):
    from ntkcheck.cli import main

    reports = tmp_path / "reports"
    a = save(make_run("20250101-000000-aaaaaa"), reports)
    b = save(make_run("20250102-000000-bbbbbb", recs=records(scale=4.0)), reports)
    before = {p.name: p.read_bytes() for p in b.iterdir()}
    assert main(["report", str(a), "--save", str(b)]) == 2
    assert "holds another run (20250102-000000-bbbbbb)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in b.iterdir()} == before
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine")
    assert main(["report", str(a), "--save", str(mine)]) == 2
    assert (mine / "todo.txt").read_text() == "mine" and len(list(mine.iterdir())) == 1
    # a new folder, then the same run saved again into it: fine
    assert main(["report", str(a), "--save", str(tmp_path / "copy")]) == 0
    assert main(["report", str(a), "--save", str(tmp_path / "copy")]) == 0
    assert len(load_run(tmp_path / "copy").records) == 8
