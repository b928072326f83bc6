"""Where does grounding break? A diagnosis of the SynthRef ladder's models, written as a report.

  python -m bench.diagnose                 # -> reports/archive/synth-refcoco/diagnosis.md (about 15-25 min on 2 cores)
  python -m bench.diagnose --quick         # a few minutes on tiny data; its numbers mean nothing
  python -m bench.diagnose --render reports/archive/synth-refcoco/diagnosis.json   # re-render, no measuring

It reads the preset's data and proxy CLIP and, where they are in the MLflow store, the checkpoints of the
latest plain ladder (``python -m bench.ablate``), and measures:

1. **Linear probes on patches** (the object under each patch: shape, colour, size, stripes, the x and y
   third of its centre; trained on train-split images, scored on val-split images, beside the majority
   class) on the frozen proxy CLIP's shared-space patch embeddings, by the value path and by the plain last
   tokens, and the same after stage 1 of rungs 1 and 2 (what training added).
2. **Linear probes on sentences**: each slot of the expression's program (kind, target shape, colour, size,
   position word, relation word, anchor shape) from the shared-space sentence embedding, frozen and after
   stage 1 of rungs 1 and 2.
3. **Fit against generalisation**: each rung's mIoU on train sentences it trained on against val.
4. **The patch map during training**: rungs 1 and 2 trained again (seed 0, the preset's schedule) with the
   map's mean on the referent against the best same-image distractor measured on val after every epoch.
5. **Zero-shot dense grounding** of the proxy: for "a circle" / "a red object" / "a red circle" prompts,
   how often the object with the highest mean map in a val image matches the prompt (against chance).
6. **The corpus**: the expression words the proxy's pre-training captions never contain.

Probes are multinomial logistic regressions on standardised features (full-batch L-BFGS, weight decay 1e-3;
our choice), so a slot that is linearly readable scores well above its majority class.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bench.reporting.diagnosis import PATCH_SLOTS, SENTENCE_SLOTS, rerender, write_diagnosis
from bench.spine import presets as P
from bench.spine.assets import UsageError, ensure_backbone, ensure_data
from risclip import backbone as bb
from risclip.config import LADDER, Components
from risclip.data.refer import ReferDataset, ReferError, annotation_mask
from risclip.data.synthref import COLOURS, POSITIONS, RELATION_PHRASES, RELATIONS, SHAPES, SIZES
from risclip.engine import Hook, build_dataset, evaluate, load_checkpoint, resolve_device, train_stage
from risclip.model import RISCLIP

# --------------------------------------------------------------------------------------------- probes


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 weight_decay: float = 1e-3, steps: int = 100) -> dict[str, float]:
    """Accuracy (%) of a multinomial logistic regression fitted on train and scored on test, beside the
    test accuracy of always answering train's majority class. Classes absent from train are errors."""
    classes = np.unique(y_train)
    if len(classes) < 2 or len(y_test) == 0:
        return {"accuracy": math.nan, "majority": math.nan, "n_train": float(len(y_train)), "n_test": float(len(y_test))}
    index = {c: i for i, c in enumerate(classes)}
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.tensor((x_train - mu) / sd, dtype=torch.float32)
    yt = torch.tensor([index[c] for c in y_train])
    xv = torch.tensor((x_test - mu) / sd, dtype=torch.float32)
    torch.manual_seed(0)
    lin = torch.nn.Linear(xt.shape[1], len(classes))
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xt), yt) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = classes[lin(xv).argmax(1).numpy()]
    majority = Counter(y_train.tolist()).most_common(1)[0][0]
    return {"accuracy": 100.0 * float((pred == y_test).mean()), "majority": 100.0 * float((y_test == majority).mean()),
            "n_train": float(len(y_train)), "n_test": float(len(y_test))}


# ------------------------------------------------------------------------------------ labels from data


def patch_labels(ds: ReferDataset, image_id: int, grid: int) -> dict[str, np.ndarray]:
    """Per patch (grid x grid, row-major): each slot of the object covering most of the patch, or
    ``background`` where no object covers at least half of it."""
    img = ds.images[image_id]
    h, w = int(img["height"]), int(img["width"])
    objects = image_masks(ds, image_id)
    anns = [ds.anns[k] for k, _ in objects]
    owner = np.full((grid, grid), -1)
    best = np.zeros((grid, grid))
    for k, (_, mask) in enumerate(objects):
        m = mask.astype(np.float32)
        cover = m.reshape(grid, h // grid, grid, w // grid).mean(axis=(1, 3))
        take = (cover >= 0.5) & (cover > best)
        owner[take], best[take] = k, cover[take]
    out = {}
    flat = owner.reshape(-1)
    for slot in PATCH_SLOTS:
        values = []
        for k in flat:
            if k < 0:
                values.append("background")
                continue
            at = anns[k].get("attributes", {})
            if slot == "x third":
                values.append(str(min(2, int(3 * at.get("cx", 0) / w))))
            elif slot == "y third":
                values.append(str(min(2, int(3 * at.get("cy", 0) / h))))
            else:
                values.append(str(at.get(slot, "?")))
        out[slot] = np.array(values)
    return out


_SIDE_WORDS = {"left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "bottommost"}


def sentence_program(text: str, kind: str) -> dict[str, str]:
    """The program slots of a SynthRef expression, read back from its closed vocabulary ("none" where the
    slot is empty): kind, target shape / colour / size, position word, relation word, anchor shape."""
    words = text.lower().split()
    relation = "none"
    target_words, anchor_words = words, []
    if kind == "relation":
        for phrase, key in [*((p, p) for p in RELATIONS), *((v, k) for k, v in RELATION_PHRASES.items())]:
            m = re.search(rf"\b{re.escape(phrase)}\b the ", text.lower())
            if m:
                relation = key
                target_words, anchor_words = text.lower()[:m.start()].split(), text.lower()[m.end():].split()
                break
    position = "none"
    if kind == "position":  # "the leftmost square", "the square on the left", "the left square"
        position = next((w if w in POSITIONS else _SIDE_WORDS[w] for w in words if w in POSITIONS or w in _SIDE_WORDS),
                        "none")

    def pick(ws, vocab):
        return next((w for w in ws if w in vocab), "none")

    return {"kind": kind, "target shape": pick(target_words, SHAPES), "target colour": pick(target_words, COLOURS),
            "target size": pick(target_words, SIZES), "position word": position, "relation word": relation,
            "anchor shape": pick(anchor_words, SHAPES)}


# ------------------------------------------------------------------------------------------ features
def model_for(preset: P.Preset, components: Components | str, checkpoint: str | None, device) -> RISCLIP:
    cfg = preset.model.with_components(components)
    if checkpoint:
        return load_checkpoint(checkpoint, device, model_cfg=cfg)
    torch.manual_seed(0)
    model = RISCLIP.from_config(cfg).to(device)
    model.set_stage(None)
    return model


@torch.no_grad()
def features(model: RISCLIP, ds: ReferDataset, indices: list[int], device, batch: int = 32
             ) -> tuple[np.ndarray, np.ndarray]:
    """Shared-space patch embeddings (n, N, E) of the last vision block (the value path when the model has
    it on) and sentence embeddings (n, E), for the given samples (each sample's own sentence)."""
    patches, sentences = [], []
    for i in range(0, len(indices), batch):
        items = [ds[j] for j in indices[i:i + batch]]
        images = torch.stack([s["image"] for s in items]).to(device)
        tokens = torch.stack([s["tokens"] for s in items]).to(device)
        vision, text = model.encode(images, tokens)
        patches.append(bb.to_shared_space(model.clip, vision[model.vision_layers - 1][:, 1:]).float().cpu())
        sentences.append(bb.sentence_embedding(model.clip, text, tokens).float().cpu())
    return torch.cat(patches).numpy(), torch.cat(sentences).numpy()


def one_per_image(ds: ReferDataset, limit: int) -> list[int]:
    """The first sample of each of the first ``limit`` images (patch probes need each image once)."""
    seen, out = set(), []
    for i, (ref, _) in enumerate(ds.samples):
        if ref["image_id"] not in seen:
            seen.add(ref["image_id"])
            out.append(i)
            if len(out) >= limit:
                break
    return out


def patch_probe_table(model: RISCLIP, train: ReferDataset, val: ReferDataset, images: int, device) -> dict[str, dict]:
    grid = model.grid[0]
    sets = {}
    for name, ds in (("train", train), ("val", val)):
        idx = one_per_image(ds, images)
        feats, _ = features(model, ds, idx, device)
        labels = [patch_labels(ds, ds.samples[i][0]["image_id"], grid) for i in idx]
        sets[name] = (feats.reshape(-1, feats.shape[-1]), {s: np.concatenate([lab[s] for lab in labels]) for s in PATCH_SLOTS})
    out = {}
    for slot in PATCH_SLOTS:
        ytr, yva = sets["train"][1][slot], sets["val"][1][slot]
        on_tr, on_va = (ytr != "background", yva != "background") if slot != "shape" else (slice(None), slice(None))
        out[slot] = linear_probe(sets["train"][0][on_tr], ytr[on_tr], sets["val"][0][on_va], yva[on_va])
    return out


def sentence_probe_table(model: RISCLIP, train: ReferDataset, val: ReferDataset, n: int, device) -> dict[str, dict]:
    sets = {}
    for name, ds in (("train", train), ("val", val)):
        idx = list(range(min(n, len(ds))))
        _, sent = features(model, ds, idx, device)
        progs = [sentence_program(ds.sentence_text(ds.samples[i][1]), ds.samples[i][1].get("kind", "")) for i in idx]
        sets[name] = (sent, {s: np.array([p[s] for p in progs]) for s in SENTENCE_SLOTS})
    return {slot: linear_probe(sets["train"][0], sets["train"][1][slot], sets["val"][0], sets["val"][1][slot])
            for slot in SENTENCE_SLOTS}


# ---------------------------------------------------------------------------------- the map in training
_MASKS: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}


def image_masks(ds: ReferDataset, image_id: int) -> list[tuple[int, np.ndarray]]:
    """(annotation id, mask) of every object of an image, decoded once per dataset."""
    key = (id(ds.anns), image_id)
    if key not in _MASKS:
        if not hasattr(ds, "_anns_by_image"):
            by: dict[int, list[dict]] = {}
            for a in ds.anns.values():
                by.setdefault(a["image_id"], []).append(a)
            ds._anns_by_image = by
        img = ds.images[image_id]
        _MASKS[key] = [(a["id"], annotation_mask(a["segmentation"], int(img["height"]), int(img["width"])))
                       for a in ds._anns_by_image.get(image_id, [])]
    return _MASKS[key]


@torch.no_grad()
def referent_margin(model: RISCLIP, ds: ReferDataset, indices: list[int], device) -> dict[str, float]:
    """On the patch map (logits at the patch grid, upsampled to the image): the mean inside the referent minus
    the highest mean inside another object of the same image, averaged; and the share of sentences whose
    referent has the highest mean (select accuracy from the patch map)."""
    model.set_stage(None)
    margins, wins = [], []
    for i in range(0, len(indices), 32):
        items = [ds[j] for j in indices[i:i + 32]]
        images = torch.stack([s["image"] for s in items]).to(device)
        tokens = torch.stack([s["tokens"] for s in items]).to(device)
        logits = model.patch_level(images, tokens).logits.float()
        for s, lg in zip(items, logits):
            meta = s["meta"]
            h, w = meta["orig_h"], meta["orig_w"]
            up = F.interpolate(lg[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
            own = None
            others = []
            for ann_id, m in image_masks(ds, meta["image_id"]):
                if not m.any():
                    continue
                v = float(up[m].mean())
                if ann_id == meta["ann_id"]:
                    own = v
                else:
                    others.append(v)
            if own is None or not others:
                continue
            margins.append(own - max(others))
            wins.append(own > max(others))
    return {"margin": float(np.mean(margins)) if margins else math.nan,
            "referent_first": 100.0 * float(np.mean(wins)) if wins else math.nan, "n": float(len(margins))}


class MarginHook(Hook):
    def __init__(self, ds: ReferDataset, indices: list[int], device) -> None:
        self.ds, self.indices, self.device, self.rows = ds, indices, device, []

    def epoch_end(self, model, stage, epoch, row) -> None:
        # referent_margin puts the model in eval mode; train_stage sets its stage again after every hook
        m = referent_margin(model, self.ds, self.indices, self.device)
        self.rows.append({"stage": stage, "epoch": epoch, "loss": row["loss"], **m})


# ------------------------------------------------------------------------------------- zero-shot
@torch.no_grad()
def zero_shot_grounding(model: RISCLIP, ds: ReferDataset, images: int, device) -> dict[str, dict[str, float]]:
    """For prompts "a {shape}", "a {colour} object" and "a {colour} {shape}": over val images holding both a
    matching and a non-matching object, how often the highest-mean object of the prompt's cosine map matches
    (``hit``), against the share of matching objects (``chance``)."""
    tok = ds.tokenizer
    results: dict[str, list[tuple[bool, float]]] = {"a {shape}": [], "a {colour} object": [], "a {colour} {shape}": []}
    for i in one_per_image(ds, images):
        s = ds[i]
        image_id = s["meta"]["image_id"]
        h, w = s["meta"]["orig_h"], s["meta"]["orig_w"]
        masks = [m for _, m in image_masks(ds, image_id)]
        attrs = [ds.anns[k].get("attributes", {}) for k, _ in image_masks(ds, image_id)]
        prompts = []
        for shape in {a.get("shape") for a in attrs}:
            prompts.append(("a {shape}", f"a {shape}", [a.get("shape") == shape for a in attrs]))
        for colour in {a.get("colour") for a in attrs}:
            prompts.append(("a {colour} object", f"a {colour} object", [a.get("colour") == colour for a in attrs]))
        for a0 in attrs:
            prompts.append(("a {colour} {shape}", f"a {a0.get('colour')} {a0.get('shape')}",
                            [a.get("colour") == a0.get("colour") and a.get("shape") == a0.get("shape") for a in attrs]))
        prompts = [p for p in prompts if any(p[2]) and not all(p[2])]
        if not prompts:
            continue
        tokens = tok([p[1] for p in prompts]).to(device)
        cos = model.patch_level(s["image"][None].to(device), tokens).cosine.float()
        for (form, _, match), c in zip(prompts, cos):
            up = F.interpolate(c[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
            means = [float(up[m].mean()) if m.any() else -math.inf for m in masks]
            results[form].append((bool(match[int(np.argmax(means))]), sum(match) / len(match)))
    return {form: {"hit": 100.0 * float(np.mean([r[0] for r in rs])) if rs else math.nan,
                   "chance": 100.0 * float(np.mean([r[1] for r in rs])) if rs else math.nan, "n": float(len(rs))}
            for form, rs in results.items()}


# ---------------------------------------------------------------------------------------- the corpus
def corpus_gaps(preset: P.Preset, ds: ReferDataset) -> dict:
    """Expression words (train and test splits) the proxy's caption corpus never contains."""
    path = (preset.proxy_clip.captions_file() if preset.proxy_clip
            else Path(preset.data.data_root) / "caption_corpus" / "captions.json")
    if not path.is_file():
        return {"corpus": str(path), "missing": None}
    captions = [a["caption"] for a in json.loads(path.read_text())["annotations"]]
    corpus = Counter(w for c in captions for w in re.findall(r"[a-z]+", c.lower()))
    expr_words = Counter()
    sentences = [ds.sentence_text(s) for r in ds.refs for s in r["sentences"]]
    for t in sentences:
        expr_words.update(set(re.findall(r"[a-z]+", t.lower())))
    missing = sorted(w for w in expr_words if w not in corpus)
    hit = sum(1 for t in sentences if set(re.findall(r"[a-z]+", t.lower())) & set(missing))
    return {"corpus": str(path), "captions": len(captions), "missing": missing,
            "missing_counts": {w: expr_words[w] for w in missing}, "sentences": len(sentences), "sentences_hit": hit,
            "rare": sorted((w for w in expr_words if 0 < corpus[w] < 20), key=lambda w: corpus[w])[:15],
            "rare_counts": {w: corpus[w] for w in expr_words if 0 < corpus[w] < 20}}


# ---------------------------------------------------------------------------------------- checkpoints
def ladder_checkpoints(tracking_uri: str, preset: P.Preset) -> dict[int, dict]:
    """{rung: {"checkpoint", "val_mIoU", "run_id"}} of the latest plain ladder, seed 0, where on disk."""
    try:
        from bench.reporting.ladder_runs import latest_plain_ladder
        from bench.spine.tracking import Tracker

        tracker = Tracker(tracking_uri, f"risclip-{preset.name}")
        parent = latest_plain_ladder(tracker)
    except Exception:  # no store, or no ladder in it: the trained-rung sections say so
        return {}
    if parent is None:
        return {}
    out = {}
    for row in tracker.load_json(parent.info.run_id, "results.json"):
        if row.get("kind") != "variant" or row.get("rung") is None or int(row.get("seed") or 0) != 0:
            continue
        run = tracker.get_run(row["mlflow_run_id"])
        ckpt = run.data.tags.get("checkpoint", "")
        if ckpt and Path(ckpt).is_file():
            out[int(row["rung"])] = {"checkpoint": ckpt, "val_mIoU": run.data.metrics.get("val_mIoU", math.nan),
                                     "run_id": run.info.run_id, "parent": parent.info.run_id}
    return out


# ---------------------------------------------------------------------------------------------- report
def diagnose(preset: P.Preset, tracking_uri: str, out: Path, quick: bool, progress: bool | None,
             command: str) -> Path:
    t_start = time.perf_counter()
    device = resolve_device("cpu")
    scale = {"images": 40 if quick else 300, "sentences": 200 if quick else 2000, "fit": 48 if quick else 600,
             "margin": 48 if quick else 300, "zs": 30 if quick else 150}
    train = build_dataset(preset.data, preset.model, preset.data.train_split, train=False)
    val = build_dataset(dataclasses.replace(preset.data, max_eval_samples=None), preset.model, preset.data.val_split,
                        train=False)
    ckpts = ladder_checkpoints(tracking_uri, preset)
    steps = tqdm(total=6, desc="diagnose", unit="part", disable=None if progress is None else not progress)
    secs: dict[str, float] = {}

    # 1-2. probes
    t0 = time.perf_counter()
    models = {"proxy, value path": model_for(preset, "none", None, device),
              "proxy, plain tokens": model_for(preset, "-value", None, device)}
    for rung in (1, 2):
        if rung in ckpts:
            models[f"rung {rung} after stage 1"] = model_for(preset, LADDER[rung], ckpts[rung]["checkpoint"], device)
    patch_tables = {n: patch_probe_table(m, train, val, scale["images"], device) for n, m in models.items()}
    sent_models = {n: m for n, m in models.items() if n != "proxy, plain tokens"}
    sentence_tables = {n: sentence_probe_table(m, train, val, scale["sentences"], device) for n, m in sent_models.items()}
    secs["probes"] = time.perf_counter() - t0
    steps.update(2)

    # 3. fit against val
    t0 = time.perf_counter()
    fit_rows = []
    fit_set = build_dataset(dataclasses.replace(preset.data, max_eval_samples=scale["fit"]), preset.model,
                            preset.data.train_split, train=False)
    for rung, c in sorted(ckpts.items()):
        model = model_for(preset, LADDER[rung], c["checkpoint"], device)
        m = evaluate(model, fit_set, dataclasses.replace(preset.train, progress=False), device, desc=f"rung {rung} train")
        fit_rows.append((rung, m.metrics["mIoU"], c["val_mIoU"]))
    secs["fit"] = time.perf_counter() - t0
    steps.update(1)

    # 4. the patch map per epoch (rungs 1 and 2 trained again, seed 0)
    t0 = time.perf_counter()
    margin_rows: dict[int, list[dict]] = {}
    train_set = build_dataset(preset.data, preset.model, preset.data.train_split, train=True)
    val_idx = list(range(min(scale["margin"], len(val))))
    for rung in (1, 2):
        cfg = dataclasses.replace(preset.train, seed=0, progress=progress, device="cpu")
        torch.manual_seed(cfg.seed)
        model = RISCLIP.from_config(preset.model.with_components(LADDER[rung])).to(device)
        start = referent_margin(model, val, val_idx, device)
        hook = MarginHook(val, val_idx, device)
        train_stage(model, train_set, 1, cfg, None, device, (hook,), f"diagnose-{rung}")
        margin_rows[rung] = [{"stage": 1, "epoch": 0, "loss": math.nan, **start}, *hook.rows]
    secs["training"] = time.perf_counter() - t0
    steps.update(1)

    # 5. zero-shot dense grounding
    t0 = time.perf_counter()
    zs = zero_shot_grounding(models["proxy, value path"], val, scale["zs"], device)
    zs_plain = zero_shot_grounding(models["proxy, plain tokens"], val, scale["zs"], device)
    secs["zero-shot"] = time.perf_counter() - t0
    steps.update(1)

    # 6. corpus
    corpus = corpus_gaps(preset, train)
    steps.update(1)
    steps.close()

    data = {"preset": preset.name, "command": command, "minutes": (time.perf_counter() - t_start) / 60,
            "seconds": secs, "scale": scale, "parent": next(iter(ckpts.values()))["parent"] if ckpts else None,
            "patch_probes": patch_tables, "sentence_probes": sentence_tables,
            "fit": [{"rung": r, "train_mIoU": a, "val_mIoU": b} for r, a, b in fit_rows],
            "margin_sentences": len(val_idx), "margins": margin_rows, "zero_shot": {"value": zs, "plain": zs_plain},
            "corpus": corpus}
    return write_diagnosis(data, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.diagnose", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=P.DEFAULT_PRESET, type=P.preset_name, metavar="NAME",
                   help="a SynthRef preset (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny data and few samples: a smoke run")
    p.add_argument("--data-root", default=None, help="data folder (default: the preset's; --quick: its -quick folder)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db",
                   help="MLflow store holding the ladder's runs (default %(default)s)")
    p.add_argument("--out", default=None, help="report path (default reports/<preset>/diagnosis.md)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="render a diagnosis again from the JSON it wrote (reports/<preset>/diagnosis.json), measuring "
                        "nothing; --out names the markdown (default: beside the JSON)")
    a = p.parse_args(argv)
    progress = False if a.no_progress else None
    try:
        if a.render:
            print(f"wrote {rerender(Path(a.render), Path(a.out) if a.out else None)}")
            return 0
        preset = P.build(a.preset, quick=a.quick, data_root=a.data_root)
        ensure_data(preset, progress)
        preset, _ = ensure_backbone(preset, progress, None)
        out = Path(a.out or P.report_dir(preset.name) / "diagnosis.md")
        cmd = " ".join(["python -m bench.diagnose", *(argv if argv is not None else sys.argv[1:])])
        path = diagnose(preset, a.tracking_uri, out, a.quick, progress, cmd)
    except (UsageError, ReferError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0

