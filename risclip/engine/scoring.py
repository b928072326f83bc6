"""Scoring a trained model: the sigmoid cut chosen on val, test at that cut under each protocol, the
text controls, and the record of how the masks were made that the served checkpoint carries."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..data.refer import ReferDataset
from ..metrics import EvalProtocol, get_protocol
from .evaluation import Evaluation, PredictionMemo, evaluate, evaluate_text_controls
from .hooks import Evaluator

# the sigmoid cuts TrainConfig.threshold_from_val chooses among: 0.10, 0.15, ..., 0.90
VAL_CUTS: tuple[float, ...] = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))


def sweep_cuts(model, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
               protocol: str | EvalProtocol = "ours", cuts: Sequence[float] = VAL_CUTS,
               desc: str = "val (choosing the cut)") -> tuple[float, dict[float, dict[str, float]], dict[str, dict]]:
    """Every cut among ``cuts`` scored on ``dataset`` from one forward pass: ``(best cut, {cut: metrics},
    metrics by expression kind at the best cut)``, the best by mIoU, ties to the cut nearest the protocol's own."""
    base = protocol if isinstance(protocol, EvalProtocol) else get_protocol(protocol)
    trial = [dataclasses.replace(base, name=f"{base.name}@{c:.2f}", threshold=c) for c in cuts]
    ev = evaluate(model, dataset, cfg, device, desc=desc, protocols=trial)
    scores = {c: ev.metrics if i == 0 else ev.protocols[p.name] for i, (c, p) in enumerate(zip(cuts, trial))}
    best = max(cuts, key=lambda c: (round(scores[c]["mIoU"], 9), -abs(c - base.threshold)))
    by_kind = ev.by_kind if best == cuts[0] else ev.protocol_by_kind[f"{base.name}@{best:.2f}"]
    return best, scores, by_kind


def calibrate_threshold(model, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
                        protocol: str | EvalProtocol = "ours", cuts: Sequence[float] = VAL_CUTS
                        ) -> tuple[float, dict[float, dict[str, float]]]:
    """The cut among ``cuts`` whose masks score the best mIoU on ``dataset`` (val), from one forward pass:
    ``(cut, {cut: metrics at that cut})`` (:func:`sweep_cuts`)."""
    best, scores, _ = sweep_cuts(model, dataset, cfg, device, protocol, cuts)
    return best, scores


@dataclass
class Scored:
    """What :func:`score_trained` measured of a trained model."""

    test: Evaluation
    val_metrics: dict[str, float]
    controls: dict[str, dict]
    threshold: float | None  # the cut test was scored at (None: a zero-shot variant's own rule)
    val_cuts: dict[float, float]  # val mIoU per cut, when the cut was chosen on val


def score_trained(model, test_set: ReferDataset, val_set: ReferDataset | None, cfg: TrainConfig, device: torch.device,
                  evaluators: Sequence[Evaluator] = (), protocols: tuple[str, ...] = ("ours",),
                  evaluate_val: bool = True, text_controls: bool = False, label: str = "") -> Scored:
    """Score a trained model (a rung, or the from-scratch reference, alike): the cut chosen on ``val_set``
    when ``cfg.threshold_from_val`` (the protocol's own then also scored, as protocol ``fixed``), val at
    that cut, test under ``protocols`` and, with ``text_controls``, the swap and generic sentences."""
    first = get_protocol(protocols[0])
    scored: list[str | EvalProtocol] = list(protocols)
    val_metrics: dict[str, float] = {}
    val_cuts: dict[float, float] = {}
    prefix = f"{label} " if label else ""
    if cfg.threshold_from_val and not model.zero_shot:
        cut, at_cut = calibrate_threshold(model, val_set, cfg, device, first)
        val_cuts = {c: m["mIoU"] for c, m in at_cut.items()}
        val_metrics = at_cut[cut] if evaluate_val else {}
        first = dataclasses.replace(first, threshold=cut)
        scored = [first, dataclasses.replace(get_protocol(protocols[0]), name="fixed"), *protocols[1:]]
    elif evaluate_val:
        val_metrics = evaluate(model, val_set, cfg, device, desc=f"{prefix}val", protocols=protocols[:1]).metrics
    memo = PredictionMemo() if text_controls else None
    test = evaluate(model, test_set, cfg, device, desc=f"{prefix}test", evaluators=evaluators, protocols=scored,
                    memo=memo)
    controls = evaluate_text_controls(model, test_set, cfg, device, protocol=first, memo=memo) if text_controls else {}
    return Scored(test, val_metrics, controls, None if model.zero_shot else first.threshold, val_cuts)


def scoring_of(scored: Scored, cfg: TrainConfig, protocol: str = "ours") -> dict:
    """How a run's test masks were made, for its checkpoint: the sigmoid cut (None for a zero-shot variant,
    whose rule is ``ModelConfig.tau``), the rule that chose it, the protocol, and the autocast the evaluation
    ran under (``TrainConfig.amp`` on CUDA, ``cpu_amp`` on a CPU). :func:`risclip.predict.predict` applies
    all of it, so a served mask is the mask the report scored."""
    if scored.threshold is None:
        rule = "zero-shot: min-max-normalised cosine map > tau"
    elif scored.val_cuts:
        rule = f"best val mIoU among sigmoid cuts {min(scored.val_cuts):.2f}..{max(scored.val_cuts):.2f}"
    else:
        rule = f"protocol {protocol}'s own cut"
    return {"threshold": scored.threshold, "rule": rule, "protocol": protocol,
            "amp": bool(cfg.amp), "cpu_amp": bool(cfg.cpu_amp)}
