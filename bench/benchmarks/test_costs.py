"""Latency, training-step time, peak memory, FLOPs and parameters of the frozen CLIP and each variant.

Run through ``nox -s benchmark`` (or ``python -m pytest bench/benchmarks``); results go to the
pytest-benchmark JSON with the non-timing figures in each benchmark's ``extra_info``, and
``python -m bench.benchmark_report`` turns them into ``reports/benchmarks/benchmark.md``.
"""

from __future__ import annotations

import contextlib
import math
import time

import pytest
import torch

from bench.costs import costs
from bench.costs.profiling import interleaved_ms, measure_in_fresh_process, peak_memory_mb

# batch sizes: 1 (latency) and a larger batch (throughput); on the CPU the paper shape's larger batch is
# small to keep the suite short, on CUDA both shapes use the paper's training batch (32)
BATCHES = {"cpu": {"synth-refcoco": (1, 16), "synth-cpu": (1, 16), "paper-b": (1, 4)},
           "cuda": {"synth-refcoco": (1, 64), "synth-cpu": (1, 64), "paper-b": (1, 32)}}
TRAIN_BATCH = {"cpu": {"synth-refcoco": 16, "synth-cpu": 16, "paper-b": 2},
               "cuda": {"synth-refcoco": 32, "synth-cpu": 32, "paper-b": 32}}
ROUNDS = {"cpu": {"synth-refcoco": 10, "synth-cpu": 10, "paper-b": 3}, "cuda": {"synth-refcoco": 20, "synth-cpu": 20, "paper-b": 10}}


def _memory(spec: dict, model, images, tokens, step=None) -> float:
    """Peak memory of one call. CPU: resident-set growth in a fresh process (what an earlier benchmark
    left allocated would hide it here). CUDA: ``max_memory_allocated`` over what was allocated before,
    exact in this process, so no fresh process is needed."""
    if images.device.type != "cuda":
        return measure_in_fresh_process(spec)["peak_memory_mb"]

    def once():
        if step is not None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=spec.get("autocast", False)):
                step()
            return
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=spec.get("autocast", False)):
            model(images, tokens)

    return peak_memory_mb(once, images.device)


def _ctx(autocast: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_FLOPS: dict[tuple, int] = {}  # FLOPs by (shape, variant, path or stage): one count per model in a session


def _first_calls_seconds(run, calls: int) -> float:
    """Seconds of a compiled model's first ``calls`` calls, where the compiling happens."""
    t0 = time.perf_counter()
    for _ in range(calls):
        run()
    return time.perf_counter() - t0


def _compile_mode(mode: str | None, device: torch.device, inference: bool) -> str:
    return mode or ("reduce-overhead" if inference and device.type == "cuda" else "default")


@pytest.mark.parametrize("batch_kind", ["batch1", "batchN"])
def test_inference(benchmark, shape, variant, path, batch_kind, device, autocast, compile_mode):
    batch = BATCHES[device.type][shape][0 if batch_kind == "batch1" else 1]
    plain = costs.build(shape, variant, "fused" if path == "compiled" else path)
    total, trainable = costs.param_counts(plain)
    images, tokens = costs.inputs(shape, batch, device)
    key = (shape, variant, "eager" if path == "eager" else "fused")
    if key not in _FLOPS:  # counted once per model on the CPU kernels (the batch-1 and batch-N tests share it)
        _FLOPS[key] = costs.forward_flops(plain, images[:1].cpu(), tokens[:1].cpu())
    flops = _FLOPS[key]
    mode = _compile_mode(compile_mode, device, True)
    model = (costs.compiled(plain, mode) if path == "compiled" else plain).to(device)
    memory = math.nan
    if path != "compiled":  # a fresh process per measurement would compile again; compiled memory is not measured
        memory = _memory({"shape": shape, "variant": variant, "batch_size": batch, "device": str(device),
                          "mode": "inference", "autocast": autocast, "path": path}, model, images, tokens)

    def run():
        with torch.no_grad(), _ctx(autocast):
            model(images, tokens)
        _sync(device)

    # the first calls compile (CUDA graphs record on the second and third): timed apart
    compile_s = _first_calls_seconds(run, 3) if path == "compiled" else 0.0
    benchmark.group = f"{shape} inference {batch_kind}"
    benchmark.extra_info.update(kind="inference", shape=shape, variant=variant, batch=batch, device=str(device),
                                autocast=autocast, params_total=total, params_trainable=trainable, path=path,
                                compile_seconds=compile_s, compile_mode=mode if path == "compiled" else None,
                                flops_per_image=flops, peak_memory_mb=memory)
    benchmark.pedantic(run, rounds=ROUNDS[device.type][shape], warmup_rounds=2, iterations=1)
    assert flops > 0 and total > 0 and (memory >= 0 or path == "compiled")


def test_train_step(benchmark, shape, variant, stage, path, device, autocast, compile_mode):
    """One optimiser step of stage 1 (adapters, CFE, SKE) or stage 2 (the decoder, the rest frozen)."""
    batch = TRAIN_BATCH[device.type][shape]
    if (shape, variant, stage) not in _FLOPS:  # counted once per step on the CPU kernels, whatever the path
        _FLOPS[shape, variant, stage] = costs.train_step_flops(costs.build(shape, variant), *costs.inputs(shape, 1),
                                                               stage=stage)
    flops = _FLOPS[shape, variant, stage]
    mode = _compile_mode(compile_mode, device, False)
    model = costs.build(shape, variant, path, mode).to(device)
    images, tokens = costs.inputs(shape, batch, device)
    step = costs.train_step_fn(model, images, tokens, stage)
    assert step is not None, f"{variant} trains nothing in stage {stage}"

    def run():
        with _ctx(autocast):
            loss = step()
        _sync(device)
        return loss

    compile_s, memory = 0.0, math.nan
    if path == "compiled":
        compile_s = _first_calls_seconds(run, 2)
    else:
        memory = _memory({"shape": shape, "variant": variant, "batch_size": batch, "device": str(device),
                          "mode": "train", "autocast": autocast, "path": path}, model, images, tokens, step=step)
    benchmark.group = f"{shape} train step, stage {stage}"
    benchmark.extra_info.update(kind="train", stage=stage, shape=shape, variant=variant, batch=batch, device=str(device),
                                autocast=autocast, flops_per_image=flops, peak_memory_mb=memory, path=path,
                                compile_seconds=compile_s, compile_mode=mode if path == "compiled" else None)
    loss = benchmark.pedantic(run, rounds=max(2, ROUNDS[device.type][shape] // 2), warmup_rounds=2, iterations=1)
    assert math.isfinite(loss)


def test_tracking_overhead(benchmark, tmp_path, device):
    """MLflow logging and the progress bar, per training epoch of the synth-cpu preset, against the epoch.

    The epoch time is one measured synth-cpu training step (full ladder variant, preset batch size)
    times the preset's steps per epoch; the overhead is a tqdm bar with a postfix update per step plus
    the per-epoch MLflow logging ``bench.ablate`` does, to a fresh SQLite store."""
    import time

    from tqdm import tqdm

    from bench.spine.presets import get_preset
    from bench.spine.tracking import Tracker

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


@pytest.mark.parametrize("batch_kind", ["batch1", "batchN"])
def test_paths_turn_about(benchmark, shape, device, autocast, batch_kind, compile_mode, bench_paths):
    """The frozen CLIP and the full model by every --bench-paths path, timed turn about in one loop
    (bench.costs.profiling.interleaved_ms): the before/after ratios a shared machine's slow spells cannot tilt."""
    paths = bench_paths
    batch = BATCHES[device.type][shape][0 if batch_kind == "batch1" else 1]
    images, tokens = costs.inputs(shape, batch, device)
    mode = _compile_mode(compile_mode, device, True)
    models = {f"clip/{p}": costs.build(shape, costs.CLIP, p, mode).to(device) for p in paths if p != "eager"}
    models.update({f"full/{p}": costs.build(shape, costs.RUNG_VARIANTS[-1], p, mode).to(device) for p in paths})

    def call(m):
        def run():
            with torch.no_grad(), _ctx(autocast):
                m(images, tokens)
        return run

    result = {}

    def measure():
        result.update(interleaved_ms({k: call(m) for k, m in models.items()}, rounds=ROUNDS[device.type][shape] * 4,
                                     device=device))

    benchmark.group = f"{shape} paths turn about {batch_kind}"
    benchmark.pedantic(measure, rounds=1, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(kind="turn_about", shape=shape, batch=batch, device=str(device), autocast=autocast,
                                compile_mode=mode if "compiled" in paths else None, timings=result)
    assert all(v["median_ms"] > 0 for v in result.values())
