"""Segment what a sentence refers to in an image, with any trained RISCLIP variant.

  python -m risclip.predict --checkpoint runs/<hash>/model.pt --image street.jpg \
      --text "the man in the red shirt on the left" --out mask.png --overlay overlay.png
  python -m risclip.predict --run <MLflow run id> --tracking-uri http://mlflow-host:5000 --image img.png \
      --text "the red square" --text "the blue circle" --out mask.png   # two sentences: mask-1.png, mask-2.png

The checkpoint is the ``model.pt`` that every training run writes in its run folder (its model config
and component weights; ``bench.ablate`` tags each MLflow run with its path). ``--run`` finds it through a
tracking server (``--tracking-uri http://host:5000``), read over MLflow's REST API with the standard library:
this library never imports MLflow. For a run in a local store (``sqlite:///mlflow.db``), use
``python -m bench.predict`` with the same arguments: it reads the store with MLflow's own client. Where the
tagged file is not on this machine, the run's ``model.pt`` artifact is used (fetched into ``--cache-dir``).
The frozen CLIP comes from the checkpoint's config (an open_clip tag or a local file); ``--pretrained``
points it elsewhere, e.g. at the same weights on another machine.

Masks are written at the image's original size (white = the referent), made as the run's test masks were
scored: at the sigmoid cut the run chose (on val, where ``threshold_from_val`` chose it; the protocol's own
otherwise) and under the autocast its evaluation ran with, both stored in the checkpoint; rung 0 keeps its
zero-shot rule. The cut used is printed. ``--threshold`` overrides the cut; a checkpoint written before the
cut was stored is cut at 0.5, and says so. Several ``--text``
give several masks from one batch; a variant without CFE runs its image tower once for all of them.
Bad input (a missing or unreadable image, a checkpoint of another variant or backbone than asked for
with ``--components`` / ``--clip-model``, a sentence longer than the model's context) is a one-line
error with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import registry
from .backbone import BackboneError
from .config import Components, ModelConfig
from .data.transforms import ResizeNormalize


class PredictError(ValueError):
    """Bad input to prediction; its message is printed as one line."""


# ------------------------------------------------------------------------------------------- inputs
def checkpoint_of_run(run_id: str, tracking_uri: str = "sqlite:///mlflow.db", cache_dir: str | Path | None = None) -> Path:
    """A run's checkpoint from a tracking server (MLflow's REST API): the file its ``checkpoint`` tag names when
    it is on this machine, else the run's ``model.pt`` artifact, downloaded into ``cache_dir``. A local store is
    read with MLflow's client, which this library never imports: ``bench.predict`` does that."""
    if tracking_uri.startswith(("http://", "https://")):
        return _checkpoint_from_server(run_id, tracking_uri.rstrip("/"), Path(cache_dir or Path.home() / ".cache" / "risclip"))
    raise PredictError(f"--run with a local MLflow store ({tracking_uri}) is read with MLflow's client: run "
                       f"python -m bench.predict with the same arguments, or pass --checkpoint runs/<hash>/model.pt")


def _get(url: str, what: str) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        raise PredictError(f"{what}: the tracking server answered {e.code} ({url})") from None
    except (urllib.error.URLError, OSError) as e:
        raise PredictError(f"{what}: cannot reach the tracking server ({getattr(e, 'reason', e)})") from None


def _checkpoint_from_server(run_id: str, uri: str, cache_dir: Path) -> Path:
    """The run's tags over MLflow's REST API; the tagged file if it is here, else its ``model.pt`` artifact,
    downloaded once into ``cache_dir/<run id>/`` (atomically: an interrupted download leaves nothing)."""
    import json
    import urllib.parse

    q = urllib.parse.urlencode({"run_id": run_id})
    try:
        run = json.loads(_get(f"{uri}/api/2.0/mlflow/runs/get?{q}", f"run {run_id}"))["run"]
    except PredictError as e:
        if "answered 404" in str(e) or "answered 400" in str(e):
            raise PredictError(f"no MLflow run {run_id} at {uri}") from None
        raise
    tags = {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}
    local = Path(tags.get("checkpoint") or "")
    if tags.get("checkpoint") and local.is_file():
        return local
    out = cache_dir / run_id / "model.pt"
    if out.is_file():
        return out
    q = urllib.parse.urlencode({"path": "model.pt", "run_uuid": run_id})
    data = _get(f"{uri}/get-artifact?{q}", f"run {run_id}'s model.pt artifact")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def read_image(path: str | Path) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise PredictError(f"{p}: image not found")
    try:
        with Image.open(p) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise PredictError(f"{p}: cannot read the image ({type(e).__name__})") from None


def tokenize(texts: list[str], context_length: int) -> torch.Tensor:
    """open_clip's tokens; a sentence that would be cut short by the context is an error, not truncated."""
    import open_clip
    from open_clip.tokenizer import _tokenizer

    for text in texts:
        if not text.strip():
            raise PredictError("--text is empty")
        n = len(_tokenizer.encode(text)) + 2  # with the start and end tokens
        if n > context_length:
            raise PredictError(f"--text {text[:40]!r}...: {n} tokens, but this model reads at most {context_length}; "
                               f"shorten it")
    return open_clip.tokenize(texts, context_length=context_length)


def load_model(checkpoint: str | Path, device: torch.device, pretrained: str | None = None,
               components: str | None = None, clip_model: str | None = None):
    """The checkpoint's variant, checked against the variant and backbone the user expects, and the ``scoring``
    it stores (None for a checkpoint written before runs stored their cut)."""
    from .engine import load_checkpoint

    path = Path(checkpoint)
    if not path.is_file():
        raise PredictError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, a pickle with code in it, truncated
        raise PredictError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "model_config" not in state or "model" not in state:
        raise PredictError(f"{path}: not a RISCLIP model checkpoint (expected the model.pt of a training run)")
    cfg = ModelConfig.from_dict(state["model_config"])
    if components is not None:
        want = Components.from_names(components)
        if want != cfg.components:
            raise PredictError(f"{path} holds variant {cfg.components}, not {want}")
    if clip_model is not None and clip_model != cfg.clip_model:
        raise PredictError(f"{path} was trained on backbone {cfg.clip_model}, not {clip_model}")
    if pretrained is not None:
        cfg = dataclasses.replace(cfg, pretrained=pretrained)
    try:
        return load_checkpoint(path, device, cfg), state.get("scoring")
    except BackboneError as e:
        raise PredictError(str(e)) from None
    except ValueError as e:
        raise PredictError(str(e).splitlines()[0]) from None


# ------------------------------------------------------------------------------------------ predict
DEFAULT_CUT = 0.5  # the cut of a checkpoint that stores none (written before the cut travelled with the model)


@dataclass(frozen=True)
class Serving:
    """How masks are made from a checkpoint: the sigmoid cut, where it came from, and the autocast."""

    threshold: float
    source: str  # one line for the user: which cut, and why
    amp: bool = False
    cpu_amp: bool = False


def serving_of(scoring: dict | None, model=None, threshold: float | None = None) -> Serving:
    """The cut and precision to serve a checkpoint with: what its run was scored at (the ``scoring`` that
    :func:`risclip.engine.run_variant` stores, None for a checkpoint that stores none: cut at 0.5),
    ``threshold`` where the user overrides the cut."""
    scoring = scoring or {}
    amp, cpu_amp = bool(scoring.get("amp", False)), bool(scoring.get("cpu_amp", False))
    if model is not None and model.zero_shot:
        return Serving(DEFAULT_CUT, f"zero-shot rule (min-max-normalised map > tau = {model.cfg.tau})", amp, cpu_amp)
    if threshold is not None:
        return Serving(threshold, f"cut {threshold:.2f} (--threshold)", amp, cpu_amp)
    if scoring.get("threshold") is not None:
        cut = float(scoring["threshold"])
        return Serving(cut, f"cut {cut:.2f}, the cut the run was scored at ({scoring.get('rule', 'stored')})", amp,
                       cpu_amp)
    return Serving(DEFAULT_CUT, f"cut {DEFAULT_CUT:.2f}: this checkpoint stores no cut (written before runs stored "
                                f"theirs); pass --threshold to choose one", amp, cpu_amp)


@torch.no_grad()
def predict(model, image: Image.Image, texts: list[str], threshold: float = DEFAULT_CUT,
            serving: Serving | None = None) -> list[np.ndarray]:
    """Boolean masks (H, W) at the image's original size, one per sentence, from one batched pass: cut at
    ``threshold``, or as ``serving`` (:func:`serving_of`) says, its autocast included."""
    from .kernels import mixed_precision

    cfg = model.cfg
    tf = ResizeNormalize(cfg.image_size)
    device = next(model.parameters()).device
    x = tf.image(image)[None].to(device)
    tokens = tokenize(texts, cfg.context_length).to(device)
    if serving is not None:
        threshold = serving.threshold
    with mixed_precision(device, cuda_amp=bool(serving and serving.amp), cpu_amp=bool(serving and serving.cpu_amp)):
        out = model(x, tokens)  # one image, several sentences (the image tower runs once without CFE)
    masks = model.binarise(out, [(image.height, image.width)] * len(texts), threshold=threshold)
    return [m.cpu().numpy() for m in masks]


def overlay(image: Image.Image, mask: np.ndarray, colour=(230, 40, 40), alpha: float = 0.5) -> Image.Image:
    """The image with the mask tinted in and its outline drawn."""
    base = np.asarray(image, dtype=np.float32)
    tint = base.copy()
    tint[mask] = (1 - alpha) * base[mask] + alpha * np.array(colour, dtype=np.float32)
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    tint[edge] = colour
    return Image.fromarray(tint.clip(0, 255).astype(np.uint8))


def numbered(path: Path, i: int, n: int) -> Path:
    """``mask.png`` for one sentence; ``mask-1.png``, ``mask-2.png``, ... for several."""
    return path if n == 1 else path.with_name(f"{path.stem}-{i + 1}{path.suffix}")


# ---------------------------------------------------------------------------------------------- CLI
def build_parser(prog: str = "python -m risclip.predict") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a run's model.pt (runs/<hash>/model.pt)")
    src.add_argument("--run", metavar="MLFLOW_RUN_ID", help="an MLflow run id of bench.ablate")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db",
                   help="where --run is looked up: a tracking server (http://host:5000), or a local store "
                        "(through python -m bench.predict; default %(default)s)")
    p.add_argument("--cache-dir", default=None, help="where --run keeps checkpoints fetched from a tracking server "
                                                     "(default ~/.cache/risclip)")
    p.add_argument("--image", required=True, help="the image (any format PIL reads)")
    p.add_argument("--text", action="append", required=True, help="the referring expression; repeat for several")
    p.add_argument("--out", required=True, help="mask PNG (several --text: numbered -1, -2, ...)")
    p.add_argument("--overlay", default=None, help="also write the image with the mask drawn on it")
    p.add_argument("--pretrained", default=None, help="CLIP weights to use instead of the checkpoint's own")
    p.add_argument("--components", default=None, help="fail unless the checkpoint is this variant (e.g. adapters,cfe)")
    p.add_argument("--clip-model", default=None, help="fail unless the checkpoint's backbone is this (e.g. ViT-B-16)")
    p.add_argument("--threshold", type=float, default=None,
                   help="sigmoid cut for foreground (default: the cut the run was scored at, stored in its checkpoint; "
                        "0.5 for a checkpoint that stores none)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first: a checkpoint of a variant with a plug-in component needs its module")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the model first (mode default; reduce-overhead adds CUDA graphs); the "
                        "compile time is printed apart. Worth it only for many predictions in one process")
    return p


def main(argv: list[str] | None = None, resolve_run=checkpoint_of_run, prog: str = "python -m risclip.predict") -> int:
    """The command. ``resolve_run(run_id, tracking_uri, cache_dir) -> Path`` finds ``--run``'s checkpoint (the
    harness passes one that reads a local store with MLflow's client)."""
    a = build_parser(prog).parse_args(argv)
    try:
        if a.threshold is not None and not 0 < a.threshold < 1:
            raise PredictError(f"--threshold must lie strictly between 0 and 1 (got {a.threshold})")
        registry.load_plugins(a.plugin)
        image = read_image(a.image)
        ckpt = Path(a.checkpoint) if a.checkpoint else resolve_run(a.run, a.tracking_uri, a.cache_dir)
        model, scoring = load_model(ckpt, torch.device(a.device), a.pretrained, a.components, a.clip_model)
        serving = serving_of(scoring, model, a.threshold)
        if a.compile is not None:
            from .kernels import compile_model

            compile_model(model, a.compile)
            t0 = time.perf_counter()
            predict(model, image, a.text, serving=serving)  # the first call compiles
            print(f"compiled ({a.compile}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        masks = predict(model, image, a.text, serving=serving)
        print(f"masks: {serving.source}")
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        for i, (text, m) in enumerate(zip(a.text, masks)):
            target = numbered(out, i, len(masks))
            Image.fromarray(m.astype(np.uint8) * 255).save(target)
            line = f"{target}: {text!r}, {100 * m.mean():.1f}% of the image"
            if a.overlay:
                ov = numbered(Path(a.overlay), i, len(masks))
                ov.parent.mkdir(parents=True, exist_ok=True)
                overlay(image, m).save(ov)
                line += f", overlay {ov}"
            print(line)
    except (PredictError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
