"""Measure the gate's power and false-alarm rate on this machine, with REAL revisions.

    python -m diagnostics.gate.sensitivity --trials 20

builds a throwaway git repository in a temp dir from the current working tree (tracked + untracked,
not ignored: the snapshot you are about to merge), commits it as ``base``, then commits variants:

* ``slow``   -- the training step sleeps (``--inject sleep``, default) or busy-waits (``--inject spin``)
               ``--slowdown`` (default 20%) of its own duration after ``optimizer.step()``: a real code
               change, self-calibrating, so "20% slower per step" holds whatever the machine's speed;
* ``hidden`` -- jade_compact registered with twice its hidden size (checked once with ``--check-hidden``).

and runs the gate ``--trials`` times on base..slow (a detection = exit 1 with the timing named) and
``--trials`` times on base..base (a false alarm = exit 1), alternating the two so both see the same
machine conditions. Prints and writes the counts, per-run seconds and every report to a JSON file.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diagnostics.gate.core import repo_root, run
from moola.errors import MoolaError
from moola.io import atomic_write_json

_GIT_ID = ["-c", "user.name=moola-gate", "-c", "user.email=gate@moola.invalid", "-c", "commit.gpgsign=false"]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *_GIT_ID, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def snapshot_repo(src: Path, dest: Path) -> str:
    """A fresh git repo at ``dest`` holding the working tree of ``src`` (tracked + untracked, not ignored)."""
    files = subprocess.run(
        ["git", "-C", str(src), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    dest.mkdir(parents=True, exist_ok=True)
    for raw in files:
        if not raw:
            continue
        rel = Path(os.fsdecode(raw))
        source = src / rel
        if not source.is_file():  # deleted but still tracked
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / rel)
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "base: working-tree snapshot")
    return _git(dest, "rev-parse", "HEAD")


def commit_variant(
    repo: Path, base_sha: str, branch: str, patch: Callable[[Path], None], message: str
) -> str:
    """Branch ``branch`` off ``base_sha``, apply ``patch(repo)``, commit; returns the new sha.

    Uses ``git checkout`` inside the THROWAWAY repo only, and returns to ``main`` afterwards.
    """
    _git(repo, "checkout", "-q", "-b", branch, base_sha)
    try:
        patch(repo)
        _git(repo, "commit", "-q", "-am", message)
        return _git(repo, "rev-parse", "HEAD")
    finally:
        _git(repo, "checkout", "-q", "main")


def patch_slow_step(fraction: float, mode: str = "sleep") -> Callable[[Path], None]:
    """Make every training step ``fraction`` longer, after optimizer.step(), in proportion to its own time.

    ``mode="sleep"`` sleeps (time.sleep overshoots by tens of microseconds, more on a busy machine, so
    the realized slowdown is somewhat above ``fraction``); ``mode="spin"`` busy-waits, which adds
    exactly ``fraction`` of wall time and burns CPU like real extra compute.
    """
    if mode not in ("sleep", "spin"):
        raise ValueError(f"mode must be sleep or spin, got {mode!r}")

    def patch(repo: Path) -> None:
        path = repo / "moola" / "train" / "trainer.py"
        text = path.read_text()
        start = re.compile(r"^(?P<indent>[ \t]+)loss, logits, _ = _loss\(", re.M)
        step = re.compile(r"^(?P<indent>[ \t]+)optimizer\.step\(\)\n", re.M)
        if len(start.findall(text)) != 1 or len(step.findall(text)) != 1:
            raise RuntimeError("slow-step patch: the training step in moola/train/trainer.py changed shape")
        text = start.sub(lambda m: f"{m['indent']}_gate_t0 = time.perf_counter()\n{m[0]}", text)

        def inject(m: re.Match[str]) -> str:
            ind = m["indent"]
            if mode == "sleep":
                return f"{m[0]}{ind}time.sleep({fraction!r} * (time.perf_counter() - _gate_t0))\n"
            return (
                f"{m[0]}{ind}_gate_end = time.perf_counter() + {fraction!r} * (time.perf_counter() - _gate_t0)\n"
                f"{ind}while time.perf_counter() < _gate_end:\n{ind}    pass\n"
            )

        text = step.sub(inject, text)
        if not re.search(r"^import time$", text, re.M):
            text = "import time\n" + text
        path.write_text(text)

    return patch


def patch_double_hidden(model: str = "jade_compact") -> Callable[[Path], None]:
    """Register ``model`` with twice its default hidden size (more parameters, FLOPs and bytes)."""

    def patch(repo: Path) -> None:
        path = repo / "moola" / "models" / "__init__.py"
        path.write_text(
            path.read_text()
            + "\n\n# gate trial: twice the hidden size\n"
            + "import dataclasses as _dc  # noqa: E402\n\n"
            + f"_spec = _SPECS[{model!r}]\n"
            + f"_SPECS[{model!r}] = _dc.replace(_spec, defaults={{**_spec.defaults, "
            + '"hidden_size": 2 * _spec.defaults["hidden_size"]})\n'
        )

    return patch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diagnostics.gate.sensitivity", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--trials", type=int, default=20, help="trials of each kind (slow head, identical head)"
    )
    parser.add_argument("--slowdown", type=float, default=0.2, help="injected per-step slowdown (0.2 = 20%%)")
    parser.add_argument(
        "--inject", choices=("sleep", "spin"), default="sleep", help="how the slow head slows"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin both workers to one CPU")
    parser.add_argument("--factor", type=float, default=1.10)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--epochs-per-round", type=int, default=4)
    parser.add_argument("--check-hidden", action="store_true", help="also run one base..hidden-x2 gate")
    parser.add_argument("--out", default="reports/gate-sensitivity.json", help="JSON with every trial")
    parser.add_argument("--repo", default=None, help="source working tree (default: the current repo)")
    args = parser.parse_args(argv)

    src = repo_root(args.repo)
    results: dict[str, Any] = {"settings": vars(args), "slow": [], "identical": [], "hidden": None}
    with tempfile.TemporaryDirectory(prefix="moola-gate-trials-") as tmp:
        repo = Path(tmp) / "repo"
        base = snapshot_repo(src, repo)
        slow = commit_variant(
            repo, base, "slow", patch_slow_step(args.slowdown), f"sleep {args.slowdown:.0%} per step"
        )
        print(f"trial repo {repo}: base {base[:10]}, slow {slow[:10]}", flush=True)

        def gate(head: str) -> dict[str, Any]:
            t0 = time.perf_counter()
            report = run(
                base,
                head,
                args.factor,
                rounds=args.rounds,
                epochs_per_round=args.epochs_per_round,
                alpha=args.alpha,
                repo=repo,
                pin_cpu=not args.no_pin,
            )
            out = report.to_dict()
            out["seconds"] = time.perf_counter() - t0
            return out

        if args.check_hidden:
            hidden = commit_variant(repo, base, "hidden", patch_double_hidden(), "jade_compact hidden x2")
            r = gate(hidden)
            results["hidden"] = r
            print(f"hidden x2: exit {r['exit_code']}; regressions: {r['regressions']}", flush=True)

        for i in range(args.trials):
            for kind, head in (("slow", slow), ("identical", base)):
                r = gate(head)
                results[kind].append(r)
                t = r["timings"][0] if r["timings"] else {}
                print(
                    f"trial {i + 1:2d} {kind:9s}: exit {r['exit_code']}  ratio {t.get('ratio', float('nan')):.3f}"
                    f"  p {t.get('p_slower', float('nan')):.2g}  {r['seconds']:.1f} s",
                    flush=True,
                )

    def timing_regressed(r: dict[str, Any]) -> bool:
        return r["exit_code"] == 1 and any(t["verdict"] == "regression" for t in r["timings"])

    detections = sum(timing_regressed(r) for r in results["slow"])
    false_alarms = sum(r["exit_code"] == 1 for r in results["identical"])
    errors = sum(r["exit_code"] == 2 for r in results["slow"] + results["identical"])
    seconds = [r["seconds"] for r in results["slow"] + results["identical"]]
    summary = {
        "detections": detections,
        "false_alarms": false_alarms,
        "errors": errors,
        "trials": args.trials,
        "seconds_per_gate_median": statistics.median(seconds) if seconds else None,
        "seconds_per_gate_max": max(seconds) if seconds else None,
        "slow_ratio_median": statistics.median(
            r["timings"][0]["ratio"] for r in results["slow"] if r["timings"]
        )
        if results["slow"]
        else None,
    }
    results["summary"] = summary
    atomic_write_json(args.out, results)
    print(
        f"detected {detections}/{args.trials} injected {args.slowdown:.0%} slowdowns; "
        f"{false_alarms}/{args.trials} false alarms on identical revisions; {errors} errors; "
        f"{summary['seconds_per_gate_median'] or 0:.1f} s per gate run (max {summary['seconds_per_gate_max'] or 0:.1f} s)"
        f" -> {args.out}"
    )
    return 0 if errors == 0 else 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MoolaError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
