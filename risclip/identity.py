"""Run identity, said once: what enters a run's hash (everything that changes its numbers) and what does not
(where the files live, how the data is fed, what is printed, which device runs it).

Every kind of run takes its hash here: a config (:meth:`risclip.config.ModelConfig.config_hash` and its
siblings), a variant run, a from-scratch reference run, the text-blind baselines, a stage-1 cache entry, a
proxy CLIP. Two spellings survive from before this module, kept so that every tracked run and cached file
keeps its name: config hashes serialise compactly (``compact=True``), and the reference's and the proxy's
configs keep 12 hex digits where runs have 16.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

# TrainConfig fields that change how a run is executed, never its numbers
RUNTIME_TRAIN_FIELDS: tuple[str, ...] = ("progress", "num_workers", "pin_memory", "persistent_workers",
                                         "prefetch_factor", "learning_curve", "curve_samples", "device")
# DataConfig fields that say where the files are on this machine: the data's fingerprint says what they hold
LOCATION_DATA_FIELDS: tuple[str, ...] = ("data_root", "image_root")


def identity_hash(ident: Any, length: int = 16, compact: bool = False) -> str:
    """The hash of a JSON-able identity: SHA-256 of its sorted-key JSON (values JSON cannot write are written
    as ``str``), the first ``length`` hex digits. ``compact``: no spaces after separators (config hashes)."""
    blob = json.dumps(ident, sort_keys=True, default=str, separators=(",", ":") if compact else None)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def without(d: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``d`` without ``keys``."""
    drop = set(keys)
    return {k: v for k, v in d.items() if k not in drop}


def train_identity(train: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig's dict without the fields that never change a number."""
    return without(train, RUNTIME_TRAIN_FIELDS)


def data_identity(data: dict[str, Any]) -> dict[str, Any]:
    """A DataConfig's dict without where its files are (a run is tied to the data by its fingerprint)."""
    return without(data, LOCATION_DATA_FIELDS)
