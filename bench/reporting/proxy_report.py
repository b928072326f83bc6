"""Render the proxy-CLIP trials report (``python -m bench.proxy_trials``) from the JSON its measurements
wrote, so it re-renders without training or scoring again (``--render reports/<preset>/proxy-trials.json``)."""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = ("a {shape}", "a {colour} object", "a {colour} {shape}")
PROBES = ("attribute", "shape", "place", "relation")


def _f(x, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def render(data: dict) -> str:
    """The report's markdown from the trials' JSON alone."""
    rows, command, seconds = data["rows"], data["command"], data["seconds"]
    chance = rows[0]["value"]["zero_shot"] if rows else {}
    lines = [f"# Proxy-CLIP trials ({data['preset']})", "",
             "**Every number here is ours, measured on SynthRef val and on the caption corpus's held-out images; "
             "none is the paper's.**", "",
             f"- Made by: `{command}` in {seconds / 60:.1f} min (pre-training of uncached trials included)",
             f"- Rung 0 scored on the first {rows[0]['val_samples'] if rows else 0} val expressions; zero-shot "
             "grounding on up to 150 val images", "- Pre-training seconds are as measured, on a 2-core machine "
             "that sometimes ran other work beside them", "",
             "## Image level: probes on held-out corpus images", "",
             "A true caption against the same caption with one word changed (chance 50%).", "",
             "| trial | recipe | pre-training s | retrieval top-1 | attribute | shape | place | relation |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pr = r["probes"]
        lines.append(f"| {r['trial']} | {r['what']} | {_f(r['pretrain_seconds'], 0)} | {_f(r['retrieval_top1'])} | "
                     + " | ".join(_f(pr[k]) for k in PROBES) + " |")
    lines += ["", "## Patch level: rung 0 on val", "",
              "Select mIoU: the patch map picks among the image's instance masks (the share of referents picked). "
              "Zero-shot: the object with the highest mean cosine matches the prompt (chance: " +
              ", ".join(f"{k} {_f(v['chance'])}" for k, v in chance.items()) + ").", "",
              "| trial | readout | select | attribute | position | relation | " + " | ".join(PROMPTS) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(PROMPTS)]
    for r in rows:
        for readout in ("value", "plain"):
            s = r[readout]
            k = s["select_by_kind"]
            lines.append(f"| {r['trial']} | {readout} | {_f(s['select'])} | {_f(k.get('attribute'))} | "
                         f"{_f(k.get('position'))} | {_f(k.get('relation'))} | "
                         + " | ".join(_f(s["zero_shot"][p]["hit"]) for p in PROMPTS) + " |")
    if rows:
        best = max(rows, key=lambda r: r["value"]["select_by_kind"].get("attribute", 0))
        shape = max(rows, key=lambda r: r["probes"]["shape"] or 0)
        lines += ["", "## What the numbers say", "",
                  f"- Best rung-0 attribute select on val: {_f(best['value']['select_by_kind'].get('attribute'))} "
                  f"({best['trial']}); the target is 65 on test.",
                  f"- Highest image-level shape probe: {_f(shape['probes']['shape'])} ({shape['trial']}); its "
                  f"zero-shot `a {{shape}}` hit by the value path is {_f(shape['value']['zero_shot']['a {shape}']['hit'])} "
                  f"against {_f(shape['value']['zero_shot']['a {shape}']['chance'])} chance.",
                  "- Where the image embedding tells shapes apart and the objects' patches do not, the shape is "
                  "known to the image as a whole but not located on the object."]
    return "\n".join(lines) + "\n"



def write_trials(data: dict, stem: Path) -> Path:
    """``stem.json``, then ``stem.md`` rendered from what the JSON holds."""
    js = stem.with_suffix(".json")
    js.write_text(json.dumps(data, indent=2, default=str))
    md = stem.with_suffix(".md")
    md.write_text(render(json.loads(js.read_text())))
    return md


def rerender(json_path: Path) -> Path:
    data = json.loads(Path(json_path).read_text())
    missing = [k for k in ("preset", "command", "seconds", "rows") if k not in data]
    if missing:
        raise ValueError(f"{json_path} was written before the trials' JSON held the whole report (no "
                         f"{', '.join(missing)}): run python -m bench.proxy_trials again to re-render it")
    md = Path(json_path).with_suffix(".md")
    md.write_text(render(data))
    return md
