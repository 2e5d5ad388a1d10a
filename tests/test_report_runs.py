"""The report of a default-profile run, parsed without a browser: grid, plots, records, size.

The headless-browser twin of these checks is tests/test_report_browser.py.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from runfactory import claim, make_run, records
from test_report import parse, script_json

from ntkcheck.profiles import PROFILES
from ntkcheck.report import render_report
from ntkcheck.runs.store import merge_runs

QUICK = PROFILES["quick"]  # the default profile
N_CLAIMS = 8


def default_profile_run():
    """A run of the default profile's size: 8 claims, 3 architectures (depths 1-3) each."""
    widths, seeds = QUICK.widths, tuple(range(QUICK.n_seeds))
    claims, frames = {}, []
    for i in range(N_CLAIMS):
        cid = f"claim-{i}"
        outcome = "failed" if i == 0 else "passed"
        claims[cid] = claim(cid, tolerance=0.1 if i else 0.01, outcome=outcome,
                            shrunk_spec="ArchSpec(depth=1)" if i == 0 else None)
        depths = (1, 2, 3) if i % 2 == 0 else (2,)  # odd claims: one depth, no depth plot
        frames.append(records(cid, depths=depths, widths=widths, seeds=seeds, scale=4.0))
    return make_run("default", claims=claims, recs=pd.concat(frames, ignore_index=True),
                    profile="quick", widths=list(widths))


def render(run, path):
    wv, av = run.verdicts()
    return render_report(run.records, wv, av, run.claims, run.meta, path)


@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    run = default_profile_run()
    path = render(run, tmp_path_factory.mktemp("report") / "report.html")
    return run, path, parse(path)


def test_grid_one_row_per_claim_and_architecture_with_verdict_words(default_report):
    run, _, doc = default_report
    rows = list(doc.find("table", id="overview").find_all("tr", cls="grid-row"))
    _, av = run.verdicts()
    assert len(rows) == len(av) == 4 * 3 + 4 * 1
    for row in rows:
        cells = list(row.find_all("td", cls="cell"))
        assert len(cells) == len(QUICK.widths)
        assert all(c.classes & {"holds", "fails"} for c in cells)
        verdict = row.find("td", cls="verdict").all_text()
        assert re.match(r"(holds from width [\d,]+|fails at (every )?width)", verdict), verdict
    failing = [r for r in rows if r.attrs["data-claim"] == "claim-0"]
    assert all("extrapolated to hold at ~" in r.find("td", cls="verdict").all_text()
               for r in failing)


def test_one_width_plot_per_claim_and_a_depth_plot_where_depth_varies(default_report):
    _, _, doc = default_report
    sections = {s.attrs["id"]: s for s in doc.find_all("section", cls="claim")}
    assert len(sections) == N_CLAIMS
    for i in range(N_CLAIMS):
        s = sections[f"claim-{i}"]
        others = {"depth-plot", "needed-plot", "curves-plot"}  # not the metric-vs-width plot
        plots = [p for p in s.find_all("div", cls="plot") if not others & set(p.classes)]
        depth = list(s.find_all("div", cls="depth-plot"))
        assert len(plots) == 1 and list(plots[0].find_all("svg"))
        text = plots[0].all_text()
        assert "fit slope" in text and "predicted slope -0.5" in text and "tolerance" in text
        assert len(depth) == (1 if i % 2 == 0 else 0)
        if depth:
            assert "depth / width" in depth[0].all_text()
            assert "Hanin" in s.all_text()
    assert "Depth varies (1, 2, 3)" in sections["claim-0"].all_text()


def test_failed_claim_shows_the_shrunk_architecture(default_report):
    _, _, doc = default_report
    section = doc.find("section", id="claim-0")
    assert "ArchSpec(depth=1)" in section.find("pre", cls="shrunk-spec").all_text()
    assert not list(doc.find("section", id="claim-1").find_all("pre", cls="shrunk-spec"))


def test_environment_has_versions_commit_and_wall_time_per_claim(default_report):
    run, _, doc = default_report
    env = {tr.find("th").all_text(): tr.find("td").all_text()
           for tr in doc.find("table", id="environment-table").find_all("tr")}
    assert env["git_commit"] == "0123456789abcdef" and env["profile"] == "quick"
    times = list(doc.find("table", id="claim-times").find("tbody").find_all("tr"))
    assert len(times) == N_CLAIMS
    cells = [td.all_text() for td in times[0].find_all("td")]
    assert cells[0] == "claim-0" and cells[2] == "failed" and cells[3] == "1 s"
    assert cells[4] == str(int((run.records["claim_id"] == "claim-0").sum()))


def test_records_table_and_json_and_size(default_report):
    run, path, doc = default_report
    assert len(list(doc.find("table", id="records").find("tbody").find_all("tr"))) == len(
        run.records)
    assert len(script_json(doc, "ntkcheck-records")["data"]) == len(run.records)
    assert path.stat().st_size < 2_000_000
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)


def test_merged_report_says_so(tmp_path):
    a = make_run("a", recs=records(seeds=(0,)), shard="0/2")
    b = make_run("b", recs=records(seeds=(1,)), shard="1/2")
    doc = parse(render(merge_runs([a, b]), tmp_path / "m.html"))
    assert doc.find("span", id="merged-from").all_text() == "merged from 2 runs"
    assert not list(doc.find_all(id="shards-missing"))
    c = make_run("c", recs=records(seeds=(0,)), shard="0/3")
    d = make_run("d", recs=records(seeds=(1,)), shard="2/3")
    doc = parse(render(merge_runs([c, d]), tmp_path / "p.html"))
    assert "Shard(s) 1/3 are missing" in doc.find("div", id="shards-missing").all_text()
