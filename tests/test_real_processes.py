"""Real processes: a training killed with SIGKILL resumes to the uninterrupted result, and torchrun with
2 gloo processes trains (both stages: the decoder's BatchNorm statistics must agree across processes), and
its sharded evaluation equals a one-process evaluation of the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.spine.presets import DEFAULT_PRESET, get_preset, quick, with_data_root

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow




def _ablate_args(root: Path, work: Path, *extra: str, components: str = "adapters") -> list[str]:
    return ["-m", "bench.ablate", "--quick", "--components", components, "--seeds", "0", "--no-baselines",
            "--reference", "", "--no-progress", "--data-root", str(root), "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
            "--workdir", str(work / "runs"), "--output", str(work / "rows.json"), *extra]


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _rows(work: Path) -> list[dict]:
    return [r for r in json.loads((work / "rows.json").read_text())["rows"] if r["kind"] == "variant"]


EPOCHS = ["--set", "train.stage1_epochs=6"]


def test_sigkill_mid_training_resumes_to_the_uninterrupted_metrics(quick_root, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for w in (straight, killed):
        w.mkdir()
    r = subprocess.run([sys.executable, *_ablate_args(quick_root, straight, *EPOCHS)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    proc = subprocess.Popen([sys.executable, *_ablate_args(quick_root, killed, *EPOCHS)], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpts: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        ckpts = list((killed / "runs").glob("*/stage1.pt"))
        if ckpts:
            break
        time.sleep(0.02)
    assert ckpts and proc.poll() is None, "training ended before its first checkpoint could be seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(ckpts[0], weights_only=True)
    assert int(state["epoch"]) < 5, "killed after stage 1 had already finished"  # mid-training, not after
    assert not (killed / "rows.json").exists()

    r = subprocess.run([sys.executable, *_ablate_args(quick_root, killed, *EPOCHS)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = _rows(straight)[0], _rows(killed)[0]
    for k in ("mIoU", "oIoU", "P@50", "P@70", "select_mIoU", "swap_mIoU", "generic_mIoU"):
        assert a[k] == b[k], k  # equal on the CPU, not merely close


def test_torchrun_two_gloo_processes_train_and_evaluate_like_one(quick_root, tmp_path):
    work = tmp_path / "ddp"
    work.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *_ablate_args(quick_root, work, "--protocol", "lavt", components="adapters,decoder")]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "2 processes" in r.stdout
    row = _rows(work)[0]
    model_pt = next((work / "runs").glob("*/model.pt"))

    # the same weights evaluated by one process
    from risclip.config import TrainConfig
    from risclip.engine import build_dataset, evaluate, load_checkpoint

    preset = with_data_root(quick(get_preset(DEFAULT_PRESET)), str(quick_root))
    model = load_checkpoint(model_pt)
    test_set = build_dataset(preset.data, model.cfg, preset.data.test_split, train=False)
    # evaluated as the run evaluated it (the preset's CPU autocast, if any)
    one = evaluate(model, test_set, TrainConfig(progress=False, cpu_amp=preset.train.cpu_amp), torch.device("cpu"),
                   protocols=("ours", "lavt"))
    for k in ("mIoU", "oIoU", "P@50", "P@90"):
        assert row[k] == pytest.approx(one.metrics[k], abs=1e-9), k

    from bench.spine.tracking import Tracker

    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}", f"risclip-{DEFAULT_PRESET}-quick")
    run = tracker.client.get_run(row["mlflow_run_id"])
    assert run.data.metrics["test_lavt_mIoU"] == pytest.approx(one.protocols["lavt"]["mIoU"], abs=1e-9)
    kinds = json.loads(Path(tracker.client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))).read_text())
    for kind, ms in kinds["by_kind"].items():
        assert ms["mIoU"] == pytest.approx(one.by_kind[kind]["mIoU"], abs=1e-9)
        assert ms["count"] == one.by_kind[kind]["count"]
