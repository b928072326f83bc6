"""RISCLIP: a frozen open_clip CLIP with the components that :class:`~risclip.config.Components` names.

Forward pass (docs/design.md, "Data flow"): both encoders run block by block in lockstep; adapters sit
inside every block; CFE acts at the fusion points in ``cfe_layers``; the last vision block takes the
value path when ``value`` is on; patch embeddings and the sentence embedding meet by cosine in the
shared space to give the patch map; SKE refines it; the decoder (or a bilinear upsampling) gives
pixel logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from . import backbone as bb
from . import kernels as K
from . import registry
from .adapters import encoder_adapters
from .cfe import CrossModalFusion, fusion_points
from .config import ModelConfig
from .decoder import LAVTDecoder
from .grounding import patch_cosine, zero_shot_mask
from .registry import PATCH_STAGE, HookContext
from .ske import JointSpaceSKE, SharedSpaceKnowledge


@dataclass
class PatchLevel:
    logits: torch.Tensor  # (B, h, w) patch logits (affine and SKE applied)
    cosine: torch.Tensor  # (B, h, w) raw shared-space cosine map
    features: list[torch.Tensor] | None  # the decoder's inputs, (B, Dv, h, w) each; None without a decoder


@dataclass
class RISOutput:
    patch_logits: torch.Tensor  # (B, h, w)
    mask_logits: torch.Tensor  # (B, H, W)
    patch_cosine: torch.Tensor  # (B, h, w), the raw shared-space cosine map (before scale, bias and SKE)


# The stage rule, said once, by the registry: which modules each stage trains, grouped by component (each
# group may get its own learning rate; registry.stage_groups); stage 1 also trains the patch map's affine.
# What each stage's loss reads (patch or pixel logits) and its schedule are risclip.engine.StageRule.
MAP_PARAMETERS: tuple[str, ...] = ("map_log_scale", "map_bias")


def _stage_groups(stage: int) -> dict[str, tuple[str, ...]]:
    return registry.stage_groups(stage)


def evenly_spaced(layers: int, k: int = 4) -> tuple[int, ...]:
    """k block indices spread over ``layers`` blocks, ending at the last (12 -> 2, 5, 8, 11)."""
    return tuple(round((i + 1) * layers / k) - 1 for i in range(k))


class RISCLIP(nn.Module):
    def __init__(self, cfg: ModelConfig, clip: open_clip.CLIP) -> None:
        super().__init__()
        self.cfg = cfg
        comp = cfg.components
        comp.check_requirements()
        self.clip = clip
        self.clip.requires_grad_(False)
        self.clip.eval()
        visual = clip.visual
        self.vision_layers = len(visual.transformer.resblocks)
        self.text_layers = len(clip.transformer.resblocks)
        self.vision_width = visual.conv1.out_channels
        self.text_width = clip.token_embedding.embedding_dim
        self.embed_dim = visual.proj.shape[1] if visual.proj is not None else self.vision_width
        self.grid = tuple(visual.grid_size)
        self.fused = cfg.kernels == "fused"  # risclip.kernels: SDPA attention, fused value projection, NHWC decoder
        self.text_causal = self.fused and K.is_causal_mask(clip.attn_mask)

        # learned affine of the patch map; trained in stage 1 together with the patch-level components
        self.map_log_scale = nn.Parameter(torch.tensor(math.log(cfg.map_scale_init)))
        self.map_bias = nn.Parameter(torch.tensor(float(cfg.map_bias_init)))

        self.vision_adapters = self.text_adapters = None
        if comp.adapters:
            self.vision_adapters = encoder_adapters(self.vision_layers, self.vision_width, cfg.adapter_dim,
                                                    cfg.adapter_dropout, last_mlp=not comp.value or cfg.value_mlp)
            self.text_adapters = encoder_adapters(self.text_layers, self.text_width, cfg.adapter_dim,
                                                  cfg.adapter_dropout)

        self.points = fusion_points(self.vision_layers, self.text_layers)
        self.cfe = None
        if comp.cfe:
            chosen = range(len(self.points)) if cfg.cfe_layers is None else cfg.cfe_layers
            bad = [i for i in chosen if not 0 <= i < len(self.points)]
            if bad:
                raise ValueError(f"cfe_layers {bad} out of range: this backbone has {len(self.points)} fusion points")
            self.cfe = nn.ModuleDict({
                str(i): CrossModalFusion(self.vision_width, self.text_width, cfg.cfe_dim, cfg.cfe_heads, cfg.cfe_norm,
                                         cfg.cfe_gate, self.fused)
                for i in chosen
            })

        self.ske_layers = cfg.ske_layers if cfg.ske_layers is not None else tuple(
            range(max(0, self.vision_layers - 3), self.vision_layers))
        self.ske = None
        if comp.ske:
            self.ske = (SharedSpaceKnowledge(len(self.ske_layers), self.embed_dim, cfg.ske_dim) if cfg.ske_form == "maps"
                        else JointSpaceSKE(self.embed_dim, cfg.ske_blocks, self.fused))

        self.decoder_layers = cfg.decoder_layers or evenly_spaced(self.vision_layers)
        self.decoder = LAVTDecoder(self.vision_width, cfg.decoder_dims, self.fused) if comp.decoder else None
        for idx in (*self.ske_layers, *self.decoder_layers):
            if not 0 <= idx < self.vision_layers:
                raise ValueError(f"block index {idx} out of range for a {self.vision_layers}-block vision tower")

        # plug-ins (risclip/registry.py): each one's module, called at its hook point
        self.plugins = None
        self.hooks: dict[str, list[tuple[str, nn.Module]]] = {point: [] for point in registry.HOOK_POINTS}
        if comp.extra:
            self.plugins = nn.ModuleDict()
            for name in comp.extra:
                spec = registry.get(name)
                module = spec.build(self, cfg.plugin_settings(name))
                if not isinstance(module, nn.Module) or not callable(getattr(module, spec.acts_at, None)):
                    raise registry.RegistryError(f"plug-in '{name}': build must return an nn.Module with a method "
                                                 f"{registry.HOOK_POINTS[spec.acts_at]}")
                self.plugins[name] = module
                self.hooks[spec.acts_at].append((name, module))
        self.text_reading_hooks = any(self.hooks[p] for p in registry.TEXT_READING_HOOKS)

        # the value path's two frozen projections as one matrix (fused kernels): buffers that move with the
        # model but stay out of checkpoints. They are derived state, so :meth:`_fresh_value_projection`
        # recomputes them wherever they are read once any source weight has changed, however it changed:
        # a state dict loaded into the model or into ``model.clip``, an in-place ``copy_`` or weight surgery,
        # ``.to(dtype)`` / ``.to(device)`` (which swaps each parameter's data).
        self._value_source: tuple | None = None
        if comp.value and self.fused and bb.fusable(visual.transformer.resblocks[-1]):
            w, b = K.fused_value_projection(visual.transformer.resblocks[-1])
            self.register_buffer("value_weight", w, persistent=False)
            self.register_buffer("value_bias", b, persistent=False)
            self._value_source = self._value_versions()

    def _value_sources(self) -> list[torch.Tensor]:
        attn = self.clip.visual.transformer.resblocks[-1].attn
        return [p for p in (attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias)
                if p is not None]

    def _value_versions(self) -> tuple:
        """What identifies the fused projection's sources as they are now: each tensor's object, storage,
        version counter (bumped by every in-place write), dtype and device."""
        return tuple((id(p), p.data_ptr(), p._version, p.dtype, p.device) for p in self._value_sources())

    @torch.compiler.disable  # a check of Python-side tensor identity: run eagerly, between compiled graphs
    def _fresh_value_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused value projection, recomputed first if any source weight changed since it was made."""
        if self._value_versions() != self._value_source:
            with torch.no_grad():
                w, b = K.fused_value_projection(self.clip.visual.transformer.resblocks[-1])
            # plain attribute assignment replaces the registered buffers (their dtype and device follow the sources)
            self.value_weight, self.value_bias = w, b
            self._value_source = self._value_versions()
        return self.value_weight, self.value_bias

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> RISCLIP:
        return cls(cfg, bb.create_clip(cfg.clip_model, cfg.pretrained, cfg.image_size, cfg.pos_embed_resize))

    # ----------------------------------------------------------------------------------------- stages
    @property
    def zero_shot(self) -> bool:
        """Nothing is trained: masks come from min-max-normalised cosine maps thresholded at tau."""
        return not self.cfg.components.trains_anything

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """The modules ``stage`` trains (:func:`risclip.registry.stage_groups`), those that are on."""
        return [m for attrs in _stage_groups(stage).values() for a in attrs if (m := self._module(a)) is not None]

    def stage_parameter_groups(self, stage: int) -> dict[str, list[nn.Parameter]]:
        """Parameters trained in ``stage`` by component, so that each may get its own learning rate.
        Stage 1: "adapters", "cfe", "ske" and, when any of them is on, "map" (the patch map's affine);
        stage 2: "decoder". Components that are off are left out."""
        groups = {name: [p for a in attrs if (m := self._module(a)) is not None for p in m.parameters()]
                  for name, attrs in _stage_groups(stage).items()}
        groups = {k: v for k, v in groups.items() if v}
        if groups and stage == PATCH_STAGE:
            groups["map"] = [getattr(self, a) for a in MAP_PARAMETERS]
        return groups

    def _module(self, path: str) -> nn.Module | None:
        """The module at ``path`` (``cfe``, ``plugins.film``), or None where that component is off."""
        if path.startswith("plugins."):
            name = path.split(".", 1)[1]
            return self.plugins[name] if self.plugins is not None and name in self.plugins else None
        return getattr(self, path)

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """Every parameter of :meth:`stage_parameter_groups`, in one list."""
        return [p for ps in self.stage_parameter_groups(stage).values() for p in ps]

    def set_stage(self, stage: int | None) -> None:
        """Freeze everything but ``stage``'s parameters (None: freeze all, e.g. for evaluation)."""
        self.requires_grad_(False)
        self.eval()
        if stage is not None:
            for p in self.stage_parameters(stage):
                p.requires_grad_(True)
            for m in self.stage_modules(stage):
                m.train()

    def component_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight and buffer except the frozen CLIP's (what checkpoints store)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}

    def stage_state_dict(self, stage: int) -> dict[str, torch.Tensor]:
        """Weights trained in ``stage`` only (stage 1: adapters, CFE, SKE and the map affine)."""
        prefixes = self._stage_prefixes(stage)
        return {k: v for k, v in self.component_state_dict().items() if k.startswith(prefixes)}

    def load_stage_state_dict(self, stage: int, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`stage_state_dict` saved, strictly for that stage's keys."""
        own = set(self.stage_state_dict(stage))
        if set(state) != own:
            raise ValueError(f"stage-{stage} weights do not fit this variant: missing {sorted(own - set(state))[:5]}, "
                             f"unexpected {sorted(set(state) - own)[:5]}")
        self.load_state_dict(state, strict=False)

    def _stage_prefixes(self, stage: int) -> tuple[str, ...]:
        attrs = tuple(f"{a}." for attrs in _stage_groups(stage).values() for a in attrs)
        return attrs + (MAP_PARAMETERS if stage == PATCH_STAGE else ())

    def load_component_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("clip.")]
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit this variant: missing {missing[:5]}, unexpected {unexpected[:5]}")

    # ---------------------------------------------------------------------------------------- forward
    def encode(self, images: torch.Tensor, tokens: torch.Tensor, image_index: torch.Tensor | None = None
               ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Run both towers; returns the vision tokens after every block {index: (B, 1+N, Dv)} (the last
        one from the value path when it is on) and the final text tokens (B, T, Dt).

        ``images`` may hold fewer images than ``tokens`` sentences: one image for all of them, or the
        distinct images of a batch with ``image_index`` (B,) naming each sentence's image. A variant
        without CFE (its image tower never reads the text) then runs the image tower once per distinct
        image and shares the tokens; with CFE the blocks before its first fusion point still run once per
        image, and each sentence gets its own copy of its image's tokens there, where the text comes in."""
        b = tokens.shape[0]
        if image_index is None and images.shape[0] != b:
            if images.shape[0] != 1:
                raise ValueError(f"{images.shape[0]} images for {b} sentences: give one image or one per sentence, "
                                 f"or image_index")
            image_index = torch.zeros(b, dtype=torch.long, device=images.device)
        v = bb.vision_embed(self.clip, images)
        if image_index is not None and self.text_reading_hooks:  # a plug-in reads the text in the image tower
            v, image_index = v[image_index], None
        t, text_mask = bb.text_embed(self.clip, tokens)
        padding = self._padding(tokens)
        ctx = HookContext(tokens, padding, self.points) if self.plugins is not None else None
        v_blocks, t_blocks = self.clip.visual.transformer.resblocks, self.clip.transformer.resblocks
        vision_out: dict[int, torch.Tensor] = {}
        next_v = next_t = 0
        for point, (lv, lt) in enumerate(self.points):
            while next_v <= lv:
                adapters = self.vision_adapters[next_v] if self.vision_adapters is not None else None
                if next_v == self.vision_layers - 1 and self.cfg.components.value:
                    fused = self._fresh_value_projection() if self._value_source is not None else None
                    v = bb.value_block_forward(v_blocks[next_v], v, adapters, self.cfg.value_residual, self.cfg.value_mlp,
                                               fused)
                else:
                    v = bb.block_forward(v_blocks[next_v], v, None, adapters, self.fused)
                for _, hook in self.hooks["vision_block"]:
                    v = hook.vision_block(next_v, v, ctx)
                vision_out[next_v] = v
                next_v += 1
            while next_t <= lt:
                adapters = self.text_adapters[next_t] if self.text_adapters is not None else None
                t = bb.block_forward(t_blocks[next_t], t, text_mask, adapters, self.fused, self.text_causal)
                for _, hook in self.hooks["text_block"]:
                    t = hook.text_block(next_t, t, ctx)
                next_t += 1
            if self.cfe is not None and str(point) in self.cfe:
                if image_index is not None:  # the image tower reads the text from here on: a copy per sentence
                    v, vision_out = v[image_index], {k: x[image_index] for k, x in vision_out.items()}
                    image_index = None
                v, t = self.cfe[str(point)](v, t, padding)
                vision_out[lv] = v
            if self.hooks["fusion"]:
                for _, hook in self.hooks["fusion"]:
                    v, t = hook.fusion(point, v, t, ctx)
                vision_out[lv] = v
        if image_index is not None:  # shared image passes: each sentence reads its image's tokens
            vision_out = {k: x[image_index] for k, x in vision_out.items()}
        return vision_out, t

    @staticmethod
    def _padding(tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) True on the padding after each sentence's end-of-text token."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return positions[None, :] > bb.eos_index(tokens)[:, None]

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1+N, C) -> (B, C, h, w), dropping the class token."""
        b, _, c = tokens.shape
        return tokens[:, 1:].transpose(1, 2).reshape(b, c, *self.grid)

    def patch_level(self, images: torch.Tensor, tokens: torch.Tensor,
                    image_index: torch.Tensor | None = None) -> PatchLevel:
        """Everything before the decoder: the patch map (cosine, then the learned affine and SKE) and the
        decoder's input features. In stage 2 none of it trains, so the engine may compute it once per
        sample and reuse it across epochs."""
        vision_out, text_tokens = self.encode(images, tokens, image_index)
        b = tokens.shape[0]
        h, w = self.grid
        sentence = bb.sentence_embedding(self.clip, text_tokens, tokens)  # (B, E)
        patch = bb.to_shared_space(self.clip, vision_out[self.vision_layers - 1][:, 1:])  # (B, N, E)
        cos = patch_cosine(patch, sentence).view(b, h, w)
        if isinstance(self.ske, JointSpaceSKE):
            text = bb.to_text_space(self.clip, text_tokens)
            refined = self.ske(patch, text, self._padding(tokens), bb.eos_index(tokens)).view(b, h, w)
            logits = self.map_log_scale.exp() * refined + self.map_bias
        else:
            logits = self.map_log_scale.exp() * cos + self.map_bias
        if isinstance(self.ske, SharedSpaceKnowledge):
            s = F.normalize(sentence.float(), dim=-1)
            if self.fused:  # every layer through ln_post and proj in one call
                shared = bb.to_shared_space(self.clip, torch.stack([vision_out[i][:, 1:] for i in self.ske_layers], 1))
                maps = torch.einsum("bkne,be->bkn", F.normalize(shared.float(), dim=-1), s).view(b, -1, h, w)
            else:
                maps = torch.stack([
                    patch_cosine(bb.to_shared_space(self.clip, vision_out[i][:, 1:]), sentence).view(b, h, w)
                    for i in self.ske_layers], dim=1)
            p = F.normalize(patch.float(), dim=-1).transpose(1, 2).reshape(b, -1, h, w)
            logits = self.ske(maps, p, s, logits)
        if self.hooks["patch_map"]:
            ctx = HookContext(tokens, self._padding(tokens), self.points, patch=patch, sentence=sentence)
            for _, hook in self.hooks["patch_map"]:
                logits = hook.patch_map(logits, ctx)
        feats = [self._grid(vision_out[i]) for i in self.decoder_layers] if self.decoder is not None else None
        return PatchLevel(logits=logits, cosine=cos, features=feats)

    def pixel_level(self, p: PatchLevel, out_size: tuple[int, int]) -> RISOutput:
        """The decoder (or a bilinear upsampling without it) on a :meth:`patch_level` result."""
        if self.decoder is not None:
            features = p.features
            for _, hook in self.hooks["decoder_input"]:
                features = hook.decoder_input(features, p.logits)
            mask_logits = self.decoder(features, p.logits, out_size)
        else:
            mask_logits = F.interpolate(p.logits[:, None], size=out_size, mode="bilinear", align_corners=False)[:, 0]
        return RISOutput(patch_logits=p.logits, mask_logits=mask_logits, patch_cosine=p.cosine)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, image_index: torch.Tensor | None = None) -> RISOutput:
        return self.pixel_level(self.patch_level(images, tokens, image_index), tuple(images.shape[-2:]))

    # ------------------------------------------------------------------------------------- prediction
    @torch.no_grad()
    def binarise(self, out: RISOutput, sizes: list[tuple[int, int]], threshold: float = 0.5) -> list[torch.Tensor]:
        """Boolean masks at the given (h, w) sizes (each image's original size by default protocol):
        sigmoid > ``threshold`` of the pixel logits resized bilinearly, or, for a variant with nothing
        trained, the zero-shot rule of :mod:`risclip.grounding`."""
        logit_cut = math.log(threshold / (1 - threshold))  # sigmoid(x) > t  <=>  x > logit(t)
        masks = []
        for i, size in enumerate(sizes):
            if self.zero_shot:
                masks.append(zero_shot_mask(out.patch_cosine[i], size, self.cfg.tau))
            else:
                up = F.interpolate(out.mask_logits[i][None, None].float(), size=size, mode="bilinear",
                                   align_corners=False)
                masks.append(up[0, 0] > logit_cut)
        return masks
