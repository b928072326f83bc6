"""The component registry: every component RISCLIP can switch on, each declared once, in its own module.

A component is a :class:`ComponentSpec`: its name, the stage that trains it (1: patch level, with the
adapters, CFE and SKE; 2: pixel level, with the decoder; None: it trains nothing, as value-token
grounding), where it acts, what it requires of other components and which config fields are its own.
Everything that enumerates components reads this registry: flag parsing (``--components``), ``--all``,
the stage rule, the stage-1 cache key, the factorial study's factors, the cost benchmarks' variants.

The five built-ins (value, adapters, cfe, ske, decoder) declare themselves in :mod:`risclip.grounding`,
:mod:`risclip.adapters`, :mod:`risclip.cfe`, :mod:`risclip.ske` and :mod:`risclip.decoder`; the model wires
them at their own places (inside the blocks, at the fusion points, on the patch map, as the decoder).

A **plug-in** is a component from outside the package: a module that calls :func:`register` with a
``build`` function and a hook point (:data:`HOOK_POINTS`). It is imported by ``--plugin MODULE`` (the
harness's commands) or through the ``risclip.components`` entry-point group of an installed package.
The model builds its module and calls it at that hook point, so a new component needs no edit of
:mod:`risclip.model`. ``docs/extending.md`` walks through an example (``examples/film.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PATCH_STAGE, PIXEL_STAGE = 1, 2

# Where a plug-in's module is called, with the tensors it receives and returns (shapes: B sentences, N patches
# plus the class token, T text tokens, Dv / Dt the towers' widths, h x w the patch grid). ``ctx`` is a
# :class:`HookContext`. Every hook must return tensors of the shapes it received.
HOOK_POINTS: dict[str, str] = {
    "vision_block": "vision_block(i, v, ctx) -> v, after vision block i; v: (B, 1+N, Dv)",
    "text_block": "text_block(j, t, ctx) -> t, after text block j; t: (B, T, Dt)",
    "fusion": "fusion(k, v, t, ctx) -> (v, t), between the towers at fusion point k (after vision block "
              "ctx.points[k][0] and text block ctx.points[k][1]), after CFE where CFE is on",
    "patch_map": "patch_map(logits, ctx) -> logits, on the patch logits (B, h, w) after the affine and SKE; "
                 "ctx.patch (B, N, E) and ctx.sentence (B, E) hold the shared-space embeddings",
    "decoder_input": "decoder_input(features, logits) -> features, on the decoder's inputs: four "
                     "(B, Dv, h, w) grids and the patch logits (B, h, w)",
}
# the built-ins' places, wired in risclip/model.py (not hook points: a plug-in cannot name them)
BUILTIN_SITES: tuple[str, ...] = ("value_path", "inside_blocks", "fusion_points", "patch_map", "decoder")
# hook points that make the image tower read the text: each sentence then needs its own image tokens
TEXT_READING_HOOKS: frozenset[str] = frozenset({"vision_block", "fusion"})
ENTRY_POINT_GROUP = "risclip.components"
BUILTIN_MODULES: tuple[str, ...] = ("risclip.grounding", "risclip.adapters", "risclip.cfe", "risclip.ske",
                                    "risclip.decoder")


class RegistryError(ValueError):
    """A component that cannot be registered or found; the message says why, in one line."""


@dataclass(frozen=True)
class ComponentSpec:
    """One component, declared once.

    ``name``: what ``--components`` and reports call it (lower case, no ``+`` or ``,``). ``stage``: 1 (patch
    level), 2 (pixel level) or None (trains nothing). ``acts_at``: a built-in site (built-ins) or a hook point
    of :data:`HOOK_POINTS` (plug-ins). ``requires``: components that must be on with it. ``modules``: the
    model attributes that hold a built-in's modules (what its stage trains). ``fields``: a built-in's
    :class:`~risclip.config.ModelConfig` fields. ``config``: a plug-in's own settings, a frozen dataclass
    whose defaults are its defaults (``--set NAME.FIELD=VALUE``). ``build(model, settings) -> nn.Module``:
    a plug-in's module, given the model being built (its ``vision_layers``, ``text_layers``,
    ``vision_width``, ``text_width``, ``embed_dim``, ``grid``, ``points`` are set) and its settings."""

    name: str
    stage: int | None
    acts_at: str
    summary: str = ""
    requires: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    config: type | None = None
    build: Callable[..., Any] | None = None
    builtin: bool = False
    origin: str = ""  # the module that registered it
    rung: int | None = None  # built-ins: the rung of the paper's ladder that adds it (0: value grounding)

    @property
    def plugin(self) -> bool:
        return not self.builtin

    def settings(self, values: dict[str, Any] | None = None) -> Any:
        """A plug-in's settings: its config dataclass with ``values`` set (unknown names are an error)."""
        if self.config is None:
            if values:
                raise RegistryError(f"component '{self.name}' has no settings (got {', '.join(values)})")
            return None
        known = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise RegistryError(f"component '{self.name}' has no setting {', '.join(unknown)}; valid: "
                                f"{', '.join(sorted(known)) or 'none'}")
        return self.config(**(values or {}))


_REGISTRY: dict[str, ComponentSpec] = {}
_builtins_loaded = False
_RESERVED = {"none", "all", "rung0", "zero-shot", "-value", "novalue", "no-value", "clip", "plain-tokens",
             "model", "train", "data"}


def register(spec: ComponentSpec) -> ComponentSpec:
    """Add a component. A plug-in names a hook point of :data:`HOOK_POINTS`, a stage (1 or 2) and a ``build``;
    a name that is taken (by a built-in or another module), reserved, or badly formed is an error. Registering
    the same spec again from the same module (a re-import) is a no-op."""
    name = spec.name
    if not name or name != name.strip().lower() or any(c in name for c in "+, =.") or name in _RESERVED:
        raise RegistryError(f"component name {name!r}: lower case, no spaces, '+', ',', '.' or '=', and not one of "
                            f"{', '.join(sorted(_RESERVED))}")
    held = _REGISTRY.get(name)
    if held is not None:
        if held.origin == spec.origin and held.acts_at == spec.acts_at and held.stage == spec.stage:
            _REGISTRY[name] = spec
            return spec
        raise RegistryError(f"component '{name}' is already registered (by {held.origin or 'risclip'}); "
                            f"{spec.origin or 'this module'} must choose another name")
    if not spec.builtin:
        if spec.acts_at not in HOOK_POINTS:
            raise RegistryError(f"plug-in '{name}' acts at unknown hook point '{spec.acts_at}'; valid: "
                                f"{', '.join(HOOK_POINTS)}")
        if spec.stage not in (PATCH_STAGE, PIXEL_STAGE):
            raise RegistryError(f"plug-in '{name}': stage must be {PATCH_STAGE} (patch level) or {PIXEL_STAGE} "
                                f"(pixel level), not {spec.stage!r}")
        if spec.build is None:
            raise RegistryError(f"plug-in '{name}' has no build function")
        if spec.config is not None and not (dataclasses.is_dataclass(spec.config)
                                            and spec.config.__dataclass_params__.frozen):
            raise RegistryError(f"plug-in '{name}': config must be a frozen dataclass")
    elif spec.acts_at not in BUILTIN_SITES:
        raise RegistryError(f"built-in '{name}' acts at unknown site '{spec.acts_at}'")
    _REGISTRY[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a plug-in (tests; a process that registered one for a while). Built-ins stay."""
    spec = _REGISTRY.get(name)
    if spec is not None and spec.plugin:
        del _REGISTRY[name]


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def specs() -> list[ComponentSpec]:
    """Every registered component: the built-ins in ladder order, then plug-ins in the order they came."""
    _load_builtins()
    built = sorted((s for s in _REGISTRY.values() if s.builtin), key=lambda s: s.rung)
    return built + [s for s in _REGISTRY.values() if s.plugin]


def ladder() -> list[tuple[str, ...]]:
    """The paper's cumulative rungs as component names: rung k holds every built-in added at rungs 1..k."""
    built = [s for s in specs() if s.builtin and s.rung]
    return [tuple(s.name for s in built if s.rung <= k) for k in range(max(s.rung for s in built) + 1)]


def names() -> tuple[str, ...]:
    return tuple(s.name for s in specs())


def builtin_names() -> tuple[str, ...]:
    return tuple(s.name for s in specs() if s.builtin)


def plugin_names() -> tuple[str, ...]:
    return tuple(s.name for s in specs() if s.plugin)


def get(name: str) -> ComponentSpec:
    _load_builtins()
    if name not in _REGISTRY:
        raise RegistryError(f"unknown component '{name}'; registered: {', '.join(_REGISTRY)}. A plug-in is "
                            f"registered by importing its module (--plugin MODULE)")
    return _REGISTRY[name]


def stage_of(name: str) -> int | None:
    return get(name).stage


def load_plugin(module: str) -> list[str]:
    """Import ``module`` (a dotted name, found on ``sys.path`` or in the current folder, or a path to a ``.py``
    file) so that it registers its components; returns the names it registered. Failure is a RegistryError
    that names the module and the cause."""
    before = set(_REGISTRY)
    _load_builtins()
    try:
        if module.endswith(".py") or "/" in module:
            path = Path(module)
            if not path.is_file():
                raise RegistryError(f"--plugin {module}: no such file")
            if str(path.parent.resolve()) not in sys.path:
                sys.path.insert(0, str(path.parent.resolve()))
            importlib.import_module(path.stem)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            importlib.import_module(module)
    except RegistryError as e:
        raise RegistryError(f"--plugin {module}: {e}") from None
    except Exception as e:  # an import error of any kind, said in one line
        raise RegistryError(f"--plugin {module}: cannot import it ({type(e).__name__}: {e})") from None
    return [n for n in _REGISTRY if n not in before]


def load_entry_points() -> list[str]:
    """Import every installed package's plug-ins (entry-point group ``risclip.components``)."""
    from importlib.metadata import entry_points

    found: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found += load_plugin(ep.value.split(":")[0])
    return found


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The installed plug-ins, then ``modules`` (``--plugin``): the names registered."""
    found = load_entry_points()
    for m in modules:
        found += load_plugin(m)
    return found


def stage_groups(stage: int) -> dict[str, tuple[str, ...]]:
    """``{component: module attributes}`` that ``stage`` trains: the built-ins' own attributes, and each plug-in's
    module under ``plugins.<name>``."""
    if stage not in (PATCH_STAGE, PIXEL_STAGE):
        raise ValueError(f"stage must be {PATCH_STAGE} (patch level) or {PIXEL_STAGE} (pixel level), not {stage!r}")
    return {s.name: (s.modules if s.builtin else (f"plugins.{s.name}",)) for s in specs() if s.stage == stage}


@dataclass
class HookContext:
    """What a plug-in's hook may read besides its tensors: the sentences' padding mask (B, T; True after each
    end-of-text token), the token ids (B, T), the fusion points [(vision block, text block)], and, at
    ``patch_map``, the patch embeddings in the shared space (B, N, E) and the sentence embedding (B, E)."""

    tokens: Any
    padding: Any
    points: list[tuple[int, int]]
    patch: Any = None
    sentence: Any = None
