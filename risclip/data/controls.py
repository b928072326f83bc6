"""Text controls: the same evaluation images and *true* masks, other sentences. Does the model read its text?

A model that segments the referent the sentence names must lose most of its IoU when the sentence is
replaced by one that names another object of the same image, and should not keep it under a sentence
that names nothing. A model that segments salient objects whatever the text says keeps about the same
score under both. Two controls:

* ``swap``: each sentence whose image holds another referent (another ref with a different annotation)
  is replaced by a sentence of that other referent; sentences whose image holds no other referent are
  left out of the control (:attr:`TextControl.indices` lists the kept ones). The other ref, then its
  sentence, are drawn uniformly with a generator seeded by ``(seed, sent_id)``, so a sentence's swap does
  not depend on which other sentences are scored. On RefCOCO-family data this uses another ref of the same
  COCO image (each image has several), so the control serves the paper's ladder too.
* ``generic``: every sentence is replaced by one fixed content-free phrase (default ``"the object"``).

Each keeps the original sentence's ``kind`` (per-kind scores stay comparable with the ordinary ones), and
puts the sentence actually read in ``meta["text"]`` and the original in ``meta["true_text"]``.
"""

from __future__ import annotations

import random
from collections import defaultdict

from torch.utils.data import Dataset

from .refer import ReferDataset

CONTROLS: tuple[str, ...] = ("swap", "generic")
GENERIC_PHRASE = "the object"


def swap_candidates(dataset: ReferDataset) -> dict[int, list[dict]]:
    """image id -> every ref of the dataset's split in that image (all of the split's refs, even where the
    dataset scores only its first ``max_samples`` sentences)."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ref in dataset.refs:
        if ref.get("sentences"):
            by_image[ref["image_id"]].append(ref)
    return by_image


def swapped_sentence(ref: dict, sent: dict, by_image: dict[int, list[dict]], seed: int) -> str | None:
    """A sentence of another referent of ``ref``'s image (seeded by ``(seed, sent_id)``), or None if the image
    has no other referent."""
    others = [r for r in by_image.get(ref["image_id"], []) if r["ann_id"] != ref["ann_id"]]
    if not others:
        return None
    rng = random.Random(f"{seed}:{sent.get('sent_id')}:{ref.get('ref_id')}")
    other = others[rng.randrange(len(others))]
    s = other["sentences"][rng.randrange(len(other["sentences"]))]
    return ReferDataset.sentence_text(s)


class TextControl(Dataset):
    """An evaluation dataset wrapped so that each kept sample reads a control sentence (see the module
    docstring); image, ``mask`` and ``orig_mask`` stay the true referent's."""

    def __init__(self, dataset: ReferDataset, control: str, seed: int = 0, phrase: str = GENERIC_PHRASE) -> None:
        if control not in CONTROLS:
            raise ValueError(f"unknown text control '{control}'; valid: {', '.join(CONTROLS)}")
        self.base, self.control, self.seed, self.phrase = dataset, control, seed, phrase
        self.keep_original_mask = dataset.keep_original_mask
        if control == "generic":
            self.indices = list(range(len(dataset)))
            self.texts = [phrase] * len(dataset)
        else:
            by_image = swap_candidates(dataset)
            self.indices, self.texts = [], []
            for i, (ref, sent) in enumerate(dataset.samples):
                text = swapped_sentence(ref, sent, by_image, seed)
                if text is not None:
                    self.indices.append(i)
                    self.texts.append(text)

    @property
    def fraction(self) -> float:
        """Share of the dataset's sentences this control scores (1.0 for ``generic``)."""
        return len(self.indices) / len(self.base) if len(self.base) else 0.0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        sample = self.base[self.indices[index]]
        text = self.texts[index]
        sample["tokens"] = self.base.tokenizer([text])[0]
        sample["meta"] = {**sample["meta"], "true_text": sample["meta"]["text"], "text": text, "control": self.control}
        return sample
