"""The HTML report in a real headless Chromium (Debian's `chromium`): it renders, every image
loads, every contents link lands on an element id, and a screenshot is a non-trivial PNG.
Without chromium the tests skip — except on CI (env CI set), where they fail."""
import json
import os
import re
import shutil
import subprocess

import pytest

from analysis.pipeline import analyse
from analysis.report import write_report
from analysis.synthetic import grid, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
CHECK_JS = """<script>window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; });
  var links = Array.from(document.querySelectorAll('a[href^="#"]'));
  var dead = links.filter(function (a) { return !document.getElementById(a.getAttribute("href").slice(1)); })
                  .map(function (a) { return a.getAttribute("href"); });
  var p = document.createElement("pre"); p.id = "ncsweep-check";
  p.textContent = JSON.stringify({images: imgs.length, broken: broken, links: links.length, dead: dead,
                                  alts: imgs.map(function (i) { return i.alt; }),
                                  contents: document.querySelectorAll("#contents a").length,
                                  h1: document.querySelector("h1").textContent});
  document.body.appendChild(p);
});</script>"""


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: CI must install Debian's `chromium` (see .ci/run)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    trials = grid(seeds=2, arch=["resnet18", "vgg11"], lr=[1e-3, 1e-1], bias_level=[0.0, 0.9])
    trials[0].update(status="failed", error="RuntimeError: <script>alert(1)</script>")   # escaped, not run
    run = write_run(root / "run", trials, epochs=3)
    res = analyse(run, metrics=["test_worst_group_acc", "train_nc1", "test_gap"], fanova=False)
    html, _ = write_report(res, root / "report", "browser test", [("Study: demo", "<p id='study-p'>study html</p>", "x")])
    return html


def _run(chromium, args, tmp_path, timeout=120):
    cmd = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_report_renders_images_load_and_contents_links_resolve(chromium, page, tmp_path):
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", CHECK_JS + "</body>"))
    out = _run(chromium, ["--virtual-time-budget=5000", "--dump-dom", checked.as_uri()], tmp_path)
    m = re.search(r'<pre id="ncsweep-check">(.*?)</pre>', out.stdout, re.S)
    assert m, out.stderr[-2000:]
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert got["h1"] == "browser test"
    assert got["images"] >= 3 and got["broken"] == [], got
    # the visual way in: both figures are in the summary, loaded, and come before the leaderboard
    first = got["alts"][:2]
    assert first[0].startswith("parallel coordinates: every configuration, coloured by ") and \
        first[1].startswith("parameter importance for "), got["alts"]
    assert got["contents"] >= 6 and got["dead"] == [], got
    assert "<script>alert(1)</script>" not in page.read_text()        # record errors are escaped
    assert "study html" in out.stdout                                  # study sections keep their HTML


def test_report_screenshot_is_a_real_image(chromium, page, tmp_path):
    shot = tmp_path / "shot.png"
    _run(chromium, ["--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()], tmp_path)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000, len(data)
