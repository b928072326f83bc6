"""Where the time goes: ``torch.profiler`` over a forward pass (or a stage-1 training step), summarised.

For each (variant, path, batch) the summary holds the top operators by self time, the kernel launches per
call (on CUDA: kernels the device ran; on the CPU, where nothing is launched, the operator calls that would
each launch at least one), and the time outside kernels: the call's wall time minus the device's busy time
(on CUDA; a call bound by Python and launches has most of its time there). The traces themselves are not
kept.

    python -m bench.costs.trace --shape paper-b --device cuda --autocast --out reports/benchmarks/gpu/profile-gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.costs import costs

TOP = 8


def _ctx(autocast: bool, device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if autocast and device.type == "cuda" else contextlib.nullcontext()


def profile_call(fn, device: torch.device, repeats: int = 3) -> dict:
    """Profile ``repeats`` calls of ``fn`` (after two warm-up calls); figures are per call."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = (time.perf_counter() - t0) / repeats
    events = prof.key_averages()
    on_cuda = device.type == "cuda"

    def self_us(e) -> float:
        return (getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)) if on_cuda \
            else e.self_cpu_time_total

    ops = [e for e in events if e.key.startswith("aten::")]
    total = sum(self_us(e) for e in ops) or 1.0
    top = sorted(ops, key=self_us, reverse=True)[:TOP]
    if on_cuda:
        kernels = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        launches = len(kernels) / repeats
        busy = sum(e.time_range.elapsed_us() for e in kernels) / repeats / 1e6
    else:
        launches = sum(e.count for e in ops) / repeats  # operator calls: each would launch at least one kernel
        busy = float("nan")
    return {"wall_ms": 1000 * wall, "launches": launches,
            "outside_kernels_ms": 1000 * (wall - busy) if on_cuda else float("nan"),
            "top": [{"op": e.key, "self_ms": self_us(e) / 1000 / repeats, "share": self_us(e) / total,
                     "calls": e.count / repeats} for e in top]}


def profile_variant(shape: str, variant: str, path: str, batch: int, device: torch.device, autocast: bool,
                    train: bool = False) -> dict:
    model = costs.build(shape, variant, path).to(device)
    images, tokens = costs.inputs(shape, batch, device)
    if train:
        step = costs.train_step_fn(model, images, tokens, 1)

        def fn():
            with _ctx(autocast, device):
                step()
    else:
        def fn():
            with torch.no_grad(), _ctx(autocast, device):
                model(images, tokens)
    out = profile_call(fn, device)
    out.update(shape=shape, variant=variant, path=path, batch=batch, mode="train" if train else "inference",
               device=str(device), autocast=autocast)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.costs.trace", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="paper-b", help=f"one of {', '.join(costs.SHAPES)} (default %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--batches", default="1,32", help="inference batch sizes (default %(default)s)")
    p.add_argument("--train-batch", type=int, default=32, help="the stage-1 training step's batch (0: none)")
    p.add_argument("--paths", default="eager,fused", help="model paths (default %(default)s)")
    p.add_argument("--out", required=True, help="the summary JSON")
    a = p.parse_args(argv)
    try:
        if a.shape not in costs.SHAPES:
            raise ValueError(f"unknown shape '{a.shape}'; valid: {', '.join(costs.SHAPES)}")
        device = torch.device(a.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but CUDA is not available")
        batches = [int(b) for b in a.batches.split(",") if b.strip()]
        paths = [x.strip() for x in a.paths.split(",") if x.strip()]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    full = costs.RUNG_VARIANTS[-1]
    rows = []
    for b in batches:
        rows.append(profile_variant(a.shape, costs.CLIP, "fused", b, device, a.autocast))
        rows += [profile_variant(a.shape, full, path, b, device, a.autocast) for path in paths]
    if a.train_batch:
        rows += [profile_variant(a.shape, costs.RUNG_VARIANTS[2], path, a.train_batch, device, a.autocast, train=True)
                 for path in paths]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python -m bench.costs.trace " + " ".join(argv or sys.argv[1:]),
                               "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
