"""Typed configuration: component flags, model, data and training settings.

Every choice the paper leaves open is a field here, documented where it is used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .components import COMPONENT_NAMES, Components, _frozen  # noqa: F401  (re-exported: configs name them)
from .identity import identity_hash


def __getattr__(name: str):
    """``LADDER`` lives in :mod:`risclip.components` (read from the registry on first use)."""
    if name == "LADDER":
        from . import components

        return components.LADDER
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# mIoU the paper reports for each rung (RefCOCOg-UMD test, CLIP ViT-B/16); None where it gives none here.
PAPER_MIOU: dict[str, float | None] = {
    "value": 23.86,
    "value+adapters": 48.29,
    "value+adapters+cfe": 60.58,
    "value+adapters+cfe+ske": None,
    "value+adapters+cfe+ske+decoder": None,
}


def _stable_hash(obj: Any) -> str:
    return identity_hash(obj, 16, compact=True)


class _Hashable:
    # fields added after runs were tracked, with the value every earlier config had: left out of to_dict (and
    # so of the hash) while they hold it, so that earlier runs keep their identity and are still reused
    _LATER_FIELDS: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[arg-type]
        for k, default in self._LATER_FIELDS.items():
            if d.get(k) == default:
                d.pop(k)
        return d

    def config_hash(self) -> str:
        """A short hash of every field; stable across processes and Python versions."""
        return _stable_hash(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict` (JSON lists become tuples again); unknown keys are an error."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            if k == "components" and isinstance(v, dict):
                v = Components(**{n: (tuple(x) if isinstance(x, list) else x) for n, x in v.items()})
            elif k == "components" and isinstance(v, str):
                v = Components.from_names(v)
            elif isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)


SKE_FORMS: tuple[str, ...] = ("maps", "joint")
KERNELS: tuple[str, ...] = ("fused", "eager")  # ModelConfig.kernels (risclip.kernels)
POS_EMBED_RESIZES: tuple[str, ...] = ("open_clip", "maskclip")  # ModelConfig.pos_embed_resize (risclip.backbone)
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes
# value path forms by name: (keep the last block's residual, keep its MLP)
VALUE_PATHS: dict[str, tuple[bool, bool]] = {"maskclip": (True, True), "clearclip": (False, False)}


@dataclass(frozen=True)
class ModelConfig(_Hashable):
    """The RISCLIP model: backbone, components and every component's sizes.

    ``clip_model`` is any open_clip ViT name (``ViT-B-16``, ``ViT-L-14``, ...) or one of ours
    (``RIS-Tiny``: a small CPU backbone). ``pretrained`` is an open_clip tag, a local checkpoint
    path, or None for random weights.
    """

    components: Components = field(default_factory=Components)
    clip_model: str = "ViT-B-16"
    pretrained: str | None = None
    image_size: int = 416  # paper-scale input; tiny() uses 96
    context_length: int = 77
    # value-token grounding: the form of the last vision block's value path (VALUE_PATHS): "maskclip"
    # keeps the block's residual and MLP after out_proj(v_proj(.)), as MaskCLIP does (the paper cites
    # MaskCLIP); "clearclip" drops both, as ClearCLIP and similar training-free methods do
    value_path: str = "maskclip"
    # zero-shot binarisation of the min-max-normalised map (paper silent; choose tau on val only)
    tau: float = 0.5
    # learned affine on the cosine patch map, m = scale * cos + bias (paper silent)
    map_scale_init: float = 10.0
    map_bias_init: float = -2.5
    # adapters
    adapter_dim: int = 64
    adapter_dropout: float = 0.0
    # CFE
    cfe_dim: int = 256
    cfe_heads: int = 8
    cfe_layers: tuple[int, ...] | None = None  # fusion points (None: all)
    cfe_norm: bool = True  # LayerNorm before the projections into the shared width (not in eqs. 1-3)
    cfe_gate: bool = False  # tanh-gated output (zero-init scalar) instead of zero-initialised W_s2v / W_s2t
    # SKE (two reconstructions, risclip/ske.py): "maps" (multi-layer shared-space maps fused by convs) or
    # "joint" (transformer blocks over patch and text tokens in the joint space)
    ske_form: str = "maps"
    ske_layers: tuple[int, ...] | None = None  # maps: vision blocks whose shared-space maps are used (None: last 3)
    ske_dim: int = 64  # maps: width of the fusing convs
    ske_blocks: int = 2  # joint: transformer blocks
    # decoder
    decoder_dims: tuple[int, int, int, int] = (256, 128, 64, 32)  # widths of D_4, D_3, D_2, D_1
    decoder_layers: tuple[int, int, int, int] | None = None  # vision blocks giving v_1..v_4 (None: evenly spaced)
    # how the forward pass is computed, not what it computes (risclip.kernels): "fused" (SDPA attention, one
    # fused value projection, a channels-last decoder) or "eager", the path of every run before it; both
    # give the same outputs, so the default stays out of the config hash
    kernels: str = "fused"
    # how a checkpoint's image position embeddings meet another input size (a 14x14 grid of 224-px weights run
    # at 416 px: 26x26), POS_EMBED_RESIZES: "open_clip" resizes once at load with antialiased bicubic
    # interpolation (open_clip's loader; PyTorch's antialiased kernel is Keys' a = -0.5, as PIL's), "maskclip"
    # with plain bicubic (a = -0.75, no antialias), as MaskCLIP resizes at every forward. No effect where the
    # checkpoint's grid already fits (every SynthRef preset). The paper presets use "maskclip": see
    # docs/design.md, "Position embeddings at another input size"
    pos_embed_resize: str = "open_clip"
    # plug-ins' own settings set away from their defaults, as (component, field, value) triples (``--set
    # film.dim=64``). A run's identity holds every setting of each plug-in that is on (to_dict's "plugins")
    plugin_config: tuple[tuple[str, str, Any], ...] = ()

    _LATER_FIELDS = {"kernels": "fused", "pos_embed_resize": "open_clip"}

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`_Hashable.to_dict`, with the plug-ins said where they are on: the components' ``extra`` only
        when it names any, and ``plugins``: every setting of each plug-in that is on. Without plug-ins the dict
        (and so the hash) is what it was before plug-ins existed."""
        d = super().to_dict()
        if not d["components"].get("extra"):
            d["components"].pop("extra", None)
        d.pop("plugin_config", None)
        if self.components.extra:
            d["plugins"] = {}
            for n in self.components.extra:
                settings = self.plugin_settings(n)
                d["plugins"][n] = dataclasses.asdict(settings) if settings is not None else {}
        return d

    def plugin_settings(self, name: str) -> Any:
        """Plug-in ``name``'s settings: its config dataclass with this config's values for it."""
        from . import registry

        return registry.get(name).settings({f: v for c, f, v in self.plugin_config if c == name})

    def with_plugin_setting(self, name: str, field_name: str, value: Any) -> ModelConfig:
        """This config with one plug-in setting changed (checked against the plug-in's config dataclass)."""
        from . import registry

        registry.get(name).settings({field_name: value})  # a known plug-in and one of its settings
        kept = tuple(t for t in self.plugin_config if (t[0], t[1]) != (name, field_name))
        return dataclasses.replace(self, plugin_config=tuple(sorted((*kept, (name, field_name, _frozen(value))))))

    def __post_init__(self) -> None:
        if self.kernels not in KERNELS:
            raise ValueError(f"unknown kernels '{self.kernels}'; valid: {', '.join(KERNELS)}")
        if self.pos_embed_resize not in POS_EMBED_RESIZES:
            raise ValueError(f"unknown pos_embed_resize '{self.pos_embed_resize}'; valid: {', '.join(POS_EMBED_RESIZES)}")
        if self.value_path not in VALUE_PATHS:
            raise ValueError(f"unknown value_path '{self.value_path}'; valid: {', '.join(VALUE_PATHS)}")
        if self.ske_form not in SKE_FORMS:
            raise ValueError(f"unknown ske_form '{self.ske_form}'; valid: {', '.join(SKE_FORMS)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """As :meth:`_Hashable.from_dict`; a config written before ``value_path`` existed (two flags,
        ``value_residual`` and ``value_mlp``) is read as the form those flags name."""
        d = dict(d)
        plugins = d.pop("plugins", None) or {}
        if plugins:  # a config with plug-ins on: every setting it was run with
            d["plugin_config"] = tuple(sorted((n, f, _frozen(v)) for n, fs in plugins.items() for f, v in fs.items()))
        elif "plugin_config" in d:
            d["plugin_config"] = tuple(tuple(_frozen(x) for x in t) for t in d["plugin_config"])
        if "value_residual" in d or "value_mlp" in d:
            flags = (bool(d.pop("value_residual", False)), bool(d.pop("value_mlp", False)))
            names = {v: k for k, v in VALUE_PATHS.items()}
            if flags not in names:
                raise ValueError(f"value_residual={flags[0]}, value_mlp={flags[1]} is no named value path")
            d["value_path"] = names[flags]
        return super().from_dict(d)

    @property
    def value_residual(self) -> bool:
        """The value path keeps the last block's residual connection."""
        return VALUE_PATHS[self.value_path][0]

    @property
    def value_mlp(self) -> bool:
        """The value path keeps the last block's MLP (with its residual)."""
        return VALUE_PATHS[self.value_path][1]

    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """The small CPU backbone used by tests and the SynthRef ladder (RIS-Tiny, 96 px, 12x12 patches)."""
        base = dict(clip_model="RIS-Tiny", image_size=96, context_length=24, adapter_dim=32, cfe_dim=64,
                    cfe_heads=4, ske_dim=32, decoder_dims=(64, 48, 32, 16))
        base.update(overrides)
        if isinstance(base.get("components"), str):
            base["components"] = Components.from_names(base["components"])
        return cls(**base)

    def with_components(self, components: Components | str) -> ModelConfig:
        if isinstance(components, str):
            components = Components.from_names(components)
        return dataclasses.replace(self, components=components)


@dataclass(frozen=True)
class DataConfig(_Hashable):
    """Where the refer-layout data lives and which splits to use (defaults: SynthRef)."""

    data_root: str = "data/synthref"
    dataset: str = "synthref"
    split_by: str = "synth"
    image_root: str | None = None  # None: <data_root>/images
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # which train sentences max_train_samples keeps: "first" (the refs file's order: whole images, few of
    # them) or "spread" (a random subset drawn with a fixed seed, the same for every training seed, so the
    # same number of sentences covers many more images)
    train_subset: str = "first"

    _LATER_FIELDS = {"train_subset": "first"}

    def __post_init__(self) -> None:
        if self.train_subset not in ("first", "spread"):
            raise ValueError(f"unknown train_subset '{self.train_subset}'; valid: first, spread")

    def images_dir(self) -> Path:
        return Path(self.image_root) if self.image_root else Path(self.data_root) / "images"


@dataclass(frozen=True)
class TrainConfig(_Hashable):
    """Two-stage training (stage 1: adapters, CFE, SKE at the patch level; stage 2: the decoder)."""

    seed: int = 0
    stage1_epochs: int = 4
    stage2_epochs: int = 2
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 1e-3
    decoder_lr: float = 1e-3
    # learning rate of the CFE and SKE parameters as a multiple of ``lr`` (paper silent; 1 = one rate)
    cfe_lr_scale: float = 1.0
    ske_lr_scale: float = 1.0
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # linear warm-up over this share of steps, then cosine to zero
    grad_clip: float = 1.0
    dice_weight: float = 1.0
    focal_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    patch_target: str = "area"  # stage-1 target: "area" (share of pixels per patch) or "nearest"
    # stage 1 only: weight of a spatial cross-entropy beside Dice + focal (risclip.losses.spatial_ce; our addition,
    # the paper names Dice + focal only): a softmax over each map's patches against the target as a
    # distribution, so that every patch competes with every other for the sentence and lighting other
    # objects costs as much as lighting background; 0 (default): the paper's loss alone
    spatial_ce_weight: float = 0.0
    amp: bool = True  # bf16 autocast, only on CUDA
    # bf16 autocast on a CPU as well (our addition, a cost choice; off by default, so every earlier run stays as it
    # was): the linear layers run in bf16 while the attention kernels stay float32 (risclip.kernels.sdpa) and the
    # losses are computed in float32. On a CPU with native bf16 (avx512_bf16 or AMX) a stage-1 step of RIS-Tiny at
    # 128 px takes about half the float32 time; on a CPU without it bf16 is emulated and slower. Changes the
    # numbers (rounding), so it is part of every key.
    cpu_amp: bool = False
    device: str = "auto"
    num_workers: int = 0
    progress: bool | None = None  # None: bars only on a terminal
    # the data loaders (risclip.engine.loader_options; fields added later, out of the hash at their defaults):
    # pinned host memory (None: on CUDA), workers kept between epochs, batches each worker loads ahead
    pin_memory: bool | None = None
    persistent_workers: bool = True
    prefetch_factor: int = 4
    # torch.compile of the forward pass (risclip.kernels.compile_model): "off" or a mode ("default",
    # "reduce-overhead" adds CUDA graphs, "max-autotune"); compile time is reported apart (RunResult)
    compile: str = "off"
    # the foreground cut of a trained variant's masks (our addition; the paper does not say how it binarises):
    # False, the evaluation protocol's own cut (sigmoid > 0.5 for "ours"); True, the cut among
    # risclip.engine.VAL_CUTS that scores the best mIoU on the val split, chosen once per trained variant after
    # training and then used on test and for the text controls (the protocol's own cut is still scored, as
    # protocol "fixed"). The losses and the bilinear upsampling fix no cut: on SynthRef val a stage-1 map
    # trained with Dice + focal on soft patch targets under-covers its object at 0.5 (its best cut is 0.25-0.3)
    # while a pixel decoder over-covers (0.6); one rule for every variant, chosen on val, reads each at its own
    # best cut. Evaluation only: it never changes what is learnt (out of stage1_key).
    threshold_from_val: bool = False
    # stage 2 (the decoder) reads only the train sentences DataConfig.max_train_samples=N would keep (the same
    # selection rule, "first" or "spread", applied with N), so that stage 1 can see more sentences than stage 2
    # pays for (our choice; None: stage 2 reads stage 1's sentences). Out of stage1_key: it changes no stage-1
    # weight.
    stage2_max_samples: int | None = None
    # learning curves (risclip.engine.LearningCurve): after every epoch of each stage, val mIoU at its best cut
    # among VAL_CUTS, overall and per expression kind, on the first ``curve_samples`` val sentences (None: all),
    # so that a report shows whether a variant was still climbing when it stopped. Stage 1's curve scores what
    # stage 1 trains (the patch map, upsampled), stage 2's the decoder's masks. It runs between epochs with the
    # random state saved and restored and its time kept out of train_seconds: it never changes what is learnt
    # or what a run costs, so both fields stay out of every run identity.
    learning_curve: bool = True
    curve_samples: int | None = 1000

    _LATER_FIELDS = {"pin_memory": None, "persistent_workers": True, "prefetch_factor": 4, "compile": "off",
                     "spatial_ce_weight": 0.0, "threshold_from_val": False, "cpu_amp": False,
                     "stage2_max_samples": None, "learning_curve": True, "curve_samples": 1000}

    def __post_init__(self) -> None:
        if self.compile not in ("off", *COMPILE_MODES):
            raise ValueError(f"unknown compile '{self.compile}'; valid: off, {', '.join(COMPILE_MODES)}")
        if self.prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be at least 1, not {self.prefetch_factor}")
        if self.stage2_max_samples is not None and self.stage2_max_samples < 1:
            raise ValueError(f"stage2_max_samples must be at least 1 (or None), not {self.stage2_max_samples}")
