"""``run(base, head)``: measure two revisions side by side and decide whether head regresses.

1. resolve both revisions (``git rev-parse``; unknown -> MoolaError); ``WORKTREE`` means the current,
   possibly dirty working tree, ``HEAD`` the committed HEAD;
2. export each commit with ``git archive`` into a temp dir (no worktree metadata, no checkout: the
   user's repository and working tree are never touched);
3. start one worker subprocess per revision: THIS revision's ``worker.py`` (and ``physics.py``, the
   FLOP ruler) copied into the temp dir, run with PYTHONPATH = that revision's tree, single-threaded;
4. alternate timed rounds between them, A B B A A B ... (counterbalances slow drift), after burn-in;
5. timings -> ``stats.compare_timings`` (MWU + Hodges-Lehmann), counters -> ``stats.compare_counters``
   (exact). Anything that could not be measured makes the report an error (exit 2), never a pass.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnostics.gate.report import GateReport, RevisionInfo
from diagnostics.gate.stats import compare_counters, compare_timings
from moola.errors import MoolaError
from moola.io import atomic_write_text

WORKTREE = "WORKTREE"
_HERE = Path(__file__).resolve().parent
WORKER_SOURCE = _HERE / "worker.py"
PHYSICS_SOURCE = _HERE.parent / "physics.py"

# Environment pinned for both workers: one thread everywhere, fixed hashing, no GPU, no bytecode litter.
PINNED_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONUNBUFFERED": "1",
}


class WorkerError(RuntimeError):
    """A measurement worker crashed, hung or spoke nonsense: the gate reports 'could not measure'."""


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=check)


def repo_root(path: str | os.PathLike[str] | None = None) -> Path:
    where = Path(path or Path.cwd())
    proc = _git(where, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise MoolaError(f"{where} is not inside a git repository (the gate compares git revisions)")
    return Path(proc.stdout.strip())


def resolve_revision(repo: Path, rev: str, label: str) -> RevisionInfo:
    """A revision spec -> RevisionInfo; MoolaError (one line) when git does not know it."""
    if rev == WORKTREE:
        return RevisionInfo(label=label, spec=rev, sha=WORKTREE, subject="uncommitted working tree")
    if not rev or rev.startswith("-"):
        raise MoolaError(f"--{label}: {rev!r} is not a git revision")
    proc = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise MoolaError(f"--{label}: revision {rev!r} does not exist in {repo}")
    sha = proc.stdout.strip()
    subject = _git(repo, "log", "-1", "--format=%s", sha, check=False).stdout.strip()
    return RevisionInfo(label=label, spec=rev, sha=sha, subject=subject)


def materialize(repo: Path, rev: RevisionInfo, dest: Path) -> Path:
    """The revision's tree as a directory: an export of the commit, or the working tree itself."""
    if rev.sha == WORKTREE:
        return repo
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", "-C", str(repo), "archive", "--format=tar", rev.sha], stdout=subprocess.PIPE
    )
    try:
        untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True)
    finally:
        if archive.stdout is not None:
            archive.stdout.close()
        archive.wait()
    if archive.returncode != 0 or untar.returncode != 0:
        raise WorkerError(
            f"could not export {rev.label} {rev.sha[:10]}: {untar.stderr.decode(errors='replace')[-200:]}"
        )
    return dest


@dataclass
class _Worker:
    label: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    timeout_s: float
    ready: dict[str, Any] | None = None

    def _stderr_tail(self) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def fail(self, what: str) -> WorkerError:
        code = self.proc.poll()
        tail = self._stderr_tail()
        status = f"exit {code}" if code is not None else "still running"
        return WorkerError(f"{self.label} worker {what} ({status}){': ' + tail if tail else ''}")

    def read(self, timeout_s: float | None = None) -> dict[str, Any]:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout_s if timeout_s is not None else self.timeout_s):
                raise self.fail(f"gave no answer within {timeout_s or self.timeout_s:.0f} s")
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise self.fail("exited without answering")
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            raise self.fail(f"sent a malformed line {line[:80]!r}") from None
        if msg.get("type") == "error":
            self.proc.wait(timeout=10)
            raise WorkerError(f"{self.label} worker failed: {msg.get('message')}")
        return msg

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self.fail("closed its input") from None

    def round(self) -> float:
        self.send("round")
        msg = self.read()
        seconds = msg.get("seconds")
        if msg.get("type") != "round" or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise self.fail(f"sent an unexpected message {msg!r}")
        return float(seconds)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=10)
            except (WorkerError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def _start_worker(
    label: str,
    tree: Path,
    workdir: Path,
    *,
    python: str,
    model: str,
    epochs_per_round: int,
    n_windows: int,
    burn_in: int,
    threads: int,
    timeout_s: float,
    extra_env: dict[str, str] | None,
    cpu: int | None,
) -> _Worker:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PINNED_ENV)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(tree)
    env.update(extra_env or {})
    cmd = [
        python,
        str(workdir / "moola_gate_worker.py"),
        "--root",
        str(tree),
        "--model",
        model,
        "--epochs-per-round",
        str(epochs_per_round),
        "--windows",
        str(n_windows),
        "--burn-in",
        str(burn_in),
        "--threads",
        str(threads),
    ]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    stderr_path = workdir / f"{label}.stderr.log"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=str(workdir),  # not the tree: a stray relative write must not land in the user's repo
            env=env,
        )
    return _Worker(label=label, proc=proc, stderr_path=stderr_path, timeout_s=timeout_s)


def _pick_cpu() -> int | None:
    if not hasattr(os, "sched_getaffinity"):
        return None
    return max(os.sched_getaffinity(0))


def run(
    base: str,
    head: str = "HEAD",
    factor: float = 1.10,
    *,
    rounds: int = 15,
    epochs_per_round: int = 4,
    n_windows: int = 0,
    burn_in: int = 2,
    alpha: float = 0.01,
    threads: int = 1,
    model: str = "jade_compact",
    repo: str | os.PathLike[str] | None = None,
    markdown: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    python: str | None = None,
    round_timeout_s: float = 120.0,
    startup_timeout_s: float = 300.0,
    worker_env: dict[str, dict[str, str]] | None = None,
    progress: Callable[[str], None] | None = None,
    pin_cpu: bool = True,
) -> GateReport:
    """Compare ``head`` against ``base`` and return the report (its ``exit_code`` is the gate's verdict).

    Raises MoolaError for bad input (unknown revision, bad option); everything that goes wrong while
    measuring ends up in ``report.errors`` (exit code 2) so the Markdown still explains it.
    ``worker_env`` adds environment variables per side ({"head": {...}}), for experiments and tests.
    ``pin_cpu`` pins both single-threaded workers to the same CPU (the last one this process may use):
    otherwise the scheduler may leave one revision on a core shared with a busy neighbour all run long,
    a per-process bias that pairing rounds cannot remove.
    """
    if not factor > 1.0:
        raise MoolaError(f"--factor must be > 1.0 (got {factor})")
    if rounds < 2:
        raise MoolaError(f"--rounds must be >= 2 (got {rounds})")
    if epochs_per_round < 1 or burn_in < 0 or threads < 1 or n_windows < 0:
        raise MoolaError("--epochs-per-round and --threads must be >= 1, --burn-in and --windows >= 0")
    if not 0 < alpha < 1:
        raise MoolaError(f"--alpha must be in (0, 1) (got {alpha})")
    say = progress or (lambda _msg: None)
    root = repo_root(repo)
    base_rev = resolve_revision(root, base, "base")
    head_rev = resolve_revision(root, head, "head")
    cpu = _pick_cpu() if pin_cpu and threads == 1 else None
    settings = {
        "factor": factor,
        "alpha": alpha,
        "rounds": rounds,
        "epochs_per_round": epochs_per_round,
        "n_windows": n_windows or "all",
        "burn_in": burn_in,
        "threads": threads,
        "model": model,
        "order": "ABBA-interleaved",
        "cpu": cpu,
    }
    report = GateReport(base=base_rev, head=head_rev, settings=settings)
    t_start = time.perf_counter()
    workers: list[_Worker] = []
    with tempfile.TemporaryDirectory(prefix="moola-gate-") as tmp:
        tmpdir = Path(tmp)
        try:
            shutil.copyfile(WORKER_SOURCE, tmpdir / "moola_gate_worker.py")
            if PHYSICS_SOURCE.exists():
                shutil.copyfile(PHYSICS_SOURCE, tmpdir / "moola_gate_physics.py")
            trees = {}
            for rev in (base_rev, head_rev):
                say(f"exporting {rev.label} {rev.spec} ({rev.sha[:10]})")
                trees[rev.label] = materialize(root, rev, tmpdir / rev.label)
            for label in ("base", "head"):
                workers.append(
                    _start_worker(
                        label,
                        trees[label],
                        tmpdir,
                        python=python or sys.executable,
                        model=model,
                        epochs_per_round=epochs_per_round,
                        n_windows=n_windows,
                        burn_in=burn_in,
                        threads=threads,
                        timeout_s=round_timeout_s,
                        extra_env=(worker_env or {}).get(label),
                        cpu=cpu,
                    )
                )
            say("workers started: setup, counters and burn-in")
            for w in workers:
                msg = w.read(startup_timeout_s)
                if msg.get("type") != "ready":
                    raise w.fail(f"sent {msg!r} instead of ready")
                w.ready = msg
                report.meta[w.label] = msg.get("meta", {})
            samples: dict[str, list[float]] = {"base": [], "head": []}
            for i in range(rounds):
                order = workers if i % 2 == 0 else workers[::-1]
                for w in order:
                    samples[w.label].append(w.round())
                say(
                    f"round {i + 1}/{rounds}: base {samples['base'][-1]:.3f} s, head {samples['head'][-1]:.3f} s"
                )
            report.samples = samples
            name = f"train {epochs_per_round} epoch(s) [{model}]"
            report.timings.append(
                compare_timings(name, samples["base"], samples["head"], factor=factor, alpha=alpha)
            )
            base_counters = {f"{k}[{model}]": v for k, v in workers[0].ready["counters"].items()}  # type: ignore[index]
            head_counters = {f"{k}[{model}]": v for k, v in workers[1].ready["counters"].items()}  # type: ignore[index]
            if not base_counters:
                report.errors.append("the base worker reported no counters")
            report.counters = compare_counters(base_counters, head_counters)
        except (WorkerError, OSError) as exc:
            report.errors.append(str(exc))
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: stop the workers now, not after their round
            for w in workers:
                w.proc.kill()
            raise
        finally:
            for w in workers:
                w.close()
    report.wall_s = time.perf_counter() - t_start
    if markdown is not None:
        atomic_write_text(markdown, report.to_markdown())
    if json_path is not None:
        from moola.io import atomic_write_json

        atomic_write_json(json_path, report.to_dict())
    return report
