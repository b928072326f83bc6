"""Image and mask transforms shared by the RefCOCO loader and SynthRef.

Images are resized straight to a square ``size x size`` (no letterbox; LAVT's choice) with bicubic
interpolation, as CLIP's own preprocessing does, then normalised with CLIP's mean and std. Masks are
resized with nearest-neighbour so they stay binary. Evaluation happens at the original resolution,
so the original mask can be kept beside the resized one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# CLIP's (OpenAI) normalisation constants, as open_clip uses them.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ResizeNormalize:
    """PIL image + boolean numpy mask -> normalised (3, S, S) float tensor + (S, S) float mask."""

    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def image(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BICUBIC)
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (arr - mean) / std

    def mask(self, mask: np.ndarray) -> torch.Tensor:
        m = Image.fromarray(mask.astype(np.uint8) * 255)
        if m.size != (self.size, self.size):
            m = m.resize((self.size, self.size), Image.NEAREST)
        return torch.from_numpy(np.asarray(m) > 127).float()

    def __call__(self, img: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(img), self.mask(mask)


def denormalize(image: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """Inverse of the normalisation, clamped to [0, 1]; works on (3, H, W) or (B, 3, H, W)."""
    shape = (3, 1, 1) if image.dim() == 3 else (1, 3, 1, 1)
    m = torch.tensor(mean, device=image.device).view(shape)
    s = torch.tensor(std, device=image.device).view(shape)
    return (image * s + m).clamp(0, 1)
