"""The default-profile report in headless Chromium, with the network shut: grid, plots, records.

Skipped when no Chromium is installed (its parsed-HTML twin is tests/test_report_runs.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from test_report_runs import N_CLAIMS, QUICK, default_profile_run, render

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((b for b in BROWSERS if shutil.which(b)), None)

# Appended to a copy of the report: measures what the browser laid out and writes it into the
# DOM, which --dump-dom prints. Runs after the report's own script (it sorts on click).
PROBE = """
<script>
(function () {
  function shown(el) {
    if (!el) return false;
    var r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 20 && r.height > 20 && s.visibility !== "hidden" && s.display !== "none";
  }
  var out = {};
  out.grid = shown(document.getElementById("overview"));
  out.cells = Array.prototype.map.call(
    document.querySelectorAll("#overview td.cell"),
    function (c) { return [c.className, getComputedStyle(c).backgroundColor]; });
  out.plots = Array.prototype.map.call(
    document.querySelectorAll("section.claim .plot svg"),
    function (s) { return [s.closest("section").id, shown(s), s.parentNode.className]; });
  out.records_shown = shown(document.getElementById("records"));
  out.records_rows = document.querySelectorAll("#records tbody tr").length;
  out.records_json = JSON.parse(
    document.getElementById("ntkcheck-records").textContent).data.length;
  var th = document.querySelectorAll("#records thead th");
  var col = Array.prototype.findIndex.call(th, function (h) { return h.textContent === "value"; });
  th[col].click();
  out.sorted = Array.prototype.map.call(
    document.querySelectorAll("#records tbody tr"),
    function (r) { return Number(r.cells[col].textContent); });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed")
def test_default_report_in_headless_chromium_without_network(tmp_path):
    run = default_profile_run()
    path = render(run, tmp_path / "report.html")
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    dom = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
         "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--window-size=1280,1024", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert match, dom[-2000:]
    out = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))

    assert out["grid"]
    _, av = run.verdicts()
    assert len(out["cells"]) == len(av) * len(QUICK.widths)
    colours = {cls.split()[1]: bg for cls, bg in out["cells"]}
    assert set(colours) == {"holds", "fails"}
    assert colours["holds"] != colours["fails"]
    assert all(bg not in ("rgba(0, 0, 0, 0)", "transparent") for bg in colours.values())

    width_plots = [p for p in out["plots"] if p[2] == "plot"]
    assert sorted(p[0] for p in width_plots) == sorted(f"claim-{i}" for i in range(N_CLAIMS))
    assert all(p[1] for p in out["plots"])  # every plot laid out with a visible size
    assert len([p for p in out["plots"] if p[2] == "plot depth-plot"]) == N_CLAIMS // 2
    needed = [p for p in out["plots"] if p[2] == "plot needed-plot"]  # width needed vs depth
    assert needed and len(out["plots"]) == len(width_plots) + N_CLAIMS // 2 + len(needed)

    assert out["records_shown"]
    assert out["records_rows"] == out["records_json"] == len(run.records)
    assert out["sorted"] == sorted(out["sorted"])
