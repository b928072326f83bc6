"""Figures the harness logs: a grid of fixed val samples (image, ground truth, prediction)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from risclip.data.refer import ReferDataset, refer_collate  # noqa: E402
from risclip.model import RISCLIP  # noqa: E402


def fixed_indices(n_samples: int, k: int = 6) -> list[int]:
    """``k`` evenly spaced sample indices: the same samples for every variant and seed."""
    if n_samples <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n_samples - 1, num=min(k, n_samples))})


@torch.no_grad()
def prediction_grid(model: RISCLIP, dataset: ReferDataset, path: str | Path, k: int = 6,
                    title: str | None = None) -> Path:
    """Write a PNG with one row per sample: the image with its expression, the ground truth, the prediction."""
    idx = fixed_indices(len(dataset), k)
    batch = refer_collate([dataset[i] for i in idx])
    device = next(model.parameters()).device
    model.eval()
    out = model(batch["image"].to(device), batch["tokens"].to(device))
    sizes = [(m["orig_h"], m["orig_w"]) for m in batch["meta"]]
    preds = model.binarise(out, sizes)
    fig, axes = plt.subplots(len(idx), 3, figsize=(7.5, 2.5 * len(idx)), squeeze=False)
    for row, (meta, gt, pred) in enumerate(zip(batch["meta"], batch["orig_mask"], preds)):
        image = np.asarray(dataset.load_image(meta["image_id"]))
        gt, pred = gt.cpu().numpy().astype(bool), pred.cpu().numpy().astype(bool)
        inter, union = (gt & pred).sum(), (gt | pred).sum()
        iou = inter / union if union else 1.0
        panels = [(image, "\n".join(textwrap.wrap(meta["text"], 34))), (gt, "ground truth"),
                  (pred, f"prediction (IoU {100 * iou:.0f})")]
        for col, (im, label) in enumerate(panels):
            ax = axes[row, col]
            if col == 0:
                ax.imshow(im)
            else:
                ax.imshow(image)
                ax.imshow(np.ma.masked_where(~im, im), alpha=0.6, cmap="autumn", vmin=0, vmax=1)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
