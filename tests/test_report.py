"""Tests of the HTML report (ntkcheck.report), parsed with the stdlib html.parser."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest

from ntkcheck.report import PlotSeries, render_report, svg_loglog

WIDTHS = [64, 128, 256, 512]
SEEDS = [0, 1]
ARCHS = ["mlp-relu-d2", "mlp-tanh-d3"]
VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


# --------------------------------------------------------------------------- a tiny DOM


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str):
        for n in self.iter():
            if tag is not None and n.tag != tag:
                continue
            if cls is not None and cls not in n.classes:
                continue
            if any(n.attrs.get(k) != v for k, v in attrs.items()):
                continue
            yield n

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = list(self.find_all(tag, cls, **attrs))
        assert found, f"no <{tag} class={cls} {attrs}>"
        return found[0]

    def all_text(self) -> str:
        return "".join(t for n in self.iter() for t in n.text)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return
        raise AssertionError(f"unmatched </{tag}>")

    def handle_data(self, data):
        self.stack[-1].text.append(data)


def parse(path: Path) -> Node:
    builder = _TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    assert [n.tag for n in builder.stack] == ["#document", "html"] or len(builder.stack) == 1
    return builder.root


def script_json(doc: Node, element_id: str):
    return json.loads(doc.find("script", id=element_id).all_text())


# --------------------------------------------------------------------------- test data


def make_records() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for claim, scale, rate in (("ntk_converges", 4.0, -0.5), ("ntk_constant", 0.05, -0.05)):
        for arch, depth, act in ((ARCHS[0], 2, "relu"), (ARCHS[1], 3, "tanh")):
            for w in WIDTHS:
                for s in SEEDS:
                    rows.append(
                        {
                            "run_id": "run-1",
                            "claim_id": claim,
                            "arch_id": arch,
                            "family": "mlp",
                            "activation": act,
                            "parametrization": "ntk",
                            "depth": depth,
                            "bias": True,
                            "weight_std": 1.0,
                            "bias_std": 0.1,
                            "width": w,
                            "seed": s,
                            "value": scale * w**rate * math.exp(rng.normal(0, 0.05)),
                            "profile": "quick",
                            "device": "cpu",
                            "dtype": "float64",
                            "elapsed_s": 0.01,
                            "nodeid": f"claims/test_x.py::test_{claim}",
                            "n_inputs": 8,
                        }
                    )
    return pd.DataFrame(rows)


def make_verdicts(records: pd.DataFrame, claims: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    wv = (
        records.groupby(["claim_id", "arch_id", "width"])["value"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
    )
    wv["holds"] = [m <= claims[c]["tolerance"] for c, m in zip(wv["claim_id"], wv["mean"])]
    rows = []
    for (cid, aid), g in wv.groupby(["claim_id", "arch_id"]):
        rec = records[(records.claim_id == cid) & (records.arch_id == aid)]
        slope, intercept = np.polyfit(np.log(rec.width), np.log(rec.value), 1)
        nan_fit = aid == ARCHS[1] and cid == "ntk_constant"  # an arch with a NaN slope
        if nan_fit:
            slope = intercept = math.nan
        g = g.sort_values("width")
        holds, ws = g["holds"].tolist(), g["width"].tolist()
        holds_from = math.nan
        for w, h in zip(reversed(ws), reversed(holds)):
            if not h:
                break
            holds_from = float(w)
        if all(holds):
            message = "holds at every width swept"
        elif holds[-1]:
            message = f"holds from width {int(holds_from)}"
        else:
            message = "fails up to 512; extrapolated to hold at ~3.1e6"
        rows.append(
            {
                "claim_id": cid,
                "arch_id": aid,
                "widest_width": ws[-1],
                "holds_at_widest": holds[-1],
                "holds_from_width": holds_from,
                "slope": slope,
                "slope_low": slope - 0.1,
                "slope_high": slope + 0.1,
                "intercept": intercept,
                "predicted_rate": claims[cid]["rate"],
                "rate_consistent": None if nan_fit else True,
                "extrapolated_width": math.nan if holds[-1] else 3.1e6,
                "message": message,
            }
        )
    return wv, pd.DataFrame(rows)


def make_claims() -> dict:
    long = "\n".join(f"E   line {i}" for i in range(1, 31))
    return {
        "ntk_converges": {
            "id": "ntk_converges",
            "statement": "The empirical NTK converges to the <limit>.",
            "source": "Jacot et al. 2018, Thm 1",
            "metric": "relative Frobenius error",
            "units": "",
            "tolerance": 0.3,
            "rate": -0.5,
            "direction": "below",
            "outcome": "passed",
            "nodeid": "claims/test_x.py::test_ntk_converges",
            "duration_s": 1.5,
            "shrunk_spec": None,
        },
        "ntk_constant": {
            "id": "ntk_constant",
            "statement": "The NTK stays constant during training.",
            "source": "Lee et al. 2019",
            "metric": "relative change",
            "units": "1",
            "tolerance": 0.01,
            "rate": -0.5,
            "direction": "below",
            "outcome": "failed",
            "nodeid": "claims/test_x.py::test_ntk_constant",
            "duration_s": 2.0,
            "longrepr": long,
            "shrunk_spec": "mlp(depth=3, activation='tanh', width=64)",
        },
    }


META = {
    "run_id": "run-1",
    "profile": "quick",
    "started": "2025-01-02T03:04:05",
    "finished": "2025-01-02T03:05:05",
    "duration_s": 60.0,
    "device": "cpu",
    "torch": "2.13",
    "python": "3.12",
    "ntkcheck": "0.1.0",
    "git_commit": "abc123",
    "widths": WIDTHS,
    "seeds": SEEDS,
    "hostname": "box",
    "command": "pytest claims/",
    "interrupted": False,
}


@pytest.fixture(scope="module")
def data():
    records = make_records()
    claims = make_claims()
    wv, av = make_verdicts(records, claims)
    return records, wv, av, claims


@pytest.fixture(scope="module")
def report(data, tmp_path_factory) -> tuple[Path, Node]:
    path = tmp_path_factory.mktemp("report") / "report.html"
    out = render_report(*data, META, path)
    assert out == path
    return path, parse(path)


# --------------------------------------------------------------------------- tests


def test_overview_grid_cells_and_classes(report, data):
    _, wv, _, _ = data
    _, doc = report
    grid = doc.find("table", id="overview")
    rows = list(grid.find_all("tr", cls="grid-row"))
    assert len(rows) == 2 * 2
    cells = [c for r in rows for c in r.find_all("td", cls="cell")]
    assert len(cells) == 2 * 2 * len(WIDTHS)
    statuses = [next(iter(c.classes & {"holds", "fails", "missing"})) for c in cells]
    assert statuses.count("holds") == int(wv["holds"].sum())
    assert statuses.count("fails") == int((~wv["holds"]).sum())
    assert statuses.count("missing") == 0
    headers = [th.all_text() for th in grid.find("thead").find_all("th")]
    assert headers[2:-1] == [str(w) for w in WIDTHS]
    # Cell text is the mean, 3 significant digits.
    first = wv[(wv.claim_id == "ntk_converges") & (wv.arch_id == ARCHS[0])].iloc[0]
    row = next(
        r
        for r in rows
        if r.attrs["data-claim"] == "ntk_converges" and r.attrs["data-arch"] == ARCHS[0]
    )
    assert next(row.find_all("td", cls="cell")).all_text() == f"{first['mean']:.3g}"
    verdicts = [r.find("td", cls="verdict") for r in rows]
    assert [v.all_text() for v in verdicts] == [
        "holds from width 256",
        "holds from width 256",
        "fails up to 512; extrapolated to hold at ~3.1e6",
        "fails up to 512; extrapolated to hold at ~3.1e6",
    ]
    assert [sorted(v.classes - {"verdict"}) for v in verdicts] == [["holds"]] * 2 + [["fails"]] * 2


def test_unmeasured_widths_are_grey(data, tmp_path):
    records, wv, av, claims = data
    wv = wv[~((wv.arch_id == ARCHS[1]) & (wv.width == 512))]
    records = records[~((records.arch_id == ARCHS[1]) & (records.width == 512))]
    doc = parse(render_report(records, wv, av, claims, META, tmp_path / "r.html"))
    rows = list(doc.find("table", id="overview").find_all("tr", cls="grid-row"))
    missing = [c for r in rows for c in r.find_all("td", cls="missing") if "cell" in c.classes]
    assert len(missing) == 2
    assert all(c.all_text() == "" for c in missing)


def test_claim_sections(report, data):
    _, _, _, claims = data
    _, doc = report
    sections = {s.attrs["id"]: s for s in doc.find_all("section", cls="claim")}
    assert set(sections) == set(claims)
    for s in sections.values():
        plot = s.find("div", cls="plot")
        assert list(plot.find_all("svg"))
        assert len(list(s.find("table", cls="fits").find("tbody").find_all("tr"))) == 2
    # Overview links to the sections.
    hrefs = {a.attrs["href"] for a in doc.find("table", id="overview").find_all("a")}
    assert hrefs == {f"#{c}" for c in claims}
    # Statement text is escaped, not markup.
    assert "<limit>" in sections["ntk_converges"].find("p", cls="statement").all_text()
    assert not list(doc.find_all("limit"))


def test_failed_claim_shows_failure_and_shrunk_spec(report):
    _, doc = report
    section = doc.find("section", id="ntk_constant")
    text = section.find("pre", cls="longrepr").all_text()
    assert "E   line 15" in text and "E   line 16" not in text
    assert "15 more lines" in text
    assert "width=64" in section.find("pre", cls="shrunk-spec").all_text()
    passed = doc.find("section", id="ntk_converges")
    assert not list(passed.find_all("pre", cls="longrepr"))
    counts = {
        b.attrs["data-outcome"]: b.all_text()
        for b in doc.find("div", id="counts").find_all("span", cls="badge")
    }
    assert counts["passed"] == "1 passed" and counts["failed"] == "1 failed"


def test_nan_slope_is_shown_as_dash_and_not_plotted(report):
    _, doc = report
    section = doc.find("section", id="ntk_constant")
    row = next(
        r
        for r in section.find("table", cls="fits").find("tbody").find_all("tr")
        if ARCHS[1] in r.all_text()
    )
    tds = [td.all_text() for td in row.find_all("td")]
    assert tds[3] == "\u2014" and tds[4] == "\u2014" and tds[6] == "\u2014"
    legend_text = section.find("div", cls="plot").all_text()
    assert legend_text.count("fit slope") == 1  # only the arch with a fit
    assert "predicted slope -0.5" in legend_text
    assert "tolerance 0.01" in legend_text


def test_embedded_json_round_trips(report, data):
    records, wv, av, claims = data
    _, doc = report
    rec = script_json(doc, "ntkcheck-records")
    back = pd.DataFrame(rec["data"], columns=rec["columns"])
    assert len(back) == len(records)
    assert set(records.columns) <= set(back.columns)
    np.testing.assert_allclose(back["value"], records["value"])
    verdicts = script_json(doc, "ntkcheck-verdicts")
    assert len(verdicts["width_verdicts"]["data"]) == len(wv)
    av_back = pd.DataFrame(**verdicts["arch_verdicts"])
    assert len(av_back) == len(av)
    assert av_back["slope"].isna().sum() == 1  # NaN written as null
    assert set(verdicts["claims"]) == set(claims)
    assert script_json(doc, "ntkcheck-meta")["run_id"] == "run-1"


def test_records_table_sortable_with_extra_columns(report, data):
    records, *_ = data
    path, doc = report
    table = doc.find("table", id="records")
    assert "sortable" in table.classes
    headers = [th.all_text() for th in table.find("thead").find_all("th")]
    assert headers[:3] == ["run_id", "claim_id", "arch_id"] and "n_inputs" in headers
    assert len(list(table.find("tbody").find_all("tr"))) == len(records)
    assert "addEventListener" in path.read_text(encoding="utf-8")


def test_records_table_leaves_out_columns_empty_in_every_shown_row(tmp_path):
    records = make_records().assign(only_in_json=np.nan, train_loss=0.25)
    claims = make_claims()
    wv, av = make_verdicts(records, claims)
    path = render_report(records, wv, av, claims, META, tmp_path / "r.html")
    doc = parse(path)
    headers = [th.all_text() for th in doc.find("table", id="records").find("thead")
               .find_all("th")]
    assert "train_loss" in headers and "only_in_json" not in headers
    assert "only_in_json" in script_json(doc, "ntkcheck-records")["columns"]


def test_no_network_resources_and_small(report):
    path, doc = report
    for node in doc.iter():
        for attr in ("src", "href", "xlink:href", "data"):
            value = node.attrs.get(attr, "")
            assert not re.match(r"\s*(https?:)?//", value), (node.tag, attr, value)
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text)
    assert not re.search(r"@import", text)
    assert "<link" not in text
    assert path.stat().st_size < 300_000


def test_environment_table(report):
    _, doc = report
    env = {
        tr.find("th").all_text(): tr.find("td").all_text()
        for tr in doc.find("table", id="environment-table").find_all("tr")
    }
    assert env["git_commit"] == "abc123"
    assert env["widths"] == "64, 128, 256, 512"
    assert not list(doc.find_all(id="interrupted"))
    assert not list(doc.find_all(id="schema-error"))


def test_interrupted_and_schema_error_banners(data, tmp_path):
    meta = {**META, "interrupted": True, "schema_error": "column 'value' <bad>"}
    doc = parse(render_report(*data, meta, tmp_path / "r.html"))
    assert "interrupted" in doc.find("div", id="interrupted").all_text()
    assert "column 'value' <bad>" in doc.find("div", id="schema-error").all_text()


def test_json_escapes_script_end(data, tmp_path):
    records, wv, av, claims = data
    records = records.copy()
    records.loc[0, "nodeid"] = "x</script><script>alert(1)</script><!--"
    doc = parse(render_report(records, wv, av, claims, META, tmp_path / "r.html"))
    rec = script_json(doc, "ntkcheck-records")
    assert rec["data"][0][rec["columns"].index("nodeid")] == records.loc[0, "nodeid"]
    assert len(list(doc.find_all("script"))) == 4


def test_empty_records(tmp_path):
    claims = {"c": {**make_claims()["ntk_converges"], "id": "c", "outcome": "skipped"}}
    path = render_report(
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
        claims,
        {"run_id": "r0"},
        tmp_path / "r.html",
    )
    doc = parse(path)
    assert "no measurements" in doc.find(id="no-measurements").all_text().lower()
    rec = script_json(doc, "ntkcheck-records")
    assert rec["data"] == [] and "value" in rec["columns"]
    assert doc.find("section", id="c")
    assert not list(doc.find_all("svg"))
    grid_rows = list(doc.find("table", id="overview").find_all("tr", cls="grid-row"))
    assert len(grid_rows) == 1 and "no measurements" in grid_rows[0].all_text()


def test_deterministic_and_leaves_matplotlib_alone(data, tmp_path):
    before = dict(mpl.rcParams)
    a = render_report(*data, META, tmp_path / "a.html").read_bytes()
    b = render_report(*data, META, tmp_path / "b.html").read_bytes()
    assert a == b
    assert dict(mpl.rcParams) == before


def test_element_ids_unique(report):
    _, doc = report
    ids = [n.attrs["id"] for n in doc.iter() if "id" in n.attrs]
    assert len(ids) == len(set(ids))
    assert sum(n.tag == "clippath" for n in doc.iter()) >= 2  # salted per plot


def test_size_for_1000_records(tmp_path):
    rng = np.random.default_rng(1)
    widths = [2**k for k in range(6, 16)]
    claims, rows = {}, []
    for c in range(5):
        cid = f"claim_{c}"
        claims[cid] = {**make_claims()["ntk_converges"], "id": cid}
        for a in range(4):
            for w in widths:
                for s in range(5):
                    rows.append(
                        {
                            **make_records().iloc[0].to_dict(),
                            "claim_id": cid,
                            "arch_id": f"arch-{a}",
                            "width": w,
                            "seed": s,
                            "value": float(w**-0.5 * rng.lognormal(0, 0.1)),
                        }
                    )
    records = pd.DataFrame(rows)
    assert len(records) == 1000
    wv, av = make_verdicts(records, claims)
    path = render_report(records, wv, av, claims, META, tmp_path / "big.html")
    assert path.stat().st_size < 2_000_000
    assert len(script_json(parse(path), "ntkcheck-records")["data"]) == 1000


def test_svg_loglog_helper():
    w = np.repeat([8, 16, 32], 2).astype(float)
    svg = svg_loglog(
        [PlotSeries("a", w, 1 / w, slope=-1.0, intercept=0.0)], tolerance=0.05, predicted_rate=-1.0
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<?xml" not in svg and "<image" not in svg and "fit slope -1" in svg
    paths = re.findall(r'\sd="([^"]*)"', svg)  # path data rounded to a tenth of a point
    assert paths and not any(re.search(r"\.\d\d", d) or "\n" in d for d in paths)
    # Nonpositive values: linear axis, still renders.
    assert svg_loglog([PlotSeries("b", w, -w)]).startswith("<svg")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_chromium_renders_grid(report):
    path, _ = report
    dom = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--dump-dom",
            path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert 'id="overview"' in dom
    assert dom.count('class="grid-row"') == 4


FAKE_DOM = """
const rows = [["b", "10"], ["a", "9"], ["c", "1e-3"], ["d", ""]].map(
  (d) => ({ id: d[0], cells: d.map((t) => ({ textContent: t })) }));
const body = { rows: rows.slice(), appendChild(r) {
  this.rows.splice(this.rows.indexOf(r), 1); this.rows.push(r); } };
const heads = [0, 1].map(() => ({ a: {}, on: {},
  getAttribute(k) { return k in this.a ? this.a[k] : null; },
  setAttribute(k, v) { this.a[k] = v; }, removeAttribute(k) { delete this.a[k]; },
  addEventListener(e, f) { this.on[e] = f; } }));
const table = { tHead: { rows: [{ cells: heads }] }, tBodies: [body] };
globalThis.document = { querySelectorAll: () => [table], getElementById: () => null };
const order = () => body.rows.map((r) => r.id).join("");
eval(SCRIPT);
const out = [];
heads[1].on.click(); out.push(order());
heads[1].on.click(); out.push(order());
heads[0].on.click(); out.push(order());
console.log(out.join(" "));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_table_sort_script(report, tmp_path):
    path, doc = report
    script = next(s for s in doc.find_all("script") if "type" not in s.attrs).all_text()
    js = tmp_path / "sort.js"
    js.write_text(FAKE_DOM.replace("SCRIPT", json.dumps(script)), encoding="utf-8")
    out = subprocess.run(["node", str(js)], capture_output=True, text=True, timeout=30, check=True)
    # Numbers sort numerically, empty cells last; a second click reverses; text sorts too.
    assert out.stdout.split() == ["cabd", "dbac", "abcd"]
