"""``run(base, head)``: measure two revisions side by side and decide whether head regresses.

1. resolve both revisions (``git rev-parse``; unknown -> MoolaError); ``WORKTREE`` means the current,
   possibly dirty working tree, ``HEAD`` the committed HEAD;
2. export each commit with ``git archive`` into a temp dir (no worktree metadata, no checkout: the
   user's repository and working tree are never touched);
3. start one worker subprocess per revision: THIS revision's ``worker.py`` copied into the temp dir,
   run with PYTHONPATH = that revision's tree, single-threaded. Each worker discovers the asv-style
   benchmarks of ITS revision (``benchmarks/*.py``), so each revision's own definitions measure it;
4. ``--bench REGEX`` selects among the benchmarks both sides define (selecting none: MoolaError); both
   workers set them up and compute the ``track_`` counters in parallel, then, pinned to one CPU, take
   interleaved samples of every ``time_``/``peakmem_`` benchmark, base and head back to back with the
   order alternating (A B, B A, ...: counterbalances drift), each benchmark for its ``gate_rounds``;
   the rounds are split over ``processes`` successive worker pairs (a process's own speed is then one
   of several draws, not a bias on every pair), the later pairs reusing the first's ``setup_cache``;
5. samples -> ``stats.compare_timings`` (paired one-sided Wilcoxon signed-rank, Hodges-Lehmann ratio with
   its own distribution-free CI), adjusted together with ``stats.holm``; counters ->
   ``stats.compare_counters`` (per-benchmark relative tolerance; an entry of head's
   ``benchmarks/accepted.json`` accepts an intended change). Anything that could not be measured makes
   the report an error (exit 2), never a pass.
"""

from __future__ import annotations

import json
import math
import os
import re
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
from diagnostics.gate.stats import (
    CounterSpec,
    compare_counters,
    compare_quality,
    compare_timings,
    holm,
    holm_quality,
)
from moola.errors import MoolaError
from moola.io import atomic_write_text

WORKTREE = "WORKTREE"
_HERE = Path(__file__).resolve().parent
WORKER_SOURCE = _HERE / "worker.py"
ACCEPTED_FILE = "benchmarks/accepted.json"

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
    sha: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    timeout_s: float
    listing: dict[str, Any] | None = None

    def _stderr_tail(self) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def _where(self) -> str:
        return f"{self.label} ({_short(self.sha)})"

    def fail(self, what: str) -> WorkerError:
        code = self.proc.poll()
        tail = self._stderr_tail()
        status = f"exit {code}" if code is not None else "still running"
        return WorkerError(f"{self._where()} worker {what} ({status}){': ' + tail if tail else ''}")

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
            bench = msg.get("benchmark")
            what = (
                f"benchmark {bench} crashed on {self._where()}" if bench else f"{self._where()} worker failed"
            )
            raise WorkerError(f"{what}: {msg.get('message')}")
        return msg

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self.fail("closed its input") from None

    def expect(self, kind: str, timeout_s: float | None = None) -> dict[str, Any]:
        msg = self.read(timeout_s)
        if msg.get("type") != kind:
            raise self.fail(f"sent {str(msg)[:120]} instead of {kind}")
        return msg

    def sample(self, name: str, number: int | None = None) -> float:
        self.send(cmd="sample", name=name, number=number)
        value = self.expect("sample").get("value")
        if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise self.fail(f"measured {value!r} for {name}")
        return float(value)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
                self.proc.wait(timeout=10)
            except (WorkerError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def _short(sha: str) -> str:
    return sha if sha == WORKTREE else sha[:10]


def _start_worker(
    label: str,
    sha: str,
    tree: Path,
    workdir: Path,
    *,
    python: str,
    threads: int,
    timeout_s: float,
    extra_env: dict[str, str] | None,
    process: int = 0,
) -> _Worker:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PINNED_ENV)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(tree)
    env.update(extra_env or {})
    cache_dir = workdir / f"{label}-cache"  # one per revision, shared by its successive workers
    cache_dir.mkdir(exist_ok=True)
    cmd = [python, str(workdir / "moola_gate_worker.py"), "--root", str(tree), "--threads", str(threads)]
    cmd += ["--cache-dir", str(cache_dir)]
    rundir = workdir / f"{label}-run"  # not the tree: a stray relative write lands here
    rundir.mkdir(exist_ok=True)
    stderr_path = workdir / f"{label}-{process}.stderr.log"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=str(rundir),
            env=env,
        )
    return _Worker(label=label, sha=sha, proc=proc, stderr_path=stderr_path, timeout_s=timeout_s)


def _pick_cpu() -> int | None:
    if not hasattr(os, "sched_getaffinity"):
        return None
    return max(os.sched_getaffinity(0))


def round_schedule(n_rounds: dict[str, int], processes: int) -> list[list[list[str]]]:
    """Which benchmarks sample in which round, split over ``processes`` successive worker pairs.

    The run has max(n_rounds) rounds; a benchmark with fewer takes its samples spread evenly over them
    (not bunched at the start), so every benchmark sees the whole run and every worker pair. Returns
    one list of rounds per worker pair, each round the names due in it, in the given order.
    """
    total = max(n_rounds.values(), default=0)
    due = {n: {int((k + 0.5) * total / r) for k in range(r)} for n, r in n_rounds.items()}
    rounds = [[n for n in n_rounds if i in due[n]] for i in range(total)]
    pairs = max(1, min(processes, total))
    return [rounds[k * total // pairs : (k + 1) * total // pairs] for k in range(pairs)]


def compile_selection(bench: str | None) -> re.Pattern[str] | None:
    """``--bench REGEX`` -> compiled pattern (MoolaError, one line, when it is not a regex)."""
    if bench is None or bench == "":
        return None
    try:
        return re.compile(bench)
    except re.error as exc:
        raise MoolaError(f"--bench: {bench!r} is not a regular expression ({exc})") from None


def load_accepted(path: Path) -> dict[str, tuple[float, str]]:
    """The acceptance file (``benchmarks/accepted.json`` of head): intended counter changes, each naming
    the benchmark (the counter), its new value and why. Missing file: nothing accepted. Malformed:
    MoolaError naming the file and the entry.

        {"accepted": [{"benchmark": "bench_training.Counters.track_parameters(jade_compact)",
                       "value": 112708, "reason": "wider encoder (PR 42)"}]}
    """
    if not path.exists():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MoolaError(f"{path}: not valid JSON ({exc})") from None
    entries = payload.get("accepted") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise MoolaError(f'{path}: expected {{"accepted": [...]}} at the top level')
    out: dict[str, tuple[float, str]] = {}
    for i, entry in enumerate(entries):
        where = f"{path}, entry {i}"
        if not isinstance(entry, dict):
            raise MoolaError(f"{where}: expected an object with benchmark, value and reason")
        name, value, reason = entry.get("benchmark"), entry.get("value"), entry.get("reason")
        unknown = sorted(set(entry) - {"benchmark", "value", "reason"})
        if unknown:
            raise MoolaError(f"{where}: unknown key(s) {', '.join(unknown)} (benchmark, value, reason)")
        if not isinstance(name, str) or not name:
            raise MoolaError(f"{where}: 'benchmark' must name the counter's benchmark")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MoolaError(f"{where} ({name}): 'value' must be the counter's new value, a number")
        if not isinstance(reason, str) or not reason.strip():
            raise MoolaError(f"{where} ({name}): 'reason' must say why the change is intended")
        if name in out:
            raise MoolaError(f"{where}: {name} is accepted twice")
        out[name] = (float(value), reason.strip())
    return out


def run(
    base: str,
    head: str = "HEAD",
    factor: float | None = None,
    *,
    bench: str | None = None,
    rounds: int | None = None,
    processes: int = 2,
    burn_in: int = 1,
    alpha: float = 0.05,
    quality_alpha: float = 0.02,
    threads: int = 1,
    min_sample_s: float = 0.05,
    repo: str | os.PathLike[str] | None = None,
    markdown: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    python: str | None = None,
    round_timeout_s: float = 300.0,
    startup_timeout_s: float = 3600.0,
    worker_env: dict[str, dict[str, str]] | None = None,
    progress: Callable[[str], None] | None = None,
    pin_cpu: bool = True,
) -> GateReport:
    """Compare ``head`` against ``base`` over the selected benchmarks; ``report.exit_code`` is the verdict.

    ``factor`` overrides every benchmark's own ``gate_factor`` (default 1.10) and ``rounds`` its
    ``gate_rounds`` (default 15); ``processes`` worker pairs share the rounds one after another;
    ``alpha`` is the family-wise significance level over all timed benchmarks (Holm), ``quality_alpha``
    over the quality benchmarks (distributions of trained-model scores; Holm, one-sided Mann-Whitney; a
    benchmark with ``gate_default = False`` only when ``bench`` selects it). Raises MoolaError for bad input
    (unknown revision, bad option, a ``bench`` selecting nothing, a malformed acceptance file);
    everything that goes wrong while measuring ends up in ``report.errors`` (exit code 2) so the
    Markdown still explains it. ``worker_env`` adds environment variables per side ({"head": {...}},
    both: {"*": {...}}), for experiments and tests. ``pin_cpu`` pins both single-threaded workers to the
    same CPU for the timed rounds (the last one this process may use).
    """
    if factor is not None and not factor > 1.0:
        raise MoolaError(f"--factor must be > 1.0 (got {factor})")
    if rounds is not None and rounds < 2:
        raise MoolaError(f"--rounds must be >= 2 (got {rounds})")
    if processes < 1:
        raise MoolaError(f"--processes must be >= 1 (got {processes})")
    if burn_in < 0 or threads < 1 or not min_sample_s > 0:
        raise MoolaError("--burn-in must be >= 0, --threads >= 1 and the sample time > 0")
    if not 0 < alpha < 1 or not 0 < quality_alpha < 1:
        raise MoolaError(f"--alpha and --quality-alpha must be in (0, 1) (got {alpha}, {quality_alpha})")
    selection = compile_selection(bench)
    say = progress or (lambda _msg: None)
    root = repo_root(repo)
    base_rev = resolve_revision(root, base, "base")
    head_rev = resolve_revision(root, head, "head")
    cpu = _pick_cpu() if pin_cpu and threads == 1 else None
    settings: dict[str, Any] = {
        "factor": factor if factor is not None else "per benchmark (default 1.10)",
        "alpha": alpha,
        "quality_alpha": quality_alpha,
        "correction": "holm",
        "rounds": rounds if rounds is not None else "per benchmark (default 15)",
        "processes": processes,
        "burn_in": burn_in,
        "bench": bench or "all",
        "threads": threads,
        "min_sample_s": min_sample_s,
        "order": "per-benchmark interleaved, alternating",
        "cpu": cpu,
    }
    report = GateReport(base=base_rev, head=head_rev, settings=settings)
    t_start = time.perf_counter()
    workers: list[_Worker] = []
    with tempfile.TemporaryDirectory(prefix="moola-gate-") as tmp:
        tmpdir = Path(tmp)
        try:
            shutil.copyfile(WORKER_SOURCE, tmpdir / "moola_gate_worker.py")
            trees = {}
            for rev in (base_rev, head_rev):
                say(f"exporting {rev.label} {rev.spec} ({_short(rev.sha)})")
                trees[rev.label] = materialize(root, rev, tmpdir / rev.label)
            accepted = load_accepted(trees["head"] / ACCEPTED_FILE)
            envs = worker_env or {}

            def start_pair(process: int) -> None:
                workers[:] = [
                    _start_worker(
                        rev.label,
                        rev.sha,
                        trees[rev.label],
                        tmpdir,
                        python=python or sys.executable,
                        threads=threads,
                        timeout_s=round_timeout_s,
                        extra_env={**envs.get("*", {}), **envs.get(rev.label, {})},
                        process=process,
                    )
                    for rev in (base_rev, head_rev)
                ]

            def prepare(names: list[str]) -> list[dict[str, Any]]:
                """Both workers set ``names`` up (counters, calibration, burn-in) in parallel."""
                for w in workers:
                    w.send(cmd="prepare", names=names, burn_in=burn_in, min_sample_s=min_sample_s)
                return [w.expect("ready", startup_timeout_s) for w in workers]

            start_pair(0)
            say("workers started: discovering benchmarks")
            specs: dict[str, dict[str, dict[str, Any]]] = {}
            for w in workers:
                w.listing = w.expect("list", startup_timeout_s)
                report.meta[w.label] = w.listing.get("meta", {})
                specs[w.label] = {b["name"]: b for b in w.listing.get("benchmarks", [])}
            names = sorted(set(specs["base"]) | set(specs["head"]))
            chosen = [n for n in names if selection is None or selection.search(n)]
            if selection is None:  # costly benchmarks are gated when asked for by name, not by default
                spec_of = {n: specs["head"].get(n, specs["base"].get(n, {})) for n in chosen}
                report.not_default = [n for n in chosen if not spec_of[n].get("default", True)]
                chosen = [n for n in chosen if n not in report.not_default]
            if not chosen:
                known = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                raise MoolaError(
                    f"--bench {bench!r} selects no benchmark ({len(names)} defined"
                    f"{': ' + known if known else ''})"
                )
            report.not_gated = [
                n for n in chosen if not specs["head"].get(n, specs["base"].get(n, {})).get("gated", True)
            ]
            chosen = [n for n in chosen if n not in report.not_gated]
            both = [n for n in chosen if n in specs["base"] and n in specs["head"]]
            report.only_base = [n for n in chosen if n not in specs["head"]]
            report.only_head = [n for n in chosen if n not in specs["base"]]
            report.definitions_differ = [
                n for n in both if specs["base"][n]["definition"] != specs["head"][n]["definition"]
            ]
            say(f"{len(both)} benchmark(s) on both sides: setup and counters (both workers in parallel)")
            base_ready, head_ready = prepare(both)
            for side, ready in (("base", base_ready), ("head", head_ready)):
                for name, why in ready.get("skipped", {}).items():
                    report.skipped.setdefault(name, {})[side] = why
            timed = [n for n in both if specs["head"][n]["kind"] != "track" and n not in report.skipped]
            # One call count per benchmark for both sides (base's calibration): the same work per sample.
            numbers = {n: base_ready.get("numbers", {}).get(n) for n in timed}
            n_rounds = {n: rounds or int(specs["head"][n]["rounds"]) for n in timed}
            schedule = round_schedule(n_rounds, processes)
            samples: dict[str, dict[str, list[float]]] = {n: {"base": [], "head": []} for n in timed}
            done, n_total = 0, sum(len(p) for p in schedule)
            for process, process_rounds in enumerate(schedule):
                if process > 0:
                    # A fresh pair: each process has its own speed (code and heap layout), constant
                    # for its life, so pairs from one process pair share its bias. Several pairs turn
                    # that bias into noise that averages out (asv's ``processes``, 2 by default).
                    for w in workers:
                        w.close()
                    start_pair(process)
                    say(f"worker pair {process + 1}/{len(schedule)}: setup (setup_cache reused)")
                    for w in workers:
                        w.expect("list", startup_timeout_s)
                    prepare(timed)
                if cpu is not None:
                    for w in workers:
                        w.send(cmd="pin", cpu=cpu)
                        w.expect("pinned")
                for due in process_rounds:
                    for name in due:
                        # AB, BA, AB, ... per benchmark: each side goes first equally often.
                        order = workers if len(samples[name]["base"]) % 2 == 0 else workers[::-1]
                        for w in order:
                            samples[name][w.label].append(w.sample(name, numbers[name]))
                    done += 1
                    say(
                        f"round {done}/{n_total} done ({len(due)} timed benchmark(s), worker pair {process + 1})"
                    )
            report.samples = samples
            comparisons = []
            for name in timed:
                spec = specs["head"][name]
                comparisons.append(
                    compare_timings(
                        name,
                        samples[name]["base"],
                        samples[name]["head"],
                        factor=factor if factor is not None else float(spec["factor"]),
                        alpha=alpha,
                        unit=spec["unit"],
                    )
                )
            report.timings = holm(comparisons)
            counter_specs = {
                n: CounterSpec(
                    tolerance=float(specs["head"][n]["tolerance"]),
                    higher_is_better=bool(specs["head"][n]["higher_is_better"]),
                    unit=str(specs["head"][n]["unit"]),
                )
                for n in both
                if specs["head"][n]["kind"] == "track"
            }
            # A track_ that returned a Distribution on both sides is compared as two samples of runs.
            base_dist, head_dist = base_ready.get("distributions", {}), head_ready.get("distributions", {})
            quality_names = [n for n in counter_specs if n in base_dist and n in head_dist]
            report.quality = holm_quality(
                [
                    compare_quality(
                        n,
                        base_dist[n],
                        head_dist[n],
                        threshold=float(specs["head"][n].get("threshold", 0.0)),
                        higher_is_better=counter_specs[n].higher_is_better,
                        alpha=quality_alpha,
                        unit=counter_specs[n].unit,
                    )
                    for n in quality_names
                ],
                quality_alpha,
            )
            for n in quality_names:
                del counter_specs[n]
            base_counters = {n: v for n, v in base_ready.get("counters", {}).items() if n in counter_specs}
            head_counters = {n: v for n, v in head_ready.get("counters", {}).items() if n in counter_specs}
            report.counters = compare_counters(base_counters, head_counters, counter_specs, accepted)
            report.accepted_unused = sorted(
                n
                for n in accepted
                if not any(c.name == n and c.verdict == "accepted" for c in report.counters)
            )
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
