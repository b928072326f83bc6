"""Which components a variant switches on: :class:`Components` (the five built-ins' flags and the plug-ins
that are on) and the paper's ladder, :data:`LADDER`, read from the component registry
(:mod:`risclip.registry`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

# the built-in components' flags (Components' fields), in ladder order; the registry (risclip/registry.py)
# declares each, and plug-ins add names of their own
COMPONENT_NAMES: tuple[str, ...] = ("value", "adapters", "cfe", "ske", "decoder")


@dataclass(frozen=True)
class Components:
    """One flag per built-in RISCLIP component (docs/design.md, "The ladder"), and the plug-ins that are on.

    ``value``: MaskCLIP value-token grounding in the last vision block (off: ordinary tokens);
    ``adapters``: bottleneck adapters in every block of both encoders; ``cfe``: cross-modal feature
    extraction; ``ske``: shared-space knowledge exploitation; ``decoder``: LAVT-style pixel decoder.
    ``extra``: registered plug-ins switched on (:mod:`risclip.registry`), in registration order. Every question
    about what a component is (its stage, what it requires) is answered by the registry.
    """

    value: bool = True
    adapters: bool = False
    cfe: bool = False
    ske: bool = False
    decoder: bool = False
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.extra:
            from . import registry

            order = registry.plugin_names()
            for n in self.extra:
                if n not in order:
                    registry.get(n)  # the registry's error: unknown, or a built-in named as a plug-in
                    raise ValueError(f"'{n}' is a built-in component, not a plug-in")
            object.__setattr__(self, "extra", tuple(sorted(set(self.extra), key=order.index)))

    @classmethod
    def from_names(cls, names: str | list[str] | tuple[str, ...]) -> Components:
        """``"adapters,cfe"`` -> value + adapters + CFE. Value-token grounding is on unless ``-value``
        (or ``novalue``) switches it off, as in every rung of the paper. ``"none"`` is rung 0,
        ``"all"`` every registered component. A plug-in's name (once its module is imported) switches it on.
        Unknown names raise a ValueError listing the valid ones."""
        from . import registry

        if isinstance(names, str):
            parts = [p.strip().lower() for p in names.replace("+", ",").split(",")]
        else:
            parts = [str(p).strip().lower() for p in names]
        parts = [p for p in parts if p]
        known = registry.names()
        on = {"value"}
        off_value = False
        for p in parts:
            if p in ("none", "rung0", "zero-shot"):
                continue
            if p == "all":
                on.update(known)
            elif p in known:
                on.add(p)
            elif p in ("-value", "novalue", "no-value"):
                off_value = True
            else:
                valid = ", ".join((*known, "none", "all", "-value"))
                raise ValueError(f"unknown component '{p}'; valid names: {valid} (a plug-in's name is known once "
                                 f"its module is imported: --plugin MODULE)")
        if off_value:
            on.discard("value")
        return cls.from_flags({n: n in on for n in known})

    @classmethod
    def from_flags(cls, flags: dict[str, bool]) -> Components:
        """From ``{component name: on}``; names not given are off, value grounding included."""
        builtin = {n: bool(flags.get(n, False)) for n in COMPONENT_NAMES}
        return cls(**builtin, extra=tuple(n for n, v in flags.items() if v and n not in COMPONENT_NAMES))

    def on(self, name: str) -> bool:
        """Whether component ``name`` (built-in or plug-in) is on."""
        return bool(getattr(self, name)) if name in COMPONENT_NAMES else name in self.extra

    def names(self) -> list[str]:
        return [n for n in COMPONENT_NAMES if getattr(self, n)] + list(self.extra)

    def check_requirements(self) -> None:
        """Every component that is on has what it requires on (:attr:`ComponentSpec.requires`)."""
        from . import registry

        for n in self.names():
            missing = [r for r in registry.get(n).requires if not self.on(r)]
            if missing:
                raise ValueError(f"component '{n}' requires {', '.join(missing)} (variant {self})")

    def _stages(self) -> set:
        from . import registry

        return {registry.stage_of(n) for n in self.names()}

    @property
    def trains_patch_level(self) -> bool:
        """Stage 1 has something to train (adapters, CFE, SKE, or a stage-1 plug-in)."""
        return 1 in self._stages()

    @property
    def trains_anything(self) -> bool:
        return bool(self._stages() - {None})

    def trains_stage(self, stage: int) -> bool:
        """Something that is on trains in ``stage`` (1: patch level, 2: pixel level)."""
        return stage in self._stages()

    def without_stage(self, stage: int) -> Components:
        """These components less every one that ``stage`` trains (the stage-1 cache key drops stage 2's)."""
        from . import registry

        return Components.from_flags({n: self.on(n) and registry.stage_of(n) != stage
                                      for n in (*COMPONENT_NAMES, *self.extra)})

    def __str__(self) -> str:
        on = [n for n in self.names() if n != "value"]
        head = "value" if self.value else "plain-tokens"
        return "+".join([head, *on])

    @classmethod
    def all_combinations(cls) -> list[Components]:
        """Every flag combination of the registered components (32 for the five built-ins), rung order first."""
        from . import registry

        known = registry.names()
        combos = [cls.from_flags(dict(zip(known, bits))) for bits in itertools.product((True, False), repeat=len(known))]
        return sorted(combos, key=lambda c: (not c.value, len(c.names()), [not c.on(n) for n in known]))


def _frozen(value: Any) -> Any:
    """A setting as a frozen config holds it: lists become tuples (all the way down)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def __getattr__(name: str):
    """``LADDER``, read from the registry on first use (the registry's built-ins import modules that import
    this one, so it cannot be built while this module loads)."""
    if name == "LADDER":
        from . import registry

        ladder = tuple(Components.from_names(",".join(r) if r else "none") for r in registry.ladder())
        globals()["LADDER"] = ladder
        return ladder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
