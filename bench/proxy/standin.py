"""A tiny stand-in for RefCOCO, RefCOCO+ and RefCOCOg, and for CLIP ViT weights, to rehearse the real-data
commands (docs/real-data.md) on a machine that has neither.

  python -m bench.standin --out data/standin [--images 60] [--clip ViT-B-16]

writes, from SynthRef scenes, exactly the layout the real data has::

  data/standin/refcoco/instances.json     data/standin/refcoco/refs(unc).p      train, val, testA, testB
  data/standin/refcoco+/instances.json    data/standin/refcoco+/refs(unc).p     train, val, testA, testB
  data/standin/refcocog/instances.json    data/standin/refcocog/refs(umd).p     train, val, test
                                          data/standin/refcocog/refs(google).p  train, val
  data/standin/images/train2014/*.png     (the images, in their own folder, as COCO train2014 is)
  data/standin/ViT-B-16-random.pt         (an open_clip state dict with RANDOM weights)

The weights are random: they stand in for a downloaded checkpoint only to show the offline loading
route (``--pretrained /path/file``); numbers made with them mean nothing. Every refs file is a plain
pickle of lists, dicts and scalars, like the real ones, and is read by the same restricted unpickler.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

PARTITIONS = {  # (dataset, split_by): how SynthRef's test images are named in that partition
    ("refcoco", "unc"): ("testA", "testB"),
    ("refcoco+", "unc"): ("testA", "testB"),
    ("refcocog", "umd"): ("test",),
    ("refcocog", "google"): (),  # no test split: its test images are left out
}


def make(out: str | Path, images: int = 60, seed: int = 11, clip: str | None = "ViT-B-16") -> Path:
    from risclip.data.synthref import SynthRefConfig, generate

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, SynthRefConfig(images=images, seed=seed, size=96), progress=False)
        src = Path(tmp)
        image_root = out / "images" / "train2014"
        image_root.mkdir(parents=True, exist_ok=True)
        for png in (src / "images").glob("*.png"):
            shutil.copyfile(png, image_root / png.name)
        with open(src / "synthref" / "refs(synth).p", "rb") as f:
            refs = pickle.load(f)  # our own file, just written
        instances = (src / "synthref" / "instances.json").read_text()
    for (dataset, split_by), test_names in PARTITIONS.items():
        d = out / dataset
        d.mkdir(parents=True, exist_ok=True)
        (d / "instances.json").write_text(instances)
        renamed = []
        for ref in refs:
            r = dict(ref)
            if r["split"] == "test":
                if not test_names:
                    continue
                r["split"] = test_names[int(r["image_id"]) % len(test_names)]
            renamed.append(r)
        with open(d / f"refs({split_by}).p", "wb") as f:
            pickle.dump(renamed, f, protocol=2)
    if clip:
        import torch

        from risclip.backbone import create_clip

        torch.manual_seed(0)
        torch.save(create_clip(clip, None).state_dict(), out / f"{clip}-random.pt")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.standin", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/standin")
    p.add_argument("--images", type=int, default=60, help="SynthRef scenes to draw (default %(default)s)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--clip", default="ViT-B-16", help="write random weights for this open_clip model ('' for none)")
    a = p.parse_args(argv)
    if a.images < 10:
        print("error: --images must be at least 10 (every split needs samples)", file=sys.stderr)
        return 2
    out = make(a.out, a.images, a.seed, a.clip or None)
    print(json.dumps({"out": str(out), "datasets": [f"{d}/refs({s}).p" for d, s in PARTITIONS]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
