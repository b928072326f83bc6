"""Render the diagnosis report (``python -m bench.diagnose``) from the JSON its measurements wrote, so it
re-renders without measuring again (``python -m bench.diagnose --render reports/<preset>/diagnosis.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

# the slots the linear probes read: of the object under a patch, and of the expression's program
PATCH_SLOTS = ("shape", "colour", "size", "striped", "x third", "y third")
SENTENCE_SLOTS = ("kind", "target shape", "target colour", "target size", "position word", "relation word",
                  "anchor shape")


def _f(x: float | None, nd: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _probe_rows(tables: dict[str, dict[str, dict]], slots: tuple[str, ...]) -> list[str]:
    names = list(tables)
    if not names:
        return ["(no model probed)"]
    out = ["| slot | majority class | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for slot in slots:
        first = next(iter(tables.values()))[slot]
        out.append(f"| {slot} | {_f(first['majority'])} | " + " | ".join(_f(tables[n][slot]["accuracy"]) for n in names)
                   + " |")
    return out


def render(data: dict) -> str:
    """The report's markdown from the diagnosis JSON alone."""
    lines = [f"# Where grounding breaks: a diagnosis of the SynthRef ladder ({data['preset']})", "",
             "**Every number here is ours, measured on SynthRef with the preset's proxy CLIP; none is the paper's.**",
             "", f"- Made by: `{data['command']}` in {data['minutes']:.1f} min on this machine "
             f"({', '.join(f'{k} {v / 60:.1f} min' for k, v in data['seconds'].items())})",
             "- Trained rungs: the latest plain ladder's seed-0 checkpoints"
             + (f" (MLflow parent `{data['parent']}`)" if data["parent"] else
                " (none found in the store: run `python -m bench.ablate` first; those sections are empty)"), "",
             "## 1. What the patch embeddings hold (linear probes)", "",
             f"Accuracy (%) of a linear probe on shared-space patch embeddings, fitted on {data['scale']['images']} train images' "
             f"patches and scored on {data['scale']['images']} val images' patches (16x16 patches each); `shape` includes "
             "background patches, the other slots are probed on object patches only.", ""]
    lines += _probe_rows(data["patch_probes"], PATCH_SLOTS)
    lines += ["", "## 2. What the sentence embedding holds (linear probes)", "",
              f"Accuracy (%) of a linear probe on the shared-space sentence (EOS) embedding, fitted on {data['scale']['sentences']} "
              f"train sentences and scored on up to {data['scale']['sentences']} val sentences. Each slot of the expression's "
              "program, `none` where the expression has no such slot.", ""]
    lines += _probe_rows(data["sentence_probes"], SENTENCE_SLOTS)
    lines += ["", "## 3. Fit against generalisation", "",
              f"mIoU on the first {data['scale']['fit']} train sentences (seen in training) against val mIoU (all val sentences), "
              "seed 0.", "", "| rung | train mIoU | val mIoU | train - val |", "|---|---|---|---|"]
    for f in data["fit"]:
        tr, va = f["train_mIoU"], f["val_mIoU"]
        lines.append(f"| {f['rung']} | {_f(tr, 2)} | {_f(va, 2)} | {_f(tr - va, 2)} |")
    if not data["fit"]:
        lines.append("| - | - | - | - |")
    lines += ["", "## 4. The patch map on the referent, epoch by epoch", "",
              f"Rungs 1 and 2 trained again (stage 1, seed 0, the preset's schedule); after each epoch, on "
              f"{data['margin_sentences']} val sentences: the map's mean inside the referent minus the highest mean inside another "
              "object of the same image (`margin`, in logits), and the share of sentences whose referent has the "
              "highest mean (`referent first`, %). Epoch 0 is the untrained model.", "",
              "| rung | epoch | train loss | margin | referent first | sentences |", "|---|---|---|---|---|---|"]
    for rung, rows in data["margins"].items():
        for r in rows:
            lines.append(f"| {rung} | {r['epoch']} | {_f(r['loss'], 4)} | {_f(r['margin'], 3)} | "
                         f"{_f(r['referent_first'])} | {r['n']:.0f} |")
    lines += ["", "## 5. Zero-shot dense grounding of the proxy", "",
              f"On up to {data['scale']['zs']} val images: for each prompt that matches some but not all objects of the image, "
              "does the object with the highest mean cosine map match it? `chance`: the share of matching objects.", "",
              "| prompt | value path: hit | plain tokens: hit | chance | prompts |", "|---|---|---|---|---|"]
    for form, r in data["zero_shot"]["value"].items():
        lines.append(f"| {form} | {_f(r['hit'])} | {_f(data['zero_shot']['plain'][form]['hit'])} | {_f(r['chance'])} | {r['n']:.0f} |")
    corpus = data["corpus"]
    lines += ["", "## 6. The proxy's pre-training corpus", ""]
    if corpus.get("missing") is None:
        lines.append(f"(corpus not found at {corpus['corpus']})")
    else:
        missing = ", ".join(f"`{w}` ({corpus['missing_counts'][w]})" for w in corpus["missing"]) or "none"
        rare = ", ".join(f"`{w}` ({corpus['rare_counts'][w]})" for w in corpus["rare"]) or "none"
        lines += [f"{corpus['captions']} captions (`{corpus['corpus']}`). Expression words (train split) that never occur "
                  f"in them, with the number of train sentences using each: {missing}. "
                  f"{corpus['sentences_hit']} of {corpus['sentences']} train sentences contain one.", "",
                  f"Words of the expressions seen fewer than 20 times in the corpus (times seen): {rare}."]
    return "\n".join(lines) + "\n"


def write_diagnosis(data: dict, out: Path) -> Path:
    """Write ``out.with_suffix('.json')`` and then ``out`` rendered from what the JSON holds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    js = out.with_suffix(".json")
    js.write_text(json.dumps(data, indent=1, default=float))
    out.write_text(render(json.loads(js.read_text())))
    return out


def rerender(json_path: Path, out: Path | None = None) -> Path:
    """Render a diagnosis JSON again (no measuring): ``out`` defaults to the JSON's ``.md`` sibling."""
    data = json.loads(Path(json_path).read_text())
    missing = [k for k in ("preset", "command", "minutes", "scale", "margin_sentences") if k not in data]
    if missing:
        raise ValueError(f"{json_path} was written before the diagnosis JSON held the whole report (no "
                         f"{', '.join(missing)}): measure again with python -m bench.diagnose to re-render it")
    target = out or Path(json_path).with_suffix(".md")
    target.write_text(render(data))
    return target
