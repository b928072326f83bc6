"""Named experiment presets for ``bench.ablate`` and every other entry point: model, training, data and where
the backbone comes from.

Each preset is one data file, ``bench/presets/<name>.toml``: flat (every value it sets is in that file; fields it
does not name keep their dataclass defaults, and ``--describe-preset`` prints every one), and marked ``current``
or ``archived``:

* current: ``synthref`` (the default: the SynthRef ladder on a 2-core CPU, every sentence true to its picture),
  ``paper-b`` and ``paper-l`` (the paper's settings on RefCOCOg-UMD; real data and CLIP weights needed, nothing is
  downloaded; ``[provenance]`` marks each value as the paper's or ours);
* archived: the SynthRef presets that ``synthref`` superseded, kept runnable when named so that their reports
  stay reproducible (docs/findings.md says what each answered; git history has how each was chosen).

SynthRef and the proxy CLIPs are made on first use and cached under the preset's data folder. ``quick``,
``with_data_seed``, ``with_data_root`` and ``override`` (``--set``) derive variants of a preset.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.proxy.pretrain_clip import PretrainConfig
from risclip import registry
from risclip.config import Components, DataConfig, ModelConfig, TrainConfig
from risclip.data.synthref import SynthRefConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelConfig
    train: TrainConfig
    data: DataConfig
    synthref: SynthRefConfig | None = None  # generate SynthRef at data.data_root when it is absent
    proxy_clip: PretrainConfig | None = None  # pre-train (or reuse) a proxy CLIP as the backbone weights
    quick: bool = False
    # where each value comes from: "section.field" -> "paper: ..." or "ours: ..." (paper presets)
    provenance: tuple[tuple[str, str], ...] = ()
    status: str = "current"  # "archived": superseded, kept runnable for its reports, left out of --preset's list
    # what bench.ablate also runs by default when rung 1 runs: the from-scratch reference at these multiples of
    # rung 1's median training time, every seed (--reference overrides). A cost: at 1 and 3, about four times
    # rung 1's training per seed; so the paper presets run none unless asked
    reference: tuple[float, ...] = ()
    # what a run costs, as measured on a 2-core CPU, so that a long wait is announced before it starts: the
    # proxy CLIP made from nothing (caption corpus, dense masks, pre-training), and one trained run (training
    # and scoring with the controls), fastest to slowest rung. Zero: not measured (the paper presets, quick)
    proxy_minutes: float = 0.0
    run_minutes: tuple[float, float] = (0.0, 0.0)
    # a rung with the decoder whose stage 1 comes from the stage-1 cache (rung 4 after rung 3): its stage 2 and
    # scoring alone. Zero: not measured (such a run is then counted as a full one)
    decoder_minutes: float = 0.0

    def describe(self) -> str:
        """Every model, training and data field with its value and, where recorded, whether the paper
        states it or it is our choice."""
        marks = dict(self.provenance)
        lines = [f"preset {self.name}: {self.description}"]
        for section in ("model", "train", "data"):
            for k, v in getattr(self, section).to_dict().items():
                key = f"{section}.{k}"
                lines.append(f"  {key:<28} {json.dumps(v, default=str):<34} {marks.get(key, '')}".rstrip())
        return "\n".join(lines)


DEFAULT_PRESET = "synthref"

_PRESET_TOOLS = re.compile(r"^python -m (?:bench\.[a-z0-9_]+|studies (?:run|report) [a-z]+)")


def pinned_command(command: str, preset: str) -> str:
    """A recorded command (``python -m bench.<tool>`` or ``python -m studies run|report <name>``) with
    ``--preset`` spelled out where it relied on the default and the preset is no longer the default: a command
    typed before the default moved must still rerun its own preset."""
    m = _PRESET_TOOLS.match(command)
    base = preset.removesuffix("-quick")  # quick(p) is named p-quick; --quick makes it from --preset p
    if m is None or "--preset" in command or base == DEFAULT_PRESET:
        return command
    return f"{m.group(0)} --preset {base}{command[m.end():]}"


# ------------------------------------------------------------------------------------------ presets as data
PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"  # bench/presets/<name>.toml, one file a preset
PRESET_STATUSES: tuple[str, ...] = ("current", "archived")
OURS = "ours (the paper does not state it)"
_SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig, "synthref": SynthRefConfig,
             "proxy_clip": PretrainConfig}
_TOP = {"name", "status", "description", "reference", "provenance", "proxy_minutes", "run_minutes", "decoder_minutes",
        *_SECTIONS}


def _section(cls, table: dict, where: str):
    """One config dataclass from its TOML table: fields not named keep the dataclass's defaults; unknown names
    are an error; TOML arrays become tuples; ``components`` is written as names ("adapters,cfe")."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} fields {', '.join(unknown)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in table.items()}
    if "components" in kwargs:
        kwargs["components"] = Components.from_names(kwargs["components"])
    return cls(**kwargs)


def load_preset(path: str | Path) -> Preset:
    """A preset from its data file: ``name``, ``status`` (current or archived), ``description``, then one table
    per config (``[model]``, ``[train]``, ``[data]`` and, for SynthRef, ``[synthref]`` and ``[proxy_clip]``),
    each naming only the fields that differ from the dataclass's defaults, and for the paper presets
    ``[provenance]``: where a value comes from (every model, train and data field not listed is ours)."""
    path = Path(path)
    with open(path, "rb") as f:
        d = tomllib.load(f)
    unknown = sorted(set(d) - _TOP)
    if unknown or d.get("status") not in PRESET_STATUSES or d.get("name") != path.stem:
        raise ValueError(f"{path}: not a preset file (unknown keys {unknown}, status {d.get('status')!r}, "
                         f"name {d.get('name')!r} for file {path.stem})")
    cfgs = {sec: _section(cls, d.get(sec, {}), f"{path}: [{sec}]") for sec, cls in _SECTIONS.items()
            if sec in d or sec in ("model", "train", "data")}
    provenance: tuple[tuple[str, str], ...] = ()
    if "provenance" in d:
        marks = {f"{sec}.{k}": OURS for sec in ("model", "train", "data") for k in cfgs[sec].to_dict()}
        marks.update(d["provenance"])
        provenance = tuple(sorted(marks.items()))
    reference = d.get("reference", [])
    if not isinstance(reference, list) or any(not isinstance(v, (int, float)) or v <= 0 for v in reference):
        raise ValueError(f"{path}: reference must be a list of positive multiples of rung 1's time (got {reference!r})")
    run_minutes = d.get("run_minutes", [0.0, 0.0])
    if not (isinstance(run_minutes, list) and len(run_minutes) == 2 and 0 <= run_minutes[0] <= run_minutes[1]):
        raise ValueError(f"{path}: run_minutes must be [fastest, slowest] minutes of one run (got {run_minutes!r})")
    decoder_minutes = d.get("decoder_minutes", 0.0)
    if not isinstance(decoder_minutes, (int, float)) or decoder_minutes < 0:
        raise ValueError(f"{path}: decoder_minutes must be the minutes of one decoder-alone run, >= 0 (got {decoder_minutes!r})")
    return Preset(d["name"], d["description"], cfgs["model"], cfgs["train"], cfgs["data"], cfgs.get("synthref"),
                  cfgs.get("proxy_clip"), provenance=provenance, status=d["status"],
                  reference=tuple(dict.fromkeys(float(v) for v in reference)),
                  proxy_minutes=float(d.get("proxy_minutes", 0.0)),
                  run_minutes=(float(run_minutes[0]), float(run_minutes[1])), decoder_minutes=float(decoder_minutes))


def _catalogue() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.toml"))}


# the refer datasets and the splits each partition has; the first non-train split listed is val
REFER_DATASETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "refcoco": ("refcoco", "unc", ("val", "testA", "testB")),
    "refcoco+": ("refcoco+", "unc", ("val", "testA", "testB")),
    "refcocog": ("refcocog", "umd", ("val", "test")),
    "refcocog-google": ("refcocog", "google", ("val",)),
}


def with_refer(p: Preset, name: str, eval_split: str | None = None) -> Preset:
    """Point a paper preset at RefCOCO / RefCOCO+ (unc: val, testA, testB), RefCOCOg (umd: val, test) or
    RefCOCOg-Google (val only: there selection and scoring share val, which the report must say)."""
    if name not in REFER_DATASETS:
        raise ValueError(f"unknown --dataset '{name}'; valid: {', '.join(REFER_DATASETS)}")
    if p.synthref is not None:
        raise ValueError(f"--dataset is for the paper presets; {p.name} runs on SynthRef")
    dataset, split_by, splits = REFER_DATASETS[name]
    test = eval_split or splits[-1]
    if test not in splits:
        raise ValueError(f"--eval-split {test}: {name} has {', '.join(splits)}")
    data = dataclasses.replace(p.data, dataset=dataset, split_by=split_by, val_split="val", test_split=test)
    marks = dict(p.provenance)
    chosen = "chosen with --dataset / --eval-split (the paper reports RefCOCO, RefCOCO+ and RefCOCOg)"
    marks.update({"data.dataset": chosen, "data.split_by": chosen, "data.test_split": chosen})
    if test == "val":
        marks["data.val_split"] = "val: this partition has no test split, so selection and scoring share val"
    return dataclasses.replace(p, data=data, provenance=tuple(sorted(marks.items())), description=f"{p.description.split(' with ')[0].replace('RefCOCOg-UMD', name)}"
                               f" ({split_by}, scored on {test}) with {p.description.split(' with ', 1)[1]}")


PRESETS: dict[str, Path] = _catalogue()  # every preset by name, current and archived
CURRENT_PRESETS: tuple[str, ...] = tuple(n for n, path in PRESETS.items() if load_preset(path).status == "current")


def preset_name(text: str) -> str:
    """argparse ``type`` for ``--preset``: a known preset's name (current or archived), else a one-line error."""
    import argparse

    if text not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset '{text}'; current: {', '.join(CURRENT_PRESETS)} "
                                         f"(archived ones run when named: {', '.join(sorted(set(PRESETS) - set(CURRENT_PRESETS)))})")
    return text


def preset_help(default: str | None = None) -> str:
    """``--preset``'s help, from the presets' own files: the current ones, each with its description."""
    listed = "; ".join(f"{n}{' (default)' if n == default else ''}: {load_preset(PRESETS[n]).description}"
                       for n in CURRENT_PRESETS)
    return (f"{listed}. Archived presets (superseded; kept so their reports stay reproducible) run when named: "
            f"{', '.join(sorted(set(PRESETS) - set(CURRENT_PRESETS)))}. --describe-preset prints every field of one")


def reference_words(multiples: tuple[float, ...]) -> str:
    """A preset's default reference runs in words: "1x, 3x rung 1's time" or "none"."""
    return ", ".join(f"{m:g}x" for m in multiples) + " rung 1's time" if multiples else "none"


def readme_table() -> str:
    """The README's preset table, generated from the preset files (tests/test_presets.py keeps them equal)."""
    rows = ["| preset | status | what | from-scratch reference by default |", "|---|---|---|---|"]
    for n in (*CURRENT_PRESETS, *sorted(set(PRESETS) - set(CURRENT_PRESETS))):
        p = load_preset(PRESETS[n])
        rows.append(f"| `{n}`{' (default)' if n == DEFAULT_PRESET else ''} | {p.status} | {p.description} | "
                    f"{reference_words(p.reference)} |")
    return "\n".join(rows)


REPORTS = Path("reports")


def report_dir(preset: str) -> Path:
    """Where a preset's reports live: ``reports/<preset>/`` for a current preset, ``reports/archive/<preset>/``
    for an archived one (a ``-quick`` run reports beside its preset's)."""
    base = preset.removesuffix("-quick")
    if base in PRESETS and load_preset(PRESETS[base]).status == "archived":
        return REPORTS / "archive" / base
    return REPORTS / base


def get_preset(name: str) -> Preset:
    """A preset by name: a current one, or an archived one (kept runnable so its reports stay reproducible)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; current: {', '.join(CURRENT_PRESETS)}; archived: "
                         f"{', '.join(n for n in PRESETS if n not in CURRENT_PRESETS)}")
    return load_preset(PRESETS[name])


def build(name: str, *, quick: bool = False, data_root: str | None = None, data_seed: int | None = None,
          dataset: str | None = None, eval_split: str | None = None, overrides: list[str] | tuple[str, ...] = ()
          ) -> Preset:
    """The one way every entry point assembles a preset: the named preset, then its modifiers in a fixed order:
    ``quick`` (a smoke run, its SynthRef in ``<data_root>-quick`` unless ``data_root`` is given), ``data_root``,
    ``data_seed`` (a fresh SynthRef draw), ``dataset`` / ``eval_split`` (paper presets: which refer benchmark),
    ``overrides`` (``--set section.field=value``)."""
    preset = get_preset(name)
    if quick:
        preset = _smoke(preset)
    root = data_root or (f"{preset.data.data_root}-quick" if quick and preset.synthref else None)
    if root:
        preset = with_data_root(preset, root)
    if data_seed is not None:
        preset = with_data_seed(preset, data_seed)
    if dataset or eval_split:
        preset = with_refer(preset, dataset or "refcocog", eval_split)
    return override(preset, list(overrides)) if overrides else preset


def quick(p: Preset) -> Preset:
    """A few minutes end to end: little data, one short epoch per stage, a briefly pre-trained proxy. The
    paper presets (a ViT-B/16 at 416 px) take 8 training and 8 evaluation samples, enough to rehearse
    the real-data path on a CPU (docs/real-data.md)."""
    paper = p.synthref is None
    train = dataclasses.replace(p.train, stage1_epochs=1, stage2_epochs=1, batch_size=4 if paper else 16,
                                eval_batch_size=4 if paper else p.train.eval_batch_size)
    data = dataclasses.replace(p.data, max_train_samples=8 if paper else 96, max_eval_samples=8 if paper else 48)
    synthref = (dataclasses.replace(p.synthref, images=120, size=96,
                                    extra_test_images=min(p.synthref.extra_test_images, 30)) if p.synthref else None)
    proxy = (dataclasses.replace(p.proxy_clip, steps=20, batch_size=32, corpus_images=min(p.proxy_clip.corpus_images, 400),
                                 hires_steps=min(p.proxy_clip.hires_steps, 5))
             if p.proxy_clip else None)
    return dataclasses.replace(p, name=f"{p.name}-quick", train=train, data=data, synthref=synthref,
                               proxy_clip=proxy, quick=True, proxy_minutes=0.0, run_minutes=(0.0, 0.0),
                               decoder_minutes=0.0)


_smoke = quick  # build's ``quick`` argument hides the function's name there


def with_data_seed(p: Preset, seed: int) -> Preset:
    """A fresh SynthRef draw: the preset's generator settings with another seed, in its own folder
    (``<data_root>-draw<seed>``; the preset's own seed keeps its folder). The proxy CLIP stays the one the
    preset names, pre-trained on its own caption corpus (a stream no RIS draw shares), as a real CLIP stays
    the same whatever dataset it is used on; so only the data and the training seeds change."""
    if p.synthref is None:
        raise ValueError(f"--data-seed: preset {p.name} reads real data; only SynthRef presets draw their own")
    if seed == p.synthref.seed:
        return p
    data = dataclasses.replace(p.data, data_root=f"{p.data.data_root}-draw{seed}")
    return dataclasses.replace(p, data=data, synthref=dataclasses.replace(p.synthref, seed=seed))


def with_data_root(p: Preset, data_root: str) -> Preset:
    """Move the data folder; an image folder inside the old one moves with it (paper presets keep COCO's
    images in ``<data_root>/images/train2014``), one elsewhere stays."""
    image_root = p.data.image_root
    if image_root:
        old, img = Path(p.data.data_root), Path(image_root)
        if img.is_relative_to(old):
            image_root = str(Path(data_root) / img.relative_to(old))
    data = dataclasses.replace(p.data, data_root=data_root, image_root=image_root)
    proxy = dataclasses.replace(p.proxy_clip, data_root=data_root) if p.proxy_clip else None
    return dataclasses.replace(p, data=data, proxy_clip=proxy)


OVERRIDABLE = ("model", "train", "data")
# fields that a dedicated option sets consistently with the rest of the preset
DEDICATED = {("model", "components"): "--components", ("model", "pretrained"): "--pretrained",
             ("data", "data_root"): "--data-root", ("train", "seed"): "--seeds", ("train", "device"): "--device",
             ("train", "progress"): "--no-progress"}


def _coerce(section: str, name: str, current: object, text: str) -> object:
    """Parse ``text`` as JSON where it can be (numbers, true/false/null, [lists]), else keep the string;
    then check it against the field's current value (an int field takes an int, a float any number)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if isinstance(value, list):
        value = tuple(value)
    where = f"{section}.{name}"
    if value is None or current is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} takes true or false (got {text!r})")
    elif isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} takes an integer (got {text!r})")
    elif isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} takes a number (got {text!r})")
        value = float(value)
    elif isinstance(current, tuple):
        if not isinstance(value, tuple):
            raise ValueError(f"{where} takes a list such as [1,2] (got {text!r})")
    elif isinstance(current, str) and not isinstance(value, str):
        value = text
    return value


def override(p: Preset, assignments: list[str]) -> Preset:
    """Apply ``--set section.field=value`` assignments (section: model, train, data, or a registered plug-in's
    name for its own settings) to a preset.

    The changed fields enter the config hash, so an overridden run is tracked and reused as its own
    variant. Unknown sections or fields and ill-typed values raise a ValueError that names the valid ones.
    """
    for item in assignments:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"--set takes section.field=value, e.g. train.lr=1e-3 (got {item!r})")
        if section in registry.plugin_names():  # a plug-in's own setting: --set film.dim=64
            settings = registry.get(section).settings()
            known = sorted(f.name for f in dataclasses.fields(settings)) if settings is not None else []
            if name not in known:
                raise ValueError(f"--set {key}: plug-in '{section}' has no setting '{name}'; valid: "
                                 f"{', '.join(known) or 'none'}")
            value = _coerce(section, name, getattr(settings, name), text.strip())
            p = dataclasses.replace(p, model=p.model.with_plugin_setting(section, name, value))
            continue
        if section not in OVERRIDABLE:
            plugins = "".join(f", {n}" for n in registry.plugin_names())
            raise ValueError(f"--set {key}: section must be one of {', '.join(OVERRIDABLE)}{plugins} (a plug-in's "
                             f"name once --plugin has imported it)")
        cfg = getattr(p, section)
        fields = {f.name for f in dataclasses.fields(cfg)}
        if name not in fields:
            raise ValueError(f"--set {key}: {type(cfg).__name__} has no field '{name}'; valid: {', '.join(sorted(fields))}")
        if (section, name) in DEDICATED:
            raise ValueError(f"--set {key}: use {DEDICATED[section, name]} instead")
        value = _coerce(section, name, getattr(cfg, name), text.strip())
        p = dataclasses.replace(p, **{section: dataclasses.replace(cfg, **{name: value})})
    return p


def read_tuned(path: str) -> dict[str, list[str]]:
    """``{components: [--set assignments]}`` from a ladder study's tuned file (``studies/tuned/<preset>.json``)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no tuned settings here; make them with python -m studies run ladder")
    try:
        data = json.loads(p.read_text())
        return {k: [str(x) for x in v["overrides"]] for k, v in data["variants"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{p}: not a tuned-settings file ({type(e).__name__})") from None


if __name__ == "__main__":  # python -m bench.spine.presets: the README's preset table
    print(readme_table())
