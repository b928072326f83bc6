"""Run a study: create it, start workers, and give each trial to the same spine ``bench.ablate`` uses.

Storage. The embedded default is an SQLite file in the project folder (``sqlite:///studies.db``),
chosen over Optuna's journal file because Optuna's RDB storage has heartbeats: a worker killed in the
middle of a trial (SIGKILL, a lost machine) stops beating, and the next worker to ask for a trial marks
the stale trial FAILED and enqueues a retry of its parameters (``RetryHeartbeatStaleTrialCallback``). The same
code then serves any Optuna RDB URL (``postgresql://...``, ``mysql://...``), which is how many machines
join one study: the same ``python -m studies run ...`` against the same URL adds workers.

Exactly N. A study ends with exactly the requested number of COMPLETE or PRUNED trials, none counted
twice: a worker asks for a trial only while fewer than N are done or running; a trial that finds N
others (done or running) numbered before it steps aside (it is marked FAILED with the attribute
``surplus``, and counts for nothing); a FAILED trial never counts, its retry does.

Tracking. One MLflow parent run per invocation (tag ``kind=study``), one child run per trial tagged with
the study and trial number and carrying the trial's parameters; a trial whose run-identity hash matches
a finished run (from ``bench.ablate`` or an earlier study) reuses it instead of training.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bench.spine import presets as P
from bench.spine.assets import data_fingerprint, ensure_backbone, ensure_data
from bench.spine.tracking import DEFAULT_TRACKING_URI, NullTracker, Tracker, git_revision
from bench.spine.variant import (
    GridHook,
    TrackingHook,
    find_reusable,
    log_variant,
    run_identity,
    score_variant,
    variant_tags,
)
from risclip.config import Components
from risclip.engine import Hook, NonFiniteLossError, build_dataset, evaluate, resolve_device

from .base import StudyContext, StudySpec, TrialPlan

DEFAULT_STORAGE = "sqlite:///studies.db"
# heartbeats, stale-trial failing and metric names are marked experimental by Optuna; we rely on them knowingly
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def _sample(r: dict) -> list:
    """A test expression's score as a trial keeps it: ``[sent_id, kind, iou, image_id]`` (the image where the
    run recorded it, for the cluster bootstrap of ``studies/analysis.py``)."""
    out = [r["sent_id"], r["kind"], round(r["iou"], 6)]
    return out + [r["image_id"]] if r.get("image_id") is not None else out


class StudyError(ValueError):
    """Bad input to a study (one line, exit status 2)."""


class SurplusTrial(Exception):
    """This trial would make more than the requested number: it steps aside."""


# ------------------------------------------------------------------------------------------ storage
def make_storage(url: str, heartbeat_interval: int = 10, grace_period: int | None = None) -> RDBStorage:
    """An Optuna RDB storage with heartbeats and a retry of trials whose worker died (see module doc)."""
    if "://" not in url:
        raise StudyError(f"--storage {url!r}: give an Optuna RDB URL such as {DEFAULT_STORAGE}, "
                         f"postgresql://user:pw@host/db or mysql://user:pw@host/db")
    kwargs = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}  # several local workers share the file
    try:
        return RDBStorage(url, heartbeat_interval=heartbeat_interval,
                          grace_period=grace_period or 3 * heartbeat_interval,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3), **kwargs)
    except Exception as e:  # unknown dialect, unreachable server, missing driver
        raise StudyError(f"--storage {url}: cannot open it ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                         f"valid: sqlite:///file.db, postgresql://..., mysql://...") from None


def make_tracker(uri: str, preset_name: str):
    """The MLflow tracker, or, with ``--tracking-uri none``, one that keeps nothing (for a machine without
    MLflow, e.g. a lent GPU machine; the trials then live in the Optuna storage alone)."""
    if uri.lower() == "none":
        return NullTracker()
    return Tracker(uri, f"risclip-{preset_name}")


# ------------------------------------------------------------------------------------------ context
@dataclass
class RunConfig:
    """Everything a worker needs, passed to worker processes as command-line arguments."""

    study: str
    study_name: str
    storage: str
    trials: int
    preset: str = P.DEFAULT_PRESET
    quick: bool = False
    components: str | None = None
    seeds: tuple[int, ...] = (0, 1)
    time_cap_s: float = 600.0
    tracking_uri: str = DEFAULT_TRACKING_URI
    parent_run_id: str = ""
    sampler_seed: int = 0
    workdir: str = "runs"
    device: str = "auto"
    heartbeat_interval: int = 10
    data_root: str | None = None
    pretrained: str | None = None  # CLIP weights (a tag or a local file) instead of the preset's
    compile: str = "off"  # torch.compile mode of every trial's model (TrainConfig.compile)
    plugins: tuple[str, ...] = ()  # --plugin modules, imported by every worker
    factors: tuple[str, ...] = StudyContext().factors  # factorial: the components crossed
    worker_index: int = 0  # seeds each worker's sampler differently: sampler_seed + worker_index
    command: str = ""  # the invocation, kept with the study (not passed to workers)

    def argv(self) -> list[str]:
        out = ["worker", self.study, "--study-name", self.study_name, "--storage", self.storage, "--trials",
               str(self.trials), "--preset", self.preset, "--seeds", ",".join(map(str, self.seeds)), "--time-cap",
               str(self.time_cap_s), "--tracking-uri", self.tracking_uri, "--parent-run", self.parent_run_id,
               "--sampler-seed", str(self.sampler_seed), "--workdir", self.workdir, "--device", self.device,
               "--heartbeat", str(self.heartbeat_interval), "--worker-index", str(self.worker_index)]
        if self.quick:
            out.append("--quick")
        if self.components:
            out += ["--components", self.components]
        if self.data_root:
            out += ["--data-root", self.data_root]
        if self.pretrained:
            out += ["--pretrained", self.pretrained]
        if self.compile != "off":
            out += ["--compile", self.compile]
        for m in self.plugins:
            out += ["--plugin", m]
        if self.factors != StudyContext().factors:
            out += ["--factors", ",".join(self.factors)]
        return out


def build_preset(cfg: RunConfig) -> P.Preset:
    return P.build(cfg.preset, quick=cfg.quick, data_root=cfg.data_root,
                   overrides=[f"train.compile={cfg.compile}"] if cfg.compile != "off" else ())


def study_context(spec: StudySpec, cfg: RunConfig, preset: P.Preset) -> StudyContext:
    import open_clip

    comp = Components.from_names(cfg.components) if cfg.components else None
    mc = open_clip.get_model_config(preset.model.clip_model) or {}
    layers = min(mc.get("vision_cfg", {}).get("layers", 4), mc.get("text_cfg", {}).get("layers", 4))
    return StudyContext(components=comp, time_cap_s=cfg.time_cap_s, seeds=cfg.seeds, fusion_points=int(layers),
                        factors=cfg.factors)


def trials_wanted(spec: StudySpec, cfg: RunConfig) -> int:
    if spec.name == "factorial":
        from .factorial import variants

        return len(variants(cfg.factors)) * len(cfg.seeds)
    return cfg.trials


# ----------------------------------------------------------------------------------------- hooks
class PruneHook(Hook):
    """Val mIoU after every epoch, reported to Optuna; a trial the pruner stops raises ``TrialPruned``.
    Also stops (pruned, tagged ``time_cap``) a trial whose training has run past the time cap. The cap counts
    training only: the pruner's own val evaluations are not charged to it (they were at first, which stopped
    heavier rungs after their last epoch), and a trial whose last epoch has ended is never stopped by it."""

    def __init__(self, trial: optuna.Trial, preset: P.Preset, model_cfg, train_cfg, prune: bool, cap_s: float) -> None:
        self.trial, self.preset, self.model_cfg, self.train_cfg = trial, preset, model_cfg, train_cfg
        self.prune, self.cap_s, self.t0 = prune, cap_s, time.perf_counter()
        self.eval_s = 0.0  # seconds spent in the pruner's val evaluations, not charged to the cap
        self.step = 0
        self.val = None
        self.last_val = math.nan

    def epochs(self, stage: int) -> int:
        return self.train_cfg.stage1_epochs if stage == 1 else self.train_cfg.stage2_epochs

    def epoch_end(self, model, stage, epoch, row) -> None:
        # a decoder variant's output is its (still untrained) decoder's until stage 2: its stage-1 epochs would all
        # score alike, and count as steps that misalign its stage-2 scores with other trials'; so it reports stage 2
        if self.prune and not (stage == 1 and self.model_cfg.components.decoder):
            if self.val is None:
                self.val = build_dataset(self.preset.data, self.model_cfg, self.preset.data.val_split, train=False)
            device = next(model.parameters()).device
            t = time.perf_counter()
            self.last_val = evaluate(model, self.val, self.train_cfg, device, desc="val (pruning)").metrics["mIoU"]
            self.eval_s += time.perf_counter() - t
            self.trial.report(self.last_val, self.step)
            self.step += 1
            if self.trial.should_prune():
                self.trial.set_user_attr("stopped", f"pruned after stage {stage} epoch {epoch}")
                raise optuna.TrialPruned(f"val mIoU {self.last_val:.2f} at stage {stage} epoch {epoch}")
        last = stage == 2 or not self.model_cfg.components.decoder
        if not (last and epoch >= self.epochs(stage)) and time.perf_counter() - self.t0 - self.eval_s > self.cap_s:
            self.trial.set_user_attr("stopped", f"time cap {self.cap_s:.0f} s")
            raise optuna.TrialPruned(f"past the time cap of {self.cap_s:.0f} s")


# -------------------------------------------------------------------------------------- objective
class Objective:
    def __init__(self, spec: StudySpec, cfg: RunConfig) -> None:
        self.spec, self.cfg = spec, cfg
        self.preset = build_preset(cfg)
        ensure_data(self.preset, False)
        self.preset, _ = ensure_backbone(self.preset, False, cfg.pretrained)
        self.ctx = study_context(spec, cfg, self.preset)
        self.fingerprint = data_fingerprint(self.preset)
        self.git_rev = git_revision()
        self.tracker = make_tracker(cfg.tracking_uri, self.preset.name)
        self.wanted = trials_wanted(spec, cfg)

    def _guard(self, trial: optuna.Trial) -> None:
        """Step aside if N trials numbered before this one are already done or running."""
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING))
                 if t.number < trial.number]
        if len(ahead) >= self.wanted:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: {len(ahead)} trials ahead of it already")

    def __call__(self, trial: optuna.Trial):
        self._guard(trial)
        trial.set_user_attr("worker_pid", os.getpid())
        plan: TrialPlan = self.spec.space(trial, self.ctx)
        preset = P.override(self.preset, list(plan.overrides))
        comp, seed = plan.components, plan.seed
        _, run_hash = run_identity(preset, comp, seed, self.fingerprint)
        trial.set_user_attr("components", str(comp))
        trial.set_user_attr("overrides", ";".join(plan.overrides))
        trial.set_user_attr("run_hash", run_hash)
        trial.set_user_attr("seed", seed)
        reuse = find_reusable(self.tracker, run_hash)
        if reuse is not None and self.spec.name == "factorial":
            try:  # the per-expression IoUs the factorial report resamples travel with the trial
                per = self.tracker.load_json(reuse, "metrics.json").get("per_sample", [])
                trial.set_user_attr("per_sample", [_sample(r) for r in per])
            except (LookupError, OSError):
                pass
        if reuse is not None:
            trial.set_user_attr("mlflow_run_id", reuse)
            trial.set_user_attr("reused", True)
            run = self.tracker.get_run(reuse)
            metrics = dict(run.data.metrics)
            if "latency_ms" in self.spec.objectives:
                # Latency is an objective: measure it here, as every trained trial of this study is measured, and
                # do not take the number the reused run was profiled at (another time, maybe another load; one
                # reused rung 0 read 23.8 ms where the same network measured 11.1 ms elsewhere). The run keeps its
                # own number unless it had none; the trial records the one it was scored on.
                cost = study_latency(preset.model.with_components(comp), run.data.tags.get("checkpoint") or None,
                                     self.cfg.device)
                trial.set_user_attr("latency_measured_in_trial", True)
                if "inference_ms_per_image" not in metrics:
                    self.tracker.log_metrics(reuse, cost)
                metrics.update(cost)
            return self._values(metrics)
        model_cfg = preset.model.with_components(comp)
        train_cfg = dataclasses.replace(preset.train, seed=seed, device=self.cfg.device, progress=False)
        tags = variant_tags(run_hash, comp, seed, preset, model_cfg, train_cfg, self.fingerprint, self.git_rev, None,
                            overrides=";".join(plan.overrides), study=self.cfg.study_name, trial=str(trial.number))
        run_id = self.tracker.start(f"{self.cfg.study_name} #{trial.number}", tags,
                                    parent_id=self.cfg.parent_run_id or None)
        trial.set_user_attr("mlflow_run_id", run_id)
        workdir = Path(self.cfg.workdir) / run_hash
        try:
            self.tracker.log_params(run_id, {"study": self.cfg.study_name, "trial": trial.number, **trial.params,
                                             "model": model_cfg.to_dict(), "train": train_cfg.to_dict()})
            prune = PruneHook(trial, preset, model_cfg, train_cfg, self.spec.prune and len(self.spec.objectives) == 1,
                              self.cfg.time_cap_s)
            grid = workdir / "val_predictions.png"
            hooks = (TrackingHook(self.tracker, run_id), prune,
                     GridHook(preset, model_cfg, grid, f"{comp}, trial {trial.number} (val)"))
            # trials are chosen on val: the text controls are left to bench.ablate, which scores them from the
            # checkpoint when it reuses a trial's run (--tuned)
            scores = score_variant(preset, model_cfg, train_cfg, workdir, Path(self.cfg.workdir) / "stage1", hooks,
                                   text_controls=False)
            cost = {}
            if "latency_ms" in self.spec.objectives:  # a fresh process per measurement: only where it is an objective
                cost = study_latency(model_cfg, scores.result.checkpoint, self.cfg.device)
            log_variant(self.tracker, run_id, scores, cost, grid)
            self.tracker.end(run_id, "FINISHED")
            if self.spec.name == "factorial":  # the per-expression IoUs the report resamples, beside the trial
                trial.set_user_attr("per_sample", [_sample(r) for r in scores.per_sample])
        except optuna.TrialPruned:
            self.tracker.set_tags(run_id, {"pruned": trial.user_attrs.get("stopped", "pruned")})
            self.tracker.end(run_id, "KILLED")
            raise
        except BaseException:
            self.tracker.end(run_id, "FAILED")
            raise
        if isinstance(self.tracker, NullTracker):  # no store to read back: the metrics as logged would be
            from bench.spine.variant import final_metrics

            return self._values(final_metrics(scores.result, scores.select, cost))
        return self._values(self.tracker.get_run(run_id).data.metrics)

    def _values(self, metrics: dict[str, float]):
        values = []
        for o in self.spec.objectives:
            if o == "val_mIoU":
                values.append(metrics["val_mIoU"])
            elif o == "latency_ms":
                values.append(metrics["inference_ms_per_image"])
        return values[0] if len(values) == 1 else tuple(values)


def study_latency(model_cfg, checkpoint: str | None, device: str = "auto") -> dict[str, float]:
    """How every study measures a trial's cost: batch-1 inference ms per image and peak MB of ``model_cfg`` (a
    ``ModelConfig``) with ``checkpoint`` loaded, in a fresh process (``bench.profiling.profile_variant``). The
    objective, a reused run's re-measurement and ``report --remeasure`` all call this one."""
    from bench.costs.profiling import profile_variant

    return profile_variant(model_cfg.to_dict(), checkpoint, batch_size=1, device=str(resolve_device(device)))


# ----------------------------------------------------------------------------------------- worker
def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    out = {s.name: 0 for s in TrialState}
    for t in trials:
        out[t.state.name] += 1
    return out


def create(spec: StudySpec, cfg: RunConfig) -> optuna.Study:
    """Create the study (or load it) before any worker starts: concurrent creation races."""
    storage = make_storage(cfg.storage, cfg.heartbeat_interval)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if spec.prune else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=cfg.study_name, storage=storage, load_if_exists=True,
                                directions=spec.directions, pruner=pruner)
    study.set_metric_names(list(spec.objectives))
    study.set_user_attr("spec", spec.name)
    study.set_user_attr("trials_wanted", trials_wanted(spec, cfg))
    study.set_user_attr("time_cap_s", cfg.time_cap_s)
    study.set_user_attr("preset", cfg.preset + ("-quick" if cfg.quick else ""))
    if cfg.command:
        study.set_user_attr("command", cfg.command)
    import platform

    import torch

    dev = resolve_device(cfg.device)
    study.set_user_attr("machine", (torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU") +
                        f", {os.cpu_count()} CPUs, {platform.node() or '?'}")
    if spec.name == "factorial":
        study.set_user_attr("factors", list(cfg.factors))
        if cfg.plugins:
            study.set_user_attr("plugins", list(cfg.plugins))
    if spec.grid is not None:
        ctx = StudyContext(seeds=cfg.seeds, factors=cfg.factors)
        for params in spec.grid(ctx):
            study.enqueue_trial(params, skip_if_exists=True)
    if spec.start_from_preset and not study.get_trials(deepcopy=False):
        from .tune import preset_params

        preset = build_preset(cfg)
        comp = Components.from_names(cfg.components) if cfg.components else Components.from_names("adapters")
        params = preset_params(preset, comp, study_context(spec, cfg, preset).fusion_points)
        if params is not None:
            study.enqueue_trial(params, user_attrs={"from_preset": True})
    return study


def sampler_seed(cfg: RunConfig, trials_so_far: int) -> int:
    """Each worker's sampler seed: ``--sampler-seed`` plus the worker's index, and, when the study already holds
    trials (a resumed or joined study), a term from their count, so that a worker started later does not replay
    the random draws an earlier worker made from the same seed (a seeded TPE sampler's first draws are random
    and would repeat exactly). A fresh study's draws stay the same for the same command."""
    return cfg.sampler_seed + cfg.worker_index + 7919 * trials_so_far


def close_lost_runs(study: optuna.Study, tracker) -> int:
    """End FAILED the MLflow runs of trials whose worker died (SIGKILL, a lost machine): Optuna marks such a
    trial FAIL once its heartbeat lapses, but the run it opened would stay RUNNING forever, since the process
    that would have ended it is gone. Any worker of the study does this for the others; returns how many."""
    if isinstance(tracker, NullTracker):
        return 0
    closed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id or t.user_attrs.get("reused"):
            continue
        try:
            if tracker.get_run(run_id).info.status != "RUNNING":
                continue
        except Exception:  # a run another store holds, or one deleted by hand: nothing to close here
            continue
        tracker.set_tags(run_id, {"ended_by": f"a worker of {study.study_name}: trial {t.number}'s worker stopped "
                                              f"beating (killed or lost) and Optuna failed the trial"})
        tracker.end(run_id, "FAILED")
        closed += 1
    return closed


def worker(spec: StudySpec, cfg: RunConfig, poll_s: float = 2.0) -> int:
    """Run trials until the study holds exactly the wanted number of COMPLETE or PRUNED trials."""
    storage = make_storage(cfg.storage, cfg.heartbeat_interval)
    objective = Objective(spec, cfg)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if spec.prune else optuna.pruners.NopPruner()
    started = len(storage.get_all_trials(storage.get_study_id_from_name(cfg.study_name), deepcopy=False))
    study = optuna.load_study(study_name=cfg.study_name, storage=storage,
                              sampler=spec.sampler(sampler_seed(cfg, started), objective.ctx), pruner=pruner)
    wanted = objective.wanted
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        close_lost_runs(study, objective.tracker)
        c = counts(study)
        done = c["COMPLETE"] + c["PRUNED"]
        if done >= wanted:
            return ran
        if done + c["RUNNING"] >= wanted and c["WAITING"] == 0:
            time.sleep(poll_s)  # the others are finishing; if one dies, its heartbeat lapses and it is retried
            continue
        # a surplus trial or a diverged one (non-finite loss) is FAILED and counts for nothing; the loop goes on
        study.optimize(objective, n_trials=1, catch=(SurplusTrial, NonFiniteLossError), gc_after_trial=False,
                       show_progress_bar=False)
        ran += 1


def prepare(cfg: RunConfig) -> None:
    """What every worker needs, made once before any starts: SynthRef and the proxy CLIP (two workers
    generating them at once would race), and the tracking store with its experiment (MLflow creating the
    tables of a new SQLite store from two processes at once races too)."""
    preset = build_preset(cfg)
    ensure_data(preset, False)
    ensure_backbone(preset, False, cfg.pretrained)
    make_tracker(cfg.tracking_uri, preset.name)


def spawn_workers(cfg: RunConfig, k: int, env: dict | None = None) -> list[subprocess.Popen]:
    """K worker processes, after :func:`prepare`. Each gets an equal share of the CPU threads
    (``OMP_NUM_THREADS``, unless set): K processes each using every core oversubscribe the machine. (Without
    this, 6 workers on a 16-core GPU machine took 100-170 s per synth-cpu factorial trial, most of it
    CPU-side; oversubscription is the likely cause, not measured apart.)"""
    prepare(cfg)
    env = dict(env or os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // k)))
    return [subprocess.Popen([sys.executable, "-m", "studies", *dataclasses.replace(cfg, worker_index=i).argv()],
                             env=env) for i in range(k)]
