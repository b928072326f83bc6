"""Latency, training-step time, peak memory, FLOPs and parameters of the frozen CLIP and each variant.

Run through ``nox -s benchmark`` (or ``python -m pytest bench/benchmarks``); results go to the
pytest-benchmark JSON with the non-timing figures in each benchmark's ``extra_info``, and
``python -m bench.benchmark_report`` turns them into ``reports/benchmark.md``.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from bench import costs
from bench.profile import measure_in_fresh_process

# batch sizes: 1 (latency) and a larger batch (throughput); the paper shape's larger batch is smaller on CPU
BATCHES = {"synth-cpu": (1, 16), "paper-b": (1, 4)}
TRAIN_BATCH = {"synth-cpu": 16, "paper-b": 2}
ROUNDS = {"synth-cpu": 10, "paper-b": 3}


def _ctx(autocast: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pytest.mark.parametrize("batch_kind", ["batch1", "batchN"])
def test_inference(benchmark, shape, variant, batch_kind, device, autocast):
    batch = BATCHES[shape][0 if batch_kind == "batch1" else 1]
    model = costs.build(shape, variant).to(device)
    images, tokens = costs.inputs(shape, batch, device)
    total, trainable = costs.param_counts(model)
    flops = costs.forward_flops(model, images[:1], tokens[:1])
    memory = measure_in_fresh_process({"shape": shape, "variant": variant, "batch_size": batch,
                                       "device": str(device), "mode": "inference"})["peak_memory_mb"]

    def run():
        with torch.no_grad(), _ctx(autocast):
            model(images, tokens)
        _sync(device)

    benchmark.group = f"{shape} inference {batch_kind}"
    benchmark.extra_info.update(kind="inference", shape=shape, variant=variant, batch=batch, device=str(device),
                                autocast=autocast, params_total=total, params_trainable=trainable,
                                flops_per_image=flops, peak_memory_mb=memory)
    benchmark.pedantic(run, rounds=ROUNDS[shape], warmup_rounds=1, iterations=1)
    assert flops > 0 and total > 0 and memory >= 0


def test_train_step(benchmark, shape, variant, device, autocast):
    model = costs.build(shape, variant).to(device)
    batch = TRAIN_BATCH[shape]
    images, tokens = costs.inputs(shape, batch, device)
    step = costs.train_step_fn(model, images, tokens)
    assert step is not None, f"{variant} trains nothing"
    flops = costs.train_step_flops(model, images[:1], tokens[:1])
    memory = measure_in_fresh_process({"shape": shape, "variant": variant, "batch_size": batch,
                                       "device": str(device), "mode": "train"})["peak_memory_mb"]

    def run():
        with _ctx(autocast):
            loss = step()
        _sync(device)
        return loss

    benchmark.group = f"{shape} train step"
    benchmark.extra_info.update(kind="train", shape=shape, variant=variant, batch=batch, device=str(device),
                                autocast=autocast, flops_per_image=flops, peak_memory_mb=memory)
    loss = benchmark.pedantic(run, rounds=max(2, ROUNDS[shape] // 2), warmup_rounds=1, iterations=1)
    assert math.isfinite(loss)


def test_tracking_overhead(benchmark, tmp_path, device):
    """MLflow logging and the progress bar, per training epoch of the synth-cpu preset, against the epoch.

    The epoch time is one measured synth-cpu training step (full ladder variant, preset batch size)
    times the preset's steps per epoch; the overhead is a tqdm bar with a postfix update per step plus
    the per-epoch MLflow logging ``bench.ablate`` does, to a fresh SQLite store."""
    import time

    from tqdm import tqdm

    from bench.presets import get_preset
    from bench.tracking import Tracker

    preset = get_preset("synth-cpu")
    batch = preset.train.batch_size
    steps = math.ceil(preset.data.max_train_samples / batch)
    model = costs.build("synth-cpu", costs.RUNG_VARIANTS[3]).to(device)
    images, tokens = costs.inputs("synth-cpu", batch, device)
    step = costs.train_step_fn(model, images, tokens)
    step()
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    epoch_s = (time.perf_counter() - t0) / 3 * steps
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "overhead")
    run_id = tracker.start("overhead", {"kind": "benchmark"})

    def overhead():
        bar = tqdm(range(steps), leave=False, disable=False, file=open(tmp_path / "bar.txt", "w"))
        for i in bar:
            bar.set_postfix(loss=f"{1.0 / (i + 1):.4f}", img_s=f"{i:.1f}")
        bar.close()
        tracker.log_metrics(run_id, {"stage1_loss": 0.5, "stage1_epoch_seconds": epoch_s, "stage1_lr": 1e-3}, step=1)

    benchmark.group = "tracking overhead"
    result = benchmark.pedantic(overhead, rounds=5, warmup_rounds=1, iterations=1)
    median = benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info.update(kind="overhead", epoch_seconds=epoch_s, steps_per_epoch=steps,
                                overhead_fraction=median / epoch_s if benchmark.stats else float("nan"))
    assert result is None and epoch_s > 0
