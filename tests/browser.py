"""Render an HTML page in headless Chromium (Debian's ``chromium``) as a user's browser would.

:func:`render` loads a copy of the page with a small probe script injected first in
``<head>``; after the load event the probe writes into the DOM whether every ``<img>``
decoded (``complete && naturalWidth > 0``), every error event and ``console.error``
call, and every resource fetched other than ``data:`` URIs (a self-contained page
fetches none). ``--dump-dom`` returns that DOM. Then the original page is screenshot
at its full height.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
WIDTH = 1400

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target || {};
  window.__errors.push(String(e.message || ('failed to load ' + (t.src || t.href || t.tagName))));
}, true);
(function () { var ce = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return {alt: i.alt, ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, h: i.naturalHeight,
            shown_w: i.getBoundingClientRect().width}; });
  var res = performance.getEntriesByType('resource').map(function (r) { return r.name; })
    .filter(function (n) { return n.indexOf('data:') !== 0; });
  var pre = document.createElement('pre'); pre.id = '__probe';
  pre.textContent = JSON.stringify({images: imgs, errors: window.__errors, resources: res,
    height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth});
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(exe: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="glcnet-chromium-") as profile:
        env = {**os.environ, "HOME": profile}  # nothing of the user's profile or cache
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)


def render(page: Path, screenshot: Path, exe: str, timeout: float = 120) -> dict:
    """Load ``page`` in headless Chromium; return the probe's findings and write a full-page screenshot."""
    page = Path(page).resolve()
    text = page.read_text()
    probed = page.with_name(page.stem + ".probe.html")  # same folder: relative links resolve alike
    probed.write_text(re.sub(r"<head>", "<head>" + PROBE, text, count=1))
    try:
        p = _run(exe, [f"--window-size={WIDTH},900", "--virtual-time-budget=10000", "--dump-dom",
                       probed.as_uri()], timeout)
    finally:
        probed.unlink(missing_ok=True)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', p.stdout, re.DOTALL)
    if m is None:
        raise AssertionError(f"chromium did not run the page's load event (rc {p.returncode}):\n{p.stderr[-2000:]}")
    found = json.loads(html.unescape(m.group(1)))
    height = min(max(int(found["height"]), 600), 16000)
    s = _run(exe, [f"--window-size={WIDTH},{height}", "--virtual-time-budget=10000",
                   f"--screenshot={Path(screenshot).resolve()}", page.as_uri()], timeout)
    if not Path(screenshot).is_file():
        raise AssertionError(f"chromium wrote no screenshot (rc {s.returncode}):\n{s.stderr[-2000:]}")
    return found


def check_page(found: dict, min_images: int) -> None:
    """Every image decoded and shown, nothing fetched from outside the page, no error, no horizontal overflow."""
    images = found["images"]
    assert len(images) >= min_images, f"{len(images)} images on the page, expected >= {min_images}"
    broken = [i["alt"] for i in images if not i["ok"]]
    assert not broken, f"images that did not load: {broken}"
    assert all(i["shown_w"] > 20 for i in images), "an image is displayed (nearly) zero wide"
    assert found["errors"] == [], found["errors"]
    assert found["resources"] == [], f"the page fetched {found['resources']}"
    assert found["width"] <= WIDTH, f"page is {found['width']} px wide in a {WIDTH} px window"
