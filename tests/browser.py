"""Open a page in headless Chromium (Debian's package; scripts/ensure-chromium installs it where missing)
and report what a person would see: console messages, and each plot's rendered size and drawn marks."""

from __future__ import annotations

import html
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", "--mute-audio"]  # fmt: skip

# Appended to a copy of the page: measures every plot as laid out, after load.
PROBE = """<script>
(() => {
  const plots = [...document.querySelectorAll('figure.plot')].map(f => {
    const svg = f.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const marks = svg ? [...svg.querySelectorAll('path, line, polyline, polygon, rect, use, text')]
      .filter(e => { const b = e.getBBox(); return b.width > 0 || b.height > 0; }).length : 0;
    return {plot: f.dataset.plot, width: box.width, height: box.height, marks: marks};
  });
  const out = document.createElement('pre');
  out.id = 'moola-probe';
  out.textContent = JSON.stringify({plots: plots, plot_errors: document.querySelectorAll('.plot-error').length});
  document.body.appendChild(out);
})();
</script>"""


def chromium() -> str:
    """The Chromium binary, installed by the project's own set-up script when missing (apt-get, as root)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "ensure-chromium")], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise RuntimeError(
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "ensure-chromium failed"
        )
    return proc.stdout.strip().splitlines()[-1]


@dataclass
class Seen:
    console: list[str]  # every console message (the pages have no scripts: any message is an error)
    plots: list[dict[str, Any]]
    plot_errors: int


def open_page(binary: str, page: str, workdir: Path) -> Seen:
    probe_page = workdir / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    proc = subprocess.run(
        [binary, *FLAGS, "--enable-logging=stderr", "--v=0", f"--user-data-dir={workdir / 'profile'}",
         "--dump-dom", probe_page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'<pre id="moola-probe">(.*?)</pre>', proc.stdout, re.S)
    if found is None:
        raise AssertionError(f"the probe did not run (exit {proc.returncode}): {proc.stderr[-2000:]}")
    probe = json.loads(html.unescape(found.group(1)))
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return Seen(console=console, plots=probe["plots"], plot_errors=probe["plot_errors"])


def screenshot(binary: str, page: Path, out: Path, width: int = 1100, height: int = 2000) -> None:
    subprocess.run(
        [binary, *FLAGS, f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
