"""Measuring code shared by ``bench.ablate`` and the benchmark suite: latency and peak memory.

* Latency: wall time of ``model(images, tokens)`` under ``torch.no_grad`` after warm-up runs, the
  median over repeats, synchronised on CUDA.
* Peak memory on CUDA: ``torch.cuda.max_memory_allocated`` during the call, minus what was allocated
  before it. On the CPU: growth of the process's resident set size, sampled every millisecond by a
  thread while the call runs (Linux ``/proc/self/statm``; elsewhere the ``ru_maxrss`` high-water mark,
  which cannot go down, so only the first measurement in a process is exact). Measured in-process it
  is an estimate; the benchmark suite measures in a fresh process.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process in bytes."""
    if _STATM.is_file():
        return int(_STATM.read_text().split()[1]) * _PAGE
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Extra memory (MB) at the peak of ``fn()`` over what was in use before it."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = rss_bytes()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    peak = max(peak, rss_bytes())
    return max(0, peak - before) / 2**20


@torch.no_grad()
def inference_ms(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, repeats: int = 5,
                 warmup: int = 2, autocast: bool = False) -> float:
    """Median milliseconds of one forward pass on this batch."""
    model.eval()
    device = images.device
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (autocast and device.type == "cuda") else (
        lambda: torch.autocast("cpu", enabled=False))
    for _ in range(warmup):
        with ctx():
            model(images, tokens)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with ctx():
            model(images, tokens)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _measure_shape_spec(spec: dict) -> dict[str, float]:
    """Peak memory of one forward pass (``mode`` inference) or one training step (``mode`` train) of a
    benchmark shape's variant (see :mod:`bench.costs.costs`), the first such call in this process."""
    from bench.costs import costs

    device = torch.device(spec.get("device", "cpu"))
    model = costs.build(spec["shape"], spec["variant"], spec.get("path", "fused")).to(device)
    images, tokens = costs.inputs(spec["shape"], int(spec.get("batch_size", 1)), device)
    if spec.get("mode", "inference") == "train":
        step = costs.train_step_fn(model, images, tokens)
        if step is None:
            return {"peak_memory_mb": math.nan}
        return {"peak_memory_mb": peak_memory_mb(step, device)}

    def once() -> None:
        with torch.no_grad():
            model(images, tokens)

    return {"peak_memory_mb": peak_memory_mb(once, device)}


def measure_in_fresh_process(spec: dict, timeout: float = 900) -> dict[str, float]:
    """Run :func:`_measure_shape_spec` (spec with ``shape``) or :func:`_measure_spec` in a new Python process."""
    import json
    import os
    import subprocess

    from risclip import registry

    # the plug-ins registered here are imported there too, from the same search path
    spec = {**spec, "plugins": sorted({s.origin for s in registry.specs() if s.plugin})}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "bench.costs.profiling", json.dumps(spec)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"profiling subprocess failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure_spec(spec: dict) -> dict[str, float]:
    """Build the variant of ``spec`` and measure it (run inside a fresh process by :func:`profile_variant`)."""
    if "shape" in spec:
        return _measure_shape_spec(spec)
    from risclip.config import ModelConfig
    from risclip.model import RISCLIP

    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(spec["model"])
    device = torch.device(spec.get("device", "cpu"))
    model = RISCLIP.from_config(cfg).to(device).eval()
    if spec.get("state"):
        model.load_component_state_dict(torch.load(spec["state"], map_location=device, weights_only=True)["model"])
    from bench.costs.costs import random_inputs

    b = int(spec.get("batch_size", 1))
    images, tokens = random_inputs(cfg, b, device)
    autocast = bool(spec.get("autocast", False))

    def once() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=autocast and device.type == "cuda"):
            model(images, tokens)

    memory = peak_memory_mb(once, device)  # the first forward in this process: nothing cached yet
    ms = inference_ms(model, images, tokens, repeats=int(spec.get("repeats", 5)), autocast=autocast)
    return {"inference_ms_per_image": ms / b, "peak_memory_mb": memory}


def profile_variant(model_cfg_dict: dict, state_path: str | None = None, batch_size: int = 1,
                    device: str = "cpu", repeats: int = 5, autocast: bool = False,
                    timeout: float = 600) -> dict[str, float]:
    """Latency and peak memory of one variant's forward pass, measured in a fresh Python process so that
    memory growth is not hidden by what earlier work left allocated. Inputs are random: cost does not
    depend on content. ``state_path`` is a training checkpoint (``stage{n}.pt``) to load, if any."""
    spec = {"model": model_cfg_dict, "state": state_path, "batch_size": batch_size, "device": device,
            "repeats": repeats, "autocast": autocast}
    model = dict(model_cfg_dict)
    if model.get("pretrained") and Path(str(model["pretrained"])).exists():
        model["pretrained"] = str(Path(str(model["pretrained"])).resolve())
    spec["model"] = model
    spec["state"] = str(Path(state_path).resolve()) if state_path else None
    return measure_in_fresh_process(spec, timeout)


if __name__ == "__main__":
    import json

    from risclip import registry

    torch.set_num_threads(max(1, torch.get_num_threads()))
    spec = json.loads(sys.argv[1])
    registry.load_plugins(spec.pop("plugins", []))
    print(json.dumps(_measure_spec(spec)))


@torch.no_grad()
def interleaved_ms(calls: dict[str, Callable[[], object]], rounds: int = 40, warmup: int = 3,
                   device: torch.device | None = None) -> dict[str, dict[str, float]]:
    """Latency of several calls measured turn about: every round times each call once, in a rotated order,
    so that a slow spell of a shared machine touches all of them alike (one benchmark after another would
    give it to one alone). Returns each call's median and quartiles in ms."""
    names = list(calls)
    for _ in range(warmup):
        for n in names:
            calls[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            if device is not None:
                _sync(device)
            t0 = time.perf_counter()
            calls[n]()
            if device is not None:
                _sync(device)
            times[n].append(1000 * (time.perf_counter() - t0))
    out = {}
    for n, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        out[n] = {"median_ms": statistics.median(ts), "q1_ms": q[0], "q3_ms": q[2], "rounds": rounds}
    return out
