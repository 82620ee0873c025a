"""Each entry point ends a user error the same way, and a broken install fails loudly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diagnostics.result import CheckResult, Status

REPO = Path(__file__).resolve().parents[1]

# A meta-path finder that makes one module fail to import, as a half-installed or broken package would.
BROKEN_GATE = """
import sys
class Broken:
    def find_spec(self, name, path=None, target=None):
        if name == "diagnostics.gate.cli":
            raise ImportError("simulated broken install of diagnostics.gate.cli")
sys.meta_path.insert(0, Broken())
import diagnostics.cli
print(sorted(c.name for c in diagnostics.cli.app.registered_commands))
"""


def test_a_broken_gate_install_fails_loudly_instead_of_hiding_the_command():
    proc = subprocess.run([sys.executable, "-c", BROKEN_GATE], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0, proc.stdout
    assert "simulated broken install" in proc.stderr


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-m", "moola.cli", "data", "inspect", "no/such/file.parquet"], "no/such/file.parquet"),
        (["-m", "diagnostics.cli", "data", "--data", "no/such/file.parquet"], "no/such/file.parquet"),
        (["-m", "diagnostics.gate", "--base", "no-such-revision-xyz"], "no-such-revision-xyz"),
    ],
)
def test_every_entry_point_prints_one_line_and_exits_2(argv, needle):
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "error:" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_pass_carries_no_hint_whoever_builds_it():
    built = CheckResult("c", "f", Status.PASS, "m", "e", hint="do something")
    assert built.hint == "" and built.to_dict()["hint"] == ""
    warn = CheckResult("c", "f", Status.WARN, "m", "e", hint="do something")
    assert warn.hint == "do something"
