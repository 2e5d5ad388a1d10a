"""Where the theory holds: the report's depth x width maps, findings and the rate verdict.

Synthetic records whose metric is known exactly, judged by the real verdict code, rendered by
the real report, and (in the pytester tests) produced by real pytest runs of claim files.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from ntkcheck.claim import Claim
from ntkcheck.report import render_report
from ntkcheck.report.findings import (
    PRACTICAL_WIDTHS,
    build_depth_maps,
    build_findings,
    needed_vs_practice,
    summarize,
)
from ntkcheck.report.frames import (
    ARCH_VERDICT_COLUMNS,
    RECORD_COLUMNS,
    WIDTH_VERDICT_COLUMNS,
    ensure_columns,
)
from ntkcheck.verdict import compute_verdicts, depth_laws

WIDTHS = (64, 256, 1024, 4096)


def _rows(cid, arch, depth, law, setting="theory", seeds=3, widths=WIDTHS, sigma=0.05, rng=None):
    rng = rng or np.random.default_rng(0)
    return [dict(claim_id=cid, arch_id=arch, depth=depth, width=w, seed=s, setting=setting,
                 value=law(w) * math.exp(sigma * rng.standard_normal()), status="measured",
                 nodeid=f"t.py::{cid}-{setting}")
            for w in widths for s in range(seeds)]


def _claim(cid, tolerance, rate, **extra):
    return Claim(id=cid, statement="s", source="s", metric="m", tolerance=tolerance, rate=rate,
                 **extra)


@pytest.fixture(scope="module")
def run():
    """ntk-at-init over depths 1, 2, 4 (error sqrt(3 depth / width): needs width 1200 depth),
    a practical plateau of lazy-kernel below its tolerance, an optimization claim that fails,
    and a continual claim without records."""
    rng = np.random.default_rng(7)
    recs = []
    for d in (1, 2, 4):
        recs += _rows("ntk-at-init", f"mlp-d{d}-relu-ntk-b", d,
                      lambda w, d=d: math.sqrt(3.0 * d / w), rng=rng)
    recs += _rows("lazy-kernel", "mlp-d1-relu-ntk-b", 1, lambda w: 3.0 / w, rng=rng)
    recs += _rows("lazy-kernel", "mlp-d3-relu-standard-b-practical", 3,
                  lambda w: 0.05 / min(w, 256) ** 0.0 * (1 + 0 * w), setting="practical",
                  rng=rng)
    recs += _rows("jacobian-stable", "mlp-d1-relu-ntk-b", 1, lambda w: 4.0 * w ** -0.25,
                  rng=rng)
    claims = {c.id: c for c in (_claim("ntk-at-init", 0.05, -0.5),
                                _claim("lazy-kernel", 0.1, -1.0),
                                _claim("jacobian-stable", 0.1, -0.25),
                                _claim("forgetting-bounded", 0.1, None))}
    records = pd.DataFrame(recs)
    wv, av = compute_verdicts(records, claims)
    return records, wv, av, claims


def test_depth_maps_per_series_theory_first_with_every_state(run):
    records, wv, av, claims = run
    recs = ensure_columns(records, RECORD_COLUMNS)
    laws = depth_laws(av)
    ntk = build_depth_maps("ntk-at-init", recs[recs.claim_id == "ntk-at-init"],
                           ensure_columns(wv[wv.claim_id == "ntk-at-init"],
                                          WIDTH_VERDICT_COLUMNS),
                           ensure_columns(av[av.claim_id == "ntk-at-init"],
                                          ARCH_VERDICT_COLUMNS), laws)
    (m,) = ntk
    assert m.series == "mlp-relu-ntk-b" and m.setting == "theory" and m.widths == list(WIDTHS)
    assert [r.depth for r in m.rows] == ["1", "2", "4"]
    # sqrt(3 d / w) <= 0.05 from w = 1200 d: depth 1 and 2 hold at 4096, depth 4 fails
    assert [r.verdict for r in m.rows] == ["holds", "holds", "fails"]
    assert [c.status for c in m.rows[0].cells] == ["fails", "fails", "fails", "holds"]
    assert m.rows[2].width_needed.endswith("(extrapolated)")
    assert re.match(r"width needed ~ depth\^(0\.9\d|1\.0\d) \[", m.law)  # 1 + noise
    lazy = build_depth_maps("lazy-kernel", recs[recs.claim_id == "lazy-kernel"],
                            ensure_columns(wv[wv.claim_id == "lazy-kernel"],
                                           WIDTH_VERDICT_COLUMNS),
                            ensure_columns(av[av.claim_id == "lazy-kernel"],
                                           ARCH_VERDICT_COLUMNS))
    assert [m.setting for m in lazy] == ["theory", "practical"]
    practical = lazy[1]
    assert practical.rows[0].verdict == "rate-contradicts"
    assert {c.status for c in practical.rows[0].cells} == {"contradicts"}
    assert {c.text for c in practical.rows[0].cells} == {"rate"}


def test_findings_are_written_from_the_runs_numbers(run):
    records, wv, av, claims = run
    dicts = {k: c.to_dict() for k, c in claims.items()}
    recs = ensure_columns(records, RECORD_COLUMNS)
    wvn, avn = ensure_columns(wv, WIDTH_VERDICT_COLUMNS), ensure_columns(av, ARCH_VERDICT_COLUMNS)
    summaries = summarize(dicts, recs, wvn, avn, depth_laws(avn), list(dicts))
    findings = {f.domain: f for f in build_findings(summaries)}
    assert list(findings) == ["kernel-regime", "optimization", "continual"]
    kernel = findings["kernel-regime"].paragraph
    assert kernel.startswith("In the theory setting, 1 of 2 claims holds up to the widest "
                             "width swept (4,096): lazy-kernel from width 64.")
    row = av.set_index(["claim_id", "arch_id"]).loc[("ntk-at-init", "mlp-d4-relu-ntk-b")]
    mean = wv[(wv.arch_id == "mlp-d4-relu-ntk-b") & (wv.width == 4096)]["mean"].item()
    assert (f"ntk-at-init fails on 1 of 3 architectures (at width 4,096, mlp-d4-relu-ntk-b "
            f"measures {mean:.3g}, needs \u2264 0.05; its fit reaches the tolerance at "
            f"~{round(row.width_needed):,}") in kernel
    assert "In the practical settings, 0 of 1 claim hold" in kernel
    assert "lazy-kernel stays within its tolerance but stops following the predicted rate" \
        in kernel
    assert re.search(r"Over depths 1, 2, 4, ntk-at-init \(mlp-relu-ntk-b\) needs a width "
                     r"growing like depth\^[01]\.\d+ \[", kernel)
    assert "jacobian-stable fails" in findings["optimization"].paragraph
    assert findings["continual"].paragraph == "Not measured in this run: forgetting-bounded."
    # Different numbers, different sentences: nothing is written in advance.
    easy = {**dicts, "ntk-at-init": {**dicts["ntk-at-init"], "tolerance": 0.5}}
    wv2, av2 = compute_verdicts(records, {k: Claim.from_dict(v) for k, v in easy.items()})
    s2 = summarize(easy, recs, ensure_columns(wv2, WIDTH_VERDICT_COLUMNS),
                   ensure_columns(av2, ARCH_VERDICT_COLUMNS), depth_laws(av2), list(easy))
    kernel2 = {f.domain: f for f in build_findings(s2)}["kernel-regime"].paragraph
    assert kernel2.startswith("In the theory setting, 2 of 2 claims hold up to the widest")


def test_needed_width_against_the_widths_people_train():
    lo, hi = PRACTICAL_WIDTHS
    assert needed_vs_practice(lo / 2).startswith("below")
    assert needed_vs_practice(hi).startswith("within")
    assert needed_vs_practice(hi * 300) == f"300x the {hi:,} units of a wide practical layer"
    assert needed_vs_practice(math.nan) == ""


def test_report_shows_where_the_theory_holds(run, tmp_path):
    records, wv, av, claims = run
    dicts = {k: c.to_dict() for k, c in claims.items()}
    html = render_report(records, wv, av, dicts, {"run_id": "r"}, tmp_path / "r.html").read_text()
    assert html.index('id="where"') < html.index('id="overview-heading"')
    assert html.count('class="finding"') == 3
    for cid in ("ntk-at-init", "lazy-kernel", "jacobian-stable", "forgetting-bounded"):
        assert f'<tr data-claim="{cid}">' in html
    assert html.count('class="depth-map"') == 4  # ntk (1 series), lazy (2), jacobian (1)
    assert 'data-setting="practical"' in html and 'class="map-column"' in html
    # ntk-at-init, lazy-kernel (holds from the narrowest width: markers there), jacobian-stable
    assert html.count('class="plot needed-plot"') == 3
    assert "Hanin &amp; Nica 2019: width \u221d depth^1" in html
    assert 'data-verdict="rate-contradicts"' in html
    assert "widths people train (512\u20134,096)" in html
    # The embedded verdicts carry the new columns (for ntkcheck report / compare).
    verdicts = json.loads(re.search(r'id="ntkcheck-verdicts">(.*?)</script>', html,
                                    re.S).group(1))
    for col in ("verdict", "tail_slope", "width_needed", "depth"):
        assert col in verdicts["arch_verdicts"]["columns"]


# ----------------------------------------------------------------------------- pytester runs

PLATEAU = '''
import itertools
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="synthetic-plateau", statement="s", source="test",
                   metric="2/sqrt(min(width, 64))", tolerance=0.3, rate=-0.5)
def test_plateau(ntk_widths, ntk_seeds, ntk_measure):
    for width, seed in itertools.product(ntk_widths, ntk_seeds):
        value = 2 / min(width, 64) ** 0.5 * (1 + 0.05 * (-1) ** seed * (seed + 1))
        ntk_measure(ArchSpec(depth=1), width=width, seed=seed, value=value)
'''

DEPTHS = '''
import itertools
import pytest
from ntkcheck.arch import ArchSpec

@pytest.mark.claim(id="synthetic-depth", statement="s", source="test",
                   metric="sqrt(5 depth / width)", tolerance=0.1, rate=-0.5)
def test_depth(ntk_widths, ntk_seeds, ntk_measure):
    for depth in (1, 2, 4):
        spec = ArchSpec(depth=depth)
        for width, seed in itertools.product(ntk_widths, ntk_seeds):
            value = (5 * depth / width) ** 0.5 * (1 + 0.02 * (-1) ** seed * (seed + 1))
            ntk_measure(spec, width=width, seed=seed, value=value)
'''


def test_a_plateau_below_the_tolerance_fails_its_claim_test(pytester):
    """Small widths: 0.25 at 64, then flat to 1024 (below the tolerance 0.3 from 64)."""
    pytester.makepyfile(test_plateau=PLATEAU)
    result = pytester.runpytest("--ntk-widths", "16,64,256,1024", "--ntk-seeds", "3",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*claim 'synthetic-plateau' does not hold*",
        "RATE-CONTRADICTS  synthetic-plateau*rate contradicts the theory: within the tolerance, "
        "but the slope from width 256 to 1,024 is +0.00*flatter than 0.5 x the predicted -0.50*",
    ])
    run = pytester.path / "reports" / "latest"
    verdicts = pd.read_csv(run / "verdicts.csv")
    assert verdicts["verdict"].tolist() == ["rate-contradicts"]
    assert verdicts["extrapolated_width"].isna().all()
    html = (run / "report.html").read_text()
    assert 'class="cell contradicts"' in html and 'data-verdict="rate-contradicts"' in html
    assert "synthetic-plateau" in html
    from ntkcheck.runs.store import list_runs

    assert list_runs(pytester.path / "reports")["rate_contradicts"].tolist() == [1]


def test_depth_maps_and_the_depth_law_from_a_claim_run(pytester):
    """sqrt(5 depth / width) <= 0.1 from width 500 depth: at widths up to 1024 depth 1 and 2
    hold, depth 4 fails; the width needed is 500 depth (exponent 1)."""
    pytester.makepyfile(test_depth=DEPTHS)
    result = pytester.runpytest("--ntk-widths", "16,64,256,1024", "--ntk-seeds", "2",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["HOLDS*synthetic-depth*mlp-d1-relu-ntk-b*",
                                 "HOLDS*synthetic-depth*mlp-d2-relu-ntk-b*",
                                 "FAILS*synthetic-depth*mlp-d4-relu-ntk-b*extrapolated*"])
    run = pytester.path / "reports" / "latest"
    wv = pd.read_csv(run / "width_verdicts.csv")
    assert sorted(wv["depth"].unique()) == [1, 2, 4]
    av = pd.read_csv(run / "verdicts.csv").set_index("arch_id")
    for depth in (1, 2, 4):
        assert av.loc[f"mlp-d{depth}-relu-ntk-b", "width_needed"] == pytest.approx(
            500 * depth, rel=0.05)
    html = (run / "report.html").read_text()
    rows = re.findall(r'<tr data-arch="(mlp-d\d-relu-ntk-b)" data-verdict="([a-z-]+)">', html)
    assert rows == [("mlp-d1-relu-ntk-b", "holds"), ("mlp-d2-relu-ntk-b", "holds"),
                    ("mlp-d4-relu-ntk-b", "fails")]
    law = re.search(r"width needed ~ depth\^([0-9.]+) \[([0-9.]+), ([0-9.]+)\]", html)
    assert float(law.group(1)) == pytest.approx(1.0, abs=0.05)
    assert float(law.group(2)) <= 1.0 <= float(law.group(3))
    assert ("Over depths 1, 2, 4, synthetic-depth (mlp-relu-ntk-b) needs a width growing "
            "like depth^") in html


def test_a_finding_details_the_worst_failing_claims_and_names_the_rest():
    """Five failing claims of one domain: the three needing the widest networks in detail,
    the other two by name; a depth law over two depths only is left to the claim section."""
    recs, claims = [], {}
    for i, cid in enumerate(("gd-rate", "gd-stable-lr", "jacobian-full-rank",
                             "jacobian-stable", "ngd-rate")):
        for d in (1, 2):
            recs += _rows(cid, f"mlp-d{d}-relu-ntk-b", d, lambda w, i=i, d=d: (i + 1) * d
                          / math.sqrt(w))
        claims[cid] = _claim(cid, 0.01, -0.5).to_dict()
    records = pd.DataFrame(recs)
    wv, av = compute_verdicts(records, {k: Claim.from_dict(v) for k, v in claims.items()})
    wv, av = ensure_columns(wv, WIDTH_VERDICT_COLUMNS), ensure_columns(av, ARCH_VERDICT_COLUMNS)
    summaries = summarize(claims, ensure_columns(records, RECORD_COLUMNS), wv, av,
                          depth_laws(av), list(claims))
    (finding,) = build_findings(summaries)
    text = finding.paragraph
    assert text.index("ngd-rate fails on 2 of 2") < text.index("jacobian-stable fails on 2")
    assert text.index("jacobian-stable fails on 2") < text.index("jacobian-full-rank fails on")
    assert text.endswith(" gd-stable-lr and gd-rate fail too.")
    assert "depth^" not in text  # two depths: no interval, not a finding
