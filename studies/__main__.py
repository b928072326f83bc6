"""Optuna studies of RISCLIP variants, every trial trained through the spine bench.ablate uses.

  python -m studies list                                        # the studies, their search spaces and budgets
  python -m studies run tune --components adapters,cfe --trials 16 --workers 2
  python -m studies run ladder                                  # every rung tuned alike, then 3 seeds on test
  python -m studies run factorial --seeds 0,1                   # 16 combinations + rung 0 without value grounding
  python -m studies run pareto --trials 24                      # val mIoU against latency
  python -m studies run NAME --quick                            # end to end in minutes (numbers mean nothing)
  python -m studies report NAME                                 # reports/<preset>/studies/NAME.md from the stored study
  optuna-dashboard sqlite:///studies.db                         # browse trials live, as mlflow ui browses runs

Storage: sqlite:///studies.db in this folder by default (no server; heartbeats let a killed worker's
trial be retried). Any Optuna RDB URL (postgresql://user:pw@host/db) lets many machines join: run the
same command against the same URL on each. --workers K starts K local worker processes; the study is
created before they start. Re-running a command resumes its study; it stops at exactly --trials
COMPLETE or PRUNED trials. Trials are MLflow child runs under one parent run per invocation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench.spine.presets import DEFAULT_PRESET

from . import STUDIES, get_study
from .runner import (
    DEFAULT_STORAGE,
    RunConfig,
    StudyError,
    counts,
    create,
    make_storage,
    spawn_workers,
    worker,
)


def report_dir(preset: str) -> str:
    """Each preset's study reports in its report folder (``reports/<preset>/studies``; an archived preset's
    under ``reports/archive/<preset>/studies``), so that reporting one preset's study never overwrites
    another's."""
    from bench.spine import presets as P

    return str(P.report_dir(preset) / "studies")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the studies, their search spaces and budgets")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("name", help=f"the study: {', '.join(STUDIES)}")
        q.add_argument("--preset", default=DEFAULT_PRESET, help="bench.ablate preset (default %(default)s)")
        q.add_argument("--quick", action="store_true", help="the quick preset and few trials: minutes end to end")
        q.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna RDB URL (default %(default)s)")
        q.add_argument("--study-name", default=None, help="default: NAME-PRESET[-COMPONENTS]")
        q.add_argument("--components", default=None, help="tune: the variant to tune (default adapters)")
        q.add_argument("--tracking-uri", default="sqlite:///mlflow.db",
                       help="MLflow store or server; 'none' keeps no runs (a machine without MLflow: the trials, and "
                            "the factorial's per-expression IoUs, live in the Optuna storage alone)")
        q.add_argument("--data-root", default=None)
        q.add_argument("--pretrained", default=None, help="CLIP weights, a tag or a local file (default: the preset's)")
        q.add_argument("--compile", nargs="?", const="default", default="off", metavar="MODE",
                       help="torch.compile every trial's model (mode default, reduce-overhead, max-autotune)")
        q.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                       help="import MODULE so that it registers its components (docs/extending.md); repeat for more")
        q.add_argument("--factors", default=None, metavar="NAMES",
                       help="factorial, pareto: the components crossed, joined by commas (default "
                            "adapters,cfe,ske,decoder; plug-ins too)")

    run = sub.add_parser("run", help="run (or resume) a study")
    common(run)
    run.add_argument("--trials", type=int, default=None, help="COMPLETE or PRUNED trials to end with (per rung "
                                                                "for ladder; factorial: the grid)")
    run.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    run.add_argument("--seeds", default="0,1", help="factorial: seeds per variant (default 0,1)")
    run.add_argument("--time-cap", type=float, default=600.0, help="seconds of training per trial, then pruned")
    run.add_argument("--sampler-seed", type=int, default=0)
    run.add_argument("--workdir", default="runs")
    run.add_argument("--device", default="auto")
    run.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats")
    run.add_argument("--final-seeds", default="0,1,2", help="ladder: seeds of the chosen rungs on test")
    run.add_argument("--tuned-out", default=None, help="ladder: where to write the chosen settings "
                                                       "(default studies/tuned/PRESET.json, committed)")

    wk = sub.add_parser("worker", help="(internal) one worker process of `run`")
    common(wk)
    for flag, kw in (("--trials", {"type": int, "required": True}), ("--seeds", {"default": "0,1"}),
                     ("--time-cap", {"type": float, "default": 600.0}), ("--parent-run", {"default": ""}),
                     ("--sampler-seed", {"type": int, "default": 0}), ("--workdir", {"default": "runs"}),
                     ("--device", {"default": "auto"}), ("--heartbeat", {"type": int, "default": 10}),
                     ("--worker-index", {"type": int, "default": 0})):
        wk.add_argument(flag, **kw)

    rep = sub.add_parser("report", help="reports/PRESET/studies/NAME.md from the stored study")
    common(rep)
    rep.add_argument("--seeds", default="0,1")
    rep.add_argument("--out-dir", default=None,
                     help="where to write (default reports/PRESET/studies; an archived preset's: "
                          "reports/archive/PRESET/studies)")
    rep.add_argument("--remeasure", type=int, default=0, metavar="K",
                     help="pareto: profile every trial's latency K more times in one sitting and show the front "
                          "under those medians (default 0: off)")
    return p


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise StudyError(f"--seeds takes comma-separated integers (got {text!r})") from None
    if not seeds:
        raise StudyError("--seeds is empty")
    return seeds


def config_from(a: argparse.Namespace, trials: int | None = None) -> RunConfig:
    from bench.spine import presets as P

    spec = get_study(a.name)
    if a.preset not in P.PRESETS:
        raise StudyError(f"unknown preset '{a.preset}'; current: {', '.join(P.CURRENT_PRESETS)} (archived ones run "
                         f"when named: {', '.join(sorted(set(P.PRESETS) - set(P.CURRENT_PRESETS)))})")
    if a.components is not None:
        from risclip.config import Components

        Components.from_names(a.components)  # unknown names: a ValueError listing the valid ones
    from .factorial import DEFAULT_FACTORS, check_factors

    factors = DEFAULT_FACTORS
    if a.factors is not None:
        if a.name not in ("factorial", "pareto"):
            raise StudyError("--factors is for the factorial and pareto studies")
        try:
            factors = check_factors(tuple(f.strip().lower() for f in a.factors.split(",") if f.strip()))
        except ValueError as e:
            raise StudyError(str(e)) from None
    preset_name = a.preset + ("-quick" if a.quick else "")
    design = ["+".join(factors)] if factors != DEFAULT_FACTORS else []
    name = a.study_name or "-".join([a.name, preset_name, *design,
                                     *([a.components.replace(",", "+")] if a.components else [])])
    n = trials if trials is not None else (spec.quick_trials if a.quick else spec.default_trials)
    return RunConfig(study=a.name, study_name=name, storage=a.storage, trials=n, preset=a.preset, quick=a.quick,
                     components=a.components, seeds=_seeds(a.seeds), time_cap_s=getattr(a, "time_cap", 600.0),
                     tracking_uri=a.tracking_uri, parent_run_id=getattr(a, "parent_run", ""),
                     sampler_seed=getattr(a, "sampler_seed", 0), workdir=getattr(a, "workdir", "runs"),
                     device=getattr(a, "device", "auto"), heartbeat_interval=getattr(a, "heartbeat", 10),
                     data_root=a.data_root, pretrained=a.pretrained, worker_index=getattr(a, "worker_index", 0),
                     compile=a.compile, plugins=tuple(a.plugin), factors=factors)


def run_study(cfg: RunConfig, workers: int) -> dict[str, int]:
    spec = get_study(cfg.study)
    study = create(spec, cfg)
    if workers <= 1:
        worker(spec, cfg)
    else:
        procs = spawn_workers(cfg, workers)
        try:
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        if any(codes):
            print(f"warning: worker exit codes {codes}; finished trials are kept", file=sys.stderr)
    return counts(study)


def cmd_list() -> int:
    for name, spec in STUDIES.items():
        print(f"{name}: {spec.description}")
        print(f"  objectives: {', '.join(f'{o} ({d})' for o, d in zip(spec.objectives, spec.directions))}; "
              f"pruning: {'per-epoch val mIoU, median pruner' if spec.prune and len(spec.objectives) == 1 else 'none'}")
        print(f"  budget: {spec.budget_note} (--quick: {spec.quick_trials} trials)")
        print(f"  search space: {' '.join(spec.describe_space().split())}")
        print(f"  report: {spec.reports}")
    return 0


def cmd_run(a: argparse.Namespace, argv: list[str]) -> int:
    from bench.spine.tracking import git_revision

    from .runner import make_tracker

    cfg = config_from(a, a.trials)
    make_storage(cfg.storage, cfg.heartbeat_interval)  # a bad URL fails here, in one line
    if a.workers < 1:
        raise StudyError("--workers must be at least 1")
    from .runner import build_preset

    preset = build_preset(cfg)
    tracker = make_tracker(cfg.tracking_uri, preset.name)
    command = " ".join(["python -m studies", *argv])
    cfg.command = command
    parent = tracker.start(f"study {cfg.study_name}", {"kind": "study", "study": cfg.study_name, "storage": cfg.storage,
                                                      "command": command, "git_revision": git_revision()})
    cfg.parent_run_id = parent
    t0 = time.perf_counter()
    try:
        if cfg.study == "ladder":
            result = run_ladder(cfg, a.workers, _seeds(a.final_seeds), command, a.tuned_out)
        else:
            result = run_study(cfg, a.workers)
    except KeyboardInterrupt:
        tracker.end(parent, "KILLED")
        print("\ninterrupted: finished trials are kept; run the same command again to resume", file=sys.stderr)
        return 130
    tracker.log_metrics(parent, {"wall_seconds": time.perf_counter() - t0})
    tracker.end(parent, "FINISHED")
    print(f"study {cfg.study_name} in {cfg.storage}: {result}; {time.perf_counter() - t0:.0f} s; "
          f"report: python -m studies report {cfg.study} --storage {cfg.storage}"
          + (f" --components {cfg.components}" if cfg.components else "") + (" --quick" if cfg.quick else ""))
    return 0


def run_ladder(cfg: RunConfig, workers: int, final_seeds: tuple[int, ...], command: str,
               tuned_out: str | None = None) -> dict:
    import dataclasses

    from bench.spine.tracking import git_revision
    from risclip.config import LADDER

    from .ladder import choose, rung_study_name, write_tuned

    results = {}
    for rung, comp in enumerate(LADDER):
        sub = dataclasses.replace(cfg, study_name=rung_study_name(cfg.study_name, rung), components=",".join(comp.names())
                                  if comp.trains_anything else "none")
        results[f"rung{rung}"] = run_study(sub, workers)
    chosen = choose(make_storage(cfg.storage, cfg.heartbeat_interval), cfg.study_name, git_revision(), cfg.storage)
    preset_name = cfg.preset + ("-quick" if cfg.quick else "")
    path = write_tuned(preset_name, chosen, command, tuned_out)
    from bench.spine import ablate

    argv = ["--preset", cfg.preset, "--tuned", os.path.relpath(path), "--seeds", ",".join(map(str, final_seeds)),
            "--tracking-uri", cfg.tracking_uri, "--workdir", cfg.workdir, "--no-progress",
            "--reference", ""]  # the from-scratch reference does not depend on tuning: the plain ladder's serves
    if cfg.pretrained:
        argv += ["--pretrained", cfg.pretrained]
    if cfg.quick:
        argv.append("--quick")
    if cfg.data_root:
        argv += ["--data-root", cfg.data_root]
    code = ablate.main(argv)
    results["tuned_ladder_exit"] = code
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(argv)
    try:
        if a.command == "list":
            return cmd_list()
        from risclip import registry

        registry.load_plugins(a.plugin)
        if a.command == "run":
            return cmd_run(a, argv)
        if a.command == "worker":
            cfg = config_from(a, a.trials)
            worker(get_study(a.name), cfg)
            return 0
        if a.command == "report":
            from .report import write_report

            cfg = config_from(a)
            if a.remeasure < 0:
                raise StudyError("--remeasure must be 0 or more")
            path = write_report(cfg, a.out_dir or report_dir(cfg.preset), " ".join(["python -m studies", *argv]),
                                a.remeasure)
            print(f"wrote {path}")
            return 0
    except (StudyError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
