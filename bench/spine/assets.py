"""Data and backbone weights a preset needs, made or found before anything trains (no MLflow here, so
that machines without it, such as a lent GPU machine running ``bench.ablate --tracking-uri none``, can use it)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from tqdm import tqdm

from bench.spine import presets as P


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def data_fingerprint(preset: P.Preset) -> str:
    """Hash of the two annotation files (the refs pickle and instances.json): what decides the samples and
    their masks. Images are not hashed (reading every image of COCO would take minutes); a changed image
    with unchanged annotations is not detected."""
    d = preset.data
    ds_dir = Path(d.data_root) / d.dataset
    h = hashlib.sha256()
    for p in (ds_dir / f"refs({d.split_by}).p", ds_dir / "instances.json"):
        if p.is_file():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def ensure_data(preset: P.Preset, progress: bool | None) -> None:
    """Generate SynthRef where the preset wants it and it is absent. SynthRef found there must have been
    generated with the preset's settings (``info.config`` of instances.json): another profile, size or
    seed in the folder is a one-line error, not a silent mix-up (a --quick preset's throwaway data is
    made again instead)."""
    d = preset.data
    if (Path(d.data_root) / d.dataset / f"refs({d.split_by}).p").is_file():
        if preset.synthref is None:
            return
        try:
            check_synthref(Path(d.data_root), preset)
            return
        except UsageError:
            if not preset.quick:
                raise
            tqdm.write(f"{d.data_root}: quick SynthRef of other settings, made again")  # throwaway data
    if preset.synthref is None:
        raise UsageError(f"{d.data_root}: no {d.dataset} ({d.split_by}) data found; preset {preset.name} needs "
                         f"it in the refer layout (see README, Data)")
    from risclip.data.synthref import generate

    extra = preset.synthref.extra_test_images
    tqdm.write(f"generating SynthRef ({preset.synthref.images} images{f' and {extra} more test images' if extra else ''}) "
               f"in {d.data_root} ...")
    generate(d.data_root, preset.synthref, progress=progress)


def check_synthref(root: Path, preset: P.Preset) -> None:
    import json

    from risclip.data.synthref import config_record

    path = root / "synthref" / "instances.json"
    try:
        found = json.loads(path.read_text()).get("info", {}).get("config")
    except (OSError, ValueError):
        return  # unreadable: the loader reports it with its own message
    want = config_record(preset.synthref)
    if found is not None and found != want:
        diff = ", ".join(f"{k}: {found.get(k, 'dense' if k == 'profile' else None)} here, {v} wanted"
                         for k, v in want.items() if found.get(k) != v)
        raise UsageError(f"{root} holds SynthRef made with other settings than preset {preset.name} wants ({diff}); "
                         f"give another --data-root or remove the folder")


def ensure_backbone(preset: P.Preset, progress: bool | None, pretrained: str | None) -> tuple[P.Preset, dict]:
    """Resolve the backbone weights: ``--pretrained`` wins; else the preset's proxy CLIP (trained on demand)."""
    if pretrained is not None:
        return dataclasses.replace(preset, model=dataclasses.replace(preset.model, pretrained=pretrained)), {}
    if preset.proxy_clip is None:
        return preset, {}
    from bench.proxy.pretrain_clip import pretrain

    path = preset.proxy_clip.cache_path()
    if not path.is_file():
        about = f"; about {preset.proxy_minutes:.0f} min on a 2-core CPU, once" if preset.proxy_minutes else ""
        tqdm.write(f"pre-training the proxy CLIP ({preset.proxy_clip.steps} steps, with its caption corpus and dense "
                   f"masks where they are not cached{about}; cached as {path}) ...")
    path, summary = pretrain(preset.proxy_clip, progress=progress)
    return dataclasses.replace(preset, model=dataclasses.replace(preset.model, pretrained=str(path))), summary


def train_sentences(preset: P.Preset) -> int:
    """How many sentences the preset's train split holds (read from its refer annotations)."""
    from risclip.data.refer import load_refs

    d = preset.data
    refs = load_refs(Path(d.data_root) / d.dataset / f"refs({d.split_by}).p")
    return sum(len(r["sentences"]) for r in refs if r.get("split") == d.train_split)


def stage1_work(preset: P.Preset, available: int) -> int:
    """Stage 1's budget in sentences x epochs: the sentence cap (every one of the ``available`` train sentences
    when unset or above them) times ``stage1_epochs``. The budget sweep sets its points by it
    (:mod:`bench.experiments.budget`); ``bench.ablate`` scales its wait estimate by it."""
    cap = preset.data.max_train_samples
    return min(cap, available) * preset.train.stage1_epochs if cap else available * preset.train.stage1_epochs

