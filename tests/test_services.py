"""The many-machine route, rehearsed on one machine with real processes: ``bench.services`` starts PostgreSQL
and an MLflow tracking server (artifacts served by it); ``bench.ablate`` and two study workers log to the
server over HTTP; everything reads back through the server; a study worker SIGKILLed mid-trial leaves its
MLflow run FAILED, not RUNNING; ``bench.report`` and ``risclip.predict --run`` work against the server, the
latter fetching the checkpoint as an artifact when the training machine's file is gone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image

from bench.spine.presets import DEFAULT_PRESET
from bench.spine.tracking import Tracker
from studies import get_study
from studies.runner import RunConfig, create, make_storage, spawn_workers, worker

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _py(*args: str, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args[:3])}: {(r.stdout + r.stderr)[-3000:]}"
    return r


@pytest.fixture()
def services():
    # under /tmp: PostgreSQL runs as its own user (when the tests run as root), which must reach the folder
    root = Path(tempfile.mkdtemp(prefix="risclip-services-", dir="/tmp"))
    pg, ml = _free_port(), _free_port()
    r = _py("-m", "bench.services", "start", "--dir", str(root), "--pg-port", str(pg), "--mlflow-port", str(ml),
            "--detach", timeout=180)
    assert f"http://127.0.0.1:{ml}" in r.stdout and f"127.0.0.1:{pg}/studies" in r.stdout
    state = json.loads((root / "services.json").read_text())
    try:
        yield state
    finally:
        _py("-m", "bench.services", "stop", "--dir", str(root), timeout=120)
        assert not (root / "services.json").exists()
        shutil.rmtree(root, ignore_errors=True)


def test_services_carry_ablate_studies_report_and_predict(quick_root, tmp_path, services):
    url, storage = services["mlflow_url"], services["studies_url"]
    work = tmp_path / "machine-a"
    work.mkdir()

    # 1. a quick ablate on "machine A", logged over HTTP
    out = _py("-m", "bench.ablate", "--quick", "--components", "adapters", "--seeds", "0", "--no-baselines", "--reference", "",
        "--data-root", str(quick_root), "--tracking-uri", url, "--workdir", str(work / "runs"), "--no-progress",
        "--output", str(work / "rows.json"), cwd=work)
    parent = out.stdout.split("MLflow parent run ")[1].split()[0]
    row = json.loads((work / "rows.json").read_text())["rows"][0]
    run_id = row["mlflow_run_id"]

    # 2. everything reads back through the server, with no local store involved
    tracker = Tracker(url, f"risclip-{DEFAULT_PRESET}-quick")
    run = tracker.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.seed"] == "0" and "model.adapter_dim" in run.data.params
    assert abs(run.data.metrics["test_mIoU"] - row["mIoU"]) < 1e-9 and "test_swap_mIoU" in run.data.metrics
    names = {a.path for a in tracker.client.list_artifacts(run_id)}
    assert {"config.json", "metrics.json", "val_predictions.png", "model.pt"} <= names
    assert tracker.load_json(run_id, "metrics.json")["test"]["mIoU"] == pytest.approx(row["mIoU"])
    grid = tracker.download(run_id, "val_predictions.png", tmp_path / "dl")
    assert Image.open(grid).size[0] > 100

    # 3. the report renders from the server
    _py("-m", "bench.report", "--tracking-uri", url, "--experiment", f"risclip-{DEFAULT_PRESET}-quick", "--run-id", parent,
        "--out-dir", str(tmp_path / "reports"))
    assert any(p.suffix == ".md" for p in (tmp_path / "reports").iterdir())

    # 4. predict on "machine B": the training machine's checkpoint is gone, the artifact is fetched
    shutil.rmtree(work / "runs")
    img = tmp_path / "img.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(img)
    _py("-m", "risclip.predict", "--run", run_id, "--tracking-uri", url, "--cache-dir", str(tmp_path / "cache"),
        "--image", str(img), "--text", "the red square", "--out", str(tmp_path / "mask.png"))
    assert (tmp_path / "cache" / run_id / "model.pt").is_file() and Image.open(tmp_path / "mask.png").size == (96, 96)

    # 5. two study workers on PostgreSQL and the server; one is SIGKILLed mid-trial
    n = 3
    cfg = RunConfig(study="tune", study_name="served", storage=storage, trials=n, quick=True, data_root=str(quick_root),
                    tracking_uri=url, workdir=str(tmp_path / "study-runs"), heartbeat_interval=1)
    create(get_study("tune"), cfg)
    procs = spawn_workers(cfg, 2, _env())
    victim = None
    watch = make_storage(storage, 1)  # one storage (one connection pool) for the whole watch
    try:
        deadline = time.time() + 300
        while time.time() < deadline and victim is None:
            study = optuna.load_study(study_name="served", storage=watch)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("worker_pid") in {p.pid for p in procs} and t.user_attrs.get("mlflow_run_id"):
                    victim = (t.user_attrs["worker_pid"], t.number, t.user_attrs["mlflow_run_id"])
                    break
            time.sleep(0.05)
        assert victim is not None, "no running trial seen"
        os.kill(victim[0], signal.SIGKILL)
        for p in procs:
            p.wait(timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    study = optuna.load_study(study_name="served", storage=watch)
    killed = study.trials[victim[1]]
    assert killed.state == TrialState.FAIL
    assert [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number], "the killed trial was not retried"
    assert tracker.get_run(victim[2]).info.status == "FAILED"  # closed by the surviving worker, not RUNNING forever
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == n
    for t in done:  # nothing finished is lost: every counted trial's run is on the server
        assert tracker.get_run(t.user_attrs["mlflow_run_id"]).info.status in ("FINISHED", "KILLED")
    # the same command again finds the study complete and adds nothing
    before = len(study.trials)
    worker(get_study("tune"), cfg)
    assert len(optuna.load_study(study_name="served", storage=watch).trials) == before
