"""Capacity controls for CFE, and their report: is CFE's gain cross-modal attention, or more trainable parameters?

The control by width: the adapters widened until they train as many parameters as the
adapters and CFE together, so that ``adapters`` at that width against ``adapters,cfe`` asks whether CFE's gain
comes from cross-modal attention or from more trainable parameters.

    python -m bench.capacity                    # the preset's width and the commands that train the controls
    python -m bench.capacity --preset paper-b
    python -m bench.capacity --report           # after both: reports/<preset>/capacity.md (+ .json, .png)

The other control keeps the place as well as the count: ``examples/unimodal.py`` (a plug-in) puts CFE's
parameter count at CFE's own fusion points as per-stream MLPs, with no attention between the streams.
The report sets both controls, and the worked plug-in example (``examples/film.py``), beside the ladder's
rungs 1 and 2 on the same test expressions and seeds (paired bootstrap over images and seeds); it reads
finished runs from MLflow and trains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from risclip.config import Components, ModelConfig


def stage1_parameters(cfg: ModelConfig) -> int:
    """Parameters a variant trains in stage 1 (counted on a model built with random CLIP weights)."""
    from risclip.model import RISCLIP

    model = RISCLIP.from_config(dataclasses.replace(cfg, pretrained=None))
    return sum(p.numel() for p in model.stage_parameters(1))


def matched_adapter_dim(cfg: ModelConfig) -> tuple[int, int, int]:
    """(width, the adapters' stage-1 parameters at that width, adapters + CFE's): the adapters' count is
    linear in their width, so two counts give the width closest to adapters + CFE's."""
    adapters = cfg.with_components(Components.from_names("adapters"))
    target = stage1_parameters(cfg.with_components(Components.from_names("adapters,cfe")))
    lo, hi = stage1_parameters(dataclasses.replace(adapters, adapter_dim=8)), \
        stage1_parameters(dataclasses.replace(adapters, adapter_dim=16))
    per_unit = (hi - lo) / 8
    width = max(1, round(8 + (target - lo) / per_unit))
    return width, stage1_parameters(dataclasses.replace(adapters, adapter_dim=width)), target


def main(argv: list[str] | None = None) -> int:
    from bench.spine import presets as P

    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=P.DEFAULT_PRESET, type=P.preset_name, metavar="NAME",
                   help=P.preset_help(P.DEFAULT_PRESET))
    p.add_argument("--report", action="store_true",
                   help="render reports/<preset>/capacity.md (+ .json, .png) from the finished runs of both controls, "
                        "the FiLM example and the ladder's rungs 1 and 2 (MLflow; trains nothing)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store for --report (default sqlite:///mlflow.db)")
    a = p.parse_args(argv)
    try:
        cfg = P.build(a.preset).model
        width, count, target = matched_adapter_dim(cfg)
        if a.report:
            from bench.reporting import capacity_report as R
            from bench.spine.tracking import DEFAULT_TRACKING_URI, Tracker

            tracker = Tracker(a.tracking_uri or DEFAULT_TRACKING_URI, f"risclip-{a.preset}")
            data = R.collect(tracker, a.preset, width, R.parameter_counts(cfg, width, stage1_parameters))
            print(f"wrote {R.write(data, P.report_dir(a.preset))}")
            return 0
    except (ValueError, OSError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.preset}: adapters + CFE train {target:,} parameters in stage 1; adapters of width {width} (the preset's: "
          f"{cfg.adapter_dim}) train {count:,} ({100 * (count - target) / target:+.1f}%).")
    flag = "" if a.preset == P.DEFAULT_PRESET else f" --preset {a.preset}"
    print(f"the control by width: python -m bench.ablate{flag} --reference '' --components adapters "
          f"--set model.adapter_dim={width}")
    print(f"the control by place: python -m bench.ablate{flag} --reference '' --plugin examples.unimodal "
          f"--components adapters,unimodal")
    print(f"then: python -m bench.capacity --report{flag}")
    return 0
