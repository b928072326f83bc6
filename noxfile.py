"""nox sessions. They run in the project's one environment (.venv, made by scripts/setup.sh), never
in environments of their own: torch is large and is installed exactly once.

    .venv/bin/nox -s tests      the unit and integration tests
    .venv/bin/nox -s lint       ruff
    .venv/bin/nox -s benchmark  latency, memory, FLOPs per variant -> reports/benchmarks/benchmark.md
                                (posargs go to pytest, e.g. -- --variant adapters,decoder --shapes synth-cpu)
    .venv/bin/nox -s benchmark_gpu   scripts/gpu-check.sh on CUDA (eager, fused and compiled paths, loader,
                                     profiler; <= 8 min), plus the SynthRef ladder on the GPU against the
                                     CPU's -> reports/benchmarks/benchmark-gpu.md
    .venv/bin/nox -s services   PostgreSQL + an MLflow tracking server for many machines (docs/scaling.md);
                                posargs go to `python -m bench.services start`, e.g. -- --host 0.0.0.0 --dir /srv/x
"""

import shlex
import shutil
import sys
from pathlib import Path

import nox

PY = sys.executable  # the interpreter nox runs in: .venv/bin/nox -> .venv's python

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests", "lint"]


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    session.run(PY, "-m", "pytest", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run(PY, "-m", "ruff", "check", ".")


def _benchmark(session: nox.Session, name: str, extra: list[str], report_extra: list[str] = ()) -> None:
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    latest, previous = out / f"{name}-latest.json", out / f"{name}-previous.json"
    if latest.is_file() and latest.stat().st_size > 0:  # a run that failed early leaves an empty file
        shutil.copyfile(latest, previous)
    session.run(PY, "-m", "pytest", "bench/benchmarks", "-q", "-p", "no:cacheprovider",
                f"--benchmark-json={latest}", *extra, *session.posargs)
    command = "nox -s " + shlex.join([session.name, *(["--", *session.posargs] if session.posargs else [])])
    args = [str(latest), "--name", name, "--command", command]
    if previous.is_file():
        args += ["--previous", str(previous)]
    session.run(PY, "-m", "bench.benchmark_report", *args, *report_extra)


@nox.session(python=False)
def benchmark(session: nox.Session) -> None:
    _benchmark(session, "benchmark", [])


@nox.session(python=False)
def benchmark_gpu(session: nox.Session) -> None:
    """On a CUDA machine: scripts/gpu-check.sh (every latency, training, loader and profiler measurement of the
    eager, fused and compiled paths at the paper shape; at most 8 minutes) into reports/benchmarks/gpu/, rendered as
    reports/benchmarks/benchmark-gpu.md; then the SynthRef ladder on the GPU (3 seeds) against the committed CPU ladder."""
    session.run("bash", "scripts/gpu-check.sh", env={"PY": PY, "OUT": "reports/benchmarks/gpu"}, external=True)
    session.run(PY, "-m", "bench.benchmark_report", "reports/benchmarks/gpu/benchmark-gpu.json", "--name", "benchmark-gpu",
                "--profile", "reports/benchmarks/gpu/profile-gpu.json", "--command", "nox -s benchmark_gpu (scripts/gpu-check.sh)")
    ladder = Path("reports/benchmarks/gpu/ladder-cuda.json")
    session.run(PY, "-m", "bench.ablate", "--preset", "synth-cpu", "--device", "cuda", "--seeds", "0,1,2",
                "--set", "train.num_workers=8", "--tracking-uri", "none", "--no-baselines", "--reference", "",
                "--no-progress", "--output", str(ladder))
    session.run(PY, "-m", "bench.benchmark_report", "reports/benchmarks/gpu/benchmark-gpu.json", "--name", "benchmark-gpu",
                "--profile", "reports/benchmarks/gpu/profile-gpu.json", "--ladder-check", str(ladder),
                "--command", "nox -s benchmark_gpu (scripts/gpu-check.sh)")


@nox.session(python=False)
def services(session: nox.Session) -> None:
    """PostgreSQL and an MLflow tracking server backed by it (artifacts served by the server), in the foreground
    until Ctrl-C; prints the two URLs (docs/scaling.md)."""
    # Ctrl-C reaches the command too, which stops both services; give it the time that takes
    session.run(PY, "-m", "bench.services", "start", *session.posargs, interrupt_timeout=60, terminate_timeout=10)
