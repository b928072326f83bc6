"""Checkpoint files: the per-epoch training checkpoint (resumable, with the epoch history in one table
format) and the served ``model.pt`` (self-describing: model config, component weights, and the cut it was
scored at). Every write is atomic; every read is ``torch.load(weights_only=True)``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..config import ModelConfig
from ..model import RISCLIP


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_path(workdir: Path, stage: int) -> Path:
    return Path(workdir) / f"stage{stage}.pt"


def resume(ckpt: Path | None, run_key: str, model: RISCLIP, optimizer, scheduler,
           device: torch.device) -> tuple[int, list[dict]]:
    """The epoch to start from and the history so far: after the last finished epoch of a checkpoint of
    this very run (same ``run_key``), else from the start."""
    if ckpt is None or not ckpt.is_file():
        return 0, []
    state = torch.load(ckpt, map_location=device, weights_only=True)
    if state.get("run_key") != run_key:
        return 0, []
    model.load_component_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]) + 1, history_rows(state)


def save_epoch(ckpt: Path, run_key: str, epoch: int, model: RISCLIP, optimizer, scheduler, stage: int,
               history: list[dict]) -> None:
    keys, table = history_table(history)
    save_atomic({"run_key": run_key, "epoch": epoch, "model": model.component_state_dict(),
                  "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                  "history_keys": keys, "stage": stage, "model_config": model.cfg.to_dict(),
                  "history": table}, ckpt)


def history_table(history: list[dict]) -> tuple[list[str], torch.Tensor]:
    """Epoch rows as checkpoints store them: every key any row has (first seen first), one float row per
    epoch, NaN where a row lacks a key (epochs trained before the learning curve existed)."""
    keys = list(dict.fromkeys(k for r in history for k in r))
    return keys, torch.tensor([[float(r.get(k, math.nan)) for k in keys] for r in history], dtype=torch.float64)


def history_rows(state: dict) -> list[dict]:
    """The epoch rows :func:`history_table` stored, each without the keys it did not have."""
    return [{k: v for k, v in zip(state["history_keys"], row) if not math.isnan(v)}
            for row in state["history"].tolist()]


CHECKPOINT_FORMAT = "risclip-model-1"


def save_checkpoint(model: RISCLIP, path: str | Path, run_key: str = "", scoring: dict | None = None) -> None:
    """A trained variant as one self-describing file: its model config (components, backbone name and
    weights, sizes), every non-CLIP weight and, once the run has been scored, ``scoring``
    (:func:`scoring_of`: the cut and precision its test masks were made with). The frozen CLIP is not
    stored: it comes from the config's ``pretrained`` (an open_clip tag or a local file), as it did in
    training."""
    obj = {"format": CHECKPOINT_FORMAT, "model_config": model.cfg.to_dict(), "run_key": run_key,
           "model": model.component_state_dict()}
    if scoring is not None:
        obj["scoring"] = scoring
    save_atomic(obj, Path(path))


def read_scoring(path: str | Path) -> dict | None:
    """The ``scoring`` a checkpoint carries (:func:`scoring_of`), or None for one written before it was stored."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("scoring") if isinstance(state, dict) else None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    model_cfg: ModelConfig | None = None) -> RISCLIP:
    """Build the variant a checkpoint describes (``model.pt`` of :func:`run_variant`, or a ``stage{n}.pt``
    training checkpoint, which also carries its config) and load its weights. ``model_cfg`` overrides the
    stored config (e.g. to point ``pretrained`` at the CLIP weights on this machine); weights that do
    not fit it raise a ValueError that says which variant the checkpoint holds."""
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a RISCLIP checkpoint (no component weights in it)")
    stored = ModelConfig.from_dict(state["model_config"]) if "model_config" in state else None
    cfg = model_cfg or stored
    if cfg is None:
        raise ValueError(f"{path}: an old checkpoint without its model config; pass the config explicitly")
    model = RISCLIP.from_config(cfg).to(device)
    try:
        model.load_component_state_dict(state["model"])
    except (ValueError, RuntimeError) as e:
        held = f" (it holds {stored.components} on {stored.clip_model})" if stored is not None else ""
        raise ValueError(f"{path}: checkpoint does not fit {cfg.components} on {cfg.clip_model}{held}: "
                         f"{str(e).splitlines()[0][:200]}") from None
    model.set_stage(None)
    return model
