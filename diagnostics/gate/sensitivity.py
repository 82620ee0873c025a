"""Measure the gate's power and false-alarm rate on this machine, with REAL revisions.

    python -m diagnostics.gate.sensitivity --family train --trials 20 [--busy]

builds a throwaway git repository in a temp dir from the current working tree (tracked + untracked,
not ignored: the snapshot you are about to merge), commits it as ``base``, then commits variants:

* ``slow``   -- one benchmark family's code does ``--slowdown`` (default 20%) more work, in proportion
               to its own duration, so "20% slower" holds whatever the machine's speed:
               ``train`` every training step (after ``optimizer.step()``), ``load`` every
               ``load_windows`` call, ``forward`` every model forward. ``--inject spin`` (default) burns
               CPU in Python arithmetic, as a real regression does; ``--inject sleep`` sleeps (the
               easiest slowdown to detect: it leaves the CPU to the other side);
* ``hidden`` -- jade_compact registered with twice its hidden size (checked once with ``--check-hidden``).

``--family quality`` measures the quality gate instead: the ``slow`` head flips ``--flip`` of the training
labels (a seeded share, drawn per run), a drop of known size in trained accuracy at no cost in time; the
``identical`` heads are pull requests that only change how random numbers are drawn (the init/dropout
seed, the shuffle/augmentation generator's seed, the k-fold permutation; one per trial in turn), which
a gate must call a reseed, not a regression. Every trial draws fresh seeds
(``MOOLA_BENCH_QUALITY_SEED`` = 1000 x (trial + 1)), so no trial reuses another's runs; ``--first-trial``
starts the count later, so a re-measurement (say after the gate's rule changed) runs on seeds no earlier
measurement saw.

and runs the gate ``--trials`` times on base..slow over the family's benchmark (a detection = exit 1
with that timing named) and ``--trials`` times on base..base over ``--identical-bench`` (default: the
WHOLE suite; a false alarm = exit 1), alternating the two so both see the same machine conditions.
``--busy`` keeps another process doing real CPU work for the whole measurement. Prints and writes the
counts, per-run seconds and every report to a JSON file.
"""

from __future__ import annotations

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
from typing import Annotated, Any

import typer

from diagnostics.gate.core import repo_root, run
from moola.clitools import UserErrorCommand, run_app
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


# Where each family's slowdown goes: (file, the callable to wrap, the family's benchmark regex).
FAMILIES: dict[str, tuple[str, str, str]] = {
    "train": ("moola/train/trainer.py", "", r"TrainEpoch\.time_epoch\(jade_compact\)"),
    "load": ("moola/data/loader.py", "load_windows", r"LoadWindows\.time_load_windows_20k"),
    "forward": (
        "moola/models/lstm.py",
        "LSTMClassifier.forward",
        r"Forward\.time_forward_batch\(jade_compact\)",
    ),
}


def _extra_work(fraction: float, mode: str, t0: str, indent: str) -> str:
    """Source lines that add ``fraction`` of the time since ``t0`` as CPU work (spin) or a sleep."""
    if mode == "sleep":
        return f"{indent}_gate_time.sleep({fraction!r} * (_gate_time.perf_counter() - {t0}))\n"
    # Real CPU work (integer arithmetic in the interpreter) until the deadline, not an idle wait.
    return (
        f"{indent}_gate_end = _gate_time.perf_counter() + {fraction!r} * (_gate_time.perf_counter() - {t0})\n"
        f"{indent}_gate_acc = 0\n"
        f"{indent}while _gate_time.perf_counter() < _gate_end:\n"
        f"{indent}    _gate_acc += sum(_gate_i * _gate_i for _gate_i in range(200))\n"
    )


def patch_slow_step(fraction: float, mode: str = "spin") -> Callable[[Path], None]:
    """Make every training step ``fraction`` longer, after optimizer.step(), in proportion to its own time.

    ``mode="spin"`` does CPU work for that long (a CPU regression); ``mode="sleep"`` sleeps (time.sleep
    overshoots by tens of microseconds, more on a busy machine, so the realized slowdown is larger).
    """
    _check_mode(mode)

    def patch(repo: Path) -> None:
        path = repo / "moola" / "train" / "trainer.py"
        text = path.read_text()
        start = re.compile(r"^(?P<indent>[ \t]+)loss, logits, _ = _loss\(", re.M)
        step = re.compile(r"^(?P<indent>[ \t]+)optimizer\.step\(\)\n", re.M)
        if len(start.findall(text)) != 1 or len(step.findall(text)) != 1:
            raise RuntimeError("slow-step patch: the training step in moola/train/trainer.py changed shape")
        text = start.sub(lambda m: f"{m['indent']}_gate_t0 = _gate_time.perf_counter()\n{m[0]}", text)
        text = step.sub(lambda m: m[0] + _extra_work(fraction, mode, "_gate_t0", m["indent"]), text)
        # After the docstring and ``from __future__``: before the first ordinary import.
        first = re.search(r"^(import |from (?!__future__))", text, re.M)
        at = first.start() if first else 0
        path.write_text(text[:at] + "import time as _gate_time\n" + text[at:])

    return patch


def _check_mode(mode: str) -> None:
    if mode not in ("sleep", "spin"):
        raise ValueError(f"mode must be sleep or spin, got {mode!r}")


def patch_slow_call(relpath: str, target: str, fraction: float, mode: str = "spin") -> Callable[[Path], None]:
    """Wrap ``target`` (a module-level function, or ``Class.method``) of the module at ``relpath`` so every
    call does ``fraction`` more work after it returns, in proportion to its own duration."""
    _check_mode(mode)

    def patch(repo: Path) -> None:
        path = repo / relpath
        text = path.read_text()
        owner = target.split(".")[0]
        if not re.search(rf"^(def|class) {re.escape(owner)}\b", text, re.M):
            raise RuntimeError(f"slow-call patch: {relpath} no longer defines {owner}")
        path.write_text(
            text
            + "\n\n# gate trial: a slower "
            + target
            + "\nimport time as _gate_time  # noqa: E402\n\n"
            + f"_gate_orig = {target}\n\n\n"
            + "def _gate_slow(*args, **kwargs):\n"
            + "    _gate_t0 = _gate_time.perf_counter()\n"
            + "    out = _gate_orig(*args, **kwargs)\n"
            + _extra_work(fraction, mode, "_gate_t0", "    ")
            + "    return out\n\n\n"
            + f"{target} = _gate_slow\n"
        )

    return patch


def patch_family(family: str, fraction: float, mode: str = "spin") -> Callable[[Path], None]:
    if family not in FAMILIES:
        raise MoolaError(f"--family must be one of {', '.join(FAMILIES)} (got {family!r})")
    if family == "train":
        return patch_slow_step(fraction, mode)
    relpath, target, _ = FAMILIES[family]
    return patch_slow_call(relpath, target, fraction, mode)


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) < 1:
        raise RuntimeError(f"quality patch: {path.name} no longer contains {old.strip()!r}")
    path.write_text(text.replace(old, new))


def patch_label_flip(fraction: float) -> Callable[[Path], None]:
    """Train on labels of which a seeded ``fraction`` is flipped to another class (a data bug of known
    size: accuracy drops, epoch time does not move)."""
    if not 0 < fraction < 0.5:
        raise MoolaError(f"--flip must be in (0, 0.5) (got {fraction})")

    def patch(repo: Path) -> None:
        _replace_once(
            repo / "moola" / "train" / "trainer.py",
            "    torch.manual_seed(seed)  # dropout draws from the global RNG\n",
            "    torch.manual_seed(seed)  # dropout draws from the global RNG\n"
            "    _flip_g = torch.Generator().manual_seed(seed + 7919)  # gate trial: mislabelled rows\n"
            f"    _flip = (torch.rand(n, generator=_flip_g) < {fraction!r}).to(train.y.device)\n"
            "    _n_cls = max(int(train.y.max().item()) + 1, 2)\n"
            "    train = _Tensors(train.X, torch.where(_flip, (train.y + 1) % _n_cls, train.y), train.pointers,"
            " train.pointer_bars)\n",
        )

    return patch


# Pull requests that only change how random numbers are drawn: the trained-model distribution is the
# same, each seed's draw is not (Jordan 2023: a reseed).
RESEEDS: dict[str, tuple[str, str, str]] = {
    "init-seed": (
        "moola/train/trainer.py",
        "    torch.manual_seed(seed)  # dropout draws from the global RNG\n",
        "    torch.manual_seed(seed + 1)  # dropout draws from the global RNG\n",
    ),
    "shuffle-seed": (
        "moola/train/trainer.py",
        "    gen.manual_seed(seed)\n",
        "    gen.manual_seed(seed ^ 0x5EED)\n",
    ),
    "fold-permutation": (
        "moola/data/splits.py",
        "rng = np.random.Generator(np.random.PCG64(seed))",
        "rng = np.random.Generator(np.random.Philox(seed))",
    ),
}


def patch_reseed(kind: str) -> Callable[[Path], None]:
    relpath, old, new = RESEEDS[kind]
    return lambda repo: _replace_once(repo / relpath, old, new)


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


def _busy_neighbour() -> subprocess.Popen[bytes]:
    """Another process doing real CPU work (interpreter arithmetic) until it is killed."""
    code = "while True:\n    sum(i * i for i in range(10000))"
    return subprocess.Popen([sys.executable, "-c", code])


def measure(
    family: str = "train",
    trials: int = 20,
    slowdown: float = 0.2,
    inject: str = "spin",
    bench: str | None = None,
    identical_bench: str | None = None,
    busy: bool = False,
    pin: bool = True,
    rounds: int | None = None,
    alpha: float = 0.05,
    check_hidden: bool = False,
    flip: float = 0.12,
    first_trial: int = 0,
    out: str | None = "reports/gate-sensitivity.json",
    repo: str | None = None,
    gate_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The measurement itself (see the module docstring); returns the JSON-able results."""
    if inject not in ("sleep", "spin"):
        raise MoolaError(f"--inject must be sleep or spin (got {inject!r})")
    if trials < 0 or first_trial < 0 or not 0 < slowdown < 10:
        raise MoolaError("--trials and --first-trial must be >= 0 and --slowdown in (0, 10)")
    quality = family == "quality"
    patch = patch_label_flip(flip) if quality else patch_family(family, slowdown, inject)
    bench = bench or (QUALITY_BENCH if quality else FAMILIES[family][2])
    if quality and identical_bench is None:
        identical_bench = QUALITY_BENCH
    src = repo_root(repo)
    settings = {
        "family": family,
        "trials": trials,
        "slowdown": slowdown,
        "inject": inject,
        "bench": bench,
        "identical_bench": identical_bench or "all",
        "busy": busy,
        "pin": pin,
        "rounds": rounds,
        "alpha": alpha,
        "flip": flip if quality else None,
        "first_trial": first_trial,
    }
    results: dict[str, Any] = {"settings": settings, "slow": [], "identical": [], "hidden": None}
    neighbour = _busy_neighbour() if busy else None
    try:
        with tempfile.TemporaryDirectory(prefix="moola-gate-trials-") as tmp:
            trial_repo = Path(tmp) / "repo"
            base = snapshot_repo(src, trial_repo)
            what = (
                f"flip {flip:.1%} of training labels"
                if quality
                else f"{inject} {slowdown:.0%} more in {family}"
            )
            slow = commit_variant(trial_repo, base, "slow", patch, what)
            results["variant_diff"] = _git(trial_repo, "diff", base, slow)
            progress(f"trial repo {trial_repo}: base {base[:10]}, slow {slow[:10]} ({what})")
            reseeds = (
                {
                    k: commit_variant(trial_repo, base, f"reseed-{k}", patch_reseed(k), f"reseed: {k}")
                    for k in RESEEDS
                }
                if quality
                else {}
            )

            def gate(head: str, selection: str | None, trial: int = 0) -> dict[str, Any]:
                t0 = time.perf_counter()
                options = dict(gate_options or {})
                if quality:  # fresh seeds every trial, the same block for both sides
                    env = {
                        **options.pop("worker_env", {}).get("*", {}),
                        "MOOLA_BENCH_QUALITY_SEED": str(1000 * (trial + 1)),
                    }
                    options["worker_env"] = {"*": env}
                report = run(
                    base,
                    head,
                    bench=selection,
                    rounds=rounds,
                    alpha=alpha,
                    repo=trial_repo,
                    pin_cpu=pin,
                    **options,
                )
                res = report.to_dict()
                res["seconds"] = time.perf_counter() - t0
                return res

            if check_hidden:
                hidden = commit_variant(trial_repo, base, "hidden", patch_double_hidden(), "hidden x2")
                r = gate(hidden, "Counters")
                results["hidden"] = r
                progress(f"hidden x2: exit {r['exit_code']}; regressions: {r['regressions']}")

            for i in range(first_trial, first_trial + trials):
                identical = list(reseeds.values())[i % len(reseeds)] if reseeds else base
                for kind, head, selection in (
                    ("slow", slow, bench),
                    ("identical", identical, identical_bench),
                ):
                    r = gate(head, selection, i)
                    r["head_variant"] = (
                        "slow" if head == slow else next((k for k, v in reseeds.items() if v == head), "base")
                    )
                    results[kind].append(r)
                    if out:  # every finished trial is on disk: a long measurement cut short keeps them
                        atomic_write_json(out, results)
                    progress(
                        f"trial {i + 1:2d} {kind:9s}: exit {r['exit_code']}  {_worst_line(r)}  {r['seconds']:.1f} s"
                    )
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()

    def detected(r: dict[str, Any]) -> bool:
        rows = r["quality"] if quality else r["timings"]
        return r["exit_code"] == 1 and any(t["verdict"] == "regression" for t in rows)

    seconds = [r["seconds"] for r in results["slow"] + results["identical"]]
    slow_ratios = [max(t["ratio"] for t in r["timings"]) for r in results["slow"] if r["timings"]]
    drops = [q["drop"] for r in results["slow"] for q in r.get("quality", []) if "accuracy" in q["name"]]
    results["summary"] = {
        "detections": sum(detected(r) for r in results["slow"]),
        "false_alarms": sum(r["exit_code"] == 1 for r in results["identical"]),
        "errors": sum(r["exit_code"] == 2 for r in results["slow"] + results["identical"]),
        "trials": trials,
        "seconds_per_gate_median": statistics.median(seconds) if seconds else None,
        "seconds_per_gate_max": max(seconds) if seconds else None,
        "slow_ratio_median": statistics.median(slow_ratios) if slow_ratios else None,
        "injected_accuracy_drop_mean": statistics.fmean(drops) if drops else None,
        "identical_seconds_median": statistics.median(r["seconds"] for r in results["identical"])
        if results["identical"]
        else None,
    }
    if out:
        from diagnostics.render.report import write_html

        atomic_write_json(out, results)
        write_html(Path(out).with_suffix(".html"), results, "sensitivity")  # beside the JSON
    return results


def _worst_line(r: dict[str, Any]) -> str:
    """The trial's most telling number: the largest timing ratio, or the quality drop with its p."""
    if r.get("quality"):
        q = max(r["quality"], key=lambda q: q["drop"] / max(abs(q["base"]["mean"]), 1e-12))
        p = q["p_adjusted"] if q.get("p_adjusted") is not None else q["p_worse"]
        return f"worst drop {q['drop']:+.4f} ({q['name']})  p {p:.2g}"
    worst = max(r["timings"], key=lambda t: t["ratio"], default={})
    return (
        f"max ratio {worst.get('ratio', float('nan')):.3f} ({worst.get('name', '-')})"
        f"  p {worst.get('p_slower', float('nan')):.2g}"
    )


QUALITY_BENCH = r"Quality\..*\(jade_compact\)"


def sensitivity_command(
    family: Annotated[str, typer.Option("--family", help="train, load, forward or quality.")] = "train",
    trials: Annotated[
        int, typer.Option("--trials", help="Trials of each kind (slow head, identical head).")
    ] = 20,
    slowdown: Annotated[float, typer.Option("--slowdown", help="Injected slowdown (0.2 = 20%).")] = 0.2,
    inject: Annotated[str, typer.Option("--inject", help="spin (CPU work) or sleep.")] = "spin",
    bench: Annotated[
        str | None, typer.Option("--bench", help="Benchmarks gated on the slow head (default: the family's).")
    ] = None,
    identical_bench: Annotated[
        str | None,
        typer.Option("--identical-bench", help="Benchmarks gated on identical heads (default: all)."),
    ] = None,
    busy: Annotated[
        bool, typer.Option("--busy", help="Keep another process doing CPU work meanwhile.")
    ] = False,
    no_pin: Annotated[bool, typer.Option("--no-pin", help="Do not pin both workers to one CPU.")] = False,
    rounds: Annotated[
        int | None, typer.Option("--rounds", help="Override every benchmark's gate_rounds.", min=2)
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha")] = 0.05,
    check_hidden: Annotated[
        bool, typer.Option("--check-hidden", help="Also one base..hidden-x2 gate.")
    ] = False,
    flip: Annotated[
        float, typer.Option("--flip", help="quality: share of training labels the slow head flips.")
    ] = 0.12,
    first_trial: Annotated[
        int,
        typer.Option(
            "--first-trial", help="quality: number of the first trial (its seed block); later = fresh seeds."
        ),
    ] = 0,
    out: Annotated[
        str, typer.Option("--out", help="JSON with every trial.")
    ] = "reports/gate-sensitivity.json",
    repo: Annotated[
        str | None, typer.Option("--repo", help="Source working tree (default: this repo).")
    ] = None,
) -> None:
    """Measure the gate's detection rate (injected slowdown) and false alarms (identical revisions)."""
    from rich.console import Console

    from diagnostics.render.progress import progress

    # A live line over the trials' log on a terminal (one step per gate run), the plain log otherwise.
    steps = 1 + 2 * trials + int(check_hidden)
    with progress(Console(highlight=False), total=steps, label="", keep_lines=True) as say:
        res = measure(
            family=family,
            trials=trials,
            slowdown=slowdown,
            inject=inject,
            bench=bench,
            identical_bench=identical_bench,
            busy=busy,
            pin=not no_pin,
            rounds=rounds,
            alpha=alpha,
            check_hidden=check_hidden,
            flip=flip,
            first_trial=first_trial,
            out=out,
            repo=repo,
            progress=say,
        )
    s = res["summary"]
    injected = (
        f"label flips of {flip:.1%} (mean accuracy drop {s['injected_accuracy_drop_mean'] or 0:.4f})"
        if family == "quality"
        else f"{slowdown:.0%} ({inject}) slowdowns"
    )
    identical = "reseeding revisions" if family == "quality" else "identical revisions"
    print(
        f"{family}: detected {s['detections']}/{trials} injected {injected};"
        f" {s['false_alarms']}/{trials} false alarms on {identical}"
        f" ({identical_bench or res['settings']['identical_bench']}); {s['errors']} errors;"
        f" {s['seconds_per_gate_median'] or 0:.1f} s per gate run (max {s['seconds_per_gate_max'] or 0:.1f} s)"
        f"{' with a busy neighbour' if busy else ''} -> {out} and {Path(out).with_suffix('.html')}"
    )
    if s["errors"]:
        raise typer.Exit(2)


PROG = "python -m diagnostics.gate.sensitivity"
app = typer.Typer(name=PROG, add_completion=False, pretty_exceptions_enable=False)
app.command(cls=UserErrorCommand)(sensitivity_command)

if __name__ == "__main__":
    run_app(app, PROG)  # MoolaError and usage errors: one line, exit 2
