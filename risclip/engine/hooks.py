"""What the harness plugs into a run: :class:`Hook` (called at epoch ends and once training is over),
:class:`Evaluator` (extra scoring fed each evaluation batch's output), and the error a diverging run raises."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..model import RISCLIP, RISOutput


class Hook:
    """Something the harness runs at points of training (all no-ops here; override what you need).

    ``epoch_end(model, stage, epoch, row)`` after every finished epoch, its checkpoint written (``row``:
    stage, epoch, loss, seconds, lr); ``trained(model)`` once training is over, before evaluation.
    A hook may raise to stop training (an Optuna pruner does); the last checkpoint stays. Under torchrun
    hooks run on every process; one that writes files should do so only where
    ``risclip.distributed.is_main()``."""

    def epoch_end(self, model: RISCLIP, stage: int, epoch: int, row: dict[str, float]) -> None:
        pass

    def trained(self, model: RISCLIP) -> None:
        pass


class FunctionHook(Hook):
    """A hook from plain functions: ``FunctionHook(epoch_end=lambda model, stage, epoch, row: ...)``."""

    def __init__(self, epoch_end: Callable | None = None, trained: Callable | None = None) -> None:
        self._epoch_end, self._trained = epoch_end, trained

    def epoch_end(self, model, stage, epoch, row):
        if self._epoch_end is not None:
            self._epoch_end(model, stage, epoch, row)

    def trained(self, model):
        if self._trained is not None:
            self._trained(model)


@runtime_checkable
class Evaluator(Protocol):
    """Extra scoring over an evaluation pass, fed the model's output (no second forward pass), with the
    shape :class:`~risclip.metrics.RISMetrics` has: ``reset()``, ``process(batch, output)`` per batch,
    ``compute()`` at the end (under torchrun, reduced over processes)."""

    def reset(self) -> None: ...

    def process(self, batch: dict, output: RISOutput) -> None: ...

    def compute(self) -> dict: ...


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""
