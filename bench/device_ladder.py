"""The SynthRef ladder through ``run_variant`` alone, with no MLflow: for a machine whose Python has no
MLflow (a lent GPU machine), to check that CUDA results (bf16 autocast) match the CPU's within seed noise.

  python -m bench.device_ladder --device cuda --seeds 0,1,2 --out ladder-cuda.json
  python -m bench.device_ladder --device cpu --seeds 0 --quick --out /tmp/ladder.json   # a smoke run

It uses the ``synth-cpu`` preset exactly as ``bench.ablate`` does (SynthRef and the proxy CLIP are made
when absent, so carry ``data/synthref`` to save the time), trains every rung of the ladder per seed, and
writes one JSON row per (rung, seed) with the test and val metrics, the per-kind mIoU and the training
time. ``bench.benchmark_report --ladder-check`` puts those rows beside the tracked CPU ladder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from risclip.config import LADDER
from risclip.engine import resolve_device, run_variant

from . import presets as P
from .assets import ensure_backbone, ensure_data


def run(device: str, seeds: list[int], quick: bool, workers: int, progress: bool | None) -> dict:
    preset = P.get_preset("synth-cpu")
    if quick:
        preset = P.with_data_root(P.quick(preset), "data/synthref-quick")
    ensure_data(preset, progress)
    preset, _ = ensure_backbone(preset, progress, None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for rung, comp in enumerate(LADDER):
                if rung == 0 and seed != seeds[0]:
                    continue  # rung 0 trains nothing: the seed changes nothing
                train = dataclasses.replace(preset.train, seed=seed, device=device, num_workers=workers,
                                            progress=progress)
                model = preset.model.with_components(comp)
                t0 = time.perf_counter()
                result = run_variant(model, train, preset.data, workdir=Path(tmp) / f"{rung}-{seed}",
                                     stage1_cache=Path(tmp) / "stage1")
                rows.append({"rung": rung, "components": str(comp), "seed": seed, **result.metrics,
                             "val_mIoU": result.val_metrics.get("mIoU"),
                             "by_kind_mIoU": {k: v["mIoU"] for k, v in result.by_kind.items()},
                             "train_seconds": result.train_seconds, "wall_seconds": time.perf_counter() - t0,
                             "stage1_reused": result.stage1_reused})
                print(f"rung {rung} seed {seed}: mIoU {result.metrics['mIoU']:.2f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    dev = resolve_device(device)
    return {"preset": preset.name, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "amp": preset.train.amp, "seeds": seeds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.device_ladder", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="the quick preset: tiny data, one epoch per stage")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default 0)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds takes comma-separated integers (got {a.seeds!r})", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out = run(a.device, seeds, a.quick, a.workers, False if a.no_progress else None)
    out["wall_seconds"] = time.perf_counter() - t0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out} ({out['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
