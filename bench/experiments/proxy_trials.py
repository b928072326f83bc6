"""Proxy-CLIP trials: candidate pre-training recipes for the SynthRef proxy, each scored where the
diagnosis located the grounding fault (reports/archive/synth-refcoco/diagnosis.md), before any ladder is run.

For every trial the proxy is pre-trained (or taken from its cache) on the preset's caption corpus, then:

* **image-level probes** on held-out corpus images (:mod:`bench.proxy.clip_probes`): a true caption against
  one changed word of colour, shape, place or relation (chance 50%);
* **rung 0 on val** (the frozen proxy as the preset's rung 0, value path): select mIoU overall and per kind,
  i.e. how often the patch map picks the referent among the image's objects;
* **zero-shot dense grounding** (:func:`bench.experiments.diagnose.zero_shot_grounding`) by the value path and
  by the plain last-block tokens: does the object with the highest mean cosine match "a {shape}",
  "a {colour} object", "a {colour} {shape}"?

Everything is measured on val and on the corpus's held-out images, never on test.

    python -m bench.proxy_trials [--preset synth-refcoco] [--trials v2,ap,...] [--val-samples 600]

writes ``reports/<preset>/proxy-trials.md`` and ``.json``. Trials whose proxy is not cached pre-train first
(10-25 minutes each on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from bench.experiments.diagnose import model_for, zero_shot_grounding
from bench.proxy.clip_probes import run_probes
from bench.proxy.pretrain_clip import held_out_pairs, pretrain
from bench.reporting.proxy_report import PROBES, rerender, write_trials
from bench.spine import presets as P
from bench.spine.assets import ensure_data
from bench.spine.proposals import ProposalSelection
from risclip.backbone import create_clip
from risclip.engine import build_dataset, evaluate

# name -> (what changes against the preset's own proxy, PretrainConfig overrides)
TRIALS: dict[str, tuple[str, dict]] = {
    "v2": ("the preset's proxy: CLS token pooled, 64 px, 600 steps", {}),
    "ap": ("average-pooled patch tokens (RIS-Tiny-AP)", {"clip_model": "RIS-Tiny-AP"}),
    "ap-hires": ("ap, then 150 steps at 128 px (the RIS input)", {"clip_model": "RIS-Tiny-AP", "hires_steps": 150}),
    "ap-neg": ("ap with hard negative captions (one shape, colour or place word changed)",
               {"clip_model": "RIS-Tiny-AP", "hard_negatives": True}),
    "ap-neg-regions": ("ap-neg with half of each batch region pairs (a window on one object, its phrase)",
                       {"clip_model": "RIS-Tiny-AP", "hard_negatives": True, "region_fraction": 0.5}),
    "ap-deep": ("ap with a vision tower twice as deep (8 blocks, RIS-Deep-AP)", {"clip_model": "RIS-Deep-AP"}),
    "ap-dense": ("ap with the dense region-phrase loss (each object's masked patch mean against its phrase)",
                 {"clip_model": "RIS-Tiny-AP", "dense_weight": 1.0}),
    "ap-dense-place": ("ap-dense with region-level hard negatives (place, superlative or size flipped) and "
                       "superlative phrases (\"the leftmost square\")",
                       {"clip_model": "RIS-Tiny-AP", "dense_weight": 1.0, "dense_negatives": True,
                        "dense_superlatives": True}),
    "ap-dense-sincos": ("ap-dense-place with fixed 2-D sine-cosine position embeddings (every patch knows where it is)",
                        {"clip_model": "RIS-Tiny-AP", "dense_weight": 1.0, "dense_negatives": True,
                         "dense_superlatives": True, "pos_embed": "sincos"}),
}


@torch.no_grad()
def score_trial(preset: P.Preset, name: str, val_samples: int, progress: bool | None) -> dict:
    what, overrides = TRIALS[name]
    cfg = dataclasses.replace(preset.proxy_clip, **overrides)
    with torch.enable_grad():  # an uncached proxy pre-trains here, inside this function's no_grad
        path, summary = pretrain(cfg, progress=progress)
    clip = create_clip(cfg.clip_model, str(path), cfg.image_size)
    held_out = held_out_pairs(cfg, cfg.image_size)  # the train images are not needed here
    probes = run_probes(clip, held_out, cfg.context_length, cfg.seed)
    model_cfg = dataclasses.replace(preset.model, pretrained=str(path), clip_model=cfg.clip_model)
    p = dataclasses.replace(preset, model=model_cfg, data=dataclasses.replace(preset.data, max_eval_samples=val_samples))
    dev = torch.device("cpu")
    val = build_dataset(p.data, model_cfg, p.data.val_split, train=False)
    out = {"trial": name, "what": what, "overrides": overrides, "checkpoint": path.name,
           "pretrain_seconds": summary.get("seconds"), "retrieval_top1": summary.get("val_retrieval_top1"),
           "probes": {k: probes.get(f"{k}_probe") for k in PROBES}, "val_samples": len(val)}
    for readout, comps in (("value", "none"), ("plain", "-value")):
        model = model_for(p, comps, None, dev)
        selection = ProposalSelection(val)
        ev = evaluate(model, val, dataclasses.replace(p.train, progress=False), dev, evaluators=(selection,))
        sel = selection.compute()
        out[readout] = {"mIoU": ev.metrics["mIoU"], "select": sel["overall"]["mIoU"],
                        "select_by_kind": {k: v["mIoU"] for k, v in sel["by_kind"].items()},
                        "zero_shot": zero_shot_grounding(model, val, 150, dev)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.proxy_trials", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="synth-refcoco", help="a SynthRef preset with a v2 proxy (default %(default)s)")
    p.add_argument("--trials", default=",".join(TRIALS), help=f"comma-separated, of: {', '.join(TRIALS)}")
    p.add_argument("--val-samples", type=int, default=600, help="val expressions rung 0 is scored on (default %(default)s)")
    p.add_argument("--out-dir", default=None, help="default reports/<preset>")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="render the report again from the JSON it wrote (reports/<preset>/proxy-trials.json), "
                        "training and scoring nothing")
    a = p.parse_args(argv)
    if a.render:
        try:
            print(f"wrote {rerender(Path(a.render))}")
            return 0
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    names = [t.strip() for t in a.trials.split(",") if t.strip()]
    unknown = [t for t in names if t not in TRIALS]
    try:
        preset = P.build(a.preset)
        if unknown:
            raise ValueError(f"unknown trials {', '.join(unknown)}; valid: {', '.join(TRIALS)}")
        if preset.proxy_clip is None or not preset.proxy_clip.corpus_images:
            raise ValueError(f"preset {a.preset} has no caption-corpus proxy CLIP to vary")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = False if a.no_progress else None
    ensure_data(preset, progress)
    t0 = time.perf_counter()
    rows = []
    for name in names:
        print(f"trial {name} ...", flush=True)
        rows.append(score_trial(preset, name, a.val_samples, progress))
    command = " ".join(["python -m bench.proxy_trials", *(argv if argv is not None else sys.argv[1:])])
    out = Path(a.out_dir or P.report_dir(a.preset))
    out.mkdir(parents=True, exist_ok=True)
    stem = out / "proxy-trials"
    write_trials({"preset": preset.name, "command": command, "seconds": time.perf_counter() - t0, "rows": rows}, stem)
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
