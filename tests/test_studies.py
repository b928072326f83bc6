"""Optuna studies with real processes: 2 workers end with exactly N trials (and every trial's MLflow run),
pruning stops a clearly worse trial, and --quick runs each study end to end. A worker killed with SIGKILL
mid-trial (its trial retried, nothing finished lost, its MLflow run closed), with two workers on a real
PostgreSQL server and an MLflow tracking server: tests/test_services.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bench.spine.presets import DEFAULT_PRESET
from bench.spine.tracking import Tracker
from studies import get_study
from studies.__main__ import main as studies_main
from studies.runner import RunConfig, create, make_storage, worker

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow




def _env() -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _args(root: Path, work: Path, storage: str, *extra: str) -> list[str]:
    return ["--quick", "--data-root", str(root), "--storage", storage, "--tracking-uri",
            f"sqlite:///{work / 'mlflow.db'}", *extra]


def _states(storage: str, name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=make_storage(storage))
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _run(argv: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "studies", *argv], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r


def test_two_workers_end_with_exactly_n_trials_and_every_run_logged(quick_root, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    _run(["run", "tune", *_args(quick_root, tmp_path, storage, "--trials", "4", "--workers", "2", "--workdir",
                                str(tmp_path / "runs"))])
    states = _states(storage, f"tune-{DEFAULT_PRESET}-quick")
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 4
    study = optuna.load_study(study_name=f"tune-{DEFAULT_PRESET}-quick", storage=make_storage(storage))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", f"risclip-{DEFAULT_PRESET}-quick")
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run = tracker.get_run(t.user_attrs["mlflow_run_id"])  # both workers logged to one SQLite store at once
        assert run.info.status == "FINISHED" and "val_mIoU" in run.data.metrics and "test_mIoU" in run.data.metrics
        if not t.user_attrs.get("reused"):
            assert run.data.tags["study"] == f"tune-{DEFAULT_PRESET}-quick" and run.data.tags["trial"] == str(t.number)
            assert abs(run.data.metrics["val_mIoU"] - t.value) < 1e-9
    # the report renders from the stored study
    _run(["report", "tune", *_args(quick_root, tmp_path, storage, "--out-dir", str(tmp_path / "rep"))])
    md = (tmp_path / "rep" / "tune.md").read_text()
    assert f"tune-{DEFAULT_PRESET}-quick" in md and storage in md and (tmp_path / "rep" / "tune-history.png").is_file()


def test_pruning_stops_a_clearly_worse_trial(quick_root, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    cfg = RunConfig(study="tune", study_name="pruning", storage=storage, trials=3, quick=True,
                    data_root=str(quick_root), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                    workdir=str(tmp_path / "runs"))
    study = create(get_study("tune"), cfg)
    # two trials that climb at once on the quick data (val mIoU about 13 after epoch 1: deterministic on the CPU)
    good = {"lr": 0.004, "stage1_epochs": 3, "dice_weight": 1.0, "focal_alpha": -1.0, "adapter_dim": 32}
    study.enqueue_trial(good)
    study.enqueue_trial({**good, "lr": 0.02})
    study.enqueue_trial({**good, "lr": 0.0001, "focal_alpha": 0.75, "dice_weight": 0.25})  # barely moves
    worker(get_study("tune"), cfg)
    trials = optuna.load_study(study_name="pruning", storage=make_storage(storage)).trials
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[2].state == TrialState.PRUNED
    assert "pruned after stage 1 epoch" in trials[2].user_attrs["stopped"]
    assert len(trials[2].intermediate_values) < 3  # stopped before its last epoch


@pytest.mark.parametrize("name", ["pareto", "factorial", "ladder"])
def test_quick_runs_each_study_end_to_end(quick_root, tmp_path, name):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    # the factorial crosses two factors here (5 cells, the decoder's stage 2 among them, rung 0 without value
    # grounding added); the four-factor analysis is tested on its own (tests/test_factorial_analysis.py)
    extra = ["--seeds", "0", "--factors", "adapters,decoder"] if name == "factorial" else []
    if name == "ladder":
        extra = ["--trials", "1", "--final-seeds", "0", "--tuned-out", str(tmp_path / "tuned.json")]
    _run(["run", name, *_args(quick_root, tmp_path, storage, "--workdir", str(tmp_path / "runs"), *extra)], timeout=1500)
    _run(["report", name, *_args(quick_root, tmp_path, storage, "--out-dir", str(tmp_path / "rep"),
                                 *(["--seeds", "0", "--factors", "adapters,decoder"] if name == "factorial" else []),
                                 *(["--remeasure", "1"] if name == "pareto" else []))])
    md = (tmp_path / "rep" / f"{name}.md").read_text()
    assert storage in md
    if name == "factorial":
        assert "Main effects" in md and "added first and added last" in md and (tmp_path / "rep" / "factorial-interactions.png").is_file()
        assert "Value grounding adds" in md  # rung 0 without value grounding, beside the design
    if name == "pareto":
        assert "Pareto front" in md and "## Latency re-measured in one sitting" in md
        assert md.count("| yes |") >= 1  # the front under the re-measured latencies
    if name == "ladder":
        assert "test mIoU, tuned" in md and (tmp_path / "tuned.json").is_file()


def test_bad_input_is_a_one_line_error(capsys):
    assert studies_main(["run", "nope"]) == 2
    assert "valid: tune, ladder, factorial, pareto" in capsys.readouterr().err
    assert studies_main(["run", "tune", "--storage", "redis-ish"]) == 2
    assert "Optuna RDB URL" in capsys.readouterr().err
    assert studies_main(["run", "tune", "--preset", "paper-x"]) == 2
    err = capsys.readouterr().err
    assert "current: paper-b, paper-l, synthref" in err and "synth-refcoco" in err and err.count("\n") == 1


@pytest.mark.parametrize("preset_name", ["synth-refcoco", "synth-cpu"])
def test_ladder_first_trial_is_exactly_the_preset(preset_name):
    """The preset's settings, fed through the tune space as an enqueued trial would be, give the preset's
    own run identity (so seed 0 reuses the preset ladder's run), for every rung."""
    from bench.spine import presets as P
    from bench.spine.variant import run_identity
    from risclip.config import LADDER
    from studies.base import StudyContext
    from studies.tune import preset_params, tune_space

    preset = P.get_preset(preset_name)
    for comp in LADDER:
        params = preset_params(preset, comp)
        assert params is not None, comp
        plan = tune_space(optuna.trial.FixedTrial(params), StudyContext(components=comp))
        assert plan.overrides, comp
        tuned = P.override(preset, list(plan.overrides))
        assert run_identity(tuned, comp, 0, "fp")[1] == run_identity(preset, comp, 0, "fp")[1], comp
    # a value the space cannot express is not enqueued
    wide = P.override(preset, ["model.cfe_dim=256"])
    assert preset_params(wide, LADDER[2]) is None


def test_a_resumed_worker_does_not_replay_the_first_workers_draws(tmp_path):
    """A seeded TPE sampler's first draws are random; a worker started later on the same study (a resume) must
    not draw the same parameters again, while a fresh study keeps its draws for the same command."""
    from studies.runner import sampler_seed

    cfg = RunConfig(study="tune", study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}", trials=4)

    def draws(seed, n=2):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        return [study.ask().suggest_float("lr", 1e-4, 3e-2, log=True) for _ in range(n)]

    assert draws(sampler_seed(cfg, 0)) == draws(sampler_seed(cfg, 0))  # a fresh study's draws are reproducible
    first = draws(sampler_seed(cfg, 0))
    resumed = draws(sampler_seed(cfg, 2))  # the same command again, after 2 trials
    assert not set(first) & set(resumed)


def test_time_cap_counts_training_only_and_never_stops_a_finished_trial():
    import dataclasses

    from bench.spine import presets as P
    from risclip.config import Components
    from studies.runner import PruneHook

    preset = P.quick(P.get_preset("synth-refcoco"))
    train = dataclasses.replace(preset.train, stage1_epochs=3, stage2_epochs=2)
    for comps, last_stage, last_epoch in (("adapters", 1, 3), ("adapters,decoder", 2, 2)):
        model_cfg = preset.model.with_components(Components.from_names(comps))
        trial = optuna.create_study().ask()
        hook = PruneHook(trial, preset, model_cfg, train, prune=False, cap_s=0.0)  # every second is past the cap
        with pytest.raises(optuna.TrialPruned, match="time cap"):
            hook.epoch_end(None, 1, 1, {})
        hook.epoch_end(None, last_stage, last_epoch, {})  # training is over: nothing left to stop
        if last_stage == 2:
            with pytest.raises(optuna.TrialPruned):
                hook.epoch_end(None, 1, 3, {})  # stage 1 over, stage 2 still to come
    hook = PruneHook(optuna.create_study().ask(), preset, model_cfg, train, prune=False, cap_s=5.0)
    hook.eval_s = 1e6  # time spent evaluating for the pruner is not charged
    hook.t0 -= 100.0
    hook.epoch_end(None, 1, 1, {})


def test_a_decoder_variant_reports_to_the_pruner_from_stage_2_only():
    """Until stage 2 a decoder variant's output is its untrained decoder's: no evaluation (and no step) then."""
    from bench.spine import presets as P
    from risclip.config import Components
    from studies.runner import PruneHook

    preset = P.quick(P.get_preset("synth-refcoco"))
    model_cfg = preset.model.with_components(Components.from_names("adapters,decoder"))
    hook = PruneHook(optuna.create_study().ask(), preset, model_cfg, preset.train, prune=True, cap_s=1e9)
    hook.epoch_end(None, 1, 1, {})  # a model of None would fail any evaluation
    assert hook.val is None and hook.step == 0


def test_front_keeps_only_trials_nothing_beats_on_both_objectives():
    from studies.report import front_of

    points = {0: (30.0, 20.0), 1: (25.0, 10.0), 2: (28.0, 25.0), 3: (30.0, 20.0), 4: (40.0, 50.0), 5: (24.0, 10.0)}
    # 2 is beaten by 0 (more accurate and faster); 5 by 1 (equal latency, less accurate); ties (0, 3) both stay
    assert front_of(points) == [1, 0, 3, 4]


def test_each_preset_reports_into_its_own_folder():
    from studies.__main__ import report_dir

    assert report_dir("synth-refcoco") == "reports/archive/synth-refcoco/studies"  # an archived preset's
    assert report_dir(DEFAULT_PRESET) == f"reports/{DEFAULT_PRESET}/studies" != report_dir("synth-refcoco")
    assert report_dir(f"{DEFAULT_PRESET}-quick") == report_dir(DEFAULT_PRESET)
