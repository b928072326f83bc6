"""``python -m bench.stage1_trials``: what stage 1 needs to read its text. Rung 1 (value + adapters) trained
with one change at a time against the preset's own recipe, each scored on the first 600 val expressions
(the ``-full-val`` trials: every val expression; never test): mIoU, select mIoU per expression kind and
per attribute form, and the swap control (each sentence replaced by another referent's of its image).
Where the proxy-CLIP trials (``python -m bench.proxy_trials``) ask whether the frozen features hold what
the text names, these ask whether training can use it.

Two trials change what trains, which no preset does, and so patch the model's parameter groups for their
run only (here, never in :mod:`risclip`): ``finetune`` also trains every CLIP weight at a tenth of the
adapters' rate, ``frozen-text`` trains the vision adapters and the map's affine but leaves the text
adapters at their identity initialisation.

Results are kept per trial in ``reports/<preset>/stage1-trials.json`` (a trial already there is not run
again unless ``--force``), then rendered to ``.md`` beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.spine import presets as P
from bench.spine.assets import ensure_backbone, ensure_data
from bench.spine.variant import score_variant
from risclip.config import Components

KINDS = ("attribute", "position", "relation")
VAL = ["data.test_split=val", "data.max_eval_samples=600"]
DENSE = "ap-dense"  # trials on a proxy-trials checkpoint name it; its path comes from its PretrainConfig


@dataclasses.dataclass(frozen=True)
class Trial:
    what: str
    sets: tuple[str, ...] = ()
    proxy: str | None = None  # a bench.proxy_trials trial whose proxy CLIP to use (None: the preset's)
    finetune: float = 0.0  # also train the CLIP at this multiple of the learning rate
    frozen_text: bool = False


TRIALS: dict[str, Trial] = {
    "preset": Trial("the preset's rung 1 (its proxy; 4 epochs of 2,000 sentences, lr 3e-3, batch 32)"),
    "finetune": Trial("every CLIP weight trained too, at 0.1x the rate", finetune=0.1),
    "lr-1e-2": Trial("lr 1e-2", ("train.lr=0.01",)),
    "batch-8": Trial("batch 8: four times the steps over the same epochs", ("train.batch_size=8",)),
    "scale-30": Trial("the map's affine initialised sharper (scale 30, bias -7.5)",
                      ("model.map_scale_init=30", "model.map_bias_init=-7.5")),
    "spatial-ce": Trial("Dice + focal + a spatial cross-entropy (train.spatial_ce_weight=1)",
                        ("train.spatial_ce_weight=1.0",)),
    "dense": Trial("the ap-dense proxy (its rung 0 picks 68.6% of attribute referents on val)",
                   ("model.clip_model=RIS-Tiny-AP",), proxy=DENSE),
    "dense-spatial-ce": Trial("the ap-dense proxy and the spatial cross-entropy",
                              ("model.clip_model=RIS-Tiny-AP", "train.spatial_ce_weight=1.0"), proxy=DENSE),
    "dense-place": Trial("the ap-dense-place proxy (region hard negatives, superlative phrases)",
                         ("model.clip_model=RIS-Tiny-AP",), proxy="ap-dense-place"),
    "dense-sincos": Trial("the ap-dense-sincos proxy (ap-dense-place with fixed sine-cosine position codes)",
                          ("model.clip_model=RIS-Tiny-AP",), proxy="ap-dense-sincos"),
    "dense-frozen-text": Trial("the ap-dense proxy, text adapters left at the identity",
                               ("model.clip_model=RIS-Tiny-AP",), proxy=DENSE, frozen_text=True),
    "dense-lr-3e-4": Trial("the ap-dense proxy at lr 3e-4", ("model.clip_model=RIS-Tiny-AP", "train.lr=0.0003"),
                           proxy=DENSE),
    "all-train-1-epoch": Trial("every train sentence (about 8,900, from all 1,560 train images) for 1 epoch: about "
                               "the preset's steps, 4.5 times the images", ("data.max_train_samples=null",
                                                                            "train.stage1_epochs=1")),
    "spread": Trial("the preset's 2,000 sentences spread over all train images (data.train_subset=spread): the same "
                    "steps", ("data.train_subset=spread",)),
    "epochs-8": Trial("8 epochs of the preset's 2,000 sentences: twice the steps", ("train.stage1_epochs=8",)),
    "val-cut": Trial("the mask cut chosen on val among 0.10-0.90 (train.threshold_from_val; here val is also the "
                     "scored split, so this row is optimistic by the choice of one number)",
                     ("train.threshold_from_val=true",)),
    "sentences-4000-val-cut": Trial("4,000 train sentences for 2 epochs (the preset's steps, twice its sentences), "
                                    "cut chosen on val", ("data.max_train_samples=4000", "train.stage1_epochs=2",
                                                          "train.threshold_from_val=true")),
    "all-train-1-epoch-val-cut": Trial("all-train-1-epoch, cut chosen on val", (
        "data.max_train_samples=null", "train.stage1_epochs=1", "train.threshold_from_val=true")),
    # the attribute series: how far more sentences and epochs move rung 1's attribute select, on
    # every val expression (the first 600 hold about 200 attribute expressions: +-3 points of select)
    "full-val": Trial("the preset's recipe, scored on every val expression", ("data.max_eval_samples=null",)),
    "lr-1e-2-full-val": Trial("lr 1e-2, every val expression", ("train.lr=0.01", "data.max_eval_samples=null")),
    "lr-1e-3-full-val": Trial("lr 1e-3, every val expression", ("train.lr=0.001", "data.max_eval_samples=null")),
    "all-train-1-epoch-full-val": Trial("every train sentence for 1 epoch, every val expression", (
        "data.max_train_samples=null", "train.stage1_epochs=1", "data.max_eval_samples=null")),
    "all-train-2-epochs-full-val": Trial("every train sentence for 2 epochs, every val expression", (
        "data.max_train_samples=null", "train.stage1_epochs=2", "data.max_eval_samples=null")),
    "all-train-2-epochs-bf16-full-val": Trial("all-train-2-epochs-full-val under CPU bf16 autocast (train.cpu_amp): "
                                              "the same recipe at about half the step time; does rounding cost "
                                              "accuracy?", ("data.max_train_samples=null", "train.stage1_epochs=2",
                                                            "data.max_eval_samples=null", "train.cpu_amp=true")),
    "all-train-3-epochs-full-val": Trial("every train sentence for 3 epochs, every val expression", (
        "data.max_train_samples=null", "train.stage1_epochs=3", "data.max_eval_samples=null")),
    "overfit-96": Trial("96 train sentences for 60 epochs, scored on those same sentences (can it fit at all?)",
                        ("data.max_train_samples=96", "train.stage1_epochs=60", "data.test_split=train",
                         "data.max_eval_samples=96")),
}


@contextlib.contextmanager
def _what_trains(finetune: float, frozen_text: bool) -> Iterator[None]:
    """Patch the parameter groups of stage 1 for one run: add the CLIP (its own group, at ``finetune`` times
    the rate) or drop the text adapters."""
    import risclip.engine as E
    import risclip.model as M

    if not finetune and not frozen_text:
        yield
        return
    groups, set_stage, make_optimizer = M.RISCLIP.stage_parameter_groups, M.RISCLIP.set_stage, E.make_optimizer

    def patched_groups(self, stage):
        g = groups(self, stage)
        if stage != M.PATCH_STAGE:
            return g
        if frozen_text and self.text_adapters is not None:
            text = {id(p) for p in self.text_adapters.parameters()}
            g = {k: [p for p in v if id(p) not in text] for k, v in g.items()}
        if finetune:
            g = {**g, "clip": list(self.clip.parameters())}
        return g

    def patched_set_stage(self, stage):
        set_stage(self, stage)
        if finetune and stage == M.PATCH_STAGE:
            self.clip.requires_grad_(True)

    def patched_optimizer(model, rule, cfg, steps_per_epoch):
        opt, sched = make_optimizer(model, rule, cfg, steps_per_epoch)
        for g in opt.param_groups:
            if g.get("name") == "clip":  # the schedule's factor is already in lr: scale both alike
                g["lr"], g["initial_lr"] = g["lr"] * finetune, g["initial_lr"] * finetune
        sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
        return opt, sched

    M.RISCLIP.stage_parameter_groups, M.RISCLIP.set_stage, E.make_optimizer = (
        patched_groups, patched_set_stage, patched_optimizer)
    try:
        yield
    finally:
        M.RISCLIP.stage_parameter_groups, M.RISCLIP.set_stage, E.make_optimizer = groups, set_stage, make_optimizer


def proxy_path(preset: P.Preset, trial: str) -> str:
    """The cached checkpoint of a proxy-CLIP trial (pre-trained here if absent)."""
    from bench.experiments.proxy_trials import TRIALS as PROXIES
    from bench.proxy.pretrain_clip import pretrain

    cfg = dataclasses.replace(preset.proxy_clip, **PROXIES[trial][1])
    return str(pretrain(cfg)[0])


def run_trial(preset: P.Preset, name: str, seed: int = 0) -> dict:
    t = TRIALS[name]
    p = P.override(preset, [*VAL, *t.sets])
    ensure_data(p, False)
    p, _ = ensure_backbone(p, False, proxy_path(preset, t.proxy) if t.proxy else None)
    model_cfg = dataclasses.replace(p.model, components=Components.from_names("adapters"))
    train_cfg = dataclasses.replace(p.train, seed=seed, progress=False)
    with _what_trains(t.finetune, t.frozen_text), tempfile.TemporaryDirectory() as wd:
        sc = score_variant(p, model_cfg, train_cfg, Path(wd), evaluate_val=False)
    r, sel = sc.result, sc.select
    return {"trial": name, "what": t.what, "sets": list(t.sets), "proxy": t.proxy, "seed": seed,
            "finetune": t.finetune, "frozen_text": t.frozen_text, "split": p.data.test_split,
            "samples": r.eval_samples, "mIoU": r.metrics["mIoU"], "select": sel["overall"]["mIoU"],
            **{f"select_{k}": sel["by_kind"].get(k, {}).get("mIoU") for k in KINDS},
            "select_attribute_forms": {f: v["mIoU"] for f, v in sel.get("by_form", {}).items()},
            "attribute_form_counts": {f: int(v["count"]) for f, v in sel.get("by_form", {}).items()},
            "swap": r.controls.get("swap", {}).get("metrics", {}).get("mIoU"),
            "threshold": r.threshold, "fixed_mIoU": r.protocol_metrics.get("fixed", {}).get("mIoU"),
            "train_seconds": r.train_seconds, "last_loss": r.history[-1]["loss"] if r.history else None}


def render(preset: str, rows: list[dict], command: str) -> str:
    def f(x):
        return "-" if x is None else f"{x:.1f}"

    lines = [f"# What stage 1 needs to read its text ({preset})", "",
             "**Every number here is ours, measured on SynthRef val (the first 600 expressions, or as many as the `val expressions` column says); none is the paper's.**",
             "", f"- Made by: `{command}` (a trial already in the JSON is not run again; `--force` re-runs)",
             "- Rung 1 (value + adapters), seed 0, one change at a time against the preset's recipe",
             "- Train seconds are as measured on a 2-core machine that sometimes ran other work beside them", "",
             "| trial | what changes | val expressions | mIoU | cut | mIoU at 0.5 | select | attribute | attribute by form "
             "(colour / size / size+colour) | position | relation | swap mIoU | swap / mIoU | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = r["swap"] / r["mIoU"] if r.get("swap") is not None and r["mIoU"] else None
        cut = r.get("threshold")
        at_half = r["fixed_mIoU"] if r.get("fixed_mIoU") is not None else r["mIoU"]  # no cut chosen: scored at 0.5
        forms = r.get("select_attribute_forms") or {}
        by_form = " / ".join(f(forms.get(k)) for k in ("colour", "size", "size+colour")) if forms else "-"
        lines.append(f"| {r['trial']} | {r['what']} | {r.get('samples', '-')} | {f(r['mIoU'])} | "
                     f"{'0.50' if cut is None else f'{cut:.2f}'} | {f(at_half)} | "
                     f"{f(r['select'])} | {f(r['select_attribute'])} | {by_form} | "
                     f"{f(r['select_position'])} | {f(r['select_relation'])} | {f(r['swap'])} | "
                     f"{'-' if share is None else f'{100 * share:.0f}%'} | {f(r['train_seconds'])} |")
    lines += ["", "Select columns: the share of referents the map picks among its image's instance masks, overall and "
              "by expression kind; attribute expressions also by the words that pick the referent (colour alone, size "
              "alone, or both; `bench/spine/proposals.py: attribute_form`; rows recorded before the column existed show "
              "-). `cut`: the sigmoid cut of the masks (0.50 unless chosen on val; rows recorded before the column "
              "existed used 0.50). `overfit-96` is scored on its own 96 train sentences, not on val.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stage1_trials", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--preset", default="synth-refcoco", help="a SynthRef preset (default %(default)s)")
    ap.add_argument("--trials", default=",".join(TRIALS), help=f"comma-separated, of: {', '.join(TRIALS)}")
    ap.add_argument("--out-dir", default=None, help="default reports/<preset>")
    ap.add_argument("--force", action="store_true", help="run the chosen trials again even if recorded")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.trials.split(",") if n.strip()]
    bad = [n for n in names if n not in TRIALS]
    if bad:
        ap.error(f"unknown trial(s) {', '.join(bad)}; valid: {', '.join(TRIALS)}")
    try:
        preset = P.build(a.preset)
    except ValueError as e:
        ap.error(str(e))
    if preset.synthref is None or preset.proxy_clip is None:
        ap.error(f"{a.preset} is not a SynthRef preset with a proxy CLIP")
    out = Path(a.out_dir or P.report_dir(a.preset)) / "stage1-trials.json"
    rows = {r["trial"]: r for r in json.loads(out.read_text())["trials"]} if out.is_file() else {}
    for name in names:
        if name in rows and not a.force:
            continue
        t0 = time.perf_counter()
        print(f"trial {name} ...", file=sys.stderr, flush=True)
        rows[name] = run_trial(preset, name)
        print(f"  mIoU {rows[name]['mIoU']:.1f}, select {rows[name]['select']:.1f}, swap {rows[name]['swap']:.1f} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"preset": a.preset, "trials": [rows[n] for n in TRIALS if n in rows]}, indent=1))
    ordered = [rows[n] for n in TRIALS if n in rows]
    command = "python -m bench.stage1_trials" + ("" if a.preset == "synth-refcoco" else f" --preset {a.preset}")
    out.with_suffix(".md").write_text(render(a.preset, ordered, command))
    print(f"wrote {out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
