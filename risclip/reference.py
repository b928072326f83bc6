"""A from-scratch referring segmenter with no CLIP: what the data allows at a training budget without
CLIP's pre-training, as the pre-CLIP RIS models (e.g. RMI, LSTM-CNN) were for RefCOCO.

Our design (not a paper's; every width is a :class:`ReferenceConfig` field):

* **image**: a small conv encoder, four stages of (3x3 conv, BN, ReLU) x2, the first three with stride 2
  (128 px -> 64, 32, then 16x16 at the two deepest stages, the rungs' patch grid), each stage's input
  given two coordinate channels (x and y in [-1, 1], CoordConv), so that position words have something
  to bind to;
* **text**: a word embedding over the same token ids the rungs read (open_clip's BPE) and a one-layer
  bidirectional GRU; the sentence vector is the mean of its states over the real tokens;
* **fusion**: FiLM at each of the three deeper stages, a per-channel scale and shift predicted from the
  sentence vector, then a word-level cross-attention (image positions attend to the GRU states, padding
  masked) at the deepest stage;
* **decoder**: one light U-Net step back to a quarter of the image size with the encoder's skip there, a
  1x1 conv to one logit per pixel, bilinearly resized to the image size;
* **training**: the rungs' Dice + focal loss at pixel level, AdamW, warm-up then cosine decay, gradient
  clipping; deterministic on CPU (the epoch order comes from a generator seeded by (seed, epoch)).

It is scored exactly as a rung is: it offers the interface :func:`risclip.engine.evaluate` calls
(``set_stage``, ``forward(images, tokens, image_index)`` returning a :class:`risclip.model.RISOutput`,
``binarise``), so mIoU, select mIoU and the text controls come from the same code.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .data.refer import ReferDataset, refer_collate
from .identity import identity_hash
from .kernels import mixed_precision
from .losses import dice_focal_loss
from .model import RISOutput

VOCAB_SIZE = 49408  # open_clip's BPE vocabulary: the token ids every rung reads


@dataclass(frozen=True)
class ReferenceConfig:
    """The reference model and its schedule (our choices, sized for a 2-core CPU at 128 px)."""

    widths: tuple[int, int, int, int] = (24, 48, 64, 96)  # the four encoder stages
    word_dim: int = 64
    text_dim: int = 96  # GRU states (both directions together)
    heads: int = 4  # cross-attention at the deepest stage
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    dice_weight: float = 1.0
    focal_weight: float = 1.0
    focal_alpha: float = -1.0
    # bf16 autocast on a CPU, as the rungs get it under TrainConfig.cpu_amp, so that a wall-time budget buys the
    # reference the same speed-up it buys rung 1 (out of the identity when off, as before the field existed)
    cpu_amp: bool = False

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if not self.cpu_amp:
            del d["cpu_amp"]
        return d

    def autocast(self, device: torch.device | str):
        """The training step's autocast: bf16 on a CPU under ``cpu_amp``, else float32."""
        return mixed_precision(device, cpu_amp=self.cpu_amp)

    def config_hash(self) -> str:
        return identity_hash(self.to_dict(), 12)


def _coords(x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([x, xs, ys], 1)


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin + 2, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(_coords(x))


class ReferenceSegmenter(nn.Module):
    """See the module docstring."""

    zero_shot = False  # always a trained pixel-logit model: sigmoid > threshold

    def __init__(self, cfg: ReferenceConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ReferenceConfig()
        self.cfg = cfg
        w = cfg.widths
        self.stages = nn.ModuleList([_Stage(3, w[0], 2), _Stage(w[0], w[1], 2), _Stage(w[1], w[2], 2),
                                     _Stage(w[2], w[3], 1)])
        self.embed = nn.Embedding(VOCAB_SIZE, cfg.word_dim)
        self.gru = nn.GRU(cfg.word_dim, cfg.text_dim // 2, batch_first=True, bidirectional=True)
        self.film = nn.ModuleList([nn.Linear(cfg.text_dim, 2 * c) for c in w[1:]])
        self.q = nn.Conv2d(w[3], w[3], 1)
        self.attn = nn.MultiheadAttention(w[3], cfg.heads, kdim=cfg.text_dim, vdim=cfg.text_dim, batch_first=True)
        self.up = nn.Sequential(nn.Conv2d(w[3] + w[1], w[1], 3, 1, 1, bias=False), nn.BatchNorm2d(w[1]),
                                nn.ReLU(inplace=True))
        self.head = nn.Conv2d(w[1], 1, 1)
        for f in self.film:  # FiLM starts as the identity
            nn.init.zeros_(f.weight)
            nn.init.zeros_(f.bias)

    # the evaluation interface of risclip.engine.evaluate ------------------------------------------------
    def set_stage(self, stage: int | None) -> None:
        self.train(stage is not None)
        self.requires_grad_(stage is not None)

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GRU states (B, L, D), their padding mask (True where padding) and the sentence vector (B, D)."""
        lengths = (tokens != 0).sum(1).clamp_min(1)
        n = int(lengths.max())
        tokens = tokens[:, :n]
        pad = torch.arange(n, device=tokens.device)[None] >= lengths[:, None]
        states, _ = self.gru(self.embed(tokens))
        keep = (~pad).unsqueeze(-1).to(states.dtype)
        sentence = (states * keep).sum(1) / keep.sum(1)
        return states, pad, sentence

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, image_index: torch.Tensor | None = None) -> RISOutput:
        if image_index is not None:
            images = images[image_index]
        states, pad, sentence = self.encode_text(tokens)
        feats = []
        x = images
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i > 0:
                gamma, beta = self.film[i - 1](sentence).chunk(2, dim=1)
                x = x * (1 + gamma[..., None, None]) + beta[..., None, None]
            feats.append(x)
        b, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)
        att, _ = self.attn(q, states, states, key_padding_mask=pad, need_weights=False)
        x = x + att.transpose(1, 2).reshape(b, c, h, w)
        x = F.interpolate(x, size=feats[1].shape[-2:], mode="bilinear", align_corners=False)
        x = self.up(torch.cat([x, feats[1]], 1))
        coarse = self.head(x)[:, 0]
        logits = F.interpolate(coarse[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return RISOutput(patch_logits=coarse, mask_logits=logits, patch_cosine=coarse)

    @torch.no_grad()
    def binarise(self, out: RISOutput, sizes: list[tuple[int, int]], threshold: float = 0.5) -> list[torch.Tensor]:
        cut = math.log(threshold / (1 - threshold))
        return [F.interpolate(out.mask_logits[i][None, None].float(), size=s, mode="bilinear", align_corners=False)[0, 0]
                > cut for i, s in enumerate(sizes)]


def _schedule(total: int, warmup_fraction: float) -> Callable[[int], float]:
    warm = max(1, int(total * warmup_fraction))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


def _loader(dataset: ReferDataset, cfg: ReferenceConfig, seed: int, epoch: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(dataset), generator=g).tolist()
    return DataLoader(Subset(dataset, order), batch_size=cfg.batch_size, shuffle=False, collate_fn=refer_collate,
                      drop_last=len(dataset) > cfg.batch_size)


def seconds_per_epoch(dataset: ReferDataset, cfg: ReferenceConfig, seed: int = 0, batches: int = 3,
                      device: torch.device | str = "cpu") -> float:
    """Time a few training steps of a throwaway model and scale to one epoch: how many epochs fit a budget."""
    torch.manual_seed(seed)
    model = ReferenceSegmenter(cfg).to(device)
    model.set_stage(1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loader = _loader(dataset, cfg, seed, 10_000)
    times = []
    for _, batch in zip(range(batches + 1), loader):
        t0 = time.perf_counter()
        with cfg.autocast(device):
            out = model(batch["image"].to(device), batch["tokens"].to(device))
        loss = dice_focal_loss(out.mask_logits, batch["mask"].to(device), cfg.dice_weight, cfg.focal_weight,
                               alpha=cfg.focal_alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    steps = math.ceil(len(dataset) / cfg.batch_size)
    timed = times[1:] or times  # the first step (allocation, warm-up) left out where there are others
    return float(sum(timed) / len(timed) * steps)


def train_reference(dataset: ReferDataset, cfg: ReferenceConfig, epochs: int, seed: int = 0,
                    device: torch.device | str = "cpu", progress: bool | None = None,
                    epoch_end: Callable[[ReferenceSegmenter], dict] | None = None
                    ) -> tuple[ReferenceSegmenter, list[dict]]:
    """Train a reference model for ``epochs`` epochs; returns it (in eval mode) and one history row per epoch.
    ``epoch_end`` (a learning curve, :class:`risclip.engine.LearningCurve` with stage 2) adds its scores to each
    epoch's row; training goes on in training mode after it."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1 (got {epochs})")
    torch.manual_seed(seed)
    model = ReferenceSegmenter(cfg).to(device)
    model.set_stage(1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = len(_loader(dataset, cfg, seed, 0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(epochs * steps, cfg.warmup_fraction))
    history = []
    for epoch in range(epochs):
        t0, total, count = time.perf_counter(), 0.0, 0
        bar = tqdm(_loader(dataset, cfg, seed, epoch), desc=f"reference epoch {epoch + 1}/{epochs}", unit="batch",
                   leave=False, disable=None if progress is None else not progress)
        for batch in bar:
            mask = batch["mask"].to(device)
            with cfg.autocast(device):
                out = model(batch["image"].to(device), batch["tokens"].to(device))
            loss = dice_focal_loss(out.mask_logits, mask, cfg.dice_weight, cfg.focal_weight, alpha=cfg.focal_alpha)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"reference model: non-finite loss in epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.item() * mask.shape[0]
            count += mask.shape[0]
        row = {"epoch": epoch + 1, "loss": total / max(count, 1), "seconds": time.perf_counter() - t0}
        if epoch_end is not None:
            row.update(epoch_end(model))
            model.set_stage(1)
        history.append(row)
    model.set_stage(None)
    return model, history
