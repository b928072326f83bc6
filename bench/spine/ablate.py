"""Train and score RISCLIP variants, tracked in MLflow: what does each component buy?

With no arguments this runs the SynthRef ladder (the paper's five rungs) with seeds 0, 1 and 2 on
the CPU, generating SynthRef and pre-training the proxy CLIP first if they are absent. Numbers from
SynthRef are ours, not the paper's; the table prints the paper's RefCOCOg-UMD mIoU beside ours only
as the shape to compare against.

Examples:
  python -m bench.ablate                                  # the ladder, 3 seeds, preset synth-refcoco
  python -m bench.ablate --components adapters,cfe        # value grounding + adapters + CFE
  python -m bench.ablate --components none --components all --seeds 0
  python -m bench.ablate --all --seeds 0                  # all 32 flag combinations
  python -m bench.ablate --quick                          # the whole pipeline in a few minutes
  python -m bench.ablate --components adapters,cfe --set train.stage1_epochs=8 --seeds 0
  mlflow ui                                               # then browse the runs

Finished runs are reused by config hash (model, training and data configs plus a fingerprint of the
data files) unless --force; an interrupted invocation, run again, resumes from the last finished
epoch and loses no finished variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bench.spine import presets as P
from bench.spine.assets import (
    UsageError,
    data_fingerprint,
    ensure_backbone,
    ensure_data,
    stage1_work,
    train_sentences,
)
from bench.spine.reference import parse_multipliers, reference_hash, reference_name, run_reference
from bench.spine.results import ROW_FIELDS, format_table, row_from_run, write_output
from bench.spine.tracking import (
    DEFAULT_TRACKING_URI,
    UI_DEFAULT,
    NullTracker,
    Tracker,
    git_revision,
    metric_key,
    open_tracker,
    runs_url,
)
from bench.spine.variant import (
    GridHook,
    TrackingHook,
    add_text_controls,
    baselines_identity,
    find_reusable,
    log_variant,
    run_identity,
    score_variant,
    variant_tags,
)
from risclip import distributed as dist
from risclip import registry
from risclip.backbone import BackboneError
from risclip.config import LADDER, Components
from risclip.data.refer import ReferError
from risclip.engine import NonFiniteLossError, build_dataset, stage1_path
from risclip.metrics import METRIC_NAMES, PROTOCOLS


# ------------------------------------------------------------------------------------------ helpers
def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise UsageError(f"--seeds takes comma-separated integers, e.g. 0,1,2 (got {text!r})") from None
    if not seeds:
        raise UsageError("--seeds is empty")
    return list(dict.fromkeys(seeds))


def rung_of(c: Components) -> int | None:
    return LADDER.index(c) if c in LADDER else None


# --------------------------------------------------------------------------------------------- runs
@dataclasses.dataclass
class Context:
    preset: P.Preset
    tracker: Tracker
    parent_id: str
    workdir: Path
    fingerprint: str
    git_rev: str
    force: bool
    progress: bool | None
    device: str
    overrides: str = ""  # the invocation's --set assignments, ";"-joined
    protocols: tuple[str, ...] = ("ours",)
    tuned: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # components -> --set, from --tuned
    finished: dict[str, str] = dataclasses.field(default_factory=dict)  # run hash -> run id, this invocation

    def stage1_cache(self) -> Path:
        """Finished stage-1 weights shared between variants (rung 4 reuses rung 3's); with --force a fresh
        folder for this invocation, so nothing trained before it is reused."""
        base = self.workdir / "stage1"
        return base / f"force-{self.parent_id}" if self.force else base

    def device_for_profile(self) -> str:
        from risclip.engine import resolve_device

        return str(resolve_device(self.device))


def stage1_scale(preset: P.Preset) -> float:
    """How many times the named preset's stage-1 work (:func:`bench.spine.assets.stage1_work`) this preset's
    overrides ask for, so a budget sweep's ``--set`` points scale the preset's recorded minutes per run. The train
    split is counted only where a sentence cap makes it matter."""
    try:
        base = P.get_preset(preset.name)
    except ValueError:
        return 1.0
    capped = preset.data.max_train_samples or base.data.max_train_samples
    available = train_sentences(preset) if capped else 1
    return stage1_work(preset, available) / max(stage1_work(base, available), 1)


def tuned_preset(ctx: Context, components: Components) -> tuple[P.Preset, list[str]]:
    """The preset a variant trains under: the invocation's, with the variant's own ``--tuned`` overrides (listed
    second) where it has them."""
    own = ctx.tuned.get(str(components), [])
    return (P.override(ctx.preset, own) if own else ctx.preset), own


def runs(n: int, word: str = "run") -> str:
    """``n`` and the word, plural unless ``n`` is one ("1 run", "3 runs")."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def span(lo: float, hi: float) -> str:
    """``lo-hi`` in whole minutes, or one number where they round alike."""
    return f"{lo:.0f}" if f"{lo:.0f}" == f"{hi:.0f}" else f"{lo:.0f}-{hi:.0f}"


def decoder_alone(ctx: Context, todo: list[tuple[Components, int]]) -> int:
    """How many of the runs ``todo`` (in order) train their decoder alone: their stage 1 is in the stage-1
    cache already, or a run before them in ``todo`` trains it (rung 4 after rung 3, :func:`risclip.engine.stage1_key`)."""
    seen: set[Path] = set()
    alone = 0
    for c, s in todo:
        if not c.trains_patch_level:
            continue
        preset, _ = tuned_preset(ctx, c)
        path = stage1_path(ctx.stage1_cache(), preset.model.with_components(c),
                           dataclasses.replace(preset.train, seed=s), preset.data)
        alone += bool(c.decoder and (path in seen or path.is_file()))
        seen.add(path)
    return alone


def announce(ctx: Context, jobs: list[tuple[Components, int]], multiples: tuple[float, ...]) -> str:
    """What this invocation will train and, where the preset records it, about how long that takes: said
    before the wait. A run is counted as reused when the store holds a finished run of its identity; a rung with
    the decoder whose stage 1 is cached (or trained by a run before it) costs its stage 2 and scoring alone."""
    train = [(c, s) for c, s in jobs if c.trains_anything]
    todo = train
    if not ctx.force and not ctx.tuned:
        todo = [(c, s) for c, s in train
                if find_reusable(ctx.tracker, run_identity(ctx.preset, c, s, ctx.fingerprint, ctx.protocols)[1]) is None]
    reused = len(train) - len(todo)
    text = (f"{runs(len(jobs))}: {len(todo)} to train" + (f", {reused} reused from the store" if reused else "")
            + (f", {len(jobs) - len(train)} that train nothing" if len(jobs) > len(train) else ""))
    lo, hi = ctx.preset.run_minutes
    if todo and hi:
        k = stage1_scale(ctx.preset)
        alone = decoder_alone(ctx, todo) if ctx.preset.decoder_minutes else 0
        full = len(todo) - alone
        d = ctx.preset.decoder_minutes * k
        text += (f"; a {ctx.preset.name} run takes about {span(lo * k, hi * k)} min on a 2-core CPU"
                 + (f" at {k:g}x its stage-1 budget" if k != 1 else "")
                 + (f", one that trains the decoder alone on a cached stage 1 about {d:.0f} min ({alone} here)"
                    if alone else "")
                 + f", so about {span(full * lo * k + alone * d, full * hi * k + alone * d)} min before the table")
    if multiples and any(rung_of(c) == 1 for c, _ in jobs):
        seeds = sorted({s for _, s in jobs})
        refs = [(m, s) for m in multiples for s in seeds]
        left = refs if ctx.force else [(m, s) for m, s in refs
                                       if ctx.tracker.find_finished(reference_hash(ctx, m, s)) is None]
        found = f", {len(refs) - len(left)} reused from the store" if len(left) < len(refs) else ""
        cost = (f"about {sum(m for m, _ in left):g} times rung 1's training, plus scoring" if left
                else "nothing to train")
        text += (f"; then the from-scratch reference at {', '.join(f'{m:g}x' for m in multiples)} rung 1's training "
                 f"time for each of {runs(len(seeds), 'seed')} ({runs(len(refs))}: {len(left)} to train{found}; {cost}; "
                 f"--reference '' skips it)")
    return text


def run_one(ctx: Context, components: Components, seed: int) -> dict:
    """Train and score one (variant, seed), or reuse the finished MLflow run with the same hash."""
    preset, own = tuned_preset(ctx, components)
    ident, run_hash = run_identity(preset, components, seed, ctx.fingerprint, ctx.protocols)
    rung = rung_of(components)
    reuse = None  # process 0 decides (it alone reads the store); under torchrun every process follows
    if dist.is_main():
        if run_hash in ctx.finished:  # e.g. rung 0 for a second seed: the seed changes nothing
            reuse = ctx.finished[run_hash]
        elif not ctx.force:
            reuse = find_reusable(ctx.tracker, run_hash)
            if reuse is not None:
                tqdm.write(f"{components} seed {seed}: reusing finished run {reuse[:8]} (hash {run_hash})")
    reuse = dist.broadcast_object(reuse)
    if reuse is not None:
        if not dist.is_main():
            return {"kind": "variant", "components": str(components), "seed": seed, "reused": True}
        run = ctx.tracker.get_run(reuse)
        if "test_swap_mIoU" not in run.data.metrics:  # a run from before the text controls: score them now
            cfg = dataclasses.replace(preset.train, device=ctx.device, progress=ctx.progress)
            if add_text_controls(ctx.tracker, run, preset, components, cfg):
                run = ctx.tracker.get_run(reuse)
            else:
                tqdm.write(f"{components} seed {seed}: run {reuse[:8]} has no text controls and its checkpoint is "
                           f"not on this machine; its swap and generic columns stay empty")
        return row_from_run(run, "variant", str(components), seed, rung, reused=True)
    model_cfg = preset.model.with_components(components)
    train_cfg = dataclasses.replace(preset.train, seed=seed, device=ctx.device,
                                    progress=preset.train.progress if ctx.progress is None else ctx.progress)
    tags = variant_tags(run_hash, components, seed, preset, model_cfg, train_cfg, ctx.fingerprint, ctx.git_rev, rung,
                        overrides=";".join([*ctx.overrides.split(";"), *own]).strip(";"), tuned=";".join(own))
    run_id = ctx.tracker.start(f"{components} s{seed}", tags, parent_id=ctx.parent_id)
    workdir = ctx.workdir / run_hash
    if ctx.force and workdir.exists() and dist.is_main():
        shutil.rmtree(workdir)
    dist.barrier()
    with ctx.tracker.ending(run_id):
        ctx.tracker.log_params(run_id, {"preset": preset.name, "components": str(components), "seed": seed,
                                        "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
                                        "data": preset.data.to_dict()})
        ctx.tracker.log_json(run_id, {**ident, "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
                                      "data_config": preset.data.to_dict(), "git_revision": ctx.git_rev},
                             "config.json")
        grid_path = workdir / "val_predictions.png"
        hooks = (TrackingHook(ctx.tracker, run_id),
                 GridHook(preset, model_cfg, grid_path, f"{components}, seed {seed} (val)"))
        scores = score_variant(preset, model_cfg, train_cfg, workdir, ctx.stage1_cache(), hooks, ctx.protocols)
        if not dist.is_main():
            return {"kind": "variant", "components": str(components), "seed": seed, "reused": False}
        from bench.costs.profiling import profile_variant

        cost = profile_variant(model_cfg.to_dict(), scores.result.checkpoint, batch_size=1,
                               device=ctx.device_for_profile())
        log_variant(ctx.tracker, run_id, scores, cost, grid_path)
    ctx.finished[run_hash] = run_id
    return row_from_run(ctx.tracker.get_run(run_id), "variant", str(components), seed, rung, reused=False)


def run_baselines(ctx: Context) -> list[dict]:
    """Score the text-blind baselines once per data fingerprint (tracked and reused like variants)."""
    from bench.spine.baselines import BASELINES, PROPOSAL_BASELINES, evaluate_baselines

    data = ctx.preset.data
    run_hash = baselines_identity(data, ctx.fingerprint)
    found = None if ctx.force else ctx.tracker.find_finished(run_hash)
    if found is None:
        results = evaluate_baselines(data, limit=data.max_eval_samples, progress=ctx.progress)
        run_id = ctx.tracker.start("baselines", {"run_hash": run_hash, "config_hash": run_hash, "kind": "baselines",
                                                 "preset": ctx.preset.name, "git_revision": ctx.git_rev,
                                                 "data_fingerprint": ctx.fingerprint}, parent_id=ctx.parent_id)
        metrics = {}
        for name, (m, by_kind) in results.items():
            metrics.update({f"{name}/test_{metric_key(k)}": v for k, v in m.items()})
            for kind, km in by_kind.items():
                metrics[f"{name}/test_{kind}_mIoU"] = km["mIoU"]
        ctx.tracker.log_metrics(run_id, metrics)
        ctx.tracker.log_json(run_id, {n: {"test": m, "by_kind": b} for n, (m, b) in results.items()}, "metrics.json")
        ctx.tracker.end(run_id)
        found = ctx.tracker.get_run(run_id)
    rows = []
    for name in BASELINES:
        m = found.data.metrics
        row = {"kind": "baseline", "rung": None, "components": name, "seed": None}
        row.update({k: m.get(f"{name}/test_{metric_key(k)}", math.nan) for k in METRIC_NAMES})
        row["select_mIoU"] = row["mIoU"] if name in PROPOSAL_BASELINES else math.nan
        row.update(train_seconds=0.0, inference_ms_per_image=math.nan, peak_memory_mb=math.nan,
                   config_hash=run_hash, mlflow_run_id=found.info.run_id, reused=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.ablate", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to run (default: --ladder)")
    what.add_argument("--components", action="append", metavar="NAMES",
                      help="one variant, by component names joined by commas: " + ", ".join(
                          f"{n}{' (on unless -value)' if n == 'value' else ''}" for n in registry.builtin_names()) +
                           ", or a plug-in's name; 'none' is rung 0, 'all' every component. Repeat for more variants.")
    what.add_argument("--ladder", action="store_true", help="the paper's five cumulative rungs")
    what.add_argument("--all", action="store_true",
                      help="every combination of the registered components (32 for the five built-ins)")
    what.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                      help="import MODULE (a dotted name, or a .py file) so that it registers its components; then "
                           "name them in --components and set their settings with --set NAME.FIELD=VALUE "
                           "(docs/extending.md). Installed packages' plug-ins (entry-point group "
                           "risclip.components) are always loaded. Repeat for more")
    what.add_argument("--seeds", default=None, help="comma-separated training seeds (default 0,1,2; --quick: 0)")
    what.add_argument("--no-baselines", action="store_true",
                      help="skip the text-blind baselines (whole image, centre blob, largest / random object, "
                           "objectness)")
    what.add_argument("--reference", default=None, metavar="MULTIPLES",
                      help="when rung 1 runs: also train the from-scratch reference (no CLIP; risclip/reference.py) for "
                           "these multiples of rung 1's median training time over the seeds, every seed; '' for none. "
                           "Default: the preset's own (" + "; ".join(
                               f"{n}: {P.reference_words(P.get_preset(n).reference)}" for n in P.CURRENT_PRESETS) +
                           "). At 1 and 3 it costs about four times rung 1's training a seed")
    what.add_argument("--reference-seconds", type=float, default=None, metavar="SECONDS",
                      help="the training time the --reference multiples apply to (default: the median of this "
                           "invocation's rung-1 runs, so rung 1 must run); bench.budget passes the ladder's, so that "
                           "a reference at 10x means ten times the ladder's rung 1 whatever seeds run beside it")
    how = p.add_argument_group("how")
    how.add_argument("--preset", default=P.DEFAULT_PRESET, type=P.preset_name, metavar="NAME",
                     help=P.preset_help(P.DEFAULT_PRESET))
    how.add_argument("--dataset", default=None, choices=sorted(P.REFER_DATASETS),
                     help="paper presets: which refer dataset (default refcocog, UMD partition)")
    how.add_argument("--eval-split", default=None,
                     help="paper presets: the split to score (refcoco, refcoco+: val, testA, testB; refcocog: val, "
                          "test; refcocog-google: val). Selection is always on val")
    how.add_argument("--tuned", nargs="?", const="", default=None, metavar="FILE",
                     help="run each variant with the settings a ladder study chose for it on val (default file: "
                          "studies/tuned/<preset>.json, written by python -m studies run ladder)")
    how.add_argument("--describe-preset", action="store_true",
                     help="print the preset's every field with its value and whether the paper states it, then exit")
    how.add_argument("--quick", action="store_true",
                     help="a few-minute smoke run of the whole pipeline (tiny data, one epoch per stage); "
                          "its numbers mean nothing")
    how.add_argument("--data-root", default=None,
                     help="data folder (default: the preset's, e.g. data/synthref-refcoco, made if absent; --quick: the "
                          "same with -quick)")
    how.add_argument("--data-seed", type=int, default=None, metavar="N",
                     help="SynthRef presets: a fresh draw of the data with seed N, in <data root>-drawN (made if "
                          "absent), with the preset's same proxy CLIP; pair it with other --seeds to check that the "
                          "ladder holds beyond the committed draw")
    how.add_argument("--pretrained", default=None,
                     help="CLIP weights: an open_clip tag or a local checkpoint (default: the preset's; "
                          "the SynthRef presets pre-train a proxy CLIP on demand)")
    how.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE",
                     help="override one preset field, repeatable: e.g. --set train.stage1_epochs=8 --set "
                          "model.cfe_dim=128 (sections: model, train, data; values parse as JSON, else text). "
                          "Overridden fields enter the config hash, so such runs are tracked as their own variants")
    how.add_argument("--device", default="auto", help="auto (CUDA when present; under torchrun cuda:LOCAL_RANK), cpu, "
                                                       "cuda, cuda:1 ...")
    how.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                     help="torch.compile the forward pass (mode default, or reduce-overhead for CUDA graphs, "
                          "max-autotune); the same as --set train.compile=MODE. Compiling the inference graph is "
                          "timed apart (metric compile_seconds); the old eager path is --set model.kernels=eager")
    how.add_argument("--protocol", default=None, metavar="NAMES",
                     help="also score test under peers' evaluation protocols, comma-separated: "
                          + "; ".join(f"{k}: {v.description}" for k, v in PROTOCOLS.items() if k != "ours")
                          + ". The tracked test_* metrics are always protocol 'ours' "
                          f"({PROTOCOLS['ours'].description}); others log test_<protocol>_*")
    how.add_argument("--workdir", default="runs", help="checkpoints per run hash, for resuming (default runs/)")
    how.add_argument("--force", action="store_true", help="retrain even when a finished run has the same config hash")
    out = p.add_argument_group("tracking and output")
    out.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                     help="MLflow store or server (default %(default)s, read by `mlflow ui` run in this folder); "
                          "'none': no MLflow at all, runs kept for this invocation only (the table and --output; "
                          "a machine without MLflow, e.g. a lent GPU machine)")
    out.add_argument("--experiment", default=None, help="MLflow experiment (default risclip-<preset>)")
    out.add_argument("--output", default=None, metavar="results.csv|results.json",
                     help="also write one row per variant and seed (CSV, or JSON by extension)")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run_facts(preset: P.Preset, device: str, seeds: list[int], wall: float) -> dict:
    """Where and how the rows were made, for a JSON ``--output`` (``bench.benchmark_report --ladder-check``
    sets a GPU machine's ladder beside the CPU's from it)."""
    import platform

    import torch

    from risclip.engine import resolve_device

    dev = resolve_device(device)
    return {"preset": preset.name, "device": str(dev), "amp": preset.train.amp, "cpu_amp": preset.train.cpu_amp,
            "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "seeds": seeds, "wall_seconds": wall}


def choose_variants(a: argparse.Namespace) -> list[Components]:
    variants: list[Components] = []
    if a.all:
        variants += Components.all_combinations()
    if a.ladder or not (a.all or a.components):
        variants += list(LADDER)
    for names in a.components or []:
        try:
            c = Components.from_names(names)
            c.check_requirements()
        except ValueError as e:
            raise UsageError(f"--components {names!r}: {e}") from None
        variants.append(c)
    return list(dict.fromkeys(variants))


def parse_protocols(text: str | None) -> tuple[str, ...]:
    """``ours`` always comes first (the tracked ``test_*`` metrics); others add ``test_<name>_*`` metrics."""
    names = [n.strip().lower() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise UsageError(f"--protocol {','.join(unknown)}: unknown; valid: {', '.join(PROTOCOLS)}")
    return tuple(dict.fromkeys(["ours", *names]))


def prepare(a: argparse.Namespace, progress: bool | None) -> tuple[P.Preset, dict]:
    """The preset with data and backbone in place. Under torchrun process 0 makes them (SynthRef, the proxy
    CLIP) while the others wait, then the others find them cached; an error reaches every process."""
    if a.compile is not None:
        a.overrides.append(f"train.compile={a.compile}")
    preset = P.build(a.preset, quick=a.quick, data_root=a.data_root, data_seed=a.data_seed, dataset=a.dataset,
                     eval_split=a.eval_split, overrides=a.overrides)
    error = None
    if dist.is_main():
        try:
            ensure_data(preset, progress)
            # read the annotations and check the image folder once, so that bad data is one line here
            build_dataset(preset.data, preset.model, preset.data.test_split, train=False)
            ensure_backbone(preset, progress, a.pretrained)
        except (UsageError, ReferError, BackboneError, ValueError, OSError) as e:
            error = str(e)
    error = dist.broadcast_object(error)
    if error is not None:
        raise UsageError(error)
    ensure_data(preset, progress)
    return ensure_backbone(preset, progress, a.pretrained)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        dist.init(a.device)  # under torchrun: join the process group (gloo on CPU, NCCL on CUDA)
    except (RuntimeError, ValueError) as e:
        print(f"error: could not start distributed training: {e}", file=sys.stderr)
        return 2
    try:
        return _main(a, argv)
    finally:
        dist.destroy()


def _main(a: argparse.Namespace, argv: list[str] | None) -> int:
    main_process = dist.is_main()
    progress = False if a.no_progress or not main_process else None
    try:
        registry.load_plugins(a.plugin)
    except registry.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.describe_preset:
        try:
            print(P.build(a.preset, dataset=a.dataset, eval_split=a.eval_split, overrides=a.overrides).describe())
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        variants = choose_variants(a)
        seeds = parse_seeds(a.seeds if a.seeds is not None else ("0" if a.quick else "0,1,2"))
        protocols = parse_protocols(a.protocol)
        try:
            multiples = parse_multipliers(a.reference) if a.reference is not None \
                else P.get_preset(a.preset).reference
        except ValueError as e:
            raise UsageError(str(e)) from None
        if a.reference_seconds is not None and not a.reference_seconds > 0:
            raise UsageError(f"--reference-seconds must be positive (got {a.reference_seconds})")
        if a.output and Path(a.output).suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--output must end in .csv or .json (got {a.output})")
        preset, proxy_summary = prepare(a, progress)
        tuned = {}
        tuned_file = ""
        if a.tuned is not None:
            tuned_file = a.tuned or f"studies/tuned/{preset.name}.json"
            tuned = P.read_tuned(tuned_file)
        tracker = open_tracker(a.tracking_uri, a.experiment or f"risclip-{preset.name}") if main_process else NullTracker()
    except (UsageError, ReferError, BackboneError, ValueError, OSError) as e:
        if main_process:
            print(f"error: {e}", file=sys.stderr)
        return 2

    fingerprint = data_fingerprint(preset)
    git_rev = git_revision()
    parent_tags = {"kind": "invocation", "preset": preset.name, "git_revision": git_rev,
                   "data_fingerprint": fingerprint, "command": "python -m bench.ablate " + shlex.join(argv or sys.argv[1:]),
                   "variants": ";".join(str(v) for v in variants), "seeds": ",".join(map(str, seeds)),
                   "overrides": ";".join(a.overrides), "world_size": str(dist.world_size()),
                   "protocols": ",".join(protocols), "tuned": tuned_file,
                   "data_seed": str(preset.synthref.seed) if preset.synthref else ""}
    parent_id = tracker.start(f"{preset.name} x{len(variants)} variants x{len(seeds)} seeds", parent_tags)
    tracker.log_params(parent_id, {"preset": preset.name, "model": preset.model.to_dict(), "train": preset.train.to_dict(),
                                   "data": preset.data.to_dict()})
    if proxy_summary:
        tracker.log_metrics(parent_id, {"proxy_clip_val_retrieval_top1": proxy_summary["val_retrieval_top1"],
                                        "proxy_clip_pretrain_seconds": proxy_summary.get("seconds", math.nan)})
        tracker.log_json(parent_id, proxy_summary, "proxy_clip.json")
    ctx = Context(preset, tracker, parent_id, Path(a.workdir), fingerprint, git_rev, a.force, progress, a.device,
                  overrides=";".join(a.overrides), protocols=protocols, tuned=tuned)
    rows: list[dict] = []
    failures: list[str] = []
    t0 = time.perf_counter()
    jobs = [(v, s) for v in variants for s in seeds]
    try:
        if not a.no_baselines and main_process:
            try:
                rows += run_baselines(ctx)
            except (ReferError, OSError, ValueError) as e:
                failures.append(f"baselines: {e}")
                tqdm.write(f"FAILED baselines: {e}")
        if main_process:
            tqdm.write(announce(ctx, jobs, multiples))
        bar = tqdm(jobs, desc="variants", unit="run", disable=None if progress is None else not progress)
        for components, seed in bar:
            bar.set_postfix_str(f"{components} s{seed}")
            try:
                row = run_one(ctx, components, seed)
            except (NonFiniteLossError, ReferError, BackboneError, RuntimeError) as e:
                failures.append(f"{components} seed {seed}: {e}")
                tqdm.write(f"FAILED {components} seed {seed}: {e}")
                continue
            rows.append(row)
            if not row["reused"] and main_process:
                tqdm.write(f"{components} seed {seed}: mIoU {row['mIoU']:.2f}, oIoU {row['oIoU']:.2f} "
                           f"(trained {row['train_seconds']:.0f} s)")
        rung1 = [r["train_seconds"] for r in rows if r["kind"] == "variant" and r.get("rung") == 1]
        if multiples and (rung1 or a.reference_seconds) and main_process and not dist.active():
            # the median is robust to one run slowed by a neighbouring job
            seconds = a.reference_seconds if a.reference_seconds else statistics.median(rung1)
            refs = [(m, s) for m in multiples for s in seeds]
            for m, seed in tqdm(refs, desc="reference", unit="run", disable=None if progress is None else not progress):
                try:
                    row = run_reference(ctx, m, seed, seconds)
                except (ReferError, RuntimeError, FloatingPointError) as e:
                    failures.append(f"{reference_name(m)} seed {seed}: {e}")
                    tqdm.write(f"FAILED {reference_name(m)} seed {seed}: {e}")
                    continue
                rows.append(row)
                if not row["reused"]:
                    tqdm.write(f"{reference_name(m)} seed {seed}: mIoU {row['mIoU']:.2f}, swap {row['swap_mIoU']:.2f} "
                               f"(trained {row['train_seconds']:.0f} s)")
    except KeyboardInterrupt:
        tracker.end(parent_id, "KILLED")
        done = sum(1 for r in rows if r["kind"] == "variant")
        if main_process:
            print(f"\ninterrupted: {done} finished variant runs are kept in {a.tracking_uri}; run the same command "
                  f"again to continue where it stopped", file=sys.stderr)
        return 130
    if not main_process:
        return 1 if failures else 0
    wall = time.perf_counter() - t0
    tracker.log_metrics(parent_id, {"wall_seconds": wall, "failed_runs": len(failures)})
    if a.output:
        write_output(rows, Path(a.output), run_facts(preset, a.device, seeds, wall))
        tracker.log_file(parent_id, a.output)
    tracker.log_json(parent_id, [{k: r.get(k) for k in ROW_FIELDS} for r in rows], "results.json")
    tracker.end(parent_id, "FAILED" if failures else "FINISHED")
    print()
    print(f"preset {preset.name} ({'SynthRef: our numbers, not the paper' if preset.synthref else preset.data.dataset}); "
          f"paper mIoU: RefCOCOg-UMD test, CLIP ViT-B/16; metrics under protocol 'ours' "
          f"({PROTOCOLS['ours'].description})" + (f"; {dist.world_size()} processes" if dist.world_size() > 1 else ""))
    print(format_table(rows))
    print("select mIoU: the map chooses among the image's ground-truth instance masks (bench/spine/proposals.py), as the "
          "largest- and random-object baselines do")
    if isinstance(tracker, Tracker):
        where = runs_url(tracker.experiment_id, a.tracking_uri if a.tracking_uri.startswith("http") else UI_DEFAULT)
        ui = "" if a.tracking_uri.startswith("http") else "`mlflow ui` in this folder, then "
        print(f"\n{runs(len(jobs))} in {wall:.0f} s; MLflow parent run {parent_id} in {a.tracking_uri} (browse: {ui}{where})")
    else:
        print(f"\n{runs(len(jobs))} in {wall:.0f} s; not tracked (--tracking-uri none)"
              + (f"; rows in {a.output}" if a.output else "; add --output rows.json to keep the rows"))
    for f in failures:
        print(f"failed: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
