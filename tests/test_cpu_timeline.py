"""scripts/cpu-timeline: the CPU a command's process tree spent, process by process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cpu-timeline"
# Burns 3 s of CPU (not of wall time: a loaded machine only stretches it), in a child and in its child.
SPIN = "import time\nwhile time.process_time() < 3.0: pass\n"
PARENT = f"import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', {SPIN!r}])\n{SPIN}p.wait()\n"


def test_the_cpu_of_a_command_and_of_its_child_is_counted_per_process():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--every", "1", "--", sys.executable, "-c", PARENT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    totals = [float(m) for m in re.findall(r"^\s+\d+\s+([\d.]+)\s", out.stdout, re.M)]
    # Two processes of 3 s each; the last half-second sample interval before each exit may be missed.
    assert sorted(totals)[-2] >= 1.5 and sum(totals) < 6.5, out.stdout


def test_no_command_is_one_line_and_exit_2():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
